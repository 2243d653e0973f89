/*
 * s3.c — the storage tier: gzip NDJSON objects written with S3 PutObject, signed by
 * libcurl's SigV4, in the same Hive layout as the local lake.
 *
 * Batching by size and age is the forwarder's job (sink_limits: max_bytes = flush_bytes,
 * max_age_ms = flush_age); send() turns whatever batch it gets into one object per
 * (table, UTC hour) group and uploads the groups one after the other. A group's records
 * share its fate: all SINK_OK once the PUT is answered 2xx, SINK_POISON when S3 refuses
 * the object itself (or its key is over 1024 bytes before we even try), SINK_RETRY
 * otherwise. Every PUT carries Content-MD5 (S3 verifies the body) and
 * x-amz-content-sha256 (signed by libcurl). The object is a .json.gz file, so it is sent
 * as Content-Type application/gzip without Content-Encoding: readers get the gzip bytes
 * as stored. On the first failure that looks like an outage the remaining groups are not
 * tried in this call.
 */
#include "sinks/s3.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "sinks/probe.h"

#define S3_MAX_RESPONSE (64u * 1024)

typedef struct s3_sink {
	const s3_opts *opts;
	char *gateway_id;
	aws_http *http;
	tg_buf body, key, url;
	size_t *group_of, *idx, *start; /* scratch, cap entries each */
	size_t cap;
} s3_sink;

static const config_option s3_options[] = {
	{ .name = "bucket", .type = CFG_STRING, .offset = offsetof(s3_opts, bucket),
	  .flags = CFG_REQUIRED, .help = "Bucket name." },
	{ .name = "prefix", .type = CFG_STRING, .def = "", .offset = offsetof(s3_opts, prefix),
	  .help = "Key prefix before TABLE/year=YYYY/...; empty for none." },
	{ .name = "region", .type = CFG_STRING, .def = "us-east-1", .offset = offsetof(s3_opts, region),
	  .help = "AWS region; also the SigV4 signing scope." },
	{ .name = "endpoint", .type = CFG_STRING, .def = "", .offset = offsetof(s3_opts, endpoint),
	  .help = "Base URL, e.g. http://127.0.0.1:4568 for s3rver or MinIO; empty: https://s3.REGION.amazonaws.com." },
	{ .name = "path_style", .type = CFG_BOOL, .def = "false", .offset = offsetof(s3_opts, path_style),
	  .help = "Address the bucket in the path (MinIO, s3rver) instead of the host name." },
	{ .name = "access_key_id", .type = CFG_STRING, .def = "",
	  .offset = offsetof(s3_opts, access_key_id), .flags = CFG_SECRET,
	  .help = "Access key id; empty: AWS_ACCESS_KEY_ID (with AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) from the environment." },
	{ .name = "secret_access_key", .type = CFG_STRING, .def = "",
	  .offset = offsetof(s3_opts, secret_access_key), .flags = CFG_SECRET,
	  .help = "Secret access key; required when access_key_id is set." },
	{ .name = "session_token", .type = CFG_STRING, .def = "",
	  .offset = offsetof(s3_opts, session_token), .flags = CFG_SECRET,
	  .help = "Session token for temporary credentials given in this file (never mixed with the environment's)." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "60s", .min = 100, .max = 3600000,
	  .offset = offsetof(s3_opts, timeout_ms), .help = "Timeout of one PutObject, connect included." },
	{ .name = "flush_bytes", .type = CFG_SIZE, .def = "8M", .min = 1024, .max = 256LL * 1024 * 1024,
	  .offset = offsetof(s3_opts, flush_bytes),
	  .help = "Upload once this many record bytes are pending (before compression)." },
	{ .name = "flush_age", .type = CFG_DURATION, .def = "60s", .min = 0, .max = 86400000,
	  .offset = offsetof(s3_opts, flush_age_ms),
	  .help = "Upload once the oldest pending record is this old." },
	{ .name = "max_records", .type = CFG_INT, .def = "100000", .min = 1, .max = 10000000,
	  .offset = offsetof(s3_opts, max_records), .help = "Records per upload batch." },
	{ .name = "gzip_level", .type = CFG_INT, .def = "6", .min = 1, .max = 9,
	  .offset = offsetof(s3_opts, gzip_level), .help = "gzip (zlib) compression level, 1 fastest to 9 smallest." },
	{ .name = NULL },
};

