/*
 * test_rules.c — unit tests of the rules engine around the SQL: the topic trie, rule
 * files and their file:line:col errors (escapes, multi-line files, templates, alert
 * conditions), actions and their fields, alert conditions, errorAction, rule
 * independence, MQTT v5 properties, the registry hook, the regex match limit, the CLI
 * (`rules check`, `rules test`) and every shipped rule in rules/ and rules/examples/.
 * The SQL semantics themselves are covered by test_rules_conformance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>

#include <cmocka.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "core/err.h"
#include "core/hash.h"
#include "rules/rules.h"
#include "rules/rules_int.h"

/* ---- helpers ------------------------------------------------------------------------- */
typedef struct rec {
	char rule[64];
	rules_action_kind kind;
	int is_error;
	json_t *payload;
	json_t *params;
	char topic[256], sink[64], pkey[128], table[64], alert[64], url[256];
	int qos;
	rules_alert_cond cond;
} rec;

typedef struct recorder {
	rec r[32];
	int n;
	int fail_kind; /* callbacks of this kind return TG_EIO */
} recorder;

static int rec_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	recorder *R = ud;
	if (R->n < 32) {
		rec *x = &R->r[R->n++];
		memset(x, 0, sizeof *x);
		snprintf(x->rule, sizeof x->rule, "%s", a->rule);
		x->kind = a->kind;
		x->is_error = a->is_error_action;
		x->payload = a->payload ? json_deep_copy(a->payload) : NULL;
		x->params = a->params ? json_deep_copy(a->params) : NULL;
		snprintf(x->topic, sizeof x->topic, "%s", a->topic ? a->topic : "");
		snprintf(x->sink, sizeof x->sink, "%s", a->sink ? a->sink : "");
		snprintf(x->pkey, sizeof x->pkey, "%s", a->pkey ? a->pkey : "");
		snprintf(x->table, sizeof x->table, "%s", a->table ? a->table : "");
		snprintf(x->alert, sizeof x->alert, "%s", a->alert_name ? a->alert_name : "");
		snprintf(x->url, sizeof x->url, "%s", a->url ? a->url : "");
		x->qos = a->qos;
		x->cond = a->alert_cond;
	}
	if (R->fail_kind && (int)a->kind == R->fail_kind && !a->is_error_action) {
		snprintf(err, errlen, "simulated failure");
		return TG_EIO;
	}
	return 0;
}

static void rec_clear(recorder *R)
{
	for (int i = 0; i < R->n; i++) {
		json_decref(R->r[i].payload);
		json_decref(R->r[i].params);
	}
	R->n = 0;
}

static rules_set *load_str(const char *text, char *err, size_t errlen)
{
	return rules_load_text("r.json", text, strlen(text), NULL, err, errlen);
}

static int eval_json(const rules_set *rs, const char *topic, const char *payload, recorder *R, rules_stats *st)
{
	json_t *j = json_loads(payload, 0, NULL);
	tg_msg m = {.topic = topic,
		    .thing = "dev-1",
		    .client_id = "dev-1",
		    .principal = "dev-1",
		    .payload = payload,
		    .payloadlen = strlen(payload),
		    .json = j,
		    .received_ms = 1700000000000LL,
		    .qos = 1};
	int n = rules_eval(rs, &m, rec_cb, R, st);
	json_decref(j);
	return n;
}

static void collect(void *ud, uint32_t id)
{
	uint32_t *bits = ud;
	*bits |= 1u << id;
}

static uint32_t trie_hits(const rules_trie *t, const char *topic)
{
	uint32_t bits = 0;
	rules_trie_match(t, topic, collect, &bits);
	return bits;
}

/* ---- topic trie ---------------------------------------------------------------------- */
static void test_trie_matching(void **state)
{
	rules_trie *t = rules_trie_new();
	assert_non_null(t);
	const char *filters[] = {"devices/+/telemetry", "devices/#", "#", "devices/dev-1/telemetry",
				 "+/+/+", "alerts/+", "devices/dev-1", "+"};
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(rules_trie_add(t, filters[i], i), 0);
	assert_int_equal(trie_hits(t, "devices/dev-1/telemetry"), (1u << 0) | (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4));
	assert_int_equal(trie_hits(t, "devices/dev-2/telemetry"), (1u << 0) | (1u << 1) | (1u << 2) | (1u << 4));
	/* '#' also matches its parent level */
	assert_int_equal(trie_hits(t, "devices"), (1u << 1) | (1u << 2) | (1u << 7));
	assert_int_equal(trie_hits(t, "devices/dev-1"), (1u << 1) | (1u << 2) | (1u << 6));
	assert_int_equal(trie_hits(t, "alerts/x"), (1u << 2) | (1u << 5));
	assert_int_equal(trie_hits(t, "alerts/x/y/z"), 1u << 2);
	/* empty levels are levels */
	assert_int_equal(trie_hits(t, "devices//telemetry"), (1u << 0) | (1u << 1) | (1u << 2) | (1u << 4));
	/* wildcards at the first level do not match $ topics */
	assert_int_equal(trie_hits(t, "$SYS/broker/load"), 0);
	assert_int_equal(rules_trie_add(t, "$SYS/#", 9), 0);
	assert_int_equal(trie_hits(t, "$SYS/broker/load"), 1u << 9);
	rules_trie_free(t);
	rules_trie_free(NULL);
}

typedef struct idlist {
	uint32_t ids[8];
	int n;
} idlist;

static void collect_ids(void *ud, uint32_t id)
{
	idlist *l = ud;
	if (l->n < 8)
		l->ids[l->n] = id;
	l->n++;
}

static void test_trie_many_filters(void **state)
{
	rules_trie *t = rules_trie_new();
	char f[64];
	for (uint32_t i = 0; i < 1000; i++) {
		snprintf(f, sizeof f, "site-%u/+/telemetry", i);
		assert_int_equal(rules_trie_add(t, f, i), 0);
	}
	for (uint32_t i = 0; i < 1000; i += 37) {
		idlist l = {{0}, 0};
		snprintf(f, sizeof f, "site-%u/x/telemetry", i);
		assert_int_equal(rules_trie_match(t, f, collect_ids, &l), 1);
		assert_int_equal(l.n, 1);
		assert_int_equal(l.ids[0], i);
	}
	idlist none = {{0}, 0};
	assert_int_equal(rules_trie_match(t, "site-5000/x/telemetry", collect_ids, &none), 0);
	assert_int_equal(rules_trie_match(t, "site-1/x/other", collect_ids, &none), 0);
	/* the same filter twice keeps both ids */
	assert_int_equal(rules_trie_add(t, "site-1/+/telemetry", 4242), 0);
	idlist two = {{0}, 0};
	assert_int_equal(rules_trie_match(t, "site-1/y/telemetry", collect_ids, &two), 2);
	rules_trie_free(t);
}

static void test_topic_filter_validation(void **state)
{
	char err[128];
	assert_int_equal(rules_topic_filter_valid("a/+/b", err, sizeof err), 0);
	assert_int_equal(rules_topic_filter_valid("#", err, sizeof err), 0);
	assert_int_equal(rules_topic_filter_valid("a/#", err, sizeof err), 0);
	assert_true(rules_topic_filter_valid("a/#/b", err, sizeof err) < 0);
	assert_true(rules_topic_filter_valid("a/b#", err, sizeof err) < 0);
	assert_true(rules_topic_filter_valid("a+/b", err, sizeof err) < 0);
	assert_true(rules_topic_filter_valid("", err, sizeof err) < 0);
	assert_true(rules_topic_matches("a/+/c", "a/b/c"));
	assert_false(rules_topic_matches("a/+/c", "a/b/d"));
}

/* ---- load errors with positions -------------------------------------------------------- */
static void expect_err(const char *text, const char *want)
{
	char err[2048];
	rules_set *rs = load_str(text, err, sizeof err);
	if (rs) {
		rules_set_free(rs);
		fail_msg("expected load error '%s', the rule loaded", want);
	}
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
}

