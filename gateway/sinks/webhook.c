/*
 * webhook.c — the `webhook` sink: HTTP POST of each record's body to the URL it carries,
 * the edge's stand-in for SNS. The rules' {"webhook": {"url", "headers"}} action appends
 * an envelope {"url", "headers", "body", "msg_id"} to the outbox, so a webhook is retried
 * from the outbox like any upstream record and survives restarts.
 *
 * One POST per record (webhooks are per event). 2xx is delivered; 4xx other than 408/429
 * is permanent (dead letter: the receiver refuses this body); 408, 429, 5xx and network
 * errors are retried with the forwarder's backoff. After the first retryable failure the
 * rest of the batch is not tried, so a dead receiver costs one timeout per batch. Each
 * request carries X-Tidegate-Msg-Id so the receiver can dedupe the at-least-once stream.
 * A POST hung on a connection that died with an outage is sent again on a new one, and a
 * stop past its drain budget abandons it (hedge.h), as for the AWS sinks.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/jsonout.h"
#include "core/log.h"
#include "sinks/curl_dl.h"
#include "sinks/hedge.h"
#include "store/sink.h"

typedef struct webhook_opts {
	int64_t timeout_ms;
	int64_t max_records;
} webhook_opts;

static const config_option webhook_options[] = {
	{.name = "timeout", .type = CFG_DURATION, .def = "10s", .min = 100, .max = 600000,
	 .offset = offsetof(webhook_opts, timeout_ms), .help = "Per-request timeout."},
	{.name = "max_records", .type = CFG_INT, .def = "50", .min = 1, .max = 10000,
	 .offset = offsetof(webhook_opts, max_records), .help = "Records handed over per batch."},
	{.name = NULL},
};

struct sink {
	const webhook_opts *o;
	CURL *curl;
	sink_hedge hedge;
};

static size_t discard(char *p, size_t size, size_t n, void *ud) { return size * n; }

static sink *webhook_open(const void *opts, const sink_env *env, sink_limits *limits, char *err, size_t errlen)
{
	if (curl_dl_load(err, errlen))
		return NULL;
	sink *s = calloc(1, sizeof *s);
	if (!s || !(s->curl = curl_easy_init())) {
		free(s);
		tg_seterr(err, errlen, TG_ENOMEM, "cannot create an HTTP client");
		return NULL;
	}
	s->o = opts;
	s->hedge.abandon = env ? env->abandon : NULL;
	limits->max_records = (size_t)s->o->max_records;
	limits->max_bytes = 4u << 20;
	limits->max_age_ms = 0;
	return s;
}

static void webhook_close(sink *s)
{
	if (!s)
		return;
	curl_easy_cleanup(s->curl);
	free(s);
}

/* POST one envelope; returns the record's status. */
static sink_status post_one(sink *s, const sink_record *r, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *env = json_loadb(r->data, r->len, 0, &jerr);
	const char *url = env ? json_string_value(json_object_get(env, "url")) : NULL;
	json_t *body = env ? json_object_get(env, "body") : NULL;
	if (!url || !body) {
		tg_seterr(err, errlen, TG_EINVAL, "record %s is not a webhook envelope", r->msg_id);
		json_decref(env);
		return SINK_POISON;
	}
	char *text = jsonout_dumps(body);
	struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	char line[1024];
	snprintf(line, sizeof line, "X-Tidegate-Msg-Id: %s", r->msg_id);
	hdrs = curl_slist_append(hdrs, line);
	const char *k;
	json_t *v;
	json_object_foreach(json_object_get(env, "headers"), k, v)
	{
		if (!json_is_string(v) || strcasecmp(k, "Content-Type") == 0 || strpbrk(k, "\r\n:") ||
		    strpbrk(json_string_value(v), "\r\n"))
			continue; /* no header injection */
		snprintf(line, sizeof line, "%s: %s", k, json_string_value(v));
		hdrs = curl_slist_append(hdrs, line);
	}
	CURL *c = s->curl;
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, text ? text : "{}");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->o->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	sink_hedge_attach(c, &s->hedge);
	CURLcode cc;
	sink_hedge_begin(&s->hedge, url);
	do {
		sink_hedge_attempt(&s->hedge);
		cc = curl_easy_perform(c);
	} while (sink_hedge_again(&s->hedge, cc, "POST"));
	sink_hedge_end(&s->hedge, cc == CURLE_OK);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	free(text);
	sink_status st;
	if (cc != CURLE_OK) {
		tg_seterr(err, errlen, TG_ENET, "POST %s: %s", url, sink_hedge_why(&s->hedge, cc, curl_easy_strerror(cc)));
		st = SINK_RETRY;
	} else if (status >= 200 && status < 300) {
		st = SINK_OK;
	} else if (status >= 400 && status < 500 && status != 408 && status != 429) {
		tg_seterr(err, errlen, TG_EPERM, "POST %s: HTTP %ld (permanent)", url, status);
		st = SINK_POISON;
	} else {
		tg_seterr(err, errlen, TG_ERETRY, "POST %s: HTTP %ld", url, status);
		st = SINK_RETRY;
	}
	json_decref(env);
	return st;
}

static int webhook_send(sink *s, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms, char *err,
			size_t errlen)
{
	size_t i = 0;
	for (; i < n; i++) {
		results[i] = post_one(s, &recs[i], err, errlen);
		if (results[i] == SINK_RETRY)
			break;
	}
	for (i++; i < n; i++)
		results[i] = SINK_RETRY;
	return 0;
}

const sink_ops sink_webhook_ops = {
	.conf = {.type = "webhook", .options = webhook_options, .options_size = sizeof(webhook_opts)},
	.open = webhook_open,
	.send = webhook_send,
	.close = webhook_close,
};
