/*
 * http.c — see http.h.
 */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

struct http_server {
	struct MHD_Daemon *d;
	http_render_fn render;
	void *ud;
	int port;
};

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_size, void **req_cls)
{
	http_server *h = cls;
	struct MHD_Response *resp;
	int status = 200;
	const char *ctype = "text/plain; charset=utf-8";
	char *body = NULL;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static const char msg[] = "only GET\n";
		resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
		status = 405;
	} else if (!(body = h->render(h->ud, url, &status, &ctype))) {
		static const char msg[] = "not found\n";
		resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
		status = 404;
	} else {
		resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, "Content-Type", ctype);
	}
	if (!resp)
		return MHD_NO;
	enum MHD_Result r = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return r;
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

http_server *http_start(const char *bind, int port, http_render_fn render, void *ud, char *err, size_t errlen)
{
	http_server *h = calloc(1, sizeof *h);
	if (!h) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	h->render = render;
	h->ud = ud;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, bind, &sa.sin_addr) != 1) {
		tg_seterr(err, errlen, TG_EINVAL, "[http] bind: '%s' is not an IPv4 address", bind);
		free(h);
		return NULL;
	}
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, handle, h,
				/* the logger first: options parsed before it would log to stderr */
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &sa,
				MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (!h->d) {
		tg_seterr(err, errlen, TG_EIO, "cannot listen on %s:%d", bind, port);
		free(h);
		return NULL;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : port;
	return h;
}

void http_stop(http_server *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	free(h);
}

int http_port(const http_server *h) { return h->port; }
