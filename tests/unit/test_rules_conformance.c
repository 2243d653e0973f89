/*
 * test_rules_conformance.c — the data-driven IoT SQL conformance suite.
 *
 * Reads tests/rules/conformance.test (or $TG_RULES_CONFORMANCE): blocks separated by
 * blank lines, each with
 *   doc:      the AWS IoT developer guide section the case comes from (required)
 *   sql:      the statement
 *   topic:    message topic (default devices/dev-1/telemetry)
 *   input:    JSON payload (default {})
 *   template: an action template; the republish topic is set to it
 * and exactly one expectation:
 *   output:   the expected SELECT output (any JSON; numbers compare with 1e-9 tolerance)
 *   expanded: the expected expansion of `template`
 *   nomatch   the rule must not fire (FROM does not match or WHERE is not true)
 *   error: COL TEXT   loading must fail at 1-based column COL of the SQL with TEXT in the
 *                     message
 * Every block becomes its own cmocka test named after its line and doc section. The
 * message context is fixed: thing dev-1, client id client-1, principal principal-1,
 * received at 1700000000000 ms.
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

#include "rules/rules.h"
#include "rules/rules_int.h"

typedef struct tcase {
	int line;
	char *doc, *sql, *topic, *input, *tmpl, *output, *expanded, *error;
	int nomatch;
	char name[160];
} tcase;

static int approx_equal(json_t *a, json_t *b)
{
	if (json_is_number(a) && json_is_number(b)) {
		if (json_is_integer(a) != json_is_integer(b))
			return 0; /* Int and Decimal are different types: 10 is not 10.0 */
		double x = json_number_value(a), y = json_number_value(b);
		return fabs(x - y) <= 1e-9 * (fabs(x) > 1 ? fabs(x) : 1);
	}
	if (json_typeof(a) != json_typeof(b))
		return 0;
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!approx_equal(json_array_get(a, i), json_array_get(b, i)))
				return 0;
		return 1;
	}
	if (json_is_object(a)) {
		const char *k;
		json_t *v;
		if (json_object_size(a) != json_object_size(b))
			return 0;
		json_object_foreach(a, k, v)
		{
			json_t *w = json_object_get(b, k);
			if (!w || !approx_equal(v, w))
				return 0;
		}
		return 1;
	}
	return json_equal(a, b);
}

typedef struct capture {
	int calls;
	json_t *payload;
	char *topic;
} capture;

static int cap_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	capture *c = ud;
	c->calls++;
	if (!c->payload && a->payload)
		c->payload = json_incref(a->payload);
	if (!c->topic && a->topic)
		c->topic = strdup(a->topic);
	return 0;
}

