/*
 * aws.c — credentials, encoders and the signing HTTP client shared by the Kinesis and S3
 * sinks. libcurl does the SigV4 work (CURLOPT_AWS_SIGV4); we only make sure it can sign
 * the payload: libcurl 7.88 hashes POSTFIELDS itself only for some requests, but always
 * honours an explicit x-amz-content-sha256 header, which S3 (and s3rver) require anyway,
 * so every request carries that header computed here with OpenSSL. Paths are
 * percent-encoded by us because libcurl signs the path exactly as given and the server
 * canonicalises the decoded key (an '=' in a Hive key must travel as %3D).
 *
 * A request hung on a connection that died with an outage is sent again on a new one, and a
 * stop past its drain budget abandons it (hedge.h).
 */
#include "sinks/aws.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "sinks/curl_dl.h"
#include "sinks/hedge.h"

/* ---- credentials ---------------------------------------------------------------------- */

static const char *nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

static const char *default_getenv(const char *name)
{
	return getenv(name);
}

int aws_creds_resolve(aws_creds *out, const char *cfg_key, const char *cfg_secret,
		      const char *cfg_token, aws_getenv_fn env, char *err, size_t errlen)
{
	const char *key, *secret, *token;
	int from_env = 0;

	memset(out, 0, sizeof *out);
	if (!env)
		env = default_getenv;
	if (nonempty(cfg_key)) {
		key = cfg_key;
		secret = nonempty(cfg_secret);
		token = nonempty(cfg_token);
		if (!secret)
			return tg_seterr(err, errlen, TG_EINVAL,
					 "access_key_id is set but secret_access_key is not");
	} else if (nonempty(cfg_secret)) {
		return tg_seterr(err, errlen, TG_EINVAL,
				 "secret_access_key is set but access_key_id is not");
	} else {
		key = nonempty(env("AWS_ACCESS_KEY_ID"));
		secret = nonempty(env("AWS_SECRET_ACCESS_KEY"));
		token = nonempty(env("AWS_SESSION_TOKEN"));
		from_env = 1;
		if (!key || !secret)
			return tg_seterr(err, errlen, TG_EINVAL,
					 "no AWS credentials: set access_key_id/secret_access_key or "
					 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
	}
	out->access_key_id = strdup(key);
	out->secret_access_key = strdup(secret);
	out->session_token = token ? strdup(token) : NULL;
	out->from_env = from_env;
	if (!out->access_key_id || !out->secret_access_key || (token && !out->session_token)) {
		aws_creds_free(out);
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	}
	/* libcurl takes "key:secret" as user:password; a ':' in the key would split wrongly. */
	if (strchr(out->access_key_id, ':')) {
		aws_creds_free(out);
		return tg_seterr(err, errlen, TG_EINVAL, "access key id must not contain ':'");
	}
	return 0;
}

int aws_creds_check(const char *cfg_key, const char *cfg_secret, const char *cfg_token, const char **key,
		    char *err, size_t errlen)
{
	aws_creds c;
	int rc = aws_creds_resolve(&c, cfg_key, cfg_secret, cfg_token, NULL, err, errlen);
	if (rc == 0)
		aws_creds_free(&c);
	else
		*key = nonempty(cfg_key) ? "access_key_id" : nonempty(cfg_secret) ? "secret_access_key" : NULL;
	return rc;
}

int aws_endpoint_check(const char *endpoint, const char **key, char *err, size_t errlen)
{
	if (!nonempty(endpoint) || !strncmp(endpoint, "http://", 7) || !strncmp(endpoint, "https://", 8))
		return 0;
	*key = "endpoint";
	char red[512];
	config_redact_url(endpoint, red, sizeof red);
	return tg_seterr(err, errlen, TG_EINVAL, "endpoint '%s' is not an http:// or https:// URL", red);
}

void aws_creds_free(aws_creds *c)
{
	if (!c)
		return;
	free(c->access_key_id);
	if (c->secret_access_key) {
		/* Best effort: do not leave the secret lying in freed heap memory. */
		volatile char *p = c->secret_access_key;
		while (*p)
			*p++ = 0;
	}
	free(c->secret_access_key);
	free(c->session_token);
	c->access_key_id = c->secret_access_key = c->session_token = NULL;
}

/* ---- encoders ------------------------------------------------------------------------- */

size_t aws_b64_len(size_t len)
{
	return (len + 2) / 3 * 4;
}

size_t aws_b64_encode(const void *data, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = data;
	size_t o = 0, i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static void digest(const EVP_MD *md, const void *data, size_t len, unsigned char *out)
{
	unsigned int n = 0;
	/* EVP_Digest only fails on allocation failure inside OpenSSL; a zeroed digest then
	 * makes the server refuse the request (retried), never a silent corruption. */
	if (!EVP_Digest(data, len, out, &n, md, NULL))
		memset(out, 0, (size_t)EVP_MD_get_size(md));
}

void aws_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char d[32];
	digest(EVP_sha256(), data, len, d);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
	out[64] = '\0';
}

void aws_md5_b64(const void *data, size_t len, char out[25])
{
	unsigned char d[16];
	digest(EVP_md5(), data, len, d);
	aws_b64_encode(d, sizeof d, out);
}

int aws_uri_path_encode(tg_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			   c == '-' || c == '_' || c == '.' || c == '~' || c == '/';
		char e[3] = { (char)c, 0, 0 };
		if (keep ? tg_buf_put(b, e, 1)
			 : (e[0] = '%', e[1] = hex[c >> 4], e[2] = hex[c & 15], tg_buf_put(b, e, 3)))
			return TG_ENOMEM;
	}
	return 0;
}

