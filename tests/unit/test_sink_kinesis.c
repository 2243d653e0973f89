/*
 * test_sink_kinesis.c — the pure parts of the Kinesis sink and the shared AWS helpers:
 * encoders against published vectors, credential resolution, record screening, the
 * PutRecords body (decoded back), response parsing and error classification, plus one
 * send() against a closed loopback port to pin the whole-call failure contract.
 * Real-peer behaviour (kinesalite) is in tests/integration/test_sinks_peers.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "sinks/aws.h"
#include "sinks/kinesis.h"
#include "sinks/registry.h"

/* ---- encoders ------------------------------------------------------------------------- */

static void test_b64_vectors(void **state)
{
	(void)state;
	/* RFC 4648 section 10 test vectors. */
	static const char *in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *out[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char buf[16];
	for (size_t i = 0; i < 7; i++) {
		size_t n = aws_b64_encode(in[i], strlen(in[i]), buf);
		assert_string_equal(buf, out[i]);
		assert_int_equal(n, strlen(out[i]));
		assert_int_equal(aws_b64_len(strlen(in[i])), strlen(out[i]));
	}
}

static void test_digests(void **state)
{
	(void)state;
	char hex[65], md5[25];
	aws_sha256_hex("", 0, hex);
	assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	aws_sha256_hex("abc", 3, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	aws_md5_b64("", 0, md5);
	assert_string_equal(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
	aws_md5_b64("The quick brown fox jumps over the lazy dog", 43, md5);
	assert_string_equal(md5, "nhB9nTcrtoJr2B01QqQZ1g==");
}

static void test_uri_and_json_encoding(void **state)
{
	(void)state;
	tg_buf b = { 0 };
	assert_int_equal(aws_uri_path_encode(&b, "pre fix/t/year=2026/x-1_2.~a+b\xc3\xa9"), 0);
	assert_string_equal(b.p, "pre%20fix/t/year%3D2026/x-1_2.~a%2Bb%C3%A9");
	tg_buf_reset(&b);
	assert_int_equal(aws_json_str(&b, "a\"b\\c\n\x01z", 8), 0);
	assert_string_equal(b.p, "\"a\\\"b\\\\c\\u000a\\u0001z\"");
	json_t *j = json_loads(b.p, JSON_DECODE_ANY, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(j), "a\"b\\c\n\x01z");
	json_decref(j);
	tg_buf_reset(&b);
	assert_int_equal(tg_buf_printf(&b, "%s-%d", "x", 42), 0);
	assert_string_equal(b.p, "x-42");
	assert_int_equal(b.len, 4);
	tg_buf_free(&b);
	tg_buf_free(NULL);
}

/* ---- credentials ---------------------------------------------------------------------- */

static const char *env_full(const char *name)
{
	if (!strcmp(name, "AWS_ACCESS_KEY_ID"))
		return "ENVKEY";
	if (!strcmp(name, "AWS_SECRET_ACCESS_KEY"))
		return "envsecret";
	if (!strcmp(name, "AWS_SESSION_TOKEN"))
		return "envtoken";
	return NULL;
}

static const char *env_empty(const char *name)
{
	(void)name;
	return NULL;
}

static const char *env_key_only(const char *name)
{
	return strcmp(name, "AWS_ACCESS_KEY_ID") ? "" : "ENVKEY";
}

static void test_creds_resolution(void **state)
{
	(void)state;
	aws_creds c;
	char err[256];

	/* Config wins and never borrows the environment's token. */
	assert_int_equal(aws_creds_resolve(&c, "CFGKEY", "cfgsecret", "", env_full, err, sizeof err), 0);
	assert_string_equal(c.access_key_id, "CFGKEY");
	assert_string_equal(c.secret_access_key, "cfgsecret");
	assert_null(c.session_token);
	assert_int_equal(c.from_env, 0);
	aws_creds_free(&c);

	assert_int_equal(aws_creds_resolve(&c, "CFGKEY", "cfgsecret", "cfgtok", env_full, err, sizeof err), 0);
	assert_string_equal(c.session_token, "cfgtok");
	aws_creds_free(&c);

	/* Empty config: the environment, token included. */
	assert_int_equal(aws_creds_resolve(&c, "", "", "", env_full, err, sizeof err), 0);
	assert_string_equal(c.access_key_id, "ENVKEY");
	assert_string_equal(c.secret_access_key, "envsecret");
	assert_string_equal(c.session_token, "envtoken");
	assert_int_equal(c.from_env, 1);
	aws_creds_free(&c);
	assert_int_equal(aws_creds_resolve(&c, NULL, NULL, NULL, env_full, err, sizeof err), 0);
	assert_string_equal(c.access_key_id, "ENVKEY");
	aws_creds_free(&c);

	/* Half-configured or absent credentials are refused with a reason. */
	assert_int_equal(aws_creds_resolve(&c, "CFGKEY", "", "", env_full, err, sizeof err), TG_EINVAL);
	assert_non_null(strstr(err, "secret_access_key"));
	assert_int_equal(aws_creds_resolve(&c, "", "cfgsecret", "", env_full, err, sizeof err), TG_EINVAL);
	assert_int_equal(aws_creds_resolve(&c, "", "", "", env_empty, err, sizeof err), TG_EINVAL);
	assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
	assert_int_equal(aws_creds_resolve(&c, "", "", "", env_key_only, err, sizeof err), TG_EINVAL);
	assert_int_equal(aws_creds_resolve(&c, "a:b", "s", "", env_empty, err, sizeof err), TG_EINVAL);
	aws_creds_free(&c); /* already freed / zeroed: must be harmless */
	aws_creds_free(NULL);
}

/* ---- record screening ----------------------------------------------------------------- */

static sink_record rec(int64_t id, const char *pkey, const char *data, size_t len)
{
	return (sink_record){ .id = id, .msg_id = "gw-1", .table = "telemetry", .pkey = pkey,
			      .created_ms = 0, .data = data, .len = len };
}

static void test_check_record(void **state)
{
	(void)state;
	char why[256];
	char *big = malloc(KINESIS_MAX_RECORD);
	memset(big, 'x', KINESIS_MAX_RECORD);
	char pk256[257], pk257[258], utf[2 * 256 + 1];
	memset(pk256, 'k', 256);
	pk256[256] = 0;
	memset(pk257, 'k', 257);
	pk257[257] = 0;
	for (int i = 0; i < 256; i++)
		memcpy(utf + 2 * i, "\xc3\xa9", 2); /* 256 characters, 512 bytes */
	utf[512] = 0;

	sink_record r = rec(1, "dev-1", "{}", 2);
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_OK);
	assert_int_equal(sink_kinesis_record_cost(&r), 2 + 1 + 5);
	r.pkey = "";
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_POISON);
	assert_non_null(strstr(why, "partition key"));
	r.pkey = NULL;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_POISON);
	r.pkey = pk256;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_OK);
	r.pkey = pk257;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_POISON);
	r.pkey = utf;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_OK);
	/* Outside the BMP a character is two UTF-16 units: 128 emoji fit, 129 do not. */
	char emoji[4 * 129 + 1];
	for (int i = 0; i < 129; i++)
		memcpy(emoji + 4 * i, "\xf0\x9f\x8c\x8a", 4);
	emoji[4 * 128] = 0;
	r.pkey = emoji;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_OK);
	memcpy(emoji + 4 * 128, "\xf0\x9f\x8c\x8a", 4);
	emoji[4 * 129] = 0;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_POISON);

	/* data + "\n" + key exactly 1 MiB is fine, one byte more is poison. */
	r = rec(7, "k", big, KINESIS_MAX_RECORD - 2);
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_OK);
	r.len++;
	assert_int_equal(sink_kinesis_check_record(&r, why, sizeof why), SINK_POISON);
	assert_non_null(strstr(why, "record 7"));
	free(big);
}

