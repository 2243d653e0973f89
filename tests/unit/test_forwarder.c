/*
 * test_forwarder.c — backoff maths, and the forwarder against a scripted sink: partial
 * failures retry only the failed records, poison records are dead-lettered without
 * blocking the rest, every good record is delivered exactly once, priorities go first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "store/forwarder.h"
#include "test_util.h"

#define N 300

/* the scripted sink: records whose "i" is divisible by 7 fail once, "poison" ones are
 * refused for good; it counts how often each record was offered and accepted */
struct sink {
	pthread_mutex_t mu;
	int offered[N + 1], accepted[N + 1];
	int first_prio_seen; /* i of the first record ever offered */
	int calls;
	int64_t max_age_ms;     /* the sink's batch age threshold (0: none) */
	size_t max_records;     /* per batch (0: 50) */
	int64_t first_send_ms;  /* wall clock of the first send() */
};
static struct sink script;

static sink *t_open(const void *opts, const sink_env *env, sink_limits *lim, char *err, size_t errlen)
{
	lim->max_records = script.max_records ? script.max_records : 50;
	lim->max_bytes = 1 << 20;
	lim->max_age_ms = script.max_age_ms;
	return &script;
}

static int t_send(sink *s, const sink_record *recs, size_t n, sink_status *res, int64_t now, char *err, size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	if (s->calls++ == 0)
		s->first_send_ms = tg_wall_ms();
	for (size_t k = 0; k < n; k++) {
		json_t *o = json_loadb(recs[k].data, recs[k].len, 0, NULL);
		int i = (int)json_integer_value(json_object_get(o, "i"));
		int poison = json_is_true(json_object_get(o, "poison"));
		json_decref(o);
		if (s->first_prio_seen < 0)
			s->first_prio_seen = i;
		s->offered[i]++;
		if (poison) {
			res[k] = SINK_POISON;
			snprintf(err, errlen, "400 ValidationException");
		} else if (i % 7 == 0 && s->offered[i] == 1) {
			res[k] = SINK_RETRY;
		} else {
			res[k] = SINK_OK;
			s->accepted[i]++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void t_close(sink *s) {}

static const config_option no_options[] = {{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL}};
static const sink_ops test_ops = {
	.conf = {.type = "script", .options = no_options, .options_size = 0}, .open = t_open, .send = t_send, .close = t_close};

static void test_backoff(void **state)
{
	assert_int_equal(forwarder_backoff_ms(0, 100, 10000, 0.0), 0);
	assert_int_equal(forwarder_backoff_ms(0, 100, 10000, 0.999999), 99);
	assert_int_equal(forwarder_backoff_ms(3, 100, 10000, 0.5), 400);
	assert_int_equal(forwarder_backoff_ms(20, 100, 10000, 0.5), 5000); /* capped */
	assert_int_equal(forwarder_backoff_ms(100, 100, 10000, 0.999), 9990);
	for (int a = 0; a < 40; a++) {
		int64_t v = forwarder_backoff_ms(a, 250, 30000, 0.999999);
		assert_true(v >= 0 && v <= 30000);
	}
}

/* A fresh script and an outbox in a new temporary folder (*dir, freed by fixture_end). */
static outbox *fixture_start(char **dir)
{
	char path[4096];
	*dir = tu_tmpdir();
	snprintf(path, sizeof path, "%s/ob.db", *dir);
	memset(&script, 0, sizeof script);
	pthread_mutex_init(&script.mu, NULL);
	script.first_prio_seen = -1;
	outbox_opts oo = {.commit_interval_ms = 1, .commit_max_records = 1000, .gateway_id = "gw"};
	outbox *ob = outbox_open(path, &oo, NULL, 0);
	assert_non_null(ob);
	return ob;
}

static void fixture_end(outbox *ob, char *dir)
{
	outbox_close(ob);
	tu_rmtree(dir);
	free(dir);
	pthread_mutex_destroy(&script.mu);
}

static void test_partial_failure_and_poison(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	const char *sinks[] = {"t"};
	for (int i = 1; i <= N; i++) {
		json_t *o = json_pack("{s:i, s:b}", "i", i, "poison", i == 50 || i == 51);
		/* the last record is an alert: it must be offered first */
		assert_int_equal(outbox_append(ob, sinks, 1, i == N ? OUTBOX_PRIO_ALERT : OUTBOX_PRIO_BULK, "telemetry",
					       "k", 1000 + i, o, NULL),
				 0);
		json_decref(o);
	}
	assert_int_equal(outbox_commit(ob), 0);

	tg_sink_conf sc = {.name = "t", .type = &test_ops.conf, .retry_base_ms = 1, .retry_cap_ms = 5, .priority_first = 1};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	forwarder_notify(fw);
	outbox_counters *c = outbox_counters_of(ob);
	/* this thread plays the ingest thread: its ticks delete what the forwarder delivered */
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < 10000; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_dead), 2);
	assert_int_equal(atomic_load(&st->records_ok), N - 2);
	forwarder_stop(fw, 0);

	assert_int_equal(atomic_load(&c->rows), 0);
	assert_int_equal(script.first_prio_seen, N);
	for (int i = 1; i <= N; i++) {
		if (i == 50 || i == 51) {
			assert_int_equal(script.accepted[i], 0);
			assert_int_equal(script.offered[i], 1); /* dead-lettered at once, never retried */
		} else {
			assert_int_equal(script.accepted[i], 1); /* exactly once */
			/* only the failed ones were offered again */
			assert_int_equal(script.offered[i], i % 7 == 0 ? 2 : 1);
		}
	}
	assert_int_equal(atomic_load(&c->dead), 2);
	fixture_end(ob, dir);
}

/* A sink that waits for its batch to age is not woken into reading the whole pending batch
 * on every commit: with commits every 5 ms for 1.2 s and a 1 s age, the forwarder reads the
 * outbox a few dozen times, not hundreds, sends the first batch when it is due, and
 * delivers everything. */
static void test_linger_reads(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.max_age_ms = 1000;
	script.max_records = 1000;
	tg_sink_conf sc = {.name = "t", .type = &test_ops.conf, .retry_base_ms = 1, .retry_cap_ms = 5, .priority_first = 1,
			   .batch_max_records = 1000};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	const char *sinks[] = {"t"};
	int64_t t0 = tg_wall_ms();
	for (int i = 1; i <= 240; i++) { /* i % 7 == 0 fails once, and is sent again */
		json_t *o = json_pack("{s:i}", "i", i);
		assert_int_equal(outbox_append(ob, sinks, 1, OUTBOX_PRIO_BULK, "telemetry", "k", tg_wall_ms(), o, NULL), 0);
		json_decref(o);
		assert_int_equal(outbox_commit(ob), 0);
		forwarder_notify(fw);
		usleep(5000);
	}
	outbox_counters *c = outbox_counters_of(ob);
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < 10000; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_ok) + atomic_load(&st->records_retry), 240 + 240 / 7);
	assert_int_equal(atomic_load(&c->rows), 0);
	uint64_t reads = atomic_load(&st->reads);
	forwarder_stop(fw, 0);
	assert_true(script.first_send_ms - t0 >= 950);
	if (reads > 60)
		fail_msg("%llu outbox reads for a 1 s linger with a commit every 5 ms", (unsigned long long)reads);
	fixture_end(ob, dir);
}

