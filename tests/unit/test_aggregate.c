/*
 * test_aggregate.c — window maths against a direct recomputation over the same random
 * inputs (with and without regular ticks, so slot reuse inside aggregate_add is covered),
 * grace and lateness, group keys, bounds and config errors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "edge/aggregate.h"

struct sink {
	json_t *wins;   /* array of emitted objects */
	int64_t now;    /* the test's clock, to check windows are not emitted early */
	int64_t grace;
	int flushing;
};

static int collect(void *ud, const aggregate_window *w)
{
	struct sink *s = ud;
	if (!s->flushing && s->now < w->end_ms + s->grace)
		fail_msg("window %lld..%lld emitted early at %lld", (long long)w->start_ms,
			 (long long)w->end_ms, (long long)s->now);
	assert_int_equal(json_integer_value(json_object_get(w->json, "window_start")), w->start_ms);
	assert_string_equal(json_string_value(json_object_get(w->json, "thing")), w->thing);
	json_array_append(s->wins, w->json);
	return 0;
}

static aggregate_set *load(const char *text, struct sink *s)
{
	char err[1024];
	aggregate_set *a = aggregate_load_buffer("agg.json", text, strlen(text), collect, s, err,
						 sizeof err);
	if (!a)
		fail_msg("load: %s", err);
	return a;
}

/* ---- model ------------------------------------------------------------------------------- */

#define NTH 5
#define NMSG 6000
struct obs {
	int thing;
	int64_t ts, start;
	int has_t, has_h;
	double t, h;
	int late, future;
};

static void check_window(const json_t *w, const struct obs *o, size_t n, int64_t W)
{
	const char *thing = json_string_value(json_object_get(w, "thing"));
	int64_t start = json_integer_value(json_object_get(w, "window_start"));
	int th = atoi(thing + 4);
	uint64_t count = 0, tn = 0, hn = 0;
	double tsum = 0, tmin = INFINITY, tmax = -INFINITY, hsum = 0, first = 0, last = 0;
	int64_t fts = INT64_MAX, lts = INT64_MIN;
	for (size_t i = 0; i < n; i++) {
		if (o[i].late || o[i].future || o[i].thing != th || o[i].start != start)
			continue;
		count++;
		if (o[i].has_t) {
			tn++;
			tsum += o[i].t;
			tmin = fmin(tmin, o[i].t);
			tmax = fmax(tmax, o[i].t);
			if (o[i].ts < fts) { /* earliest ts; first arrival among equals */
				fts = o[i].ts;
				first = o[i].t;
			}
			if (o[i].ts >= lts) { /* latest ts; last arrival among equals */
				lts = o[i].ts;
				last = o[i].t;
			}
		}
		if (o[i].has_h) {
			hn++;
			hsum += o[i].h;
		}
	}
	assert_true(count > 0); /* never an empty window */
	assert_int_equal(json_integer_value(json_object_get(w, "window_end")), start + W);
	assert_int_equal(json_integer_value(json_object_get(w, "count")), count);
	assert_int_equal(json_integer_value(json_object_get(w, "temperature_count")), tn);
	if (tn == 0) {
		assert_true(json_is_null(json_object_get(w, "temperature_avg")));
	} else {
		assert_float_equal(json_real_value(json_object_get(w, "temperature_avg")), tsum / tn, 1e-9);
		assert_float_equal(json_real_value(json_object_get(w, "temperature_sum")), tsum, 1e-7);
		assert_true(json_real_value(json_object_get(w, "temperature_min")) == tmin);
		assert_true(json_real_value(json_object_get(w, "temperature_max")) == tmax);
		assert_true(json_real_value(json_object_get(w, "temperature_first")) == first);
		assert_true(json_real_value(json_object_get(w, "temperature_last")) == last);
	}
	if (hn)
		assert_float_equal(json_real_value(json_object_get(w, "humidity_avg")), hsum / hn, 1e-9);
	else
		assert_true(json_is_null(json_object_get(w, "humidity_avg")));
}

