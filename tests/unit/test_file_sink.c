/*
 * test_file_sink.c — the lake sink: Hive layout per (table, hour), whole lines, files
 * finished (renamed) on close, gzip members readable as one file, crash leftovers repaired.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/err.h"
#include "sinks/registry.h"
#include "store/sink.h"
#include "test_util.h"

static char *dir;

static sink *open_sink(const sink_ops **ops, void **opts, const char *extra_key, const char *extra_val)
{
	*ops = sink_ops_find("file");
	assert_non_null(*ops);
	*opts = calloc(1, (*ops)->conf.options_size);
	char lake[4096];
	snprintf(lake, sizeof lake, "%s/lake", dir);
	assert_int_equal(config_table_defaults((*ops)->conf.options, *opts, NULL, 0), 0);
	assert_int_equal(config_table_set((*ops)->conf.options, *opts, "path", lake, NULL, 0), 0);
	if (extra_key)
		assert_int_equal(config_table_set((*ops)->conf.options, *opts, extra_key, extra_val, NULL, 0), 0);
	sink_env env = {.gateway_id = "gw-u"};
	sink_limits lim = {0};
	char err[256];
	sink *s = (*ops)->open(*opts, &env, &lim, err, sizeof err);
	assert_non_null(s);
	assert_true(lim.max_records > 0);
	return s;
}

static void close_sink(const sink_ops *ops, sink *s, void *opts)
{
	ops->close(s);
	config_table_free(ops->conf.options, opts);
	free(opts);
}

/* 2026-11-25T10:xx and 11:xx UTC */
#define H10 1795600800000LL
#define H11 (H10 + 3600000LL)

