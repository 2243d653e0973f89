/*
 * console_int.h — what the console's files (console.c: state, routing, auth, stream, page;
 * api_rules.c; api_data.c; api_shadows.c) share. Not for use outside gateway/ops/.
 */
#ifndef TG_OPS_CONSOLE_INT_H
#define TG_OPS_CONSOLE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "ops/console.h"
#include "ops/events.h"
#include "ops/retention.h"
#include "ops/token.h"
#include "registry/registry.h"

#define OPS_MAX_THINGS 100000
#define OPS_ALERT_HISTORY 200
#define OPS_ONLINE_WINDOW_MS 60000
#define OPS_MAX_SINKS 32

/* What the console knows of one thing from the messages it sent. */
typedef struct ops_thing {
	char *name;
	int64_t last_seen_ms, last_quarantined_ms;
	int64_t day; /* UTC day number the *_today counters belong to */
	uint64_t msgs_today, quarantined_today, msgs_total, quarantined_total;
	char *latest, *latest_topic; /* last accepted record's text */
	size_t latest_len, latest_cap;
	int64_t latest_ms;
} ops_thing;

enum { OPS_JOB_RELOAD = 1, OPS_JOB_REQUEUE = 2 };
typedef struct ops_job {
	int kind;
	const char *sink;
	int rc, state; /* 0 queued, 1 running, 2 done */
	int64_t moved;
	struct ops_job *next;
} ops_job;

struct ops_console {
	const tg_config *cfg;
	outbox *ob;
	forwarder *fw;
	const char *const *sink_names;
	ops_host host;
	ops_token *token;
	ops_events *ev;
	ops_retention *ret; /* NULL: retention off */
	char *www_dir;      /* NULL: the page is not installed */
	char alerts_db[4096];

	/* things, alert history, the rules reference, rates: under mu */
	pthread_mutex_t mu;
	ops_thing **things; /* open addressing, cap a power of two */
	size_t nthings, things_cap;
	json_t *alert_hist; /* newest last */
	rules_set *rules;
	int64_t rules_loaded_ms;
	char *rules_error; /* the last refused reload, NULL after a good one */
	double received_per_s, accepted_per_s, quarantined_per_s;
	double sink_ok_per_s[OPS_MAX_SINKS];

	/* quarantine events: at most a few a second are streamed (ingest thread only) */
	int64_t qev_second;
	int qev_count;

	/* jobs for the daemon's thread */
	pthread_mutex_t job_mu;
	pthread_cond_t job_cv;
	ops_job *jobs;
	atomic_int njobs;
	int stopping;

	/* one rule change at a time */
	pthread_mutex_t rules_mu;

	/* read-only handles, opened on first use, under db_mu */
	pthread_mutex_t db_mu;
	sqlite3 *obdb, *aldb;
	struct shadow_store *shadows; /* api_shadows.c */
	int64_t db_deadline_ms;
	registry *reg;
	json_t *backlog_cache; /* name -> {rows, bytes, oldest_ms, dead} */
	int64_t backlog_cache_ms;

	/* the ticker thread */
	pthread_t tick_tid;
	int tick_started, tick_stop;
	pthread_mutex_t tick_mu;
	pthread_cond_t tick_cv;

	/* metrics */
	_Atomic uint64_t requests, unauthorized, client_errors, server_errors;
	_Atomic uint64_t rule_changes, rule_change_failures, dead_requeued;
	_Atomic uint64_t quarantine_events_dropped;
	atomic_int sse_clients;
};

/* Responses. ops_json steals j (NULL: 500). */
int ops_json(http_resp *r, int status, json_t *j);
int ops_error(http_resp *r, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Parse the request body as a JSON object; on failure fills r (400) and returns NULL. */
json_t *ops_body_object(const http_req *req, http_resp *r);
int64_t ops_now_ms(void);

/* api_rules.c */
int ops_api_rules(ops_console *c, const http_req *req, http_resp *r, const char *rest);
/* Run a job on the daemon's thread and wait for it (at most timeout_ms before it starts). */
int ops_run_job(ops_console *c, ops_job *j, int timeout_ms);

/* api_data.c */
int ops_api_devices(ops_console *c, const http_req *req, http_resp *r, const char *rest);
int ops_api_alerts(ops_console *c, const http_req *req, http_resp *r);
int ops_api_quarantine(ops_console *c, const http_req *req, http_resp *r);
int ops_api_sinks(ops_console *c, const http_req *req, http_resp *r, const char *rest);
int ops_api_things(ops_console *c, const http_req *req, http_resp *r, const char *rest);
int ops_api_series(ops_console *c, const http_req *req, http_resp *r);
int ops_api_query(ops_console *c, const http_req *req, http_resp *r);

/* api_shadows.c */
int ops_api_shadows(ops_console *c, const http_req *req, http_resp *r, const char *rest);
/* The thing's entry (mu held by the caller) or NULL. */
ops_thing *ops_thing_find(ops_console *c, const char *name);
json_t *ops_thing_json(const ops_thing *t, int64_t now_ms, int with_latest);
void ops_thing_free(ops_thing *t); /* NULL-safe */
/* A copy of the per-thing table, taken under mu (copies only) and released at once: readers
 * format their JSON from it without holding the lock the ingest thread takes for every
 * message. 0 or TG_ENOMEM (then empty). */
typedef struct ops_things_snap {
	ops_thing **things; /* open addressing, as the table's */
	size_t cap;
} ops_things_snap;
int ops_things_snapshot(ops_console *c, ops_things_snap *s);
const ops_thing *ops_snap_find(const ops_things_snap *s, const char *name);
void ops_things_snap_free(ops_things_snap *s);

#endif
