/*
 * test_alerts.c — the alert state machine: `for` counts and durations, clear and hysteresis,
 * rate limiting, the message contents, persistence across a close/reopen, and that the
 * database is written only on state changes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "alerts/alerts.h"
#include "core/err.h"
#include "core/hash.h"

struct sink {
	json_t *events; /* array of emitted alert messages */
	int fail;
	char last_topic[64];
};

static int collect(void *ud, const alerts_event *ev)
{
	struct sink *s = ud;
	assert_string_equal(json_string_value(json_object_get(ev->json, "thing")), ev->thing);
	assert_string_equal(json_string_value(json_object_get(ev->json, "alert")), ev->alert);
	json_array_append(s->events, ev->json);
	snprintf(s->last_topic, sizeof s->last_topic, "%s", ev->topic ? ev->topic : "(null)");
	return s->fail ? -1 : 0;
}

struct fx {
	char dir[64], db[128];
	struct sink sink;
	alerts *a;
};

static alerts *reopen(struct fx *f)
{
	alerts_close(f->a);
	char err[256];
	alerts_conf c = {.db_path = f->db, .emit = collect, .ud = &f->sink};
	f->a = alerts_open(&c, err, sizeof err);
	if (!f->a)
		fail_msg("open: %s", err);
	return f->a;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/test_alerts_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof f->db, "%s/alerts.db", f->dir);
	f->sink.events = json_array();
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	alerts_close(f->a);
	json_decref(f->sink.events);
	char p[192];
	const char *suffix[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", f->db, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static json_t *params(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad params %s", text);
	return j;
}

static int report(struct fx *f, const char *thing, rules_alert_cond c, double value, int64_t ts,
		  int64_t now, const json_t *p)
{
	json_t *payload = json_pack("{sf}", "temperature", value);
	alerts_input in = {.rule = "temp_rule", .alert = "high_temp", .thing = thing, .cond = c,
			   .payload = payload, .params = p, .ts_ms = ts};
	int rc = alerts_report(f->a, &in, now);
	json_decref(payload);
	return rc;
}

static size_t nevents(struct fx *f) { return json_array_size(f->sink.events); }
static const char *ev_state(struct fx *f, size_t i)
{
	return json_string_value(json_object_get(json_array_get(f->sink.events, i), "state"));
}

/* alerts_idle says "a non-raising report changes nothing" exactly when the key is unknown
 * or OK, with and without the precomputed (rule, alert) prefix, across a restart. */
static void test_idle(void **state)
{
	struct fx *f = *state;
	uint64_t pre = tg_hash_str(tg_hash_str(TG_HASH_SEED, "temp_rule"), "high_temp");
	json_t *p = params("{\"for\":2,\"clear\":\"temperature < 27\"}");
#define IDLE(thing) (alerts_idle(f->a, "temp_rule", "high_temp", 0, thing))
#define IDLE_PRE(thing) (alerts_idle(f->a, "temp_rule", "high_temp", pre, thing))
	assert_int_equal(IDLE("d1"), 1);
	assert_int_equal(IDLE_PRE("d1"), 1);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 1000, 1100, p), ALERTS_NOCHANGE); /* pending */
	assert_int_equal(IDLE("d1"), 0);
	assert_int_equal(IDLE_PRE("d1"), 0);
	assert_int_equal(IDLE("d2"), 1);
	assert_int_equal(alerts_idle(f->a, "temp_rule", "other", 0, "d1"), 1);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 30, 2000, 2100, p), ALERTS_RAISED);
	assert_int_equal(IDLE_PRE("d1"), 0);
	reopen(f);
	assert_int_equal(IDLE_PRE("d1"), 0); /* raised survives the restart */
	assert_int_equal(report(f, "d1", RULES_ALERT_NONE, 28, 3000, 3100, p), ALERTS_NOCHANGE);
	assert_int_equal(IDLE("d1"), 0);
	assert_int_equal(report(f, "d1", RULES_ALERT_CLEAR, 26, 4000, 4100, p), ALERTS_CLEARED);
	assert_int_equal(IDLE("d1"), 1);
	assert_int_equal(IDLE_PRE("d1"), 1);
	/* many things: only the pending one is not idle */
	char thing[16];
	for (int i = 0; i < 2000; i++) {
		snprintf(thing, sizeof thing, "t%d", i);
		if (i == 777)
			report(f, thing, RULES_ALERT_RAISE, 29, 5000, 5100, p);
	}
	for (int i = 0; i < 2000; i++) {
		snprintf(thing, sizeof thing, "t%d", i);
		assert_int_equal(IDLE_PRE(thing), i != 777);
	}
	assert_int_equal(alerts_idle(NULL, "r", "a", 0, "t"), 0);
