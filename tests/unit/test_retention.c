/*
 * test_retention.c — the console's retention store (gateway/ops/retention.c): rows written
 * only with a committed group and dropped with a rolled-back one, trimming by age and by
 * size in id order, series buckets against a hand computation (read from the store, and
 * from the series cache as rows come and go), and the SQL endpoint's
 * guard (authorizer, one statement, row cap, time limit). Time is injected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/retention.h"

static char dir[] = "/tmp/tg-retention-XXXXXX";

static ops_retention *mk(int64_t period_ms, int64_t max_bytes)
{
	static int seq;
	char path[256], err[256];
	snprintf(path, sizeof path, "%s/r%d.db", dir, seq++); /* a new file each time */
	ops_retention_conf c = {.path = path, .period_ms = period_ms, .max_bytes = max_bytes};
	ops_retention *r = ops_retention_open(&c, err, sizeof err);
	if (!r)
		fail_msg("%s", err);
	return r;
}

static void add(ops_retention *r, const char *thing, int64_t ts, double temp)
{
	char text[128];
	int n = snprintf(text, sizeof text, "{\"temperature\":%g,\"seq\":%lld}", temp, (long long)ts);
	ops_retention_add(r, thing, ts, text, (size_t)n);
}

static void test_groups_commit_and_abort(void **state)
{
	(void)state;
	ops_retention *r = mk(3600000, 1 << 20);
	add(r, "a", 1000, 20.5);
	add(r, "b", 1001, 21.5);
	ops_retention_group(r, 1, 1002);
	add(r, "a", 1003, 99);
	ops_retention_group(r, 0, 1004); /* the outbox rolled this group back */
	ops_retention_stats st;
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 2);
	assert_int_equal(st.written, 2);
	char err[256];
	json_t *rec = ops_retention_latest(r, "a", err, sizeof err);
	assert_non_null(rec);
	assert_true(json_number_value(json_object_get(rec, "temperature")) == 20.5);
	json_decref(rec);
	assert_null(ops_retention_latest(r, "nobody", err, sizeof err));
	assert_string_equal(err, "");
	/* written at most every 500 ms: a committed group waits, and survives a later rollback */
	add(r, "c", 1100, 1.0);
	ops_retention_group(r, 1, 1200);
	add(r, "c", 1300, 2.0);
	ops_retention_group(r, 0, 1400);
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 2);
	ops_retention_tick(r, 1500); /* 498 ms after the last write: not yet */
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 2);
	ops_retention_tick(r, 1502);
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 3);
	rec = ops_retention_latest(r, "c", err, sizeof err);
	assert_true(json_number_value(json_object_get(rec, "temperature")) == 1.0);
	json_decref(rec);
	ops_retention_close(r);
}

static void test_trim_by_age_and_size(void **state)
{
	(void)state;
	ops_retention *r = mk(10000, 1 << 20);
	for (int i = 0; i < 5000; i++)
		add(r, "a", i, 1.0);
	ops_retention_group(r, 1, 5000); /* first trim: nothing older than 10 s yet */
	ops_retention_stats st;
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 5000);
	add(r, "a", 12000, 2.0);
	ops_retention_group(r, 1, 12500); /* rows with ts < 2500 are past the period */
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.trimmed, 2500);
	assert_int_equal(st.rows, 2501);
	char err[256];
	json_t *q = ops_retention_query(r, "SELECT min(ts), count(*) FROM samples", 10, 2000, err, sizeof err);
	assert_non_null(q);
	assert_int_equal(json_integer_value(json_array_get(json_array_get(json_object_get(q, "rows"), 0), 0)), 2500);
	json_decref(q);
	ops_retention_close(r);

	/* size: about 30 bytes of text a row, cap 1 MiB: the oldest rows go */
	r = mk(86400000, 1 << 20);
	int64_t now = 1000;
	for (int g = 0; g < 60; g++) {
		for (int i = 0; i < 1000; i++)
			add(r, "b", now + i, 3.25);
		now += 2000;
		ops_retention_group(r, 1, now);
	}
	ops_retention_stats_get(r, &st);
	assert_true(st.bytes <= 1 << 20);
	assert_true(st.trimmed > 0);
	assert_int_equal(st.rows + (int64_t)st.trimmed, 60000);
	q = ops_retention_query(r, "SELECT min(id) > 1, max(ts) FROM samples", 10, 2000, err, sizeof err);
	assert_non_null(q);
	json_t *row = json_array_get(json_object_get(q, "rows"), 0);
	assert_int_equal(json_integer_value(json_array_get(row, 0)), 1); /* the oldest went first */
	assert_int_equal(json_integer_value(json_array_get(row, 1)), now - 2000 + 999);
	json_decref(q);
	ops_retention_close(r);
}

