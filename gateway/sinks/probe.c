/*
 * probe.c — see probe.h. A non-blocking connect() waited on with poll(): the only way to
 * bound a connect by milliseconds, so that a black-holed endpoint (SYNs dropped) costs the
 * forwarder thread one probe timeout, not the kernel's minutes of SYN retries. Then a few
 * bytes of HTTP are sent and any answer at all is awaited within the same budget: an
 * endpoint that accepts connections and never answers (a stuck process, a proxy or
 * middlebox black hole) must look down, or its return could not end a backoff.
 */
#include "sinks/probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"

int sink_probe_split(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *p = strstr(url ? url : "", "://");
	if (!p || hostlen == 0 || portlen == 0)
		return TG_EINVAL;
	size_t slen = (size_t)(p - url);
	const char *def = slen == 5 && !strncasecmp(url, "https", 5) ? "443"
			  : slen == 4 && !strncasecmp(url, "http", 4) ? "80"
								      : NULL;
	if (!def)
		return TG_EINVAL;
	const char *h = p + 3, *end;
	if (*h == '[') { /* [v6]:port */
		end = strchr(h, ']');
		if (!end)
			return TG_EINVAL;
		h++;
	} else {
		end = h + strcspn(h, ":/?#");
	}
	size_t n = (size_t)(end - h);
	if (n == 0 || n >= hostlen)
		return TG_EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	const char *after = *end == ']' ? end + 1 : end;
	if (*after == ':') {
		size_t pn = strspn(after + 1, "0123456789");
		if (pn == 0 || pn >= portlen || (after[1 + pn] && !strchr("/?#", after[1 + pn])))
			return TG_EINVAL;
		memcpy(port, after + 1, pn);
		port[pn] = '\0';
	} else if (*after && !strchr("/?#", *after)) {
		return TG_EINVAL;
	} else {
		snprintf(port, portlen, "%s", def);
	}
	return 0;
}

/* Wait for events on fd until deadline (monotonic ms). 1 when they came, 0 on timeout. */
static int wait_until(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - tg_mono_ms();
		if (left <= 0)
			return 0;
		struct pollfd pf = {.fd = fd, .events = events};
		int n = poll(&pf, 1, (int)left);
		if (n > 0)
			return 1;
		if (n == 0 || errno != EINTR)
			return 0;
	}
}

/* Connect and hear an answer within the deadline. An HTTP request line is what every
 * endpoint we probe answers: an HTTP server with a status line, a TLS server with an alert
 * or a close, since "HEAD" is no TLS record. Data, an orderly close or a reset all mean a
 * live peer read what came in; only silence counts against it. */
static int answers_within(const struct addrinfo *ai, const char *host, int64_t deadline)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return TG_ENET;
	int rc = TG_ENET;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (errno != EINPROGRESS || !wait_until(fd, POLLOUT, deadline) ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
			goto out;
	}
	char req[320];
	int n = snprintf(req, sizeof req, "HEAD / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
	if (n <= 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		goto out;
	if (!wait_until(fd, POLLIN, deadline))
		goto out;
	char buf[64];
	ssize_t got = recv(fd, buf, sizeof buf, 0);
	if (got >= 0 || errno == ECONNRESET)
		rc = 0;
out:
	close(fd);
	return rc;
}

int sink_probe_url(const char *url, int timeout_ms)
{
	char host[256], port[8];
	if (sink_probe_split(url, host, sizeof host, port, sizeof port))
		return TG_EINVAL;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return TG_ENET;
	int rc = TG_ENET;
	int64_t deadline = tg_mono_ms() + timeout_ms;
	for (const struct addrinfo *ai = res; ai && rc; ai = ai->ai_next)
		rc = answers_within(ai, host, deadline);
	freeaddrinfo(res);
	return rc;
}
