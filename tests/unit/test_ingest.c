/*
 * test_ingest.c — the raw-payload checks of the ingest path: UTF-8 validity (overlongs,
 * surrogates, truncation), JSON depth outside strings, RFC 3339 formatting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "ingest.h"

#define U(s) ingest_utf8_valid((const unsigned char *)(s), sizeof(s) - 1)

static void test_utf8(void **state)
{
	assert_true(U("plain ascii"));
	assert_true(U("caf\xc3\xa9"));                 /* é */
	assert_true(U("\xe2\x82\xac"));                /* € */
	assert_true(U("\xf0\x9f\x8c\x8a"));            /* 🌊 */
	assert_false(U("\xc3"));                       /* truncated */
	assert_false(U("\xc0\xaf"));                   /* overlong / */
	assert_false(U("\xe0\x80\xaf"));               /* overlong */
	assert_false(U("\xed\xa0\x80"));               /* surrogate D800 */
	assert_false(U("\xf4\x90\x80\x80"));           /* > U+10FFFF */
	assert_false(U("\xff"));
	assert_false(U("ok\x80"));                     /* lone continuation */
}

static void test_depth(void **state)
{
	const char *a = "{\"a\":{\"b\":[1,2,{\"c\":3}]}}";
	assert_int_equal(ingest_json_depth(a, strlen(a)), 4);
	const char *s = "{\"a\":\"{{{{[[[[\"}";
	assert_int_equal(ingest_json_depth(s, strlen(s)), 1);
	const char *e = "{\"a\":\"quote \\\" {{{\"}";
	assert_int_equal(ingest_json_depth(e, strlen(e)), 1);
	assert_int_equal(ingest_json_depth("42", 2), 0);
}

static void test_rfc3339(void **state)
{
	char buf[32];
	ingest_rfc3339_ms(1795600800123LL, buf, sizeof buf);
	assert_string_equal(buf, "2026-11-25T10:00:00.123Z");
	ingest_rfc3339_ms(0, buf, sizeof buf);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_rfc3339),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
