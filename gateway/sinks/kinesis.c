/*
 * kinesis.c — the stream tier: Kinesis Data Streams PutRecords over HTTP(S), JSON 1.1,
 * signed by libcurl's SigV4.
 *
 * send() may be handed any batch; it first screens out records Kinesis would refuse
 * whatever happens (SINK_POISON, see sink_kinesis_check_record), then packs the rest into
 * calls of at most 500 records and 5 MiB and sends them in order on one keep-alive
 * connection. A 200 answer is read record by record, so a partial failure
 * (FailedRecordCount > 0) retries only the failed records. A whole-call failure is
 * classified: request validation errors (which some record must have caused, as the
 * envelope is ours) are narrowed down by splitting the call in halves until the bad
 * record stands alone and can be dead-lettered; everything else — network, 5xx,
 * throttling, and also a missing stream or refused credentials, which are configuration
 * problems the operator can fix without losing data — leaves the records SINK_RETRY and
 * stops the batch. send() returns TG_ERETRY only when nothing at all was settled, so the
 * forwarder can treat it as an uplink failure and back off.
 */
#include "sinks/kinesis.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "sinks/probe.h"

#define KINESIS_MAX_RESPONSE (1024u * 1024)

typedef struct kinesis_sink {
	const kinesis_opts *opts;
	aws_http *http;
	char *url;
	tg_buf body;
	size_t *idx;     /* scratch: indices of the records in the current call */
	size_t idx_cap;
	size_t max_records;
} kinesis_sink;

static const config_option kinesis_options[] = {
	{ .name = "stream", .type = CFG_STRING, .offset = offsetof(kinesis_opts, stream),
	  .flags = CFG_REQUIRED, .help = "Kinesis data stream name ([a-zA-Z0-9_.-], 1-128 characters)." },
	{ .name = "region", .type = CFG_STRING, .def = "us-east-1",
	  .offset = offsetof(kinesis_opts, region), .help = "AWS region; also the SigV4 signing scope." },
	{ .name = "endpoint", .type = CFG_STRING, .def = "",
	  .offset = offsetof(kinesis_opts, endpoint),
	  .help = "Base URL, e.g. http://127.0.0.1:4567 for kinesalite; empty: https://kinesis.REGION.amazonaws.com." },
	{ .name = "access_key_id", .type = CFG_STRING, .def = "",
	  .offset = offsetof(kinesis_opts, access_key_id), .flags = CFG_SECRET,
	  .help = "Access key id; empty: AWS_ACCESS_KEY_ID (with AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) from the environment." },
	{ .name = "secret_access_key", .type = CFG_STRING, .def = "",
	  .offset = offsetof(kinesis_opts, secret_access_key), .flags = CFG_SECRET,
	  .help = "Secret access key; required when access_key_id is set." },
	{ .name = "session_token", .type = CFG_STRING, .def = "",
	  .offset = offsetof(kinesis_opts, session_token), .flags = CFG_SECRET,
	  .help = "Session token for temporary credentials given in this file (never mixed with the environment's)." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "30s", .min = 100, .max = 600000,
	  .offset = offsetof(kinesis_opts, timeout_ms), .help = "Timeout of one PutRecords call, connect included." },
	{ .name = "max_records", .type = CFG_INT, .def = "500", .min = 1, .max = KINESIS_MAX_RECORDS,
	  .offset = offsetof(kinesis_opts, max_records), .help = "Records per batch and per PutRecords call (Kinesis allows 500)." },
	{ .name = "max_bytes", .type = CFG_SIZE, .def = "4M", .min = 1024, .max = KINESIS_MAX_REQUEST,
	  .offset = offsetof(kinesis_opts, max_bytes),
	  .help = "Record bytes per batch (calls are split at the 5 MiB request limit anyway)." },
	{ .name = NULL },
};

/* ---- pure parts ------------------------------------------------------------------------ */

/* Kinesis counts a partition key's length in UTF-16 code units (a Java String), so a
 * character outside the BMP — a 4-byte UTF-8 sequence — counts twice. */
static size_t utf16_units(const char *s)
{
	size_t n = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		n += (c & 0xC0) != 0x80;
		n += c >= 0xF0;
	}
	return n;
}

/* Stream names: [a-zA-Z0-9_.-]{1,128}. Checked at open so that a ValidationException
 * can only be about a record, never about our envelope. */
static int stream_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 128)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == '.' || *s == '-'))
			return 0;
	return 1;
}

size_t sink_kinesis_record_cost(const sink_record *r)
{
	return r->len + 1 + (r->pkey ? strlen(r->pkey) : 0);
}

