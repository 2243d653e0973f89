/*
 * console.h — the operator's console: the authenticated JSON API under /api/, its live
 * event stream (Server-Sent Events) and the single page served from [http] www_dir, on
 * the daemon's ops HTTP server (http.h). It is on when [http] token_file is set.
 *
 * What it reads, and from where (never a lock the ingest thread holds for long):
 *   counters      the daemon's atomics through ops_host.counters, the forwarder's stats
 *   per device    its own table, fed by the ingest observer (ops_console_on_*): last seen,
 *                 messages and quarantined today (UTC), the last accepted record
 *   rules         a reference on the running rule set (ops_console_set_rules) and the
 *                 rule files in rules_dir
 *   alerts        active: <data_dir>/alerts.db (read-only); history: its own ring
 *   quarantine,   the outbox database through a read-only connection of its own (short
 *   backlog       statements with a time limit)
 *   recent data   the retention store (retention.h), written in the outbox's group commits
 *   devices       the registry (read-only handle)
 * What it changes goes through the daemon's own paths: rule files are written atomically
 * into rules_dir and the daemon's reload runs on the daemon's thread (ops_host.reload_rules
 * through ops_console_service); dead letters are requeued by the outbox writer on that
 * thread too. Every endpoint and its JSON: docs/console.md.
 *
 * Ownership: ops_console_new borrows cfg, the outbox and the forwarder (they outlive the
 * console: stop it with ops_console_stop before the forwarder stops, free it after the
 * outbox closed); it owns everything else it opens.
 */
#ifndef TG_OPS_CONSOLE_H
#define TG_OPS_CONSOLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "alerts/alerts.h"
#include "core/config.h"
#include "ops/http.h"
#include "rules/rules.h"
#include "store/forwarder.h"
#include "store/outbox.h"

typedef struct ops_console ops_console;

typedef struct ops_counters {
	uint64_t received, accepted, quarantined, alerts_raised, alerts_cleared;
	int broker_connected;
} ops_counters;

/* What the daemon lends the console. */
typedef struct ops_host {
	void *ud;
	/* run on the daemon's thread, from ops_console_service */
	int (*reload_rules)(void *ud);                  /* 0 or < 0; the errors come through ops_console_rules_failed */
	int (*requeue_dead)(void *ud, const char *sink, int64_t *moved); /* 0 or < 0 */
	/* any thread */
	char *(*render)(void *ud, const char *path, int *status, const char **content_type); /* /metrics /healthz /readyz /api/status */
	void (*counters)(void *ud, ops_counters *out);
} ops_host;

typedef struct ops_console_conf {
	const tg_config *cfg;
	outbox *ob;
	forwarder *fw;
	const char *const *sink_names; /* NULL-terminated, for validating rules as the daemon loads them */
} ops_console_conf;

ops_console *ops_console_new(const ops_console_conf *conf, const ops_host *host, char *err, size_t errlen);
/* End the event streams, stop the ticker thread, fail waiting jobs. Before http_stop. */
void ops_console_stop(ops_console *c);
void ops_console_free(ops_console *c); /* NULL-safe */

/* The HTTP handler (http_handler_fn) for every path. */
int ops_console_handle(void *c, const http_req *req, http_resp *r);
/* Daemon thread, every loop round: runs queued jobs. outbox_idle: no group is open, so a
 * job that writes to the outbox may run now. */
void ops_console_service(ops_console *c, int outbox_idle);

/* After every successful (re)load, with the new set (a reference is taken). */
void ops_console_set_rules(ops_console *c, rules_set *rs);
/* After a refused reload: the errors, one file:line:col: message per line. */
void ops_console_rules_failed(ops_console *c, const char *errors);

/* The ingest observer (ingest.h ingest_observer; ud = the console) and the outbox group
 * hook (outbox_group_fn). */
void ops_console_on_accepted(void *c, const char *thing, const char *topic, int prio, int64_t received_ms,
			     const json_t *record, const char *text, size_t len);
void ops_console_on_quarantined(void *c, const char *thing, const char *topic, const char *reason, const char *field,
				const char *detail, int64_t received_ms);
void ops_console_on_alert(void *c, const alerts_event *ev, int64_t now_ms);
void ops_console_on_group(void *c, int committed, int64_t now_ms);

/* Prometheus lines of the API's own counters and the retention store; malloc'ed. */
char *ops_console_metrics(ops_console *c);

#endif
