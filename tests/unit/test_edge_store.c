/*
 * test_edge_store.c — the edge state in the outbox database: what a committed group held
 * comes back after a restart and what an uncommitted one held does not; a rolled-back
 * group takes its readings and window changes back out of memory; a window that closed
 * while the daemon was down is emitted once at start with its own bounds; a changed
 * aggregate's windows are dropped; the journal stays bounded. A "crash" is the
 * open group rolled back and everything freed without the clean stop's work, which is
 * what the database holds after a kill -9. A real outbox on a temp dir throughout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "edge/aggregate.h"
#include "edge/dedupe.h"
#include "store/edge_store.h"
#include "core/err.h"
#include "store/outbox.h"
#include "test_util.h"

#define T0 1764088200000LL /* a minute boundary */
#define WINDOW_MS 600000

static const char *AGG = "{\"aggregates\":[{\"name\":\"m\",\"topic\":\"devices/+/telemetry\","
			 "\"windowSeconds\":60,\"graceSeconds\":10,"
			 "\"fields\":{\"temperature\":[\"avg\",\"min\",\"max\",\"count\"]}}]}";

typedef struct world {
	char *dir;
	outbox *ob;
	dedupe *dd;
	aggregate_set *agg;
	edge_store *es;
	edge_store_restored er;
	json_t *wins; /* emitted windows */
} world;

static int on_window(void *ud, const aggregate_window *w)
{
	world *wd = ud;
	json_array_append(wd->wins, w->json);
	return 0;
}

static void start(world *w, const char *agg_conf, int64_t now)
{
	char path[4200], err[512];
	snprintf(path, sizeof path, "%s/outbox.db", w->dir);
	outbox_opts o = {.commit_interval_ms = 5, .commit_max_records = 100, .gateway_id = "gw"};
	w->ob = outbox_open(path, &o, err, sizeof err);
	if (!w->ob)
		fail_msg("%s", err);
	dedupe_conf dc = {.window_ms = WINDOW_MS, .per_thing = 256, .max_things = 1000};
	w->dd = dedupe_new(&dc, err, sizeof err);
	assert_non_null(w->dd);
	w->wins = json_array();
	w->agg = aggregate_load_buffer("agg.json", agg_conf, strlen(agg_conf), on_window, w, err, sizeof err);
	if (!w->agg)
		fail_msg("%s", err);
	w->es = edge_store_open(w->ob, w->dd, w->agg, 1, now, &w->er, err, sizeof err);
	if (!w->es)
		fail_msg("%s", err);
}

/* crash 1: what is not committed is lost, nothing is flushed */
static void crash(world *w)
{
	outbox_abort(w->ob);
	edge_store_close(w->es);
	outbox_close(w->ob);
	dedupe_free(w->dd);
	aggregate_free(w->agg);
	json_decref(w->wins);
	w->es = NULL;
}

/* One message: dedupe, aggregate, and a record in the open group, as ingest does. Returns
 * dedupe_check's answer. */
static int message(world *w, const char *thing, int64_t ts, double temp, int64_t now)
{
	int dup = dedupe_check(w->dd, thing, ts, now);
	if (dup == 0) {
		json_t *m = json_pack("{s:I, s:f}", "ts", (json_int_t)ts, "temperature", temp);
		char topic[128];
		snprintf(topic, sizeof topic, "devices/%s/telemetry", thing);
		aggregate_add(w->agg, topic, thing, m, &ts, now, now);
		const char *sinks[] = {"lake"};
		assert_int_equal(outbox_append(w->ob, sinks, 1, OUTBOX_PRIO_BULK, "telemetry", thing, now, m, NULL), 0);
		json_decref(m);
	}
	return dup;
}