sink_status sink_kinesis_check_record(const sink_record *r, char *why, size_t whylen)
{
	if (!r->pkey || !*r->pkey) {
		tg_seterr(why, whylen, TG_EPERM, "record %lld: empty partition key", (long long)r->id);
		return SINK_POISON;
	}
	if (utf16_units(r->pkey) > KINESIS_MAX_PKEY_CHARS) {
		tg_seterr(why, whylen, TG_EPERM, "record %lld: partition key over %d characters",
			  (long long)r->id, KINESIS_MAX_PKEY_CHARS);
		return SINK_POISON;
	}
	if (sink_kinesis_record_cost(r) > KINESIS_MAX_RECORD) {
		tg_seterr(why, whylen, TG_EPERM, "record %lld: %zu bytes with key, over the 1 MiB limit",
			  (long long)r->id, sink_kinesis_record_cost(r));
		return SINK_POISON;
	}
	return SINK_OK;
}

/* base64 of data || "\n" appended to b. The bulk is a multiple of 3 bytes so its encoding
 * concatenates with the tail's. */
static int put_b64_line(tg_buf *b, const char *data, size_t len)
{
	size_t bulk = len - len % 3;
	unsigned char tail[3];
	size_t nt = len - bulk;

	if (tg_buf_reserve(b, aws_b64_len(len + 1)))
		return TG_ENOMEM;
	b->len += aws_b64_encode(data, bulk, b->p + b->len);
	memcpy(tail, data + bulk, nt);
	tail[nt++] = '\n';
	b->len += aws_b64_encode(tail, nt, b->p + b->len);
	return 0;
}

int sink_kinesis_build_body(tg_buf *b, const char *stream, const sink_record *recs,
			    const size_t *idx, size_t m)
{
	if (tg_buf_puts(b, "{\"StreamName\":") || aws_json_str(b, stream, strlen(stream)) ||
	    tg_buf_puts(b, ",\"Records\":["))
		return TG_ENOMEM;
	for (size_t i = 0; i < m; i++) {
		const sink_record *r = &recs[idx[i]];
		if (tg_buf_puts(b, i ? ",{\"Data\":\"" : "{\"Data\":\"") ||
		    put_b64_line(b, r->data, r->len) || tg_buf_puts(b, "\",\"PartitionKey\":") ||
		    aws_json_str(b, r->pkey, strlen(r->pkey)) || tg_buf_puts(b, "}"))
			return TG_ENOMEM;
	}
	return tg_buf_puts(b, "]}");
}

int sink_kinesis_parse_response(const char *body, size_t len, const size_t *idx, size_t m,
				sink_status *results, size_t *nfailed, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *recs = root ? json_object_get(root, "Records") : NULL;
	json_t *fc = root ? json_object_get(root, "FailedRecordCount") : NULL;
	size_t failed = 0;
	const char *first = NULL, *first_msg = NULL;
	int rc = TG_EPARSE;

	*nfailed = 0;
	if (!root) {
		tg_seterr(err, errlen, rc, "PutRecords answer is not JSON: %s", jerr.text);
		goto out;
	}
	if (!json_is_array(recs) || json_array_size(recs) != m) {
		tg_seterr(err, errlen, rc, "PutRecords answer has %zu results for %zu records",
			  json_is_array(recs) ? json_array_size(recs) : 0, m);
		goto out;
	}
	/* Validate everything before writing any result, so a bad answer changes nothing. */
	for (size_t i = 0; i < m; i++) {
		json_t *e = json_array_get(recs, i);
		json_t *code = json_object_get(e, "ErrorCode");
		if (!json_is_object(e) || (code && !json_is_null(code) && !json_is_string(code)) ||
		    ((!code || json_is_null(code)) && !json_is_string(json_object_get(e, "SequenceNumber")))) {
			tg_seterr(err, errlen, rc, "PutRecords result %zu is neither a success nor an error", i);
			goto out;
		}
	}
	for (size_t i = 0; i < m; i++) {
		json_t *e = json_array_get(recs, i);
		json_t *code = json_object_get(e, "ErrorCode");
		if (json_is_string(code)) {
			results[idx[i]] = SINK_RETRY;
			if (!failed++) {
				first = json_string_value(code);
				first_msg = json_string_value(json_object_get(e, "ErrorMessage"));
			}
		} else {
			results[idx[i]] = SINK_OK;
		}
	}
	if (json_is_integer(fc) && (size_t)json_integer_value(fc) != failed)
		LOG_WARN("kinesis", "msg=\"FailedRecordCount disagrees with the records' ErrorCodes\" "
			 "FailedRecordCount=%lld with_error_code=%zu", (long long)json_integer_value(fc), failed);
	if (failed)
		tg_seterr(err, errlen, TG_ERETRY, "%zu of %zu records failed, first: %s: %s", failed, m,
			  first, first_msg ? first_msg : "");
	*nfailed = failed;
	rc = 0;
out:
	json_decref(root);
	return rc;
}