#undef IDLE
#undef IDLE_PRE
	json_decref(p);
}

static void test_for_count_and_clear(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"severity\":\"critical\",\"for\":3,\"clear\":\"temperature < 27\"}");
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 1000, 1100, p), ALERTS_NOCHANGE);
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "d1"), ALERTS_STATE_PENDING);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 30, 2000, 2100, p), ALERTS_NOCHANGE);
	assert_int_equal(nevents(f), 0);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 31, 3000, 3100, p), ALERTS_RAISED);
	assert_int_equal(nevents(f), 1);
	assert_string_equal(f->sink.last_topic, "(null)");
	json_t *m = json_array_get(f->sink.events, 0);
	assert_string_equal(ev_state(f, 0), "raised");
	assert_string_equal(json_string_value(json_object_get(m, "rule")), "temp_rule");
	assert_string_equal(json_string_value(json_object_get(m, "severity")), "critical");
	assert_int_equal(json_integer_value(json_object_get(m, "first_trigger_ts")), 1000);
	assert_int_equal(json_integer_value(json_object_get(m, "last_trigger_ts")), 3000);
	assert_int_equal(json_integer_value(json_object_get(m, "raised_at")), 3100);
	assert_int_equal(json_integer_value(json_object_get(m, "matches")), 3);
	assert_float_equal(json_real_value(json_object_get(json_object_get(m, "value"), "temperature")),
			   31.0, 0);
	assert_null(json_object_get(m, "cleared_at"));
	/* more raises, and NONE (the hysteresis band), change nothing and emit nothing */
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 32, 4000, 4100, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "d1", RULES_ALERT_NONE, 27.5, 5000, 5100, p), ALERTS_NOCHANGE);
	assert_int_equal(nevents(f), 1);
	assert_int_equal(report(f, "d1", RULES_ALERT_CLEAR, 26, 6000, 6100, p), ALERTS_CLEARED);
	assert_int_equal(nevents(f), 2);
	m = json_array_get(f->sink.events, 1);
	assert_string_equal(ev_state(f, 1), "cleared");
	assert_int_equal(json_integer_value(json_object_get(m, "cleared_at")), 6100);
	assert_int_equal(json_integer_value(json_object_get(m, "raised_at")), 3100);
	assert_int_equal(report(f, "d1", RULES_ALERT_CLEAR, 25, 7000, 7100, p), ALERTS_NOCHANGE);
	assert_int_equal(nevents(f), 2);
	/* another thing is independent */
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "d2"), ALERTS_STATE_OK);
	alerts_stats st;
	alerts_get_stats(f->a, &st);
	assert_int_equal(st.raised, 1);
	assert_int_equal(st.cleared, 1);
	assert_int_equal(st.active, 0);
	json_decref(p);
}

static void test_consecutive_broken(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"for\":3,\"clear\":\"x\"}");
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 1, 1, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 2, 2, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "d1", RULES_ALERT_NONE, 27.5, 3, 3, p), ALERTS_NOCHANGE);
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "d1"), ALERTS_STATE_OK);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 4, 4, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 5, 5, p), ALERTS_NOCHANGE);
	assert_int_equal(nevents(f), 0);
	assert_int_equal(report(f, "d1", RULES_ALERT_RAISE, 29, 6, 6, p), ALERTS_RAISED);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(f->sink.events, 0),
							    "first_trigger_ts")), 4);
	json_decref(p);
}

