/*
 * forwarder.c — see forwarder.h. One thread per sink keeps a slow upstream (S3 over a bad
 * uplink) from holding back a fast one (the local lake). Threads sleep on a condition
 * variable that group commits signal, so forwarding latency is a commit, not a poll.
 *
 * Waits, backoffs, heartbeats and the drain deadline run on the monotonic clock (a wall
 * clock stepped back an hour must not turn a 2 s backoff into an hour); the wall clock
 * only stamps what the operator reads (last_ok_ms, failing_since_ms) and what sinks send.
 * While a sink backs off, its probe (sink_ops.probe) looks at the endpoint every
 * FORWARDER_PROBE_MS: seen down (refusing, or accepting and never answering) and then
 * answering again, the endpoint is back, and the
 * backoff ends there, so recovery after an outage follows the uplink, not the schedule;
 * the next FORWARDER_RECOVER_TRIES failures (an endpoint back but still warming up) wait
 * at most FORWARDER_RECOVER_MAX_MS each.
 */
#include "store/forwarder.h"

#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

/* A batch this big (a backlog being drained) grows the thread's batch arrays and its malloc
 * arena by up to the sink's max_bytes; when the batches are small again, both are given
 * back (give_back), so a box's memory returns after an outage instead of staying at the
 * drain's high-water mark for the life of the process. */
#define BACKLOG_BATCH_BYTES ((size_t)1 << 20)
/* How often a forwarder looks up its oldest undelivered record (an index seek per priority). */
#define OLDEST_EVERY_MS 1000
/* The probe's budget, connect and answer: a black-holed endpoint (SYNs dropped, or
 * accepted and never answered) costs each probe this. An uplink whose round trips take
 * longer than half of it looks down to the probe, and its sinks then wait out their
 * backoff schedule as they would without one. */
#define PROBE_TIMEOUT_MS 300

typedef struct fw_thread {
	forwarder *fw;
	const tg_sink_conf *conf;
	sink *s;
	sink_limits limits;
	outbox_reader *reader;
	pthread_t tid;
	int started;
	unsigned rng;
	/* when the thread last showed it runs (monotonic ms): each turn of its loop and each
	 * second of its waits; a send() longer than the watchdog period counts as a hang
	 * (forwarder.h) */
	_Atomic int64_t beat_ms;
	forwarder_sink_stats st;
	char last_err[256]; /* under fw->mu: why the last failed send failed ("" = none yet) */
	int64_t last_err_ms;
	/* the probe found the endpoint down since the sink last delivered: kept across backoffs,
	 * because the endpoint may return while a send is under way (a request hanging on a
	 * black hole times out after it came back) and the next backoff must still end on the
	 * first answer. Only the forwarder thread touches it. */
	int probe_down;
	int backlog; /* a batch of BACKLOG_BATCH_BYTES or more went out since the last give_back */
	_Atomic int done; /* run() returned: forwarder_stop joins without waiting */
} fw_thread;

struct forwarder {
	outbox *ob;
	const tg_config *cfg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t gen;      /* bumped by notify */
	int stop;          /* set under mu */
	int64_t drain_until_ms; /* monotonic */
	_Atomic int abandon;    /* the drain budget ran out: sinks fail the sends under way (sink.h) */
	fw_thread *t;
	size_t n;
};

int64_t forwarder_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, double r)
{
	if (attempt < 0)
		attempt = 0;
	int64_t ceil_ms = base_ms;
	for (int i = 0; i < attempt && ceil_ms < cap_ms; i++)
		ceil_ms *= 2;
	if (ceil_ms > cap_ms)
		ceil_ms = cap_ms;
	return (int64_t)(r * (double)ceil_ms);
}

/* Wait until notified, stopped or timeout_ms passed. Returns 1 if stopping. */
static int wait_for(forwarder *fw, uint64_t *seen_gen, int64_t timeout_ms)
{
	pthread_mutex_lock(&fw->mu);
	if (!fw->stop && fw->gen == *seen_gen && timeout_ms > 0) {
		struct timespec ts = tg_deadline_in(timeout_ms);
		pthread_cond_timedwait(&fw->cv, &fw->mu, &ts);
	}
	*seen_gen = fw->gen;
	int stop = fw->stop;
	pthread_mutex_unlock(&fw->mu);
	return stop;
}

