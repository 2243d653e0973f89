/*
 * test_schema.c — schema loading, raw payload checks, validation, conversions and timestamp
 * normalisation. Expected values are computed independently where possible (timegm for
 * RFC 3339, the textbook F->C formula) rather than copied from the implementation.
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

#include "core/err.h"
#include "core/timefmt.h"
#include "edge/schema.h"

static schema_set *load(const char *text)
{
	char err[1024];
	schema_set *s = schema_load_buffer("test.json", text, strlen(text), err, sizeof err);
	if (!s)
		fail_msg("load failed: %s", err);
	return s;
}

static json_t *js(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad test json %s: %s", text, e.text);
	return j;
}

/* ---- raw payload -------------------------------------------------------------------------- */

static void expect_parse_reason(const char *buf, size_t len, const schema_limits *lim,
				schema_reason want)
{
	schema_reject why;
	schema_stats st = {0};
	json_t *j = schema_parse_payload(buf, len, lim, &why, &st);
	if (want == SCHEMA_R_NONE) {
		assert_non_null(j);
		json_decref(j);
		return;
	}
	assert_null(j);
	assert_int_equal(why.reason, want);
	assert_int_equal(st.rejected[want], 1);
}

static void test_parse_payload(void **state)
{
	(void)state;
	const char ok[] = "{\"a\":1,\"b\":\"h\xc3\xa9llo\"}";
	expect_parse_reason(ok, strlen(ok), NULL, SCHEMA_R_NONE);
	/* size cap: exactly at the cap passes, one over fails */
	schema_limits lim = {.max_bytes = strlen(ok)};
	expect_parse_reason(ok, strlen(ok), &lim, SCHEMA_R_NONE);
	lim.max_bytes = strlen(ok) - 1;
	expect_parse_reason(ok, strlen(ok), &lim, SCHEMA_R_TOO_LARGE);
	/* default cap is 128 KiB */
	size_t big = 128 * 1024 + 1;
	char *b = malloc(big);
	memset(b, ' ', big);
	b[0] = '{';
	b[big - 1] = '}';
	expect_parse_reason(b, big, NULL, SCHEMA_R_TOO_LARGE);
	expect_parse_reason(b, big - 1, NULL, SCHEMA_R_BAD_JSON); /* fits, but no closing brace */
	b[big - 2] = '}';
	expect_parse_reason(b, big - 1, NULL, SCHEMA_R_NONE);
	free(b);
	/* UTF-8: overlong, surrogate, truncated, stray continuation, > U+10FFFF */
	expect_parse_reason("{\"a\":\"\xc0\x80\"}", 10, NULL, SCHEMA_R_INVALID_UTF8);
	expect_parse_reason("{\"a\":\"\xed\xa0\x80\"}", 11, NULL, SCHEMA_R_INVALID_UTF8);
	expect_parse_reason("{\"a\":\"\xe2\x82\"}", 10, NULL, SCHEMA_R_INVALID_UTF8);
	expect_parse_reason("{\"a\":\"\x80\"}", 9, NULL, SCHEMA_R_INVALID_UTF8);
	expect_parse_reason("{\"a\":\"\xf4\x90\x80\x80\"}", 12, NULL, SCHEMA_R_INVALID_UTF8);
	expect_parse_reason("{\"a\":\"\xf0\x9f\x98\x80\"}", 12, NULL, SCHEMA_R_NONE); /* emoji ok */
	/* depth: brackets inside strings do not count */
	schema_limits d3 = {.max_depth = 3};
	const char deep3[] = "{\"a\":{\"b\":[1]}}";
	const char deep4[] = "{\"a\":{\"b\":[[1]]}}";
	const char instr[] = "{\"a\":\"[[[[[[{{{{\\\"[[[\"}";
	expect_parse_reason(deep3, strlen(deep3), &d3, SCHEMA_R_NONE);
	expect_parse_reason(deep4, strlen(deep4), &d3, SCHEMA_R_TOO_DEEP);
	expect_parse_reason(instr, strlen(instr), &d3, SCHEMA_R_NONE);
	char deep[200];
	for (int i = 0; i < 100; i++) {
		deep[i] = '[';
		deep[100 + i] = ']';
	}
	expect_parse_reason(deep, 200, NULL, SCHEMA_R_TOO_DEEP);
	/* syntax, duplicates, non-objects */
	expect_parse_reason("{\"a\":", 5, NULL, SCHEMA_R_BAD_JSON);
	expect_parse_reason("", 0, NULL, SCHEMA_R_BAD_JSON);
	expect_parse_reason("{\"a\":1,\"a\":2}", 13, NULL, SCHEMA_R_DUPLICATE_KEY);
	expect_parse_reason("[1,2]", 5, NULL, SCHEMA_R_NOT_OBJECT);
	expect_parse_reason("42", 2, NULL, SCHEMA_R_NOT_OBJECT);
	expect_parse_reason("\"x\"", 3, NULL, SCHEMA_R_NOT_OBJECT);
	expect_parse_reason("{\"a\":\"\\u0000\"}", 14, NULL, SCHEMA_R_BAD_JSON);
}

/* A NUL in a device's string is refused in the device's terms: the detail names the
 * character and where it is, never a jansson flag (issue 12 item 16). */
static void test_parse_payload_nul_detail(void **state)
{
	(void)state;
	static const char *const bad[] = {"{\"a\":\"x\\u0000y\"}", "{\"a\\u0000\":1}"};
	for (size_t i = 0; i < 2; i++) {
		schema_reject why = {0};
		json_t *j = schema_parse_payload(bad[i], strlen(bad[i]), NULL, &why, NULL);
		assert_null(j);
		assert_int_equal(why.reason, SCHEMA_R_BAD_JSON);
		if (strstr(why.text, "JSON_") || !strstr(why.text, "\\u0000 (a NUL character)") ||
		    strncmp(why.text, "1:", 2) != 0)
			fail_msg("detail for %s: %s", bad[i], why.text);
	}
}