static void test_sql_error_positions(void **state)
{
	/* line 3, the sql value starts at column 10 (the quote); "SELECT " is 7 chars */
	expect_err("{\n  \"actions\": [],\n  \"sql\": \"SELECT a FROM 'x' WHERE a >\"\n}",
		   "r.json:3:38: expected an expression, found end of input");
	/* escapes before the error shift the file column: \" is 2 bytes in the file, 1 in SQL */
	expect_err("{\"actions\": [], \"sql\": \"SELECT \\\"a\\\" AS x, bogus( FROM 'x'\"}",
		   "r.json:1:44: unknown function 'bogus'");
	expect_err("{\"actions\": [], \"sql\": \"SELECT \\\"a\\\" AS x, abs( FROM 'x'\"}",
		   "r.json:1:49: expected an expression, found FROM");
	/* a \u escape of a 2-byte UTF-8 character counts as one position in the file */
	expect_err("{\"actions\": [],\n\"sql\": \"SELECT '\\u00e9' + ! FROM 'x'\"}", "r.json:2:27: unexpected character '!'");
	/* tab escape */
	expect_err("{\"actions\": [], \"sql\":\n\t\"SELECT\\ta FROM 'x' WHERE\"}", "r.json:2:27: expected an expression, found end of input");
	expect_err("{\"actions\": [], \"sql\": \"SELECT aws_lambda('arn', *) FROM 'x'\"}",
		   "r.json:1:32: function 'aws_lambda' is not supported at the edge");
	expect_err("{\"actions\": [], \"sql\": \"SELECT get_thing_shadow('t', 'r') FROM 'x'\"}",
		   "not supported at the edge");
	expect_err("{\"actions\": [], \"sql\": \"SELECT get_dynamodb('t','k','v','r') FROM 'x'\"}", "not supported at the edge");
	expect_err("{\"actions\": [], \"sql\": \"SELECT get_secret('s','SecretString','k','r') FROM 'x'\"}",
		   "not supported at the edge");
	expect_err("{\"actions\": [], \"sql\": \"SELECT machinelearning_predict('m','r',*) FROM 'x'\"}",
		   "not supported at the edge");
	expect_err("{\"actions\": [], \"sql\": \"SELECT nosuch(1) FROM 'x'\"}", "r.json:1:32: unknown function 'nosuch'");
	expect_err("{\"actions\": [], \"sql\": \"SELECT abs(1, 2) FROM 'x'\"}", "abs() takes 1 argument, 2 given");
	expect_err("{\"actions\": [], \"sql\": \"SELECT regexp_matches(a, '[') FROM 'x'\"}",
		   "invalid regular expression");
	expect_err("{\"actions\": [], \"sql\": \"SELECT * FROM 'x' WHERE\"}", "expected an expression");
	expect_err("{\"actions\": [], \"sql\": \"SELECT * FROM 'x' extra\"}", "r.json:1:43: unexpected identifier 'extra'");
	expect_err("{\"actions\": [], \"sql\": \"SELECT * FROM 'x' WHERE 'unterminated\"}", "unterminated string literal");
	expect_err("{\"actions\": [], \"sql\": \"SELECT a < b < c FROM 'x'\"}", "comparisons cannot be chained");
	expect_err("{\"actions\": [], \"sql\": \"SELECT cast(a AS Blob) FROM 'x'\"}", "unknown cast type 'Blob'");
}

static void test_file_errors(void **state)
{
	expect_err("{\"actions\": [], \"sql\": 5}", "r.json:1:24: rule needs \"sql\": a string");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\"}", "rule needs \"actions\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [],\n \"bogus\": 1}", "r.json:2:11: unknown key 'bogus'");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [}", "r.json:1:42: invalid JSON");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"s3\": {\"bucketName\": \"b\"}}]}",
		   "r.json:1:42: action 's3' is not supported at the edge");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"republish\": {}}]}", "republish needs a non-empty \"topic\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"republish\": {\"topic\": \"a\", \"qos\": 2}}]}",
		   "r.json:1:78: republish \"qos\" must be 0 or 1");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"republish\": {\"topic\": \"a\", \"qso\": 1}}]}",
		   "unknown republish parameter 'qso'");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"sink\": {\"partitionKey\": \"x\"}}]}", "sink needs a \"name\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"alert\": {\"severity\": \"major\"}}]}", "alert needs a \"name\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"alert\": {\"name\": \"a\", \"severity\": \"huge\"}}]}",
		   "severity\" must be info, minor, major or critical");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"alert\": {\"name\": \"a\", \"for\": 0}}]}",
		   "alert \"for\" must be a number >= 1");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"webhook\": {\"url\": \"ftp://x\"}}]}", "webhook needs an http://");
	expect_err("[1]", "a rule file holds one JSON object");
}

static void test_template_and_clear_positions(void **state)
{
	/* the template's error is inside the "topic" string: col of '$' + 2 + offset */
	expect_err("{\"sql\": \"SELECT * FROM 'x'\",\n \"actions\": [{\"republish\": {\"topic\": \"a/${topic(2}\"}}]}",
		   "r.json:2:50: in substitution template: expected ')' or ',', found '}'");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"republish\": {\"topic\": \"a/${topic()\"}}]}",
		   "expected '}' to close ${...}");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\",\n \"actions\": [{\"alert\": {\"name\": \"a\",\n \"clear\": \"temperature <\"}}]}",
		   "r.json:3:25: in alert clear condition: expected an expression");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [],\n \"errorAction\": {\"republish\": {\"topic\": \"e/${nosuch()}\"}}}",
		   "r.json:2:46: in substitution template: unknown function 'nosuch'");
	{
		char big[1024] = "{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"republish\": {\"topic\": \"";
		for (int i = 0; i < 31; i++)
			strcat(big, "${1}");
		strcat(big, "\"}}]}");
		expect_err(big, "more than 30 ${...} in one string");
	}
	/* header templates inside nested objects are compiled too */
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"webhook\": {\"url\": \"http://127.0.0.1/\", \"headers\": {\"X\": \"${1 +}\"}}}]}",
		   "in substitution template");
}

static void test_sink_names_checked(void **state)
{
	char err[512];
	const char *const names[] = {"lake", "stream", NULL};
	rules_env env = {.sink_names = names};
	const char *ok = "{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"sink\": {\"name\": \"stream\"}}]}";
	const char *bad = "{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [{\"sink\": {\"name\": \"s3\"}}]}";
	rules_set *rs = rules_load_text("r.json", ok, strlen(ok), &env, err, sizeof err);
	assert_non_null(rs);
	rules_set_free(rs);
	rs = rules_load_text("r.json", bad, strlen(bad), &env, err, sizeof err);
	assert_null(rs);
	assert_non_null(strstr(err, "r.json:1:60: no sink named 's3' is configured"));
}

/* ---- actions ------------------------------------------------------------------------- */
static void test_actions_fields(void **state)
{
	char err[512];
	recorder R = {0};
	rules_set *rs = load_str("{\"sql\": \"SELECT temperature AS t FROM 'devices/+/telemetry' WHERE temperature > 28\","
				 "\"actions\": [{\"republish\": {\"topic\": \"alerts/${topic(2)}\", \"qos\": 1}},"
				 "{\"sink\": {\"name\": \"lake\"}},"
				 "{\"sink\": {\"name\": \"lake\", \"partitionKey\": \"${sensor_id}-x\", \"table\": \"hot\"}},"
				 "{\"webhook\": {\"url\": \"http://127.0.0.1:9/${topic(2)}\", \"headers\": {\"X-T\": \"${temperature}\"}}}]}",
				 err, sizeof err);
	assert_non_null(rs);
	assert_int_equal(rules_count(rs), 1);
	rules_stats st = {0};
	assert_int_equal(eval_json(rs, "devices/dev-9/telemetry", "{\"temperature\": 30, \"sensor_id\": \"s1\"}", &R, &st), 1);
	assert_int_equal(R.n, 4);
	assert_int_equal(R.r[0].kind, RULES_ACT_REPUBLISH);
	assert_string_equal(R.r[0].topic, "alerts/dev-9");
	assert_int_equal(R.r[0].qos, 1);
	assert_string_equal(R.r[0].rule, "r");
	json_t *want = json_pack("{si}", "t", 30);
	assert_true(json_equal(R.r[0].payload, want));
	json_decref(want);
	assert_int_equal(R.r[1].kind, RULES_ACT_SINK);
	assert_string_equal(R.r[1].sink, "lake");
	assert_string_equal(R.r[1].pkey, "dev-1"); /* default: the thing */
	assert_string_equal(R.r[1].table, "telemetry");
	assert_string_equal(R.r[2].pkey, "s1-x");
	assert_string_equal(R.r[2].table, "hot");
	assert_int_equal(R.r[3].kind, RULES_ACT_WEBHOOK);
	assert_string_equal(R.r[3].url, "http://127.0.0.1:9/dev-9");
	/* params handed out with templates expanded */
	assert_string_equal(json_string_value(json_object_get(json_object_get(R.r[3].params, "headers"), "X-T")), "30");
	assert_int_equal(st.evaluated, 1);
	assert_int_equal(st.matched, 1);
	assert_int_equal(st.actions, 4);
	rec_clear(&R);
	/* WHERE false: nothing */
	assert_int_equal(eval_json(rs, "devices/dev-9/telemetry", "{\"temperature\": 20}", &R, &st), 0);
	assert_int_equal(R.n, 0);
	/* FROM does not match: not even evaluated */
	assert_int_equal(eval_json(rs, "other/dev-9/telemetry", "{\"temperature\": 99}", &R, &st), 0);
	assert_int_equal(st.evaluated, 2);
	rules_set_free(rs);
	/* "$$" in a republish topic writes to a reserved "$" topic */
	rs = load_str("{\"sql\": \"SELECT * FROM 'a/+'\", \"actions\": [{\"republish\": {\"topic\": \"$$aws/things/${topic(2)}/shadow/update\", \"roleArn\": \"arn:aws:iam::1:role/r\"}}]}",
		      err, sizeof err);
	assert_non_null(rs);
	assert_int_equal(eval_json(rs, "a/t1", "{}", &R, NULL), 1);
	assert_string_equal(R.r[0].topic, "$aws/things/t1/shadow/update");
	rec_clear(&R);
	rules_set_free(rs);
}