int aws_json_str(tg_buf *b, const char *s, size_t len)
{
	if (tg_buf_reserve(b, len + 2))
		return TG_ENOMEM;
	b->p[b->len++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int rc;
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			rc = tg_buf_put(b, e, 2);
		} else if (c < 0x20) {
			rc = tg_buf_printf(b, "\\u%04x", c);
		} else {
			rc = tg_buf_put(b, &s[i], 1);
		}
		if (rc)
			return TG_ENOMEM;
	}
	return tg_buf_put(b, "\"", 1);
}

/* ---- HTTP ----------------------------------------------------------------------------- */

struct aws_http {
	CURL *curl;
	aws_creds creds;
	char *userpwd;     /* "key:secret" for CURLOPT_USERPWD */
	char *sigv4;       /* "aws:amz:<region>:<service>" */
	char *token_hdr;   /* "x-amz-security-token: …" or NULL */
	tg_buf resp;
	size_t max_response;
	int truncated;
	char curl_err[CURL_ERROR_SIZE];
	sink_hedge hedge; /* hedge.h: a dead connection, a stop */
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	aws_http *h = ud;
	size_t n = size * nmemb;
	size_t room = h->resp.len < h->max_response ? h->max_response - h->resp.len : 0;
	size_t take = n < room ? n : room;
	if (take < n)
		h->truncated = 1;
	if (take && tg_buf_put(&h->resp, ptr, take))
		return 0; /* out of memory: abort the transfer */
	return n;
}

aws_http *aws_http_new(const char *service, const char *region, const aws_creds *creds,
		       int64_t timeout_ms, size_t max_response, char *err, size_t errlen)
{
	aws_http *h = calloc(1, sizeof *h);
	tg_buf b = { 0 };

	if (!h)
		goto oom;
	h->max_response = max_response;
	h->creds.access_key_id = strdup(creds->access_key_id);
	h->creds.secret_access_key = strdup(creds->secret_access_key);
	h->creds.session_token = creds->session_token ? strdup(creds->session_token) : NULL;
	if (!h->creds.access_key_id || !h->creds.secret_access_key ||
	    (creds->session_token && !h->creds.session_token))
		goto oom;
	if (tg_buf_printf(&b, "%s:%s", creds->access_key_id, creds->secret_access_key))
		goto oom;
	h->userpwd = b.p;
	b = (tg_buf){ 0 };
	if (tg_buf_printf(&b, "aws:amz:%s:%s", region, service))
		goto oom;
	h->sigv4 = b.p;
	b = (tg_buf){ 0 };
	if (creds->session_token) {
		if (tg_buf_printf(&b, "x-amz-security-token: %s", creds->session_token))
			goto oom;
		h->token_hdr = b.p;
		b = (tg_buf){ 0 };
	}
	if (curl_dl_load(err, errlen))
		goto fail;
	h->curl = curl_easy_init();
	if (!h->curl) {
		tg_seterr(err, errlen, TG_ENOMEM, "curl_easy_init failed");
		goto fail;
	}
	curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h->curl, CURLOPT_AWS_SIGV4, h->sigv4);
	curl_easy_setopt(h->curl, CURLOPT_USERPWD, h->userpwd);
	curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 10000 ? timeout_ms : 10000));
	curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->curl_err);
	curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	sink_hedge_attach(h->curl, &h->hedge);
	/* Never follow redirects: a 301/307 from S3 means a wrong region or endpoint and
	 * must surface as an error, and signed requests cannot be replayed elsewhere. */
	curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
	return h;
