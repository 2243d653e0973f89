/*
 * ingest.c — see ingest.h. Runs on the broker's loop thread; everything here is
 * synchronous and allocation is limited to the JSON the record needs.
 */
#include "ingest.h"

#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"

#define IDENTITY_PROPERTY "tidegate-thing"

struct ingest {
	const tg_config *cfg;
	outbox *ob;
	broker *br;
	ingest_stats st;
	const char *const *default_sinks;
	size_t ndefault;
};

static const char *const reason_names[INGEST_R_COUNT] = {
	"too_large", "invalid_utf8", "bad_json", "not_object", "too_deep", "bad_topic",
};

const char *ingest_reason_name(ingest_reason r) { return r < INGEST_R_COUNT ? reason_names[r] : "unknown"; }

ingest *ingest_new(const tg_config *cfg, outbox *ob, broker *br, char *err, size_t errlen)
{
	ingest *ig = calloc(1, sizeof *ig);
	if (!ig) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	ig->cfg = cfg;
	ig->ob = ob;
	ig->br = br;
	ig->default_sinks = (const char *const *)cfg->default_sink_list;
	ig->ndefault = cfg->ndefault_sinks;
	return ig;
}

void ingest_free(ingest *ig) { free(ig); }
ingest_stats *ingest_stats_of(ingest *ig) { return &ig->st; }

int ingest_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp;
		if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		/* overlong forms, surrogates, beyond U+10FFFF */
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

int ingest_json_depth(const char *s, size_t n)
{
	int depth = 0, max = 0, in_str = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"')
			in_str = 1;
		else if (c == '{' || c == '[') {
			if (++depth > max)
				max = depth;
		} else if (c == '}' || c == ']')
			depth--;
	}
	return max;
}

void ingest_rfc3339_ms(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* The authenticated thing: the identity property the broker plugin stamps, else the
 * topic's second segment (devices/<thing>/...), which the broker ACL makes trustworthy. */
static int thing_of(const char *topic, const mosquitto_property *props, char *out, size_t outlen)
{
	const mosquitto_property *p = props;
	int first = 1;
	while (props) {
		char *name = NULL, *value = NULL;
		p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, first ? 0 : 1);
		first = 0;
		if (!p)
			break;
		int hit = name && strcmp(name, IDENTITY_PROPERTY) == 0 && value && *value;
		if (hit)
			snprintf(out, outlen, "%s", value);
		free(name);
		free(value);
		if (hit)
			return 0;
	}
	const char *slash = strchr(topic, '/');
	if (!slash)
		return TG_EINVAL;
	const char *start = slash + 1, *end = strchr(start, '/');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	if (n == 0 || n >= outlen)
		return TG_EINVAL;
	memcpy(out, start, n);
	out[n] = '\0';
	return 0;
}

/* Table name of a topic: its last level (devices/x/telemetry -> telemetry). */
static const char *table_of(const char *topic)
{
	const char *last = strrchr(topic, '/');
	return last && last[1] ? last + 1 : topic;
}

