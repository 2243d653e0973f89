/*
 * hedge.h — what an HTTP request under way does about a connection that died under it, and
 * about a daemon that stops. Shared by the sinks that send with libcurl one request at a
 * time (the AWS client of kinesis and s3, and webhook).
 *
 * A request that makes no progress for SINK_HEDGE_QUIET_MS probes its endpoint (probe.h)
 * every SINK_HEDGE_EVERY_MS. When the endpoint, silent to a probe since the last answer this
 * client had, answers a probe again, the request is on a connection that died with the
 * outage (a black hole, a middlebox that dropped its state): it is abandoned and sent once
 * more on a new connection at once, instead of waiting out its timeout. A slow but live
 * endpoint answers every probe, so its slow answers are never cut short. Independently, once
 * sink_env.abandon is set (the daemon stops and its drain budget is over) the request fails
 * at libcurl's next progress call.
 */
#ifndef TG_SINKS_HEDGE_H
#define TG_SINKS_HEDGE_H

#include <stdatomic.h>
#include <stdint.h>

#define SINK_HEDGE_QUIET_MS 500 /* no progress for this long: start probing */
#define SINK_HEDGE_EVERY_MS 500 /* then probe this often */
#define SINK_HEDGE_PROBE_MS 300 /* each probe's budget */

typedef struct sink_hedge {
	const _Atomic int *abandon; /* sink_env.abandon (may be NULL) */
	const char *url;	    /* the request's URL, borrowed for one send */
	int64_t progress_ms, probed_ms; /* monotonic: last progress, last probe */
	int64_t seen_up, seen_down;	/* byte counts last seen */
	int silent_seen; /* a probe found the endpoint silent since the last answer */
	int hedged;	 /* the progress callback aborted the transfer to send it again */
	int attempts;	 /* transfers of the current send */
} sink_hedge;

/* Set the progress callback of a curl easy handle (CURL *, void here so that this header
 * does not need curl's) to h. Again after curl_easy_reset(). */
void sink_hedge_attach(void *curl, sink_hedge *h);
/* A send begins: url is borrowed until sink_hedge_end. */
void sink_hedge_begin(sink_hedge *h, const char *url);
/* Before each transfer of the send (curl_easy_perform). */
void sink_hedge_attempt(sink_hedge *h);
/* After a transfer that ended with curl code cc: 1 when it should be sent once more on a new
 * connection (logged, with method and url), 0 when its result stands. */
int sink_hedge_again(sink_hedge *h, int cc, const char *method);
/* The send is over; ok: the endpoint answered. */
void sink_hedge_end(sink_hedge *h, int ok);
/* Whether a transfer that ended with curl code cc was abandoned because the daemon stops. */
int sink_hedge_abandoned(const sink_hedge *h, int cc);
/* Why a transfer that ended with curl code cc failed: the abandon, or else curl's words. */
const char *sink_hedge_why(const sink_hedge *h, int cc, const char *curl_words);

#endif