/* ---- body ----------------------------------------------------------------------------- */

static size_t b64_decode(const char *in, unsigned char *out)
{
	size_t n = strlen(in);
	int m = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	assert_true(m >= 0);
	size_t pad = (n && in[n - 1] == '=') + (n > 1 && in[n - 2] == '=');
	return (size_t)m - pad;
}

static void test_build_body(void **state)
{
	(void)state;
	const char *datas[] = { "{\"a\":1}", "{\"bb\":22}", "{\"ccc\":333}", "" };
	sink_record recs[4];
	for (int i = 0; i < 4; i++)
		recs[i] = rec(i + 1, i == 2 ? "dev \"q\"\\" : "dev-1", datas[i], strlen(datas[i]));
	size_t idx[] = { 3, 0, 2, 1 }; /* order of the call, not of the batch */
	tg_buf b = { 0 };
	assert_int_equal(sink_kinesis_build_body(&b, "my-stream", recs, idx, 4), 0);

	json_error_t je;
	json_t *root = json_loads(b.p, 0, &je);
	assert_non_null(root);
	assert_string_equal(json_string_value(json_object_get(root, "StreamName")), "my-stream");
	json_t *arr = json_object_get(root, "Records");
	assert_int_equal(json_array_size(arr), 4);
	for (size_t i = 0; i < 4; i++) {
		json_t *e = json_array_get(arr, i);
		const sink_record *r = &recs[idx[i]];
		unsigned char dec[64];
		size_t n = b64_decode(json_string_value(json_object_get(e, "Data")), dec);
		assert_int_equal(n, r->len + 1);
		assert_memory_equal(dec, r->data, r->len);
		assert_int_equal(dec[r->len], '\n');
		assert_string_equal(json_string_value(json_object_get(e, "PartitionKey")), r->pkey);
		assert_int_equal(json_object_size(e), 2);
	}
	json_decref(root);
	tg_buf_free(&b);
}

