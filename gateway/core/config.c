/*
 * config.c — table-driven INI-style configuration (see config.h for the format).
 *
 * The daemon's options live in tables below, one per section. A [sink NAME] section is
 * parsed with the core sink keys (type, batch and retry tuning) and then the sink type's
 * own table, found in the list of sink types the caller passed; since `type` decides which table applies,
 * it must come first in the section. Errors carry file:line:col of the offending token;
 * the parser goes on after one (skipping the line, or a section it cannot place) so a file
 * is reported whole. Every key read is remembered with its position, which both refuses a
 * key given twice and lets later checks (here and in preflight.c) say where to look.
 */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/topic.h"

#define MAX_ERRORS 50

#define OFF(f) offsetof(tg_config, f)

static const char *const full_policies[] = {"drop_oldest", "reject_new", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", "off", NULL}; /* log.h order */
static const char *const identity_modes[] = {"topic", "stamped", NULL}; /* identity.h order */

static const config_option top_options[] = {
	{"gateway_id", CFG_STRING, "gw-01", 0, 0, OFF(gateway_id), 0,
	 "Identity of this gateway; prefixes every msg_id and lake/S3 object name.", NULL},
	{"data_dir", CFG_STRING, "/var/lib/tidegate", 0, 0, OFF(data_dir), 0,
	 "Folder for the outbox, quarantine and registry databases unless given explicitly.", NULL},
	{"log_level", CFG_ENUM, "info", 0, 0, OFF(log_level), 0, "Least severe level logged.", log_levels},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option broker_options[] = {
	{"host", CFG_STRING, "127.0.0.1", 0, 0, OFF(broker_host), 0, "Broker host.", NULL},
	{"port", CFG_INT, "8883", 1, 65535, OFF(broker_port), 0, "Broker port.", NULL},
	{"client_id", CFG_STRING, "tidegate-gateway", 0, 0, OFF(client_id), 0,
	 "MQTT client id; with clean_start off the broker keeps our session and queued QoS 1 messages.", NULL},
	{"tls", CFG_BOOL, "true", 0, 0, OFF(broker_tls), 0, "Use TLS (mutual TLS with cert_file/key_file).", NULL},
	{"ca_file", CFG_STRING, NULL, 0, 0, OFF(ca_file), 0, "CA bundle that signed the broker's certificate.", NULL},
	{"cert_file", CFG_STRING, NULL, 0, 0, OFF(cert_file), 0, "The gateway's client certificate (PEM).", NULL},
	{"key_file", CFG_STRING, NULL, 0, 0, OFF(key_file), CFG_SECRET, "The gateway's private key (PEM).", NULL},
	{"keepalive", CFG_DURATION, "30s", 5000, 3600000, OFF(keepalive_s), 0, "MQTT keepalive.", NULL},
	{"subscribe", CFG_STRING, "devices/+/telemetry", 0, 0, OFF(subscribe), 0,
	 "Comma-separated topic filters to subscribe to.", NULL},
	{"qos", CFG_INT, "1", 0, 1, OFF(sub_qos), 0, "Subscription QoS.", NULL},
	{"clean_start", CFG_BOOL, "false", 0, 0, OFF(clean_start), 0,
	 "Start a fresh session (false keeps a persistent session across reconnects).", NULL},
	{"reconnect_min", CFG_DURATION, "250ms", 10, 600000, OFF(reconnect_min_ms), 0, "First reconnect delay.", NULL},
	{"reconnect_max", CFG_DURATION, "1s", 100, 3600000, OFF(reconnect_max_ms), 0,
	 "Reconnect delay cap. The broker is normally on the same box, where a refused attempt costs next to nothing, "
	 "and every second without the daemon's subscription is a second its devices wait (wait_for_gateway) or "
	 "publish to nobody: keep it short.", NULL},
	{"identity", CFG_ENUM, "topic", 0, 0, OFF(broker_identity), 0,
	 "Where a message's thing comes from. topic: the topic's second level (devices/<thing>/...), which the "
	 "broker ACL ties to the device's certificate; a tidegate-thing user property is ignored. stamped: the "
	 "tidegate-thing property the tidegate auth plugin stamps (topic level when absent); only with the plugin: "
	 "at start the daemon publishes a probe with a forged property on tidegate/identity-probe/... and refuses "
	 "to run if the broker passes it through.",
	 identity_modes},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option ingest_options[] = {
	{"max_payload", CFG_SIZE, "128k", 16, 16 << 20, OFF(max_payload), 0,
	 "Payloads larger than this are quarantined (reason too_large); IoT Core's limit is 128 KiB.", NULL},
	{"max_depth", CFG_INT, "32", 1, 1024, OFF(max_depth), 0, "Maximum JSON nesting depth.", NULL},
	{"rules_dir", CFG_STRING, "", 0, 0, OFF(rules_dir), 0, "Folder of rule files (*.json); empty: no rules.", NULL},
	{"schemas_dir", CFG_STRING, "", 0, 0, OFF(schemas_dir), 0, "Folder of schema files; empty: no schemas.", NULL},
	{"aggregates_file", CFG_STRING, "", 0, 0, OFF(aggregates_file), 0,
	 "Windowed aggregates configuration (JSON, see docs/schemas.md); empty: no aggregates.", NULL},
	{"dedupe_window", CFG_DURATION, "10m", 0, 86400000, OFF(dedupe_window_ms), 0,
	 "A second (thing, ts) within this window is a duplicate: counted and quarantined. 0 = off.", NULL},
	{"dedupe_per_thing", CFG_INT, "256", 1, 65536, OFF(dedupe_per_thing), 0,
	 "Timestamps remembered per thing for dedupe (at most; a thing's memory grows to it only while it sends faster "
	 "than that many readings per dedupe_window).", NULL},
	{"dedupe_max_things", CFG_INT, "100000", 1, 10000000, OFF(dedupe_max_things), 0,
	 "Things tracked for dedupe (least recently seen forgotten first).", NULL},
	{"persist_edge_state", CFG_BOOL, "true", 0, 0, OFF(persist_edge_state), 0,
	 "Store the dedupe memory and the open aggregate windows in the outbox database, in the same commits as the "
	 "records they came from, and restore them at start: a device's resend across a crash is still a duplicate, and "
	 "open windows survive a restart (one that closed meanwhile is emitted at start). Off: both live in memory only "
	 "and a clean stop emits the open windows early.", NULL},
	{"enrich", CFG_BOOL, "false", 0, 0, OFF(enrich), 0,
	 "Add the thing's registry attributes to each record as \"attributes\".", NULL},
	{"watch_rules", CFG_BOOL, "true", 0, 0, OFF(rules_watch), 0, "Reload rules when files in rules_dir change (inotify); SIGHUP always reloads.", NULL},
	{"log_repeat_interval", CFG_DURATION, "60s", 1000, 86400000, OFF(log_repeat_interval_ms), 0,
	 "Quarantined messages are logged once per thing and reason per interval (the first at once, then a count); "
	 "so are republishes the broker refuses, per rule and reason code.",
	 NULL},
	{"quarantine_topic", CFG_STRING, "errors", 0, 0, OFF(quarantine_topic), 0,
	 "Rejected messages are also republished to <quarantine_topic>/<thing>; empty: off.", NULL},
	{"default_sinks", CFG_STRING, "lake", 0, 0, OFF(default_sinks), 0,
	 "Comma-separated sinks that receive every accepted record, raw archive style (empty: only rule sink actions route). "
	 "`lake` is built in: named here without a [sink lake] section, it is a file sink at <data_dir>/lake with the "
	 "file sink's defaults.",
	 NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option outbox_options[] = {
	{"path", CFG_STRING, "", 0, 0, OFF(outbox_path), 0, "Outbox database; default <data_dir>/outbox.db.", NULL},
	{"commit_interval", CFG_DURATION, "5ms", 1, 10000, OFF(commit_interval_ms), 0,
	 "Group commit: commit at the latest this long after the first uncommitted record.", NULL},
	{"commit_max_records", CFG_INT, "500", 1, 100000, OFF(commit_max_records), 0,
	 "Group commit: commit after this many records.", NULL},
	{"max_bytes", CFG_SIZE, "1G", 0, INT64_MAX, OFF(outbox_max_bytes), 0,
	 "Cap on the outbox's files on disk: database + WAL + WAL index (0 = none). full_policy acts on it.", NULL},
	{"wal_max_bytes", CFG_SIZE, "64M", 1048576, INT64_MAX, OFF(outbox_wal_max_bytes), 0,
	 "Bound on the write-ahead log (at most a quarter of max_bytes is used); part of max_bytes.", NULL},
	{"max_rows", CFG_INT, "0", 0, INT64_MAX, OFF(outbox_max_rows), 0, "Cap on queued records (0 = none).", NULL},
	{"full_policy", CFG_ENUM, "drop_oldest", 0, 0, OFF(outbox_full_policy), 0,
	 "When a cap is reached: drop_oldest (lowest priority first) or reject_new.", full_policies},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option http_options[] = {
	{"bind", CFG_STRING, "127.0.0.1", 0, 0, OFF(http_bind), 0, "Ops HTTP address (loopback by default).", NULL},
	{"port", CFG_INT, "0", 0, 65535, OFF(http_port), 0, "Ops HTTP port for /metrics /healthz /readyz /api and the console page; 0 = off.", NULL},
	{"token_file", CFG_STRING, "", 0, 0, OFF(http_token_file), 0,
	 "File holding the API's bearer token (`tidegate token new FILE`, mode 0600). Set: the console (API under /api/, "
	 "event stream, page at /, recent-data retention) is on and every path but /healthz, /readyz and the page's files "
	 "needs `Authorization: Bearer <token>`, /metrics too. Empty: only /metrics /healthz /readyz /api/status, open.",
	 NULL},
	{"tls_cert_file", CFG_STRING, "", 0, 0, OFF(http_tls_cert_file), 0,
	 "Serve HTTPS with this certificate (PEM, e.g. from the site PKI); with tls_key_file. Use it when bind is not loopback.",
	 NULL},
	{"tls_key_file", CFG_STRING, "", 0, 0, OFF(http_tls_key_file), CFG_SECRET, "Private key (PEM) of tls_cert_file.", NULL},
	{"www_dir", CFG_STRING, "", 0, 0, OFF(http_www_dir), 0,
	 "Folder of the console page's files; empty: <prefix>/share/tidegate/www beside the installed binary.", NULL},
	{"max_body", CFG_SIZE, "256k", 1024, 16 << 20, OFF(http_max_body), 0,
	 "Largest request body; a larger one is refused with 413.", NULL},
	{"max_connections", CFG_INT, "32", 2, 1024, OFF(http_max_connections), 0,
	 "Concurrent HTTP connections (one thread each; an open event stream holds one).", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option retention_options[] = {
	{"period", CFG_DURATION, "24h", 0, 31LL * 86400000, OFF(retention_period_ms), 0,
	 "Keep accepted device records this long for the console's latest/series/query views (0 = off). Needs [http] token_file.",
	 NULL},
	{"max_bytes", CFG_SIZE, "256M", 1048576, INT64_MAX, OFF(retention_max_bytes), 0,
	 "Cap on the record text kept; the oldest records go first.", NULL},
	{"path", CFG_STRING, "", 0, 0, OFF(retention_path), 0, "Retention database; default <data_dir>/retention.db.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option registry_options[] = {
	{"path", CFG_STRING, "", 0, 0, OFF(registry_path), 0, "Device registry database; default <data_dir>/registry.db.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option shadow_options[] = {
	{"enabled", CFG_BOOL, "true", 0, 0, OFF(shadow_enabled), 0,
	 "Serve AWS IoT Device Shadows on $aws/things/+/shadow/... (docs/shadows.md).", NULL},
	{"max_shadows", CFG_INT, "100000", 1, 100000000, OFF(shadow_max_shadows), 0,
	 "Shadows stored (classic and named, all things); creating one more is refused with 503.", NULL},
	{"max_state_bytes", CFG_SIZE, "8k", 256, 1 << 20, OFF(shadow_max_state_bytes), 0,
	 "A shadow's desired + reported state as compact JSON, metadata not counted (IoT Core: 8 KB); above it 413.",
	 NULL},
	{"max_inflight", CFG_INT, "10", 1, 10000, OFF(shadow_max_inflight), 0,
	 "Requests of one thing waiting for their responses (IoT Core: 10); more are refused with 429.", NULL},
	{"response_qos", CFG_INT, "1", 0, 1, OFF(shadow_response_qos), 0,
	 "QoS of the answers the gateway publishes: accepted, rejected and delta.", NULL},
	{"documents_qos", CFG_INT, "0", 0, 1, OFF(shadow_documents_qos), 0,
	 "QoS of update/documents, the change feed (every change is also a \"shadows\" record for the sinks, the durable copy).", NULL},
	{"tombstone_retention", CFG_DURATION, "48h", 0, 365LL * 86400000, OFF(shadow_tombstone_ms), 0,
	 "How long a deleted shadow's version counter is kept: one created again within it continues the count (IoT Core: 48 hours).",
	 NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

#undef OFF
#define SOFF(f) offsetof(tg_sink_conf, f)
static const config_option sink_core_options[] = {
	{"batch_max_records", CFG_INT, "0", 0, 100000, SOFF(batch_max_records), 0,
	 "Records per send (0 = the sink type's own limit).", NULL},
	{"retry_base", CFG_DURATION, "200ms", 1, 3600000, SOFF(retry_base_ms), 0, "Backoff base (full jitter).", NULL},
	{"retry_cap", CFG_DURATION, "30s", 1, 86400000, SOFF(retry_cap_ms), 0, "Backoff cap.", NULL},
	{"health_failing_after", CFG_DURATION, "60s", 0, 86400000, SOFF(health_failing_ms), 0,
	 "/healthz reports the sink degraded once its sends have failed for this long (0 = never for failures).", NULL},
	{"health_max_age", CFG_DURATION, "5m", 0, 604800000, SOFF(health_max_age_ms), 0,
	 "/healthz reports the sink degraded when its oldest undelivered record has waited this long beyond the "
	 "sink's own batching age (flush_age, rotate_age) (0 = never for age).",
	 NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
#undef SOFF

static const struct {
	const char *name;
	const config_option *table;
} sections[] = {
	{"", top_options},           {"broker", broker_options}, {"ingest", ingest_options},
	{"outbox", outbox_options},  {"http", http_options},     {"registry", registry_options},
	{"shadow", shadow_options},
	{"retention", retention_options},
};

/* ---- value parsing ---------------------------------------------------------------- */

int config_parse_size(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return TG_EINVAL;
	while (*end == ' ')
		end++;
	double mul = 1;
	switch (tolower((unsigned char)*end)) {
	case '\0': break;
	case 'k': mul = 1024.0; end++; break;
	case 'm': mul = 1024.0 * 1024; end++; break;
	case 'g': mul = 1024.0 * 1024 * 1024; end++; break;
	default: return TG_EINVAL;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return TG_EINVAL;
	if (v * mul > 9.2e18)
		return TG_EINVAL;
	*out = (int64_t)(v * mul);
	return 0;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return TG_EINVAL;
	double mul;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mul = 60000;
	else if (strcmp(end, "h") == 0)
		mul = 3600000;
	else if (strcmp(end, "d") == 0)
		mul = 86400000;
	else
		return TG_EINVAL;
	*out = (int64_t)(v * mul + 0.5);
	return 0;
}

static int parse_bool(const char *v, int *out)
{
	static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return *out = 1, 0;
		if (strcasecmp(v, no[i]) == 0)
			return *out = 0, 0;
	}
	return TG_EINVAL;
}

static const config_option *find_opt(const config_option *t, const char *key)
{
	for (; t && t->name; t++)
		if (strcmp(t->name, key) == 0)
			return t;
	return NULL;
}

int config_table_set(const config_option *table, void *base, const char *key, const char *value,
		     char *err, size_t errlen)
{
	const config_option *o = find_opt(table, key);
	if (!o)
		return tg_seterr(err, errlen, TG_ENOTFOUND, "unknown option '%s'", key);
	char *p = (char *)base + o->offset;
	int64_t iv = 0;
	int rc = 0;
	switch (o->type) {
	case CFG_STRING: {
		char *dup = strdup(value);
		if (!dup)
			return TG_ENOMEM;
		free(*(char **)p);
		*(char **)p = dup;
		return 0;
	}
	case CFG_BOOL:
		if (parse_bool(value, (int *)p))
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s': expected true or false, got '%s'", key, value);
		return 0;
	case CFG_DOUBLE: {
		char *end;
		double d = strtod(value, &end);
		if (end == value || *end)
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s': expected a number, got '%s'", key, value);
		*(double *)p = d;
		return 0;
	}
	case CFG_ENUM: {
		char list[256] = "";
		for (int i = 0; o->enum_values[i]; i++) {
			if (strcmp(o->enum_values[i], value) == 0)
				return *(int *)p = i, 0;
			size_t l = strlen(list);
			snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", o->enum_values[i]);
		}
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': '%s' is not one of: %s", key, value, list);
	}
	case CFG_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(value, &end, 10);
		if (end == value || *end || errno)
			rc = TG_EINVAL;
		iv = v;
		break;
	}
	case CFG_SIZE: rc = config_parse_size(value, &iv); break;
	case CFG_DURATION: rc = config_parse_duration_ms(value, &iv); break;
	}
	if (rc)
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': cannot parse '%s' as %s", key, value,
				 o->type == CFG_INT ? "an integer" : o->type == CFG_SIZE ? "a size (e.g. 64k, 16M)"
											: "a duration (e.g. 250ms, 5s, 2m)");
	if ((o->min || o->max) && (iv < o->min || iv > o->max))
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': %" PRId64 " is outside %" PRId64 "..%" PRId64,
				 key, iv, o->min, o->max);
	*(int64_t *)p = iv;
	return 0;
}

int config_table_defaults(const config_option *table, void *base, char *err, size_t errlen)
{
	for (const config_option *o = table; o && o->name; o++) {
		if (!o->def)
			continue;
		int rc = config_table_set(table, base, o->name, o->def, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int config_table_check(const config_option *table, const void *base, char *err, size_t errlen)
{
	for (const config_option *o = table; o && o->name; o++) {
		if (!(o->flags & CFG_REQUIRED))
			continue;
		const char *p = (const char *)base + o->offset;
		if (o->type == CFG_STRING && (!*(char *const *)p || !**(char *const *)p))
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s' is required", o->name);
	}
	return 0;
}

void config_table_free(const config_option *table, void *base)
{
	if (!base)
		return;
	for (const config_option *o = table; o && o->name; o++)
		if (o->type == CFG_STRING) {
			char **p = (char **)((char *)base + o->offset);
			free(*p);
			*p = NULL;
		}
}

void config_redact_url(const char *s, char *out, size_t outlen)
{
	const char *scheme = strstr(s, "://");
	const char *host = scheme ? scheme + 3 : NULL;
	const char *at = host ? strchr(host, '@') : NULL;
	const char *slash = host ? strpbrk(host, "/?#") : NULL;
	if (!at || (slash && slash < at)) {
		snprintf(out, outlen, "%s", s);
		return;
	}
	const char *colon = memchr(host, ':', (size_t)(at - host));
	/* user:password@ keeps the user; a lone user part may itself be a token */
	size_t keep = colon ? (size_t)(colon + 1 - s) : (size_t)(host - s);
	snprintf(out, outlen, "%.*s<redacted>%s", (int)keep, s, at);
}

/* A string as a config value that reads back the same: quoted when blanks at an end, a
 * comment character after a blank or a leading quote would change it. */
static void quote_if_needed(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);
	int need = n && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[0] == '"' ||
			 s[0] == '#' || s[0] == ';');
	for (size_t i = 1; i < n && !need; i++)
		need = (s[i] == '#' || s[i] == ';') && (s[i - 1] == ' ' || s[i - 1] == '\t');
	if (!need) {
		snprintf(buf, len, "%s", s);
		return;
	}
	size_t o = 0;
	buf[o++] = '"';
	for (size_t i = 0; i < n && o + 3 < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			buf[o++] = '\\';
		buf[o++] = s[i];
	}
	buf[o++] = '"';
	buf[o] = '\0';
}

static void value_text(const config_option *o, const void *base, char *buf, size_t len)
{
	const char *p = (const char *)base + o->offset;
	switch (o->type) {
	case CFG_STRING: {
		const char *s = *(char *const *)p;
		char red[1024];
		if ((o->flags & CFG_SECRET) && s && *s)
			snprintf(red, sizeof red, "<redacted>");
		else
			config_redact_url(s ? s : "", red, sizeof red);
		quote_if_needed(red, buf, len);
		break;
	}
	case CFG_BOOL: snprintf(buf, len, "%s", *(const int *)p ? "true" : "false"); break;
	case CFG_DOUBLE: snprintf(buf, len, "%g", *(const double *)p); break;
	case CFG_ENUM: snprintf(buf, len, "%s", o->enum_values[*(const int *)p]); break;
	case CFG_DURATION: snprintf(buf, len, "%" PRId64 "ms", *(const int64_t *)p); break;
	default: snprintf(buf, len, "%" PRId64, *(const int64_t *)p); break;
	}
}

void config_table_print(const config_option *table, const void *base, FILE *out)
{
	char buf[1024];
	for (const config_option *o = table; o && o->name; o++) {
		value_text(o, base, buf, sizeof buf);
		fprintf(out, "%s = %s\n", o->name, buf);
	}
}

void config_table_reference(const char *section, const config_option *table, FILE *out)
{
	static const char *tn[] = {"string", "integer", "bool", "number", "size", "duration", "enum"};
	fprintf(out, "\n### %s\n\n| key | type | default | help |\n|---|---|---|---|\n", section);
	for (const config_option *o = table; o && o->name; o++) {
		fprintf(out, "| `%s` | %s%s | %s | %s", o->name, tn[o->type],
			o->flags & CFG_REQUIRED ? ", required" : "", o->def && *o->def ? o->def : "—", o->help);
		if (o->type == CFG_ENUM) {
			fprintf(out, " One of:");
			for (int i = 0; o->enum_values[i]; i++)
				fprintf(out, " `%s`", o->enum_values[i]);
			fprintf(out, ".");
		}
		if (o->flags & CFG_SECRET)
			fprintf(out, " (secret: redacted when printed)");
		fprintf(out, " |\n");
	}
}

/* ---- errors and positions ------------------------------------------------------------ */

/* Errors of one load, one line each, into the caller's buffer. */
typedef struct errs {
	char *buf;
	size_t cap;
	int n;
} errs;

static void errs_add(errs *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errs_add(errs *e, const char *fmt, ...)
{
	char line[4096];
	e->n++;
	if (e->n > MAX_ERRORS + 1)
		return;
	if (e->n == MAX_ERRORS + 1) {
		tg_adderr(e->buf, e->cap, TG_EINVAL, "(more errors not shown)");
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	tg_adderr(e->buf, e->cap, TG_EINVAL, "%s", line);
}

static const config_pos *pos_find(const tg_config *c, const char *section, const char *key)
{
	for (size_t i = 0; i < c->npos; i++)
		if (!strcmp(c->pos[i].section, section) &&
		    (key ? c->pos[i].key && !strcmp(c->pos[i].key, key) : !c->pos[i].key))
			return &c->pos[i];
	return NULL;
}

/* The file set section/key to a value that was refused: checks using it would only echo that. */
static int refused(const tg_config *c, const char *section, const char *key)
{
	const config_pos *p = pos_find(c, section, key);
	return p && p->refused;
}

static int pos_add(tg_config *c, const char *section, const char *key, int line, int col, int bad)
{
	config_pos *n = realloc(c->pos, (c->npos + 1) * sizeof *n);
	if (!n)
		return TG_ENOMEM;
	c->pos = n;
	config_pos *p = &c->pos[c->npos];
	p->section = strdup(section);
	p->key = key ? strdup(key) : NULL;
	p->line = line;
	p->col = col;
	p->refused = bad;
	if (!p->section || (key && !p->key)) {
		free(p->section);
		free(p->key);
		return TG_ENOMEM;
	}
	c->npos++;
	return 0;
}

void config_where(const tg_config *c, const char *section, const char *key, char *buf, size_t len)
{
	const config_pos *p = pos_find(c, section, key);
	if (p)
		snprintf(buf, len, "%s:%d:%d", c->path, p->line, p->col);
	else
		snprintf(buf, len, "%s", c->path);
}

/* ---- file parsing ----------------------------------------------------------------- */

static int is_blank(char ch) { return ch == ' ' || ch == '\t'; }

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* A comment starts with '#' or ';' at the start of the text or after a blank. */
static int starts_comment(const char *text, const char *p)
{
	return (*p == '#' || *p == ';') && (p == text || is_blank(p[-1]));
}

/* The value after '=' (blanks skipped), rewritten in place: "quoted" (with \" and \\
 * escapes; anything may be inside) or bare text up to a comment, trailing blanks cut.
 * NULL on a syntax error: *why says what, *at where. */
static char *parse_value(char *v, const char **why, char **at)
{
	if (*v != '"') {
		char *p = v;
		for (; *p; p++)
			if (starts_comment(v, p))
				break;
		*p = '\0';
		return trim(v);
	}
	char *w = v, *r = v + 1;
	while (*r && *r != '"') {
		if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
			r++;
		*w++ = *r++;
	}
	if (!*r) {
		*why = "unterminated quoted value (a closing \" is missing)";
		*at = v;
		return NULL;
	}
	char *rest = r + 1;
	while (is_blank(*rest))
		rest++;
	if (*rest && *rest != '#' && *rest != ';') {
		*why = "unexpected text after a quoted value (start a comment with # or ;)";
		*at = rest;
		return NULL;
	}
	*w = '\0';
	return v;
}

static void sink_conf_free(tg_sink_conf *sc)
{
	if (!sc)
		return;
	if (sc->type && sc->opts) {
		if (sc->type->options_free)
			sc->type->options_free(sc->opts);
		config_table_free(sc->type->options, sc->opts);
	}
	free(sc->opts);
	free(sc->name);
}

void config_free(tg_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		config_table_free(sections[i].table, c);
	for (size_t i = 0; i < c->nsinks; i++)
		sink_conf_free(&c->sinks[i]);
	free(c->sinks);
	for (size_t i = 0; i < c->ndefault_sinks; i++)
		free(c->default_sink_list[i]);
	free(c->default_sink_list);
	for (size_t i = 0; i < c->npos; i++) {
		free(c->pos[i].section);
		free(c->pos[i].key);
	}
	free(c->pos);
	free(c->path);
	free(c);
}

static char *join_path(const char *dir, const char *file)
{
	size_t n = strlen(dir) + strlen(file) + 2;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, file);
	return p;
}

const tg_sink_conf *config_sink(const tg_config *c, const char *name)
{
	for (size_t i = 0; i < c->nsinks; i++)
		if (strcmp(c->sinks[i].name, name) == 0)
			return &c->sinks[i];
	return NULL;
}

static tg_sink_conf *start_sink(tg_config *c, const char *name, char *err, size_t errlen)
{
	tg_sink_conf *n = realloc(c->sinks, (c->nsinks + 1) * sizeof *n);
	if (!n) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	c->sinks = n;
	tg_sink_conf *sc = &c->sinks[c->nsinks++];
	memset(sc, 0, sizeof *sc);
	sc->priority_first = 1;
	if (!(sc->name = strdup(name))) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	return config_table_defaults(sink_core_options, sc, err, errlen) ? NULL : sc;
}

static int sink_set_type(const tg_config *c, tg_sink_conf *sc, const char *value, char *err, size_t errlen)
{
	sc->type = NULL;
	for (const config_sink_type *const *t = c->sink_types; t && *t && value; t++)
		if (strcmp((*t)->type, value) == 0)
			sc->type = *t;
	if (!sc->type) {
		char list[256] = "";
		for (const config_sink_type *const *t = c->sink_types; t && *t; t++) {
			size_t l = strlen(list);
			snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", (*t)->type);
		}
		return tg_seterr(err, errlen, TG_EINVAL, "sink '%s': unknown type '%s' (known: %s)", sc->name, value, list);
	}
	if (!(sc->opts = calloc(1, sc->type->options_size ? sc->type->options_size : 1)))
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	return config_table_defaults(sc->type->options, sc->opts, err, errlen);
}

static int sink_set(const tg_config *c, tg_sink_conf *sc, const char *key, const char *value, char *err, size_t errlen)
{
	if (strcmp(key, "type") == 0)
		return sink_set_type(c, sc, value, err, errlen);
	int rc = config_table_set(sink_core_options, sc, key, value, err, errlen);
	if (rc != TG_ENOTFOUND)
		return rc;
	if (!sc->type)
		return tg_seterr(err, errlen, TG_EINVAL, "sink '%s': 'type' must come before '%s'", sc->name, key);
	rc = config_table_set(sc->type->options, sc->opts, key, value, err, errlen);
	if (rc == TG_ENOTFOUND)
		return tg_seterr(err, errlen, TG_ENOTFOUND, "unknown option '%s' for sink type %s", key, sc->type->type);
	return rc;
}

/* A string option of a sink's own table, by name (NULL when it has none). */
static const char *sink_string(const tg_sink_conf *sc, const char *name)
{
	if (!sc->type)
		return NULL;
	for (const config_option *o = sc->type->options; o && o->name; o++)
		if (o->type == CFG_STRING && !strcmp(o->name, name))
			return *(char *const *)((const char *)sc->opts + o->offset);
	return NULL;
}

/* ---- checks across options ---------------------------------------------------------- */

/* The built-in lake: default_sinks names `lake` and no [sink lake] section exists. */
static int add_builtin_lake(tg_config *c, errs *e)
{
	char msg[512], *list = strdup(c->default_sinks), *save = NULL;
	int named = 0;
	if (!list)
		return TG_ENOMEM;
	for (char *tok = strtok_r(list, ", \t", &save); tok && !named; tok = strtok_r(NULL, ", \t", &save))
		named = !strcmp(tok, "lake");
	free(list);
	if (!named || config_sink(c, "lake"))
		return 0;
	char *path = join_path(c->data_dir, "lake");
	tg_sink_conf *sc = path ? start_sink(c, "lake", msg, sizeof msg) : NULL;
	if (!sc) {
		free(path);
		return TG_ENOMEM;
	}
	int rc = sink_set_type(c, sc, "file", msg, sizeof msg);
	if (!rc)
		rc = config_table_set(sc->type->options, sc->opts, "path", path, msg, sizeof msg);
	free(path);
	if (rc == TG_ENOMEM)
		return rc;
	if (rc)
		errs_add(e, "%s: built-in lake sink: %s", c->path, msg);
	sc->builtin = 1;
	return 0;
}

static int resolve_default_sinks(tg_config *c, errs *e)
{
	char where[4200];
	char *list = strdup(c->default_sinks), *save = NULL;
	if (!list)
		return TG_ENOMEM;
	config_where(c, "ingest", "default_sinks", where, sizeof where);
	for (char *tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if (!config_sink(c, tok)) {
			errs_add(e, "%s: [ingest] default_sinks: '%s' is not a configured [sink %s] section", where, tok, tok);
			continue;
		}
		char **nl = realloc(c->default_sink_list, (c->ndefault_sinks + 2) * sizeof *nl);
		if (!nl) {
			free(list);
			return TG_ENOMEM;
		}
		c->default_sink_list = nl;
		if (!(nl[c->ndefault_sinks] = strdup(tok))) {
			nl[c->ndefault_sinks] = NULL;
			free(list);
			return TG_ENOMEM;
		}
		nl[++c->ndefault_sinks] = NULL;
	}
	free(list);
	return 0;
}

static int is_local_host(const char *h)
{
	return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "0.0.0.0");
}

/* Two paths name the same folder, ignoring repeated and trailing slashes and "./" parts. */
static int same_path(const char *a, const char *b)
{
	for (;;) {
		while (a[0] == '/' && (a[1] == '/' || (a[1] == '.' && (a[2] == '/' || !a[2]))))
			a += a[1] == '/' ? 1 : 2;
		while (b[0] == '/' && (b[1] == '/' || (b[1] == '.' && (b[2] == '/' || !b[2]))))
			b += b[1] == '/' ? 1 : 2;
		if ((!*a || (a[0] == '/' && !a[1])) && (!*b || (b[0] == '/' && !b[1])))
			return 1;
		if (*a != *b)
			return 0;
		a++, b++;
	}
}

static void check_across(tg_config *c, errs *e)
{
	char w1[4200], w2[4200];
	int tls_files = c->ca_file && *c->ca_file && c->cert_file && *c->cert_file && c->key_file && *c->key_file;
	if (c->broker_tls && !refused(c, "broker", "tls") && !tls_files) {
		config_where(c, "broker", pos_find(c, "broker", "tls") ? "tls" : NULL, w1, sizeof w1);
		errs_add(e, "%s: [broker] tls is on%s: ca_file, cert_file and key_file are required (missing:%s%s%s)", w1,
			 pos_find(c, "broker", "tls") ? "" : " (the default)", c->ca_file && *c->ca_file ? "" : " ca_file",
			 c->cert_file && *c->cert_file ? "" : " cert_file", c->key_file && *c->key_file ? "" : " key_file");
	}
	/* the broker would refuse these at SUBSCRIBE time, long after start */
	char *list = strdup(c->subscribe), *save = NULL;
	int nfilters = 0;
	config_where(c, "broker", "subscribe", w1, sizeof w1);
	for (char *tok = list ? strtok_r(list, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		tok = trim(tok);
		if (!*tok)
			continue;
		nfilters++;
		if (!tg_topic_filter_valid(tok))
			errs_add(e, "%s: [broker] subscribe: '%s' is not a valid MQTT topic filter ('+' and '#' must fill a "
				    "whole level, '#' only the last)", w1, tok);
	}
	if (list && !nfilters)
		errs_add(e, "%s: [broker] subscribe: no topic filter given", w1);
	free(list);
	if (c->http_port > 0 && c->http_port == c->broker_port && !refused(c, "http", "port") &&
	    !refused(c, "broker", "port") && !refused(c, "broker", "host") && !refused(c, "http", "bind") &&
	    (!strcmp(c->broker_host, c->http_bind) || (is_local_host(c->broker_host) && is_local_host(c->http_bind)))) {
		config_where(c, "http", "port", w1, sizeof w1);
		config_where(c, "broker", "port", w2, sizeof w2);
		errs_add(e, "%s: [http] port %" PRId64 " is the broker's port too ([broker] port, %s): the ops HTTP server "
			    "cannot listen where the broker does",
			 w1, c->http_port, w2);
	}
	for (size_t i = 0; i < c->nsinks; i++) {
		const char *pi = c->sinks[i].type && !strcmp(c->sinks[i].type->type, "file") ? sink_string(&c->sinks[i], "path")
											     : NULL;
		for (size_t j = i + 1; pi && *pi && j < c->nsinks; j++) {
			const char *pj = c->sinks[j].type && !strcmp(c->sinks[j].type->type, "file")
						 ? sink_string(&c->sinks[j], "path")
						 : NULL;
			if (!pj || !same_path(pi, pj))
				continue;
			char si[300], sj[300];
			snprintf(si, sizeof si, "sink %s", c->sinks[i].name);
			snprintf(sj, sizeof sj, "sink %s", c->sinks[j].name);
			config_where(c, si, "path", w1, sizeof w1);
			config_where(c, sj, "path", w2, sizeof w2);
			errs_add(e, "%s: [sink %s] path %s is also the path of [sink %s] (%s%s): two file sinks would write "
				    "the same files",
				 c->sinks[j].builtin ? w1 : w2, c->sinks[j].builtin ? c->sinks[i].name : c->sinks[j].name, pj,
				 c->sinks[j].builtin ? c->sinks[j].name : c->sinks[i].name, c->sinks[j].builtin ? "" : w1,
				 c->sinks[j].builtin ? "built in" : "");
		}
	}
}

/* Derived defaults and the checks across options. */
static int finish(tg_config *c, errs *e)
{
	if (!*c->outbox_path) {
		free(c->outbox_path);
		if (!(c->outbox_path = join_path(c->data_dir, "outbox.db")))
			return TG_ENOMEM;
	}
	if (!*c->retention_path) {
		free(c->retention_path);
		if (!(c->retention_path = join_path(c->data_dir, "retention.db")))
			return TG_ENOMEM;
	}
	if (!!*c->http_tls_cert_file != !!*c->http_tls_key_file)
		errs_add(e, "%s: [http] tls_cert_file and tls_key_file go together", c->path);
	if (!*c->registry_path) {
		free(c->registry_path);
		if (!(c->registry_path = join_path(c->data_dir, "registry.db")))
			return TG_ENOMEM;
	}
	if (add_builtin_lake(c, e) || resolve_default_sinks(c, e))
		return TG_ENOMEM;
	check_across(c, e);
	if (c->reconnect_max_ms < c->reconnect_min_ms)
		c->reconnect_max_ms = c->reconnect_min_ms;
	return 0;
}

/* ---- the loader ------------------------------------------------------------------- */

typedef struct loader {
	tg_config *c;
	errs *e;
	const char *path;
	int lineno;
	const config_option *table; /* the current section's table, NULL: skip its keys */
	tg_sink_conf *sink;         /* the current [sink NAME], or NULL */
	char section[300];          /* the current section's name for positions */
} loader;

static int load_header(loader *L, char *line, char *s, int col)
{
	char *close = strchr(s, ']');
	char *rest = close ? close + 1 : NULL;
	while (rest && is_blank(*rest))
		rest++;
	L->table = NULL;
	L->sink = NULL;
	if (!close || (*rest && *rest != '#' && *rest != ';')) {
		errs_add(L->e, "%s:%d:%d: malformed section header (expected [name] or [sink NAME])", L->path, L->lineno, col);
		return 0;
	}
	*close = '\0';
	char *name = trim(s + 1), msg[512], where[4200];
	if (strncmp(name, "sink", 4) == 0 && isspace((unsigned char)name[4])) {
		char *sname = trim(name + 5);
		if (!*sname || strpbrk(sname, " \t/\"[]")) {
			errs_add(L->e, "%s:%d:%d: sink name must be one word", L->path, L->lineno, col);
			return 0;
		}
		snprintf(L->section, sizeof L->section, "sink %s", sname);
		if (config_sink(L->c, sname)) {
			config_where(L->c, L->section, NULL, where, sizeof where);
			errs_add(L->e, "%s:%d:%d: [sink %s] is defined twice; first at %s", L->path, L->lineno, col, sname,
				 where);
			return 0;
		}
		if (!(L->sink = start_sink(L->c, sname, msg, sizeof msg)))
			return TG_ENOMEM;
		return pos_add(L->c, L->section, NULL, L->lineno, col, 0);
	}
	for (size_t i = 1; i < sizeof sections / sizeof sections[0]; i++)
		if (strcmp(name, sections[i].name) == 0)
			L->table = sections[i].table;
	if (!L->table) {
		errs_add(L->e, "%s:%d:%d: unknown section [%s] (known: broker, ingest, outbox, http, registry, shadow, retention, sink NAME)",
			 L->path, L->lineno, col, name);
		return 0;
	}
	snprintf(L->section, sizeof L->section, "%s", name);
	/* a section may be opened again; its first header is where it is */
	return pos_find(L->c, L->section, NULL) ? 0 : pos_add(L->c, L->section, NULL, L->lineno, col, 0);
}

static int load_line(loader *L, char *line, char *s)
{
	int col = (int)(s - line) + 1;
	if (*s == '[')
		return load_header(L, line, s, col);
	if (!L->table && !L->sink)
		return 0; /* in a section already reported */
	if (L->sink && L->sink->bad)
		return 0;
	char *eq = strchr(s, '=');
	if (!eq || eq == s) {
		errs_add(L->e, "%s:%d:%d: expected 'key = value'", L->path, L->lineno, col);
		return 0;
	}
	*eq = '\0';
	char *key = trim(s), *v = eq + 1, *at = NULL, msg[512], where[4200];
	while (is_blank(*v))
		v++;
	const char *why = NULL;
	char *value = parse_value(v, &why, &at);
	if (!value) {
		errs_add(L->e, "%s:%d:%d: option '%s': %s", L->path, L->lineno, (int)(at - line) + 1, key, why);
		return 0;
	}
	int vcol = (int)(v - line) + 1;
	if (pos_find(L->c, L->section, key)) {
		config_where(L->c, L->section, key, where, sizeof where);
		errs_add(L->e, "%s:%d:%d: option '%s' is given twice%s%s%s; first at %s", L->path, L->lineno, col, key,
			 *L->section ? " in [" : " at the top level", L->section, *L->section ? "]" : "", where);
		return 0;
	}
	int rc = L->sink ? sink_set(L->c, L->sink, key, value, msg, sizeof msg)
			 : config_table_set(L->table, L->c, key, value, msg, sizeof msg);
	if (rc == TG_ENOMEM)
		return rc;
	if (rc == TG_ENOTFOUND) { /* an unknown key: its position is the key's */
		if (L->sink)
			errs_add(L->e, "%s:%d:%d: [sink %s] %s", L->path, L->lineno, col, L->sink->name, msg);
		else
			errs_add(L->e, "%s:%d:%d: %s%s%s%s", L->path, L->lineno, col, *L->section ? "[" : "", L->section,
				 *L->section ? "] " : "", msg);
		return 0;
	}
	if (rc) {
		char red[1024];
		config_redact_url(msg, red, sizeof red);
		if (L->sink)
			errs_add(L->e, "%s:%d:%d: [sink %s] %s", L->path, L->lineno, vcol, L->sink->name, red);
		else
			errs_add(L->e, "%s:%d:%d: %s", L->path, L->lineno, vcol, red);
		/* a sink without a usable type: its other keys cannot be placed */
		if (L->sink && !L->sink->type)
			L->sink->bad = 1;
	}
	return pos_add(L->c, L->section, key, L->lineno, vcol, rc != 0);
}

tg_config *config_load(const char *path, const config_sink_type *const *sink_types, char *err, size_t errlen)
{
	char msg[512];
	errs e = {err, errlen, 0};
	if (err && errlen)
		err[0] = '\0';
	tg_config *c = calloc(1, sizeof *c);
	FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0;
	if (!c || !(c->path = strdup(path)))
		goto oom;
	c->sink_types = sink_types;
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		if (config_table_defaults(sections[i].table, c, msg, sizeof msg)) {
			errs_add(&e, "built-in default: %s", msg);
			goto fail;
		}
	if (!(f = fopen(path, "r"))) {
		errs_add(&e, "%s: cannot open: %s", path, strerror(errno));
		goto fail;
	}
	loader L = {.c = c, .e = &e, .path = path, .table = top_options};
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		L.lineno++;
		if (L.lineno == 1 && n >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0)
			memmove(line, line + 3, (size_t)n - 2);
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (load_line(&L, line, s))
			goto oom;
	}
	for (size_t i = 0; i < c->nsinks; i++) {
		tg_sink_conf *sc = &c->sinks[i];
		char where[4200], sec[300];
		snprintf(sec, sizeof sec, "sink %s", sc->name);
		config_where(c, sec, NULL, where, sizeof where);
		if (sc->bad)
			continue;
		if (!sc->type)
			errs_add(&e, "%s: [sink %s] has no 'type'", where, sc->name);
		else if (config_table_check(sc->type->options, sc->opts, msg, sizeof msg))
			errs_add(&e, "%s: [sink %s] %s", where, sc->name, msg);
	}
	/* the checks across options run on what did parse, so one pass reports everything */
	if (finish(c, &e))
		goto oom;
	if (e.n)
		goto fail;
	free(line);
	fclose(f);
	return c;
oom:
	errs_add(&e, "%s: out of memory", path);
fail:
	free(line);
	if (f)
		fclose(f);
	config_free(c);
	return NULL;
}

void config_print(const tg_config *c, FILE *out)
{
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
		if (*sections[i].name)
			fprintf(out, "\n[%s]\n", sections[i].name);
		config_table_print(sections[i].table, c, out);
	}
	for (size_t i = 0; i < c->nsinks; i++) {
		const tg_sink_conf *sc = &c->sinks[i];
		if (sc->builtin)
			fprintf(out, "\n# built in: default_sinks names lake and no [sink lake] section is given");
		fprintf(out, "\n[sink %s]\ntype = %s\n", sc->name, sc->type->type);
		config_table_print(sink_core_options, sc, out);
		config_table_print(sc->type->options, sc->opts, out);
	}
}

void config_reference(const config_sink_type *const *sink_types, FILE *out)
{
	fprintf(out, "# tidegate configuration reference\n\n"
		     "Generated by `tidegate config-reference` from the option tables in the code.\n"
		     "Sizes take k/M/G suffixes (binary); durations take ms/s/m/h/d (a bare number is ms).\n\n"
		     "Syntax: `key = value` lines under `[section]` headers; `#` or `;` starts a comment at the start\n"
		     "of a line or after a blank, also after a value (`port = 8883   # comment`). A `#` inside a word\n"
		     "is kept (`http://host/a#b`). To keep blanks at either end or a ` #` in a value, quote it:\n"
		     "`path = \"/srv/lake #2\"` (inside quotes `\\\"` is a quote and `\\\\` a backslash). A key given twice in\n"
		     "a section is an error; so is any unknown section or key. `tidegate check-config -c FILE` reports\n"
		     "every error of a file with `file:line:col`, and runs every check `tidegate run` runs before it\n"
		     "starts (rules, schemas, aggregates, TLS files, sink settings) without starting anything.\n");
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		config_table_reference(*sections[i].name ? sections[i].name : "top level (before any section)",
				       sections[i].table, out);
	config_table_reference("sink NAME (every type)", sink_core_options, out);
	for (const config_sink_type *const *t = sink_types; t && *t; t++) {
		char title[64];
		snprintf(title, sizeof title, "sink NAME, type = %s", (*t)->type);
		config_table_reference(title, (*t)->options, out);
	}
}
