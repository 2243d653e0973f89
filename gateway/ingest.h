/*
 * ingest.h — what happens to one message from the broker, on the ingest thread:
 *
 *   identity (identity.h) -> raw checks + parse (size, UTF-8, depth, JSON, object) -> schema (validate,
 *   normalise) -> dedupe (thing, ts) -> enrichment -> rules (actions, alerts) -> aggregates
 *   -> record with the gateway's fields -> outbox (default sinks)
 *
 * Everything a message causes (its record, rule routes, alerts) is appended to the same
 * outbox group commit, so it is accepted or not as a whole. Anything rejected goes to
 * quarantine with a reason: the outbox's quarantine table, the default sinks' "quarantine"
 * table (so the lake keeps it) and, if configured, a republish on <quarantine_topic>/<thing>.
 * Nothing is dropped silently, and quarantine is logged: once per thing and reason per
 * log_repeat_interval, with a count (ratelog.h). Closed aggregate windows re-enter as
 * messages on aggregates/<thing>; alerts go out on their topic (QoS 1) and into the outbox
 * at high priority.
 *
 * Publishes the broker answers later: a QoS 1 republish of a rule (or an alert's
 * notification) is remembered by message id until its PUBACK. A refusal (reason >= 0x80)
 * is that action's failure — counted in action_errors and not as republished, logged at
 * most once per rule, reason and interval, and handed to the rule's errorAction with a copy
 * of the message that fired it (rules_run_error_action).
 *
 * Ownership: ingest_new() borrows cfg, the outbox and the broker (the daemon owns them and
 * outlives the ingest object); it owns the dedupe, aggregate and alert state it creates.
 */
#ifndef TG_INGEST_H
#define TG_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alerts/alerts.h"
#include "core/config.h"
#include "edge/schema.h"
#include "mqtt/broker.h"
#include "ops/metrics.h"
#include "rules/rules.h"
#include "store/outbox.h"

typedef struct ingest ingest;

/* Counters written by the ingest thread, read by /metrics (atomics): the structs the
 * metrics module defines as what it reads, so ops never includes the wiring. */
typedef metrics_ingest_counters ingest_stats;
typedef metrics_rule_counters ingest_rule_stats;

ingest *ingest_new(const tg_config *cfg, outbox *ob, broker *br, char *err, size_t errlen);
void ingest_free(ingest *ig); /* flushes open aggregate windows first; NULL-safe */
ingest_stats *ingest_stats_of(ingest *ig);
ingest_rule_stats *ingest_rule_stats_of(ingest *ig);

/* Swap the active rule / schema set (borrowed; the daemon owns them and frees the old one
 * after this returns, which is safe because both run only on the ingest thread). */
void ingest_set_rules(ingest *ig, const rules_set *rs);
void ingest_set_schemas(ingest *ig, const schema_set *ss);
/* rules_env.alert_idle for the ingest's alert state (0 when it has none). */
int ingest_alert_idle(const ingest *ig, const char *rule, const char *alert, uint64_t alert_key, const char *thing);
/* Registry lookup for enrichment and get_registry_data (optional). */
void ingest_set_registry(ingest *ig, json_t *(*lookup)(void *ud, const char *thing), void *ud);

/* Watchers of what ingest decides (the operator's console), called on the ingest thread
 * right after the fact; all optional, all arguments borrowed for the call. accepted: a
 * record was appended to the outbox's open group (text: the stored line, without msg_id,
 * or NULL when no sink took it — then serialise record; prio OUTBOX_PRIO_*). quarantined: a message was rejected. alert: an alert was raised or
 * cleared. They must be quick: they run once per message. */
typedef struct ingest_observer {
	void (*accepted)(void *ud, const char *thing, const char *topic, int prio, int64_t received_ms,
			 const json_t *record, const char *text, size_t len);
	void (*quarantined)(void *ud, const char *thing, const char *topic, const char *reason, const char *field,
			    const char *detail, int64_t received_ms);
	void (*alert)(void *ud, const alerts_event *ev, int64_t now_ms);
	void *ud;
} ingest_observer;
void ingest_set_observer(ingest *ig, const ingest_observer *obs); /* copied; NULL removes */

/* Process one message. payload is borrowed. Returns 0 (accepted or quarantined) or < 0
 * when the outbox failed (the daemon logs it; the message was not accepted). */
int ingest_message(ingest *ig, const char *topic, const void *payload, size_t len, int qos,
		   const struct mqtt5__property *props, int64_t now_ms);

/* Run the rules on a message that did not come through ingest_message (the shadow service's
 * responses): its actions join the open group like a telemetry message's. m is borrowed. */
void ingest_rules(ingest *ig, const tg_msg *m);

/* Time-driven work: close aggregate windows. Call about once a second. */
void ingest_tick(ingest *ig, int64_t now_ms);

#endif