/* schema_parse_payload has its own JSON parser (falling back to jansson when in doubt); it
 * must agree with jansson: same value when it accepts, a rejection when jansson rejects. */
static void expect_same_as_jansson(const char *buf, size_t len)
{
	schema_reject why = {0};
	schema_limits lim = {.max_depth = 64};
	json_t *o = schema_parse_payload(buf, len, &lim, &why, NULL);
	json_t *ref = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	if (o && (!ref || !json_equal(o, ref)))
		fail_msg("accepted differently from jansson: %.*s", (int)len, buf);
	if (!o && ref && json_is_object(ref))
		fail_msg("rejected (%s) an object jansson accepts: %.*s", schema_reason_name(why.reason),
			 (int)len, buf);
	json_decref(o);
	json_decref(ref);
}

static json_t *random_value(unsigned *seed, int depth)
{
	static const char *const strs[] = {"", "plain", "with \"quotes\" and \\", "tab\tnl\ncr\r",
					   "\x01ctl", "caf\xc3\xa9", "\xe2\x82\xac euro", "\xf0\x9f\x98\x80",
					   "slash/", "\x7f"};
	int k = rand_r(seed) % (depth > 4 ? 6 : 8);
	switch (k) {
	case 0: return json_integer((json_int_t)rand_r(seed) * (rand_r(seed) % 2 ? 1 : -1) *
				    (rand_r(seed) % 3 ? 1 : 100000000LL));
	case 1: return json_real((rand_r(seed) - RAND_MAX / 2) / (double)(1 + rand_r(seed) % 100000) *
				 (rand_r(seed) % 4 ? 1.0 : 1e-300));
	case 2: return json_string(strs[rand_r(seed) % 10]);
	case 3: return json_true();
	case 4: return json_null();
	case 5: return json_real(rand_r(seed) % 2 ? 1e300 * 10 : 0.1);
	case 6: {
		json_t *a = json_array();
		int n = rand_r(seed) % 4;
		for (int i = 0; i < n; i++)
			json_array_append_new(a, random_value(seed, depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		int n = rand_r(seed) % 5;
		for (int i = 0; i < n; i++) {
			char key[16];
			snprintf(key, sizeof key, "%s%d", i % 2 ? "k\xc3\xa9y" : "k", rand_r(seed) % 10);
			json_object_set_new(o, key, random_value(seed, depth + 1));
		}
		return o;
	}
	}
}

static void test_parser_matches_jansson(void **state)
{
	(void)state;
	static const char *const cases[] = {
		"{}", "{ }", " {\"a\" : 1 } ", "{\"a\":[]}", "{\"a\":[1,2,[3,[4]]]}", "{\"a\":-0}",
		"{\"a\":0.5e-3,\"b\":1E+2,\"c\":-1.25E-2}", "{\"a\":9223372036854775807}",
		"{\"a\":-9223372036854775808}", "{\"a\":9223372036854775808}", "{\"a\":1e999}",
		"{\"a\":1e-999}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}", "{\"a\":1e}",
		"{\"a\":+1}", "{\"a\":\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"}",
		"{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\\u0041\"}",
		"{\"a\":\"\\u0000\"}", "{\"a\\u0000\":1}", "{\"\\u0061\":1,\"a\":2}",
		"{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"tab\there\"}", "{\"a\":true,}",
		"{\"a\":tru}", "{\"a\":truex}", "{\"a\":nul}", "{\"a\":null}", "{\"a\":false}", "{\"a\" 1}",
		"{\"a\":1}x", "{\"a\":1}{}", "{\"a\":1,\"a\":1}", "{a:1}", "{'a':1}", "[1,2]", "\"s\"", "3",
		"{\"a\":[1,]}", "{\"a\":[,1]}", "{,}", "{\"a\":1 \"b\":2}", "\xef\xbb\xbf{}",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_same_as_jansson(cases[i], strlen(cases[i]));
	/* a long escaped string (beyond the fast parser's scratch buffer) still parses */
	char *big = malloc(20000);
	size_t n = (size_t)snprintf(big, 20000, "{\"s\":\"");
	for (int i = 0; i < 2000; i++) /* 16000 bytes, 6000 decoded */
		n += (size_t)snprintf(big + n, 20000 - n, "\\n\\u00e9");
	n += (size_t)snprintf(big + n, 20000 - n, "\"}");
	expect_same_as_jansson(big, n);
	schema_reject why;
	json_t *o = schema_parse_payload(big, n, NULL, &why, NULL);
	assert_non_null(o);
	assert_int_equal(json_string_length(json_object_get(o, "s")), 6000);
	json_decref(o);
	free(big);
	/* random documents, written by jansson in several styles (ASCII-escaped or not, indented) */
	unsigned seed = 31337;
	const size_t flags[] = {JSON_COMPACT, JSON_ENSURE_ASCII, JSON_INDENT(2) | JSON_ENSURE_ASCII,
				JSON_REAL_PRECISION(17), JSON_ESCAPE_SLASH};
	for (int i = 0; i < 3000; i++) {
		json_t *v = json_object();
		json_object_set_new(v, "v", random_value(&seed, 0));
		char *text = json_dumps(v, flags[i % 5]);
		expect_same_as_jansson(text, strlen(text));
		free(text);
		json_decref(v);
	}
}

static void test_reason_names(void **state)
{
	(void)state;
	for (int i = 0; i < SCHEMA_R__COUNT; i++) {
		const char *n = schema_reason_name((schema_reason)i);
		assert_non_null(n);
		assert_string_not_equal(n, "unknown");
		for (const char *p = n; *p; p++) /* usable as a Prometheus label value and a key */
			assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
		for (int k = 0; k < i; k++)
			assert_string_not_equal(n, schema_reason_name((schema_reason)k));
	}
	assert_string_equal(schema_reason_name(SCHEMA_R__COUNT), "unknown");
	assert_string_equal(schema_reason_name(SCHEMA_R_OUT_OF_RANGE), "out_of_range");
}

/* ---- timestamps --------------------------------------------------------------------------- */

static void test_rfc3339_against_timegm(void **state)
{
	(void)state;
	unsigned seed = 12345;
	for (int i = 0; i < 2000; i++) {
		/* random instant between 1970 and 2200, whole ms */
		int64_t sec = (int64_t)(rand_r(&seed) % 2000000) * 3600 + rand_r(&seed) % 3600;
		int ms = rand_r(&seed) % 1000;
		time_t t = (time_t)sec;
		struct tm tm;
		gmtime_r(&t, &tm);
		char in[64], out[32];
		snprintf(in, sizeof in, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
		int64_t got;
		assert_int_equal(timefmt_parse_rfc3339(in, &got), 0);
		assert_int_equal(got, sec * 1000 + ms);
		assert_int_equal(timefmt_format_rfc3339(got, out, sizeof out), 24);
		assert_string_equal(out, in);
		/* same instant written with an offset */
		struct tm tm2;
		time_t t2 = (time_t)(sec + 5 * 3600 + 30 * 60);
		gmtime_r(&t2, &tm2);
		snprintf(in, sizeof in, "%04d-%02d-%02dT%02d:%02d:%02d.%03d+05:30", tm2.tm_year + 1900,
			 tm2.tm_mon + 1, tm2.tm_mday, tm2.tm_hour, tm2.tm_min, tm2.tm_sec, ms);
		assert_int_equal(timefmt_parse_rfc3339(in, &got), 0);
		assert_int_equal(got, sec * 1000 + ms);
	}
	int64_t v;
	assert_int_equal(timefmt_parse_rfc3339("2024-02-29T00:00:00Z", &v), 0);
	assert_int_equal(v, 1709164800000LL);
	assert_int_equal(timefmt_parse_rfc3339("2024-01-01T00:00:00.5Z", &v), 0);
	assert_int_equal(v, 1704067200500LL);
	assert_int_equal(timefmt_parse_rfc3339("2024-01-01 00:00:00.123456789-01:00", &v), 0);
	assert_int_equal(v, 1704067200123LL + 3600000);
	const char *bad[] = {"2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z",
			     "2024-01-01T00:00:00",  "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zx",
			     "2024-1-01T00:00:00Z",  "yesterday", "", "2024-01-01T00:00:00+5:00"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (timefmt_parse_rfc3339(bad[i], &v) != TG_EINVAL)
			fail_msg("accepted %s", bad[i]);
	char buf[32];
	assert_int_equal(timefmt_format_rfc3339(0, buf, sizeof buf), 24);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	assert_int_equal(timefmt_format_rfc3339(0, buf, 10), TG_EINVAL);
}

static const char TS_SCHEMA[] =
	"{\"topic\":\"t/#\",\"timestamp\":{\"field\":\"ts\",\"maxSkewSeconds\":3600}}";

static int64_t ts_after(const schema_set *s, const char *payload, int64_t recv, schema_reject *why,
			int *rc, char *iso)
{
	json_t *o = js(payload);
	*rc = schema_apply(s, "t/x", o, recv, why, NULL);
	int64_t ts = json_integer_value(json_object_get(o, "ts"));
	if (iso)
		snprintf(iso, 32, "%s", json_string_value(json_object_get(o, "ts_iso")) ?
			 json_string_value(json_object_get(o, "ts_iso")) : "");
	json_decref(o);
	return ts;
}

static void test_timestamp_formats(void **state)
{
	(void)state;
	schema_set *s = load(TS_SCHEMA);
	schema_reject why;
	int rc;
	char iso[32];
	const int64_t recv = 1764088209123LL; /* 2025-11-25T16:30:09.123Z */
	assert_int_equal(ts_after(s, "{\"ts\":1764088209123}", recv, &why, &rc, iso), recv);
	assert_int_equal(rc, SCHEMA_APPLIED);
	assert_string_equal(iso, "2025-11-25T16:30:09.123Z");
	assert_int_equal(ts_after(s, "{\"ts\":1764088209}", recv, &why, &rc, NULL), 1764088209000LL);
	assert_int_equal(rc, SCHEMA_APPLIED);
	assert_int_equal(ts_after(s, "{\"ts\":1764088209.5}", recv, &why, &rc, NULL), 1764088209500LL);
	assert_int_equal(ts_after(s, "{\"ts\":\"2025-11-25T17:30:09.123+01:00\"}", recv, &why, &rc, iso),
			 recv);
	assert_int_equal(rc, SCHEMA_APPLIED);
	assert_string_equal(iso, "2025-11-25T16:30:09.123Z");
	/* absent: falls back to the receive time */
	assert_int_equal(ts_after(s, "{}", recv, &why, &rc, iso), recv);
	assert_int_equal(rc, SCHEMA_APPLIED);
	assert_string_equal(iso, "2025-11-25T16:30:09.123Z");
	/* bad ones */
	/* a value of a type that can hold a timestamp but does not: bad_timestamp; a type that
	 * cannot: wrong_type */
	static const struct {
		const char *p;
		schema_reason r;
	} bad[] = {{"{\"ts\":\"soon\"}", SCHEMA_R_BAD_TIMESTAMP},
		   {"{\"ts\":true}", SCHEMA_R_WRONG_TYPE},
		   {"{\"ts\":-5}", SCHEMA_R_BAD_TIMESTAMP},
		   {"{\"ts\":null}", SCHEMA_R_WRONG_TYPE},
		   {"{\"ts\":[1]}", SCHEMA_R_WRONG_TYPE},
		   {"{\"ts\":1e300}", SCHEMA_R_BAD_TIMESTAMP},
		   {"{\"ts\":1764099009123}", SCHEMA_R_BAD_TIMESTAMP}, /* 3 h ahead: over maxSkew */
		   {"{\"ts\":\"2025-11-25T12:30:09Z\"}", SCHEMA_R_BAD_TIMESTAMP}}; /* 4 h old */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ts_after(s, bad[i].p, recv, &why, &rc, NULL);
		if (rc != TG_EINVAL || why.reason != bad[i].r)
			fail_msg("%s: rc %d reason %s", bad[i].p, rc, schema_reason_name(why.reason));
		assert_string_equal(why.field, "ts");
	}
	schema_set_free(s);

	/* required, explicit formats, and a differently named input field that is consumed */
	s = load("{\"topic\":\"t/#\",\"timestamp\":{\"field\":\"time\",\"format\":\"epoch_s\","
		 "\"required\":true,\"isoOutput\":null}}");
	json_t *o = js("{\"time\":1700000000}");
	assert_int_equal(schema_apply(s, "t/x", o, recv, &why, NULL), SCHEMA_APPLIED);
	assert_int_equal(json_integer_value(json_object_get(o, "ts")), 1700000000000LL);
	assert_null(json_object_get(o, "time"));
	assert_null(json_object_get(o, "ts_iso"));
	json_decref(o);
	o = js("{\"time\":\"2025-11-25T16:30:09Z\"}");
	assert_int_equal(schema_apply(s, "t/x", o, recv, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_WRONG_TYPE); /* epoch_s wants a number */
	json_decref(o);
	o = js("{}");
	assert_int_equal(schema_apply(s, "t/x", o, recv, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_MISSING_FIELD);
	assert_string_equal(why.field, "time");
	json_decref(o);
	schema_set_free(s);

	/* epoch_ms taken literally even for small numbers */
	s = load("{\"topic\":\"t/#\",\"timestamp\":{\"format\":\"epoch_ms\",\"fallbackToReceived\":false}}");
	assert_int_equal(ts_after(s, "{\"ts\":1700000000}", recv, &why, &rc, NULL), 1700000000LL);
	o = js("{\"a\":1}");
	assert_int_equal(schema_apply(s, "t/x", o, recv, &why, NULL), SCHEMA_APPLIED);
	assert_null(json_object_get(o, "ts")); /* no fallback configured */
	json_decref(o);
	schema_set_free(s);
}

/* ---- the shipped default schema ----------------------------------------------------------- */

static void test_default_schema(void **state)
{
	(void)state;
	char err[2048];
	schema_set *s = schema_load_dir("rules/schemas", err, sizeof err);
	if (!s)
		fail_msg("rules/schemas: %s", err);
	assert_true(schema_count(s) >= 2);
	assert_non_null(schema_match(s, "devices/dev-0001/telemetry"));
	assert_null(schema_match(s, "devices/dev-0001/state"));

	schema_stats st = {0};
	schema_reject why;
	const char good[] = "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":21.5,"
			    "\"humidity\":48.25,\"pressure\":1013.2,\"seq\":7}";
	json_t *o = schema_parse_payload(good, strlen(good), NULL, &why, &st);
	assert_non_null(o);
	assert_int_equal(schema_apply(s, "devices/dev-0001/telemetry", o, 1764088210000LL, &why, &st),
			 SCHEMA_APPLIED);
	assert_string_equal(json_string_value(json_object_get(o, "ts_iso")), "2025-11-25T16:30:09.123Z");
	assert_int_equal(json_integer_value(json_object_get(o, "ts")), 1764088209123LL);
	assert_true(json_real_value(json_object_get(o, "temperature")) == 21.5);
	json_decref(o);

	static const struct {
		const char *payload;
		schema_reason r;
		const char *field;
	} bad[] = {
		{"{\"ts\":1764088209123,\"temperature\":21.5}", SCHEMA_R_MISSING_FIELD, "sensor_id"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev-0001\",\"humidity\":3}", SCHEMA_R_MISSING_FIELD, "temperature"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev-0001\",\"temperature\":\"21.5\"}", SCHEMA_R_WRONG_TYPE, "temperature"},
		{"{\"ts\":1764088209123,\"sensor_id\":42,\"temperature\":21.5}", SCHEMA_R_WRONG_TYPE, "sensor_id"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev-0001\",\"temperature\":21.5,\"seq\":1.5}", SCHEMA_R_WRONG_TYPE, "seq"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev-0001\",\"temperature\":150}", SCHEMA_R_OUT_OF_RANGE, "temperature"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev-0001\",\"temperature\":20,\"humidity\":-0.1}", SCHEMA_R_OUT_OF_RANGE, "humidity"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"dev 0001; DROP\",\"temperature\":21.5}", SCHEMA_R_PATTERN_MISMATCH, "sensor_id"},
		{"{\"ts\":1764088209123,\"sensor_id\":\"\",\"temperature\":21.5}", SCHEMA_R_PATTERN_MISMATCH, "sensor_id"},
		{"{\"sensor_id\":\"dev-0001\",\"temperature\":21.5,\"ts\":\"noon\"}", SCHEMA_R_BAD_TIMESTAMP, "ts"},
		{"{\"sensor_id\":\"dev-0001\",\"temperature\":21.5,\"ts\":false}", SCHEMA_R_WRONG_TYPE, "ts"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		o = js(bad[i].payload);
		int rc = schema_apply(s, "devices/dev-0001/telemetry", o, 1764088210000LL, &why, &st);
		if (rc != TG_EINVAL || why.reason != bad[i].r || strcmp(why.field, bad[i].field) != 0)
			fail_msg("%s: rc %d reason %s field %s", bad[i].payload, rc,
				 schema_reason_name(why.reason), why.field);
		assert_true(why.text[0] != '\0');
		json_decref(o);
	}
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.rejected[SCHEMA_R_MISSING_FIELD], 2);
	assert_int_equal(st.rejected[SCHEMA_R_WRONG_TYPE], 4);
	assert_int_equal(st.rejected[SCHEMA_R_PATTERN_MISMATCH], 2);
	/* no schema for the topic: untouched */
	o = js("{\"x\":1}");
	assert_int_equal(schema_apply(s, "other/topic", o, 1, &why, &st), SCHEMA_NO_MATCH);
	assert_int_equal(json_object_size(o), 1);
	assert_int_equal(st.unmatched, 1);
	json_decref(o);
	schema_set_free(s);
}

/* Every hostile kind device_sim injects (device_sim/sim_gen.h), as literal payloads, through
 * the same two calls the daemon makes, against the shipped schemas: each must be rejected
 * with the reason tests/integration/test_edge.py expects, and the two variants the default
 * schema accepts on purpose (no ts: the receive time is used; a well-formed id that is not
 * the thing's: the topic's thing is authoritative) must pass. A schema that wants the id
 * pinned to the thing says "topicLevel": 2 (tested separately). Duplicates: test_dedupe. */
static void test_sim_hostile_kinds(void **state)
{
	(void)state;
	char err[2048];
	schema_set *s = schema_load_dir("rules/schemas", err, sizeof err);
	if (!s)
		fail_msg("%s", err);
	const int64_t recv = 1764088209500LL;
#define GOOD_TAIL "\"ts\":1764088209123,\"temperature\":21.5,\"humidity\":48.2,\"pressure\":1013.2,\"seq\":7}"
	static const struct {
		const char *kind, *payload;
		schema_reason r;
	} cases[] = {
		{"normal", "{\"sensor_id\":\"dev-0001\"," GOOD_TAIL, SCHEMA_R_NONE},
		{"malformed truncated", "{\"sensor_id\":\"dev-0001\",\"ts\":17640", SCHEMA_R_BAD_JSON},
		{"malformed garbage", "{\"sensor_id\":\"dev-0001\"," GOOD_TAIL "}garbage", SCHEMA_R_BAD_JSON},
		{"malformed quotes", "{'sensor_id':'dev-0001'}", SCHEMA_R_BAD_JSON},
		{"malformed unquoted key", "{sensor_id:\"dev-0001\"}", SCHEMA_R_BAD_JSON},
		{"malformed nan", "{\"sensor_id\":\"dev-0001\",\"temperature\":NaN}", SCHEMA_R_BAD_JSON},
		{"wrong_type temperature", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":\"hot\"}", SCHEMA_R_WRONG_TYPE},
		{"wrong_type ts", "{\"sensor_id\":\"dev-0001\",\"ts\":\"yesterday\",\"temperature\":1}", SCHEMA_R_BAD_TIMESTAMP},
		{"wrong_type humidity", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":1,\"humidity\":[48.2]}", SCHEMA_R_WRONG_TYPE},
		{"wrong_type pressure", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":1,\"pressure\":{\"hPa\":1013.2}}", SCHEMA_R_WRONG_TYPE},
		{"wrong_type sensor_id", "{\"sensor_id\":1234," GOOD_TAIL, SCHEMA_R_WRONG_TYPE},
		{"bad_id empty", "{\"sensor_id\":\"\"," GOOD_TAIL, SCHEMA_R_PATTERN_MISMATCH},
		{"bad_id too_long", "{\"sensor_id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"," GOOD_TAIL, SCHEMA_R_PATTERN_MISMATCH},
		{"bad_id bad_chars", "{\"sensor_id\":\"dev 00/01#+\"," GOOD_TAIL, SCHEMA_R_PATTERN_MISMATCH},
		{"bad_id control_char", "{\"sensor_id\":\"dev\\u0001x\"," GOOD_TAIL, SCHEMA_R_PATTERN_MISMATCH},
		{"bad_id mismatch (accepted)", "{\"sensor_id\":\"dev-0001-spoof\"," GOOD_TAIL, SCHEMA_R_NONE},
		{"missing ts (accepted)", "{\"sensor_id\":\"dev-0001\",\"temperature\":1}", SCHEMA_R_NONE},
		{"missing temperature", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123}", SCHEMA_R_MISSING_FIELD},
		{"missing sensor_id", "{\"ts\":1764088209123,\"temperature\":1}", SCHEMA_R_MISSING_FIELD},
		{"range temperature", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":1000000.0}", SCHEMA_R_OUT_OF_RANGE},
		{"range abs zero", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":-500.0}", SCHEMA_R_OUT_OF_RANGE},
		{"range humidity", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":1,\"humidity\":150.0}", SCHEMA_R_OUT_OF_RANGE},
		{"range pressure", "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,\"temperature\":1,\"pressure\":-5.0}", SCHEMA_R_OUT_OF_RANGE},
		{"skew future", "{\"sensor_id\":\"dev-0001\",\"ts\":1800000000000,\"temperature\":1}", SCHEMA_R_BAD_TIMESTAMP},
		{"skew past", "{\"sensor_id\":\"dev-0001\",\"ts\":0,\"temperature\":1}", SCHEMA_R_BAD_TIMESTAMP},
		{"non_object array", "[\"dev-0001\",1764088209123,21.5]", SCHEMA_R_NOT_OBJECT},
		{"non_object string", "\"dev-0001\"", SCHEMA_R_NOT_OBJECT},
		{"non_object number", "21.50", SCHEMA_R_NOT_OBJECT},
		{"non_object null", "null", SCHEMA_R_NOT_OBJECT},
		{"non_object bool", "true", SCHEMA_R_NOT_OBJECT},
		{"utf8 continuation", "{\"sensor_id\":\"dev-0001\x80\"}", SCHEMA_R_INVALID_UTF8},
		{"utf8 overlong", "{\"sensor_id\":\"dev-0001\xc0\xaf\"}", SCHEMA_R_INVALID_UTF8},
		{"utf8 truncated", "{\"sensor_id\":\"dev-0001\xe2\x82\"}", SCHEMA_R_INVALID_UTF8},
		{"utf8 invalid byte", "{\"sensor_id\":\"dev-0001\xff\"}", SCHEMA_R_INVALID_UTF8},
		{"empty", "", SCHEMA_R_BAD_JSON},
	};
#undef GOOD_TAIL
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		schema_reject why = {0};
		json_t *o = schema_parse_payload(cases[i].payload, strlen(cases[i].payload), NULL, &why, NULL);
		int rc = o ? schema_apply(s, "devices/dev-0001/telemetry", o, recv, &why, NULL) : TG_EINVAL;
		schema_reason got = rc == SCHEMA_APPLIED ? SCHEMA_R_NONE : why.reason;
		if (got != cases[i].r)
			fail_msg("%s: got %s (%s) want %s", cases[i].kind, schema_reason_name(got), why.text,
				 schema_reason_name(cases[i].r));
		json_decref(o);
	}
	/* oversized and too deep, built like the simulator builds them */
	size_t big = 128 * 1024 + 100;
	char *b = malloc(big + 1);
	int n = snprintf(b, big, "{\"sensor_id\":\"dev-0001\",\"blob\":\"");
	memset(b + n, 'A', big - (size_t)n - 2);
	b[big - 2] = '"';
	b[big - 1] = '}';
	schema_reject why;
	assert_null(schema_parse_payload(b, big, NULL, &why, NULL));
	assert_int_equal(why.reason, SCHEMA_R_TOO_LARGE);
	n = snprintf(b, big, "{\"sensor_id\":\"dev-0001\",\"nested\":");
	memset(b + n, '[', 256);
	memset(b + n + 256, ']', 256);
	b[n + 512] = '}';
	assert_null(schema_parse_payload(b, (size_t)n + 513, NULL, &why, NULL));
	assert_int_equal(why.reason, SCHEMA_R_TOO_DEEP);
	free(b);
	schema_set_free(s);
}

/* ---- conversions, renames, defaults, unknown fields --------------------------------------- */

static double f_to_c(double f) { return (f - 32.0) * 5.0 / 9.0; }

static void test_unit_conversion(void **state)
{
	(void)state;
	schema_set *s = load(
		"{\"topic\":\"t/#\",\"fields\":{"
		"\"temp\":{\"type\":\"number\",\"unit\":{\"field\":\"unit\",\"to\":\"C\"}},"
		"\"dew\":{\"type\":\"number\",\"max\":50,\"unit\":{\"field\":\"unit\",\"to\":\"C\"}},"
		"\"p\":{\"type\":\"number\",\"unit\":{\"from\":\"kPa\",\"to\":\"hPa\"}},"
		"\"r\":{\"type\":\"number\",\"round\":1,\"unit\":{\"field\":\"ru\",\"to\":\"C\",\"default\":\"F\"}}}}");
	schema_reject why;
	unsigned seed = 7;
	for (int i = 0; i < 200; i++) {
		double f = (rand_r(&seed) % 40000) / 100.0 - 100.0; /* -100 .. 300 F */
		char buf[160];
		snprintf(buf, sizeof buf, "{\"temp\":%.2f,\"dew\":32,\"unit\":\"F\",\"p\":101.325}", f);
		json_t *o = js(buf);
		assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), SCHEMA_APPLIED);
		double want = f_to_c(strtod(buf + 8, NULL));
		assert_float_equal(json_number_value(json_object_get(o, "temp")), want, 1e-9);
		/* both fields reading the same unit field were converted, then the unit rewritten */
		assert_float_equal(json_number_value(json_object_get(o, "dew")), 0.0, 1e-9);
		assert_string_equal(json_string_value(json_object_get(o, "unit")), "C");
		assert_float_equal(json_number_value(json_object_get(o, "p")), 1013.25, 1e-9);
		json_decref(o);
	}
	json_t *o = js("{\"temp\":300,\"unit\":\"K\"}");
	assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), SCHEMA_APPLIED);
	assert_float_equal(json_number_value(json_object_get(o, "temp")), 26.85, 1e-9);
	json_decref(o);
	/* absent unit field: the target unit is assumed (no conversion) */
	o = js("{\"temp\":21}");
	assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), SCHEMA_APPLIED);
	assert_float_equal(json_number_value(json_object_get(o, "temp")), 21.0, 1e-12);
	json_decref(o);
	/* absent unit field with a declared default unit (F), rounded to 1 decimal */
	o = js("{\"r\":100}");
	assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), SCHEMA_APPLIED);
	assert_float_equal(json_number_value(json_object_get(o, "r")), 37.8, 1e-12);
	json_decref(o);
	/* range check happens after conversion: 212 F = 100 C > max 50 */
	o = js("{\"dew\":212,\"unit\":\"F\"}");
	assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_OUT_OF_RANGE);
	assert_string_equal(why.field, "dew");
	json_decref(o);
	o = js("{\"dew\":100,\"unit\":\"C\"}");
	assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), TG_EINVAL);
	json_decref(o);
	/* unknown and incompatible units */
	const char *badu[] = {"{\"temp\":1,\"unit\":\"furlong\"}", "{\"temp\":1,\"unit\":\"hPa\"}",
			      "{\"temp\":1,\"unit\":5}"};
	for (size_t i = 0; i < 3; i++) {
		o = js(badu[i]);
		assert_int_equal(schema_apply(s, "t/x", o, 0, &why, NULL), TG_EINVAL);
		assert_int_equal(why.reason, SCHEMA_R_BAD_UNIT);
		assert_string_equal(why.field, "unit");
		json_decref(o);
	}
	schema_set_free(s);
}