static void run_model(int tick_every)
{
	const int64_t W = 10000, G = 3000;
	struct sink sk = {.wins = json_array(), .grace = G};
	aggregate_set *a = load("{\"aggregates\":[{\"name\":\"m\",\"topic\":\"devices/+/telemetry\","
				"\"windowSeconds\":10,\"graceSeconds\":3,\"fields\":{"
				"\"temperature\":[\"avg\",\"min\",\"max\",\"count\",\"sum\",\"first\",\"last\"],"
				"\"humidity\":[\"avg\"]}}]}",
				&sk);
	struct obs *o = calloc(NMSG, sizeof *o);
	unsigned seed = 4242 + (unsigned)tick_every;
	int64_t now = 1764088200000LL;
	uint64_t late = 0, future = 0;
	for (int i = 0; i < NMSG; i++) {
		now += rand_r(&seed) % 40;
		sk.now = now;
		struct obs *x = &o[i];
		x->thing = rand_r(&seed) % NTH;
		int r = rand_r(&seed) % 100;
		int64_t delay = r < 70 ? rand_r(&seed) % 500 : r < 92 ? rand_r(&seed) % 4000
							       : rand_r(&seed) % 20000;
		x->ts = now - delay;
		if (r >= 96) /* device clock ahead: up to 1.5 windows, part of it beyond the limit */
			x->ts = now + rand_r(&seed) % 15000;
		int no_ts = rand_r(&seed) % 50 == 0; /* falls back to received (= now) */
		if (no_ts)
			x->ts = now;
		x->start = (x->ts / W) * W;
		x->late = x->start + W + G <= now;
		x->future = x->start > now + W;
		late += (uint64_t)x->late;
		future += (uint64_t)x->future;
		x->has_t = rand_r(&seed) % 20 != 0;
		x->t = (rand_r(&seed) % 100000) / 1000.0 - 20.0;
		x->has_h = rand_r(&seed) % 3 != 0;
		x->h = (rand_r(&seed) % 10000) / 100.0;
		json_t *m = json_object();
		char thing[16];
		snprintf(thing, sizeof thing, "dev-%04d", x->thing);
		if (!no_ts)
			json_object_set_new(m, "ts", json_integer(x->ts));
		if (x->has_t)
			json_object_set_new(m, "temperature", json_real(x->t));
		else
			json_object_set_new(m, "temperature", json_string("n/a")); /* not a number: skipped */
		if (x->has_h)
			json_object_set_new(m, "humidity", json_real(x->h));
		/* every other message hands over its ts already read, as ingest does: both paths
		 * must give the same windows */
		int rc = aggregate_add(a, "devices/x/telemetry", thing, m, !no_ts && i % 2 ? &x->ts : NULL, now, now);
		assert_int_equal(rc, x->late || x->future ? 0 : 1);
		json_decref(m);
		if (tick_every && i % tick_every == 0)
			assert_true(aggregate_tick(a, now) >= 0);
	}
	sk.flushing = 1;
	assert_true(aggregate_flush(a) >= 0);

	/* every expected (thing, window) emitted exactly once, with the right numbers, in order */
	size_t expected = 0;
	for (int th = 0; th < NTH; th++) {
		int64_t prev = INT64_MIN;
		for (int64_t s = (o[0].ts / W - 3) * W; s <= now + 2 * W; s += W) {
			int any = 0;
			for (int i = 0; i < NMSG && !any; i++)
				any = !o[i].late && !o[i].future && o[i].thing == th && o[i].start == s;
			expected += (size_t)any;
		}
		size_t i;
		json_t *w;
		json_array_foreach(sk.wins, i, w) {
			const char *t = json_string_value(json_object_get(w, "thing"));
			if (atoi(t + 4) != th)
				continue;
			int64_t s = json_integer_value(json_object_get(w, "window_start"));
			assert_true(s > prev); /* strictly increasing: no window twice, oldest first */
			prev = s;
			check_window(w, o, NMSG, W);
		}
	}
	assert_int_equal(json_array_size(sk.wins), expected);
	aggregate_stats st;
	aggregate_get_stats(a, &st);
	assert_int_equal(st.late, late);
	assert_true(late > 50);        /* the stream really had late data */
	assert_int_equal(st.future, future);
	assert_true(future > 10);
	assert_int_equal(st.added, NMSG - late - future);
	assert_int_equal(st.windows_emitted, expected);
	/* late arrivals are reported in the emitted windows (except those dropped with idle keys) */
	uint64_t reported = 0;
	size_t i;
	json_t *w;
	json_array_foreach(sk.wins, i, w)
		reported += (uint64_t)json_integer_value(json_object_get(w, "late"));
	assert_true(reported <= late && reported > 0);
	aggregate_free(a);
	json_decref(sk.wins);
	free(o);
}

