/*
 * aws.h — what the Kinesis and S3 sinks share: credential resolution, one reusable
 * libcurl handle signing with CURLOPT_AWS_SIGV4, and the small encoders both need
 * (base64, hex SHA-256, base64 MD5, URI path encoding, JSON string escaping).
 *
 * The pure helpers (everything except aws_http_*) touch no network and no global state so
 * unit tests can pin them down. aws_http keeps one CURL easy handle per sink so keep-alive
 * connections survive between batches; it is not thread-safe — one sink, one thread (the
 * forwarder). aws_http_new loads libcurl on first use (sinks/curl_dl.h), which also runs
 * curl_global_init once.
 */
#ifndef TG_SINKS_AWS_H
#define TG_SINKS_AWS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* ---- credentials ---------------------------------------------------------------------- */

typedef struct aws_creds {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL when none */
	int from_env;        /* 1 when taken from AWS_* environment variables */
} aws_creds;

/* Environment lookup; NULL means getenv(). Tests pass their own. */
typedef const char *(*aws_getenv_fn)(const char *name);

/* Resolve credentials: config values win when access_key_id is set (then the secret is
 * required and the session token is taken from config only, never mixed with the
 * environment); otherwise AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
 * Empty strings count as unset. The cfg_* strings are borrowed; *out gets copies the
 * caller frees with aws_creds_free(). TG_EINVAL + message when nothing usable is found. */
int aws_creds_resolve(aws_creds *out, const char *cfg_key, const char *cfg_secret,
		      const char *cfg_token, aws_getenv_fn env, char *err, size_t errlen);
/* Check that creds resolve as aws_creds_resolve would (a sink's check op): 0, or < 0 with
 * err and *key = the option at fault (NULL: the environment). */
int aws_creds_check(const char *cfg_key, const char *cfg_secret, const char *cfg_token, const char **key,
		    char *err, size_t errlen);
/* An endpoint option: empty, or an http:// or https:// URL. */
int aws_endpoint_check(const char *endpoint, const char **key, char *err, size_t errlen);
void aws_creds_free(aws_creds *c); /* NULL-safe; frees the strings, not c */

/* ---- encoders (pure) ------------------------------------------------------------------ */

/* Standard base64 with padding of len bytes into out (needs aws_b64_len(len) + 1 bytes,
 * NUL-terminated). Returns the encoded length. */
size_t aws_b64_len(size_t len);
size_t aws_b64_encode(const void *data, size_t len, char *out);
/* Lower-case hex SHA-256 of data into out[65]. */
void aws_sha256_hex(const void *data, size_t len, char out[65]);
/* base64 of the MD5 of data into out[25] (the Content-MD5 header value). */
void aws_md5_b64(const void *data, size_t len, char out[25]);
/* Append s percent-encoded for a SigV4 canonical URI path: unreserved characters and '/'
 * stay, everything else becomes %XX (upper case). Returns 0 or TG_ENOMEM. */
int aws_uri_path_encode(tg_buf *b, const char *s);
/* Append s as a JSON string literal (with quotes). Returns 0 or TG_ENOMEM. */
int aws_json_str(tg_buf *b, const char *s, size_t len);



/* ---- HTTP ----------------------------------------------------------------------------- */

typedef struct aws_http aws_http;

typedef struct aws_response {
	long status;      /* HTTP status, 0 when no response arrived */
	const char *body; /* borrowed from the aws_http; valid until its next request */
	size_t len;
	int truncated;    /* body was longer than the cap and was cut */
} aws_response;

/* One signing client for service ("kinesis", "s3") in region. creds is copied.
 * timeout_ms bounds each whole request; max_response caps the kept body (the rest is
 * read and dropped so the connection stays usable). Caller owns the result. */
aws_http *aws_http_new(const char *service, const char *region, const aws_creds *creds,
		       int64_t timeout_ms, size_t max_response, char *err, size_t errlen);
void aws_http_free(aws_http *h); /* NULL-safe */
/* The forwarder's abandon flag (sink.h, sink_env): once set, the request under way fails
 * with "abandoned" at libcurl's next progress call. Borrowed; NULL: never. */
void aws_http_set_abandon(aws_http *h, const _Atomic int *abandon);

/* Send one signed request. headers is a NULL-terminated list of "Name: value" lines
 * (borrowed); the session token header is added here. x-amz-content-sha256 is always set
 * to the body's hash so libcurl signs the payload. Returns 0 when an HTTP response
 * arrived (whatever its status; see resp), TG_ENET for transport failures (connect,
 * timeout, reset) with the reason in err, TG_ENOMEM. */
int aws_http_send(aws_http *h, const char *method, const char *url, const char *const *headers,
		  const void *body, size_t len, aws_response *resp, char *err, size_t errlen);

#endif
