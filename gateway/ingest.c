/*
 * ingest.c — see ingest.h. Runs on the broker's loop thread; everything here is
 * synchronous and allocation is limited to the JSON the records need.
 */
#include "ingest.h"

#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts/alerts.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/jsonout.h"
#include "core/log.h"
#include "core/ratelog.h"
#include "core/timefmt.h"
#include "edge/aggregate.h"
#include "edge/dedupe.h"
#include "mqtt/identity.h"

#define QUARANTINE_KEEP_BYTES 4096
#define MAX_PENDING_WINDOWS 4096
/* QoS 1 publishes of rules and alerts waiting for their PUBACK, by message id: a table
 * indexed by mid (ids are handed out in turn, so a slot is reused 1024 publishes later),
 * the copies of the messages they came from capped in bytes, and forgotten after a while */
#define INFLIGHT_SLOTS 1024
#define INFLIGHT_MAX_BYTES (4 << 20)
#define INFLIGHT_MAX_AGE_MS 300000
#define RATELOG_SLOTS 256

/* A publish waiting for its PUBACK: what a refusal needs to be counted against its rule,
 * logged and, for a rule with an errorAction, to run it with the message that fired it. */
typedef struct inflight {
	int mid; /* 0: free */
	int64_t at_ms;
	rules_action_kind kind; /* RULES_ACT_REPUBLISH or RULES_ACT_ALERT (its notification) */
	int is_error_action;
	char *rule, *topic;
	/* the message, when the rule has an errorAction (else NULL) */
	tg_msg *m;
	size_t bytes;
} inflight;

struct ingest {
	const tg_config *cfg;
	outbox *ob;
	broker *br;
	const char *const *default_sinks;
	size_t ndefault;
	const char *webhook_sink; /* first configured sink of type webhook, or NULL */
	const rules_set *rules;
	const schema_set *schemas;
	dedupe *dd;
	aggregate_set *agg;
	alerts *al;
	json_t *(*registry_lookup)(void *ud, const char *thing);
	void *registry_ud;
	schema_limits limits;
	schema_stats sst;
	ingest_stats st;
	ingest_rule_stats rst;
	/* context of the message being processed, for action and emit callbacks */
	int64_t now_ms;
	const char *thing;
	const char *alert_topic;
	const char *alert_webhook;
	/* closed aggregate windows waiting to re-enter (the emit callback may not recurse) */
	json_t *pending_windows;
	int64_t last_tick_ms;
	inflight *inflight; /* INFLIGHT_SLOTS, allocated with the first QoS 1 publish */
	size_t inflight_bytes;
	ratelog *quarantine_log; /* key thing, kind reason */
	ratelog *refused_log;    /* key rule ("" for other publishes), kind reason code */
	int64_t last_report_ms;
	ingest_observer obs;
};

static int on_alert(void *ud, const alerts_event *ev);
static int on_window(void *ud, const aggregate_window *w);
static void on_puback(void *ud, int mid, int reason);
static void report_quarantine(void *ud, const char *thing, int reason, uint64_t count, const char *context);
static void report_refused(void *ud, const char *rule, int reason, uint64_t count, const char *context);

/* ---- publishes waiting for their PUBACK ------------------------------------------------ */

static void msg_free(tg_msg *m)
{
	if (!m)
		return;
	free((char *)m->topic);
	free((char *)m->thing);
	free((char *)m->client_id);
	free((void *)m->payload);
	json_decref(m->json);
	mosquitto_property *props = (mosquitto_property *)m->props;
	mosquitto_property_free_all(&props);
	free(m);
}

/* A copy of m that outlives the message callback (the payload and props are the broker's). */
static tg_msg *msg_copy(const tg_msg *m, size_t *bytes)
{
	tg_msg *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->topic = strdup(m->topic ? m->topic : "");
	c->thing = strdup(m->thing ? m->thing : "");
	c->client_id = strdup(m->client_id ? m->client_id : (m->thing ? m->thing : ""));
	c->principal = c->thing;
	c->payload = malloc(m->payloadlen + 1);
	c->payloadlen = m->payloadlen;
	/* shallow: the gateway adds its fields to the top level of m->json after the rules ran */
	c->json = m->json ? json_copy(m->json) : NULL;
	c->received_ms = m->received_ms;
	c->qos = m->qos;
	mosquitto_property *props = NULL;
	if (m->props && mosquitto_property_copy_all(&props, (const mosquitto_property *)m->props) != MOSQ_ERR_SUCCESS)
		props = NULL;
	c->props = (const struct mqtt5__property *)props;
	if (!c->topic || !c->thing || !c->client_id || !c->payload || (m->json && !c->json)) {
		msg_free(c);
		return NULL;
	}
	if (m->payloadlen)
		memcpy((void *)c->payload, m->payload, m->payloadlen);
	*bytes = sizeof *c + strlen(c->topic) + strlen(c->thing) + m->payloadlen * 3; /* the JSON copy: about twice */
	return c;
}