/* Sleep for ms unless stopped; new commits do not wake it. Wakes every second to show
 * the thread is alive (a backoff can last minutes). Returns 1 if stopping. */
static int sleep_unless_stopped(fw_thread *t, int64_t ms)
{
	forwarder *fw = t->fw;
	pthread_mutex_lock(&fw->mu);
	int64_t until = tg_mono_ms() + ms;
	while (!fw->stop) {
		int64_t now = tg_mono_ms(), left = until - now;
		atomic_store(&t->beat_ms, now);
		if (left <= 0)
			break;
		struct timespec ts = tg_deadline_in(left < 1000 ? left : 1000);
		pthread_cond_timedwait(&fw->cv, &fw->mu, &ts);
	}
	int stop = fw->stop;
	pthread_mutex_unlock(&fw->mu);
	return stop;
}

/* Sleep a backoff of ms unless stopped (returns 1), ending it early (returns 0, *back = 1)
 * when the sink's probe, having seen the endpoint down (refusing, or silent) in this or an
 * earlier backoff since the last delivery, sees it answering. An endpoint that answers but fails requests (a 500, a missing stream) never
 * looks down, so it keeps its full backoff and is not hammered. */
static int backoff_wait(fw_thread *t, int64_t ms, int *back)
{
	int (*probe)(sink *, int) = sink_conf_ops(t->conf)->probe;
	const int64_t every = FORWARDER_PROBE_MS;
	int64_t until = tg_mono_ms() + ms;
	*back = 0;
	for (;;) {
		int64_t left = until - tg_mono_ms();
		if (left <= 0)
			return 0;
		if (sleep_unless_stopped(t, probe && left > every ? every : left))
			return 1;
		if (!probe || tg_mono_ms() >= until)
			continue;
		atomic_fetch_add(&t->st.probes, 1);
		if (probe(t->s, PROBE_TIMEOUT_MS) < 0) {
			t->probe_down = 1;
		} else if (t->probe_down) {
			t->probe_down = 0;
			atomic_fetch_add(&t->st.probe_recoveries, 1);
			*back = 1;
			return 0;
		}
	}
}

/* After a backlog: free the batch's arrays (outbox_read_batch grows them again as needed)
 * and hand the free pages of every malloc arena back to the kernel. glibc keeps freed
 * memory for reuse, and a drain of many small records fragments the forwarder thread's
 * arena; malloc_trim is the call that returns it (a few ms, once per backlog). */