static void test_layout_and_close(void **state)
{
	const sink_ops *ops;
	void *opts;
	sink *s = open_sink(&ops, &opts, NULL, NULL);
	sink_record r[4] = {
		{.id = 1, .table = "telemetry", .created_ms = H10 + 5, .data = "{\"a\":1}", .len = 7},
		{.id = 2, .table = "telemetry", .created_ms = H11 + 5, .data = "{\"a\":2}", .len = 7},
		{.id = 3, .table = "alerts", .created_ms = H10 + 6, .data = "{\"a\":3}", .len = 7},
		{.id = 4, .table = "telemetry", .created_ms = H10 + 7, .data = "{\"a\":4}", .len = 7},
	};
	sink_status st[4] = {SINK_RETRY, SINK_RETRY, SINK_RETRY, SINK_RETRY};
	char err[256];
	assert_int_equal(ops->send(s, r, 4, st, H11, err, sizeof err), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(st[i], SINK_OK);
	close_sink(ops, s, opts);
	char p[4096];
	snprintf(p, sizeof p, "%s/lake/telemetry/year=2026/month=11/day=25/hour=10/gw-u-1.json", dir);
	char *text = tu_read(p, NULL);
	assert_non_null(text);
	assert_string_equal(text, "{\"a\":1}\n{\"a\":4}\n");
	free(text);
	snprintf(p, sizeof p, "%s/lake/telemetry/year=2026/month=11/day=25/hour=11/gw-u-2.json", dir);
	text = tu_read(p, NULL);
	assert_string_equal(text, "{\"a\":2}\n");
	free(text);
	snprintf(p, sizeof p, "%s/lake/alerts/year=2026/month=11/day=25/hour=10/gw-u-3.json", dir);
	text = tu_read(p, NULL);
	assert_string_equal(text, "{\"a\":3}\n");
	free(text);
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "test -z \"$(find %s/lake -name '.*inprogress')\"", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_gzip_members(void **state)
{
	const sink_ops *ops;
	void *opts;
	sink *s = open_sink(&ops, &opts, "gzip", "true");
	char err[256];
	for (int b = 0; b < 3; b++) {
		sink_record r = {.id = 10 + b, .table = "gz", .created_ms = H10, .data = "{\"b\":true}", .len = 10};
		sink_status st = SINK_RETRY;
		assert_int_equal(ops->send(s, &r, 1, &st, H10, err, sizeof err), 0);
		assert_int_equal(st, SINK_OK);
	}
	close_sink(ops, s, opts);
	char p[4096];
	snprintf(p, sizeof p, "%s/lake/gz/year=2026/month=11/day=25/hour=10/gw-u-10.json.gz", dir);
	gzFile gz = gzopen(p, "rb");
	assert_non_null(gz);
	char buf[256] = {0};
	int n = gzread(gz, buf, sizeof buf - 1);
	gzclose(gz);
	assert_int_equal(n, 33);
	assert_string_equal(buf, "{\"b\":true}\n{\"b\":true}\n{\"b\":true}\n");
}

/* Batches larger than one writev() (512 lines) and than the 64 KiB gzip output buffer, with
 * two tables interleaved: every line arrives, in order, in both modes. */
static void big_batch(const char *gzip)
{
	const sink_ops *ops;
	void *opts;
	sink *s = open_sink(&ops, &opts, "gzip", gzip);
	enum { N = 3000 };
	sink_record *r = calloc(N, sizeof *r);
	sink_status *st = calloc(N, sizeof *st);
	char **data = calloc(N, sizeof *data);
	unsigned seed = 5;
	for (int i = 0; i < N; i++) {
		data[i] = malloc(400);
		/* random digits: gzip cannot squeeze 3000 of them under 64 KiB */
		int len = snprintf(data[i], 400, "{\"i\":%d,\"noise\":\"", i);
		for (int k = 0; k < 120; k++)
			data[i][len++] = (char)('0' + rand_r(&seed) % 10);
		len += snprintf(data[i] + len, 400 - (size_t)len, "\"}");
		r[i] = (sink_record){.id = 100 + i, .table = i % 3 ? "big" : "small", .created_ms = H10,
				     .data = data[i], .len = (size_t)len};
		st[i] = SINK_RETRY;
	}
	char err[256];
	assert_int_equal(ops->send(s, r, N, st, H10, err, sizeof err), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(st[i], SINK_OK);
	close_sink(ops, s, opts);
	const char *ext = strcmp(gzip, "true") == 0 ? ".json.gz" : ".json";
	for (int t = 0; t < 2; t++) {
		char p[4096];
		snprintf(p, sizeof p, "%s/lake/%s/year=2026/month=11/day=25/hour=10/gw-u-%d%s", dir, t ? "big" : "small",
			 t ? 101 : 100, ext);
		gzFile gz = gzopen(p, "rb"); /* reads plain files too */
		assert_non_null(gz);
		char line[512];
		int seen = 0;
		for (int i = t ? 1 : 0; i < N; i++) {
			if (!(i % 3 ? t : !t))
				continue;
			assert_non_null(gzgets(gz, line, sizeof line));
			line[strcspn(line, "\n")] = '\0';
			assert_string_equal(line, data[i]);
			seen++;
		}
		assert_null(gzgets(gz, line, sizeof line));
		gzclose(gz);
		assert_int_equal(seen, t ? 2000 : 1000);
	}
	for (int i = 0; i < N; i++)
		free(data[i]);
	free(data);
	free(r);
	free(st);
}

static void test_big_batch_plain(void **state) { big_batch("false"); }
static void test_big_batch_gzip(void **state) { big_batch("true"); }

static void test_crash_leftover_repaired(void **state)
{
	char d[4096], p[4200];
	snprintf(d, sizeof d, "%s/lake/telemetry/year=2026/month=11/day=25/hour=09", dir);
	char cmd[4300];
	snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
	assert_int_equal(system(cmd), 0);
	snprintf(p, sizeof p, "%s/.gw-u-77.json.inprogress", d);
	tu_write(p, "{\"ok\":1}\n{\"ok\":2}\n{\"half\":");
	const sink_ops *ops;
	void *opts;
	sink *s = open_sink(&ops, &opts, NULL, NULL);
	close_sink(ops, s, opts);
	snprintf(p, sizeof p, "%s/gw-u-77.json", d);
	char *text = tu_read(p, NULL);
	assert_non_null(text);
	assert_string_equal(text, "{\"ok\":1}\n{\"ok\":2}\n");
	free(text);
}

static int each(void **state)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf %s/lake", dir);
	return system(cmd);
}

static int setup(void **state)
{
	dir = tu_tmpdir();
	return 0;
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
		cmocka_unit_test_setup(test_layout_and_close, each),
		cmocka_unit_test_setup(test_gzip_members, each),
		cmocka_unit_test_setup(test_crash_leftover_repaired, each),
		cmocka_unit_test_setup(test_big_batch_plain, each),
		cmocka_unit_test_setup(test_big_batch_gzip, each),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