static void inflight_clear(ingest *ig, inflight *f)
{
	free(f->rule);
	free(f->topic);
	msg_free(f->m);
	ig->inflight_bytes -= f->bytes;
	memset(f, 0, sizeof *f);
}

/* Remember a QoS 1 publish of a rule (or an alert's notification) until its PUBACK. m: the
 * message to run the rule's errorAction with, or NULL. A failure to remember only costs the
 * errorAction of a later refusal, which is still counted and logged. */
static void inflight_put(ingest *ig, int mid, rules_action_kind kind, int is_error_action, const char *rule,
			 const char *topic, const tg_msg *m)
{
	if (mid <= 0 || (!ig->inflight && !(ig->inflight = calloc(INFLIGHT_SLOTS, sizeof *ig->inflight))))
		return;
	inflight *f = &ig->inflight[(unsigned)mid % INFLIGHT_SLOTS];
	if (f->mid)
		inflight_clear(ig, f); /* unanswered for INFLIGHT_SLOTS publishes */
	f->mid = mid;
	f->at_ms = ig->now_ms;
	f->kind = kind;
	f->is_error_action = is_error_action;
	f->rule = strdup(rule ? rule : "");
	f->topic = strdup(topic ? topic : "");
	if (m && ig->inflight_bytes < INFLIGHT_MAX_BYTES && (f->m = msg_copy(m, &f->bytes)))
		ig->inflight_bytes += f->bytes;
	if (!f->rule || !f->topic)
		inflight_clear(ig, f);
}

static int on_action(void *ud, const rules_action_out *a, char *err, size_t errlen);

typedef struct action_ctx {
	ingest *ig;
	const tg_msg *m;
} action_ctx;

/* The broker answered a publish of ours. A refusal (reason >= 0x80, e.g. 135 when the ACL
 * does not let the gateway publish there) of a rule's republish is that action's failure:
 * counted, logged (rate-limited) and, when the rule has an errorAction, that runs now with
 * the message that fired the rule. */
static void on_puback(void *ud, int mid, int reason)
{
	ingest *ig = ud;
	inflight *f = ig->inflight && mid > 0 ? &ig->inflight[(unsigned)mid % INFLIGHT_SLOTS] : NULL;
	if (f && f->mid != mid)
		f = NULL; /* a QoS 0 publish, or not one of a rule's */
	if (reason < 0x80) {
		if (f) {
			atomic_fetch_add(&ig->rst.republished, 1);
			inflight_clear(ig, f);
		}
		return;
	}
	char why[200], context[400];
	int64_t now = tg_wall_ms(); /* a PUBACK may come while no message flows */
	snprintf(why, sizeof why, "the broker refused the publish: %s (%d)", mosquitto_reason_string(reason), reason);
	if (!f) {
		snprintf(context, sizeof context, "-\x1f-\x1f%d", mid);
		ratelog_hit(ig->refused_log, "", reason, context, now);
		return;
	}
	atomic_fetch_add(&ig->rst.action_errors, 1);
	atomic_fetch_add(&ig->rst.republish_errors, 1);
	snprintf(context, sizeof context, "%s\x1f%s%s\x1f-", f->topic, f->kind == RULES_ACT_ALERT ? "alert" : "republish",
		 f->is_error_action ? "-errorAction" : "");
	ratelog_hit(ig->refused_log, f->rule, reason, context, now);
	if (f->m && f->kind == RULES_ACT_REPUBLISH && !f->is_error_action && ig->rules) {
		/* the errorAction's own actions see this message as the current one */
		int64_t saved_now = ig->now_ms;
		const char *thing = ig->thing;
		ig->now_ms = f->m->received_ms;
		ig->thing = f->m->thing;
		action_ctx ac = {ig, f->m};
		rules_stats st = {0};
		if (rules_run_error_action(ig->rules, f->rule, f->m, RULES_ACT_REPUBLISH, f->topic, why, on_action, &ac,
					   &st) < 0)
			LOG_WARN("rules", "msg=\"errorAction could not run\" rule=%s", f->rule);
		atomic_fetch_add(&ig->rst.actions, st.actions);
		atomic_fetch_add(&ig->rst.action_errors, st.action_errors);
		ig->now_ms = saved_now;
		ig->thing = thing;
	}
	inflight_clear(ig, f);
}

