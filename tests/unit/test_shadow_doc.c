/*
 * test_shadow_doc.c — the Device Shadow document logic (gateway/shadow/shadow_doc.c), table
 * driven: request topics; request documents with every error AWS lists (code and message);
 * merges (partial updates, nested objects, arrays replaced whole, null deleting a field or a
 * section, empty objects) with the resulting state, metadata and delta; the version lock;
 * the state cap with metadata left out; and the response documents.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "shadow/shadow_doc.h"

static const shadow_limits LIM = {.max_payload_bytes = 131072, .max_state_bytes = 8192};

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
	if (!v)
		fail_msg("bad test JSON %s: %s", text, e.text);
	return v;
}

static void assert_json(const json_t *got, const char *want)
{
	json_t *w = J(want);
	if (!json_equal((json_t *)got, w)) {
		char *g = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
		char *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		fail_msg("got %s\nwant %s", g ? g : "(null)", ws);
	}
	json_decref(w);
}

/* ---- topics -------------------------------------------------------------------------- */

static void test_topics(void **state)
{
	(void)state;
	static const struct {
		const char *topic;
		int rc, op;
		const char *thing, *name;
	} cases[] = {
		{"$aws/things/dev-1/shadow/update", 1, SHADOW_UPDATE, "dev-1", ""},
		{"$aws/things/dev-1/shadow/get", 1, SHADOW_GET, "dev-1", ""},
		{"$aws/things/dev-1/shadow/delete", 1, SHADOW_DELETE, "dev-1", ""},
		{"$aws/things/dev-1/shadow/name/cfg/update", 1, SHADOW_UPDATE, "dev-1", "cfg"},
		{"$aws/things/a:b_c-d/shadow/name/x:y_z-1/get", 1, SHADOW_GET, "a:b_c-d", "x:y_z-1"},
		{"$aws/things/dev-1/shadow/name/update/delete", 1, SHADOW_DELETE, "dev-1", "update"},
		/* responses and other topics are not requests */
		{"$aws/things/dev-1/shadow/update/accepted", 0, 0, NULL, NULL},
		{"$aws/things/dev-1/shadow/update/delta", 0, 0, NULL, NULL},
		{"$aws/things/dev-1/shadow/name/cfg/get/rejected", 0, 0, NULL, NULL},
		{"$aws/things/dev-1/shadow/name/update", 0, 0, NULL, NULL},
		{"$aws/things/dev-1/shadow/list", 0, 0, NULL, NULL},
		{"$aws/things/dev-1/jobs/get", 0, 0, NULL, NULL},
		{"$aws/things/dev-1", 0, 0, NULL, NULL},
		{"devices/dev-1/telemetry", 0, 0, NULL, NULL},
		{"$aws/events/presence/connected/dev-1", 0, 0, NULL, NULL},
		/* requests with names IoT Core refuses */
		{"$aws/things//shadow/update", -1, SHADOW_UPDATE, NULL, NULL},
		{"$aws/things/dev 1/shadow/get", -1, SHADOW_GET, NULL, NULL},
		{"$aws/things/dev.1/shadow/get", -1, SHADOW_GET, NULL, NULL},
		{"$aws/things/dev-1/shadow/name//update", -1, SHADOW_UPDATE, NULL, NULL},
		{"$aws/things/dev-1/shadow/name/a.b/update", -1, SHADOW_UPDATE, NULL, NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		shadow_topic t;
		shadow_error e = {0};
		int rc = shadow_topic_parse(cases[i].topic, &t, &e);
		if (rc != cases[i].rc)
			fail_msg("%s: rc %d, want %d", cases[i].topic, rc, cases[i].rc);
		if (rc == 0)
			continue;
		assert_int_equal(t.op, cases[i].op);
		assert_int_equal(t.len, strlen(cases[i].topic));
		if (rc > 0) {
			assert_string_equal(t.thing, cases[i].thing);
			assert_string_equal(t.name, cases[i].name);
		} else {
			assert_int_equal(e.code, 400);
			assert_true(strstr(e.message, "Invalid thing name") || strstr(e.message, "Invalid shadow name"));
		}
	}
	/* the length limits: 128 bytes of thing name, 64 of shadow name */
	char topic[512], name[200];
	memset(name, 'a', 128);
	name[128] = '\0';
	snprintf(topic, sizeof topic, "$aws/things/%s/shadow/get", name);
	shadow_topic t;
	assert_int_equal(shadow_topic_parse(topic, &t, NULL), 1);
	name[128] = 'a';
	name[129] = '\0';
	snprintf(topic, sizeof topic, "$aws/things/%s/shadow/get", name);
	assert_int_equal(shadow_topic_parse(topic, &t, NULL), -1);
	name[64] = '\0';
	snprintf(topic, sizeof topic, "$aws/things/t/shadow/name/%s/get", name);
	assert_int_equal(shadow_topic_parse(topic, &t, NULL), 1);
	name[64] = 'a';
	name[65] = '\0';
	snprintf(topic, sizeof topic, "$aws/things/t/shadow/name/%s/get", name);
	assert_int_equal(shadow_topic_parse(topic, &t, NULL), -1);
}

/* ---- request documents ---------------------------------------------------------------- */

static char *nested(int levels)
{
	static char buf[512];
	char *p = buf;
	p += sprintf(p, "{\"state\":{\"reported\":");
	for (int i = 0; i < levels; i++)
		p += sprintf(p, "{\"l%d\":", i);
	p += sprintf(p, "1");
	for (int i = 0; i < levels; i++)
		*p++ = '}';
	sprintf(p, "}}");
	return buf;
}

static void test_request_errors(void **state)
{
	(void)state;
	static const struct {
		int op;
		const char *payload;
		int code;        /* 0: accepted */
		const char *msg; /* the start of the message */
		const char *token;
	} cases[] = {
		{SHADOW_UPDATE, "{\"state\":{\"desired\":{\"a\":1}}}", 0, NULL, NULL},
		{SHADOW_UPDATE, "{\"state\":{}}", 0, NULL, NULL},
		{SHADOW_UPDATE, "{\"state\":{\"desired\":null,\"reported\":null},\"clientToken\":\"t\",\"version\":3}", 0, NULL, "t"},
		{SHADOW_UPDATE, "{\"state\":{\"reported\":{\"a\":[1,{\"b\":[2,3]},\"x\"]}}}", 0, NULL, NULL},
		{SHADOW_UPDATE, "{\"state\":{\"reported\":{\"a\":1}}, \"other\":{\"ignored\":true}}", 0, NULL, NULL},
		{SHADOW_UPDATE, "", 400, "Invalid JSON", NULL},
		{SHADOW_UPDATE, "{\"state\":", 400, "Invalid JSON", NULL},
		{SHADOW_UPDATE, "[1,2]", 400, "Invalid JSON", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"state\":{}}", 400, "Invalid JSON", NULL},
		{SHADOW_UPDATE, "{\"clientToken\":\"c\"}", 400, "Missing required node: state", "c"},
		{SHADOW_UPDATE, "{\"state\":[1],\"clientToken\":\"c\"}", 400, "State node must be an object", "c"},
		{SHADOW_UPDATE, "{\"state\":null}", 400, "State node must be an object", NULL},
		{SHADOW_UPDATE, "{\"state\":{\"desired\":5}}", 400, "Desired node must be an object", NULL},
		{SHADOW_UPDATE, "{\"state\":{\"reported\":\"x\"}}", 400, "Reported node must be an object", NULL},
		{SHADOW_UPDATE, "{\"state\":{\"delta\":{\"a\":1}}}", 400, "State contains an invalid node", NULL},
		{SHADOW_UPDATE, "{\"state\":{\"desired\":{\"a\":[1,null]}},\"clientToken\":\"n\"}", 400,
		 "State contains an invalid node: null inside an array at state.desired.a[1]", "n"},
		{SHADOW_UPDATE, "{\"state\":{\"reported\":{\"a\":[[{\"b\":null}]]}}}", 400, "State contains an invalid node", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"version\":\"3\"}", 400, "Invalid version", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"version\":-1}", 400, "Invalid version", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"version\":1.5}", 400, "Invalid version", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"clientToken\":7}", 400, "Invalid clientToken", NULL},
		{SHADOW_UPDATE,
		 "{\"state\":{},\"clientToken\":\"0123456789012345678901234567890123456789012345678901234567890123X\"}", 400,
		 "Invalid clientToken", NULL},
		{SHADOW_UPDATE, "{\"state\":{},\"clientToken\":\"0123456789012345678901234567890123456789012345678901234567890123\"}",
		 0, NULL, "0123456789012345678901234567890123456789012345678901234567890123"},
		{SHADOW_UPDATE, "{\"state\":{},\"clientToken\":\"a\\u0000b\"}", 400, "Invalid JSON", NULL},
		{SHADOW_UPDATE, "{\"state\":{\"reported\":{\"a\":\"\xff\"}}}", 415, "Unsupported documented encoding", NULL},
		{SHADOW_GET, "", 0, NULL, NULL},
		{SHADOW_GET, "{\"clientToken\":\"g1\",\"version\":\"ignored\"}", 0, NULL, "g1"},
		{SHADOW_GET, "not json", 400, "Invalid JSON", NULL},
		{SHADOW_DELETE, "", 0, NULL, NULL},
		{SHADOW_DELETE, "{\"version\":4,\"clientToken\":\"d\"}", 0, NULL, "d"},
		{SHADOW_DELETE, "{\"version\":\"x\",\"clientToken\":\"d\"}", 400, "Invalid version", "d"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		shadow_request req;
		shadow_error e = {0};
		int rc = shadow_request_parse(cases[i].op, cases[i].payload, strlen(cases[i].payload), &LIM, &req, &e);
		if (cases[i].code == 0 && rc != 0)
			fail_msg("case %zu (%s): rejected %d %s", i, cases[i].payload, e.code, e.message);
		if (cases[i].code) {
			if (rc == 0 || e.code != cases[i].code || strncmp(e.message, cases[i].msg, strlen(cases[i].msg)) != 0)
				fail_msg("case %zu (%s): got rc=%d %d \"%s\", want %d \"%s\"", i, cases[i].payload, rc, e.code,
					 e.message, cases[i].code, cases[i].msg);
		}
		if (cases[i].token)
			assert_string_equal(req.client_token, cases[i].token);
		else
			assert_null(req.client_token);
		shadow_request_free(&req);
	}
}

static void test_request_limits(void **state)
{
	(void)state;
	shadow_request req;
	shadow_error e;
	/* six levels inside a section are allowed, seven are not */
	const char *six = nested(6);
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, six, strlen(six), &LIM, &req, &e), 0);
	shadow_request_free(&req);
	const char *seven = nested(7);
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, seven, strlen(seven), &LIM, &req, &e), -1);
	assert_int_equal(e.code, 400);
	assert_non_null(strstr(e.message, "JSON contains too many levels of nesting; maximum is 6"));
	if (!strstr(e.message, "state.reported.l0.l1.l2.l3.l4.l5"))
		fail_msg("the message names the place: %s", e.message);
	shadow_request_free(&req);
	/* an array is a level too */
	const char *arr = "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":[[1]]}}}}}}}";
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, arr, strlen(arr), &LIM, &req, &e), -1);
	assert_int_equal(e.code, 400);
	shadow_request_free(&req);
	/* 413: the request as received, and the request's own state over the state cap */
	static char big[20000];
	int n = snprintf(big, sizeof big, "{\"state\":{\"reported\":{\"s\":\"");
	memset(big + n, 'x', 8200);
	strcpy(big + n + 8200, "\"}}}");
	shadow_limits small = {.max_payload_bytes = 1000, .max_state_bytes = 8192};
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, big, strlen(big), &small, &req, &e), -1);
	assert_int_equal(e.code, 413);
	assert_non_null(strstr(e.message, "The payload exceeds the maximum size allowed"));
	shadow_request_free(&req);
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, big, strlen(big), &LIM, &req, &e), -1);
	assert_int_equal(e.code, 413);
	shadow_request_free(&req);
	/* a parse-time nesting bomb is the nesting error, not invalid JSON */
	static char deep[4000];
	char *p = deep;
	for (int i = 0; i < 1000; i++)
		*p++ = '[';
	*p = '\0';
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, deep, strlen(deep), &LIM, &req, &e), -1);
	assert_int_equal(e.code, 400);
	assert_non_null(strstr(e.message, "too many levels"));
	shadow_request_free(&req);
}

