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

#include "clock.h"
#include "err.h"
#include "forwarder.h"
#include "test_util.h"

#define N 300

/* the scripted sink: records whose "i" is divisible by 7 fail once, "poison" ones are
 * refused for good; it counts how often each record was offered and accepted */
struct sink {
	pthread_mutex_t mu;
	int offered[N + 1], accepted[N + 1];
	int first_prio_seen; /* i of the first record ever offered */
	int calls;
};
static struct sink script;

static sink *t_open(const void *opts, const sink_env *env, sink_limits *lim, char *err, size_t errlen)
{
	lim->max_records = 50;
	lim->max_bytes = 1 << 20;
	return &script;
}

static int t_send(sink *s, const sink_record *recs, size_t n, sink_status *res, int64_t now, char *err, size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	s->calls++;
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
	.type = "script", .options = no_options, .options_size = 0, .open = t_open, .send = t_send, .close = t_close};

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

static void test_partial_failure_and_poison(void **state)
{
	char *dir = tu_tmpdir(), path[4096];
	snprintf(path, sizeof path, "%s/ob.db", dir);
	memset(&script, 0, sizeof script);
	pthread_mutex_init(&script.mu, NULL);
	script.first_prio_seen = -1;

	outbox_opts oo = {.commit_interval_ms = 1, .commit_max_records = 1000, .gateway_id = "gw"};
	outbox *ob = outbox_open(path, &oo, NULL, 0);
	assert_non_null(ob);
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

	tg_sink_conf sc = {.name = "t", .ops = &test_ops, .retry_base_ms = 1, .retry_cap_ms = 5, .priority_first = 1};
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
	outbox_close(ob);
	tu_rmtree(dir);
	free(dir);
	pthread_mutex_destroy(&script.mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_partial_failure_and_poison),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
