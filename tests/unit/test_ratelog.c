/*
 * test_ratelog.c — the rate-limited event reports behind the quarantine and refused-publish
 * log lines: at most one report per key and interval, the first at once, every event
 * counted, bounded memory that reports early rather than forgets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/ratelog.h"

typedef struct seen {
	int n;
	char key[64][32];
	int kind[64];
	uint64_t count[64];
	char ctx[64][64];
	uint64_t total;
} seen;

static void on_report(void *ud, const char *key, int kind, uint64_t count, const char *context)
{
	seen *S = ud;
	if (S->n < 64) {
		snprintf(S->key[S->n], sizeof S->key[0], "%s", key);
		S->kind[S->n] = kind;
		S->count[S->n] = count;
		snprintf(S->ctx[S->n], sizeof S->ctx[0], "%s", context);
		S->n++;
	}
	S->total += count;
}

static void test_once_per_interval_with_count(void **state)
{
	(void)state;
	seen S = {0};
	ratelog *rl = ratelog_new(16, 1000, on_report, &S);
	assert_non_null(rl);
	ratelog_hit(rl, "dev-1", 3, "first", 10000); /* reported at once */
	assert_int_equal(S.n, 1);
	assert_int_equal(S.count[0], 1);
	assert_string_equal(S.ctx[0], "first");
	for (int i = 0; i < 5; i++)
		ratelog_hit(rl, "dev-1", 3, i == 4 ? "last" : "middle", 10100 + i); /* counted */
	ratelog_hit(rl, "dev-1", 4, "other kind", 10200);                      /* its own key */
	ratelog_hit(rl, "dev-2", 3, "other thing", 10300);
	assert_int_equal(S.n, 3);
	ratelog_tick(rl, 10999); /* not yet a whole interval */
	assert_int_equal(S.n, 3);
	ratelog_tick(rl, 11000);
	assert_int_equal(S.n, 4);
	assert_string_equal(S.key[3], "dev-1");
	assert_int_equal(S.kind[3], 3);
	assert_int_equal(S.count[3], 5);
	assert_string_equal(S.ctx[3], "last");
	/* within the next interval: counted, and reported by the event that ends it */
	ratelog_hit(rl, "dev-1", 3, "a", 11500);
	assert_int_equal(S.n, 4);
	ratelog_hit(rl, "dev-1", 3, "b", 12000);
	assert_int_equal(S.n, 5);
	assert_int_equal(S.count[4], 2);
	/* a key quiet for a whole interval is forgotten: its next event reports at once */
	ratelog_tick(rl, 13500);
	ratelog_hit(rl, "dev-2", 3, "again", 13600);
	assert_int_equal(S.n, 6);
	assert_string_equal(S.key[5], "dev-2");
	assert_int_equal(S.count[5], 1);
	ratelog_hit(rl, "dev-2", 3, "pending at stop", 13700);
	ratelog_free(rl); /* reports what is still counted */
	assert_int_equal(S.n, 7);
	assert_int_equal(S.count[6], 1);
	assert_int_equal(S.total, 1 + 5 + 1 + 1 + 2 + 1 + 1); /* every event, once */
}

/* Many keys in a small table: slots are reused, counts are reported early, none lost. */
static void test_bounded_and_nothing_lost(void **state)
{
	(void)state;
	seen S = {0};
	ratelog *rl = ratelog_new(4, 60000, on_report, &S);
	assert_non_null(rl);
	uint64_t hits = 0;
	for (int round = 0; round < 3; round++)
		for (int k = 0; k < 12; k++) {
			char key[16];
			snprintf(key, sizeof key, "dev-%d", k);
			ratelog_hit(rl, key, 1, "", 1000 + round);
			hits++;
		}
	ratelog_free(rl);
	assert_int_equal(S.total, hits);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_once_per_interval_with_count),
		cmocka_unit_test(test_bounded_and_nothing_lost),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