oom:
	tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
fail:
	tg_buf_free(&b);
	aws_http_free(h);
	return NULL;
}

void aws_http_set_abandon(aws_http *h, const _Atomic int *abandon)
{
	h->hedge.abandon = abandon;
}

void aws_http_free(aws_http *h)
{
	if (!h)
		return;
	if (h->curl)
		curl_easy_cleanup(h->curl);
	aws_creds_free(&h->creds);
	if (h->userpwd) {
		volatile char *p = h->userpwd;
		while (*p)
			*p++ = 0;
	}
	free(h->userpwd);
	free(h->sigv4);
	free(h->token_hdr);
	tg_buf_free(&h->resp);
	free(h);
}

int aws_http_send(aws_http *h, const char *method, const char *url, const char *const *headers,
		  const void *body, size_t len, aws_response *resp, char *err, size_t errlen)
{
	struct curl_slist *list = NULL, *tmp;
	char sha_hdr[64 + sizeof "x-amz-content-sha256: "];
	char sha[65];
	int rc = TG_ENOMEM;
	CURLcode cc;

	memset(resp, 0, sizeof *resp);
	aws_sha256_hex(body ? body : "", len, sha);
	snprintf(sha_hdr, sizeof sha_hdr, "x-amz-content-sha256: %s", sha);
	if (!(tmp = curl_slist_append(list, sha_hdr)))
		goto out;
	list = tmp;
	/* Large bodies would otherwise wait for "100 Continue", which costs a round trip. */
	if (!(tmp = curl_slist_append(list, "Expect:")))
		goto out;
	list = tmp;
	if (h->token_hdr) {
		if (!(tmp = curl_slist_append(list, h->token_hdr)))
			goto out;
		list = tmp;
	}
	for (size_t i = 0; headers && headers[i]; i++) {
		if (!(tmp = curl_slist_append(list, headers[i])))
			goto out;
		list = tmp;
	}
	curl_easy_setopt(h->curl, CURLOPT_URL, url);
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
	curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);

	sink_hedge_begin(&h->hedge, url);
	for (;;) {
		tg_buf_reset(&h->resp);
		if (tg_buf_reserve(&h->resp, 0)) {
			cc = CURLE_OUT_OF_MEMORY; /* reported below, once the handle lets go of list */
			break;
		}
		h->truncated = 0;
		h->curl_err[0] = '\0';
		sink_hedge_attempt(&h->hedge);
		cc = curl_easy_perform(h->curl);
		if (!sink_hedge_again(&h->hedge, cc, method))
			break;
	}
	sink_hedge_end(&h->hedge, cc == CURLE_OK);
	/* The handle keeps pointers to list and body; clear them before they go away. */
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, NULL);
	if (cc != CURLE_OK) {
		rc = tg_seterr(err, errlen, TG_ENET, "%s %s: %s", method, url,
			       sink_hedge_why(&h->hedge, cc, h->curl_err[0] ? h->curl_err : curl_easy_strerror(cc)));
		goto out;
	}
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
	resp->body = h->resp.p;
	resp->len = h->resp.len;
	resp->truncated = h->truncated;
	rc = 0;
out:
	if (rc == TG_ENOMEM)
		tg_seterr(err, errlen, rc, "out of memory");
	curl_slist_free_all(list);
	return rc;
}
