/*
 * test_config.c — the config loader: defaults, units, sinks, comments and quoting, the
 * built-in lake, and errors: every one of a file, each with file:line:col, duplicates with
 * both positions, enums with their values, the checks across options, URL redaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/config.h"
#include "sinks/registry.h"
#include "store/sink.h"
#include "test_util.h"

static char *dir;

static tg_config *load(const char *text, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/t.conf", dir);
	tu_write(path, text);
	return config_load(path, sink_types_all(), err, errlen);
}

/* What check-config prints for c; the caller frees it. */
static char *printed(const tg_config *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_print(c, f);
	fclose(f);
	return buf;
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
		char e[4096] = "";                                                 \
		tg_config *c_ = load(text, e, sizeof e);                           \
		assert_null(c_);                                                   \
		if (!strstr(e, needle))                                            \
			fail_msg("error '%s' does not contain '%s'", e, needle);   \
	} while (0)

static void test_errors_have_positions(void **state)
{
	EXPECT_ERR("[broker]\ntls = false\nbogus = 1\n", "t.conf:3:1: [broker] unknown option 'bogus'");
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
	EXPECT_ERR("[broker]\ntls=false\n[ingest]\ndefault_sinks = lake, stream\n",
		   "t.conf:4:17: [ingest] default_sinks: 'stream' is not a configured [sink stream] section");
	EXPECT_ERR("[broker]\ntls = true\n[sink lake]\ntype=file\npath=/x\n",
		   "t.conf:2:7: [broker] tls is on: ca_file, cert_file and key_file are required");
	EXPECT_ERR("[broker]\ntls=false\n[sink a]\ntype=file\npath=/x\n[sink a]\n",
		   "t.conf:6:1: [sink a] is defined twice; first at ");
	/* log_level is an enum like any other: position and the allowed values */
	EXPECT_ERR("log_level = loud\n[broker]\ntls=false\n",
		   "t.conf:1:13: option 'log_level': 'loud' is not one of: debug, info, warn, error, off");
	EXPECT_ERR("[broker]\ntls=false\n[outbox]\nfull_policy = newest\n",
		   "t.conf:4:15: option 'full_policy': 'newest' is not one of: drop_oldest, reject_new");
	EXPECT_ERR("[broker]\ntls=false\nhost = \"a b\n", "t.conf:3:8: option 'host': unterminated quoted value");
	EXPECT_ERR("[broker]\ntls=false\nhost = \"a\" b\n", "t.conf:3:12: option 'host': unexpected text after a quoted value");
	EXPECT_ERR("[broker] x\n", "t.conf:1:1: malformed section header");
}

/* A key given twice is refused with both positions, also across a reopened section. */
static void test_duplicates_name_both_positions(void **state)
{
	EXPECT_ERR("[broker]\ntls=false\nport = 1\n[ingest]\n[broker]\n  port = 2\n",
		   "t.conf:6:3: option 'port' is given twice in [broker]; first at ");
	EXPECT_ERR("[broker]\ntls=false\nport = 1\n[ingest]\n[broker]\n  port = 2\n", "t.conf:3:8");
	EXPECT_ERR("gateway_id = a\ngateway_id = b\n[broker]\ntls=false\n",
		   "t.conf:2:1: option 'gateway_id' is given twice at the top level; first at ");
	EXPECT_ERR("[broker]\ntls=false\n[sink s]\ntype = file\npath = /a\npath = /b\n",
		   "t.conf:6:1: option 'path' is given twice in [sink s]; first at ");
}