/* ---- pure parts ------------------------------------------------------------------------ */

int sink_s3_object_key(tg_buf *b, const char *prefix, const char *table, int64_t created_ms,
		       const char *gateway_id, int64_t first_id, int64_t last_id)
{
	/* Floor division so times before 1970 still land in the right hour. */
	int64_t secs = created_ms / 1000 - (created_ms % 1000 < 0);
	time_t t = (time_t)secs;
	struct tm tm;
	size_t plen = prefix ? strlen(prefix) : 0;

	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof tm);
	while (plen && prefix[0] == '/')
		prefix++, plen--;
	while (plen && prefix[plen - 1] == '/')
		plen--;
	if (plen && (tg_buf_put(b, prefix, plen) || tg_buf_puts(b, "/")))
		return TG_ENOMEM;
	return tg_buf_printf(b, "%s/year=%04d/month=%02d/day=%02d/hour=%02d/%s-%lld-%lld.json.gz",
			      table, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			      gateway_id, (long long)first_id, (long long)last_id);
}

int sink_s3_object_url(tg_buf *b, const char *endpoint, const char *bucket, int path_style,
		       const char *key)
{
	size_t n = strlen(endpoint);
	while (n && endpoint[n - 1] == '/')
		n--;
	if (path_style) {
		if (tg_buf_put(b, endpoint, n) || tg_buf_puts(b, "/") || aws_uri_path_encode(b, bucket))
			return TG_ENOMEM;
	} else {
		const char *host = strstr(endpoint, "://");
		if (!host || (size_t)(host - endpoint) + 3 >= n)
			return TG_EINVAL;
		host += 3;
		if (tg_buf_put(b, endpoint, (size_t)(host - endpoint)) || tg_buf_puts(b, bucket) ||
		    tg_buf_puts(b, ".") || tg_buf_put(b, host, n - (size_t)(host - endpoint)))
			return TG_ENOMEM;
	}
	if (tg_buf_puts(b, "/") || aws_uri_path_encode(b, key))
		return TG_ENOMEM;
	return 0;
}

static int64_t hour_of(int64_t ms)
{
	return ms / 3600000 - (ms % 3600000 < 0);
}

size_t sink_s3_group(const sink_record *recs, size_t n, size_t *group_of, size_t *first_of)
{
	size_t ngroups = 0;
	/* Batches hold few groups (tables x hours), so a scan over the groups is cheap; the
	 * previous record's group is tried first because neighbours usually share one. */
	for (size_t i = 0; i < n; i++) {
		int64_t h = hour_of(recs[i].created_ms);
		size_t g = SIZE_MAX;
		if (i && hour_of(recs[i - 1].created_ms) == h && !strcmp(recs[i - 1].table, recs[i].table))
			g = group_of[i - 1];
		for (size_t j = ngroups; g == SIZE_MAX && j-- > 0;) {
			const sink_record *f = &recs[first_of[j]];
			if (hour_of(f->created_ms) == h && !strcmp(f->table, recs[i].table))
				g = j;
		}
		if (g == SIZE_MAX) {
			g = ngroups++;
			first_of[g] = i;
		}
		group_of[i] = g;
	}
	return ngroups;
}