static int64_t count_rows(world *w, const char *sql)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(outbox_writer_db(w->ob), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static int setup(void **state)
{
	world *w = calloc(1, sizeof *w);
	w->dir = tu_tmpdir();
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	world *w = *state;
	if (w->es)
		crash(w);
	tu_rmtree(w->dir);
	free(w->dir);
	free(w);
	return 0;
}

static void test_dedupe_survives_a_crash(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1, 20, T0 + 10), 0);
	assert_int_equal(message(w, "a", T0 + 2, 21, T0 + 11), 0);
	assert_int_equal(message(w, "b", T0 + 1, 22, T0 + 12), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	assert_int_equal(message(w, "a", T0 + 3, 23, T0 + 20), 0); /* never committed */
	crash(w);
	start(w, AGG, T0 + 1000);
	assert_int_equal(w->er.things, 2);
	assert_int_equal(w->er.readings, 3);
	assert_int_equal(message(w, "a", T0 + 1, 20, T0 + 1000), 1); /* the resend across the crash */
	assert_int_equal(message(w, "a", T0 + 2, 21, T0 + 1001), 1);
	assert_int_equal(message(w, "b", T0 + 1, 22, T0 + 1002), 1);
	assert_int_equal(message(w, "a", T0 + 3, 23, T0 + 1003), 0); /* its group was lost: new */
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	/* outside the window at the next start: forgotten, and the rows pruned */
	start(w, AGG, T0 + 1003 + WINDOW_MS + 1);
	assert_int_equal(w->er.readings, 0);
	assert_int_equal(w->er.things, 0);
	assert_int_equal(message(w, "a", T0 + 3, 23, T0 + 1003 + WINDOW_MS + 2), 0);
}

static void test_rollback_takes_changes_back(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1000, 10, T0 + 1000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	assert_int_equal(message(w, "a", T0 + 2000, 99, T0 + 2000), 0);
	outbox_abort(w->ob); /* e.g. disk full: the broker delivers the message again */
	assert_int_equal(message(w, "a", T0 + 2000, 30, T0 + 2001), 0); /* not a duplicate of itself */
	assert_int_equal(outbox_commit(w->ob), 0);
	assert_int_equal(aggregate_tick(w->agg, T0 + 70000), 1);
	json_t *win = json_array_get(w->wins, 0);
	assert_int_equal(json_integer_value(json_object_get(win, "count")), 2); /* not 3: the 99 was undone */
	assert_float_equal(json_real_value(json_object_get(win, "temperature_max")), 30.0, 1e-9);
	assert_int_equal(outbox_join(w->ob, T0 + 70000), 0); /* ingest's tick opens a group for it */
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	start(w, AGG, T0 + 80000);
	assert_int_equal(w->er.keys, 0); /* emitted: gone */
	assert_int_equal(w->er.readings, 2);
}

