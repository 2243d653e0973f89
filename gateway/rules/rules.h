/*
 * rules.h — the IoT-SQL rules engine (a subset of AWS IoT Core SQL versions 2016-03-23, the
 * default, and 2015-10-08, chosen per rule by its awsIotSqlVersion).
 *
 * A rule set is compiled once from a folder of JSON rule files (one rule per file, the
 * rule's name is the file name without .json) and is immutable afterwards, so the daemon
 * can build a new set on reload and swap it atomically between two messages.
 *
 * Evaluation: rules_eval() picks candidate rules through a topic-filter trie, evaluates
 * SET/WHERE/SELECT against the message and calls the caller's action callback once per
 * action of every matching rule. The callback does the side effect (republish, outbox
 * append, alert state machine); if it returns < 0 the rule's errorAction is invoked with
 * the documented error-message payload. A rule that fails never blocks the others.
 *
 * Ownership: rules_set is owned by the caller of rules_load_dir() and freed with
 * rules_set_free(). Everything in a rules_action_out is borrowed for the duration of the
 * callback only; copy what you keep.
 */
#ifndef TG_RULES_H
#define TG_RULES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/msg.h"

typedef struct rules_set rules_set;

typedef enum {
	RULES_ACT_REPUBLISH = 1, /* {"republish": {"topic": "...${}...", "qos": 0|1}} */
	RULES_ACT_SINK,          /* {"sink": {"name": "lake", "partitionKey": "${...}", "table": "..."}} */
	RULES_ACT_ALERT,         /* {"alert": {...}}: see alert fields below */
	RULES_ACT_WEBHOOK,       /* {"webhook": {"url": "...", "headers": {...}}} */
} rules_action_kind;

/* For RULES_ACT_ALERT the engine reports, per message whose topic matches the rule's FROM,
 * which condition holds; the alert state machine (alerts.c) does for/clear/rate limit. */
typedef enum {
	RULES_ALERT_NONE = 0,  /* neither WHERE nor clear held (or clear absent and WHERE false) */
	RULES_ALERT_RAISE,     /* WHERE held: payload is the SELECT output */
	RULES_ALERT_CLEAR,     /* WHERE false and the clear expression held; payload is SELECT output
	                          evaluated regardless of WHERE (Undefined fields left out) */
} rules_alert_cond;

/* MQTT v5 properties of a republish, in the AWS republish action's `headers` shape:
 * {"payloadFormatIndicator": "UTF8_DATA"|"UNSPECIFIED_BYTES", "contentType": "...",
 *  "responseTopic": "...", "correlationData": "<base64>", "messageExpiry": "<seconds>",
 *  "userProperties": [{"key": "...", "value": "..."}, ...]}, every string a template. */
typedef enum {
	RULES_HDR_PAYLOAD_FORMAT = 1,
	RULES_HDR_CONTENT_TYPE,
	RULES_HDR_RESPONSE_TOPIC,
	RULES_HDR_CORRELATION_DATA,
	RULES_HDR_MESSAGE_EXPIRY,
	RULES_HDR_USER_PROPERTY,
} rules_header_kind;

typedef struct rules_header {
	rules_header_kind kind;
	const char *key;   /* RULES_HDR_USER_PROPERTY only */
	const char *value; /* expanded */
} rules_header;

/* A header value as it goes on the wire. */
typedef struct rules_header_val {
	uint32_t num;       /* payloadFormatIndicator (0 bytes, 1 UTF-8), messageExpiry (seconds) */
	unsigned char *bin; /* correlationData decoded from base64 (caller frees), else NULL */
	size_t binlen;
} rules_header_val;

/* Check an (expanded) header value and decode it into *v: 0, or TG_EINVAL with the reason
 * in err ("headers.messageExpiry: 'soon' is not a number of seconds"). The loader checks
 * values without templates this way at load; the daemon checks the others per message. */
int rules_header_decode(const rules_header *h, rules_header_val *v, char *err, size_t errlen);
const char *rules_header_name(rules_header_kind k); /* "contentType", ... */

typedef struct rules_action_out {
	const char *rule;         /* rule name (file name without .json) */
	rules_action_kind kind;
	int is_error_action;      /* 1 when this is the rule's errorAction firing */
	int has_error_action;     /* 1 when the rule has an errorAction (rules_run_error_action) */
	json_t *payload;          /* SELECT output object (or the error-message object for errorAction) */
	/* republish */
	const char *topic;        /* template already expanded */
	int qos;
	const rules_header *headers; /* the `headers`, expanded, in file order (NULL when none) */
	int nheaders;
	/* sink */
	const char *sink;         /* configured sink name */
	const char *pkey;         /* partitionKey template expanded (default: the thing) */
	const char *table;        /* table name (default "telemetry"... see rules reference) */
	/* alert */
	const char *alert_name;
	rules_alert_cond alert_cond;
	uint64_t alert_key;       /* hash.h hash of (rule, alert_name), computed once at load:
				   * alerts_input.key_prefix */
	const json_t *params;     /* the action's parameter object, string templates expanded */
	/* webhook */
	const char *url;
} rules_action_out;

/* Return 0 on success, < 0 (TG_E*) to trigger the rule's errorAction; write a reason into err. */
typedef int (*rules_action_fn)(void *ud, const rules_action_out *act, char *err, size_t errlen);