static void test_alert_conditions(void **state)
{
	char err[512];
	recorder R = {0};
	rules_set *rs = load_str("{\"sql\": \"SELECT temperature FROM 'devices/+/telemetry' WHERE temperature > 40\","
				 "\"actions\": [{\"alert\": {\"name\": \"hot\", \"clear\": \"temperature < 35\", \"for\": 2}},"
				 "{\"republish\": {\"topic\": \"x\"}}]}",
				 err, sizeof err);
	assert_non_null(rs);
	/* raise: WHERE held; the republish fires too */
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 41}", &R, NULL), 1);
	assert_int_equal(R.n, 2);
	assert_int_equal(R.r[0].cond, RULES_ALERT_RAISE);
	assert_string_equal(R.r[0].alert, "hot");
	assert_string_equal(R.r[0].topic, "alerts/dev-1/hot"); /* default topic, clientid() */
	assert_string_equal(json_string_value(json_object_get(R.r[0].params, "clear")), "temperature < 35");
	rec_clear(&R);
	/* between the thresholds: NONE, and only the alert action is called */
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 38}", &R, NULL), 0);
	assert_int_equal(R.n, 1);
	assert_int_equal(R.r[0].cond, RULES_ALERT_NONE);
	rec_clear(&R);
	/* clear: the payload is the SELECT output regardless of WHERE */
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 30}", &R, NULL), 0);
	assert_int_equal(R.n, 1);
	assert_int_equal(R.r[0].cond, RULES_ALERT_CLEAR);
	assert_int_equal(json_integer_value(json_object_get(R.r[0].payload, "temperature")), 30);
	rec_clear(&R);
	/* missing field: neither */
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"humidity\": 30}", &R, NULL), 0);
	assert_int_equal(R.r[0].cond, RULES_ALERT_NONE);
	rec_clear(&R);
	rules_set_free(rs);
}

/* rules_env.alert_idle: for a message whose WHERE is false, a rule whose alert actions are
 * all idle runs no action; one non-idle alert puts them all through (with the clear
 * condition evaluated); a WHERE that holds never asks. */
struct idle_fx {
	int idle_hot, idle_warm, calls;
	uint64_t key_hot;
};

static int idle_hook(void *ud, const char *rule, const char *alert, uint64_t key, const char *thing)
{
	struct idle_fx *x = ud;
	x->calls++;
	assert_string_equal(rule, "r");
	assert_string_equal(thing, "dev-1");
	if (strcmp(alert, "hot") == 0) {
		x->key_hot = key;
		return x->idle_hot;
	}
	assert_string_equal(alert, "warm");
	return x->idle_warm;
}

static void test_alert_idle_hook(void **state)
{
	(void)state;
	char err[512];
	recorder R = {0};
	struct idle_fx x = {1, 1, 0, 0};
	rules_env env = {.alert_idle = idle_hook, .alert_ud = &x};
	const char *text = "{\"sql\": \"SELECT temperature FROM 'devices/+/telemetry' WHERE temperature > 40\","
			   "\"actions\": [{\"alert\": {\"name\": \"hot\", \"clear\": \"temperature < 35\"}},"
			   "{\"alert\": {\"name\": \"warm\"}}, {\"republish\": {\"topic\": \"x\"}}]}";
	rules_set *rs = rules_load_text("r.json", text, strlen(text), &env, err, sizeof err);
	assert_non_null(rs);
	rules_stats st = {0};
	/* below the threshold, both idle: nothing runs, both were asked */
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 30}", &R, &st), 0);
	assert_int_equal(R.n, 0);
	assert_int_equal(x.calls, 2);
	assert_int_equal(st.actions, 0);
	assert_int_equal(st.evaluated, 1);
	assert_true(x.key_hot == tg_hash_str(tg_hash_str(TG_HASH_SEED, "r"), "hot"));
	/* warm pending: both alert actions are reported, hot's clear condition evaluated */
	x.idle_warm = 0;
	x.calls = 0;
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 30}", &R, &st), 0);
	assert_int_equal(R.n, 2);
	assert_string_equal(R.r[0].alert, "hot");
	assert_int_equal(R.r[0].cond, RULES_ALERT_CLEAR);
	assert_int_equal(json_integer_value(json_object_get(R.r[0].payload, "temperature")), 30);
	assert_string_equal(R.r[1].alert, "warm");
	assert_int_equal(R.r[1].cond, RULES_ALERT_NONE);
	rec_clear(&R);
	/* above: the hook is not consulted, all three actions run */
	x.idle_warm = 1;
	x.calls = 0;
	assert_int_equal(eval_json(rs, "devices/d/telemetry", "{\"temperature\": 41}", &R, &st), 1);
	assert_int_equal(x.calls, 0);
	assert_int_equal(R.n, 3);
	assert_int_equal(R.r[0].cond, RULES_ALERT_RAISE);
	rec_clear(&R);
	rules_set_free(rs);
}

static void test_error_action_and_independence(void **state)
{
	char dir[] = "/tmp/tg-rules-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char p[512];
	FILE *f;
	snprintf(p, sizeof p, "%s/a-failing.json", dir);
	f = fopen(p, "w");
	fputs("{\"sql\": \"SELECT * FROM 'devices/+/telemetry'\", \"actions\": [{\"sink\": {\"name\": \"lake\"}},"
	      "{\"republish\": {\"topic\": \"ok/${topic(2)}\"}}],"
	      "\"errorAction\": {\"republish\": {\"topic\": \"errors/${topic(2)}\"}}}",
	      f);
	fclose(f);
	snprintf(p, sizeof p, "%s/b-other.json", dir);
	f = fopen(p, "w");
	fputs("{\"sql\": \"SELECT VALUE 1 FROM 'devices/#'\", \"actions\": [{\"republish\": {\"topic\": \"b\"}}]}", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/c-disabled.json", dir);
	f = fopen(p, "w");
	fputs("{\"sql\": \"SELECT * FROM '#'\", \"ruleDisabled\": true, \"actions\": [{\"republish\": {\"topic\": \"c\"}}]}", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/notes.txt", dir);
	f = fopen(p, "w");
	fputs("not a rule", f);
	fclose(f);
	char err[1024];
	rules_set *rs = rules_load_dir(dir, NULL, err, sizeof err);
	assert_non_null(rs);
	assert_int_equal(rules_count(rs), 3);
	recorder R = {.fail_kind = RULES_ACT_SINK};
	rules_stats st = {0};
	const char *payload = "{\"temperature\": 1}";
	assert_int_equal(eval_json(rs, "devices/dev-3/telemetry", payload, &R, &st), 2);
	/* order: a's sink (fails), a's republish, a's errorAction, then b; c is disabled */
	assert_int_equal(R.n, 4);
	assert_int_equal(R.r[0].kind, RULES_ACT_SINK);
	assert_string_equal(R.r[1].topic, "ok/dev-3");
	assert_true(R.r[2].is_error);
	assert_string_equal(R.r[2].topic, "errors/dev-3");
	json_t *e = R.r[2].payload;
	assert_string_equal(json_string_value(json_object_get(e, "ruleName")), "a-failing");
	assert_string_equal(json_string_value(json_object_get(e, "topic")), "devices/dev-3/telemetry");
	assert_string_equal(json_string_value(json_object_get(e, "clientId")), "dev-1");
	assert_string_equal(json_string_value(json_object_get(e, "base64OriginalPayload")), "eyJ0ZW1wZXJhdHVyZSI6IDF9");
	json_t *fl = json_array_get(json_object_get(e, "failures"), 0);
	assert_string_equal(json_string_value(json_object_get(fl, "failedAction")), "SinkAction");
	assert_string_equal(json_string_value(json_object_get(fl, "failedResource")), "lake");
	assert_string_equal(json_string_value(json_object_get(fl, "errorMessage")), "simulated failure");
	assert_int_equal(json_array_size(json_object_get(e, "failures")), 1);
	assert_string_equal(R.r[3].rule, "b-other");
	assert_int_equal(st.action_errors, 1);
	rec_clear(&R);
	rules_set_free(rs);
	/* a broken file makes the whole folder fail, with every error listed */
	snprintf(p, sizeof p, "%s/d-broken.json", dir);
	f = fopen(p, "w");
	fputs("{\"sql\": \"SELECT FROM 'x'\", \"actions\": []}", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/e-broken.json", dir);
	f = fopen(p, "w");
	fputs("{\"sql\": \"SELECT * FROM 'x'\",\n\"actions\": [{\"lambda\": {}}]}", f);
	fclose(f);
	rs = rules_load_dir(dir, NULL, err, sizeof err);
	assert_null(rs);
	char want[600];
	snprintf(want, sizeof want, "%s/d-broken.json:1:17: expected an expression, found FROM", dir);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "%s/e-broken.json:2:13: action 'lambda' is not supported", dir);
	assert_non_null(strstr(err, want));
	const char *names[] = {"a-failing.json", "b-other.json", "c-disabled.json", "notes.txt", "d-broken.json", "e-broken.json"};
	for (size_t i = 0; i < 6; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

static void test_regex_match_limit_isolated(void **state)
{
	char err[512];
	/* catastrophic backtracking on a non-literal pattern is stopped by the match limit;
	 * the failing rule counts an eval error and the next rule still runs */
	const char *txt = "{\"sql\": \"SELECT VALUE 1 FROM 'x' WHERE regexp_matches(s, p)\", \"actions\": [{\"republish\": {\"topic\": \"a\"}}]}";
	rules_set *rs = load_str(txt, err, sizeof err);
	assert_non_null(rs);
	recorder R = {0};
	rules_stats st = {0};
	char payload[400];
	char s[80];
	memset(s, 'a', 60);
	s[60] = 'b';
	s[61] = '\0';
	snprintf(payload, sizeof payload, "{\"s\": \"%s\", \"p\": \"^(a+)+$\"}", s);
	assert_int_equal(eval_json(rs, "x", payload, &R, &st), 0);
	assert_int_equal(st.eval_errors, 1);
	assert_int_equal(R.n, 0);
	rules_set_free(rs);
}

/* ---- message context: MQTT v5 properties, registry --------------------------------------- */
static json_t *registry(void *ud, const char *thing)
{
	if (strcmp(thing, "dev-1") != 0)
		return NULL;
	return json_pack("{ss si}", "site", "north", "floor", 2);
}

static void test_mqtt_props_and_registry(void **state)
{
	char err[512];
	const char *txt = "{\"sql\": \"SELECT get_mqtt_property('content_type') AS ct, get_mqtt_property('format_indicator') AS fi,"
			  " get_mqtt_property('response_topic') AS rt, get_mqtt_property('correlation_data') AS cd,"
			  " get_user_properties('k') AS k, get_user_properties() AS all, get_user_properties('none') AS none,"
			  " get_registry_data(clientid()).site AS site, get_registry_data('other') AS other FROM 'x'\","
			  " \"actions\": [{\"republish\": {\"topic\": \"a\"}}]}";
	rules_env env = {.registry_lookup = registry};
	rules_set *rs = rules_load_text("r.json", txt, strlen(txt), &env, err, sizeof err);
	assert_non_null(rs);
	mosquitto_property *props = NULL;
	assert_int_equal(mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json"), 0);
	assert_int_equal(mosquitto_property_add_byte(&props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1), 0);
	assert_int_equal(mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, "reply/here"), 0);
	assert_int_equal(mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, "abc", 3), 0);
	assert_int_equal(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "k", "v1"), 0);
	assert_int_equal(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "j", "x"), 0);
	assert_int_equal(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "k", "v2"), 0);
	json_t *j = json_object();
	tg_msg m = {.topic = "x", .thing = "dev-1", .client_id = "dev-1", .json = j, .props = (const struct mqtt5__property *)props};
	recorder R = {0};
	assert_int_equal(rules_eval(rs, &m, rec_cb, &R, NULL), 1);
	json_t *want = json_loads("{\"ct\":\"application/json\",\"fi\":\"UTF8_DATA\",\"rt\":\"reply/here\",\"cd\":\"YWJj\","
				  "\"k\":[\"v1\",\"v2\"],\"all\":[{\"k\":\"v1\"},{\"j\":\"x\"},{\"k\":\"v2\"}],\"site\":\"north\"}",
				  0, NULL);
	char *got = json_dumps(R.r[0].payload, JSON_COMPACT);
	if (!json_equal(want, R.r[0].payload))
		fail_msg("got %s", got);
	free(got);
	json_decref(want);
	rec_clear(&R);
	/* no properties at all: all Undefined */
	m.props = NULL;
	assert_int_equal(rules_eval(rs, &m, rec_cb, &R, NULL), 1);
	assert_int_equal(json_object_size(R.r[0].payload), 1); /* only site */
	rec_clear(&R);
	mosquitto_property_free_all(&props);
	json_decref(j);
	rules_set_free(rs);
}

