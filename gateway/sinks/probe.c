/*
 * probe.c — see probe.h. A non-blocking connect() waited on with poll(): the only way to
 * bound a connect by milliseconds, so that a black-holed endpoint (SYNs dropped) costs the
 * forwarder thread one probe timeout, not the kernel's minutes of SYN retries.
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

static int connect_within(const struct addrinfo *ai, int timeout_ms)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return TG_ENET;
	int rc = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : TG_ENET;
	if (rc && errno == EINPROGRESS) {
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (poll(&pf, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
		    soerr == 0)
			rc = 0;
	}
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
	for (const struct addrinfo *ai = res; ai && rc; ai = ai->ai_next)
		rc = connect_within(ai, timeout_ms);
	freeaddrinfo(res);
	return rc;
}
