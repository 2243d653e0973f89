/*
 * test_topic.c — MQTT topic filters (gateway/core/topic.c): validity, a table of the spec's
 * corner cases, and a random differential test of the compiled matcher against the
 * uncompiled one and against the rules engine's trie (an independent implementation).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/topic.h"
#include "rules/rules_int.h"

static void test_valid(void **state)
{
	(void)state;
	static const char *const good[] = {"a", "a/b", "+", "#", "a/+/b", "a/#", "+/+", "/", "a//b", "$SYS/#", "/+"};
	static const char *const bad[] = {"", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "++", "##", "#/a"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		if (!tg_topic_filter_valid(good[i]))
			fail_msg("'%s' should be valid", good[i]);
		tg_topic_filter *f = tg_topic_filter_new(good[i]);
		assert_non_null(f);
		assert_string_equal(tg_topic_filter_text(f), good[i]);
		tg_topic_filter_free(f);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (tg_topic_filter_valid(bad[i]))
			fail_msg("'%s' should be invalid", bad[i]);
		assert_null(tg_topic_filter_new(bad[i]));
	}
	assert_int_equal(tg_topic_filter_valid(NULL), 0);
	assert_int_equal(tg_topic_filter_match(NULL, "a"), 0);
	tg_topic_filter_free(NULL);
}

static void test_table(void **state)
{
	(void)state;
	static const struct {
		const char *f, *t;
		int m;
	} cases[] = {
		{"devices/+/telemetry", "devices/dev-0001/telemetry", 1},
		{"devices/+/telemetry", "devices/dev-0001/telemetry/x", 0},
		{"devices/+/telemetry", "devices/telemetry", 0},
		{"devices/+/telemetry", "devices//telemetry", 1},
		{"devices/+/telemetry", "devices/dev-0001/telemetr", 0},
		{"devices/+/telemetry", "devices/dev-0001/telemetryx", 0},
		{"devices/#", "devices", 1},
		{"devices/#", "devices/", 1},
		{"devices/#", "devices/a/b/c", 1},
		{"devices/#", "device", 0},
		{"devices/#", "devicesx", 0},
		{"#", "a/b", 1},
		{"#", "$SYS/x", 0},
		{"+/x", "$SYS/x", 0},
		{"$SYS/#", "$SYS/x", 1},
		{"a/b", "a/b", 1},
		{"a/b", "a/bc", 0},
		{"a/bc", "a/b", 0},
		{"a/b", "a", 0},
		{"a/b", "a/b/", 0},
		{"+", "a", 1},
		{"+", "", 1},
		{"+", "a/b", 0},
		{"+/+", "a/b", 1},
		{"+/+", "/", 1},
		{"/+", "/x", 1},
		{"a//b", "a//b", 1},
		{"a//b", "a/b", 0},
		{"a/+/#", "a/b", 1},
		{"a/+/#", "a", 0},
		{"a/+/#", "a/b/c/d", 1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tg_topic_filter *f = tg_topic_filter_new(cases[i].f);
		assert_non_null(f);
		if (tg_topic_filter_match(f, cases[i].t) != cases[i].m)
			fail_msg("compiled: filter '%s' topic '%s': expected %d", cases[i].f, cases[i].t, cases[i].m);
		if (tg_topic_match(cases[i].f, cases[i].t) != cases[i].m)
			fail_msg("uncompiled: filter '%s' topic '%s': expected %d", cases[i].f, cases[i].t, cases[i].m);
		if (rules_topic_matches(cases[i].f, cases[i].t) != cases[i].m)
			fail_msg("trie: filter '%s' topic '%s': expected %d", cases[i].f, cases[i].t, cases[i].m);
		tg_topic_filter_free(f);
	}
}

/* Random levels over a tiny alphabet, so equal and near-equal levels are frequent. */
static void random_levels(unsigned *seed, char *out, size_t cap, int filter)
{
	static const char *const lv[] = {"a", "b", "ab", "", "$S", "dev-1"};
	int n = 1 + (int)(rand_r(seed) % 5);
	size_t len = 0;
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		const char *l = lv[rand_r(seed) % 6];
		if (filter) {
			unsigned r = rand_r(seed) % 8;
			if (r == 0)
				l = "+";
			else if (r == 1 && i == n - 1)
				l = "#";
		}
		len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "/" : "", l);
	}
}

static void test_random_agreement(void **state)
{
	(void)state;
	unsigned seed = 7;
	char fs[128], ts[128];
	long matches = 0;
	for (int i = 0; i < 40000; i++) {
		random_levels(&seed, fs, sizeof fs, 1);
		random_levels(&seed, ts, sizeof ts, 0);
		if (!tg_topic_filter_valid(fs))
			continue;
		tg_topic_filter *f = tg_topic_filter_new(fs);
		assert_non_null(f);
		int a = tg_topic_filter_match(f, ts), b = tg_topic_match(fs, ts), c = rules_topic_matches(fs, ts);
		if (a != b || a != c)
			fail_msg("filter '%s' topic '%s': compiled %d, uncompiled %d, trie %d", fs, ts, a, b, c);
		matches += a;
		tg_topic_filter_free(f);
	}
	assert_true(matches > 1000); /* the generator does produce matches */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_random_agreement),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