/* ---- concurrent and re-entrant evaluation ---------------------------------------------- */
typedef struct worker {
	const rules_set *rs;
	long fired, bad;
} worker;

static int count_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	worker *w = ud;
	const char *want = json_string_value(json_object_get(a->payload, "thing"));
	if (want && strcmp(a->topic + strlen("alerts/"), want) == 0)
		w->fired++;
	else
		w->bad++;
	return 0;
}

static void *work(void *arg)
{
	worker *w = arg;
	char topic[64], payload[128];
	for (int i = 0; i < 3000; i++) {
		snprintf(topic, sizeof topic, "devices/t%p-%d/telemetry", (void *)w, i);
		snprintf(payload, sizeof payload, "{\"temperature\": %d, \"sensor_id\": \"dev-%04d\"}", 29 + i % 5, i % 10000);
		json_t *j = json_loads(payload, 0, NULL);
		tg_msg m = {.topic = topic, .thing = "x", .json = j, .payload = payload, .payloadlen = strlen(payload)};
		if (rules_eval(w->rs, &m, count_cb, w, NULL) != 1)
			w->bad++;
		json_decref(j);
	}
	return NULL;
}

static void test_concurrent_evaluation(void **state)
{
	/* the set's scratch context is shared; a second thread must get its own */
	char err[512];
	rules_set *rs = rules_load_file("rules/hot-alerts.json", NULL, err, sizeof err);
	assert_non_null(rs);
	worker w[3] = {{rs, 0, 0}, {rs, 0, 0}, {rs, 0, 0}};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(w[i].bad, 0);
		assert_int_equal(w[i].fired, 3000);
	}
	rules_set_free(rs);
}

typedef struct reenter {
	const rules_set *rs;
	int depth, inner_fired;
	char outer_topic[128];
} reenter;

static int reenter_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	reenter *r = ud;
	if (r->depth == 0) {
		/* like an alert re-entering the pipeline as a message, from inside the callback */
		snprintf(r->outer_topic, sizeof r->outer_topic, "%s", a->topic);
		r->depth++;
		json_t *j = json_pack("{si}", "temperature", 50);
		tg_msg m = {.topic = "devices/inner/telemetry", .json = j};
		rules_eval(r->rs, &m, reenter_cb, r, NULL);
		json_decref(j);
		r->depth--;
		/* the outer action's borrowed fields are still intact */
		if (strcmp(a->topic, r->outer_topic) != 0)
			return TG_EINVAL;
	} else {
		r->inner_fired++;
	}
	return 0;
}

static void test_reentrant_evaluation(void **state)
{
	char err[512];
	rules_set *rs = rules_load_file("rules/hot-alerts.json", NULL, err, sizeof err);
	assert_non_null(rs);
	reenter r = {rs, 0, 0, ""};
	json_t *j = json_pack("{si}", "temperature", 40);
	tg_msg m = {.topic = "devices/outer/telemetry", .json = j};
	rules_stats st = {0};
	assert_int_equal(rules_eval(rs, &m, reenter_cb, &r, &st), 1);
	assert_int_equal(st.action_errors, 0);
	assert_int_equal(r.inner_fired, 1);
	assert_string_equal(r.outer_topic, "alerts/outer");
	json_decref(j);
	rules_set_free(rs);
}

/* ---- CLI --------------------------------------------------------------------------------- */
static int run_cli_capture_conf(int argc, char **argv, const rules_cli_conf *conf, char *out, size_t outlen,
				char *errout, size_t errlen)
{
	fflush(stdout);
	fflush(stderr);
	FILE *fo = tmpfile(), *fe = tmpfile();
	int so = dup(1), se = dup(2);
	dup2(fileno(fo), 1);
	dup2(fileno(fe), 2);
	int rc = rules_cli_main(argc, argv, conf);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	rewind(fo);
	rewind(fe);
	size_t n = fread(out, 1, outlen - 1, fo);
	out[n] = '\0';
	n = fread(errout, 1, errlen - 1, fe);
	errout[n] = '\0';
	fclose(fo);
	fclose(fe);
	return rc;
}

static int run_cli_capture(int argc, char **argv, char *out, size_t outlen, char *errout, size_t errlen)
{
	return run_cli_capture_conf(argc, argv, NULL, out, outlen, errout, errlen);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Issue 19: a reload keeps each surviving rule's counters (matched by file and name, in
 * file order), a new rule starts at zero, a removed one's counts go with it. */
