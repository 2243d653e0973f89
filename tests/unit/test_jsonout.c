/*
 * test_jsonout.c — jsonout_write gives exactly json_dumpb(JSON_COMPACT |
 * JSON_REAL_PRECISION(15))'s bytes: hand-picked numbers at the edges of the fast paths, and
 * random records (telemetry-like decimals, arbitrary doubles, integers, escapes, UTF-8,
 * nesting).
 */
#include <float.h>
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
#include "core/jsonout.h"

static void same_as_jansson(const json_t *v)
{
	char *want = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
	tg_buf b = {0};
	assert_non_null(want);
	assert_int_equal(jsonout_write(&b, v), 0);
	if (strcmp(want, b.p) != 0)
		fail_msg("jansson: %s\njsonout: %s", want, b.p);
	assert_int_equal(b.len, strlen(want));
	free(want);
	free(b.p);
}

static void test_numbers(void **state)
{
	(void)state;
	static const double reals[] = {
		0.0, -0.0, 1.0, -1.0, 0.5, 24.65, -24.65, 1013.25, 99.99, 0.1, 0.2, 0.1 + 0.2, 1e-4,
		-1e-4, 9.9999e-5, 0.00012345, 1e13, 9999999999999.0, 9999999999999.99, 1e13 + 0.5,
		123456789012.345678, 1e15, 1e16, 1e21, 1e300, 1e-300, -1e-7, 5e-324, DBL_MAX, -DBL_MAX,
		DBL_MIN, 3.141592653589793, 2.718281828459045, 12345.678901, 0.000001, 0.0000015,
		1234567.5, 100.0, 1e6, 123.456e3, -987654.321, 33.333333, 1.0 / 3.0, 2.0 / 3.0,
		4503599627370496.0, 4503599627370497.0, 0.30000000000000004, 1.005, 1.015, 2.675,
		1e-5, 5e-5, 0.00005, 0.99999999999999, 0.999999999999999, 9.995, 1e14 + 0.25};
	for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
		json_t *v = json_real(reals[i]);
		assert_non_null(v);
		same_as_jansson(v);
		json_decref(v);
	}
	static const json_int_t ints[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN,
					   INT64_MIN + 1};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		json_t *v = json_integer(ints[i]);
		same_as_jansson(v);
		json_decref(v);
	}
}

static void test_strings_and_structure(void **state)
{
	(void)state;
	json_t *v = json_pack("{s:s, s:s, s:s, s:[i, f, b, n, {}, []], s:{s:{s:[[]]}}, s:b}", "plain", "dev-0001",
			      "esc", "q\"b\\s/n\nr\rt\tb\bf\f\x01\x1f end", "utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8c\xa1",
			      "arr", 3, 2.5, 1, "deep", "a", "b", "ok", 0);
	assert_non_null(v);
	json_object_set_new(v, "k\"ey\n", json_string("key needs escapes"));
	same_as_jansson(v);
	/* appending to a buffer that already holds text */
	tg_buf b = {0};
	assert_int_equal(jsonout_write(&b, v), 0);
	size_t first = b.len;
	assert_int_equal(jsonout_write(&b, v), 0);
	assert_int_equal(b.len, 2 * first);
	assert_memory_equal(b.p, b.p + first, first);
	free(b.p);
	json_decref(v);
}

static double rnd(unsigned *seed) { return (double)rand_r(seed) / RAND_MAX; }

static json_t *random_value(unsigned *seed, int depth)
{
	int kind = rand_r(seed) % (depth > 3 ? 6 : 8);
	switch (kind) {
	case 0: /* a reading with 2 decimals */
		return json_real(round((rnd(seed) * 2000 - 1000) * 100) / 100);
	case 1: /* any double, over a wide range of magnitudes */
		return json_real((rnd(seed) - 0.5) * pow(10, rand_r(seed) % 40 - 20));
	case 2: { /* raw bits (finite only) */
		uint64_t u = ((uint64_t)rand_r(seed) << 33) ^ ((uint64_t)rand_r(seed) << 11) ^ (uint64_t)rand_r(seed);
		double d;
		memcpy(&d, &u, sizeof d);
		return json_real(isfinite(d) ? d : 1.5);
	}
	case 3:
		return json_integer((json_int_t)(((uint64_t)rand_r(seed) << 32) ^ (uint64_t)rand_r(seed)) >>
				    (rand_r(seed) % 64));
	case 4: {
		char s[24];
		size_t n = (size_t)(rand_r(seed) % 20);
		for (size_t i = 0; i < n; i++)
			s[i] = (char)(rand_r(seed) % 3 == 0 ? rand_r(seed) % 0x20 + 1 : ' ' + rand_r(seed) % 95);
		s[n] = '\0';
		return json_string(s);
	}
	case 5:
		return rand_r(seed) % 3 == 0 ? json_null() : json_boolean(rand_r(seed) % 2);
	case 6: {
		json_t *o = json_object();
		int n = rand_r(seed) % 8;
		for (int i = 0; i < n; i++) {
			char k[16];
			snprintf(k, sizeof k, "k%d", rand_r(seed) % 50);
			json_object_set_new(o, k, random_value(seed, depth + 1));
		}
		return o;
	}
	default: {
		json_t *a = json_array();
		int n = rand_r(seed) % 6;
		for (int i = 0; i < n; i++)
			json_array_append_new(a, random_value(seed, depth + 1));
		return a;
	}
	}
}

static void test_random(void **state)
{
	(void)state;
	unsigned seed = 20261125;
	for (int i = 0; i < 20000; i++) {
		json_t *v = random_value(&seed, 0);
		assert_non_null(v);
		same_as_jansson(v);
		json_decref(v);
	}
}

static void test_errors(void **state)
{
	(void)state;
	tg_buf b = {0};
	assert_int_equal(jsonout_write(&b, NULL), TG_EINVAL);
	assert_int_equal(jsonout_write(NULL, json_null()), TG_EINVAL);
	json_t *deep = json_array();
	json_t *cur = deep;
	for (int i = 0; i < 3000; i++) {
		json_t *n = json_array();
		json_array_append_new(cur, n);
		cur = n;
	}
	assert_int_equal(jsonout_write(&b, deep), TG_EINVAL);
	assert_int_equal(b.len, 0); /* nothing half-written is left */
	json_decref(deep);
	free(b.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_strings_and_structure),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