int sink_s3_gzip_ndjson(tg_buf *out, const sink_record *recs, const size_t *idx, size_t m,
			int level)
{
	z_stream z;
	int rc = TG_ENOMEM;

	memset(&z, 0, sizeof z);
	if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return TG_ENOMEM;
	for (size_t i = 0; i <= m; i++) {
		/* Two pieces per record (data, "\n"); the final pass (i == m) finishes the stream. */
		for (int part = 0; part < (i < m ? 2 : 1); part++) {
			int flush = i < m ? Z_NO_FLUSH : Z_FINISH;
			if (i < m) {
				z.next_in = part ? (Bytef *)"\n" : (Bytef *)recs[idx[i]].data;
				z.avail_in = part ? 1 : (uInt)recs[idx[i]].len;
			}
			int zr;
			do {
				if (tg_buf_reserve(out, 64 * 1024))
					goto out;
				z.next_out = (Bytef *)out->p + out->len;
				z.avail_out = (uInt)(out->cap - out->len - 1);
				size_t before = z.avail_out;
				zr = deflate(&z, flush);
				out->len += before - z.avail_out;
				if (zr == Z_STREAM_ERROR) {
					rc = TG_EINVAL;
					goto out;
				}
			} while (flush == Z_FINISH ? zr != Z_STREAM_END : z.avail_in > 0 || z.avail_out == 0);
		}
	}
	out->p[out->len] = '\0';
	rc = 0;
out:
	deflateEnd(&z);
	return rc;
}

static void xml_code(const char *body, size_t len, char *code, size_t codelen)
{
	const char *b = NULL, *e = NULL;
	code[0] = '\0';
	if (body && len) {
		/* The body is NUL-terminated by aws_http; look for the first <Code>…</Code>. */
		b = strstr(body, "<Code>");
		e = b ? strstr(b, "</Code>") : NULL;
	}
	if (b && e) {
		b += 6;
		snprintf(code, codelen, "%.*s", (int)(e - b), b);
	}
}

sink_status sink_s3_classify(long status, const char *body, size_t len, char *code, size_t codelen)
{
	/* 400-class codes that are about time, credentials, the endpoint or the transfer,
	 * never about the object: retrying (after the operator fixes things) can succeed. */
	static const char *const transient[] = {
		"RequestTimeout", "IncompleteBody", "BadDigest", "ExpiredToken", "InvalidToken",
		"TokenRefreshRequired", "AuthorizationHeaderMalformed", "RequestTimeTooSkewed",
		"SlowDown", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
		"NoSuchBucket", "PermanentRedirect", "TemporaryRedirect", "OperationAborted",
		"ServiceUnavailable", "InternalError", "XAmzContentSHA256Mismatch",
		"InvalidSignature", "MissingSecurityHeader", NULL,
	};
	xml_code(body, len, code, codelen);
	if (status >= 200 && status < 300)
		return SINK_OK;
	if (status < 400 || status >= 500 || status == 403 || status == 404 || status == 408 ||
	    status == 429)
		return SINK_RETRY;
	for (size_t i = 0; transient[i]; i++)
		if (!strcmp(code, transient[i]))
			return SINK_RETRY;
	return SINK_POISON;
}

/* ---- the sink ------------------------------------------------------------------------- */

static void s3_options_free(void *opts)
{
	config_table_free(s3_options, opts);
}

static void s3_close(sink *s)
{
	s3_sink *k = (s3_sink *)s;
	if (!k)
		return;
	aws_http_free(k->http);
	free(k->gateway_id);
	tg_buf_free(&k->body);
	tg_buf_free(&k->key);
	tg_buf_free(&k->url);
	free(k->group_of);
	free(k->idx);
	free(k->start);
	free(k);
}