static void test_reload_adopts_counters(void **state)
{
	(void)state;
	char dir[] = "/tmp/tg-rules-XXXXXX", p[512], err[1024];
	assert_non_null(mkdtemp(dir));
	static const char *const rule = "{\"sql\": \"SELECT * FROM 'devices/#'\", \"actions\": []}";
	static const char *const names[] = {"a", "b", "c", "d"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s/%s.json", dir, names[i]);
		write_file(p, rule);
	}
	rules_set *old = rules_load_dir(dir, NULL, err, sizeof err);
	assert_non_null(old);
	recorder R = {0};
	rules_stats st = {0};
	for (int n = 0; n < 3; n++)
		eval_json(old, "devices/x/telemetry", "{\"t\": 1}", &R, &st);
	snprintf(p, sizeof p, "%s/b.json", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/bb.json", dir);
	write_file(p, rule);
	rules_set *nw = rules_load_dir(dir, NULL, err, sizeof err);
	assert_non_null(nw);
	rules_set_adopt_counters(nw, old);
	static const char *const want_name[] = {"a", "bb", "c", "d"};
	static const uint64_t want[] = {3, 0, 3, 3};
	assert_int_equal(rules_count(nw), 4);
	for (size_t i = 0; i < 4; i++) {
		rules_rule_info info;
		assert_int_equal(rules_rule_get(nw, i, &info), 0);
		assert_string_equal(info.name, want_name[i]);
		assert_int_equal(info.evaluated, want[i]);
	}
	rules_set_free(old);
	rules_set_free(nw);
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s/%s.json", dir, i == 1 ? "bb" : names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Issue 19: rules grouped by FROM filter, and the WHERE's first comparison of a field with a
 * literal tried from the group before the rule's tree: the same rules fire, in file-name
 * order across groups, whatever the field's type (a numeric string compares as a number,
 * a missing field or a payload that is not an object is Undefined), in both SQL versions;
 * every enabled rule whose FROM matched counts as evaluated, a disabled one does not. */
static void test_where_guard_groups(void **state)
{
	(void)state;
	char dir[] = "/tmp/tg-rules-guard-XXXXXX", p[512], err[1024];
	assert_non_null(mkdtemp(dir));
	static const char *const names[] = {"a", "b", "c", "d", "e", "f"};
	static const char *const files[] = {
		"{\"sql\": \"SELECT 'a' AS r FROM 'devices/#' WHERE temperature > 20\", \"actions\": [{\"republish\": {\"topic\": \"a\"}}]}",
		"{\"sql\": \"SELECT 'b' AS r FROM 'devices/+/telemetry' WHERE 20 < temperature AND sensor_id = 's1'\", "
		"\"actions\": [{\"republish\": {\"topic\": \"b\"}}]}",
		"{\"sql\": \"SELECT 'c' AS r FROM 'devices/#' WHERE sensor_id = 's1'\", \"actions\": [{\"republish\": {\"topic\": \"c\"}}]}",
		"{\"sql\": \"SELECT 'd' AS r FROM 'devices/+/telemetry' WHERE temperature > 0\", \"ruleDisabled\": true, "
		"\"actions\": [{\"republish\": {\"topic\": \"d\"}}]}",
		"{\"sql\": \"SELECT 'e' AS r FROM 'devices/+/telemetry' WHERE (temperature >= 25 AND temperature <= 25.0) OR sensor_id = 's1'\", "
		"\"actions\": [{\"republish\": {\"topic\": \"e\"}}]}",
		"{\"sql\": \"SELECT 'f' AS r FROM 'devices/+/telemetry' WHERE temperature > 20.0\", \"awsIotSqlVersion\": \"2015-10-08\", "
		"\"actions\": [{\"republish\": {\"topic\": \"f\"}}]}",
	};
	for (size_t i = 0; i < 6; i++) {
		snprintf(p, sizeof p, "%s/%s.json", dir, names[i]);
		write_file(p, files[i]);
	}
	rules_set *rs = rules_load_dir(dir, NULL, err, sizeof err);
	assert_non_null(rs);
	static const struct {
		const char *payload, *fired;
	} cases[] = {
		{"{\"temperature\": \"25\", \"sensor_id\": \"s1\"}", "abcef"},
		{"{\"temperature\": 25, \"sensor_id\": \"s2\"}", "aef"},
		{"{\"temperature\": 15, \"sensor_id\": \"s1\"}", "ce"},
		{"{\"sensor_id\": \"s2\"}", ""},
		{"[1, 2]", ""},
		{"not json", ""},
	};
	rules_stats st = {0};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		recorder R = {0};
		int n = eval_json(rs, "devices/x/telemetry", cases[i].payload, &R, &st);
		char got[8] = "";
		for (int k = 0; k < R.n && k < 7; k++)
			got[k] = R.r[k].topic[0];
		got[R.n < 7 ? R.n : 7] = '\0';
		assert_string_equal(got, cases[i].fired);
		assert_int_equal(n, (int)strlen(cases[i].fired));
		rec_clear(&R);
	}
	recorder R = {0};
	assert_int_equal(eval_json(rs, "other/x/telemetry", "{\"temperature\": 99}", &R, &st), 0);
	assert_int_equal(R.n, 0);
	assert_int_equal(st.evaluated, 5 * 6); /* a b c e f, six messages; d is disabled */
	assert_int_equal(st.matched, 5 + 3 + 2);
	static const uint64_t evaluated[] = {6, 6, 6, 0, 6, 6}, matched[] = {2, 1, 2, 0, 3, 2};
	for (size_t i = 0; i < 6; i++) {
		rules_rule_info info;
		assert_int_equal(rules_rule_get(rs, i, &info), 0);
		assert_string_equal(info.name, names[i]);
		assert_int_equal(info.evaluated, evaluated[i]);
		assert_int_equal(info.matched, matched[i]);
	}
	/* a reload carries the counts over and counts on from there */
	rules_set *nw = rules_load_dir(dir, NULL, err, sizeof err);
	assert_non_null(nw);
	rules_set_adopt_counters(nw, rs);
	eval_json(nw, "devices/y/telemetry", "{\"temperature\": 1}", &R, NULL);
	rec_clear(&R);
	for (size_t i = 0; i < 6; i++) {
		rules_rule_info info;
		assert_int_equal(rules_rule_get(nw, i, &info), 0);
		assert_int_equal(info.evaluated, evaluated[i] + (i == 3 ? 0 : 1));
	}
	rules_set_free(rs);
	rules_set_free(nw);
	for (size_t i = 0; i < 6; i++) {
		snprintf(p, sizeof p, "%s/%s.json", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Issue 12 item 10: with the daemon's configuration, sink names are checked as the daemon
 * checks them (and its rules_dir is the default); without one, a warning says they were not. */
static void test_cli_check_sink_names(void **state)
{
	char out[4096], errs[4096], dir[] = "/tmp/tg-rules-sinks-XXXXXX", p[512];
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof p, "%s/route.json", dir);
	write_file(p, "{\"sql\": \"SELECT * FROM 'devices/+/telemetry'\",\n"
		      " \"actions\": [{\"sink\": {\"name\": \"nowhere\"}}]}\n");
	const char *const names[] = {"lake", NULL};
	rules_cli_conf conf = {.path = "/etc/x.conf", .sink_names = names, .rules_dir = dir};
	char *with_dir[] = {"check", dir};
	assert_int_equal(run_cli_capture_conf(2, with_dir, &conf, out, sizeof out, errs, sizeof errs), 1);
	char want[700];
	snprintf(want, sizeof want, "%s:2:32: no sink named 'nowhere' is configured", p);
	if (!strstr(errs, want))
		fail_msg("stderr '%s' lacks '%s'", errs, want);
	char *no_dir[] = {"check"}; /* the configuration's rules_dir */
	assert_int_equal(run_cli_capture_conf(1, no_dir, &conf, out, sizeof out, errs, sizeof errs), 1);
	assert_non_null(strstr(errs, want));
	/* without a configuration: accepted, and a warning says what was not checked */
	assert_int_equal(run_cli_capture(2, with_dir, out, sizeof out, errs, sizeof errs), 0);
	assert_non_null(strstr(out, "1 rule OK"));
	assert_non_null(strstr(errs, "warning: sink names were not checked (no -c CONFIG given)"));
	/* a configured sink passes, and the output says against what */
	write_file(p, "{\"sql\": \"SELECT * FROM 'devices/+/telemetry'\", \"actions\": [{\"sink\": {\"name\": \"lake\"}}]}");
	assert_int_equal(run_cli_capture_conf(2, with_dir, &conf, out, sizeof out, errs, sizeof errs), 0);
	assert_non_null(strstr(out, "sink names checked against /etc/x.conf"));
	assert_string_equal(errs, "");
	unlink(p);
	rmdir(dir);
}

/* Issue 12 item 11: what `rules test` prints. */
static void test_cli_test_output(void **state)
{
	char out[8192], errs[4096];
	/* a payload the daemon would quarantine: the reader's error, with its position */
	char *badjson[] = {"test", "rules/hot-alerts.json", "--topic", "devices/d1/telemetry", "--payload",
			   "{\"temperature\": 31.5,"};
	assert_int_equal(run_cli_capture(6, badjson, out, sizeof out, errs, sizeof errs), 1);
	if (!strstr(errs, "the payload would be quarantined before any rule runs (reason bad_json): 1:21: "))
		fail_msg("stderr '%s'", errs);
	assert_null(strstr(out, "WHERE did not hold"));
	char *array[] = {"test", "rules/hot-alerts.json", "--topic", "devices/d1/telemetry", "--payload", "[1]"};
	assert_int_equal(run_cli_capture(6, array, out, sizeof out, errs, sizeof errs), 1);
	assert_non_null(strstr(errs, "(reason not_object)"));
	/* numbers as the daemon writes them */
	char *hot[] = {"test", "rules/hot-alerts.json", "--topic", "devices/d1/telemetry", "--payload",
		       "{\"sensor_id\":\"s\",\"ts\":1,\"temperature\":60.7}"};
	assert_int_equal(run_cli_capture(6, hot, out, sizeof out, errs, sizeof errs), 0);
	if (!strstr(out, "\"temperature\":60.7,"))
		fail_msg("got '%s'", out);
	/* a folder: every rule in it */
	char *folder[] = {"test", "rules", "--topic", "devices/d1/telemetry", "--payload",
			  "{\"sensor_id\":\"s\",\"ts\":1,\"temperature\":45}"};
	assert_int_equal(run_cli_capture(6, folder, out, sizeof out, errs, sizeof errs), 0);
	if (!strstr(out, "hot-alerts republish: topic=alerts/d1") || !strstr(out, "high-temperature-alert alert:"))
		fail_msg("got '%s' / '%s'", out, errs);
	char *folder_cold[] = {"test", "rules", "--topic", "devices/d1/telemetry", "--payload", "{\"temperature\":5}"};
	assert_int_equal(run_cli_capture(6, folder_cold, out, sizeof out, errs, sizeof errs), 0);
	assert_non_null(strstr(out, "no match: WHERE did not hold for the 2 rules whose FROM matched"));
	/* headers of republish and webhook, templates expanded */
	char dir[] = "/tmp/tg-rules-hdr-XXXXXX", p[512];
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof p, "%s/hdr.json", dir);
	write_file(p, "{\"sql\": \"SELECT temperature FROM 'devices/+/telemetry'\",\n"
		      " \"actions\": [{\"republish\": {\"topic\": \"views/${topic(2)}\", \"headers\":"
		      " {\"contentType\": \"application/json\", \"userProperties\": [{\"key\": \"site\", \"value\": \"north\"}]}}},\n"
		      "  {\"webhook\": {\"url\": \"http://127.0.0.1:1/h\", \"headers\": {\"X-Thing\": \"${topic(2)}\"}}}]}\n");
	char *hdr[] = {"test", p, "--topic", "devices/d7/telemetry", "--payload", "{\"temperature\":1.5}"};
	assert_int_equal(run_cli_capture(6, hdr, out, sizeof out, errs, sizeof errs), 0);
	if (!strstr(out, "hdr republish: topic=views/d7 qos=0 headers={\"contentType\":\"application/json\","
			 "\"userProperties\":[{\"key\":\"site\",\"value\":\"north\"}]} payload={\"temperature\":1.5}") ||
	    !strstr(out, "hdr webhook: url=http://127.0.0.1:1/h headers={\"X-Thing\":\"d7\"} payload="))
		fail_msg("got '%s' / '%s'", out, errs);
	unlink(p);
	rmdir(dir);
}

static void test_cli_check(void **state)
{
	char out[4096], errs[4096];
	char *ok[] = {"check", "rules"};
	assert_int_equal(run_cli_capture(2, ok, out, sizeof out, errs, sizeof errs), 0);
	assert_non_null(strstr(out, "rules OK"));
	char dir[] = "/tmp/tg-rules-cli-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char p[512];
	snprintf(p, sizeof p, "%s/bad.json", dir);
	FILE *f = fopen(p, "w");
	fputs("{\n  \"sql\": \"SELECT temperature FROM 'devices/+/telemetry' WHERE temperature >> 2\",\n  \"actions\": []\n}\n", f);
	fclose(f);
	char *bad[] = {"check", dir};
	assert_int_equal(run_cli_capture(2, bad, out, sizeof out, errs, sizeof errs), 1);
	char want[600];
	snprintf(want, sizeof want, "%s/bad.json:2:76: expected an expression, found '>'", dir);
	if (!strstr(errs, want))
		fail_msg("stderr '%s' lacks '%s'", errs, want);
	char *usage[] = {"check"};
	assert_int_equal(run_cli_capture(1, usage, out, sizeof out, errs, sizeof errs), 2);
	unlink(p);
	rmdir(dir);
}

static void test_cli_test(void **state)
{
	char out[4096], errs[4096];
	char *hot[] = {"test", "rules/hot-alerts.json", "--topic", "devices/dev-0042/telemetry", "--payload",
		       "{\"sensor_id\":\"dev-0042\",\"ts\":1,\"temperature\":31.5}"};
	assert_int_equal(run_cli_capture(6, hot, out, sizeof out, errs, sizeof errs), 0);
	const char *want = "hot-alerts republish: topic=alerts/dev-0042 qos=1 payload={\"sensor_id\":\"dev-0042\","
			   "\"temperature\":31.5,\"ts\":1,\"thing\":\"dev-0042\"}\n";
	if (strcmp(out, want) != 0)
		fail_msg("got '%s'", out);
	char *cold[] = {"test", "rules/hot-alerts.json", "--topic", "devices/dev-0042/telemetry", "--payload",
			"{\"temperature\":20}"};
	assert_int_equal(run_cli_capture(6, cold, out, sizeof out, errs, sizeof errs), 0);
	assert_string_equal(out, "no match: WHERE did not hold\n");
	char *other[] = {"test", "rules/hot-alerts.json", "--topic", "x/y", "--payload", "{}"};
	assert_int_equal(run_cli_capture(6, other, out, sizeof out, errs, sizeof errs), 0);
	assert_non_null(strstr(out, "does not match the rule's FROM filter"));
	/* payload from stdin, thing and client id given */
	FILE *in = tmpfile();
	fputs("{\"temperature\": 40, \"sensor_id\": \"s\", \"ts\": 2}", in);
	rewind(in);
	int saved = dup(0);
	dup2(fileno(in), 0);
	clearerr(stdin);
	char *piped[] = {"test", "rules/high-temperature-alert.json", "--topic", "devices/d9/telemetry", "--client-id", "cli-9"};
	int rc = run_cli_capture(6, piped, out, sizeof out, errs, sizeof errs);
	dup2(saved, 0);
	close(saved);
	clearerr(stdin);
	fclose(in);
	assert_int_equal(rc, 0);
	want = "high-temperature-alert alert: name=high-temperature condition=none topic=alerts/d9/high-temperature "
	       "payload={\"sensor_id\":\"s\",\"temperature\":40,\"ts\":2,\"thing\":\"d9\"}\n"
	       "no match: WHERE did not hold\n";
	if (strcmp(out, want) != 0)
		fail_msg("got '%s'", out);
	char *missing[] = {"test", "rules/hot-alerts.json"};
	assert_int_equal(run_cli_capture(2, missing, out, sizeof out, errs, sizeof errs), 2);
}

/* ---- SQL versions ------------------------------------------------------------------------ */
/* awsIotSqlVersion: anything but the two versions is refused at load, at the value's position. */
static void test_sql_version_refused(void **state)
{
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [],\n \"awsIotSqlVersion\": \"2017-01-01\"}",
		   "r.json:2:22: unknown awsIotSqlVersion \"2017-01-01\": use \"2016-03-23\" (the default) or "
		   "\"2015-10-08\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\",\n\n   \"awsIotSqlVersion\": \"beta\", \"actions\": []}",
		   "r.json:3:24: awsIotSqlVersion \"beta\" is not supported at the edge (AWS's beta dialect may change "
		   "at any time): use \"2016-03-23\" (the default) or \"2015-10-08\"");
	expect_err("{\"awsIotSqlVersion\": 20151008, \"sql\": \"SELECT * FROM 'x'\", \"actions\": []}",
		   "r.json:1:22: awsIotSqlVersion must be a string: \"2016-03-23\" (the default) or \"2015-10-08\"");
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [], \"awsIotSqlVersion\": \"2015-10-8\"}",
		   "unknown awsIotSqlVersion \"2015-10-8\"");
	/* the value is echoed on one line: control characters and quotes do not come through */
	expect_err("{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [], \"awsIotSqlVersion\": \"2015\\n\\\"10\"}",
		   "unknown awsIotSqlVersion \"2015??10\": use");
	/* the SQL is still compiled, so its own errors are listed with the version's */
	char err[2048];
	const char *both = "{\"awsIotSqlVersion\": \"v2\",\n\"sql\": \"SELECT FROM 'x'\", \"actions\": []}";
	assert_null(load_str(both, err, sizeof err));
	if (!strstr(err, "r.json:1:22: unknown awsIotSqlVersion \"v2\"") ||
	    !strstr(err, "r.json:2:16: expected an expression, found FROM"))
		fail_msg("got '%s'", err);
	/* the two versions load; so does the default spelled out */
	const char *ok[] = {"2016-03-23", "2015-10-08"};
	for (int i = 0; i < 2; i++) {
		char text[200];
		snprintf(text, sizeof text, "{\"sql\": \"SELECT * FROM 'x'\", \"actions\": [], \"awsIotSqlVersion\": \"%s\"}",
			 ok[i]);
		rules_set *rs = load_str(text, err, sizeof err);
		if (!rs)
			fail_msg("%s refused: %s", ok[i], err);
		rules_set_free(rs);
	}
}

