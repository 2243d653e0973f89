/*
 * test_sink_s3.c — the pure parts of the S3 sink: object key layout (UTC hour from
 * created_ms, prefix handling, pre-1970), request URLs (path and virtual-hosted style,
 * encoding of '=' in Hive keys), grouping a batch by (table, hour), the gzip NDJSON body
 * (inflated back with zlib) and the HTTP error classification; plus open() refusals and
 * one send() against a closed loopback port. Real-peer behaviour (s3rver) is in
 * tests/integration/test_sinks_peers.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "core/err.h"
#include "sinks/aws.h"
#include "sinks/registry.h"
#include "sinks/s3.h"

/* 2026-11-25T16:34:44.123Z */
#define T0 1795624484123LL

static void test_object_key(void **state)
{
	(void)state;
	tg_buf b = { 0 };
	assert_int_equal(sink_s3_object_key(&b, "raw/v1", "telemetry", T0, "gw-01", 17, 42), 0);
	assert_string_equal(b.p, "raw/v1/telemetry/year=2026/month=11/day=25/hour=16/gw-01-17-42.json.gz");
	/* Slashes around the prefix are ignored; an empty prefix adds nothing. */
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, "/raw/", "alerts", T0, "gw", 1, 1), 0);
	assert_string_equal(b.p, "raw/alerts/year=2026/month=11/day=25/hour=16/gw-1-1.json.gz");
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, "", "alerts", T0, "gw", 1, 2), 0);
	assert_string_equal(b.p, "alerts/year=2026/month=11/day=25/hour=16/gw-1-2.json.gz");
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, NULL, "t", 0, "gw", 1, 2), 0);
	assert_string_equal(b.p, "t/year=1970/month=01/day=01/hour=00/gw-1-2.json.gz");
	/* One millisecond before the epoch is still 1969-12-31T23. */
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, "", "t", -1, "gw", 1, 2), 0);
	assert_string_equal(b.p, "t/year=1969/month=12/day=31/hour=23/gw-1-2.json.gz");
	/* Hour boundaries: 23:59:59.999 and 00:00:00.000 of a leap day. */
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, "", "t", 1709251199999LL, "gw", 1, 2), 0);
	assert_string_equal(b.p, "t/year=2024/month=02/day=29/hour=23/gw-1-2.json.gz");
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_key(&b, "", "t", 1709251200000LL, "gw", 1, 2), 0);
	assert_string_equal(b.p, "t/year=2024/month=03/day=01/hour=00/gw-1-2.json.gz");
	tg_buf_free(&b);
}

static void test_object_url(void **state)
{
	(void)state;
	tg_buf b = { 0 };
	const char *key = "p/telemetry/year=2026/hour=16/gw 1-1-2.json.gz";
	assert_int_equal(sink_s3_object_url(&b, "http://127.0.0.1:4568/", "lake", 1, key), 0);
	assert_string_equal(b.p, "http://127.0.0.1:4568/lake/p/telemetry/year%3D2026/hour%3D16/gw%201-1-2.json.gz");
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_url(&b, "https://s3.eu-west-1.amazonaws.com", "lake", 0, "a=b"), 0);
	assert_string_equal(b.p, "https://lake.s3.eu-west-1.amazonaws.com/a%3Db");
	tg_buf_reset(&b);
	assert_int_equal(sink_s3_object_url(&b, "no-scheme", "lake", 0, "k"), TG_EINVAL);
	tg_buf_free(&b);
}

static sink_record rec(int64_t id, const char *table, int64_t created, const char *data)
{
	return (sink_record){ .id = id, .msg_id = "m", .table = table, .pkey = "dev",
			      .created_ms = created, .data = data, .len = strlen(data) };
}

static void test_group(void **state)
{
	(void)state;
	const int64_t H = 3600000;
	sink_record r[7] = {
		rec(1, "telemetry", T0, "a"),
		rec(2, "telemetry", T0 + 1000, "b"),
		rec(3, "alerts", T0, "c"),
		rec(4, "telemetry", T0 + H, "d"),     /* next hour */
		rec(5, "telemetry", T0 + 2000, "e"),   /* back to the first group */
		rec(6, "alerts", T0 + 10, "f"),
		rec(7, "telemetry", -1, "g"),          /* before the epoch: its own hour */
	};
	size_t g[7], first[7];
	assert_int_equal(sink_s3_group(r, 7, g, first), 4);
	size_t want[7] = { 0, 0, 1, 2, 0, 1, 3 };
	/* T0 is 16:34:44: T0 + 2000 stays in hour 16. */
	assert_memory_equal(g, want, sizeof want);
	assert_int_equal(first[0], 0);
	assert_int_equal(first[1], 2);
	assert_int_equal(first[2], 3);
	assert_int_equal(first[3], 6);
	/* -1 ms and 0 ms are different hours; 0 and 3599999 the same. */
	sink_record e[3] = { rec(1, "t", -1, "x"), rec(2, "t", 0, "y"), rec(3, "t", H - 1, "z") };
	assert_int_equal(sink_s3_group(e, 3, g, first), 2);
	assert_int_equal(g[1], g[2]);
	assert_int_equal(sink_s3_group(e, 0, g, first), 0);
}