/* What /healthz says of a sink (issue 12 item 4): idle is not down, a short failure is a
 * retry, a long one or an old backlog is degraded, each threshold can be switched off. */
static void test_health_judgement(void **state)
{
	forwarder_sink_stats st;
	memset(&st, 0, sizeof st);
	tg_sink_conf conf = {.health_failing_ms = 60000, .health_max_age_ms = 300000};
	forwarder_health h;
	const int64_t now = 1800000000000;
	forwarder_health_judge(&st, &conf, 0, now, &h); /* fresh: nothing sent, nothing failed */
	assert_string_equal(h.state, "idle");
	assert_true(h.healthy);
	atomic_store(&st.last_ok_ms, now - 5000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_string_equal(h.state, "ok");
	assert_true(h.healthy);
	atomic_store(&st.failing_since_ms, now - 59000); /* failing, within the threshold */
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_string_equal(h.state, "failing");
	assert_true(h.healthy);
	assert_int_equal(h.failing_ms, 59000);
	atomic_store(&st.failing_since_ms, now - 61000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_false(h.healthy);
	assert_non_null(strstr(h.why, "sends failing for 61 s"));
	conf.health_failing_ms = 0; /* failures alone never degrade */
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy);
	/* the oldest undelivered record, beyond the sink's own batching age */
	atomic_store(&st.failing_since_ms, 0);
	st.batch_age_ms = 60000;
	atomic_store(&st.oldest_ms, now - 350000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy); /* 350 s < 300 s + 60 s of batching */
	assert_int_equal(h.oldest_age_ms, 350000);
	atomic_store(&st.oldest_ms, now - 361000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_false(h.healthy);
	assert_non_null(strstr(h.why, "oldest undelivered record waiting 361 s"));
	forwarder_health_judge(&st, &conf, 0, now, &h); /* delivered since: nothing is waiting */
	assert_true(h.healthy);
	assert_int_equal(h.oldest_age_ms, 0);
	conf.health_max_age_ms = 0;
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_partial_failure_and_poison),
		cmocka_unit_test(test_linger_reads),
		cmocka_unit_test(test_health_judgement),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