/* Each rule of one set is compiled and evaluated in its own version: SELECT, templates, the
 * alert clear condition (a literal in it), the errorAction run later, and `rules test`. */
static void test_sql_version_per_rule(void **state)
{
	char dir[] = "/tmp/tg-rules-ver-XXXXXX", p[3][512], err[2048];
	assert_non_null(mkdtemp(dir));
	const char *name[3] = {"a-v1", "b-default", "c-v2"};
	const char *ver[3] = {",\"awsIotSqlVersion\": \"2015-10-08\"", "", ",\"awsIotSqlVersion\": \"2016-03-23\""};
	for (int i = 0; i < 3; i++) {
		char text[1024];
		snprintf(p[i], sizeof p[i], "%s/%s.json", dir, name[i]);
		snprintf(text, sizeof text,
			 "{\"sql\": \"SELECT v / 4 AS q, 10.0 AS lit, v AS v, sql_version() AS sv FROM 'devices/+/t'"
			 " WHERE v < 100\"%s,\n \"actions\": [{\"republish\": {\"topic\": \"q/${v / 4}/${v}\"}},"
			 " {\"alert\": {\"name\": \"x\", \"clear\": \"10.0 / 4 = 2.5\"}}],"
			 " \"errorAction\": {\"republish\": {\"topic\": \"errors/${v / 4}/${10.0 / 8}\"}}}",
			 ver[i]);
		write_file(p[i], text);
	}
	rules_set *rs = rules_load_dir(dir, NULL, err, sizeof err);
	if (!rs)
		fail_msg("load: %s", err);
	recorder R = {0};
	assert_int_equal(eval_json(rs, "devices/d1/t", "{\"v\": 10.0}", &R, NULL), 3);
	assert_int_equal(R.n, 6); /* a republish and an alert (raise) per rule */
	for (int i = 0; i < 3; i++) {
		const rec *x = &R.r[2 * i];
		assert_string_equal(x->rule, name[i]);
		char *got = json_dumps(x->payload, JSON_COMPACT | JSON_SORT_KEYS);
		const char *want = i == 0 ? "{\"lit\":10.0,\"q\":2.5,\"sv\":\"2015-10-08\",\"v\":10.0}"
					  : "{\"lit\":10,\"q\":2,\"sv\":\"2016-03-23\",\"v\":10}";
		if (strcmp(got, want) != 0)
			fail_msg("%s: payload %s, want %s", name[i], got, want);
		free(got);
		assert_string_equal(x->topic, i == 0 ? "q/2.5/10.0" : "q/2/10");
		assert_int_equal(R.r[2 * i + 1].cond, RULES_ALERT_RAISE);
	}
	rec_clear(&R);
	/* WHERE false: the clear condition, compiled in the rule's version, decides */
	assert_int_equal(eval_json(rs, "devices/d1/t", "{\"v\": 1000}", &R, NULL), 0);
	assert_int_equal(R.n, 3);
	assert_int_equal(R.r[0].cond, RULES_ALERT_CLEAR); /* 2015-10-08: 10.0 / 4 is 2.5 */
	assert_int_equal(R.r[1].cond, RULES_ALERT_NONE);  /* 2016-03-23: 10 / 4 is 2 */
	assert_int_equal(R.r[2].cond, RULES_ALERT_NONE);
	rec_clear(&R);
	/* the errorAction of a refused publish, run after the evaluation */
	const char *v10 = "{\"v\": 10.0}";
	json_t *j = json_loads(v10, 0, NULL);
	tg_msg m = {.topic = "devices/d1/t", .thing = "d1", .payload = v10, .payloadlen = strlen(v10), .json = j};
	for (int i = 0; i < 3; i++)
		assert_int_equal(rules_run_error_action(rs, name[i], &m, RULES_ACT_REPUBLISH, "q/x", "refused", rec_cb,
							&R, NULL),
				 1);
	json_decref(j);
	assert_int_equal(R.n, 3);
	assert_string_equal(R.r[0].topic, "errors/2.5/1.25");
	assert_string_equal(R.r[1].topic, "errors/2/1");
	assert_string_equal(R.r[2].topic, "errors/2/1");
	rec_clear(&R);
	rules_set_free(rs);
	/* rules test prints what the daemon would publish, in each rule's version */
	char out[8192], errs[4096];
	char *cli[] = {"test", dir, "--topic", "devices/d1/t", "--payload", "{\"v\": 10.0}"};
	assert_int_equal(run_cli_capture(6, cli, out, sizeof out, errs, sizeof errs), 0);
	if (!strstr(out, "a-v1 republish: topic=q/2.5/10.0 qos=0 payload={\"q\":2.5,\"lit\":10.0,\"v\":10.0,"
			 "\"sv\":\"2015-10-08\"}") ||
	    !strstr(out, "b-default republish: topic=q/2/10 qos=0 payload={\"q\":2,\"lit\":10,\"v\":10,"
			 "\"sv\":\"2016-03-23\"}") ||
	    !strstr(out, "c-v2 republish: topic=q/2/10 qos=0 payload={\"q\":2,\"lit\":10,\"v\":10,\"sv\":\"2016-03-23\"}"))
		fail_msg("got '%s' / '%s'", out, errs);
	for (int i = 0; i < 3; i++)
		unlink(p[i]);
	rmdir(dir);
}