kinesis_call_action sink_kinesis_classify(long status, const char *body, size_t len, char *type,
					  size_t typelen)
{
	json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
	const char *t = root ? json_string_value(json_object_get(root, "__type")) : NULL;
	kinesis_call_action act = KINESIS_CALL_RETRY;

	if (t && strchr(t, '#'))
		t = strchr(t, '#') + 1;
	if (type && typelen)
		snprintf(type, typelen, "%s", t ? t : "");
	/* Only a 400 that blames the request's content points at a record: the stream name,
	 * credentials, signature and throughput are not properties of a record. */
	if (status == 400 && t &&
	    (!strcmp(t, "ValidationException") || !strcmp(t, "InvalidArgumentException") ||
	     !strcmp(t, "SerializationException")))
		act = KINESIS_CALL_RECORD;
	json_decref(root);
	return act;
}

/* ---- the sink ------------------------------------------------------------------------- */

static void kinesis_options_free(void *opts)
{
	config_table_free(kinesis_options, opts);
}

static void kinesis_close(sink *s)
{
	kinesis_sink *k = (kinesis_sink *)s;
	if (!k)
		return;
	aws_http_free(k->http);
	free(k->url);
	tg_buf_free(&k->body);
	free(k->idx);
	free(k);
}

static int kinesis_check(const void *opts_, const char **key, char *err, size_t errlen)
{
	const kinesis_opts *o = opts_;
	*key = "stream";
	if (!o->stream || !*o->stream)
		return tg_seterr(err, errlen, TG_EINVAL, "kinesis: stream is required");
	if (!stream_name_ok(o->stream))
		return tg_seterr(err, errlen, TG_EINVAL,
				 "kinesis: stream name \"%s\" is not 1-128 characters of [a-zA-Z0-9_.-]", o->stream);
	*key = NULL;
	int rc = aws_endpoint_check(o->endpoint, key, err, errlen);
	return rc ? rc : aws_creds_check(o->access_key_id, o->secret_access_key, o->session_token, key, err, errlen);
}

static sink *kinesis_open(const void *opts_, const sink_env *env, sink_limits *limits, char *err,
			  size_t errlen)
{
	const kinesis_opts *o = opts_;
	kinesis_sink *k = calloc(1, sizeof *k);
	aws_creds creds = { 0 };
	tg_buf url = { 0 };
	const char *region = o->region && *o->region ? o->region : "us-east-1";

	if (!k) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	k->opts = o;
	const char *bad_key;
	if (kinesis_check(o, &bad_key, err, errlen))
		goto fail;
	if (aws_creds_resolve(&creds, o->access_key_id, o->secret_access_key, o->session_token, NULL,
			      err, errlen))
		goto fail;
	if (o->endpoint && *o->endpoint) {
		size_t n = strlen(o->endpoint);
		while (n && o->endpoint[n - 1] == '/')
			n--;
		if (tg_buf_put(&url, o->endpoint, n) || tg_buf_puts(&url, "/"))
			goto oom;
	} else if (tg_buf_printf(&url, "https://kinesis.%s.amazonaws.com/", region)) {
		goto oom;
	}
	k->url = url.p;
	url = (tg_buf){ 0 };
	k->http = aws_http_new("kinesis", region, &creds, o->timeout_ms > 0 ? o->timeout_ms : 30000,
			       KINESIS_MAX_RESPONSE, err, errlen);
	if (!k->http)
		goto fail;
	aws_http_set_abandon(k->http, env ? env->abandon : NULL);
	k->max_records = o->max_records > 0 && o->max_records <= KINESIS_MAX_RECORDS
				 ? (size_t)o->max_records
				 : KINESIS_MAX_RECORDS;
	limits->max_records = k->max_records;
	limits->max_bytes = o->max_bytes > 0 && o->max_bytes <= KINESIS_MAX_REQUEST ? (size_t)o->max_bytes
										     : 4u * 1024 * 1024;
	limits->max_age_ms = 0;
	aws_creds_free(&creds);
	return (sink *)k;
oom:
	tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
fail:
	aws_creds_free(&creds);
	tg_buf_free(&url);
	kinesis_close((sink *)k);
	return NULL;
}

/* Send recs[idx[0..m-1]] as one call and settle their results. Returns 0 when the call
 * was answered and read (results written), TG_ERETRY/TG_ENET when it failed as a whole
 * (results untouched: they stay SINK_RETRY). */