/* Publishes never answered (a session the broker dropped) are forgotten after a while. */
static void inflight_expire(ingest *ig, int64_t now_ms)
{
	if (!ig->inflight)
		return;
	for (size_t i = 0; i < INFLIGHT_SLOTS; i++)
		if (ig->inflight[i].mid && now_ms - ig->inflight[i].at_ms > INFLIGHT_MAX_AGE_MS)
			inflight_clear(ig, &ig->inflight[i]);
}

/* ratelog keeps one context string per (key, kind): ours are fields joined by 0x1f, split
 * again here so that each goes into the log line as a value of its own (log.c escapes
 * values, never a pre-built key=value text). */
static void split3(const char *context, char f[3][400])
{
	const char *p = context;
	for (int i = 0; i < 3; i++) {
		const char *e = strchr(p, 0x1f);
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n >= sizeof f[i])
			n = sizeof f[i] - 1;
		memcpy(f[i], p, n);
		f[i][n] = '\0';
		p = e ? e + 1 : p + strlen(p);
	}
}

static void report_refused(void *ud, const char *rule, int reason, uint64_t count, const char *context)
{
	char f[3][400];
	split3(context, f);
	LOG_WARN("rules", "msg=\"publish refused by the broker\" rule=%s reason=%d reason_text=\"%s\" count=%llu topic=%s "
			  "action=%s mid=%s",
		 *rule ? rule : "-", reason, mosquitto_reason_string(reason), (unsigned long long)count, f[0], f[1], f[2]);
}

ingest *ingest_new(const tg_config *cfg, outbox *ob, broker *br, char *err, size_t errlen)
{
	ingest *ig = calloc(1, sizeof *ig);
	char why[1024];
	if (!ig || !(ig->pending_windows = json_array())) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	ig->cfg = cfg;
	ig->ob = ob;
	ig->br = br;
	ig->default_sinks = (const char *const *)cfg->default_sink_list;
	ig->ndefault = cfg->ndefault_sinks;
	for (size_t i = 0; i < cfg->nsinks && !ig->webhook_sink; i++)
		if (strcmp(cfg->sinks[i].type->type, "webhook") == 0)
			ig->webhook_sink = cfg->sinks[i].name;
	ig->limits.max_bytes = (size_t)cfg->max_payload;
	ig->limits.max_depth = (int)cfg->max_depth;
	int64_t every = cfg->log_repeat_interval_ms > 0 ? cfg->log_repeat_interval_ms : 60000;
	if (!(ig->quarantine_log = ratelog_new(RATELOG_SLOTS, every, report_quarantine, ig)) ||
	    !(ig->refused_log = ratelog_new(RATELOG_SLOTS, every, report_refused, ig))) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	if (cfg->dedupe_window_ms > 0) {
		dedupe_conf dc = {.window_ms = cfg->dedupe_window_ms,
				  .per_thing = (size_t)cfg->dedupe_per_thing,
				  .max_things = (size_t)cfg->dedupe_max_things};
		if (!(ig->dd = dedupe_new(&dc, why, sizeof why))) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [ingest] dedupe: %s", cfg->path, why);
			goto fail;
		}
	}
	if (cfg->aggregates_file && *cfg->aggregates_file &&
	    !(ig->agg = aggregate_load_file(cfg->aggregates_file, on_window, ig, why, sizeof why))) {
		tg_seterr(err, errlen, TG_EPARSE, "%s", why);
		goto fail;
	}
	char alerts_db[4096];
	snprintf(alerts_db, sizeof alerts_db, "%s/alerts.db", cfg->data_dir);
	alerts_conf ac = {.db_path = alerts_db, .emit = on_alert, .ud = ig};
	if (!(ig->al = alerts_open(&ac, why, sizeof why))) {
		tg_seterr(err, errlen, TG_EDB, "alert state %s: %s", alerts_db, why);
		goto fail;
	}
	if (br)
		broker_set_puback_fn(br, on_puback, ig);
	return ig;
fail:
	ingest_free(ig);
	return NULL;
}

