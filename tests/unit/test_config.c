/*
 * test_config.c — the config loader: defaults, units, sinks, and errors with file:line:col.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config.h"
#include "sinks/sink.h"
#include "test_util.h"

static char *dir;

static tg_config *load(const char *text, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/t.conf", dir);
	tu_write(path, text);
	return config_load(path, err, errlen);
}

static void test_defaults_and_values(void **state)
{
	char err[512] = "";
	tg_config *c = load("# comment\n"
			    "gateway_id = gw-7\n"
			    "data_dir = /tmp/x\n"
			    "[broker]\n"
			    "tls = off\n"
			    "port = 1884\n"
			    "keepalive = 1m\n"
			    "[outbox]\n"
			    "max_bytes = 16M\n"
			    "commit_interval = 20ms\n"
			    "full_policy = reject_new\n"
			    "[sink lake]\n"
			    "type = file\n"
			    "path = /tmp/x/lake\n"
			    "retry_base = 1s\n",
			    err, sizeof err);
	assert_non_null(c);
	assert_string_equal(c->gateway_id, "gw-7");
	assert_int_equal(c->broker_port, 1884);
	assert_int_equal(c->keepalive_s, 60000);
	assert_int_equal(c->outbox_max_bytes, 16 << 20);
	assert_int_equal(c->commit_interval_ms, 20);
	assert_int_equal(c->outbox_full_policy, 1);
	assert_string_equal(c->outbox_path, "/tmp/x/outbox.db");
	assert_int_equal(c->nsinks, 1);
	assert_string_equal(c->sinks[0].name, "lake");
	assert_int_equal(c->sinks[0].retry_base_ms, 1000);
	assert_ptr_equal(config_sink(c, "lake"), &c->sinks[0]);
	assert_int_equal(c->ndefault_sinks, 1);
	assert_string_equal(c->default_sink_list[0], "lake");
	config_free(c);
}

#define EXPECT_ERR(text, needle)                                                   \
	do {                                                                       \
		char e[512] = "";                                                  \
		tg_config *c_ = load(text, e, sizeof e);                           \
		assert_null(c_);                                                   \
		if (!strstr(e, needle))                                            \
			fail_msg("error '%s' does not contain '%s'", e, needle);   \
	} while (0)

static void test_errors_have_positions(void **state)
{
	EXPECT_ERR("[broker]\ntls = false\nbogus = 1\n", "t.conf:3:1: unknown option 'bogus'");
	EXPECT_ERR("[broker]\ntls = false\nport = 99999\n", "t.conf:3:8: option 'port': 99999 is outside 1..65535");
	EXPECT_ERR("[broker]\n  tls = maybe\n", "t.conf:2:9: option 'tls'");
	EXPECT_ERR("[nope]\n", "t.conf:1:1: unknown section [nope]");
	EXPECT_ERR("[broker\n", "t.conf:1:1: malformed section header");
	EXPECT_ERR("[broker]\ntls\n", "t.conf:2:1: expected 'key = value'");
	EXPECT_ERR("[broker]\ntls=false\n[outbox]\nmax_bytes = 12 parsecs\n", "t.conf:4:13: option 'max_bytes'");
	EXPECT_ERR("[broker]\ntls=false\n[sink s]\npath = /x\n", "'type' must come before 'path'");
	EXPECT_ERR("[broker]\ntls=false\n[sink s]\ntype = carrier-pigeon\n", "unknown type 'carrier-pigeon'");
	EXPECT_ERR("[broker]\ntls=false\n[sink lake]\ntype = file\ncolour = red\n",
		   "t.conf:5:1: [sink lake] unknown option 'colour' for sink type file");
	EXPECT_ERR("[broker]\ntls=false\n[sink lake]\ntype = file\n", "option 'path' is required");
	EXPECT_ERR("[broker]\ntls=false\n", "default_sinks: 'lake' is not a configured");
	EXPECT_ERR("[broker]\ntls = true\n[sink lake]\ntype=file\npath=/x\n", "ca_file, cert_file and key_file are required");
	EXPECT_ERR("[broker]\ntls=false\n[sink a]\ntype=file\npath=/x\n[sink a]\n", "sink 'a' is defined twice");
}

static void test_units(void **state)
{
	int64_t v;
	assert_int_equal(config_parse_size("64k", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(config_parse_size("1.5M", &v), 0);
	assert_int_equal(v, 1572864);
	assert_int_equal(config_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2147483648LL);
	assert_true(config_parse_size("-1", &v) < 0);
	assert_true(config_parse_size("12x", &v) < 0);
	assert_int_equal(config_parse_duration_ms("250ms", &v), 0);
	assert_int_equal(v, 250);
	assert_int_equal(config_parse_duration_ms("2m", &v), 0);
	assert_int_equal(v, 120000);
	assert_int_equal(config_parse_duration_ms("15", &v), 0);
	assert_int_equal(v, 15);
	assert_true(config_parse_duration_ms("soon", &v) < 0);
}

static void test_secrets_redacted(void **state)
{
	char err[512];
	tg_config *c = load("[broker]\nca_file=/a\ncert_file=/b\nkey_file=/very/secret.key\n[sink lake]\ntype=file\npath=/x\n",
			    err, sizeof err);
	assert_non_null(c);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_print(c, f);
	fclose(f);
	assert_null(strstr(buf, "/very/secret.key"));
	assert_non_null(strstr(buf, "key_file = <redacted>"));
	free(buf);
	config_free(c);
}

static int setup(void **state)
{
	dir = tu_tmpdir();
	return dir ? 0 : -1;
}

static int teardown(void **state)
{
	tu_rmtree(dir);
	free(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_values),
		cmocka_unit_test(test_errors_have_positions),
		cmocka_unit_test(test_units),
		cmocka_unit_test(test_secrets_redacted),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