/* ---- merge, metadata, delta ----------------------------------------------------------- */

/* Apply each update in turn to an empty shadow at ts 100, 101, …; compare state and delta. */
static void test_merges(void **state)
{
	(void)state;
	static const struct {
		const char *doc;        /* what the case shows (from the developer guide's sections) */
		const char *updates[4]; /* applied in order */
		const char *state;      /* the resulting state */
		const char *delta;      /* the resulting delta, or NULL for none */
	} cases[] = {
		{"only the fields given change",
		 {"{\"state\":{\"reported\":{\"a\":1,\"b\":2}}}", "{\"state\":{\"reported\":{\"b\":3}}}"},
		 "{\"reported\":{\"a\":1,\"b\":3}}", NULL},
		{"nested objects merge",
		 {"{\"state\":{\"reported\":{\"color\":{\"r\":255,\"g\":255,\"b\":0}}}}",
		  "{\"state\":{\"desired\":{\"color\":{\"r\":10},\"engine\":\"ON\"}}}"},
		 "{\"reported\":{\"color\":{\"r\":255,\"g\":255,\"b\":0}},\"desired\":{\"color\":{\"r\":10},\"engine\":\"ON\"}}",
		 "{\"color\":{\"r\":10},\"engine\":\"ON\"}"},
		{"arrays replace whole",
		 {"{\"state\":{\"desired\":{\"colors\":[\"red\",\"green\",\"blue\"]}}}",
		  "{\"state\":{\"desired\":{\"colors\":[\"white\"]}}}"},
		 "{\"desired\":{\"colors\":[\"white\"]}}", "{\"colors\":[\"white\"]}"},
		{"an array equal to reported is no delta",
		 {"{\"state\":{\"desired\":{\"l\":[1,{\"x\":2}]},\"reported\":{\"l\":[1,{\"x\":2}]}}}"},
		 "{\"desired\":{\"l\":[1,{\"x\":2}]},\"reported\":{\"l\":[1,{\"x\":2}]}}", NULL},
		{"null deletes a field",
		 {"{\"state\":{\"desired\":{\"a\":1,\"b\":2}}}", "{\"state\":{\"desired\":{\"a\":null}}}"},
		 "{\"desired\":{\"b\":2}}", "{\"b\":2}"},
		{"null deletes a nested field, an emptied object goes",
		 {"{\"state\":{\"reported\":{\"o\":{\"x\":1},\"k\":1}}}", "{\"state\":{\"reported\":{\"o\":{\"x\":null}}}}"},
		 "{\"reported\":{\"k\":1}}", NULL},
		{"a null section removes the section",
		 {"{\"state\":{\"desired\":{\"a\":1},\"reported\":{\"a\":2}}}", "{\"state\":{\"desired\":null}}"},
		 "{\"reported\":{\"a\":2}}", NULL},
		{"both sections null: an empty state",
		 {"{\"state\":{\"desired\":{\"a\":1},\"reported\":{\"a\":2}}}",
		  "{\"state\":{\"desired\":null,\"reported\":null}}"},
		 "{}", NULL},
		{"an empty object carries no state",
		 {"{\"state\":{\"desired\":{\"a\":{}},\"reported\":{}}}"}, "{}", NULL},
		{"an object replaces a value, a value replaces an object",
		 {"{\"state\":{\"reported\":{\"a\":5,\"b\":{\"c\":1}}}}", "{\"state\":{\"reported\":{\"a\":{\"x\":1},\"b\":7}}}"},
		 "{\"reported\":{\"a\":{\"x\":1},\"b\":7}}", NULL},
		{"nulls inside a new object are not stored",
		 {"{\"state\":{\"reported\":{\"n\":{\"a\":null,\"b\":1}}}}"}, "{\"reported\":{\"n\":{\"b\":1}}}", NULL},
		{"delta: only the desired fields that differ, stored or new",
		 {"{\"state\":{\"desired\":{\"a\":1,\"b\":2,\"c\":3},\"reported\":{\"a\":1,\"b\":0,\"z\":9}}}"},
		 "{\"desired\":{\"a\":1,\"b\":2,\"c\":3},\"reported\":{\"a\":1,\"b\":0,\"z\":9}}", "{\"b\":2,\"c\":3}"},
		{"delta: numbers compare by value",
		 {"{\"state\":{\"desired\":{\"t\":21},\"reported\":{\"t\":21.0}}}"}, "{\"desired\":{\"t\":21},\"reported\":{\"t\":21.0}}",
		 NULL},
		{"delta: a reported update can clear it",
		 {"{\"state\":{\"desired\":{\"on\":true}}}", "{\"state\":{\"reported\":{\"on\":true}}}"},
		 "{\"desired\":{\"on\":true},\"reported\":{\"on\":true}}", NULL},
		{"delta: types differ",
		 {"{\"state\":{\"desired\":{\"v\":\"1\",\"o\":{\"x\":1}},\"reported\":{\"v\":1,\"o\":5}}}"},
		 "{\"desired\":{\"v\":\"1\",\"o\":{\"x\":1}},\"reported\":{\"v\":1,\"o\":5}}", "{\"v\":\"1\",\"o\":{\"x\":1}}"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		shadow_doc d;
		assert_int_equal(shadow_doc_init(&d), 0);
		int n = 0;
		for (; n < 4 && cases[i].updates[n]; n++) {
			shadow_request req;
			shadow_error e;
			const char *u = cases[i].updates[n];
			if (shadow_request_parse(SHADOW_UPDATE, u, strlen(u), &LIM, &req, &e))
				fail_msg("%s: %s rejected: %s", cases[i].doc, u, e.message);
			assert_int_equal(shadow_doc_apply(&d, &req, 100 + n, &LIM, &e), 0);
			shadow_request_free(&req);
		}
		assert_int_equal(d.version, n);
		print_message("  %s\n", cases[i].doc);
		assert_json(d.state, cases[i].state);
		json_t *delta = shadow_delta(d.state);
		if (cases[i].delta)
			assert_json(delta, cases[i].delta);
		else if (delta)
			fail_msg("%s: unexpected delta %s", cases[i].doc, json_dumps(delta, JSON_COMPACT));
		json_decref(delta);
		/* metadata has the state's shape: every state member has a metadata member */
		const char *k;
		json_t *v;
		json_object_foreach(d.state, k, v) {
			json_t *m = json_object_get(d.metadata, k);
			assert_non_null(m);
			assert_int_equal(json_object_size(m), json_object_size(v));
		}
		assert_int_equal(json_object_size(d.metadata), json_object_size(d.state));
		shadow_doc_free(&d);
	}
}

static shadow_doc apply_all(const char *const *updates, size_t n)
{
	shadow_doc d;
	assert_int_equal(shadow_doc_init(&d), 0);
	for (size_t i = 0; i < n; i++) {
		shadow_request req;
		shadow_error e;
		assert_int_equal(shadow_request_parse(SHADOW_UPDATE, updates[i], strlen(updates[i]), &LIM, &req, &e), 0);
		assert_int_equal(shadow_doc_apply(&d, &req, 1000 + (int64_t)i, &LIM, &e), 0);
		shadow_request_free(&req);
	}
	return d;
}

static void test_metadata(void **state)
{
	(void)state;
	const char *u[] = {
		"{\"state\":{\"reported\":{\"a\":1,\"o\":{\"x\":1,\"y\":2},\"arr\":[1,{\"k\":2}]}}}",
		"{\"state\":{\"reported\":{\"o\":{\"y\":3}},\"desired\":{\"a\":2}}}",
		"{\"state\":{\"reported\":{\"a\":null}}}",
	};
	shadow_doc d = apply_all(u, 3);
	assert_json(d.metadata, "{\"reported\":{\"o\":{\"x\":{\"timestamp\":1000},\"y\":{\"timestamp\":1001}},"
				"\"arr\":[{\"timestamp\":1000},{\"k\":{\"timestamp\":1000}}]},"
				"\"desired\":{\"a\":{\"timestamp\":1001}}}");
	assert_int_equal(d.version, 3);
	/* the stored texts load back to the same document */
	char *st = json_dumps(d.state, JSON_COMPACT), *me = json_dumps(d.metadata, JSON_COMPACT);
	shadow_doc back;
	assert_int_equal(shadow_doc_load(&back, st, strlen(st), me, strlen(me), 3), 0);
	assert_true(json_equal(back.state, d.state) && json_equal(back.metadata, d.metadata));
	shadow_doc_free(&back);
	assert_int_equal(shadow_doc_load(&back, "{bad", 4, NULL, 0, 1), TG_EPARSE);
	assert_int_equal(shadow_doc_load(&back, NULL, 0, NULL, 0, 5), 0);
	assert_int_equal(json_object_size(back.state), 0);
	assert_int_equal(back.version, 5);
	shadow_doc_free(&back);
	free(st);
	free(me);
	shadow_doc_free(&d);
}

static void test_version_and_size(void **state)
{
	(void)state;
	shadow_request req;
	shadow_error e;
	const char *u = "{\"state\":{},\"version\":4}";
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, u, strlen(u), &LIM, &req, &e), 0);
	assert_int_equal(shadow_check_version(&req, 4, &e), 0);
	assert_int_equal(shadow_check_version(&req, 5, &e), -1);
	assert_int_equal(e.code, 409);
	assert_string_equal(strstr(e.message, "Version conflict") == e.message ? "ok" : e.message, "ok");
	shadow_request_free(&req);
	const char *nov = "{\"state\":{}}";
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, nov, strlen(nov), &LIM, &req, &e), 0);
	assert_int_equal(shadow_check_version(&req, 77, &e), 0);
	shadow_request_free(&req);

	/* the state cap counts desired + reported as compact JSON, never the metadata: 300
	 * small fields fit in 8 KiB although their metadata alone is over it */
	shadow_doc d;
	assert_int_equal(shadow_doc_init(&d), 0);
	char buf[1024];
	for (int i = 0; i < 300; i++) {
		snprintf(buf, sizeof buf, "{\"state\":{\"reported\":{\"field_%03d\":\"v\"}}}", i);
		assert_int_equal(shadow_request_parse(SHADOW_UPDATE, buf, strlen(buf), &LIM, &req, &e), 0);
		assert_int_equal(shadow_doc_apply(&d, &req, 1796460099, &LIM, &e), 0);
		shadow_request_free(&req);
	}
	size_t sb = shadow_state_bytes(d.state), mb = shadow_state_bytes(d.metadata);
	assert_true(sb < 8192 && mb > 8192);
	/* one more field of 4 KiB takes the state over the cap: 413 */
	char big[4400];
	int n = snprintf(big, sizeof big, "{\"state\":{\"desired\":{\"x\":\"");
	memset(big + n, 'y', 4096);
	strcpy(big + n + 4096, "\"}}}");
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, big, strlen(big), &LIM, &req, &e), 0);
	assert_int_equal(shadow_doc_apply(&d, &req, 2, &LIM, &e), 1);
	assert_int_equal(e.code, 413);
	assert_non_null(strstr(e.message, "The payload exceeds the maximum size allowed"));
	shadow_request_free(&req);
	shadow_doc_free(&d);
}

