/*
 * test_dedupe.c — window edges, bounded memory (ring and LRU), and agreement with an
 * unbounded brute-force model over a random stream when the bounds are not hit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "edge/dedupe.h"

static dedupe *mk(int64_t window, size_t per, size_t things)
{
	dedupe_conf c = {.window_ms = window, .per_thing = per, .max_things = things};
	char err[128];
	dedupe *d = dedupe_new(&c, err, sizeof err);
	if (!d)
		fail_msg("%s", err);
	return d;
}

static void test_window_edges(void **state)
{
	(void)state;
	dedupe *d = mk(600000, 16, 10);
	assert_int_equal(dedupe_check(d, "a", 1000, 5000), 0);
	assert_int_equal(dedupe_check(d, "a", 1000, 5001), 1);
	assert_int_equal(dedupe_check(d, "b", 1000, 5001), 0);     /* other thing, same ts */
	assert_int_equal(dedupe_check(d, "a", 1001, 5002), 0);     /* same thing, other ts */
	assert_int_equal(dedupe_check(d, "a", 1000, 605000), 1);   /* exactly the window */
	/* the duplicate above did not extend the window: it still runs from 5000 */
	assert_int_equal(dedupe_check(d, "a", 1000, 605001), 0);   /* expired: new again */
	assert_int_equal(dedupe_check(d, "a", 1000, 605002), 1);   /* and remembered anew */
	dedupe_stats st;
	dedupe_get_stats(d, &st);
	assert_int_equal(st.checked, 7);
	assert_int_equal(st.duplicates, 3);
	assert_int_equal(st.things, 2);
	assert_int_equal(st.overwritten, 0);
	assert_int_equal(dedupe_check(d, NULL, 1, 1), TG_EINVAL);
	dedupe_free(d);
	dedupe_free(NULL);
}

static void test_bad_conf(void **state)
{
	(void)state;
	char err[128];
	dedupe_conf c = {.window_ms = 0, .per_thing = 1, .max_things = 1};
	assert_null(dedupe_new(&c, err, sizeof err));
	c.window_ms = 1;
	c.per_thing = 0;
	assert_null(dedupe_new(&c, err, sizeof err));
	c.per_thing = 1;
	c.max_things = 0;
	assert_null(dedupe_new(&c, err, sizeof err));
	assert_null(dedupe_new(NULL, err, sizeof err));
}

static void test_ring_bound(void **state)
{
	(void)state;
	dedupe *d = mk(600000, 4, 10);
	for (int i = 0; i < 6; i++)
		assert_int_equal(dedupe_check(d, "a", 100 + i, 1000 + i), 0);
	dedupe_stats st;
	dedupe_get_stats(d, &st);
	assert_int_equal(st.overwritten, 2); /* ts 100 and 101 pushed out inside the window */
	assert_int_equal(dedupe_check(d, "a", 105, 2000), 1);
	assert_int_equal(dedupe_check(d, "a", 102, 2000), 1); /* oldest still remembered */
	assert_int_equal(dedupe_check(d, "a", 101, 2000), 0); /* forgotten: documented miss */
	dedupe_free(d);
}

static void test_lru_bound(void **state)
{
	(void)state;
	dedupe *d = mk(600000, 4, 3);
	char name[16];
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof name, "t%d", i);
		assert_int_equal(dedupe_check(d, name, 1, 10), 0);
	}
	assert_int_equal(dedupe_check(d, "t0", 1, 11), 1); /* touch t0: t1 is now least recent */
	assert_int_equal(dedupe_check(d, "t3", 1, 12), 0); /* evicts t1 */
	dedupe_stats st;
	dedupe_get_stats(d, &st);
	assert_int_equal(st.things, 3);
	assert_int_equal(st.things_evicted, 1);
	assert_int_equal(dedupe_check(d, "t0", 1, 13), 1);
	assert_int_equal(dedupe_check(d, "t2", 1, 13), 1);
	assert_int_equal(dedupe_check(d, "t3", 1, 13), 1);
	assert_int_equal(dedupe_check(d, "t1", 1, 13), 0); /* forgotten, so seen as new (evicts t0) */
	assert_int_equal(dedupe_check(d, "t0", 1, 14), 0);
	/* recycled nodes take names longer than the ones they held */
	char longname[200];
	for (int i = 0; i < 6; i++) {
		memset(longname, 'a' + i, sizeof longname - 1);
		longname[sizeof longname - 1 - (size_t)i * 20] = '\0';
		assert_int_equal(dedupe_check(d, longname, 7, 20 + i), 0);
		assert_int_equal(dedupe_check(d, longname, 7, 20 + i), 1);
	}
	dedupe_get_stats(d, &st);
	assert_int_equal(st.things, 3);
	dedupe_free(d);
}