static int put_call(kinesis_sink *k, const sink_record *recs, const size_t *idx, size_t m,
		    sink_status *results, char *err, size_t errlen)
{
	static const char *const headers[] = {
		"Content-Type: application/x-amz-json-1.1",
		"X-Amz-Target: Kinesis_20131202.PutRecords",
		NULL,
	};
	aws_response resp;
	char type[96];
	size_t nfailed;
	int rc;

	tg_buf_shrink(&k->body, TG_BUF_KEEP_BYTES); /* the last body was small: a backlog is over */
	tg_buf_reset(&k->body);
	if (sink_kinesis_build_body(&k->body, k->opts->stream, recs, idx, m))
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	rc = aws_http_send(k->http, "POST", k->url, headers, k->body.p, k->body.len, &resp, err, errlen);
	if (rc)
		return rc;
	if (resp.status == 200) {
		if (resp.truncated)
			return tg_seterr(err, errlen, TG_ERETRY, "PutRecords answer over %u bytes",
					 KINESIS_MAX_RESPONSE);
		rc = sink_kinesis_parse_response(resp.body, resp.len, idx, m, results, &nfailed, err, errlen);
		return rc ? TG_ERETRY : 0;
	}
	if (sink_kinesis_classify(resp.status, resp.body, resp.len, type, sizeof type) ==
	    KINESIS_CALL_RECORD) {
		if (m == 1) {
			results[idx[0]] = SINK_POISON;
			tg_seterr(err, errlen, TG_EPERM, "record %lld refused: HTTP %ld %s: %.*s",
				  (long long)recs[idx[0]].id, resp.status, type,
				  (int)(resp.len < 300 ? resp.len : 300), resp.body);
			return 0;
		}
		/* Split to find the culprit; the halves are independent calls. */
		size_t h = m / 2;
		rc = put_call(k, recs, idx, h, results, err, errlen);
		if (rc)
			return rc;
		return put_call(k, recs, idx + h, m - h, results, err, errlen);
	}
	return tg_seterr(err, errlen, TG_ERETRY, "PutRecords to stream %s: HTTP %ld %s: %.*s",
			 k->opts->stream, resp.status, type[0] ? type : "",
			 (int)(resp.len < 300 ? resp.len : 300), resp.body ? resp.body : "");
}

static int kinesis_send(sink *s, const sink_record *recs, size_t n, sink_status *results,
			int64_t now_ms, char *err, size_t errlen)
{
	kinesis_sink *k = (kinesis_sink *)s;
	size_t settled = 0, i = 0;
	int rc = 0;
	char why[256];

	if (n > k->idx_cap) {
		size_t *p = realloc(k->idx, n * sizeof *p);
		if (!p)
			return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		k->idx = p;
		k->idx_cap = n;
	}
	if (err && errlen)
		err[0] = '\0';
	for (size_t j = 0; j < n; j++) {
		results[j] = SINK_RETRY;
		if (sink_kinesis_check_record(&recs[j], why, sizeof why) == SINK_POISON) {
			results[j] = SINK_POISON;
			settled++;
			tg_seterr(err, errlen, TG_EPERM, "%s", why);
		}
	}
	while (i < n && rc == 0) {
		size_t m = 0, bytes = 0;
		for (; i < n && m < k->max_records; i++) {
			if (results[i] == SINK_POISON)
				continue;
			size_t c = sink_kinesis_record_cost(&recs[i]);
			if (m && bytes + c > KINESIS_MAX_REQUEST)
				break;
			k->idx[m++] = i;
			bytes += c;
		}
		if (!m)
			break;
		char cerr[512] = "";
		rc = put_call(k, recs, k->idx, m, results, cerr, sizeof cerr);
		if (cerr[0])
			tg_seterr(err, errlen, rc ? rc : TG_ERETRY, "%s", cerr);
		if (rc == 0)
			for (size_t j = 0; j < m; j++)
				settled += results[k->idx[j]] != SINK_RETRY;
	}
	if (rc && !settled)
		return rc == TG_ENOMEM ? rc : TG_ERETRY;
	return 0;
}

/* sink_ops.probe: the endpoint's host and port accept a connection (probe.h) */
static int kinesis_probe(sink *s, int timeout_ms) { return sink_probe_url(((kinesis_sink *)s)->url, timeout_ms); }

const sink_ops sink_kinesis_ops = {
	.conf = {.type = "kinesis", .options = kinesis_options, .options_size = sizeof(kinesis_opts), .options_free = kinesis_options_free},
	.check = kinesis_check,
	.open = kinesis_open,
	.send = kinesis_send,
	.close = kinesis_close,
	.probe = kinesis_probe,
};