static void test_for_duration(void **state)
{
	struct fx *f = *state;
	const char *variants[] = {"{\"forSeconds\":30}", "{\"for\":\"30s\"}", "{\"for\":\"0.5m\"}"};
	for (int v = 0; v < 3; v++) {
		char thing[16];
		snprintf(thing, sizeof thing, "t%d", v);
		json_t *p = params(variants[v]);
		size_t before = nevents(f);
		int64_t base = 1764088200000LL;
		for (int i = 0; i < 3; i++) /* 0, 10, 20 s: not yet */
			assert_int_equal(report(f, thing, RULES_ALERT_RAISE, 29, base + i * 10000,
						base + i * 10000 + 5, p), ALERTS_NOCHANGE);
		assert_int_equal(report(f, thing, RULES_ALERT_RAISE, 29, base + 29999, base + 30000, p),
				 ALERTS_NOCHANGE);
		assert_int_equal(report(f, thing, RULES_ALERT_RAISE, 29, base + 30000, base + 30005, p),
				 ALERTS_RAISED);
		assert_int_equal(nevents(f), before + 1);
		json_decref(p);
	}
}

/* A stand-in for the rules engine: WHERE temperature > 28, clear temperature < 27. */
static rules_alert_cond engine(double t)
{
	return t > 28 ? RULES_ALERT_RAISE : t < 27 ? RULES_ALERT_CLEAR : RULES_ALERT_NONE;
}

static void test_hysteresis_and_no_clear(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"clear\":\"temperature < 27\"}");
	const double temps[] = {25, 29, 27.5, 28.5, 27.1, 26.9, 27.5, 28, 29, 30, 26};
	const char *want = "RCRC"; /* raise at 29, clear at 26.9, raise at 29, clear at 26 */
	for (size_t i = 0; i < sizeof temps / sizeof temps[0]; i++)
		assert_true(report(f, "h", engine(temps[i]), temps[i], (int64_t)i, (int64_t)i, p) >= 0);
	assert_int_equal(nevents(f), strlen(want));
	for (size_t i = 0; i < strlen(want); i++)
		assert_string_equal(ev_state(f, i), want[i] == 'R' ? "raised" : "cleared");
	json_decref(p);
	/* without a clear expression, WHERE turning false (NONE) clears */
	json_t *q = params("{}");
	assert_int_equal(report(f, "n", RULES_ALERT_RAISE, 29, 1, 1, q), ALERTS_RAISED);
	assert_int_equal(report(f, "n", RULES_ALERT_NONE, 20, 2, 2, q), ALERTS_CLEARED);
	json_decref(q);
}

static void test_rate_limit(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"rateLimitSeconds\":60,\"clear\":\"c\"}");
	assert_int_equal(report(f, "r", RULES_ALERT_RAISE, 29, 0, 1000, p), ALERTS_RAISED);
	assert_int_equal(report(f, "r", RULES_ALERT_CLEAR, 20, 0, 2000, p), ALERTS_CLEARED);
	/* flapping within the minute: raised silently, and its clear is silent too */
	assert_int_equal(report(f, "r", RULES_ALERT_RAISE, 29, 0, 3000, p), ALERTS_SUPPRESSED);
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "r"), ALERTS_STATE_RAISED);
	assert_int_equal(report(f, "r", RULES_ALERT_CLEAR, 20, 0, 4000, p), ALERTS_SUPPRESSED);
	assert_int_equal(nevents(f), 2);
	/* the limit survives a restart */
	reopen(f);
	assert_int_equal(report(f, "r", RULES_ALERT_RAISE, 29, 0, 60999, p), ALERTS_SUPPRESSED);
	assert_int_equal(report(f, "r", RULES_ALERT_CLEAR, 20, 0, 61000, p), ALERTS_SUPPRESSED);
	assert_int_equal(report(f, "r", RULES_ALERT_RAISE, 29, 0, 61001, p), ALERTS_RAISED);
	assert_int_equal(nevents(f), 3);
	alerts_stats st;
	alerts_get_stats(f->a, &st);
	assert_int_equal(st.suppressed, 2); /* counters are per process, not persisted */
	json_decref(p);
}