/* ---- responses ----------------------------------------------------------------------- */

static void test_responses(void **state)
{
	(void)state;
	const char *u[] = {"{\"state\":{\"reported\":{\"t\":20,\"mode\":\"eco\"}}}"};
	shadow_doc prev = apply_all(u, 1), cur;
	assert_int_equal(shadow_doc_copy(&cur, &prev), 0);
	shadow_request req;
	shadow_error e;
	const char *up = "{\"state\":{\"desired\":{\"t\":22,\"mode\":null,\"fan\":{\"speed\":2}}},\"clientToken\":\"ct\"}";
	assert_int_equal(shadow_request_parse(SHADOW_UPDATE, up, strlen(up), &LIM, &req, &e), 0);
	assert_int_equal(shadow_doc_apply(&cur, &req, 2000, &LIM, &e), 0);

	json_t *acc = shadow_resp_accepted(&req, cur.version, 2000);
	assert_json(acc, "{\"state\":{\"desired\":{\"t\":22,\"mode\":null,\"fan\":{\"speed\":2}}},"
			 "\"metadata\":{\"desired\":{\"t\":{\"timestamp\":2000},\"mode\":{\"timestamp\":2000},"
			 "\"fan\":{\"speed\":{\"timestamp\":2000}}}},\"version\":2,\"timestamp\":2000,\"clientToken\":\"ct\"}");
	json_decref(acc);

	json_t *delta = shadow_delta(cur.state);
	assert_json(delta, "{\"t\":22,\"fan\":{\"speed\":2}}");
	json_t *dm = shadow_resp_delta(&cur, delta, 2000, "ct");
	assert_json(dm, "{\"version\":2,\"timestamp\":2000,\"state\":{\"t\":22,\"fan\":{\"speed\":2}},"
			"\"metadata\":{\"t\":{\"timestamp\":2000},\"fan\":{\"speed\":{\"timestamp\":2000}}},\"clientToken\":\"ct\"}");
	json_decref(dm);
	json_decref(delta);

	json_t *docs = shadow_resp_documents(&prev, &cur, 2000, "ct");
	assert_json(json_object_get(docs, "previous"),
		    "{\"state\":{\"reported\":{\"t\":20,\"mode\":\"eco\"}},\"metadata\":{\"reported\":{\"t\":{\"timestamp\":1000},"
		    "\"mode\":{\"timestamp\":1000}}},\"version\":1}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(docs, "current"), "version")), 2);
	assert_string_equal(json_string_value(json_object_get(docs, "clientToken")), "ct");
	json_decref(docs);
	docs = shadow_resp_documents(NULL, &cur, 2000, NULL);
	assert_null(json_object_get(docs, "previous"));
	assert_null(json_object_get(docs, "clientToken"));
	json_decref(docs);

	json_t *get = shadow_resp_get(&cur, 2001, "g");
	assert_json(json_object_get(get, "state"), "{\"reported\":{\"t\":20,\"mode\":\"eco\"},"
						   "\"desired\":{\"t\":22,\"fan\":{\"speed\":2}},\"delta\":{\"t\":22,\"fan\":{\"speed\":2}}}");
	assert_true(json_equal(json_object_get(get, "metadata"), cur.metadata));
	assert_int_equal(json_integer_value(json_object_get(get, "timestamp")), 2001);
	json_decref(get);

	json_t *del = shadow_resp_deleted(2, 3000, NULL);
	assert_json(del, "{\"version\":2,\"timestamp\":3000}");
	json_decref(del);
	shadow_error err = {404, "No shadow exists with name: 'x'"};
	json_t *rej = shadow_resp_error(&err, 3000, "tok");
	assert_json(rej, "{\"code\":404,\"message\":\"No shadow exists with name: 'x'\",\"timestamp\":3000,\"clientToken\":\"tok\"}");
	json_decref(rej);
	shadow_request_free(&req);
	shadow_doc_free(&prev);
	shadow_doc_free(&cur);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topics),        cmocka_unit_test(test_request_errors),
		cmocka_unit_test(test_request_limits), cmocka_unit_test(test_merges),
		cmocka_unit_test(test_metadata),      cmocka_unit_test(test_version_and_size),
		cmocka_unit_test(test_responses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