static void run_case(void **state)
{
	tcase *tc = *state;
	char err[1024];
	json_t *rule = json_pack("{s:s, s:[{s:{s:s}}]}", "sql", tc->sql, "actions", "republish", "topic",
				 tc->tmpl ? tc->tmpl : "out");
	assert_non_null(rule);
	char *text = json_dumps(rule, JSON_COMPACT);
	json_decref(rule);
	rules_set *rs = rules_load_text("case.json", text, strlen(text), NULL, err, sizeof err);
	free(text);
	if (tc->error) {
		int col = atoi(tc->error);
		const char *want = strchr(tc->error, ' ');
		want = want ? want + 1 : "";
		if (rs) {
			rules_set_free(rs);
			fail_msg("line %d: expected a load error, the rule loaded", tc->line);
		}
		size_t pos = 0;
		char msg[256] = "";
		rules_stmt *st = rules_parse_stmt(tc->sql, strlen(tc->sql), &pos, msg, sizeof msg);
		rules_stmt_free(st);
		if (!st) {
			if ((int)pos + 1 != col || !strstr(msg, want))
				fail_msg("line %d: got error at col %zu '%s', want col %d '%s'", tc->line, pos + 1, msg,
					 col, want);
		} else if (!strstr(err, want)) {
			fail_msg("line %d: load error '%s' does not contain '%s'", tc->line, err, want);
		}
		return;
	}
	if (!rs)
		fail_msg("line %d: load failed: %s", tc->line, err);
	const char *input = tc->input ? tc->input : "{}";
	json_t *j = json_loads(input, JSON_DECODE_ANY, NULL);
	tg_msg m = {
		.topic = tc->topic ? tc->topic : "devices/dev-1/telemetry",
		.thing = "dev-1",
		.client_id = "client-1",
		.principal = "principal-1",
		.payload = input,
		.payloadlen = strlen(input),
		.json = json_is_object(j) ? j : NULL,
		.received_ms = 1700000000000LL,
		.qos = 1,
	};
	capture cap = {0};
	rules_stats st = {0};
	int n = rules_eval(rs, &m, cap_cb, &cap, &st);
	rules_set_free(rs);
	json_decref(j);
	char *got = cap.payload ? json_dumps(cap.payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	int ok = 1;
	char why[512] = "";
	if (tc->nomatch) {
		ok = n == 0 && cap.calls == 0;
		snprintf(why, sizeof why, "expected no match, got %s", got ? got : "(no payload)");
	} else if (n != 1 || cap.calls != 1) {
		ok = 0;
		snprintf(why, sizeof why, "expected a match, rules_eval=%d calls=%d eval_errors=%llu", n, cap.calls,
			 (unsigned long long)st.eval_errors);
	} else if (tc->expanded) {
		ok = cap.topic && strcmp(cap.topic, tc->expanded) == 0;
		snprintf(why, sizeof why, "expanded '%s', want '%s'", cap.topic ? cap.topic : "(null)", tc->expanded);
	} else if (tc->output) {
		json_t *want = json_loads(tc->output, JSON_DECODE_ANY, NULL);
		if (!want) {
			ok = 0;
			snprintf(why, sizeof why, "bad expected JSON");
		} else {
			ok = cap.payload && approx_equal(want, cap.payload);
			snprintf(why, sizeof why, "got %s, want %s", got ? got : "(none)", tc->output);
		}
		json_decref(want);
	}
	free(got);
	json_decref(cap.payload);
	free(cap.topic);
	if (!ok)
		fail_msg("line %d (%s): %s\n  sql: %s", tc->line, tc->doc, why, tc->sql);
}

static char *trimdup(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	return strndup(s, n);
}

static void case_free(tcase *c)
{
	free(c->doc);
	free(c->sql);
	free(c->topic);
	free(c->input);
	free(c->tmpl);
	free(c->output);
	free(c->expanded);
	free(c->error);
}

int main(void)
{
	const char *path = getenv("TG_RULES_CONFORMANCE");
	if (!path)
		path = "tests/rules/conformance.test";
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "cannot open %s (run from the repository root)\n", path);
		return 1;
	}
	tcase *cases = NULL;
	size_t n = 0, cap = 0;
	char line[8192];
	int lineno = 0, in_block = 0, bad = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		if (line[0] == '#')
			continue;
		if (line[0] == '\n' || line[0] == '\r') {
			in_block = 0;
			continue;
		}
		if (!in_block) {
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				cases = realloc(cases, sizeof *cases * cap);
				if (!cases)
					return 1;
			}
			memset(&cases[n], 0, sizeof cases[n]);
			cases[n].line = lineno;
			n++;
			in_block = 1;
		}
		tcase *c = &cases[n - 1];
		char *colon = strchr(line, ':');
		if (strncmp(line, "nomatch", 7) == 0) {
			c->nomatch = 1;
			continue;
		}
		if (!colon) {
			fprintf(stderr, "%s:%d: expected key: value\n", path, lineno);
			bad = 1;
			continue;
		}
		*colon = '\0';
		char *v = trimdup(colon + 1);
		char **slot = !strcmp(line, "doc")	? &c->doc
			      : !strcmp(line, "sql")	? &c->sql
			      : !strcmp(line, "topic")	? &c->topic
			      : !strcmp(line, "input")	? &c->input
			      : !strcmp(line, "template") ? &c->tmpl
			      : !strcmp(line, "output")	? &c->output
			      : !strcmp(line, "expanded") ? &c->expanded
			      : !strcmp(line, "error")	? &c->error
							: NULL;
		if (!slot) {
			fprintf(stderr, "%s:%d: unknown key '%s'\n", path, lineno, line);
			free(v);
			bad = 1;
			continue;
		}
		free(*slot);
		*slot = v;
	}
	fclose(f);
	struct CMUnitTest *tests = calloc(n + 1, sizeof *tests);
	for (size_t i = 0; i < n; i++) {
		tcase *c = &cases[i];
		int expectations = !!c->output + !!c->expanded + !!c->error + c->nomatch;
		if (!c->doc || !c->sql || expectations != 1) {
			fprintf(stderr, "%s:%d: a case needs doc, sql and exactly one expectation\n", path, c->line);
			bad = 1;
		}
		snprintf(c->name, sizeof c->name, "line %d %s", c->line, c->doc ? c->doc : "?");
		tests[i].name = c->name;
		tests[i].test_func = run_case;
		tests[i].initial_state = c;
	}
	if (n < 200) {
		fprintf(stderr, "%s: only %zu cases (the suite promises at least 200)\n", path, n);
		bad = 1;
	}
	int rc = bad ? 1 : _cmocka_run_group_tests("rules_conformance", tests, n, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		case_free(&cases[i]);
	free(cases);
	free(tests);
	return rc;
}