/* ---- responses ------------------------------------------------------------------------ */

static void test_parse_response_ok_and_partial(void **state)
{
	(void)state;
	size_t idx[] = { 4, 1, 2 };
	sink_status res[5] = { 9, 9, 9, 9, 9 };
	size_t nf = 99;
	char err[256] = "";
	const char *ok = "{\"FailedRecordCount\":0,\"Records\":[{\"SequenceNumber\":\"1\",\"ShardId\":\"s-0\"},"
			 "{\"SequenceNumber\":\"2\",\"ShardId\":\"s-1\"},{\"SequenceNumber\":\"3\",\"ShardId\":\"s-0\"}]}";
	assert_int_equal(sink_kinesis_parse_response(ok, strlen(ok), idx, 3, res, &nf, err, sizeof err), 0);
	assert_int_equal(nf, 0);
	assert_int_equal(res[4], SINK_OK);
	assert_int_equal(res[1], SINK_OK);
	assert_int_equal(res[2], SINK_OK);
	assert_int_equal(res[0], 9); /* not part of the call: untouched */
	assert_int_equal(res[3], 9);

	const char *part = "{\"FailedRecordCount\":2,\"Records\":["
			   "{\"ErrorCode\":\"ProvisionedThroughputExceededException\",\"ErrorMessage\":\"Rate exceeded\"},"
			   "{\"SequenceNumber\":\"2\",\"ShardId\":\"s-1\"},"
			   "{\"ErrorCode\":\"InternalFailure\",\"ErrorMessage\":\"oops\"}]}";
	assert_int_equal(sink_kinesis_parse_response(part, strlen(part), idx, 3, res, &nf, err, sizeof err), 0);
	assert_int_equal(nf, 2);
	assert_int_equal(res[4], SINK_RETRY);
	assert_int_equal(res[1], SINK_OK);
	assert_int_equal(res[2], SINK_RETRY);
	assert_non_null(strstr(err, "ProvisionedThroughputExceededException"));
	assert_non_null(strstr(err, "2 of 3"));
}

static void test_parse_response_bad(void **state)
{
	(void)state;
	size_t idx[] = { 0, 1 };
	sink_status res[2] = { 9, 9 };
	size_t nf;
	char err[256];
	const char *bad[] = {
		"not json",
		"{\"FailedRecordCount\":0}",
		"{\"Records\":[{\"SequenceNumber\":\"1\"}]}",                              /* 1 result for 2 */
		"{\"Records\":[{\"SequenceNumber\":\"1\"},{\"ShardId\":\"x\"}]}",          /* neither */
		"{\"Records\":[{\"SequenceNumber\":\"1\"},{\"ErrorCode\":5}]}",            /* bad type */
		"{\"Records\":[{\"SequenceNumber\":\"1\"},\"x\"]}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(sink_kinesis_parse_response(bad[i], strlen(bad[i]), idx, 2, res, &nf, err, sizeof err),
				 TG_EPARSE);
		assert_int_equal(res[0], 9); /* a bad answer settles nothing */
		assert_int_equal(res[1], 9);
	}
}

static void test_classify(void **state)
{
	(void)state;
	char type[64];
	const char *v = "{\"__type\":\"ValidationException\",\"message\":\"1 validation error\"}";
	assert_int_equal(sink_kinesis_classify(400, v, strlen(v), type, sizeof type), KINESIS_CALL_RECORD);
	assert_string_equal(type, "ValidationException");
	const char *ia = "{\"__type\":\"com.amazonaws.kinesis.v20131202#InvalidArgumentException\"}";
	assert_int_equal(sink_kinesis_classify(400, ia, strlen(ia), type, sizeof type), KINESIS_CALL_RECORD);
	assert_string_equal(type, "InvalidArgumentException");
	const char *nf = "{\"__type\":\"ResourceNotFoundException\",\"message\":\"Stream x not found\"}";
	assert_int_equal(sink_kinesis_classify(400, nf, strlen(nf), type, sizeof type), KINESIS_CALL_RETRY);
	assert_string_equal(type, "ResourceNotFoundException");
	const char *th = "{\"__type\":\"ThrottlingException\"}";
	assert_int_equal(sink_kinesis_classify(400, th, strlen(th), type, sizeof type), KINESIS_CALL_RETRY);
	const char *sig = "{\"__type\":\"InvalidSignatureException\"}";
	assert_int_equal(sink_kinesis_classify(403, sig, strlen(sig), type, sizeof type), KINESIS_CALL_RETRY);
	/* A validation type on a 5xx is still the server's problem. */
	assert_int_equal(sink_kinesis_classify(500, v, strlen(v), type, sizeof type), KINESIS_CALL_RETRY);
	assert_int_equal(sink_kinesis_classify(502, "<html>", 6, type, sizeof type), KINESIS_CALL_RETRY);
	assert_string_equal(type, "");
	assert_int_equal(sink_kinesis_classify(400, NULL, 0, type, sizeof type), KINESIS_CALL_RETRY);
}