static int64_t row_updated(struct fx *f, const char *thing)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;
	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT updated_ms FROM alert_state WHERE thing = ?",
					    -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void test_restart(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"clear\":\"c\",\"severity\":\"minor\"}");
	json_t *slow = params("{\"forSeconds\":100,\"clear\":\"c\"}");
	assert_int_equal(report(f, "a", RULES_ALERT_RAISE, 29, 500, 1000, p), ALERTS_RAISED);
	assert_int_equal(row_updated(f, "a"), 1000);
	/* reports that change nothing do not touch the database */
	assert_int_equal(report(f, "a", RULES_ALERT_RAISE, 30, 1500, 2000, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "a", RULES_ALERT_NONE, 27.5, 1600, 2100, p), ALERTS_NOCHANGE);
	assert_int_equal(row_updated(f, "a"), 1000);
	assert_int_equal(report(f, "b", RULES_ALERT_RAISE, 29, 10000, 10000, slow), ALERTS_NOCHANGE);
	assert_int_equal(row_updated(f, "b"), 10000);
	/* still pending (waiting out forSeconds; the count of 1 is already met): no write */
	assert_int_equal(report(f, "b", RULES_ALERT_RAISE, 29, 50000, 50000, slow), ALERTS_NOCHANGE);
	assert_int_equal(row_updated(f, "b"), 10000);
	assert_int_equal(row_updated(f, "nobody"), -1);

	reopen(f); /* "restart" */
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "a"), ALERTS_STATE_RAISED);
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "b"), ALERTS_STATE_PENDING);
	alerts_stats st;
	alerts_get_stats(f->a, &st);
	assert_int_equal(st.active, 1);
	assert_int_equal(st.pending, 1);
	/* still raised: another raise emits nothing; the clear emits exactly once */
	assert_int_equal(report(f, "a", RULES_ALERT_RAISE, 31, 3000, 3000, p), ALERTS_NOCHANGE);
	assert_int_equal(report(f, "a", RULES_ALERT_CLEAR, 20, 4000, 4000, p), ALERTS_CLEARED);
	json_t *m = json_array_get(f->sink.events, nevents(f) - 1);
	assert_string_equal(json_string_value(json_object_get(m, "state")), "cleared");
	assert_int_equal(json_integer_value(json_object_get(m, "raised_at")), 1000);
	assert_int_equal(json_integer_value(json_object_get(m, "first_trigger_ts")), 500);
	assert_string_equal(json_string_value(json_object_get(m, "severity")), "minor");
	/* the pending duration counts from the first trigger before the restart */
	assert_int_equal(report(f, "b", RULES_ALERT_RAISE, 29, 110000, 110000, slow), ALERTS_RAISED);
	size_t n = 0;
	json_t *ev;
	size_t i;
	json_array_foreach(f->sink.events, i, ev) n++;
	assert_int_equal(n, 3);
	json_decref(p);
	json_decref(slow);
}

/* Many things: the key table grows from its initial 64 buckets, the "active" cells that let a
 * non-raising report skip the lookup stay exact (including for keys loaded at restart), and
 * a report with the rules engine's precomputed key_prefix finds the same key as one without. */
static void test_many_keys_and_prefix(void **state)
{
	struct fx *f = *state;
	json_t *p = params("{\"clear\":\"c\"}");
	const uint64_t prefix = tg_hash_str(tg_hash_str(TG_HASH_SEED, "temp_rule"), "high_temp");
	enum { N = 5000 };
	char thing[32];
	for (int i = 0; i < N; i++) { /* every third thing raises, via the prefix path */
		snprintf(thing, sizeof thing, "thing-%05d", i);
		json_t *payload = json_pack("{sf}", "temperature", 30.0);
		alerts_input in = {.rule = "temp_rule", .alert = "high_temp", .thing = thing,
				   .cond = i % 3 == 0 ? RULES_ALERT_RAISE : RULES_ALERT_CLEAR,
				   .payload = payload, .params = p, .ts_ms = 1000 + i, .key_prefix = prefix};
		assert_int_equal(alerts_report(f->a, &in, 1000 + i), i % 3 == 0 ? ALERTS_RAISED : ALERTS_NOCHANGE);
		json_decref(payload);
	}
	assert_int_equal(nevents(f), (N + 2) / 3);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < N; i++) {
			snprintf(thing, sizeof thing, "thing-%05d", i);
			assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", thing),
					 i % 3 == 0 ? ALERTS_STATE_RAISED : ALERTS_STATE_OK);
		}
		alerts_stats st;
		alerts_get_stats(f->a, &st);
		assert_int_equal(st.active, (N + 2) / 3);
		reopen(f); /* the second pass checks what was loaded back */
	}
	/* after the restart, a clear without the prefix reaches every raised key: none is
	 * skipped by the active cells */
	size_t before = nevents(f);
	for (int i = 0; i < N; i++) {
		snprintf(thing, sizeof thing, "thing-%05d", i);
		assert_int_equal(report(f, thing, RULES_ALERT_CLEAR, 20, 9000, 9000, p),
				 i % 3 == 0 ? ALERTS_CLEARED : ALERTS_NOCHANGE);
	}
	assert_int_equal(nevents(f) - before, (N + 2) / 3);
	alerts_stats st;
	alerts_get_stats(f->a, &st);
	assert_int_equal(st.active, 0);
	json_decref(p);
}