static void test_series_buckets(void **state)
{
	(void)state;
	ops_retention *r = mk(86400000, 1 << 20);
	double v[] = {10, 20, 30, 5, 7};
	int64_t ts[] = {0, 400, 999, 1000, 2500};
	for (int i = 0; i < 5; i++)
		add(r, "t", 100000 + ts[i], v[i]);
	ops_retention_add(r, "t", 100100, "{\"temperature\":\"hot\"}", 22); /* not a number: left out */
	ops_retention_group(r, 1, 200000);
	char err[256];
	json_t *s = ops_retention_series(r, "t", "temperature", 100000, 103000, 1000, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(json_array_size(s), 3);
	json_t *b0 = json_array_get(s, 0), *b1 = json_array_get(s, 1), *b2 = json_array_get(s, 2);
	assert_int_equal(json_integer_value(json_object_get(b0, "t")), 100000);
	assert_true(json_real_value(json_object_get(b0, "min")) == 10 && json_real_value(json_object_get(b0, "max")) == 30);
	assert_true(json_real_value(json_object_get(b0, "avg")) == 20);
	assert_int_equal(json_integer_value(json_object_get(b0, "n")), 3);
	assert_int_equal(json_integer_value(json_object_get(b1, "t")), 101000);
	assert_int_equal(json_integer_value(json_object_get(b2, "t")), 102000);
	json_decref(s);
	assert_null(ops_retention_series(r, "t", "temperature') --", 0, 1000, 10, err, sizeof err));
	assert_null(ops_retention_series(r, "t", "temperature", 0, 100000000, 1, err, sizeof err)); /* too many steps */
	ops_retention_close(r);
}

/* One bucket's figures of a series answer, -1 n when the bucket is not there. */
static void bucket(json_t *s, int64_t t, double *mn, double *avg, double *mx, int64_t *n)
{
	*n = -1;
	size_t i;
	json_t *b;
	json_array_foreach(s, i, b)
	if (json_integer_value(json_object_get(b, "t")) == t) {
		*mn = json_real_value(json_object_get(b, "min"));
		*avg = json_real_value(json_object_get(b, "avg"));
		*mx = json_real_value(json_object_get(b, "max"));
		*n = json_integer_value(json_object_get(b, "n"));
	}
}

/* A window reaching the present is kept in memory after its first read and brought up to
 * date with the rows written since: every answer must still be the store's. The same
 * windows with until an hour back (not cached) are the reference. */
static void test_series_cache_follows_the_store(void **state)
{
	(void)state;
	ops_retention *r = mk(86400000, 1 << 20);
	int64_t t0 = (time(NULL) - 100) * 1000, wnow = 1000; /* wnow: the writer's injected clock */
	char err[256];
	for (int i = 0; i < 50; i++)
		add(r, "t", t0 + i * 100, i); /* bucket t0: 0..9, t0+1000: 10..19, ... */
	add(r, "u", t0, 1000);            /* another thing: not in t's series */
	ops_retention_add(r, "t", t0 + 50, "{\"temperature\":\"hot\"}", 22);
	ops_retention_group(r, 1, wnow += 600);
	int64_t until = t0 + 200000;
	json_t *s = ops_retention_series(r, "t", "temperature", t0, until, 1000, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(json_array_size(s), 5);
	double mn, avg, mx;
	int64_t n;
	bucket(s, t0 + 1000, &mn, &avg, &mx, &n);
	assert_true(n == 10 && mn == 10 && mx == 19 && avg == 14.5);
	json_decref(s);
	/* new rows, one of them in an old bucket; the next answer has them */
	for (int i = 50; i < 80; i++)
		add(r, "t", t0 + i * 100, i);
	add(r, "t", t0 + 1500, -7);
	ops_retention_group(r, 1, wnow += 600);
	s = ops_retention_series(r, "t", "temperature", t0, until, 1000, err, sizeof err);
	assert_int_equal(json_array_size(s), 8);
	bucket(s, t0 + 1000, &mn, &avg, &mx, &n);
	assert_true(n == 11 && mn == -7 && mx == 19);
	bucket(s, t0 + 7000, &mn, &avg, &mx, &n);
	assert_true(n == 10 && mn == 70 && mx == 79 && avg == 74.5);
	json_decref(s);
	/* a narrower window and another step from the same rows */
	s = ops_retention_series(r, "t", "temperature", t0 + 2000, until, 3000, err, sizeof err);
	bucket(s, t0 + 2000, &mn, &avg, &mx, &n);
	assert_true(n == 30 && mn == 20 && mx == 49);
	json_decref(s);
	ops_retention_close(r);

	/* trimmed rows leave the cached answer as they leave the store (cap 1 MiB) */
	r = mk(86400000, 1 << 20);
	wnow = 1000;
	for (int i = 0; i < 1000; i++)
		add(r, "b", t0 + i, 1);
	ops_retention_group(r, 1, wnow += 600);
	s = ops_retention_series(r, "b", "temperature", t0, until, 100000, err, sizeof err);
	bucket(s, t0, &mn, &avg, &mx, &n);
	assert_int_equal(n, 1000);
	json_decref(s);
	for (int g = 0; g < 60; g++) {
		for (int i = 0; i < 1000; i++)
			add(r, "b", t0 + 1000 + g * 1000 + i, 2);
		ops_retention_group(r, 1, wnow += 2000);
	}
	ops_retention_stats st;
	ops_retention_stats_get(r, &st);
	assert_true(st.trimmed > 1000);
	s = ops_retention_series(r, "b", "temperature", t0, until, 100000, err, sizeof err);
	bucket(s, t0, &mn, &avg, &mx, &n);
	assert_int_equal(n, st.rows);
	assert_true(mn == 2 && mx == 2); /* the first 1000 (value 1) went first */
	json_decref(s);
	ops_retention_close(r);
}

static void test_query_guard(void **state)
{
	(void)state;
	ops_retention *r = mk(86400000, 1 << 20);
	for (int i = 0; i < 50; i++)
		add(r, "q", i, i);
	ops_retention_group(r, 1, 1000);
	char err[256];
	json_t *q = ops_retention_query(r, "SELECT ts FROM samples ORDER BY ts", 7, 2000, err, sizeof err);
	assert_non_null(q);
	assert_int_equal(json_array_size(json_object_get(q, "rows")), 7);
	assert_true(json_is_true(json_object_get(q, "truncated")));
	json_decref(q);
	const char *bad[] = {"DELETE FROM samples", "SELECT * FROM sqlite_master", "PRAGMA user_version",
			     "ATTACH DATABASE ':memory:' AS x", "SELECT 1; SELECT 2", "UPDATE samples SET ts = 0",
			     "INSERT INTO samples(ts, thing, body) VALUES(1, 'x', '{}')", ""};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_null(ops_retention_query(r, bad[i], 10, 2000, err, sizeof err));
		assert_true(err[0] != '\0');
	}
	assert_null(ops_retention_query(r, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
					10, 100, err, sizeof err));
	assert_non_null(strstr(err, "time limit"));
	ops_retention_stats st;
	ops_retention_stats_get(r, &st);
	assert_int_equal(st.rows, 50); /* nothing above wrote */
	ops_retention_close(r);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_groups_commit_and_abort),
		cmocka_unit_test(test_trim_by_age_and_size),
		cmocka_unit_test(test_series_buckets),
		cmocka_unit_test(test_series_cache_follows_the_store),
		cmocka_unit_test(test_query_guard),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return rc;
}