static int quarantine(ingest *ig, const char *thing, const char *topic, ingest_reason why, const char *field,
		      const char *detail, const void *payload, size_t len, int64_t now_ms)
{
	const char *reason = ingest_reason_name(why);
	atomic_fetch_add(&ig->st.quarantined, 1);
	atomic_fetch_add(&ig->st.by_reason[why], 1);
	LOG_DEBUG("ingest", "msg=quarantined thing=%s topic=%s reason=%s detail=\"%s\"", thing, topic, reason,
		  detail ? detail : "");
	int rc = outbox_quarantine(ig->ob, now_ms, thing, topic, reason, field, detail, payload, len);
	if (rc)
		return rc;
	json_t *q = json_object();
	if (!q)
		return TG_ENOMEM;
	char when[32];
	ingest_rfc3339_ms(now_ms, when, sizeof when);
	json_object_set_new(q, "thing", json_string(thing));
	json_object_set_new(q, "topic", json_string(topic));
	json_object_set_new(q, "received_at", json_string(when));
	json_object_set_new(q, "reason", json_string(reason));
	if (field)
		json_object_set_new(q, "field", json_string(field));
	if (detail)
		json_object_set_new(q, "detail", json_string(detail));
	/* keep the evidence; the payload is capped so a 16 MiB reject does not bloat the lake */
	size_t keep = len > 4096 ? 4096 : len;
	json_object_set_new(q, "payload_bytes", json_integer((json_int_t)len));
	if (why != INGEST_R_INVALID_UTF8 && ingest_utf8_valid(payload, keep))
		json_object_set_new(q, "payload", json_stringn(payload, keep));
	else {
		char hex[8193];
		for (size_t i = 0; i < keep; i++)
			snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)payload)[i]);
		hex[2 * keep] = '\0';
		json_object_set_new(q, "payload_hex", json_string(hex));
	}
	if (ig->ndefault)
		rc = outbox_append(ig->ob, ig->default_sinks, ig->ndefault, OUTBOX_PRIO_BULK, "quarantine", thing, now_ms, q,
				   NULL);
	if (rc == 0 && ig->cfg->quarantine_topic && *ig->cfg->quarantine_topic) {
		char t[512];
		snprintf(t, sizeof t, "%s/%s", ig->cfg->quarantine_topic, thing);
		char *text = json_dumps(q, JSON_COMPACT);
		if (text) {
			broker_publish(ig->br, t, text, strlen(text), 0, 0);
			free(text);
		}
	}
	json_decref(q);
	return rc == TG_EFULL ? 0 : rc;
}

int ingest_message(ingest *ig, const char *topic, const void *payload, size_t len, int qos,
		   const struct mqtt5__property *props, int64_t now_ms)
{
	atomic_fetch_add(&ig->st.received, 1);
	char thing[256];
	if (thing_of(topic, (const mosquitto_property *)props, thing, sizeof thing))
		return quarantine(ig, "unknown", topic, INGEST_R_BAD_TOPIC, NULL, "topic has no thing segment", payload, len,
				  now_ms);
	char detail[256];
	if ((int64_t)len > ig->cfg->max_payload) {
		snprintf(detail, sizeof detail, "payload is %zu bytes, the limit is %" PRId64, len, ig->cfg->max_payload);
		return quarantine(ig, thing, topic, INGEST_R_TOO_LARGE, NULL, detail, payload, len, now_ms);
	}
	if (!ingest_utf8_valid(payload, len))
		return quarantine(ig, thing, topic, INGEST_R_INVALID_UTF8, NULL, "payload is not valid UTF-8", payload, len,
				  now_ms);
	int depth = ingest_json_depth(payload, len);
	if (depth > ig->cfg->max_depth) {
		snprintf(detail, sizeof detail, "JSON nesting depth %d exceeds %" PRId64, depth, ig->cfg->max_depth);
		return quarantine(ig, thing, topic, INGEST_R_TOO_DEEP, NULL, detail, payload, len, now_ms);
	}
	json_error_t jerr;
	json_t *obj = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!obj) {
		snprintf(detail, sizeof detail, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		return quarantine(ig, thing, topic, INGEST_R_BAD_JSON, NULL, detail, payload, len, now_ms);
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		return quarantine(ig, thing, topic, INGEST_R_NOT_OBJECT, NULL, "payload is JSON but not an object", payload,
				  len, now_ms);
	}
	char when[32];
	ingest_rfc3339_ms(now_ms, when, sizeof when);
	json_object_set_new(obj, "thing", json_string(thing));
	json_object_set_new(obj, "topic", json_string(topic));
	json_object_set_new(obj, "received_at", json_string(when));
	int rc = outbox_append(ig->ob, ig->default_sinks, ig->ndefault, OUTBOX_PRIO_BULK, table_of(topic), thing, now_ms,
			       obj, NULL);
	json_decref(obj);
	if (rc == TG_EFULL) {
		atomic_fetch_add(&ig->st.rejected_full, 1);
		return 0;
	}
	if (rc) {
		atomic_fetch_add(&ig->st.errors, 1);
		return rc;
	}
	atomic_fetch_add(&ig->st.accepted, 1);
	return 0;
}