/* One load reports every error of the file, in file order, each on its own line. */
static void test_all_errors_reported(void **state)
{
	char e[4096] = "";
	tg_config *c = load("log_level = loud\n"
			    "[broker]\n"
			    "tls = maybe\n"
			    "port = 99999\n"
			    "bogus = 1\n"
			    "[nope]\n"
			    "ignored = 1\n"
			    "[outbox]\n"
			    "max_bytes = 12 parsecs\n",
			    e, sizeof e);
	assert_null(c);
	const char *want[] = {"t.conf:1:13:", "t.conf:3:7:", "t.conf:4:8:", "t.conf:5:1:", "t.conf:6:1:", "t.conf:9:13:"};
	const char *p = e;
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const char *hit = strstr(p, want[i]);
		if (!hit)
			fail_msg("'%s' missing (or out of order) in:\n%s", want[i], e);
		p = hit + 1;
	}
	assert_null(strstr(e, "ignored")); /* keys of an unknown section are not reported one by one */
	int lines = 1;
	for (const char *q = e; *q; q++)
		lines += *q == '\n';
	if (lines != 6)
		fail_msg("%d lines:\n%s", lines, e);
}

/* Comments after values, '#' inside a word, and quoted values, as README writes them. */
static void test_comments_and_quotes(void **state)
{
	char err[2048] = "";
	tg_config *c = load("gateway_id = gw-7   # the box's name\n"
			    "data_dir = /tmp/x ; old style comment\n"
			    "[broker]\n"
			    "tls = false\t# tab before the comment\n"
			    "host = broker.local#not-a-comment\n"
			    "commit_interval_is_not_here = 1\n",
			    err, sizeof err);
	assert_null(c); /* the unknown key is still an error ... */
	assert_non_null(strstr(err, "t.conf:6:1: [broker] unknown option 'commit_interval_is_not_here'"));
	assert_null(strchr(err, '\n')); /* ... and the only one */
	c = load("gateway_id = gw-7   # the box's name\n"
		 "data_dir = /tmp/x ; old style comment\n"
		 "[broker]                # section comment\n"
		 "tls = false\t# tab before the comment\n"
		 "host = broker.local#not-a-comment\n"
		 "client_id = \"  spaced # kept \\\"q\\\" \\\\ \"   # comment after quotes\n"
		 "[outbox]\n"
		 "commit_interval = 5ms   # group commit; PUBACKs leave after it\n"
		 "[ingest]\n"
		 "default_sinks = lake, archive  # every accepted record goes to both\n"
		 "[sink archive]\n"
		 "type = file\n"
		 "path = /tmp/x/archive   # a folder\n",
		 err, sizeof err);
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->gateway_id, "gw-7");
	assert_string_equal(c->data_dir, "/tmp/x");
	assert_int_equal(c->broker_tls, 0);
	assert_string_equal(c->broker_host, "broker.local#not-a-comment");
	assert_string_equal(c->client_id, "  spaced # kept \"q\" \\ ");
	assert_int_equal(c->commit_interval_ms, 5);
	assert_int_equal(c->ndefault_sinks, 2);
	assert_string_equal(c->default_sink_list[1], "archive");
	/* what check-config prints reads back the same */
	char *buf = printed(c);
	assert_non_null(strstr(buf, "client_id = \"  spaced # kept \\\"q\\\" \\\\ \"\n"));
	config_free(c);
	c = load(buf, err, sizeof err);
	if (!c)
		fail_msg("the printed config does not load: %s\n%s", err, buf);
	assert_string_equal(c->client_id, "  spaced # kept \"q\" \\ ");
	config_free(c);
	free(buf);
}