void ingest_free(ingest *ig)
{
	if (!ig)
		return;
	if (ig->agg) {
		/* a clean stop emits the open windows: they are complete up to now */
		aggregate_flush(ig->agg);
		ingest_tick(ig, 0);
		aggregate_free(ig->agg);
	}
	if (ig->br)
		broker_set_puback_fn(ig->br, NULL, NULL);
	if (ig->inflight)
		for (size_t i = 0; i < INFLIGHT_SLOTS; i++)
			inflight_clear(ig, &ig->inflight[i]);
	free(ig->inflight);
	ratelog_free(ig->quarantine_log); /* reports what is still counted */
	ratelog_free(ig->refused_log);
	alerts_close(ig->al);
	dedupe_free(ig->dd);
	json_decref(ig->pending_windows);
	free(ig);
}

ingest_stats *ingest_stats_of(ingest *ig) { return &ig->st; }
ingest_rule_stats *ingest_rule_stats_of(ingest *ig) { return &ig->rst; }
void ingest_set_rules(ingest *ig, const rules_set *rs) { ig->rules = rs; }
void ingest_set_schemas(ingest *ig, const schema_set *ss) { ig->schemas = ss; }

int ingest_alert_idle(const ingest *ig, const char *rule, const char *alert, uint64_t alert_key, const char *thing)
{
	return ig && ig->al ? alerts_idle(ig->al, rule, alert, alert_key, thing) : 0;
}

void ingest_set_observer(ingest *ig, const ingest_observer *obs)
{
	if (obs)
		ig->obs = *obs;
	else
		memset(&ig->obs, 0, sizeof ig->obs);
}

void ingest_set_registry(ingest *ig, json_t *(*lookup)(void *ud, const char *thing), void *ud)
{
	ig->registry_lookup = lookup;
	ig->registry_ud = ud;
}

/* Table name of a topic: its last level (devices/x/telemetry -> telemetry). */
static const char *table_of(const char *topic)
{
	const char *last = strrchr(topic, '/');
	return last && last[1] ? last + 1 : topic;
}

/* ratelog kinds are ints: the schema reason's code, or SCHEMA_R__COUNT for bad_topic */
static schema_reason quarantine_reason_code(const char *reason)
{
	for (int r = 0; r < SCHEMA_R__COUNT; r++)
		if (strcmp(schema_reason_name((schema_reason)r), reason) == 0)
			return (schema_reason)r;
	return SCHEMA_R__COUNT;
}

static void report_quarantine(void *ud, const char *thing, int reason, uint64_t count, const char *context)
{
	(void)ud;
	const char *name = reason < SCHEMA_R__COUNT ? schema_reason_name((schema_reason)reason) : "bad_topic";
	char f[3][400];
	split3(context, f);
	LOG_WARN("ingest", "msg=quarantined thing=%s reason=%s count=%llu topic=%s field=%s detail=\"%s\"", thing, name,
		 (unsigned long long)count, f[0], f[1], f[2]);
}

static int quarantine(ingest *ig, const char *thing, const char *topic, const char *reason, const char *field,
		      const char *detail, const void *payload, size_t len, int64_t now_ms)
{
	atomic_fetch_add(&ig->st.quarantined, 1);
	if (ig->obs.quarantined)
		ig->obs.quarantined(ig->obs.ud, thing, topic, reason, field, detail, now_ms);
	/* one line per thing and reason per interval, with a count: an operator sees what is
	 * refused without SQL, and a device sending garbage at 10 Hz does not flood the log */
	char context[600];
	snprintf(context, sizeof context, "%s\x1f%s\x1f%s", topic, field ? field : "", detail ? detail : "");
	ratelog_hit(ig->quarantine_log, thing, (int)quarantine_reason_code(reason), context, now_ms);
	int rc = outbox_quarantine(ig->ob, now_ms, thing, topic, reason, field, detail, payload, len);
	if (rc)
		return rc;
	json_t *q = json_object();
	if (!q)
		return TG_ENOMEM;
	char when[32];
	timefmt_format_rfc3339(now_ms, when, sizeof when);
	json_object_set_new(q, "thing", json_string(thing));
	json_object_set_new(q, "topic", json_string(topic));
	json_object_set_new(q, "received_at", json_string(when));
	json_object_set_new(q, "reason", json_string(reason));
	if (field && *field)
		json_object_set_new(q, "field", json_string(field));
	if (detail && *detail)
		json_object_set_new(q, "detail", json_string(detail));
	/* keep the evidence, capped so a 16 MiB reject does not bloat the lake */
	size_t keep = len > QUARANTINE_KEEP_BYTES ? QUARANTINE_KEEP_BYTES : len;
	json_object_set_new(q, "payload_bytes", json_integer((json_int_t)len));
	json_t *text = json_stringn(payload, keep); /* NULL when not valid UTF-8 */
	if (text) {
		json_object_set_new(q, "payload", text);
	} else {
		char hex[2 * QUARANTINE_KEEP_BYTES + 1];
		for (size_t i = 0; i < keep; i++)
			snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)payload)[i]);
		hex[2 * keep] = '\0';
		json_object_set_new(q, "payload_hex", json_string(hex));
	}
	int64_t qid = 0;
	if (ig->ndefault)
		rc = outbox_append(ig->ob, ig->default_sinks, ig->ndefault, OUTBOX_PRIO_BULK, "quarantine", thing, now_ms, q,
				   &qid);
	if (rc == 0 && ig->cfg->quarantine_topic && *ig->cfg->quarantine_topic) {
		if (qid) { /* the notice names the lake record it refers to */
			char mid[192];
			snprintf(mid, sizeof mid, "%s-%" PRId64, ig->cfg->gateway_id, qid);
			json_object_set_new(q, "msg_id", json_string(mid));
		}
		char t[512];
		snprintf(t, sizeof t, "%s/%s", ig->cfg->quarantine_topic, thing);
		char *s = jsonout_dumps(q);
		if (s) {
			broker_publish(ig->br, t, s, strlen(s), 0, 0);
			free(s);
		}
	}
	json_decref(q);
	return rc == TG_EFULL ? 0 : rc;
}