static void test_legacy_example(void **state)
{
	(void)state;
	char err[1024];
	schema_set *s = schema_load_file("rules/schemas/40-legacy-weather.json", err, sizeof err);
	if (!s)
		fail_msg("%s", err);
	json_t *o = js("{\"DeviceID\":\"ws-17\",\"Time\":\"2025-11-25T16:30:09Z\",\"Temp\":71.6,"
		       "\"TempUnit\":\"F\",\"Baro\":29.92,\"Junk\":[1,2]}");
	schema_reject why;
	int rc = schema_apply(s, "legacy/ws-17/weather", o, 0, &why, NULL);
	if (rc)
		fail_msg("rc %d %s %s", rc, why.field, why.text);
	assert_string_equal(json_string_value(json_object_get(o, "sensor_id")), "ws-17");
	assert_float_equal(json_number_value(json_object_get(o, "temperature")), 22.0, 1e-9);
	assert_string_equal(json_string_value(json_object_get(o, "temperature_unit")), "C");
	assert_float_equal(json_number_value(json_object_get(o, "pressure")), 1013.2, 1e-9);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "ok");
	assert_int_equal(json_integer_value(json_object_get(o, "ts")), 1764088209000LL);
	assert_null(json_object_get(o, "Junk"));
	assert_null(json_object_get(o, "DeviceID"));
	assert_null(json_object_get(o, "Time"));
	json_decref(o);
	o = js("{\"DeviceID\":\"ws-17\",\"sensor_id\":\"x\",\"Time\":\"2025-11-25T16:30:09Z\",\"Temp\":1}");
	assert_int_equal(schema_apply(s, "legacy/ws-17/weather", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_DUPLICATE_KEY);
	json_decref(o);
	o = js("{\"DeviceID\":\"ws-17\",\"Time\":\"2025-11-25T16:30:09Z\",\"Temp\":1,\"Status\":\"meh\"}");
	assert_int_equal(schema_apply(s, "legacy/ws-17/weather/extra", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_PATTERN_MISMATCH);
	assert_string_equal(why.field, "status");
	json_decref(o);
	schema_set_free(s);
}

static void test_unknown_and_defaults(void **state)
{
	(void)state;
#define TMPL(u)                                                                          \
	"{\"topic\":\"t/#\",\"unknownFields\":\"" u "\",\"fields\":{"                          \
	"\"a\":{\"type\":\"integer\",\"default\":5},"                                         \
	"\"s\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":3,\"default\":\"ab\"},"      \
	"\"o\":{\"type\":[\"object\",\"null\"]}}}"
	schema_reject why;
	schema_set *s = load(TMPL("keep"));
	json_t *o = js("{\"x\":1}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), SCHEMA_APPLIED);
	assert_int_equal(json_integer_value(json_object_get(o, "a")), 5);
	assert_string_equal(json_string_value(json_object_get(o, "s")), "ab");
	assert_non_null(json_object_get(o, "x"));
	json_decref(o);
	/* lengths count code points: "hé!" is 3 code points, 4 bytes */
	o = js("{\"s\":\"h\\u00e9!\"}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), SCHEMA_APPLIED);
	json_decref(o);
	o = js("{\"s\":\"abcd\"}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_OUT_OF_RANGE);
	json_decref(o);
	o = js("{\"o\":null}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), SCHEMA_APPLIED);
	json_decref(o);
	o = js("{\"o\":[]}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_WRONG_TYPE);
	json_decref(o);
	schema_set_free(s);

	s = load(TMPL("drop"));
	o = js("{\"x\":1,\"y\":2,\"a\":1}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), SCHEMA_APPLIED);
	assert_null(json_object_get(o, "x"));
	assert_null(json_object_get(o, "y"));
	assert_int_equal(json_object_size(o), 2); /* a and the default s */
	json_decref(o);
	schema_set_free(s);

	s = load(TMPL("reject"));
	o = js("{\"a\":1,\"zz\":2}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_UNKNOWN_FIELD);
	assert_string_equal(why.field, "zz");
	json_decref(o);
	schema_set_free(s);
}

static void test_topic_level(void **state)
{
	(void)state;
	schema_set *s = load("{\"topic\":\"devices/+/telemetry\",\"fields\":{"
			     "\"sensor_id\":{\"type\":\"string\",\"topicLevel\":2},"
			     "\"kind\":{\"type\":\"string\",\"topicLevel\":3}}}");
	schema_reject why;
	static const struct {
		const char *payload;
		int rc;
	} cases[] = {
		{"{\"sensor_id\":\"dev-0001\",\"kind\":\"telemetry\"}", SCHEMA_APPLIED},
		{"{\"sensor_id\":\"dev-0001-spoof\"}", TG_EINVAL},
		{"{\"sensor_id\":\"dev-000\"}", TG_EINVAL},
		{"{\"sensor_id\":\"dev-0002\"}", TG_EINVAL},
		{"{\"sensor_id\":\"\"}", TG_EINVAL},
		{"{\"kind\":\"telemetr\"}", TG_EINVAL},
		{"{}", SCHEMA_APPLIED},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *o = js(cases[i].payload);
		int rc = schema_apply(s, "devices/dev-0001/telemetry", o, 0, &why, NULL);
		if (rc != cases[i].rc)
			fail_msg("%s: rc %d", cases[i].payload, rc);
		if (rc == TG_EINVAL)
			assert_int_equal(why.reason, SCHEMA_R_PATTERN_MISMATCH);
		json_decref(o);
	}
	schema_set_free(s);
}

static void test_pattern_limit_and_enum(void **state)
{
	(void)state;
	schema_set *s = load("{\"topic\":\"t/#\",\"matchLimit\":1000,\"fields\":{"
			     "\"v\":{\"type\":\"string\",\"pattern\":\"^(a+)+$\"},"
			     "\"e\":{\"enum\":[\"x\",1,true]}}}");
	schema_reject why;
	char payload[128];
	/* catastrophic backtracking input: must end with a reason, not hang */
	snprintf(payload, sizeof payload, "{\"v\":\"%s\"}", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab");
	json_t *o = js(payload);
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_PATTERN_MISMATCH);
	json_decref(o);
	o = js("{\"v\":\"aaaa\",\"e\":1}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), SCHEMA_APPLIED);
	json_decref(o);
	o = js("{\"e\":\"y\"}");
	assert_int_equal(schema_apply(s, "t/1", o, 0, &why, NULL), TG_EINVAL);
	assert_int_equal(why.reason, SCHEMA_R_PATTERN_MISMATCH);
	assert_string_equal(why.field, "e");
	json_decref(o);
	schema_set_free(s);
}

/* ---- load errors -------------------------------------------------------------------------- */

static void expect_load_error(const char *text, const char *want)
{
	char err[1024];
	schema_set *s = schema_load_buffer("x.json", text, strlen(text), err, sizeof err);
	assert_null(s);
	if (!strstr(err, want))
		fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void test_load_errors(void **state)
{
	(void)state;
	/* syntax error: jansson's line:col */
	expect_load_error("{\n  \"topic\": \"a/b\",\n  \"fields\": {,}\n}", "x.json:3:");
	/* semantic errors: the key's position */
	expect_load_error("{\n  \"topic\": \"a/b\",\n  \"fields\": {\n    \"t\": {\"type\": \"number\",\n"
			  "          \"min\": \"low\"}\n  }\n}",
			  "x.json:5:11: min must be a number");
	expect_load_error("{\"topic\": \"a/#/b\"}", "x.json:1:2: invalid topic filter");
	expect_load_error("{\"topic\": \"a\",\n \"bogus\": 1}", "x.json:2:2: unknown key \"bogus\"");
	expect_load_error("{\"fields\": {}}", "exactly one of \"topic\" or \"topics\"");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"p\":{\"pattern\":\"(\"}}}", "bad pattern");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"p\":{\"type\":\"number\",\"unit\":{\"from\":\"F\",\"to\":\"hPa\"}}}}",
			  "compatible");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"p\":{\"type\":\"number\",\"unit\":{\"field\":\"u\",\"to\":\"C\"}},"
			  "\"q\":{\"type\":\"number\",\"unit\":{\"field\":\"u\",\"to\":\"F\"}}}}",
			  "different target units");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"p\":{\"type\":\"integer\",\"max\":3,\"default\":9}}}",
			  "default does not satisfy");
	expect_load_error("{\"topic\":\"a\",\"timestamp\":{\"format\":\"julian\"}}", "format must be");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"n\":{\"type\":\"number\",\"topicLevel\":2}}}",
			  "topicLevel needs a string field");
	expect_load_error("{\"topic\":\"a\",\"fields\":{\"n\":{\"topicLevel\":0}}}", "topicLevel must be");
	expect_load_error("{\"topic\":\"a\",\"renames\":{\"a\":\"a\"}}", "rename target");
	expect_load_error("{\"topic\":\"a\",\"timestamp\":{},\"fields\":{\"ts_iso\":{}}}",
			  "written by the timestamp section");
	expect_load_error("{\"topic\":\"a\",\"topic\":\"b\"}", "duplicate");

	/* a directory with one good and two bad files: both bad files reported, no set */
	char dir[] = "/tmp/test_schema_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char p[256], err[2048];
	FILE *f;
	snprintf(p, sizeof p, "%s/a.json", dir);
	f = fopen(p, "w");
	fputs("{\"topic\":\"a/+\"}", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/b.json", dir);
	f = fopen(p, "w");
	fputs("{\"topic\":\"b\",\n\"unknownFields\":\"maybe\"}", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/c.json", dir);
	f = fopen(p, "w");
	fputs("{oops", f);
	fclose(f);
	assert_null(schema_load_dir(dir, err, sizeof err));
	assert_non_null(strstr(err, "b.json:2:1: unknownFields"));
	assert_non_null(strstr(err, "c.json:1:"));
	unlink(p);
	snprintf(p, sizeof p, "%s/b.json", dir);
	unlink(p);
	schema_set *s = schema_load_dir(dir, err, sizeof err);
	assert_non_null(s);
	assert_string_equal(schema_match(s, "a/x"), "a");
	schema_set_free(s);
	snprintf(p, sizeof p, "%s/a.json", dir);
	unlink(p);
	rmdir(dir);
	assert_null(schema_load_dir("/nonexistent/dir", err, sizeof err));
	assert_null(schema_load_file("/nonexistent/x.json", err, sizeof err));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reason_names),
		cmocka_unit_test(test_parse_payload),
		cmocka_unit_test(test_parse_payload_nul_detail),
		cmocka_unit_test(test_parser_matches_jansson),
		cmocka_unit_test(test_rfc3339_against_timegm),
		cmocka_unit_test(test_timestamp_formats),
		cmocka_unit_test(test_default_schema),
		cmocka_unit_test(test_sim_hostile_kinds),
		cmocka_unit_test(test_unit_conversion),
		cmocka_unit_test(test_legacy_example),
		cmocka_unit_test(test_unknown_and_defaults),
		cmocka_unit_test(test_topic_level),
		cmocka_unit_test(test_pattern_limit_and_enum),
		cmocka_unit_test(test_load_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