static void test_gzip_roundtrip(void **state)
{
	(void)state;
	/* Enough data to need several output chunks, and an empty record. */
	enum { N = 2000 };
	static char bufs[N][80];
	static sink_record r[N];
	static size_t idx[N];
	size_t total = 0;
	for (int i = 0; i < N; i++) {
		if (i == 7)
			bufs[i][0] = '\0';
		else
			snprintf(bufs[i], sizeof bufs[i], "{\"msg_id\":\"gw-%d\",\"v\":%d,\"r\":%u}", i, i * 7,
				 (unsigned)(i * 2654435761u));
		r[i] = rec(i + 1, "t", T0, bufs[i]);
		idx[i] = (size_t)(N - 1 - i); /* reversed: the body follows idx, not the batch */
		total += r[i].len + 1;
	}
	tg_buf gz = { 0 };
	assert_int_equal(sink_s3_gzip_ndjson(&gz, r, idx, N, 6), 0);
	assert_true(gz.len > 18);
	assert_int_equal((unsigned char)gz.p[0], 0x1f); /* gzip magic */
	assert_int_equal((unsigned char)gz.p[1], 0x8b);
	assert_true(gz.len < total);

	char *out = malloc(total + 16);
	z_stream z = { 0 };
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)gz.p;
	z.avail_in = (uInt)gz.len;
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)(total + 16);
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, total);
	assert_int_equal(z.avail_in, 0);
	inflateEnd(&z);
	size_t off = 0;
	for (int i = N - 1; i >= 0; i--) {
		assert_memory_equal(out + off, r[i].data, r[i].len);
		assert_int_equal(out[off + r[i].len], '\n');
		off += r[i].len + 1;
	}
	free(out);

	/* An empty group is a valid empty gzip stream. */
	tg_buf_reset(&gz);
	assert_int_equal(sink_s3_gzip_ndjson(&gz, r, idx, 0, 1), 0);
	char one[4];
	uLongf ol = sizeof one;
	z_stream z2 = { 0 };
	assert_int_equal(inflateInit2(&z2, 15 + 16), Z_OK);
	z2.next_in = (Bytef *)gz.p;
	z2.avail_in = (uInt)gz.len;
	z2.next_out = (Bytef *)one;
	z2.avail_out = (uInt)ol;
	assert_int_equal(inflate(&z2, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z2.total_out, 0);
	inflateEnd(&z2);
	tg_buf_free(&gz);
}