/* Thousands of things: the table grows from 64 buckets (through LRU eviction too) and every
 * thing is still found. */
static void test_many_things(void **state)
{
	(void)state;
	enum { N = 20000, CAP = 12000 };
	dedupe *d = mk(600000, 2, CAP);
	char name[32];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "dev-%05d", i);
		assert_int_equal(dedupe_check(d, name, 5, 100), 0);
		assert_int_equal(dedupe_check(d, name, 5, 100), 1);
	}
	for (int i = N - CAP; i < N; i++) { /* the CAP most recent are all remembered */
		snprintf(name, sizeof name, "dev-%05d", i);
		assert_int_equal(dedupe_check(d, name, 5, 101), 1);
	}
	dedupe_stats st;
	dedupe_get_stats(d, &st);
	assert_int_equal(st.things, CAP);
	assert_int_equal(st.things_evicted, N - CAP);
	snprintf(name, sizeof name, "dev-%05d", 0); /* evicted long ago: new again */
	assert_int_equal(dedupe_check(d, name, 5, 102), 0);
	dedupe_free(d);
}

/* Brute force: every (thing, ts, first_seen) ever remembered, scanned linearly. */
struct rec {
	int thing;
	int64_t ts, seen;
};

static void test_against_model(void **state)
{
	(void)state;
	const int N = 20000, THINGS = 50;
	const int64_t W = 30000;
	dedupe *d = mk(W, 4096, THINGS);
	struct rec *m = calloc((size_t)N, sizeof *m);
	size_t nm = 0;
	unsigned seed = 99;
	int64_t now = 1700000000000LL;
	int dups = 0;
	for (int i = 0; i < N; i++) {
		now += rand_r(&seed) % 20; /* ~10 ms apart: ~3000 readings per window per stream */
		int th = rand_r(&seed) % THINGS;
		/* small ts space per thing so collisions (inside and outside the window) are common */
		int64_t ts = (now / 1000) * 1000 + (rand_r(&seed) % 8) * 1000 - 4000;
		int want = 0;
		for (size_t k = nm; k-- > 0;) {
			if (m[k].thing == th && m[k].ts == ts && now - m[k].seen <= W) {
				want = 1;
				break;
			}
		}
		if (!want)
			m[nm++] = (struct rec){th, ts, now};
		char name[16];
		snprintf(name, sizeof name, "dev-%04d", th);
		int got = dedupe_check(d, name, ts, now);
		if (got != want)
			fail_msg("step %d thing %d ts %lld: got %d want %d", i, th, (long long)ts, got, want);
		dups += want;
	}
	dedupe_stats st;
	dedupe_get_stats(d, &st);
	assert_int_equal(st.duplicates, (uint64_t)dups);
	assert_true(dups > 1000 && dups < N - 1000); /* the stream exercised both outcomes */
	assert_int_equal(st.overwritten, 0);
	free(m);
	dedupe_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_window_edges),
		cmocka_unit_test(test_bad_conf),
		cmocka_unit_test(test_ring_bound),
		cmocka_unit_test(test_lru_bound),
		cmocka_unit_test(test_many_things),
		cmocka_unit_test(test_against_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
