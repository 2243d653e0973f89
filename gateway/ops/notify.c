/*
 * notify.c — see notify.h. A thin layer over sd_notify(): the module's state is the
 * watchdog period, when the last keep-alive and status line left, and the counter value
 * the accepted rate is measured from.
 */
#include "ops/notify.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

/* A status line every few seconds is enough for `systemctl status`; more would only
 * cost datagrams at high message rates. */
#define NOTIFY_STATUS_EVERY_MS 5000

struct tg_notify {
	int enabled;
	int64_t watchdog_ms;
	int64_t last_ping_ms;    /* last WATCHDOG=1, or READY=1 */
	int64_t last_status_ms;
	uint64_t last_accepted;
	int last_connected;      /* -1 before the first status line */
	int last_stalled;
};

tg_notify *notify_new(void)
{
	tg_notify *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	const char *sock = getenv("NOTIFY_SOCKET");
	n->enabled = sock && *sock;
	uint64_t usec = 0;
	/* > 0 only if WATCHDOG_USEC is set and WATCHDOG_PID, when set, is this process */
	if (n->enabled && sd_watchdog_enabled(0, &usec) > 0)
		n->watchdog_ms = (int64_t)(usec / 1000) > 0 ? (int64_t)(usec / 1000) : 1;
	n->last_connected = -1;
	return n;
}

void notify_free(tg_notify *n) { free(n); }

int notify_enabled(const tg_notify *n) { return n && n->enabled; }

int64_t notify_watchdog_ms(const tg_notify *n) { return n ? n->watchdog_ms : 0; }

/* sd_notify() with one STATUS= line appended to the fixed part. */
static int send_with_status(const char *head, const char *status)
{
	char msg[512];
	int len = snprintf(msg, sizeof msg, "%sSTATUS=%s", head, status ? status : "");
	if (len < 0)
		return -1;
	/* a status cut at the buffer is still a valid datagram */
	return sd_notify(0, msg);
}

int notify_ready(tg_notify *n, const char *status, int64_t now_ms)
{
	if (!notify_enabled(n))
		return 0;
	n->last_ping_ms = now_ms;
	n->last_status_ms = now_ms;
	return send_with_status("READY=1\n", status);
}

int notify_stopping(tg_notify *n, const char *status)
{
	if (!notify_enabled(n))
		return 0;
	return send_with_status("STOPPING=1\n", status);
}

static void send_status(tg_notify *n, int64_t now_ms, const notify_sample *s, int stalled)
{
	int64_t span = now_ms - n->last_status_ms;
	double rate = span > 0 && s->accepted >= n->last_accepted
			      ? (double)(s->accepted - n->last_accepted) * 1000.0 / (double)span
			      : 0.0;
	char line[400];
	int off = 0;
	if (stalled)
		off = snprintf(line, sizeof line, "%s silent for %.1f s, watchdog keep-alives withheld; ",
			       s->stalled_what ? s->stalled_what : "a worker thread", (double)s->stalled_ms / 1000.0);
	if (off < 0 || (size_t)off >= sizeof line)
		off = 0;
	snprintf(line + off, sizeof line - (size_t)off, "%s %s; accepted %.1f msg/s; outbox backlog %" PRId64 " rows",
		 s->broker_connected ? "broker connected" : "waiting for the broker", s->broker ? s->broker : "",
		 rate, s->backlog);
	send_with_status("", line);
	n->last_status_ms = now_ms;
	n->last_accepted = s->accepted;
	n->last_connected = s->broker_connected;
	n->last_stalled = stalled;
}

static int ping_if_due(tg_notify *n, int64_t now_ms)
{
	if (n->watchdog_ms <= 0 || now_ms - n->last_ping_ms < n->watchdog_ms / 2)
		return 0;
	n->last_ping_ms = now_ms;
	sd_notify(0, "WATCHDOG=1");
	return 1;
}

int notify_ping(tg_notify *n, int64_t now_ms) { return notify_enabled(n) ? ping_if_due(n, now_ms) : 0; }

int notify_tick(tg_notify *n, int64_t now_ms, const notify_sample *s)
{
	if (!notify_enabled(n))
		return 0;
	int stalled = n->watchdog_ms > 0 && s->stalled_ms >= n->watchdog_ms;
	int began = stalled && !n->last_stalled;
	if (s->broker_connected != n->last_connected || stalled != n->last_stalled ||
	    now_ms - n->last_status_ms >= NOTIFY_STATUS_EVERY_MS)
		send_status(n, now_ms, s, stalled);
	if (stalled)
		return began ? -1 : 0;
	return ping_if_due(n, now_ms);
}
