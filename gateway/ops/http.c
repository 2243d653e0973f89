/*
 * http.c — see http.h. One libmicrohttpd daemon in thread-per-connection mode: the access
 * handler is called once with the headers, then with each chunk of the body (gathered here
 * up to max_body; the rest is read and dropped so the 413 can be sent), then once more to
 * answer. The per-request state lives in MHD's request closure and is freed by the
 * completion callback, whatever way the request ended.
 */
#include "ops/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

struct http_server {
	struct MHD_Daemon *d;
	http_handler_fn handler;
	void *ud;
	size_t max_body;
	int port, tls;
	char *cert_pem, *key_pem; /* must outlive the daemon */
};

struct http_req {
	struct MHD_Connection *c;
	const char *method, *path;
	char *body;
	size_t len, cap;
	int too_large;
};

const char *http_req_method(const http_req *r) { return r->method; }
const char *http_req_path(const http_req *r) { return r->path; }
const char *http_req_header(const http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name);
}
const char *http_req_query(const http_req *r, const char *key)
{
	return MHD_lookup_connection_value(r->c, MHD_GET_ARGUMENT_KIND, key);
}
const char *http_req_body(const http_req *r, size_t *len)
{
	if (len)
		*len = r->len;
	return r->body ? r->body : "";
}

int http_resp_error(http_resp *r, int status, const char *code, const char *detail)
{
	json_t *j = json_pack("{s:s, s:s}", "error", code, "detail", detail ? detail : "");
	free(r->body);
	r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	r->len = r->body ? strlen(r->body) : 0;
	json_decref(j);
	r->status = status;
	r->content_type = "application/json";
	return 0;
}

static int hexval(char ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

static void req_free(http_req *q)
{
	if (!q)
		return;
	free(q->body);
	free(q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
	req_free(*req_cls);
	*req_cls = NULL;
}

static int body_add(http_req *q, const char *data, size_t n, size_t max)
{
	if (q->too_large || q->len + n > max) {
		q->too_large = 1;
		return 0;
	}
	if (q->len + n + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		while (cap < q->len + n + 1)
			cap *= 2;
		char *nb = realloc(q->body, cap);
		if (!nb)
			return TG_ENOMEM;
		q->body = nb;
		q->cap = cap;
	}
	memcpy(q->body + q->len, data, n);
	q->len += n;
	q->body[q->len] = '\0';
	return 0;
}

typedef struct stream_box {
	http_stream_fn fn;
	void *ud;
	void (*free_fn)(void *ud);
} stream_box;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	stream_box *b = cls;
	ssize_t n = b->fn(b->ud, buf, max);
	return n > 0 ? n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_done(void *cls)
{
	stream_box *b = cls;
	if (b->free_fn)
		b->free_fn(b->ud);
	free(b);
}

static struct MHD_Response *make_response(http_resp *r)
{
	struct MHD_Response *resp = NULL;
	if (r->stream) {
		stream_box *b = malloc(sizeof *b);
		if (!b) {
			if (r->stream_free)
				r->stream_free(r->stream_ud);
			return NULL;
		}
		*b = (stream_box){r->stream, r->stream_ud, r->stream_free};
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, b, stream_done);
		if (!resp)
			stream_done(b);
		return resp;
	}
	if (r->fd >= 0) {
		resp = MHD_create_response_from_fd(r->len, r->fd);
		if (!resp)
			close(r->fd);
		r->fd = -1;
		return resp;
	}
	if (r->body) {
		resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
		if (resp)
			r->body = NULL;
		return resp;
	}
	return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_size, void **req_cls)
{
	http_server *h = cls;
	http_req *q = *req_cls;
	if (!q) {
		if (!(q = calloc(1, sizeof *q)))
			return MHD_NO;
		q->c = c;
		q->method = method;
		q->path = url;
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > h->max_body)
			q->too_large = 1;
		*req_cls = q;
		return MHD_YES;
	}
	if (*upload_size) {
		if (body_add(q, upload_data, *upload_size, h->max_body))
			return MHD_NO;
		*upload_size = 0;
		return MHD_YES;
	}
	http_resp r = {.status = 200, .content_type = "application/json", .fd = -1};
	if (q->too_large) {
		char detail[96];
		snprintf(detail, sizeof detail, "request body larger than %zu bytes", h->max_body);
		http_resp_error(&r, 413, "body_too_large", detail);
	} else {
		int rc = h->handler(h->ud, q, &r);
		if (rc == 1)
			http_resp_error(&r, 404, "not_found", url);
	}
	struct MHD_Response *resp = make_response(&r);
	free(r.body);
	if (r.fd >= 0)
		close(r.fd);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type ? r.content_type : "application/json");
	if (r.cache_control)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, r.cache_control);
	if (r.csp)
		MHD_add_response_header(resp, "Content-Security-Policy", r.csp);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (r.status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"tidegate\"");
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)r.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* libmicrohttpd's own messages (a malformed request, a failed accept) would otherwise go
 * to stderr as raw text between our key=value lines. They are about a client or the
 * socket, not about us: warn level. The HTML page some of them quote is left out. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char text[1024];
	vsnprintf(text, sizeof text, fmt, ap);
	char *html = strstr(text, " ('<html>"), *end = html ? strstr(html, "</html>')") : NULL;
	if (end)
		memmove(html, end + 9, strlen(end + 9) + 1);
	size_t n = strlen(text);
	while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
		text[--n] = '\0';
	LOG_WARN("http", "msg=\"%s\"", text);
}
#pragma GCC diagnostic pop