/* ---- alerts and aggregates ------------------------------------------------------------ */

/* An envelope the webhook sink unpacks; delivered (and retried) from the outbox. */
static int enqueue_webhook(ingest *ig, const char *url, json_t *headers, json_t *body)
{
	if (!ig->webhook_sink)
		return TG_EINVAL;
	json_t *env = json_pack("{s:s, s:o, s:O}", "url", url, "headers",
				json_is_object(headers) ? json_incref(headers) : json_object(), "body", body);
	if (!env)
		return TG_ENOMEM;
	const char *sinks[] = {ig->webhook_sink};
	int rc = outbox_append(ig->ob, sinks, 1, OUTBOX_PRIO_ALERT, "webhook", ig->thing, ig->now_ms, env, NULL);
	json_decref(env);
	return rc;
}

static int on_alert(void *ud, const alerts_event *ev)
{
	ingest *ig = ud;
	char topic[512];
	if (ig->alert_topic && *ig->alert_topic)
		snprintf(topic, sizeof topic, "%s", ig->alert_topic);
	else
		snprintf(topic, sizeof topic, "alerts/%s/%s", ev->thing, ev->alert);
	char *text = jsonout_dumps(ev->json);
	if (!text)
		return TG_ENOMEM;
	/* the broker copy is best effort (not connected: the outbox copy still goes upstream);
	 * a refusal is the alert action's failure, counted when the PUBACK says so */
	int mid = 0;
	if (broker_publish_v5(ig->br, topic, text, strlen(text), 1, 0, NULL, &mid) == 0)
		inflight_put(ig, mid, RULES_ACT_ALERT, 0, ev->rule, topic, NULL);
	free(text);
	json_t *rec = json_copy(ev->json);
	if (!rec)
		return TG_ENOMEM;
	int rc = 0;
	if (ig->ndefault)
		rc = outbox_append(ig->ob, ig->default_sinks, ig->ndefault, OUTBOX_PRIO_ALERT, "alerts", ev->thing, ig->now_ms,
				   rec, NULL);
	json_decref(rec);
	if (rc == 0 && ig->alert_webhook)
		rc = enqueue_webhook(ig, ig->alert_webhook, NULL, ev->json);
	if (ig->obs.alert)
		ig->obs.alert(ig->obs.ud, ev, ig->now_ms);
	if (ev->state == ALERTS_STATE_RAISED)
		atomic_fetch_add(&ig->st.alerts_raised, 1);
	else
		atomic_fetch_add(&ig->st.alerts_cleared, 1);
	LOG_INFO("alerts", "msg=\"alert %s\" alert=%s rule=%s thing=%s severity=%s",
		 ev->state == ALERTS_STATE_RAISED ? "raised" : "cleared", ev->alert, ev->rule, ev->thing, ev->severity);
	return rc;
}

static int on_window(void *ud, const aggregate_window *w)
{
	ingest *ig = ud;
	if (json_array_size(ig->pending_windows) >= MAX_PENDING_WINDOWS)
		return TG_EFULL;
	json_t *item = json_pack("{s:s, s:O}", "thing", w->thing, "json", w->json);
	if (!item)
		return TG_ENOMEM;
	return json_array_append_new(ig->pending_windows, item) ? TG_ENOMEM : 0;
}

