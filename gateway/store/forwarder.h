/*
 * forwarder.h — moves records from the outbox to the sinks, one thread per sink.
 *
 * Each thread reads a batch for its sink (priority first, then id order), waits for the
 * sink's size/age threshold, calls send(), deletes what was delivered, dead-letters
 * poison records and keeps the rest for the next batch after an exponential backoff with
 * full jitter. The core owns retry; a sink only reports a status per record. A sink with a
 * probe (sink.h) is probed every FORWARDER_PROBE_MS while it backs off; when the endpoint
 * is seen down (refusing, unreachable, or silent: a black hole) and then answering again,
 * the backoff ends at once, and the next
 * few failures (an endpoint still warming up) back off at most a second (issue 20: a sink
 * resumes within about a probe interval of its endpoint's readiness, whatever retry_cap).
 *
 * Ownership: forwarder_start() borrows the outbox (which must outlive the forwarder) and
 * the sink configs; it opens the sinks itself and closes them in forwarder_stop().
 */
#ifndef TG_FORWARDER_H
#define TG_FORWARDER_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/config.h"
#include "store/outbox.h"

typedef struct forwarder forwarder;

/* How often a backed-off sink's endpoint is probed (sink_ops.probe). */
#define FORWARDER_PROBE_MS 250
/* After the probe saw the endpoint return, this many failed sends in a row retry at most
 * FORWARDER_RECOVER_MAX_MS apart: a returning endpoint is often still warming up (a
 * restarted service loading its state, a load balancer whose targets are not healthy yet)
 * and the backoff reached during the outage would otherwise be waited out in full. */
#define FORWARDER_RECOVER_TRIES 10
#define FORWARDER_RECOVER_MAX_MS 1000

typedef struct forwarder_sink_stats {
	const char *name;           /* borrowed from the config */
	const char *type;
	_Atomic uint64_t batches, records_ok, records_retry, records_dead, send_errors;
	_Atomic uint64_t settle_errors; /* delivered batches whose bookkeeping had to be retried */
	_Atomic uint64_t reads;     /* outbox batch reads (sent or not: see the linger in run()) */
	_Atomic uint64_t probes;    /* endpoint probes made while backed off */
	_Atomic uint64_t probe_recoveries; /* backoffs ended early: the probe saw the endpoint return */
	_Atomic int64_t backoff_until_ms;
	_Atomic int64_t pending;    /* rows queued, sampled */
	_Atomic int64_t last_ok_ms;
	_Atomic int up;             /* 0 while sends fail; 1 otherwise (also before the first send) */
	_Atomic int64_t failing_since_ms; /* first failure of the current run of failures, 0: not failing */
	_Atomic int64_t oldest_ms;  /* created_ms of the oldest undelivered record, 0: none (sampled) */
	int64_t batch_age_ms;       /* the sink's own batching age (sink_limits.max_age_ms) */
} forwarder_sink_stats;

/* A sink's health as /healthz and /metrics report it. idle: nothing sent or failed yet; ok:
 * the last send succeeded; failing: sends fail and are retried. Degraded (healthy = 0) when
 * it has been failing for longer than health_failing_after, or its oldest undelivered
 * record has waited longer than health_max_age beyond the sink's batching age; idle is not
 * down, and a failure shorter than the threshold is a retry, not an outage. */
typedef struct forwarder_health {
	const char *state;     /* "idle", "ok", "failing" */
	int healthy;
	char why[160];         /* what makes it degraded, "" when healthy */
	int64_t failing_ms;    /* how long it has been failing, 0 when not */
	int64_t oldest_age_ms; /* age of the oldest undelivered record, 0 when none */
	int64_t backlog_rows, backlog_bytes;
} forwarder_health;

/* The judgement itself, from a sink's stats, config and queued rows at now_ms (backlog_bytes
 * left 0). */
void forwarder_health_judge(const forwarder_sink_stats *st, const tg_sink_conf *conf, int64_t backlog_rows,
			    int64_t now_ms, forwarder_health *h);
/* Health of sink i with its outbox backlog; reads atomics and counters only (any thread). */
void forwarder_health_of(forwarder *fw, size_t i, int64_t now_ms, forwarder_health *h);

/* Full-jitter backoff: a uniform value in [0, min(cap, base * 2^attempt)], from r in [0,1). */
int64_t forwarder_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, double r);

forwarder *forwarder_start(outbox *ob, const tg_config *cfg, char *err, size_t errlen);
/* Wake the threads (new records committed). Cheap; called after each group commit. */
void forwarder_notify(forwarder *fw);
/* Stop: with drain_ms > 0 each sink first tries to send everything pending (ignoring age
 * thresholds) for at most drain_ms. Joins the threads, closes the sinks, frees fw. NULL-safe. */
void forwarder_stop(forwarder *fw, int64_t drain_ms);
/* How long the least recently alive thread has shown no sign of life at mono_ms (a
 * tg_mono_ms() reading: a wall-clock step is no silence), in ms (0 with no sinks); *sink_name (borrowed, may be NULL) gets its sink name. A thread shows it is alive on
 * each turn of its loop and at least once a second while it waits (idle, linger, backoff),
 * so only a thread blocked elsewhere — a send() that does not return, a lock — goes
 * silent for longer. The daemon withholds systemd's watchdog keep-alive on it. */
int64_t forwarder_silence_ms(forwarder *fw, int64_t mono_ms, const char **sink_name);
size_t forwarder_nsinks(const forwarder *fw);
forwarder_sink_stats *forwarder_stats(forwarder *fw, size_t i);
/* Copy the reason of sink i's last failed or partly dead-lettered send into buf ("" when
 * none yet); returns when it happened (epoch ms, 0 = never). */
int64_t forwarder_last_error(forwarder *fw, size_t i, char *buf, size_t len);

#endif