static void test_model_with_ticks(void **state)
{
	(void)state;
	run_model(50);
}

static void test_model_without_ticks(void **state)
{
	(void)state;
	run_model(0);
}

/* ---- specific behaviours ----------------------------------------------------------------- */

/* Thousands of keys (the key table grows from 64 buckets) and fields that keep different
 * subsets of accumulator cells (sum+last, min+first, count only), checked per window. */
static void test_many_keys_partial_cells(void **state)
{
	(void)state;
	enum { N = 3000 };
	struct sink sk = {.wins = json_array(), .grace = 1000};
	aggregate_set *a = load("{\"aggregates\":[{\"name\":\"m\",\"topic\":\"d/+/t\","
			       "\"windowSeconds\":10,\"graceSeconds\":1,\"maxKeys\":100000,\"fields\":{"
			       "\"temperature\":[\"sum\",\"last\"],\"humidity\":[\"first\",\"min\"],"
			       "\"pressure\":[\"count\"]}}]}",
			       &sk);
	char thing[32];
	for (int r = 0; r < 3; r++)
		for (int i = 0; i < N; i++) {
			snprintf(thing, sizeof thing, "dev-%05d", i);
			/* ts descending over r for humidity's "first" to be the r = 2 value */
			json_t *m = json_pack("{sIsfsf}", "ts", (json_int_t)(5000 - r * 100), "temperature",
					      i + r * 0.5, "humidity", 50.0 - r - i % 7);
			if (r == 1)
				json_object_set_new(m, "pressure", json_real(1000));
			sk.now = 6000;
			assert_int_equal(aggregate_add(a, "d/x/t", thing, m, NULL, 6000, 6000), 1);
			json_decref(m);
		}
	aggregate_stats st;
	aggregate_get_stats(a, &st);
	assert_int_equal(st.keys, N);
	sk.now = 11000;
	assert_int_equal(aggregate_tick(a, 11000), N);
	assert_int_equal(json_array_size(sk.wins), N);
	size_t k;
	json_t *w;
	json_array_foreach(sk.wins, k, w) {
		int i = atoi(json_string_value(json_object_get(w, "thing")) + 4);
		assert_float_equal(json_real_value(json_object_get(w, "temperature_sum")), 3.0 * i + 1.5, 1e-9);
		assert_float_equal(json_real_value(json_object_get(w, "temperature_last")), i + 0.0, 1e-9);
		assert_float_equal(json_real_value(json_object_get(w, "humidity_first")), 48.0 - i % 7, 1e-9);
		assert_float_equal(json_real_value(json_object_get(w, "humidity_min")), 48.0 - i % 7, 1e-9);
		assert_int_equal(json_integer_value(json_object_get(w, "pressure_count")), 1);
		assert_int_equal(json_integer_value(json_object_get(w, "count")), 3);
		assert_null(json_object_get(w, "temperature_avg"));
	}
	aggregate_free(a);
	json_decref(sk.wins);
}

static json_t *msg(int64_t ts, double t, const char *grp)
{
	json_t *m = json_pack("{sIsf}", "ts", (json_int_t)ts, "temperature", t);
	if (grp)
		json_object_set_new(m, "sensor_id", json_string(grp));
	return m;
}