/* ---- rules ---------------------------------------------------------------------------- */

/* The republish `headers` as MQTT v5 properties; a value a template made invalid fails the
 * action (and runs the errorAction), naming the header. *props is the caller's to free. */
static int republish_props(const rules_action_out *a, mosquitto_property **props, char *err, size_t errlen)
{
	int rc = 0;
	for (int i = 0; i < a->nheaders && !rc; i++) {
		const rules_header *h = &a->headers[i];
		rules_header_val v;
		if ((rc = rules_header_decode(h, &v, err, errlen)))
			break;
		int mrc;
		switch (h->kind) {
		case RULES_HDR_PAYLOAD_FORMAT:
			mrc = mosquitto_property_add_byte(props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, (uint8_t)v.num);
			break;
		case RULES_HDR_CONTENT_TYPE:
			mrc = mosquitto_property_add_string(props, MQTT_PROP_CONTENT_TYPE, h->value);
			break;
		case RULES_HDR_RESPONSE_TOPIC:
			mrc = mosquitto_property_add_string(props, MQTT_PROP_RESPONSE_TOPIC, h->value);
			break;
		case RULES_HDR_CORRELATION_DATA:
			mrc = mosquitto_property_add_binary(props, MQTT_PROP_CORRELATION_DATA, v.bin, (uint16_t)v.binlen);
			break;
		case RULES_HDR_MESSAGE_EXPIRY:
			mrc = mosquitto_property_add_int32(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, v.num);
			break;
		case RULES_HDR_USER_PROPERTY:
			mrc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, h->key, h->value);
			break;
		default: mrc = MOSQ_ERR_INVAL; break;
		}
		free(v.bin);
		if (mrc != MOSQ_ERR_SUCCESS)
			rc = tg_seterr(err, errlen, mrc == MOSQ_ERR_NOMEM ? TG_ENOMEM : TG_EINVAL, "headers.%s: %s",
				       rules_header_name(h->kind), mosquitto_strerror(mrc));
	}
	if (rc)
		mosquitto_property_free_all(props);
	return rc;
}

/* The side effects of rule actions. Everything goes into the same group commit as the
 * record itself, so a message and what its rules routed are accepted together. */
static int on_action(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	action_ctx *ac = ud;
	ingest *ig = ac->ig;
	switch (a->kind) {
	case RULES_ACT_REPUBLISH: {
		mosquitto_property *props = NULL;
		int rc = republish_props(a, &props, err, errlen);
		if (rc) {
			atomic_fetch_add(&ig->rst.republish_errors, 1);
			return rc;
		}
		char *text = jsonout_dumps(a->payload);
		if (!text) {
			mosquitto_property_free_all(&props);
			return tg_seterr(err, errlen, TG_ENOMEM, "cannot serialise the payload");
		}
		int mid = 0;
		rc = broker_publish_v5(ig->br, a->topic, text, strlen(text), a->qos, 0, props, &mid);
		free(text);
		mosquitto_property_free_all(&props);
		if (rc) {
			atomic_fetch_add(&ig->rst.republish_errors, 1);
			return tg_seterr(err, errlen, rc, "republish to %s failed: %s", a->topic,
					 rc == TG_ENET ? "not connected to the broker" : "the client refused the publish");
		}
		if (a->qos == 0) /* no answer will come: MQTT gives a refused QoS 0 publish none */
			atomic_fetch_add(&ig->rst.republished, 1);
		else
			inflight_put(ig, mid, RULES_ACT_REPUBLISH, a->is_error_action, a->rule, a->topic,
				     a->has_error_action && !a->is_error_action ? ac->m : NULL);
		return 0;
	}
	case RULES_ACT_SINK: {
		/* the engine's payload is borrowed: add msg_id to a shallow copy */
		json_t *rec = json_copy(a->payload);
		if (!rec)
			return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		const char *sinks[] = {a->sink};
		int rc = outbox_append(ig->ob, sinks, 1, OUTBOX_PRIO_BULK, a->table ? a->table : "telemetry",
				       a->pkey && *a->pkey ? a->pkey : ig->thing, ig->now_ms, rec, NULL);
		json_decref(rec);
		if (rc)
			return tg_seterr(err, errlen, rc, "outbox append for sink %s failed: %s", a->sink, tg_strerror(rc));
		atomic_fetch_add(&ig->rst.sink_appends, 1);
		return 0;
	}
	case RULES_ACT_ALERT: {
		ig->alert_topic = a->topic; /* expanded by the engine, default alerts/<clientid>/<name> */
		json_t *hook = a->params ? json_object_get(a->params, "webhook") : NULL;
		ig->alert_webhook = json_is_string(hook) ? json_string_value(hook) : NULL;
		if (ig->alert_webhook && !ig->webhook_sink)
			return tg_seterr(err, errlen, TG_EINVAL, "alert webhook: no sink of type webhook is configured");
		int rc = alerts_on_action(ig->al, a, ac->m, ig->now_ms);
		ig->alert_topic = ig->alert_webhook = NULL;
		if (rc == ALERTS_SUPPRESSED)
			atomic_fetch_add(&ig->st.alerts_suppressed, 1);
		if (rc < 0 && rc != TG_EDB)
			return tg_seterr(err, errlen, rc, "alert %s: %s", a->alert_name ? a->alert_name : "?", tg_strerror(rc));
		return 0;
	}
	case RULES_ACT_WEBHOOK: {
		if (!ig->webhook_sink)
			return tg_seterr(err, errlen, TG_EINVAL, "webhook action: no sink of type webhook is configured");
		int rc = enqueue_webhook(ig, a->url, a->params ? json_object_get(a->params, "headers") : NULL, a->payload);
		if (rc)
			return tg_seterr(err, errlen, rc, "outbox append for webhook failed: %s", tg_strerror(rc));
		return 0;
	}
	default:
		return tg_seterr(err, errlen, TG_EUNSUPPORTED, "unknown action kind %d", (int)a->kind);
	}
}