static int s3_check(const void *opts_, const char **key, char *err, size_t errlen)
{
	const s3_opts *o = opts_;
	*key = "bucket";
	if (!o->bucket || !*o->bucket)
		return tg_seterr(err, errlen, TG_EINVAL, "s3: bucket is required");
	*key = NULL;
	int rc = aws_endpoint_check(o->endpoint, key, err, errlen);
	if (rc)
		return rc;
	/* the endpoint/bucket combination forms URLs (checked once rather than on every upload) */
	tg_buf url = {0}, probe = {0};
	const char *region = o->region && *o->region ? o->region : "us-east-1";
	if (o->endpoint && *o->endpoint ? tg_buf_puts(&url, o->endpoint)
					: tg_buf_printf(&url, "https://s3.%s.amazonaws.com", region))
		rc = tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	else if ((rc = sink_s3_object_url(&probe, url.p, o->bucket, o->path_style, "k"))) {
		char red[512];
		config_redact_url(url.p, red, sizeof red);
		*key = o->endpoint && *o->endpoint ? "endpoint" : "bucket";
		tg_seterr(err, errlen, rc, "s3: cannot form a URL from endpoint %s and bucket %s", red, o->bucket);
	}
	tg_buf_free(&url);
	tg_buf_free(&probe);
	return rc ? rc : aws_creds_check(o->access_key_id, o->secret_access_key, o->session_token, key, err, errlen);
}

static sink *s3_open(const void *opts_, const sink_env *env, sink_limits *limits, char *err,
		     size_t errlen)
{
	const s3_opts *o = opts_;
	s3_sink *k = calloc(1, sizeof *k);
	aws_creds creds = { 0 };
	const char *region = o->region && *o->region ? o->region : "us-east-1";

	if (!k) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	k->opts = o;
	const char *bad_key;
	if (s3_check(o, &bad_key, err, errlen))
		goto fail;
	k->gateway_id = strdup(env && env->gateway_id && *env->gateway_id ? env->gateway_id : "tidegate");
	if (!k->gateway_id) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	if (o->endpoint && *o->endpoint) {
		if (tg_buf_puts(&k->url, o->endpoint))
			goto oom;
	} else if (tg_buf_printf(&k->url, "https://s3.%s.amazonaws.com", region)) {
		goto oom;
	}
	if (aws_creds_resolve(&creds, o->access_key_id, o->secret_access_key, o->session_token, NULL,
			      err, errlen))
		goto fail;
	k->http = aws_http_new("s3", region, &creds, o->timeout_ms > 0 ? o->timeout_ms : 60000,
			       S3_MAX_RESPONSE, err, errlen);
	if (!k->http)
		goto fail;
	aws_http_set_abandon(k->http, env ? env->abandon : NULL);
	limits->max_records = o->max_records > 0 ? (size_t)o->max_records : 100000;
	limits->max_bytes = o->flush_bytes > 0 ? (size_t)o->flush_bytes : 8u * 1024 * 1024;
	limits->max_age_ms = o->flush_age_ms >= 0 ? o->flush_age_ms : 60000;
	aws_creds_free(&creds);
	return (sink *)k;
oom:
	tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
fail:
	aws_creds_free(&creds);
	s3_close((sink *)k);
	return NULL;
}

/* Upload one group (recs[idx[0..m-1]]); returns its status, reason in err. */
static sink_status put_group(s3_sink *k, const sink_record *recs, const size_t *idx, size_t m,
			     char *err, size_t errlen)
{
	const s3_opts *o = k->opts;
	int64_t lo = recs[idx[0]].id, hi = lo;
	char md5[25], md5_hdr[64], code[64];
	aws_response resp;

	for (size_t i = 1; i < m; i++) {
		lo = recs[idx[i]].id < lo ? recs[idx[i]].id : lo;
		hi = recs[idx[i]].id > hi ? recs[idx[i]].id : hi;
	}
	tg_buf_reset(&k->key);
	if (sink_s3_object_key(&k->key, o->prefix, recs[idx[0]].table, recs[idx[0]].created_ms,
			       k->gateway_id, lo, hi)) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return SINK_RETRY;
	}
	if (k->key.len > S3_MAX_KEY) {
		tg_seterr(err, errlen, TG_EPERM, "object key of %zu bytes is over the %d byte limit: %.80s…",
			  k->key.len, S3_MAX_KEY, k->key.p);
		return SINK_POISON;
	}
	tg_buf url = { 0 };
	sink_status st = SINK_RETRY;
	tg_buf_shrink(&k->body, TG_BUF_KEEP_BYTES); /* the last object was small: a backlog is over */
	tg_buf_reset(&k->body);
	if (sink_s3_object_url(&url, k->url.p, o->bucket, o->path_style, k->key.p) ||
	    sink_s3_gzip_ndjson(&k->body, recs, idx, m, (int)(o->gzip_level ? o->gzip_level : 6))) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto out;
	}
	aws_md5_b64(k->body.p, k->body.len, md5);
	snprintf(md5_hdr, sizeof md5_hdr, "Content-MD5: %s", md5);
	const char *headers[] = { "Content-Type: application/gzip", md5_hdr, NULL };
	if (aws_http_send(k->http, "PUT", url.p, headers, k->body.p, k->body.len, &resp, err, errlen))
		goto out;
	st = sink_s3_classify(resp.status, resp.body, resp.len, code, sizeof code);
	if (st != SINK_OK)
		tg_seterr(err, errlen, st == SINK_POISON ? TG_EPERM : TG_ERETRY,
			  "PUT s3://%s/%s: HTTP %ld %s", o->bucket, k->key.p, resp.status, code);