static int add(aggregate_set *a, const char *thing, int64_t ts, double t, const char *grp, int64_t now)
{
	json_t *m = msg(ts, t, grp);
	int rc = aggregate_add(a, "devices/x/telemetry", thing, m, NULL, now, now);
	json_decref(m);
	return rc;
}

static void test_grace_and_late(void **state)
{
	(void)state;
	struct sink sk = {.wins = json_array(), .grace = 5000};
	aggregate_set *a = load("{\"aggregates\":[{\"name\":\"g\",\"topic\":\"devices/#\","
				"\"windowSeconds\":60,\"graceSeconds\":5,"
				"\"fields\":{\"temperature\":[\"avg\",\"count\"]}}]}",
				&sk);
	const int64_t t0 = 1764088200000LL; /* a minute boundary */
	sk.now = t0 + 1000;
	assert_int_equal(add(a, "a", t0 + 1000, 10, NULL, sk.now), 1);
	sk.now = t0 + 61000; /* next window; the first one is within its grace */
	assert_int_equal(add(a, "a", t0 + 61000, 30, NULL, sk.now), 1);
	assert_int_equal(add(a, "a", t0 + 59000, 20, NULL, sk.now), 1); /* late, within grace */
	assert_int_equal(aggregate_tick(a, sk.now), 0);
	sk.now = t0 + 65000;
	assert_int_equal(aggregate_tick(a, sk.now), 1);
	json_t *w = json_array_get(sk.wins, 0);
	assert_int_equal(json_integer_value(json_object_get(w, "count")), 2);
	assert_float_equal(json_real_value(json_object_get(w, "temperature_avg")), 15.0, 1e-12);
	assert_string_equal(json_string_value(json_object_get(w, "window_start_iso")),
			    "2025-11-25T16:30:00.000Z");
	assert_string_equal(json_string_value(json_object_get(w, "window_end_iso")),
			    "2025-11-25T16:31:00.000Z");
	/* beyond grace: late, reported with the key's next window */
	assert_int_equal(add(a, "a", t0 + 30000, 99, NULL, sk.now), 0);
	/* far future: ignored */
	assert_int_equal(add(a, "a", t0 + 3600000, 99, NULL, sk.now), 0);
	sk.now = t0 + 125000;
	assert_int_equal(aggregate_tick(a, sk.now), 1);
	w = json_array_get(sk.wins, 1);
	assert_int_equal(json_integer_value(json_object_get(w, "count")), 1);
	assert_int_equal(json_integer_value(json_object_get(w, "late")), 1);
	assert_float_equal(json_real_value(json_object_get(w, "temperature_avg")), 30.0, 1e-12);
	aggregate_stats st;
	aggregate_get_stats(a, &st);
	assert_int_equal(st.late, 1);
	assert_int_equal(st.future, 1);
	assert_int_equal(st.keys, 1);
	/* idle for 10 windows: the key is forgotten */
	sk.now = t0 + 61000 + 600000;
	assert_int_equal(aggregate_tick(a, sk.now), 0);
	aggregate_get_stats(a, &st);
	assert_int_equal(st.keys, 0);
	aggregate_free(a);
	json_decref(sk.wins);
}

static void test_first_last_ties(void **state)
{
	(void)state;
	struct sink sk = {.wins = json_array(), .flushing = 1};
	aggregate_set *a = load("{\"aggregates\":[{\"name\":\"f\",\"topic\":\"devices/#\","
				"\"fields\":{\"temperature\":[\"first\",\"last\"]}}]}",
				&sk);
	const int64_t t0 = 1764088200000LL;
	/* arrival order differs from event order; equal timestamps keep arrival order */
	assert_int_equal(add(a, "a", t0 + 500, 5, NULL, t0 + 600), 1);
	assert_int_equal(add(a, "a", t0 + 100, 1, NULL, t0 + 600), 1);
	assert_int_equal(add(a, "a", t0 + 100, 2, NULL, t0 + 600), 1);
	assert_int_equal(add(a, "a", t0 + 900, 8, NULL, t0 + 950), 1);
	assert_int_equal(add(a, "a", t0 + 900, 9, NULL, t0 + 950), 1);
	assert_int_equal(add(a, "a", t0 + 300, 3, NULL, t0 + 990), 1);
	assert_int_equal(aggregate_flush(a), 1);
	json_t *w = json_array_get(sk.wins, 0);
	assert_true(json_real_value(json_object_get(w, "temperature_first")) == 1.0);
	assert_true(json_real_value(json_object_get(w, "temperature_last")) == 9.0);
	aggregate_free(a);
	json_decref(sk.wins);
}

