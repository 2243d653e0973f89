/*
 * test_log.c — log lines are logfmt records whatever the argument text (gateway/core/log.c).
 *
 * A strict logfmt parser written here (go-logfmt's rules: bare keys, key=value with the value
 * unquoted — no blank, '=' or '"' in it — or quoted with \" \\ \n \r \t \uXXXX escapes; any
 * other byte sequence is an error) reads back lines built from hostile values — quotes,
 * backslashes, blanks, '=', newlines, control bytes, empty strings, random bytes, values
 * longer than a line — and the decoded values must equal the arguments (or, cut, a prefix of
 * them followed by "...").
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

#include "core/log.h"

#define MAXKV 16

typedef struct kv {
	char key[64];
	char *value; /* malloc'ed, NULL for a bare key */
} kv;

/* Parse one logfmt line into kvs; returns the number of pairs or -1 (with where) on error. */
static int logfmt_parse(const char *s, kv *out, int max, const char **where)
{
	int n = 0;
	for (;;) {
		while (*s == ' ')
			s++;
		if (!*s || *s == '\n')
			return n;
		if (n == max)
			return *where = s, -1;
		size_t k = 0;
		while (*s > ' ' && *s != '=' && *s != '"' && k < sizeof out[n].key - 1)
			out[n].key[k++] = *s++;
		out[n].key[k] = '\0';
		out[n].value = NULL;
		if (k == 0)
			return *where = s, -1;
		if (*s != '=') {
			if (*s && *s != ' ' && *s != '\n')
				return *where = s, -1;
			n++;
			continue;
		}
		s++;
		size_t cap = strlen(s) + 1, len = 0;
		char *v = malloc(cap);
		if (*s == '"') {
			s++;
			for (;;) {
				if (!*s || *s == '\n')
					return free(v), *where = s, -1;
				if (*s == '"') {
					s++;
					break;
				}
				if ((unsigned char)*s < 0x20)
					return free(v), *where = s, -1;
				if (*s != '\\') {
					v[len++] = *s++;
					continue;
				}
				s++;
				switch (*s) {
				case '"': v[len++] = '"'; break;
				case '\\': v[len++] = '\\'; break;
				case 'n': v[len++] = '\n'; break;
				case 'r': v[len++] = '\r'; break;
				case 't': v[len++] = '\t'; break;
				case 'u': {
					unsigned c;
					if (sscanf(s + 1, "%4x", &c) != 1 || c > 0x7f)
						return free(v), *where = s, -1;
					v[len++] = (char)c;
					s += 4;
					break;
				}
				default: return free(v), *where = s, -1;
				}
				s++;
			}
		} else {
			while (*s && *s != ' ' && *s != '\n') {
				if (*s == '"' || *s == '=' || (unsigned char)*s < 0x20)
					return free(v), *where = s, -1;
				v[len++] = *s++;
			}
		}
		if (*s && *s != ' ' && *s != '\n')
			return free(v), *where = s, -1;
		v[len] = '\0';
		out[n++].value = v;
	}
}

static int parse_or_fail(const char *line, kv *p)
{
	const char *where = NULL;
	int n = logfmt_parse(line, p, MAXKV, &where);
	if (n < 0)
		fail_msg("not logfmt at offset %td: %s", where - line, line);
	return n;
}

static void kv_free(kv *p, int n)
{
	for (int i = 0; i < n; i++)
		free(p[i].value);
}

static const char *value_of(const kv *p, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(p[i].key, key))
			return p[i].value ? p[i].value : "";
	return NULL;
}

static void check_roundtrip(const char *a, const char *b, const char *c)
{
	char line[4096];
	tg_log_format(line, sizeof line, "msg=\"%s\" err=\"rule: %s\" topic=%s n=%d", a, b, c, 42);
	kv p[MAXKV];
	int n = parse_or_fail(line, p);
	assert_int_equal(n, 4);
	assert_string_equal(value_of(p, n, "msg"), a);
	char want[2048];
	snprintf(want, sizeof want, "rule: %s", b);
	assert_string_equal(value_of(p, n, "err"), want);
	assert_string_equal(value_of(p, n, "topic"), c);
	assert_string_equal(value_of(p, n, "n"), "42");
	kv_free(p, n);
}