static void give_back(fw_thread *t, outbox_batch *b)
{
	t->backlog = 0;
	outbox_batch_free(b);
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static int draining(forwarder *fw, int64_t now)
{
	pthread_mutex_lock(&fw->mu);
	int d = fw->stop && now < fw->drain_until_ms;
	pthread_mutex_unlock(&fw->mu);
	return d;
}

static void *run(void *arg)
{
	fw_thread *t = arg;
	forwarder *fw = t->fw;
	outbox_batch b = {0};
	sink_status *status = NULL;
	size_t status_cap = 0;
	uint64_t gen = 0;
	int attempt = 0;
	int recover_left = 0; /* short backoffs left after the probe saw the endpoint return */
	int64_t oldest_checked_ms = 0;
	char err[512];
	size_t max_records = t->limits.max_records;
	if (t->conf->batch_max_records > 0 && (size_t)t->conf->batch_max_records < max_records)
		max_records = (size_t)t->conf->batch_max_records;

	for (;;) {
		int64_t now = tg_wall_ms(), mono = tg_mono_ms();
		atomic_store(&t->beat_ms, mono);
		int stopping;
		pthread_mutex_lock(&fw->mu);
		stopping = fw->stop;
		pthread_mutex_unlock(&fw->mu);
		int drain = stopping && draining(fw, mono);
		if (stopping && !drain)
			break;

		int n = outbox_read_batch(t->reader, t->conf->name, max_records, t->limits.max_bytes, &b);
		atomic_fetch_add(&t->st.reads, 1);
		if (n < 0) {
			LOG_ERROR("forwarder", "msg=\"outbox read failed\" sink=%s", t->conf->name);
			if (wait_for(fw, &gen, 1000) && !drain)
				break;
			continue;
		}
		if (n > 0 && mono - oldest_checked_ms >= OLDEST_EVERY_MS) {
			oldest_checked_ms = mono;
			int64_t oldest = outbox_oldest_pending(t->reader, t->conf->name);
			atomic_store(&t->st.oldest_ms, oldest > 0 ? oldest : b.oldest_ms);
		}
		if (n == 0 && t->backlog)
			give_back(t, &b);
		if (n == 0) {
			atomic_store(&t->st.oldest_ms, 0);
			atomic_store(&t->st.pending, 0);
			if (drain)
				break;
			outbox_reclaim(t->reader);
			if (sink_conf_ops(t->conf)->idle)
				sink_conf_ops(t->conf)->idle(t->s, now);
			wait_for(fw, &gen, 1000);
			continue;
		}
		/* size/age threshold (S3 objects, lake files): wait unless full, old or draining.
		 * Not woken by every commit: each wake-up reads the whole pending batch again (up
		 * to flush_bytes of an S3 object), so it looks again after a twentieth of the age
		 * (at least 100 ms) or when the oldest record is due, whichever comes first. Ages
		 * are wall-clock (created_ms): a record stamped after the clock went back counts as
		 * due (tg_elapsed_ms), so a step back delays a flush by a recheck, not by the step. */
		int64_t age = tg_elapsed_ms(now, b.oldest_ms);
		if (!drain && t->limits.max_age_ms > 0 && (size_t)n < max_records && b.bytes < t->limits.max_bytes &&
		    age < t->limits.max_age_ms) {
			int64_t left = t->limits.max_age_ms - age;
			int64_t recheck = t->limits.max_age_ms / 20 < 100 ? 100 : t->limits.max_age_ms / 20;
			sleep_unless_stopped(t, left < recheck ? left : recheck);
			continue;
		}
		if (status_cap < (size_t)n) {
			sink_status *ns = realloc(status, (size_t)n * sizeof *ns);
			if (!ns) {
				wait_for(fw, &gen, 100);
				continue;
			}
			status = ns;
			status_cap = (size_t)n;
		}
		for (int i = 0; i < n; i++)
			status[i] = SINK_RETRY;
		err[0] = '\0';
		int rc = sink_conf_ops(t->conf)->send(t->s, b.recs, (size_t)n, status, now, err, sizeof err);
		if (rc < 0)
			for (int i = 0; i < n; i++)
				status[i] = SINK_RETRY;
		size_t ok = 0, retry = 0, dead = 0;
		for (int i = 0; i < n; i++) {
			if (status[i] == SINK_OK)
				ok++;
			else if (status[i] == SINK_POISON)
				dead++;
			else
				retry++;
		}
		/* The batch went out: record that, retrying the bookkeeping, never the send (sending
		 * again would deliver the same records twice). Only a stop gives up, and then the
		 * batch is sent again after the restart (at-least-once). */
		int settled;
		while ((settled = outbox_settle(t->reader, t->conf->name, &b, status, err[0] ? err : NULL,
						tg_wall_ms())) < 0) {
			atomic_fetch_add(&t->st.settle_errors, 1);
			LOG_WARN("forwarder", "msg=\"outbox settle failed, retrying\" sink=%s", t->conf->name);
			if (wait_for(fw, &gen, 200))
				break;
		}
		if (settled < 0)
			break;
		if (b.bytes >= BACKLOG_BATCH_BYTES)
			t->backlog = 1;
		else if (t->backlog)
			give_back(t, &b);
		atomic_fetch_add(&t->st.batches, 1);
		atomic_fetch_add(&t->st.records_ok, ok);
		atomic_fetch_add(&t->st.records_retry, retry);
		atomic_fetch_add(&t->st.records_dead, dead);
		if (dead)
			LOG_WARN("forwarder", "msg=\"records dead-lettered\" sink=%s count=%zu err=\"%s\"", t->conf->name, dead, err);
		if ((dead || retry) && err[0]) {
			pthread_mutex_lock(&fw->mu);
			snprintf(t->last_err, sizeof t->last_err, "%s", err);
			t->last_err_ms = now;
			pthread_mutex_unlock(&fw->mu);
		}
		if (retry) {
			if (rc < 0)
				atomic_fetch_add(&t->st.send_errors, 1);
			atomic_store(&t->st.up, 0);
			double r = (double)rand_r(&t->rng) / ((double)RAND_MAX + 1.0);
			int64_t delay = forwarder_backoff_ms(attempt, t->conf->retry_base_ms, t->conf->retry_cap_ms, r);
			if (recover_left > 0) {
				recover_left--;
				if (delay > FORWARDER_RECOVER_MAX_MS)
					delay = FORWARDER_RECOVER_MAX_MS;
			}
			if (attempt < 62)
				attempt++;
			if (atomic_load(&t->st.failing_since_ms) == 0)
				atomic_store(&t->st.failing_since_ms, now);
			atomic_store(&t->st.backoff_until_ms, now + delay);
			LOG_WARN("forwarder", "msg=\"send failed, backing off\" sink=%s retry=%zu ok=%zu attempt=%d delay_ms=%" PRId64
				 " err=\"%s\"", t->conf->name, retry, ok, attempt, delay, err);
			if (drain)
				break; /* don't spend the drain budget on a dead uplink */
			/* sleep the backoff (counted from the send), but wake for stop, and end it
			 * when the probe sees the endpoint come back */
			int back;
			if (backoff_wait(t, mono + delay - tg_mono_ms(), &back))
				continue; /* stopping: the loop's top decides between drain and exit */
			if (back) {
				LOG_INFO("forwarder", "msg=\"endpoint reachable again, ending the backoff\" sink=%s", t->conf->name);
				recover_left = FORWARDER_RECOVER_TRIES;
			}
		} else {
			if (attempt)
				LOG_INFO("forwarder", "msg=\"sink recovered\" sink=%s", t->conf->name);
			attempt = 0;
			recover_left = 0;
			t->probe_down = 0;
			atomic_store(&t->st.up, 1);
			atomic_store(&t->st.last_ok_ms, now);
			atomic_store(&t->st.failing_since_ms, 0);
			atomic_store(&t->st.backoff_until_ms, 0);
		}
	}
	outbox_batch_free(&b);
	free(status);
	atomic_store(&t->done, 1);
	return NULL;
}

forwarder *forwarder_start(outbox *ob, const tg_config *cfg, char *err, size_t errlen)
{
	forwarder *fw = calloc(1, sizeof *fw);
	if (!fw) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	fw->ob = ob;
	fw->cfg = cfg;
	pthread_mutex_init(&fw->mu, NULL);
	tg_cond_init_mono(&fw->cv);
	fw->t = calloc(cfg->nsinks ? cfg->nsinks : 1, sizeof *fw->t);
	if (!fw->t) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	sink_env env = {.gateway_id = cfg->gateway_id, .abandon = &fw->abandon};
	for (size_t i = 0; i < cfg->nsinks; i++) {
		fw_thread *t = &fw->t[fw->n];
		const tg_sink_conf *sc = &cfg->sinks[i];
		t->fw = fw;
		t->conf = sc;
		t->rng = (unsigned)(tg_wall_ms() ^ (int64_t)(i * 2654435761u));
		atomic_store(&t->beat_ms, tg_mono_ms());
		t->st.name = sc->name;
		t->st.type = sc->type->type;
		atomic_store(&t->st.up, 1); /* not known to be down: idle is not down */
		t->limits = (sink_limits){.max_records = 500, .max_bytes = 4 << 20, .max_age_ms = 0};
		char why[512];
		t->s = sink_conf_ops(sc)->open(sc->opts, &env, &t->limits, why, sizeof why);
		t->st.batch_age_ms = t->limits.max_age_ms;
		if (!t->s) {
			tg_seterr(err, errlen, TG_EINVAL, "sink '%s' (%s): %s", sc->name, sc->type->type, why);
			goto fail;
		}
		fw->n++;
		if (!(t->reader = outbox_open_reader(ob, why, sizeof why))) {
			tg_seterr(err, errlen, TG_EDB, "sink '%s': outbox reader: %s", sc->name, why);
			goto fail;
		}
	}
	for (size_t i = 0; i < fw->n; i++) {
		if (pthread_create(&fw->t[i].tid, NULL, run, &fw->t[i]) != 0) {
			tg_seterr(err, errlen, TG_ENOMEM, "cannot start forwarder thread");
			goto fail;
		}
		fw->t[i].started = 1;
	}
	return fw;
fail:
	forwarder_stop(fw, 0);
	return NULL;
}

void forwarder_notify(forwarder *fw)
{
	pthread_mutex_lock(&fw->mu);
	fw->gen++;
	pthread_cond_broadcast(&fw->cv);
	pthread_mutex_unlock(&fw->mu);
}

void forwarder_stop(forwarder *fw, int64_t drain_ms)
{
	if (!fw)
		return;
	pthread_mutex_lock(&fw->mu);
	fw->stop = 1;
	fw->drain_until_ms = drain_ms > 0 ? tg_mono_ms() + drain_ms : 0;
	pthread_cond_broadcast(&fw->cv);
	pthread_mutex_unlock(&fw->mu);
	/* Threads end by themselves within the drain budget unless a send hangs (an uplink that
	 * accepts and never answers): past the budget, the sends under way are abandoned, so a
	 * stop takes the budget and not the sinks' request timeouts. */
	int64_t until = drain_ms > 0 ? tg_mono_ms() + drain_ms : tg_mono_ms();
	for (size_t i = 0; i < fw->n; i++) {
		fw_thread *t = &fw->t[i];
		if (!t->started)
			continue;
		while (!atomic_load(&t->done) && !atomic_load(&fw->abandon)) {
			if (tg_mono_ms() >= until)
				atomic_store(&fw->abandon, 1);
			else
				nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000L}, NULL);
		}
		pthread_join(t->tid, NULL);
		outbox_reader_close(t->reader);
		sink_conf_ops(t->conf)->close(t->s);
	}
	free(fw->t);
	pthread_cond_destroy(&fw->cv);
	pthread_mutex_destroy(&fw->mu);
	free(fw);
}