static void test_group_and_bounds(void **state)
{
	(void)state;
	struct sink sk = {.wins = json_array(), .flushing = 1};
	aggregate_set *a = load("{\"aggregates\":[{\"name\":\"g\",\"topic\":\"devices/+/telemetry\","
				"\"windowSeconds\":60,\"groupBy\":\"sensor_id\",\"maxKeys\":3,"
				"\"fields\":{\"temperature\":[\"max\"]}},"
				"{\"name\":\"other\",\"topic\":\"other/#\",\"fields\":{\"x\":[\"sum\"]}}]}",
				&sk);
	assert_int_equal(aggregate_count(a), 2);
	const int64_t t0 = 1764088200000LL;
	assert_int_equal(add(a, "gw", t0, 1, "s1", t0), 1);
	assert_int_equal(add(a, "gw", t0, 5, "s2", t0), 1);
	assert_int_equal(add(a, "gw", t0, 3, "s1", t0), 1);
	assert_int_equal(add(a, "gw2", t0, 7, "s1", t0), 1);
	assert_int_equal(add(a, "gw2", t0, 7, "s3", t0), 0); /* fourth key: over maxKeys */
	aggregate_stats st;
	aggregate_get_stats(a, &st);
	assert_int_equal(st.keys_dropped, 1);
	assert_int_equal(aggregate_flush(a), 3);
	size_t i;
	json_t *w;
	double s1 = 0, s2 = 0;
	json_array_foreach(sk.wins, i, w) {
		const char *g = json_string_value(json_object_get(w, "sensor_id"));
		const char *t = json_string_value(json_object_get(w, "thing"));
		if (strcmp(t, "gw") == 0 && strcmp(g, "s1") == 0)
			s1 = json_real_value(json_object_get(w, "temperature_max"));
		if (strcmp(t, "gw") == 0 && strcmp(g, "s2") == 0)
			s2 = json_real_value(json_object_get(w, "temperature_max"));
	}
	assert_true(s1 == 3.0 && s2 == 5.0);
	assert_int_equal(aggregate_flush(a), 0); /* nothing twice */
	aggregate_free(a);
	aggregate_free(NULL);
	json_decref(sk.wins);
}

static void expect_error(const char *text, const char *want)
{
	char err[1024];
	struct sink sk = {0};
	aggregate_set *a = aggregate_load_buffer("agg.json", text, strlen(text), collect, &sk, err,
						 sizeof err);
	assert_null(a);
	if (!strstr(err, want))
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_error("{\"aggregates\": [", "agg.json:1:");
	expect_error("{\"aggs\": []}", "expected {\"aggregates\"");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\n\"fields\":{\"x\":[\"median\"]}}]}",
		     "agg.json:2:11: unknown function");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\"windowSeconds\":0,\"fields\":{\"x\":[\"avg\"]}}]}",
		     "windowSeconds must be");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\"windowSeconds\":1,\"graceSeconds\":100,"
		     "\"fields\":{\"x\":[\"avg\"]}}]}",
		     "graceSeconds may be at most");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\"fields\":{}}]}", "non-empty");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\"bogus\":1,\"fields\":{\"x\":[\"avg\"]}}]}",
		     "unknown key \"bogus\"");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"t\",\"fields\":{\"x\":[\"avg\"]}},"
		     "{\"name\":\"a\",\"topic\":\"u\",\"fields\":{\"x\":[\"avg\"]}}]}",
		     "duplicate aggregate name");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"d/#/t\",\"fields\":{\"x\":[\"avg\"]}}]}",
		     "topic must be an MQTT topic filter");
	expect_error("{\"aggregates\":[{\"name\":\"a\",\"topic\":\"d/x+\",\"fields\":{\"x\":[\"avg\"]}}]}",
		     "topic must be an MQTT topic filter");
	char err[256];
	assert_null(aggregate_load_buffer("x", "{}", 2, NULL, NULL, err, sizeof err));
}