static void test_window_continues_across_a_crash(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1000, 10, T0 + 1000), 0);
	assert_int_equal(message(w, "a", T0 + 2000, 20, T0 + 2000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	start(w, AGG, T0 + 30000); /* back within the window */
	assert_int_equal(w->er.keys, 1);
	assert_int_equal(aggregate_tick(w->agg, T0 + 30000), 0);
	assert_int_equal(message(w, "a", T0 + 30000, 60, T0 + 30000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	assert_int_equal(aggregate_tick(w->agg, T0 + 70000), 1);
	assert_int_equal(json_array_size(w->wins), 1);
	json_t *win = json_array_get(w->wins, 0);
	assert_int_equal(json_integer_value(json_object_get(win, "count")), 3);
	assert_float_equal(json_real_value(json_object_get(win, "temperature_avg")), 30.0, 1e-9);
	assert_float_equal(json_real_value(json_object_get(win, "temperature_min")), 10.0, 1e-9);
	assert_int_equal(json_integer_value(json_object_get(win, "window_start")), T0);
	assert_int_equal(json_integer_value(json_object_get(win, "window_end")), T0 + 60000);
}

static void test_window_closed_meanwhile_emitted_once(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1000, 10, T0 + 1000), 0);
	assert_int_equal(message(w, "b", T0 + 2000, 12, T0 + 2000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	/* down for five minutes: both windows closed meanwhile */
	start(w, AGG, T0 + 300000);
	assert_int_equal(w->er.keys, 2);
	assert_int_equal(aggregate_tick(w->agg, T0 + 300000), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *win = json_array_get(w->wins, i);
		assert_int_equal(json_integer_value(json_object_get(win, "window_start")), T0);
		assert_int_equal(json_integer_value(json_object_get(win, "window_end")), T0 + 60000);
		assert_int_equal(json_integer_value(json_object_get(win, "count")), 1);
	}
	/* the emitted windows go into the outbox with the deletion of their state, in one group */
	const char *sinks[] = {"lake"};
	for (size_t i = 0; i < 2; i++) {
		json_t *rec = json_copy(json_array_get(w->wins, i));
		assert_int_equal(outbox_append(w->ob, sinks, 1, OUTBOX_PRIO_AGGREGATE, "aggregates", "a", T0 + 300000, rec, NULL), 0);
		json_decref(rec);
	}
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	start(w, AGG, T0 + 400000); /* a second restart emits nothing again */
	assert_int_equal(w->er.keys, 0);
	assert_int_equal(aggregate_tick(w->agg, T0 + 400000), 0);
	assert_int_equal(json_array_size(w->wins), 0);
}

static void test_changed_aggregate_dropped(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1000, 10, T0 + 1000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	const char *other = "{\"aggregates\":[{\"name\":\"m\",\"topic\":\"devices/+/telemetry\","
			    "\"windowSeconds\":60,\"graceSeconds\":10,"
			    "\"fields\":{\"temperature\":[\"sum\"]}}]}";
	start(w, other, T0 + 2000);
	assert_int_equal(w->er.keys, 0);
	assert_int_equal(w->er.keys_dropped, 1);
	assert_int_equal(aggregate_tick(w->agg, T0 + 300000), 0);
	crash(w);
	start(w, other, T0 + 3000); /* the start's snapshot left them out for good */
	assert_int_equal(w->er.keys_dropped, 0);
}

static void test_journal_bounded(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	/* a reading of each of 6 things per group for 12,000 groups: past 1 MiB of journal a
	 * snapshot replaces it */
	int64_t now = T0;
	char thing[8];
	for (int i = 0; i < 12000; i++) {
		now = T0 + 1000 + i * 10;
		for (int k = 0; k < 6; k++) {
			snprintf(thing, sizeof thing, "t%d", k);
			assert_int_equal(dedupe_check(w->dd, thing, now, now), 0);
		}
		assert_int_equal(outbox_join(w->ob, now), 0);
		assert_int_equal(outbox_commit(w->ob), 0);
	}
	int64_t bytes = count_rows(w, "SELECT coalesce(sum(length(data)), 0) FROM edge_log");
	assert_true(bytes <= (1 << 20) + 6 * (256 * 16 + 64));
	assert_true(count_rows(w, "SELECT value FROM edge_meta WHERE key = 'snapshot'") > 1);
	crash(w);
	start(w, AGG, now);
	/* each ring holds the last 256: the newest is a duplicate, the oldest kept too, one before not */
	assert_int_equal(message(w, "t3", T0 + 1000 + 11999 * 10, 20, now + 1), 1);
	assert_int_equal(message(w, "t3", T0 + 1000 + (11999 - 255) * 10, 20, now + 2), 1);
	assert_int_equal(message(w, "t3", T0 + 1000 + (11999 - 256) * 10, 20, now + 3), 0);
}

static void test_persist_off_clears(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	assert_int_equal(message(w, "a", T0 + 1000, 10, T0 + 1000), 0);
	assert_int_equal(outbox_commit(w->ob), 0);
	crash(w);
	start(w, AGG, T0 + 2000);
	edge_store_close(w->es); /* reopen with persistence off */
	char err[256];
	assert_int_equal(dedupe_check(w->dd, "x", 1, T0 + 2000), 0);
	w->es = edge_store_open(w->ob, w->dd, w->agg, 0, T0 + 2000, &w->er, err, sizeof err);
	assert_non_null(w->es);
	assert_int_equal(count_rows(w, "SELECT count(*) FROM edge_log"), 0);
}

static void test_memory_per_thing(void **state)
{
	world *w = *state;
	start(w, AGG, T0);
	size_t d0 = dedupe_memory(w->dd), a0 = aggregate_memory(w->agg);
	char thing[32];
	for (int i = 0; i < 1000; i++) { /* a thing that sent two messages */
		snprintf(thing, sizeof thing, "dev-%05d", i);
		message(w, thing, T0 + 1000, 20, T0 + 1000);
		message(w, thing, T0 + 2000, 21, T0 + 2000);
	}
	size_t per = (dedupe_memory(w->dd) - d0 + aggregate_memory(w->agg) - a0) / 1000;
	print_message("edge state per thing (dedupe + aggregate, two messages): %zu bytes\n", per);
	assert_true(per <= 640); /* leaves room under 1 KiB for the allocator's overhead */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dedupe_survives_a_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback_takes_changes_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_continues_across_a_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_closed_meanwhile_emitted_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changed_aggregate_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persist_off_clears, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_per_thing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