out:
	tg_buf_free(&url);
	return st;
}

static int s3_send(sink *s, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms,
		   char *err, size_t errlen)
{
	s3_sink *k = (s3_sink *)s;
	size_t ngroups, settled = 0, failed = 0;
	char gerr[512];

	if (err && errlen)
		err[0] = '\0';
	if (n + 1 > k->cap) {
		size_t cap = n + 1;
		size_t *a = realloc(k->group_of, cap * sizeof *a);
		if (a)
			k->group_of = a;
		size_t *b = a ? realloc(k->idx, cap * sizeof *b) : NULL;
		if (b)
			k->idx = b;
		size_t *c = b ? realloc(k->start, cap * sizeof *c) : NULL;
		if (c)
			k->start = c;
		if (!a || !b || !c)
			return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		k->cap = cap;
	}
	for (size_t i = 0; i < n; i++)
		results[i] = SINK_RETRY;
	/* start[] first holds each group's first record (sink_s3_group), then is reused
	 * for a counting sort: idx[start[g] .. start[g+1]) lists group g in batch order. */
	ngroups = sink_s3_group(recs, n, k->group_of, k->start);
	memset(k->start, 0, (ngroups + 1) * sizeof *k->start);
	for (size_t i = 0; i < n; i++)
		k->start[k->group_of[i] + 1]++;
	for (size_t g = 0; g < ngroups; g++)
		k->start[g + 1] += k->start[g];
	for (size_t i = 0; i < n; i++)
		k->idx[k->start[k->group_of[i]]++] = i;
	for (size_t g = ngroups; g > 0; g--) /* undo the advance: start[g] = begin of g */
		k->start[g] = k->start[g - 1];
	k->start[0] = 0;
	for (size_t g = 0; g < ngroups; g++) {
		const size_t *idx = k->idx + k->start[g];
		size_t m = k->start[g + 1] - k->start[g];
		gerr[0] = '\0';
		sink_status st = put_group(k, recs, idx, m, gerr, sizeof gerr);
		if (gerr[0])
			tg_seterr(err, errlen, st == SINK_POISON ? TG_EPERM : TG_ERETRY, "%s", gerr);
		if (st == SINK_RETRY) {
			failed++;
			break; /* most likely an outage or a configuration problem: stop here */
		}
		for (size_t i = 0; i < m; i++)
			results[idx[i]] = st;
		settled += m;
	}
	if (failed && !settled)
		return TG_ERETRY;
	return 0;
}

/* sink_ops.probe: the endpoint's host and port accept a connection (probe.h) */
static int s3_probe(sink *s, int timeout_ms) { return sink_probe_url(((s3_sink *)s)->url.p, timeout_ms); }

const sink_ops sink_s3_ops = {
	.conf = {.type = "s3", .options = s3_options, .options_size = sizeof(s3_opts), .options_free = s3_options_free},
	.check = s3_check,
	.open = s3_open,
	.send = s3_send,
	.close = s3_close,
	.probe = s3_probe,
};