static void count_visit(void *ud, const char *rule, const char *alert, const char *thing,
			alerts_state s, int64_t raised_at)
{
	(void)rule;
	(void)alert;
	(void)raised_at;
	int *n = ud;
	if (s == ALERTS_STATE_RAISED && strcmp(thing, "v") == 0)
		(*n)++;
}

static void test_errors_and_on_action(void **state)
{
	struct fx *f = *state;
	const char *bad[] = {"{\"for\":0}", "{\"for\":\"soon\"}", "{\"severity\":\"apocalyptic\"}",
			     "{\"forSeconds\":-1}", "{\"rateLimitSeconds\":\"x\"}", "[]"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *p = params(bad[i]);
		if (report(f, "e", RULES_ALERT_RAISE, 29, 1, 1, p) != TG_EINVAL)
			fail_msg("params %s accepted", bad[i]);
		json_decref(p);
	}
	alerts_input in = {.rule = "r", .alert = NULL, .thing = "t"};
	assert_int_equal(alerts_report(f->a, &in, 1), TG_EINVAL);

	/* through the rules-engine shaped entry point */
	json_t *payload = json_pack("{sf}", "temperature", 29.5);
	json_t *prm = params("{\"name\":\"high_temp\",\"clear\":\"temperature < 27\"}");
	json_t *msgjson = json_pack("{sI}", "ts", (json_int_t)123456);
	rules_action_out act = {.rule = "temp_rule", .kind = RULES_ACT_ALERT, .payload = payload,
				.alert_name = "high_temp", .alert_cond = RULES_ALERT_RAISE,
				.params = prm, .topic = "alerts/v/custom"};
	tg_msg m = {.topic = "devices/v/telemetry", .thing = "v", .json = msgjson, .received_ms = 999};
	assert_int_equal(alerts_on_action(f->a, &act, &m, 200000), ALERTS_RAISED);
	assert_string_equal(f->sink.last_topic, "alerts/v/custom");
	json_t *ev = json_array_get(f->sink.events, nevents(f) - 1);
	assert_int_equal(json_integer_value(json_object_get(ev, "first_trigger_ts")), 123456);
	int visited = 0;
	alerts_foreach(f->a, count_visit, &visited);
	assert_int_equal(visited, 1);
	act.kind = RULES_ACT_SINK;
	assert_int_equal(alerts_on_action(f->a, &act, &m, 200001), TG_EINVAL);

	/* an emit failure is reported so the rule's errorAction can run */
	f->sink.fail = 1;
	act.kind = RULES_ACT_ALERT;
	act.alert_cond = RULES_ALERT_CLEAR;
	assert_int_equal(alerts_on_action(f->a, &act, &m, 200002), TG_EIO);
	alerts_stats st;
	alerts_get_stats(f->a, &st);
	assert_int_equal(st.emit_errors, 1);
	assert_int_equal(alerts_get_state(f->a, "temp_rule", "high_temp", "v"), ALERTS_STATE_OK);
	json_decref(payload);
	json_decref(prm);
	json_decref(msgjson);

	char err[256];
	alerts_conf c = {.db_path = "/nonexistent/dir/a.db", .emit = collect};
	assert_null(alerts_open(&c, err, sizeof err));
	c.db_path = NULL;
	assert_null(alerts_open(&c, err, sizeof err));
	alerts_close(NULL);
}

static void test_newer_schema_refused(void **state)
{
	struct fx *f = *state;
	alerts_close(f->a);
	f->a = NULL;
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	char err[256];
	alerts_conf c = {.db_path = f->db, .emit = collect, .ud = &f->sink};
	assert_null(alerts_open(&c, err, sizeof err));
	assert_non_null(strstr(err, "newer"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_for_count_and_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consecutive_broken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_for_duration, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hysteresis_and_no_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_keys_and_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_and_on_action, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