/* Optional services the host offers the engine. All may be NULL. */
typedef struct rules_env {
	/* get_registry_data(thing): attributes object of a registered thing, caller of the hook
	 * receives a new reference (json_decref it) or NULL when unknown. */
	json_t *(*registry_lookup)(void *ud, const char *thing);
	void *registry_ud;
	/* names of configured sinks; a sink action naming another sink is a load error.
	 * NULL: any name accepted. NULL-terminated. */
	const char *const *sink_names;
	/* alert_idle(ud, rule, alert, alert_key, thing): 1 when a report for (rule, alert,
	 * thing) that does not raise would change nothing (no pending or raised state). For a
	 * message whose WHERE is false, a rule whose alert actions are all idle then runs no
	 * action at all: its SELECT, clear condition and topic are not evaluated. NULL: every
	 * alert action is reported. alert_key is rules_action_out.alert_key. */
	int (*alert_idle)(void *ud, const char *rule, const char *alert, uint64_t alert_key, const char *thing);
	void *alert_ud;
} rules_env;

typedef struct rules_stats {
	uint64_t evaluated;   /* rules whose FROM matched */
	uint64_t matched;     /* rules whose WHERE held */
	uint64_t actions;     /* action callbacks made */
	uint64_t action_errors; /* callbacks that returned < 0 */
	uint64_t eval_errors; /* runtime errors in SQL evaluation */
} rules_stats;

/* Compile every *.json file in dir (not recursive, sorted by name). On any error returns
 * NULL and writes one "file:line:col: message" line per error into errbuf (the position
 * inside the sql string mapped to the file's line/column). env is copied. */
rules_set *rules_load_dir(const char *dir, const rules_env *env, char *errbuf, size_t errlen);
/* Load one rule from JSON text; `file` names it in error messages, the rule's name is
 * file's basename without .json (rules_load_file/dir, the console's rule test, tests). */
rules_set *rules_load_text(const char *file, const char *text, size_t len, const rules_env *env, char *errbuf,
			   size_t errlen);
/* "republish", "sink", "alert", "webhook" (static). */
const char *rules_action_kind_name(rules_action_kind k);
/* Same for one file (used by `tidegate rules test`). */
rules_set *rules_load_file(const char *path, const rules_env *env, char *errbuf, size_t errlen);
/* Drops one reference (the loader's, or one rules_set_ref took); the last frees. NULL-safe. */
void rules_set_free(rules_set *rs);
/* Another reference, for a thread that reads a set the ingest thread may replace meanwhile
 * (the console): take it under the lock that guards the pointer, drop it with
 * rules_set_free. Returns rs. */
rules_set *rules_set_ref(rules_set *rs);
size_t rules_count(const rules_set *rs); /* enabled + disabled */

/* One rule of a set (i < rules_count, in file-name order) with its counters since the set
 * was loaded. Strings are borrowed from rs (hold a reference while using them); last_error
 * is copied. 0 or TG_ENOTFOUND. */
typedef struct rules_rule_info {
	const char *name, *source; /* source: the rule file's text as loaded */
	int disabled, nactions;
	uint64_t evaluated, matched, actions, action_errors, eval_errors;
	int64_t last_error_ms;     /* 0: none; else received time of the message that failed */
	char last_error[256];
} rules_rule_info;
int rules_rule_get(rules_set *rs, size_t i, rules_rule_info *out);
/* Carry the counters over to a freshly loaded set: every rule of `to` whose name and file
 * text are those of a rule of `from` starts from that rule's counts (a reload that changed
 * nothing about a rule does not zero it). Call before `to` is evaluated, on the thread that
 * evaluates `from`. */
void rules_set_adopt_counters(rules_set *to, rules_set *from);

/* Evaluate all rules against one message; calls fn per action. Stats are added to *st
 * (may be NULL). Returns the number of rules whose WHERE held, or < 0 on a fatal error. */
int rules_eval(const rules_set *rs, const tg_msg *m, rules_action_fn fn, void *ud, rules_stats *st);

/* Run rule `rule`'s errorAction for an action that failed after rules_eval() returned: a
 * republish the broker refused in its PUBACK. m is the message that fired the rule, kept by
 * the caller (its props may be NULL); SET variables and the errorAction's templates are
 * evaluated against it again, and the error-message payload lists one failure (failed,
 * resource, errmsg). The rule is looked up by name in rs, so after a reload the current
 * version's errorAction runs. Returns 1 when the errorAction ran (its own failure is counted
 * in st->action_errors and logged), 0 when the rule is gone or has no errorAction, < 0 on
 * an internal error. */
int rules_run_error_action(const rules_set *rs, const char *rule, const tg_msg *m, rules_action_kind failed,
			   const char *resource, const char *errmsg, rules_action_fn fn, void *ud, rules_stats *st);

/* What `tidegate rules` takes from the daemon's configuration when given one (-c FILE,
 * read by main.c): the sink names rules may route to, the rules folder to check when none
 * is named, and the payload limits. Borrowed for the call. */
typedef struct rules_cli_conf {
	const char *path;              /* the configuration file, for messages */
	const char *const *sink_names; /* NULL-terminated */
	const char *rules_dir;         /* "" when the configuration has none */
	size_t max_payload;
	int max_depth;
} rules_cli_conf;

/* `tidegate rules check [DIR|FILE...]` / `tidegate rules test FILE|DIR --topic T [--payload JSON]`.
 * argv[0] is "check" or "test". conf NULL: no configuration (sink names are not checked,
 * and check says so). Returns the process exit code. */
int rules_cli_main(int argc, char **argv, const rules_cli_conf *conf);

#endif
