/*
 * daemon.h — the one context that owns the running gateway's state, and its lifecycle:
 * load config, open the outbox, start the forwarder and ops HTTP, connect to the broker,
 * run the ingest loop until a stop signal, then stop in order without losing anything
 * (stop taking messages, commit the outbox, drain the sinks for a bounded time).
 *
 * The only process-wide mutable state outside this struct are the two signal flags the
 * caller passes in (volatile sig_atomic_t, set by handlers that do nothing else).
 */
#ifndef TG_DAEMON_H
#define TG_DAEMON_H

#include <signal.h>
#include <stdint.h>

#include "core/config.h"
#include "edge/schema.h"
#include "ingest.h"
#include "mqtt/broker.h"
#include "ops/http.h"
#include "ops/metrics.h"
#include "ops/notify.h"
#include "rules/rules.h"
#include "shadow/shadow.h"
#include "store/forwarder.h"
#include "store/outbox.h"

typedef struct tg_daemon {
	tg_config *cfg;
	outbox *ob;
	forwarder *fw;
	broker *br;
	ingest *ig;
	shadow_svc *sh;          /* the Device Shadow service, or NULL ([shadow] enabled = false) */
	http_server *http;
	tg_notify *nt;           /* systemd readiness, status and watchdog (notify.h) */
	rules_set *rules;        /* active set, swapped on reload */
	schema_set *schemas;     /* active set, swapped on reload */
	const char **sink_names; /* NULL-terminated, for rules_env */
	struct registry *reg;    /* read-only handle for enrichment / get_registry_data, or NULL */
	json_t *reg_cache;       /* thing -> attributes, dropped when the registry changes */
	int64_t reg_version, reg_checked_ms;
	int inotify_fd;          /* -1 when not watching */
	int64_t reload_due_ms;   /* debounced file-change reload, 0 = none */
	struct rules_job *reload_job; /* a reload compiling on its own thread, or NULL */
	int reload_again;        /* another reload was asked for while one compiled */
	uint64_t rules_gen;      /* sets adopted so far (a threaded reload's result must be newer) */
	_Atomic int64_t reload_us_last, reload_us_max; /* compile time of the rules folder (wall) */
	_Atomic int64_t reload_cpu_us_last;  /* the same in the compiling thread's CPU time */
	_Atomic int64_t reload_swap_us_max;  /* longest stop of the ingest loop to swap a set in */
	int64_t started_ms;
	_Atomic uint64_t reloads, reload_failures;
	struct ops_console *con; /* the operator's console, or NULL ([http] token_file unset) */
	metrics_src msrc;        /* what /metrics and the health paths read (metrics.h) */
} tg_daemon;

/* Run until *stop is set. *reload (SIGHUP) reloads rules. Returns a process exit code. */
int daemon_run(const char *config_path, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);


#endif