/* URL decoding as MHD's own, except that %00 stays as it is: a NUL inside a decoded path
 * would cut it short ("a%00b" naming the rule "a"), so it is left for the handler's name
 * checks to refuse. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
	char *w = s;
	for (const char *r = s; *r; r++) {
		int hi, lo;
		if (r[0] == '%' && r[1] && r[2] && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 && (hi | lo)) {
			*w++ = (char)(hi * 16 + lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

static char *slurp(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		tg_seterr(err, errlen, TG_EIO, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	char *buf = malloc(256 * 1024 + 1);
	size_t n = buf ? fread(buf, 1, 256 * 1024, f) : 0;
	fclose(f);
	if (!buf) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

http_server *http_start(const http_opts *o, http_handler_fn handler, void *ud, char *err, size_t errlen)
{
	http_server *h = calloc(1, sizeof *h);
	if (!h) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	h->handler = handler;
	h->ud = ud;
	h->max_body = o->max_body ? o->max_body : 65536;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	if (inet_pton(AF_INET, o->bind, &sa.sin_addr) != 1) {
		tg_seterr(err, errlen, TG_EINVAL, "[http] bind: '%s' is not an IPv4 address", o->bind);
		goto fail;
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
	int tls = o->tls_cert_file && *o->tls_cert_file && o->tls_key_file && *o->tls_key_file;
	if (tls) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			tg_seterr(err, errlen, TG_EUNSUPPORTED, "[http] TLS: this libmicrohttpd was built without TLS");
			goto fail;
		}
		if (!(h->cert_pem = slurp(o->tls_cert_file, err, errlen)) || !(h->key_pem = slurp(o->tls_key_file, err, errlen)))
			goto fail;
		flags |= MHD_USE_TLS;
		h->tls = 1;
	}
	unsigned conns = o->max_conns ? o->max_conns : 16;
	if (tls)
		h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &sa,
					MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
					MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
					MHD_OPTION_HTTPS_MEM_CERT,
					h->cert_pem, MHD_OPTION_HTTPS_MEM_KEY, h->key_pem, MHD_OPTION_END);
	else
		h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &sa,
					MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
					MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
					MHD_OPTION_END);
	if (!h->d) {
		tg_seterr(err, errlen, TG_EIO, "cannot listen on %s:%d%s", o->bind, o->port,
			  tls ? " (or the TLS certificate/key was refused)" : "");
		goto fail;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : o->port;
	return h;
fail:
	free(h->cert_pem);
	free(h->key_pem);
	free(h);
	return NULL;
}

void http_stop(http_server *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	free(h->cert_pem);
	if (h->key_pem) /* a private key: do not leave it in freed memory */
		explicit_bzero(h->key_pem, strlen(h->key_pem));
	free(h->key_pem);
	free(h);
}

int http_port(const http_server *h) { return h->port; }
int http_tls(const http_server *h) { return h->tls; }