/* ---- shipped rules ---------------------------------------------------------------------- */
static void test_shipped_default_rules(void **state)
{
	char err[4096];
	const char *const sinks[] = {"lake", NULL};
	rules_env env = {.sink_names = sinks};
	rules_set *rs = rules_load_dir("rules", &env, err, sizeof err);
	if (!rs)
		fail_msg("rules/ does not load: %s", err);
	assert_int_equal(rules_count(rs), 2);
	recorder R = {0};
	/* a 45 degree reading: high-temperature alert raises, hot-alerts republishes (every
	 * accepted record reaches the lake through the daemon's default_sinks, not a rule) */
	const char *hot = "{\"sensor_id\":\"dev-0001\",\"ts\":1700000000000,\"temperature\":45.5,\"humidity\":40.0}";
	assert_int_equal(eval_json(rs, "devices/dev-0001/telemetry", hot, &R, NULL), 2);
	assert_int_equal(R.n, 2);
	assert_string_equal(R.r[0].rule, "high-temperature-alert");
	assert_int_equal(R.r[0].cond, RULES_ALERT_RAISE);
	assert_string_equal(R.r[0].topic, "alerts/dev-0001/high-temperature");
	assert_string_equal(R.r[1].rule, "hot-alerts");
	assert_string_equal(R.r[1].topic, "alerts/dev-0001");
	assert_string_equal(json_string_value(json_object_get(R.r[1].payload, "thing")), "dev-0001");
	rec_clear(&R);
	/* a 20 degree reading: nothing matches, the alert reports clear */
	assert_int_equal(eval_json(rs, "devices/dev-0001/telemetry", "{\"temperature\":20}", &R, NULL), 0);
	assert_int_equal(R.n, 1);
	assert_int_equal(R.r[0].cond, RULES_ALERT_CLEAR);
	rec_clear(&R);
	/* exactly 28 is not hot */
	assert_int_equal(eval_json(rs, "devices/dev-0001/telemetry", "{\"temperature\":28}", &R, NULL), 0);
	rec_clear(&R);
	rules_set_free(rs);
}

static void test_shipped_examples(void **state)
{
	char err[4096];
	rules_set *rs = rules_load_dir("rules/examples", NULL, err, sizeof err);
	if (!rs)
		fail_msg("rules/examples does not load: %s", err);
	assert_int_equal(rules_count(rs), 6);
	recorder R = {0};
	/* battery-low (alert), critical-webhook, fahrenheit-republish, with-error-action (sink) */
	const char *msg = "{\"sensor_id\":\"dev-0002\",\"temperature\":65,\"battery\":0.1,\"pressure\":1000}";
	assert_int_equal(eval_json(rs, "devices/dev-0002/telemetry", msg, &R, NULL), 4);
	assert_int_equal(R.n, 4);
	assert_string_equal(R.r[0].rule, "battery-low-alert");
	assert_int_equal(R.r[0].cond, RULES_ALERT_RAISE);
	assert_string_equal(R.r[0].topic, "alerts/dev-1/battery-low");
	assert_string_equal(R.r[1].rule, "critical-webhook");
	assert_string_equal(R.r[1].url, "http://127.0.0.1:8088/hooks/dev-0002");
	assert_true(json_is_true(json_object_get(R.r[1].payload, "hot")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(R.r[1].params, "headers"), "X-Thing")), "dev-0002");
	assert_string_equal(R.r[2].rule, "fahrenheit-republish");
	assert_string_equal(R.r[2].topic, "views/dev-0002/fahrenheit");
	json_t *want = json_loads("{\"thing\":\"dev-0002\",\"fahrenheit\":149,\"comfort\":\"warm\"}", 0, NULL);
	assert_true(json_equal(want, R.r[2].payload));
	json_decref(want);
	assert_string_equal(R.r[3].rule, "with-error-action");
	assert_string_equal(R.r[3].sink, "lake");
	for (int i = 0; i < R.n; i++) /* disabled-debug-tap matches the topic but is disabled */
		assert_string_not_equal(R.r[i].rule, "disabled-debug-tap");
	rec_clear(&R);
	/* the error action of with-error-action */
	R.fail_kind = RULES_ACT_SINK;
	assert_int_equal(eval_json(rs, "devices/dev-0002/telemetry", "{\"temperature\": 10, \"battery\": 0.5}", &R, NULL), 2);
	assert_int_equal(R.n, 4); /* battery alert (clear: 0.5 > 0.25), fahrenheit, sink (fails), errorAction */
	assert_int_equal(R.r[0].cond, RULES_ALERT_CLEAR);
	int seen_err = 0;
	for (int i = 0; i < R.n; i++)
		if (R.r[i].is_error) {
			seen_err = 1;
			assert_string_equal(R.r[i].topic, "errors/dev-0002");
		}
	assert_true(seen_err);
	rec_clear(&R);
	R.fail_kind = 0;
	/* senml nested query */
	assert_int_equal(eval_json(rs, "devices/dev-0003/senml",
				   "{\"e\":[{\"n\":\"temperature\",\"v\":22.5},{\"n\":\"light\",\"v\":135}]}", &R, NULL),
			 1);
	want = json_loads("{\"temperature\":22.5,\"sensors\":[\"temperature\",\"light\"]}", 0, NULL);
	assert_true(json_equal(want, R.r[0].payload));
	assert_string_equal(R.r[0].topic, "views/dev-0003/senml");
	json_decref(want);
	rec_clear(&R);
	rules_set_free(rs);
}

/* ---- republish headers (MQTT v5 properties) ---------------------------------------------- */
typedef struct hdr_rec {
	int n;
	char kind[8][32], key[8][64], value[8][128];
} hdr_rec;