static void test_hostile_values_roundtrip(void **state)
{
	(void)state;
	/* the case: a rule error quoting a field name */
	check_roundtrip("invalid rule set", "alert \"severity\" must be one of info, warn, critical", "devices/x/t");
	check_roundtrip("back\\slash \\\" end\\", "new\nline\r\ttab", "a b=c\"d");
	check_roundtrip("", "", "");
	check_roundtrip("=", "\x01\x1f\x7f", "\\");
	check_roundtrip("caf\xc3\xa9 \xe2\x82\xac", "x", "caf\xc3\xa9");
	/* random printable and control bytes */
	unsigned seed = 12345;
	for (int round = 0; round < 2000; round++) {
		char v[3][40];
		for (int k = 0; k < 3; k++) {
			int len = (int)(rand_r(&seed) % 39);
			for (int i = 0; i < len; i++)
				v[k][i] = (char)(1 + rand_r(&seed) % 127);
			v[k][len] = '\0';
		}
		check_roundtrip(v[0], v[1], v[2]);
	}
}

static void test_unquoted_numbers_and_formats(void **state)
{
	(void)state;
	char line[512];
	long long big = -9000000000LL;
	size_t z = 17;
	tg_log_format(line, sizeof line, "a=%lld b=%zu c=0x%02x d=%5.2f e=%-4s| f=%.*s g=%c h=%%", big, z, 10, 3.14159,
		      "ab", 3, "abcdef", 'q');
	/* padding blanks are data too: those values are quoted */
	assert_string_equal(line, "a=-9000000000 b=17 c=0x0a d=\" 3.14\" e=\"ab  |\" f=abc g=q h=%");
	/* an unquoted value with a blank in its data is quoted whole; text of the format is kept */
	tg_log_format(line, sizeof line, "file=%s:%d", "my file", 7);
	assert_string_equal(line, "file=\"my file:7\"");
	const char *volatile none = NULL; /* hidden from the compiler's format check */
	tg_log_format(line, sizeof line, "msg=started path=%s", none);
	assert_string_equal(line, "msg=started path=(null)");
}

static void test_long_values_are_cut_and_closed(void **state)
{
	(void)state;
	size_t big = 9000;
	char *v = malloc(big + 1);
	for (size_t i = 0; i < big; i++)
		v[i] = "ab\"\\ c"[i % 6];
	v[big] = '\0';
	char line[4096];
	tg_log_format(line, sizeof line, "msg=\"%s\" tail=%s", v, v);
	kv p[MAXKV];
	int n = parse_or_fail(line, p);
	assert_true(n >= 1);
	const char *got = value_of(p, n, "msg");
	size_t gl = strlen(got);
	assert_true(gl > 3 && !strcmp(got + gl - 3, "..."));
	assert_memory_equal(got, v, gl - 3);
	kv_free(p, n);
	free(v);
}

static void test_whole_line_on_stderr(void **state)
{
	(void)state;
	char path[] = "/tmp/tg-log-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	tg_log_init(TG_LOG_INFO);
	LOG_ERROR("rules", "msg=\"%s\" error=\"%s\"", "invalid rule set, keeping the previous one",
		  "r.json:3:14: alert \"severity\" must be one of info, warn, critical");
	LOG_DEBUG("rules", "msg=%s", "not shown");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char line[4096] = "";
	FILE *f = fdopen(fd, "r");
	rewind(f);
	assert_non_null(fgets(line, sizeof line, f));
	assert_null(fgets(line + strlen(line), (int)(sizeof line - strlen(line)), f)); /* one line only */
	fclose(f);
	unlink(path);
	kv p[MAXKV];
	int n = parse_or_fail(line, p);
	assert_int_equal(n, 5);
	assert_null(p[0].value); /* the timestamp is a bare key */
	assert_string_equal(value_of(p, n, "level"), "error");
	assert_string_equal(value_of(p, n, "sub"), "rules");
	assert_string_equal(value_of(p, n, "error"), "r.json:3:14: alert \"severity\" must be one of info, warn, critical");
	kv_free(p, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_values_roundtrip),
		cmocka_unit_test(test_unquoted_numbers_and_formats),
		cmocka_unit_test(test_long_values_are_cut_and_closed),
		cmocka_unit_test(test_whole_line_on_stderr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