int64_t forwarder_silence_ms(forwarder *fw, int64_t mono_ms, const char **sink_name)
{
	int64_t worst = 0;
	for (size_t i = 0; i < fw->n; i++) {
		int64_t quiet = mono_ms - atomic_load(&fw->t[i].beat_ms);
		if (quiet > worst) {
			worst = quiet;
			if (sink_name)
				*sink_name = fw->t[i].conf->name;
		}
	}
	return worst;
}

size_t forwarder_nsinks(const forwarder *fw) { return fw->n; }
forwarder_sink_stats *forwarder_stats(forwarder *fw, size_t i) { return &fw->t[i].st; }

void forwarder_health_judge(const forwarder_sink_stats *st, const tg_sink_conf *conf, int64_t backlog_rows,
			    int64_t now_ms, forwarder_health *h)
{
	memset(h, 0, sizeof *h);
	int64_t failing_since = atomic_load(&st->failing_since_ms);
	/* nothing queued: whatever the forwarder last saw has been delivered since */
	int64_t oldest = backlog_rows > 0 ? atomic_load(&st->oldest_ms) : 0;
	h->backlog_rows = backlog_rows;
	h->state = failing_since ? "failing" : atomic_load(&st->last_ok_ms) ? "ok" : "idle";
	h->failing_ms = failing_since && now_ms > failing_since ? now_ms - failing_since : 0;
	h->oldest_age_ms = oldest && now_ms > oldest ? now_ms - oldest : 0;
	h->healthy = 1;
	if (failing_since && conf->health_failing_ms > 0 && h->failing_ms > conf->health_failing_ms) {
		h->healthy = 0;
		snprintf(h->why, sizeof h->why, "sends failing for %lld s (health_failing_after %lld s)",
			 (long long)(h->failing_ms / 1000), (long long)(conf->health_failing_ms / 1000));
	} else if (conf->health_max_age_ms > 0 && h->oldest_age_ms > conf->health_max_age_ms + st->batch_age_ms) {
		h->healthy = 0;
		snprintf(h->why, sizeof h->why, "oldest undelivered record waiting %lld s (health_max_age %lld s + batching %lld s)",
			 (long long)(h->oldest_age_ms / 1000), (long long)(conf->health_max_age_ms / 1000),
			 (long long)(st->batch_age_ms / 1000));
	}
}

void forwarder_health_of(forwarder *fw, size_t i, int64_t now_ms, forwarder_health *h)
{
	fw_thread *t = &fw->t[i];
	int64_t rows, bytes;
	outbox_sink_backlog(fw->ob, t->conf->name, &rows, &bytes);
	forwarder_health_judge(&t->st, t->conf, rows, now_ms, h);
	h->backlog_bytes = bytes;
}

int64_t forwarder_last_error(forwarder *fw, size_t i, char *buf, size_t len)
{
	pthread_mutex_lock(&fw->mu);
	snprintf(buf, len, "%s", fw->t[i].last_err);
	int64_t at = fw->t[i].last_err_ms;
	pthread_mutex_unlock(&fw->mu);
	return at;
}