static void run_rules(ingest *ig, const tg_msg *m)
{
	if (!ig->rules)
		return;
	action_ctx ac = {ig, m};
	rules_stats st = {0};
	rules_eval(ig->rules, m, on_action, &ac, &st);
	atomic_fetch_add(&ig->rst.evaluated, st.evaluated);
	atomic_fetch_add(&ig->rst.matched, st.matched);
	atomic_fetch_add(&ig->rst.actions, st.actions);
	atomic_fetch_add(&ig->rst.action_errors, st.action_errors);
	atomic_fetch_add(&ig->rst.eval_errors, st.eval_errors);
}

void ingest_rules(ingest *ig, const tg_msg *m)
{
	ig->now_ms = m->received_ms;
	ig->thing = m->thing;
	run_rules(ig, m);
}

/* Rules, aggregates, then the record itself to the default sinks. obj is borrowed and gets
 * the gateway's fields added. ts: obj's integer "ts" if the caller has read it, else NULL. */
static int accept(ingest *ig, const tg_msg *m, json_t *obj, int prio, const char *table, const int64_t *ts)
{
	ig->now_ms = m->received_ms;
	ig->thing = m->thing;
	/* rules see the device's (normalised) payload, before the gateway adds its fields */
	run_rules(ig, m);
	if (ig->agg && prio == OUTBOX_PRIO_BULK)
		aggregate_add(ig->agg, m->topic, m->thing, obj, ts, m->received_ms, m->received_ms);
	char when[32];
	timefmt_format_rfc3339(m->received_ms, when, sizeof when);
	json_object_set_new(obj, "thing", json_string(m->thing));
	json_object_set_new(obj, "topic", json_string(m->topic));
	json_object_set_new(obj, "received_at", json_string(when));
	int rc = outbox_append(ig->ob, ig->default_sinks, ig->ndefault, prio, table, m->thing, m->received_ms, obj, NULL);
	if (rc == TG_EFULL) {
		atomic_fetch_add(&ig->st.rejected_full, 1);
		return 0;
	}
	if (rc) {
		atomic_fetch_add(&ig->st.errors, 1);
		return rc;
	}
	atomic_fetch_add(&ig->st.accepted, 1);
	if (ig->obs.accepted) {
		size_t len = 0;
		const char *text = outbox_last_text(ig->ob, &len);
		ig->obs.accepted(ig->obs.ud, m->thing, m->topic, prio, m->received_ms, obj, text, len);
	}
	return 0;
}