/* ---- send() without a peer ------------------------------------------------------------ */

static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	close(fd); /* nothing listens there now: connect is refused at once */
	return ntohs(a.sin_port);
}

static void test_send_unreachable(void **state)
{
	(void)state;
	char endpoint[64], err[512];
	snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", closed_port());
	kinesis_opts o = { .stream = "s", .region = "us-east-1", .endpoint = endpoint,
			   .access_key_id = "AK", .secret_access_key = "SK", .session_token = "",
			   .timeout_ms = 2000, .max_records = 500, .max_bytes = 4 << 20 };
	sink_env env = { .gateway_id = "gw" };
	sink_limits lim = { 0 };
	sink *s = sink_kinesis_ops.open(&o, &env, &lim, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(lim.max_records, 500);
	assert_int_equal(lim.max_bytes, 4 << 20);
	assert_int_equal(lim.max_age_ms, 0);

	sink_record recs[2] = { rec(1, "dev-1", "{}", 2), rec(2, "", "{}", 2) };
	sink_status res[2] = { 9, 9 };
	/* Only a sendable record: the whole call fails and says so. */
	assert_int_equal(sink_kinesis_ops.send(s, recs, 1, res, 0, err, sizeof err), TG_ERETRY);
	assert_int_equal(res[0], SINK_RETRY);
	assert_non_null(strstr(err, "127.0.0.1"));
	/* With a poison record beside it the poison is still settled: returns 0. */
	assert_int_equal(sink_kinesis_ops.send(s, recs, 2, res, 0, err, sizeof err), 0);
	assert_int_equal(res[0], SINK_RETRY);
	assert_int_equal(res[1], SINK_POISON);
	sink_kinesis_ops.close(s);
	sink_kinesis_ops.close(NULL);

	/* Missing stream and missing credentials are refused at open. */
	o.stream = "";
	assert_null(sink_kinesis_ops.open(&o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "stream"));
	o.stream = "bad name";
	assert_null(sink_kinesis_ops.open(&o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "bad name"));
	o.stream = "s";
	o.access_key_id = "AK";
	o.secret_access_key = "";
	assert_null(sink_kinesis_ops.open(&o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "secret_access_key"));
}

static void test_registry(void **state)
{
	(void)state;
	assert_ptr_equal(sink_ops_find("kinesis"), &sink_kinesis_ops);
	assert_null(sink_ops_find("nope"));
	assert_null(sink_ops_find(NULL));
	int seen = 0;
	for (const sink_ops *const *p = sink_ops_all(); *p; p++) {
		seen += *p == &sink_kinesis_ops;
		assert_non_null((*p)->conf.options);
		assert_non_null((*p)->open);
		assert_non_null((*p)->send);
	}
	assert_int_equal(seen, 1);
	/* config_load()'s list is the same types, in the same order. */
	const config_sink_type *const *types = sink_types_all();
	const sink_ops *const *all = sink_ops_all();
	size_t i = 0;
	for (; all[i]; i++)
		assert_ptr_equal(types[i], &all[i]->conf);
	assert_null(types[i]);
	/* The option table is well formed: the required stream, secrets flagged. */
	int req = 0, secret = 0;
	for (const config_option *op = sink_kinesis_ops.conf.options; op->name; op++) {
		req += (op->flags & CFG_REQUIRED) != 0;
		secret += (op->flags & CFG_SECRET) != 0;
		assert_true(op->offset < sizeof(kinesis_opts));
	}
	assert_int_equal(req, 1);
	assert_int_equal(secret, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_digests),
		cmocka_unit_test(test_uri_and_json_encoding),
		cmocka_unit_test(test_creds_resolution),
		cmocka_unit_test(test_check_record),
		cmocka_unit_test(test_build_body),
		cmocka_unit_test(test_parse_response_ok_and_partial),
		cmocka_unit_test(test_parse_response_bad),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_send_unreachable),
		cmocka_unit_test(test_registry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
