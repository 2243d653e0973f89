/*
 * alerts.h — the threshold-alert state machine behind the rules engine's {"alert": {...}}
 * action.
 *
 * Per message, for every alert action of a rule whose FROM matched, the rules engine says
 * whether the rule's WHERE held (RULES_ALERT_RAISE), its clear expression held
 * (RULES_ALERT_CLEAR) or neither (RULES_ALERT_NONE). This module keeps one state per
 * (rule, alert name, thing):
 *
 *     OK --raise--> PENDING --enough raises--> RAISED --clear--> OK
 *            (any non-raise report in PENDING goes back to OK: raises must be consecutive)
 *
 * "Enough" is `for` consecutive raise reports (default 1) and, when `forSeconds` is given,
 * at least that much event time between the first and the current raise report. In RAISED,
 * NONE keeps the alert raised (the band between the WHERE and the clear threshold is the
 * hysteresis); when the action has no `clear` expression, NONE (WHERE false) clears.
 * Raise and clear each emit exactly one alert message through the caller's callback
 * (the daemon republishes it on alerts/<thing>/<alert> at QoS 1 and appends it to the outbox
 * at high priority). `rateLimitSeconds` suppresses a raise notification that comes sooner
 * than that after the previous one for the same key; the alert is then raised silently and
 * its clear is silent too, so subscribers never see a clear without its raise.
 *
 * Action parameters read from rules_action_out.params (all optional):
 *   {"name": "...", "severity": "critical|major|minor|warning|info" (default "major"),
 *    "for": 3 (a number; a duration string such as "30s" is accepted too), "forSeconds": 30, "clear": "<SQL expr, evaluated by the engine>",
 *    "rateLimitSeconds": 300}
 *
 * The alert message (JSON object):
 *   {"alert", "rule", "thing", "severity", "state": "raised"|"cleared", "value": {SELECT
 *    output of the deciding report}, "matches", "first_trigger_ts", "last_trigger_ts",
 *    "raised_at", "raised_at_iso", ["cleared_at", "cleared_at_iso"], "ts", "ts_iso"}
 * (times epoch ms; trigger times are event times, raised_at/cleared_at gateway time).
 *
 * Persistence: the state survives a restart in a small SQLite database (WAL) whose handle
 * the module owns; a row is written (prepared statement) only when a key's state changes or
 * its pending count grows towards `for`, never for a report that changes nothing. Time is
 * always injected. Not thread-safe: the ingest thread owns it.
 */
#ifndef TG_ALERTS_H
#define TG_ALERTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/msg.h"
#include "rules/rules.h"

typedef struct alerts alerts;

typedef enum { ALERTS_STATE_OK = 0, ALERTS_STATE_PENDING = 1, ALERTS_STATE_RAISED = 2 } alerts_state;

typedef struct alerts_event {
	const char *rule, *alert, *thing, *severity;
	alerts_state state;   /* ALERTS_STATE_RAISED or ALERTS_STATE_OK (cleared) */
	const char *topic;    /* the deciding report's topic (the action's expanded "topic"), or
	                         NULL: publish on alerts/<thing>/<alert> */
	json_t *json;         /* the alert message; borrowed for the call (json_incref to keep) */
} alerts_event;

/* Return < 0 when the message could not be handed on (counted; alerts_report then returns
 * TG_EIO so the rule's errorAction can fire). */
typedef int (*alerts_emit_fn)(void *ud, const alerts_event *ev);

typedef struct alerts_conf {
	const char *db_path;  /* SQLite file (created); ":memory:" for no persistence */
	size_t max_keys;      /* 0: 100000; reports for new keys beyond it are dropped and counted */
	alerts_emit_fn emit;  /* required */
	void *ud;
} alerts_conf;

typedef struct alerts_stats {
	uint64_t reports;     /* alerts_report calls that were processed */
	uint64_t raised;      /* raise messages emitted */
	uint64_t cleared;     /* clear messages emitted */
	uint64_t suppressed;  /* raise (and its clear) not emitted due to rateLimitSeconds */
	uint64_t emit_errors;
	uint64_t db_errors;
	uint64_t keys_dropped;
	uint64_t active;      /* keys currently raised (gauge) */
	uint64_t pending;     /* keys currently pending (gauge) */
} alerts_stats;

/* Open (creating or migrating the table) and load the persisted states. conf is copied
 * (db_path too). Returns NULL with a message in err. The caller owns the result. */
alerts *alerts_open(const alerts_conf *conf, char *err, size_t errlen);
void alerts_close(alerts *a); /* NULL-safe */

typedef struct alerts_input {
	const char *rule, *alert, *thing; /* borrowed */
	rules_alert_cond cond;
	const json_t *payload;            /* SELECT output; borrowed (copied into the message) */
	const json_t *params;             /* action parameters; borrowed; may be NULL */
	int64_t ts_ms;                    /* event time of the message */
	const char *topic;                /* passed through to alerts_event.topic; may be NULL */
	uint64_t key_prefix;              /* optional: tg_hash_str(tg_hash_str(TG_HASH_SEED, rule),
					   * alert) (hash.h), which the rules engine computes once
					   * per action at load; 0 = hash rule and alert here */
} alerts_input;

/* Return values of alerts_report (>= 0). */
enum { ALERTS_NOCHANGE = 0, ALERTS_RAISED = 1, ALERTS_CLEARED = 2, ALERTS_SUPPRESSED = 3 };

/* Feed one report. Returns ALERTS_* or TG_EINVAL (bad input or params), TG_ENOMEM, TG_EIO
 * (emit failed), TG_EDB (persisting failed; the in-memory state and emission still happened). */
int alerts_report(alerts *a, const alerts_input *in, int64_t now_ms);

/* Convenience for the rules action callback: takes rule, alert name, condition, payload,
 * params and topic from act, the thing from m, and the event time from m->json's integer "ts" (else
 * m->received_ms). Same return values as alerts_report. */
int alerts_on_action(alerts *a, const rules_action_out *act, const tg_msg *m, int64_t now_ms);

/* 1 when a report for (rule, alert, thing) that does not raise would change nothing: the
 * key is unknown or OK. key_prefix as in alerts_input (0: hashed from the names). For the
 * rules engine's rules_env.alert_idle: a message below the threshold skips the action. */
int alerts_idle(const alerts *a, const char *rule, const char *alert, uint64_t key_prefix,
		const char *thing);

/* State of one key (ALERTS_STATE_OK when unknown). */
alerts_state alerts_get_state(const alerts *a, const char *rule, const char *alert,
			      const char *thing);

/* Call fn for every key that is pending or raised (for /api/alerts). Strings borrowed. */
typedef void (*alerts_visit_fn)(void *ud, const char *rule, const char *alert, const char *thing,
				alerts_state state, int64_t raised_at_ms);
void alerts_foreach(const alerts *a, alerts_visit_fn fn, void *ud);

void alerts_get_stats(const alerts *a, alerts_stats *out);

#endif
