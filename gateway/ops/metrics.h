/*
 * metrics.h — /metrics, /healthz, /readyz and /api/status, rendered from what the wiring
 * hands over in a metrics_src: the stages' own handles (each exposes its counters) and the
 * counters the wiring itself keeps, in structs defined here by their reader. So this module
 * sees the stages below it and never the daemon (the include check in `make check` holds
 * that); the daemon fills one metrics_src and passes it to http_start().
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stdint.h>

#include "edge/schema.h"
#include "mqtt/broker.h"
#include "ops/http.h"
#include "shadow/shadow.h"
#include "store/forwarder.h"
#include "store/outbox.h"

/* Written by the ingest thread, read here (atomics); ingest.h names them ingest_stats. */
typedef struct metrics_ingest_counters {
	_Atomic uint64_t received, accepted, quarantined, duplicates, rejected_full, errors;
	_Atomic uint64_t bad_topic;
	_Atomic uint64_t by_reason[SCHEMA_R__COUNT];
	_Atomic uint64_t aggregates_emitted, alerts_raised, alerts_cleared, alerts_suppressed;
	/* bytes held by the dedupe memory and the open aggregate windows (refreshed each second) */
	_Atomic int64_t dedupe_bytes, aggregate_bytes;
} metrics_ingest_counters;

/* Per rule engine run, also the ingest thread's; ingest.h names them ingest_rule_stats. */
typedef struct metrics_rule_counters {
	_Atomic uint64_t evaluated, matched, actions, action_errors, eval_errors;
	_Atomic uint64_t republished, republish_errors, sink_appends;
} metrics_rule_counters;

struct ops_console;

typedef struct metrics_src {
	broker *br;
	outbox *ob;
	forwarder *fw;
	shadow_svc *sh;          /* NULL: shadows off */
	struct ops_console *con; /* NULL: console off (then metrics_http serves the open paths) */
	const metrics_ingest_counters *ingest;
	const metrics_rule_counters *rules;
	const _Atomic uint64_t *reloads, *reload_failures;
	const _Atomic int64_t *reload_us_last, *reload_us_max; /* compile time of the rules folder */
	const _Atomic int64_t *reload_cpu_us_last, *reload_swap_us_max;
	/* /readyz: 1 when the rules are loaded (or no rules folder is configured). */
	int (*rules_loaded)(void *ud);
	void *ud;
} metrics_src;

/* Render one of the paths above (NULL: not one of them). *status gets the HTTP status,
 * *content_type the body's type; the caller frees the body. */
char *metrics_render(const metrics_src *src, const char *path, int *status, const char **content_type);
/* The ops HTTP server's handler (http_handler_fn, ud a metrics_src): the console when it
 * is on, else the open GET paths of metrics_render. */
int metrics_http(void *ud, const http_req *req, http_resp *r);

#endif