static int hdr_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	hdr_rec *H = ud;
	for (int i = 0; i < a->nheaders && H->n < 8; i++, H->n++) {
		snprintf(H->kind[H->n], sizeof H->kind[0], "%s", rules_header_name(a->headers[i].kind));
		snprintf(H->key[H->n], sizeof H->key[0], "%s", a->headers[i].key ? a->headers[i].key : "");
		snprintf(H->value[H->n], sizeof H->value[0], "%s", a->headers[i].value);
	}
	return 0;
}

static void test_republish_headers(void **state)
{
	char err[2048];
	const char *rule =
		"{\"sql\": \"SELECT * FROM 'devices/+/telemetry'\", \"actions\": [{\"republish\": {\"topic\": \"alerts/x\", "
		"\"headers\": {\"payloadFormatIndicator\": \"UTF8_DATA\", \"contentType\": \"application/${kind}\", "
		"\"responseTopic\": \"replies/${topic(2)}\", \"correlationData\": \"${encode(id, 'base64')}\", "
		"\"messageExpiry\": 60, \"userProperties\": [{\"key\": \"site\", \"value\": \"${site}\"}, "
		"{\"key\": \"k-${topic(2)}\", \"value\": \"v\"}]}}}]}";
	rules_set *rs = load_str(rule, err, sizeof err);
	if (!rs)
		fail_msg("%s", err);
	hdr_rec H = {0};
	json_t *j = json_loads("{\"kind\":\"json\",\"id\":\"req-7\",\"site\":\"north\"}", 0, NULL);
	tg_msg m = {.topic = "devices/dev-9/telemetry", .thing = "dev-9", .json = j, .payload = "{}", .payloadlen = 2};
	assert_int_equal(rules_eval(rs, &m, hdr_cb, &H, NULL), 1);
	json_decref(j);
	assert_int_equal(H.n, 7);
	static const char *const want[7][3] = {
		{"payloadFormatIndicator", "", "UTF8_DATA"}, {"contentType", "", "application/json"},
		{"responseTopic", "", "replies/dev-9"},      {"correlationData", "", "cmVxLTc="},
		{"messageExpiry", "", "60"},                 {"userProperties", "site", "north"},
		{"userProperties", "k-dev-9", "v"},
	};
	for (int i = 0; i < 7; i++) {
		assert_string_equal(H.kind[i], want[i][0]);
		assert_string_equal(H.key[i], want[i][1]);
		assert_string_equal(H.value[i], want[i][2]);
	}
	rules_set_free(rs);
	/* decoding: what goes on the wire, and what cannot */
	rules_header_val v;
	rules_header h = {RULES_HDR_CORRELATION_DATA, NULL, "cmVxLTc="};
	assert_int_equal(rules_header_decode(&h, &v, err, sizeof err), 0);
	assert_int_equal(v.binlen, 5);
	assert_memory_equal(v.bin, "req-7", 5);
	free(v.bin);
	h = (rules_header){RULES_HDR_MESSAGE_EXPIRY, NULL, "4294967295"};
	assert_int_equal(rules_header_decode(&h, &v, err, sizeof err), 0);
	assert_true(v.num == 4294967295u);
	h.value = "4294967296";
	assert_int_equal(rules_header_decode(&h, &v, err, sizeof err), TG_EINVAL);
	h = (rules_header){RULES_HDR_PAYLOAD_FORMAT, NULL, "UNSPECIFIED_BYTES"};
	assert_int_equal(rules_header_decode(&h, &v, err, sizeof err), 0);
	assert_int_equal(v.num, 0);
	/* literal values are checked at load, with the value's position */
	static const struct {
		const char *headers, *want;
	} bad[] = {
		{"{\"payloadFormatIndicator\": \"TEXT\"}", "headers.payloadFormatIndicator: 'TEXT' is neither"},
		{"{\"messageExpiry\": \"soon\"}", "headers.messageExpiry: 'soon' is not a number"},
		{"{\"correlationData\": \"not base64!\"}", "headers.correlationData"},
		{"{\"responseTopic\": \"a/+\"}", "headers.responseTopic"},
		{"{\"contentTyp\": \"x\"}", "unknown republish header 'contentTyp'"},
		{"{\"userProperties\": [{\"key\": \"k\"}]}", "a user property is"},
		{"{\"userProperties\": {\"k\": \"v\"}}", "headers.userProperties must be an array"},
		{"[1]", "republish \"headers\" must be an object"},
		{"{\"contentType\": \"${nope(}\"}", "in substitution template"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char text[512];
		snprintf(text, sizeof text,
			 "{\"sql\": \"SELECT * FROM 'a/b'\", \"actions\": [{\"republish\": {\"topic\": \"t\",\n"
			 "\"headers\": %s}}]}",
			 bad[i].headers);
		/* the error is positioned on line 2, where the headers are */
		rules_set *b = load_str(text, err, sizeof err);
		assert_null(b);
		if (strncmp(err, "r.json:2:", 9) != 0 || !strstr(err, bad[i].want) || strchr(err, '\n') != strrchr(err, '\n'))
			fail_msg("headers %s: got '%s', want one error '%s'", bad[i].headers, err, bad[i].want);
	}
}

/* A republish the broker refuses in its PUBACK fails after rules_eval returned: the
 * daemon runs the errorAction later through rules_run_error_action (issue 12 item 2). */
static void test_deferred_error_action(void **state)
{
	char err[1024];
	const char *rule = "{\"sql\": \"SET @t = temperature * 2 SELECT * FROM 'devices/+/telemetry'\", "
			   "\"actions\": [{\"republish\": {\"topic\": \"humid/${topic(2)}\", \"qos\": 1}}], "
			   "\"errorAction\": {\"republish\": {\"topic\": \"errors/${topic(2)}/${@t}\", \"qos\": 1}}}";
	rules_set *rs = rules_load_text("refused.json", rule, strlen(rule), NULL, err, sizeof err);
	if (!rs)
		fail_msg("%s", err);
	const char *payload = "{\"temperature\": 21.5}";
	json_t *j = json_loads(payload, 0, NULL);
	tg_msg m = {.topic = "devices/dev-4/telemetry", .thing = "dev-4", .client_id = "dev-4", .json = j,
		    .payload = payload, .payloadlen = strlen(payload)};
	recorder R = {0};
	rules_stats st = {0};
	assert_int_equal(rules_eval(rs, &m, rec_cb, &R, &st), 1);
	assert_int_equal(R.n, 1);
	assert_false(R.r[0].is_error);
	rec_clear(&R);
	assert_int_equal(rules_run_error_action(rs, "refused", &m, RULES_ACT_REPUBLISH, "humid/dev-4",
						"the broker refused the publish: Not authorized (135)", rec_cb, &R, &st),
			 1);
	assert_int_equal(R.n, 1);
	assert_true(R.r[0].is_error);
	assert_string_equal(R.r[0].topic, "errors/dev-4/43"); /* SET evaluated again (43.0: an Int in 2016-03-23) */
	json_t *fl = json_array_get(json_object_get(R.r[0].payload, "failures"), 0);
	assert_string_equal(json_string_value(json_object_get(fl, "failedAction")), "RepublishAction");
	assert_string_equal(json_string_value(json_object_get(fl, "failedResource")), "humid/dev-4");
	assert_string_equal(json_string_value(json_object_get(fl, "errorMessage")),
			    "the broker refused the publish: Not authorized (135)");
	assert_string_equal(json_string_value(json_object_get(R.r[0].payload, "ruleName")), "refused");
	assert_int_equal(st.actions, 2);
	rec_clear(&R);
	/* a rule that is gone (reloaded away) or has no errorAction: nothing runs */
	assert_int_equal(rules_run_error_action(rs, "gone", &m, RULES_ACT_REPUBLISH, "x", "y", rec_cb, &R, &st), 0);
	assert_int_equal(R.n, 0);
	json_decref(j);
	rules_set_free(rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trie_matching),
		cmocka_unit_test(test_trie_many_filters),
		cmocka_unit_test(test_topic_filter_validation),
		cmocka_unit_test(test_sql_error_positions),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_template_and_clear_positions),
		cmocka_unit_test(test_sink_names_checked),
		cmocka_unit_test(test_actions_fields),
		cmocka_unit_test(test_alert_idle_hook),
		cmocka_unit_test(test_alert_conditions),
		cmocka_unit_test(test_error_action_and_independence),
		cmocka_unit_test(test_regex_match_limit_isolated),
		cmocka_unit_test(test_mqtt_props_and_registry),
		cmocka_unit_test(test_concurrent_evaluation),
		cmocka_unit_test(test_reentrant_evaluation),
		cmocka_unit_test(test_cli_check),
		cmocka_unit_test(test_cli_check_sink_names),
		cmocka_unit_test(test_cli_test_output),
		cmocka_unit_test(test_cli_test),
		cmocka_unit_test(test_sql_version_refused),
		cmocka_unit_test(test_sql_version_per_rule),
		cmocka_unit_test(test_shipped_default_rules),
		cmocka_unit_test(test_shipped_examples),
		cmocka_unit_test(test_republish_headers),
		cmocka_unit_test(test_deferred_error_action),
		cmocka_unit_test(test_reload_adopts_counters),
		cmocka_unit_test(test_where_guard_groups),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
