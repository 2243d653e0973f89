/*
 * notify.h — the daemon's side of systemd's service protocol: READY=1 once it can take
 * messages, STATUS= lines an operator reads in `systemctl status`, STOPPING=1, and the
 * watchdog keep-alive (WATCHDOG=1) for WatchdogSec=.
 *
 * The messages go through libsystemd's sd_notify() (it knows the socket forms systemd
 * uses, abstract and path, and the credentials it checks), so this module only decides
 * what to say and when. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
 *
 * The watchdog is only worth having if a keep-alive proves the daemon works, not merely
 * that some thread runs. The caller sends keep-alives from the ingest loop (so a hung
 * ingest sends none) and reports, in each sample, how long the least recently alive
 * forwarder thread has been silent: a keep-alive is withheld while that exceeds the
 * watchdog period, so a stuck forwarder also lets systemd restart the service.
 *
 * Time comes in as now_ms (no clock reads here), so tests drive it directly.
 */
#ifndef TG_NOTIFY_H
#define TG_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg_notify tg_notify;

/* What the loop reports on each tick (all borrowed for the call). */
typedef struct notify_sample {
	uint64_t accepted;        /* messages accepted so far (monotonic) */
	int64_t backlog;          /* rows queued in the outbox */
	int broker_connected;
	const char *broker;       /* "host:port", for the status line */
	int64_t stalled_ms;       /* silence of the least recently alive worker thread */
	const char *stalled_what; /* which one, e.g. "forwarder lake" */
} notify_sample;

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID (via libsystemd). Caller owns the
 * result (notify_free). Never fails for want of systemd: returns NULL only on ENOMEM. */
tg_notify *notify_new(void);
void notify_free(tg_notify *n); /* NULL-safe */

/* 1 when a notification socket is set (running under systemd or a test double). */
int notify_enabled(const tg_notify *n);
/* The watchdog period in ms (WatchdogSec=), 0 when the watchdog is off. */
int64_t notify_watchdog_ms(const tg_notify *n);

/* READY=1 with a STATUS= line (status borrowed). Returns sd_notify's result: > 0 sent,
 * 0 no socket, < 0 -errno. */
int notify_ready(tg_notify *n, const char *status, int64_t now_ms);
/* STOPPING=1 with a STATUS= line. */
int notify_stopping(tg_notify *n, const char *status);

/* Called from the ingest loop on every turn; cheap when nothing is due. Sends WATCHDOG=1
 * every half period while s->stalled_ms is below the period, and a STATUS= line with the
 * accepted rate and the backlog every few seconds, or at once when the broker state or
 * the stall verdict changes. Returns 1 if a keep-alive went out, -1 on the first turn of
 * a stall (keep-alives withheld from now on: the caller logs it once), 0 otherwise. */
int notify_tick(tg_notify *n, int64_t now_ms, const notify_sample *s);

/* WATCHDOG=1 if one is due, whatever the workers do: for a wait outside the ingest loop
 * that is known not to hang (bounded, checking the stop flag). Returns 1 if sent. */
int notify_ping(tg_notify *n, int64_t now_ms);

#endif