static void test_classify(void **state)
{
	(void)state;
	char code[64];
#define ERR(c) "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" c "</Code><Message>m</Message></Error>"
	static const struct {
		long status;
		const char *body;
		sink_status want;
		const char *code;
	} cases[] = {
		{ 200, "", SINK_OK, "" },
		{ 204, NULL, SINK_OK, "" },
		{ 0, NULL, SINK_RETRY, "" },
		{ 301, ERR("PermanentRedirect"), SINK_RETRY, "PermanentRedirect" },
		{ 500, ERR("InternalError"), SINK_RETRY, "InternalError" },
		{ 503, ERR("SlowDown"), SINK_RETRY, "SlowDown" },
		{ 403, ERR("SignatureDoesNotMatch"), SINK_RETRY, "SignatureDoesNotMatch" },
		{ 403, ERR("RequestTimeTooSkewed"), SINK_RETRY, "RequestTimeTooSkewed" },
		{ 404, ERR("NoSuchBucket"), SINK_RETRY, "NoSuchBucket" },
		{ 408, "", SINK_RETRY, "" },
		{ 429, "", SINK_RETRY, "" },
		{ 400, ERR("RequestTimeout"), SINK_RETRY, "RequestTimeout" },
		{ 400, ERR("ExpiredToken"), SINK_RETRY, "ExpiredToken" },
		{ 400, ERR("BadDigest"), SINK_RETRY, "BadDigest" },
		{ 400, ERR("AuthorizationHeaderMalformed"), SINK_RETRY, "AuthorizationHeaderMalformed" },
		{ 400, ERR("KeyTooLongError"), SINK_POISON, "KeyTooLongError" },
		{ 400, ERR("EntityTooLarge"), SINK_POISON, "EntityTooLarge" },
		{ 400, ERR("InvalidArgument"), SINK_POISON, "InvalidArgument" },
		{ 413, "", SINK_POISON, "" },
		{ 400, "garbage", SINK_POISON, "" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *b = cases[i].body;
		sink_status got = sink_s3_classify(cases[i].status, b, b ? strlen(b) : 0, code, sizeof code);
		if (got != cases[i].want)
			fail_msg("case %zu (HTTP %ld %s): got %d want %d", i, cases[i].status,
				 cases[i].code, got, cases[i].want);
		assert_string_equal(code, cases[i].code);
	}
#undef ERR
}

static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void test_open_and_unreachable(void **state)
{
	(void)state;
	char endpoint[64], err[512];
	snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", closed_port());
	s3_opts o = { .bucket = "lake", .prefix = "", .region = "us-east-1", .endpoint = endpoint,
		      .path_style = 1, .access_key_id = "AK", .secret_access_key = "SK",
		      .session_token = "", .timeout_ms = 2000, .flush_bytes = 1 << 20,
		      .flush_age_ms = 5000, .max_records = 1000, .gzip_level = 6 };
	sink_env env = { .gateway_id = "gw" };
	sink_limits lim = { 0 };
	sink *s = sink_s3_ops.open(&o, &env, &lim, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(lim.max_records, 1000);
	assert_int_equal(lim.max_bytes, 1 << 20);
	assert_int_equal(lim.max_age_ms, 5000);

	/* One group whose key is over 1024 bytes (poison, never sent) and one good group
	 * that cannot be delivered: the call returns 0 with both settled as they must be. */
	char longtable[1100];
	memset(longtable, 't', sizeof longtable - 1);
	longtable[sizeof longtable - 1] = 0;
	sink_record r[3] = { rec(1, longtable, T0, "{}"), rec(2, "telemetry", T0, "{}"),
			     rec(3, longtable, T0, "{}") };
	sink_status res[3] = { 9, 9, 9 };
	assert_int_equal(sink_s3_ops.send(s, r, 3, res, 0, err, sizeof err), 0);
	assert_int_equal(res[0], SINK_POISON);
	assert_int_equal(res[1], SINK_RETRY);
	assert_int_equal(res[2], SINK_POISON);
	/* Only deliverable records: a whole-call failure. */
	assert_int_equal(sink_s3_ops.send(s, r + 1, 1, res, 0, err, sizeof err), TG_ERETRY);
	assert_int_equal(res[0], SINK_RETRY);
	assert_non_null(strstr(err, "127.0.0.1"));
	sink_s3_ops.close(s);
	sink_s3_ops.close(NULL);

	o.bucket = "";
	assert_null(sink_s3_ops.open(&o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "bucket"));
	o.bucket = "lake";
	o.path_style = 0;
	o.endpoint = "localhost:9000"; /* no scheme: no virtual-hosted URL can be formed */
	assert_null(sink_s3_ops.open(&o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "endpoint"));
}

static void test_options_table(void **state)
{
	(void)state;
	assert_ptr_equal(sink_ops_find("s3"), &sink_s3_ops);
	int req = 0, secret = 0, seen_path_style = 0;
	for (const config_option *op = sink_s3_ops.conf.options; op->name; op++) {
		req += (op->flags & CFG_REQUIRED) != 0;
		secret += (op->flags & CFG_SECRET) != 0;
		assert_true(op->offset < sizeof(s3_opts));
		if (!strcmp(op->name, "path_style")) {
			seen_path_style = 1;
			assert_int_equal(op->type, CFG_BOOL);
			assert_int_equal(op->offset, offsetof(s3_opts, path_style));
		}
	}
	assert_int_equal(req, 1);
	assert_int_equal(secret, 3);
	assert_true(seen_path_style);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_object_key),
		cmocka_unit_test(test_object_url),
		cmocka_unit_test(test_group),
		cmocka_unit_test(test_gzip_roundtrip),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_open_and_unreachable),
		cmocka_unit_test(test_options_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