/* default_sinks names the lake and no section does: a file sink under data_dir. */
static void test_builtin_lake(void **state)
{
	char err[1024] = "";
	tg_config *c = load("data_dir = /srv/tg\n[broker]\ntls = false\n", err, sizeof err);
	if (!c)
		fail_msg("%s", err);
	const tg_sink_conf *lake = config_sink(c, "lake");
	assert_non_null(lake);
	assert_int_equal(lake->builtin, 1);
	assert_string_equal(lake->type->type, "file");
	assert_string_equal(*(char *const *)lake->opts, "/srv/tg/lake"); /* file_opts.path comes first */
	assert_int_equal(c->ndefault_sinks, 1);
	config_free(c);
	/* not named: not made */
	c = load("[broker]\ntls = false\n[ingest]\ndefault_sinks =\n", err, sizeof err);
	assert_non_null(c);
	assert_int_equal(c->nsinks, 0);
	config_free(c);
	/* a section of that name wins */
	c = load("[broker]\ntls = false\n[sink lake]\ntype = file\npath = /elsewhere\n", err, sizeof err);
	assert_non_null(c);
	assert_int_equal(c->nsinks, 1);
	assert_int_equal(c->sinks[0].builtin, 0);
	config_free(c);
}

/* The cross-option checks that need nothing but the file. */
static void test_checks_across_options(void **state)
{
	EXPECT_ERR("[broker]\ntls=false\nsubscribe = devices/+/telemetry, devices/#/bad\n",
		   "t.conf:3:13: [broker] subscribe: 'devices/#/bad' is not a valid MQTT topic filter");
	EXPECT_ERR("[broker]\ntls=false\nsubscribe = , ,\n", "t.conf:3:13: [broker] subscribe: no topic filter given");
	EXPECT_ERR("[broker]\ntls=false\nport = 8883\n[http]\nport = 8883\n",
		   "t.conf:5:8: [http] port 8883 is the broker's port too ([broker] port, ");
	EXPECT_ERR("[broker]\ntls=false\nhost = localhost\n[http]\nport = 8883\nbind = 0.0.0.0\n",
		   "t.conf:5:8: [http] port 8883 is the broker's port too");
	EXPECT_ERR("[broker]\ntls=false\n[sink a]\ntype = file\npath = /x/lake\n[sink b]\ntype = file\npath = /x//lake/\n",
		   "t.conf:8:8: [sink b] path /x//lake/ is also the path of [sink a] (");
	EXPECT_ERR("data_dir = /d\n[broker]\ntls=false\n[sink mine]\ntype = file\npath = /d/lake\n",
		   "t.conf:6:8: [sink mine] path /d/lake is also the path of [sink lake] (built in)");
	/* a broker elsewhere may well use the port the ops server listens on here */
	char err[512];
	tg_config *c = load("[broker]\ntls=false\nhost = broker.site.example\nport = 8883\n[http]\nport = 8883\n", err, sizeof err);
	if (!c)
		fail_msg("%s", err);
	config_free(c);
}

static void test_urls_redacted(void **state)
{
	char out[256];
	config_redact_url("http://user:pw@127.0.0.1:9000/x?y", out, sizeof out);
	assert_string_equal(out, "http://user:<redacted>@127.0.0.1:9000/x?y");
	config_redact_url("https://token@host/p", out, sizeof out);
	assert_string_equal(out, "https://<redacted>@host/p");
	config_redact_url("https://host/p@q", out, sizeof out);
	assert_string_equal(out, "https://host/p@q");
	config_redact_url("/plain/path", out, sizeof out);
	assert_string_equal(out, "/plain/path");
	char err[512];
	tg_config *c = load("[broker]\ntls=false\n[ingest]\ndefault_sinks = up\n[sink up]\ntype = s3\nbucket = b\n"
			    "endpoint = http://minio:s3cr3t@127.0.0.1:9000\n",
			    err, sizeof err);
	if (!c)
		fail_msg("%s", err);
	char *buf = printed(c);
	assert_null(strstr(buf, "s3cr3t"));
	assert_non_null(strstr(buf, "endpoint = http://minio:<redacted>@127.0.0.1:9000\n"));
	free(buf);
	config_free(c);
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
	char *buf = printed(c);
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
		cmocka_unit_test(test_duplicates_name_both_positions),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_comments_and_quotes),
		cmocka_unit_test(test_builtin_lake),
		cmocka_unit_test(test_checks_across_options),
		cmocka_unit_test(test_urls_redacted),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