/* Closed aggregate windows re-enter as messages on aggregates/<thing>. */
static void drain_windows(ingest *ig, int64_t now_ms)
{
	while (json_array_size(ig->pending_windows) > 0) {
		json_t *item = json_incref(json_array_get(ig->pending_windows, 0));
		json_array_remove(ig->pending_windows, 0);
		const char *thing = json_string_value(json_object_get(item, "thing"));
		json_t *obj = json_object_get(item, "json");
		char topic[512];
		snprintf(topic, sizeof topic, "aggregates/%s", thing);
		char *text = jsonout_dumps(obj);
		if (text) {
			broker_publish(ig->br, topic, text, strlen(text), 0, 0);
			tg_msg m = {.topic = topic, .thing = thing, .client_id = thing, .principal = thing,
				    .payload = text, .payloadlen = strlen(text), .json = obj,
				    .received_ms = now_ms ? now_ms : ig->now_ms};
			if (accept(ig, &m, obj, OUTBOX_PRIO_AGGREGATE, "aggregates", NULL) == 0)
				atomic_fetch_add(&ig->st.aggregates_emitted, 1);
			free(text);
		}
		json_decref(item);
	}
}

void ingest_tick(ingest *ig, int64_t now_ms)
{
	if (now_ms && now_ms - ig->last_report_ms >= 1000) {
		ig->last_report_ms = now_ms;
		ratelog_tick(ig->quarantine_log, now_ms);
		ratelog_tick(ig->refused_log, now_ms);
		inflight_expire(ig, now_ms);
	}
	if (!ig->agg)
		return;
	if (now_ms && now_ms - ig->last_tick_ms < 1000)
		return;
	if (now_ms) {
		ig->last_tick_ms = now_ms;
		aggregate_tick(ig->agg, now_ms);
	}
	drain_windows(ig, now_ms);
}

/* Event time of a normalised record: its integer ts, else none. */
static int event_ts(const json_t *obj, int64_t *ts)
{
	json_t *t = json_object_get(obj, "ts");
	if (!json_is_integer(t))
		return 0;
	*ts = (int64_t)json_integer_value(t);
	return 1;
}

int ingest_message(ingest *ig, const char *topic, const void *payload, size_t len, int qos,
		   const struct mqtt5__property *props, int64_t now_ms)
{
	atomic_fetch_add(&ig->st.received, 1);
	char thing[256];
	if (identity_thing((identity_mode)ig->cfg->broker_identity, topic, props, thing, sizeof thing)) {
		atomic_fetch_add(&ig->st.bad_topic, 1);
		return quarantine(ig, "unknown", topic, "bad_topic", NULL, "topic has no thing segment", payload, len, now_ms);
	}
	schema_reject why = {0};
	json_t *obj = schema_parse_payload(payload, len, &ig->limits, &why, NULL);
	if (!obj) {
		atomic_fetch_add(&ig->st.by_reason[why.reason], 1);
		return quarantine(ig, thing, topic, schema_reason_name(why.reason), why.field, why.text, payload, len, now_ms);
	}
	int rc;
	if (ig->schemas) {
		rc = schema_apply(ig->schemas, topic, obj, now_ms, &why, &ig->sst);
		if (rc == TG_EINVAL) {
			json_decref(obj);
			atomic_fetch_add(&ig->st.by_reason[why.reason], 1);
			return quarantine(ig, thing, topic, schema_reason_name(why.reason), why.field, why.text, payload, len,
					  now_ms);
		}
		if (rc < 0) {
			json_decref(obj);
			atomic_fetch_add(&ig->st.errors, 1);
			return rc;
		}
	}
	int64_t ts;
	int has_ts = (ig->dd || ig->agg) && event_ts(obj, &ts); /* read once for dedupe and aggregates */
	if (ig->dd && has_ts && dedupe_check(ig->dd, thing, ts, now_ms) == 1) {
		json_decref(obj);
		atomic_fetch_add(&ig->st.duplicates, 1);
		atomic_fetch_add(&ig->st.by_reason[SCHEMA_R_DUPLICATE], 1);
		char detail[96];
		snprintf(detail, sizeof detail, "(thing, ts=%" PRId64 ") already seen", ts);
		return quarantine(ig, thing, topic, schema_reason_name(SCHEMA_R_DUPLICATE), "ts", detail, payload, len,
				  now_ms);
	}
	if (ig->cfg->enrich && ig->registry_lookup) {
		json_t *attrs = ig->registry_lookup(ig->registry_ud, thing);
		if (attrs)
			json_object_set_new(obj, "attributes", attrs);
	}
	tg_msg m = {
		.topic = topic, .thing = thing, .client_id = thing, .principal = thing, .payload = payload,
		.payloadlen = len, .json = obj, .received_ms = now_ms, .qos = qos, .props = props,
	};
	rc = accept(ig, &m, obj, OUTBOX_PRIO_BULK, table_of(topic), has_ts ? &ts : NULL);
	json_decref(obj);
	if (ig->agg && json_array_size(ig->pending_windows))
		drain_windows(ig, now_ms);
	return rc;
}
