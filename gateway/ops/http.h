/*
 * http.h — the ops HTTP endpoint (libmicrohttpd, loopback by default, optional TLS): one
 * thread per connection (at most max_conns), so a handler may block briefly and a
 * Server-Sent-Events stream may wait for its next event without holding up other clients.
 *
 * The server knows nothing of the routes. It reads a request (method, path, query, headers,
 * a body of at most max_body bytes: a larger one is answered 413 before the handler is
 * called), hands it to one handler and sends what the handler filled in: a body, a file, or
 * a stream. Every error the server itself answers is JSON {"error", "detail"}.
 *
 * Ownership: the request and everything it points to are borrowed for the handler call. A
 * response's body (malloc'ed), fd and stream state are handed to the server, which frees,
 * closes and releases them (stream_free) when the response is done or the client left.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct http_server http_server;
typedef struct http_req http_req;

const char *http_req_method(const http_req *r); /* "GET", "PUT", ... */
const char *http_req_path(const http_req *r);   /* decoded path, without the query */
const char *http_req_header(const http_req *r, const char *name); /* NULL when absent */
const char *http_req_query(const http_req *r, const char *key);   /* decoded; NULL when absent */
const char *http_req_body(const http_req *r, size_t *len);        /* NUL-terminated; "" when none */

/* A stream: called on the connection's thread whenever the client can take more; may wait
 * (about a second at most, so a stopping server is not held up). Returns the bytes written
 * into buf (> 0), or -1 to end the response. Never 0. */
typedef ssize_t (*http_stream_fn)(void *ud, char *buf, size_t max);

typedef struct http_resp {
	int status;               /* default 200 */
	const char *content_type; /* static string; default "application/json" */
	const char *cache_control;/* static string or NULL */
	const char *csp;          /* Content-Security-Policy, static string or NULL */
	char *body;               /* malloc'ed, handed over; NULL: empty */
	size_t len;
	int fd;                   /* >= 0: send this file (handed over), len bytes */
	http_stream_fn stream;    /* non-NULL: stream instead of body */
	void *stream_ud;
	void (*stream_free)(void *ud);
} http_resp;

/* Fill r with a JSON error {"error": code, "detail": detail}. Returns 0. */
int http_resp_error(http_resp *r, int status, const char *code, const char *detail);

/* Return 0 when r was filled, 1 for "no such route" (the server answers 404). */
typedef int (*http_handler_fn)(void *ud, const http_req *req, http_resp *r);

typedef struct http_opts {
	const char *bind;          /* IPv4 address */
	int port;                  /* 0: any free port (tests) */
	size_t max_body;           /* request body cap in bytes */
	unsigned max_conns;        /* concurrent connections (threads) */
	const char *tls_cert_file; /* PEM; both set: HTTPS */
	const char *tls_key_file;
} http_opts;

http_server *http_start(const http_opts *o, http_handler_fn handler, void *ud, char *err, size_t errlen);
void http_stop(http_server *h); /* waits for every connection thread; NULL-safe */
int http_port(const http_server *h); /* the bound port (useful with port 0 in tests) */
int http_tls(const http_server *h);  /* 1 when serving HTTPS */

#endif