/* The caller's already-read "ts" serves only aggregates whose timeField is "ts"; another
 * timeField is read from the message, and a topic the filter does not match counts nowhere. */
static void test_time_field_hint(void **state)
{
	(void)state;
	struct sink sk = {.wins = json_array(), .flushing = 1};
	aggregate_set *a = load("{\"aggregates\":["
				"{\"name\":\"by_ts\",\"topic\":\"d/+/t\",\"windowSeconds\":10,\"fields\":{\"v\":[\"sum\"]}},"
				"{\"name\":\"by_at\",\"topic\":\"d/+/t\",\"timeField\":\"at\",\"windowSeconds\":10,"
				"\"fields\":{\"v\":[\"sum\"]}}]}",
				&sk);
	json_t *m = json_pack("{sIsIsf}", "ts", (json_int_t)25000, "at", (json_int_t)12000, "v", 1.0);
	int64_t ts = 25000;
	assert_int_equal(aggregate_add(a, "d/x/t", "x", m, &ts, 15000, 15000), 2);
	assert_int_equal(aggregate_add(a, "d/x/t/more", "x", m, &ts, 15000, 15000), 0);
	assert_int_equal(aggregate_add(a, "e/x/t", "x", m, &ts, 15000, 15000), 0);
	json_decref(m);
	assert_int_equal(aggregate_flush(a), 2);
	size_t i;
	json_t *w;
	int seen = 0;
	json_array_foreach(sk.wins, i, w) {
		const char *name = json_string_value(json_object_get(w, "aggregate"));
		int64_t start = json_integer_value(json_object_get(w, "window_start"));
		if (strcmp(name, "by_ts") == 0)
			assert_int_equal(start, 20000), seen |= 1;
		else
			assert_int_equal(start, 10000), seen |= 2;
	}
	assert_int_equal(seen, 3);
	aggregate_free(a);
	json_decref(sk.wins);
}

static void test_shipped_config(void **state)
{
	(void)state;
	char err[1024];
	struct sink sk = {.wins = json_array(), .flushing = 1};
	aggregate_set *a = aggregate_load_file("rules/aggregates/aggregates.json", collect, &sk, err, sizeof err);
	if (!a)
		fail_msg("%s", err);
	assert_true(aggregate_count(a) >= 1);
	json_t *m = json_pack("{sssIsfsfsfsi}", "sensor_id", "dev-0001", "ts", (json_int_t)1764088209123LL,
			      "temperature", 21.5, "humidity", 40.0, "pressure", 1013.0, "seq", 1);
	assert_true(aggregate_add(a, "devices/dev-0001/telemetry", "dev-0001", m, NULL, 1764088209200LL,
				  1764088209200LL) >= 1);
	json_decref(m);
	assert_true(aggregate_flush(a) >= 1);
	json_t *w = json_array_get(sk.wins, 0);
	assert_float_equal(json_real_value(json_object_get(w, "temperature_avg")), 21.5, 1e-12);
	aggregate_free(a);
	json_decref(sk.wins);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_with_ticks),
		cmocka_unit_test(test_model_without_ticks),
		cmocka_unit_test(test_grace_and_late),
		cmocka_unit_test(test_many_keys_partial_cells),
		cmocka_unit_test(test_first_last_ties),
		cmocka_unit_test(test_group_and_bounds),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_time_field_hint),
		cmocka_unit_test(test_shipped_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
