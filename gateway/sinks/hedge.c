/*
 * hedge.c — see hedge.h. The decision lives in libcurl's progress callback, which libcurl
 * calls while a transfer runs (at least about once a second when nothing moves); a non-zero
 * return aborts the transfer with CURLE_ABORTED_BY_CALLBACK, and the flags here tell the
 * caller why.
 */
#include "sinks/hedge.h"

#include "core/clock.h"
#include "core/log.h"
#include "sinks/curl_dl.h"
#include "sinks/probe.h"

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	sink_hedge *h = ud;
	(void)dltotal;
	(void)ultotal;
	if (h->abandon && atomic_load(h->abandon))
		return 1;
	if (!h->url)
		return 0;
	int64_t now = tg_mono_ms();
	if (dlnow != h->seen_down || ulnow != h->seen_up) {
		h->seen_down = dlnow;
		h->seen_up = ulnow;
		h->progress_ms = now;
		return 0;
	}
	if (now - h->progress_ms < SINK_HEDGE_QUIET_MS || now - h->probed_ms < SINK_HEDGE_EVERY_MS)
		return 0;
	h->probed_ms = now;
	if (sink_probe_url(h->url, SINK_HEDGE_PROBE_MS) < 0) {
		h->silent_seen = 1;
		return 0;
	}
	if (!h->silent_seen)
		return 0;
	h->hedged = 1;
	return 1;
}

void sink_hedge_attach(void *curl, sink_hedge *h)
{
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, h);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
}

void sink_hedge_begin(sink_hedge *h, const char *url)
{
	h->url = url;
	h->attempts = 0;
}

void sink_hedge_attempt(sink_hedge *h)
{
	h->hedged = 0;
	h->seen_up = h->seen_down = 0;
	h->progress_ms = h->probed_ms = tg_mono_ms();
	h->attempts++;
}

int sink_hedge_again(sink_hedge *h, int cc, const char *method)
{
	/* once per send: a second quiet attempt waits for its answer or its timeout */
	if (cc != CURLE_ABORTED_BY_CALLBACK || !h->hedged || h->attempts > 1)
		return 0;
	h->silent_seen = 0;
	LOG_INFO("sink", "msg=\"endpoint answers again while a request hung on an old connection: sending it again\" "
			 "method=%s url=\"%s\"", method, h->url);
	return 1;
}

void sink_hedge_end(sink_hedge *h, int ok)
{
	h->url = NULL;
	if (ok)
		h->silent_seen = 0; /* an answer: earlier silence says nothing about later requests */
}

int sink_hedge_abandoned(const sink_hedge *h, int cc)
{
	return cc == CURLE_ABORTED_BY_CALLBACK && h->abandon && atomic_load(h->abandon);
}

const char *sink_hedge_why(const sink_hedge *h, int cc, const char *curl_words)
{
	return sink_hedge_abandoned(h, cc) ? "abandoned: the daemon stops and its drain budget is over" : curl_words;
}
