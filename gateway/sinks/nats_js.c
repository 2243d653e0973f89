/*
 * nats_js.c — the `nats` sink: each outbox record becomes one JetStream publish on a
 * subject expanded from a template, with the header Nats-Msg-Id = msg_id, and is
 * delivered — SINK_OK, deleted from the outbox — only once JetStream acknowledged that it
 * stored it. Because the id rides along, a record the outbox hands over twice (a crash
 * between delivery and deletion, a lost acknowledgement) is dropped by JetStream itself
 * when it comes back within the stream's duplicate window (2 minutes by default): the
 * acknowledgement then says "duplicate", which counts as delivered.
 *
 * Publishing is asynchronous (js_PublishMsgAsync) with at most max_inflight publishes
 * unacknowledged, so a batch streams out without a round trip per record; send() then
 * waits until every record has its acknowledgement or ack_timeout passes without one.
 * Acknowledgements arrive on a libnats thread: the batch's bookkeeping (which record a
 * message is, its status) sits behind a mutex, and before send() returns it takes back
 * every message still unanswered and waits for callbacks in progress, so no callback can
 * reach a batch after the forwarder settled it.
 *
 * libnats's own reconnect is off: a lost connection fails the batch (what was not
 * acknowledged stays SINK_RETRY), the connection is destroyed, and the next send() after
 * the forwarder's backoff connects again — to any server of the `url` list, so a NATS
 * cluster fails over there. The library is loaded on first use (nats_dl.h).
 */
#include "sinks/nats_js.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "sinks/msgsink.h"
#include "sinks/nats_dl.h"

#define NOFF(f) offsetof(nats_js_opts, f)
static const config_option nats_options[] = {
	{"url", CFG_STRING, NULL, 0, 0, NOFF(url), CFG_REQUIRED,
	 "Comma-separated NATS server URLs (nats://host:4222, tls://host:4222); a connection goes to any of them.", NULL},
	{"subject", CFG_STRING, "<prefix>.<table>.<thing>", 0, 0, NOFF(subject), 0,
	 "Subject template per record (default `<prefix>.<table>.<thing>`): `<prefix>`, `<table>`, `<thing>` (the "
	 "record's partition key, normally the thing) and `<gateway>`. A JetStream stream must capture it (e.g. subjects "
	 "`tidegate.>`).",
	 NULL},
	{"prefix", CFG_STRING, "tidegate", 0, 0, NOFF(prefix), 0, "What `<prefix>` expands to.", NULL},
	{"stream", CFG_STRING, "", 0, 0, NOFF(stream), 0,
	 "Expected stream: publishes carry Nats-Expected-Stream, so one stored by another stream fails instead. "
	 "Empty: any stream that captures the subject.",
	 NULL},
	{"tls", CFG_BOOL, "false", 0, 0, NOFF(tls), 0, "Require TLS (also implied by tls:// URLs).", NULL},
	{"ca_file", CFG_STRING, "", 0, 0, NOFF(ca_file), 0, "CA bundle that signed the servers' certificates.", NULL},
	{"cert_file", CFG_STRING, "", 0, 0, NOFF(cert_file), 0, "Client certificate (PEM) when the servers verify clients.", NULL},
	{"key_file", CFG_STRING, "", 0, 0, NOFF(key_file), CFG_SECRET, "Its private key (PEM).", NULL},
	{"user", CFG_STRING, "", 0, 0, NOFF(user), 0, "User name (servers with user/password authorization).", NULL},
	{"password", CFG_STRING, "", 0, 0, NOFF(password), CFG_SECRET, "Password.", NULL},
	{"token", CFG_STRING, "", 0, 0, NOFF(token), CFG_SECRET, "Authentication token.", NULL},
	{"creds_file", CFG_STRING, "", 0, 0, NOFF(creds_file), 0,
	 "A .creds file (user JWT and NKey seed) for servers with decentralized JWT authorization.", NULL},
	{"max_inflight", CFG_INT, "256", 1, 65536, NOFF(max_inflight), 0,
	 "Publishes waiting for their JetStream acknowledgement at any time.", NULL},
	{"max_payload", CFG_SIZE, "0", 0, 64 << 20, NOFF(max_payload), 0,
	 "A record whose message (headers + data) is larger is dead-lettered; 0 = the server's max_payload (1 MiB by default).",
	 NULL},
	{"connect_timeout", CFG_DURATION, "5s", 100, 600000, NOFF(connect_timeout_ms), 0, "Timeout of a connection attempt.",
	 NULL},
	{"ack_timeout", CFG_DURATION, "10s", 100, 600000, NOFF(ack_timeout_ms), 0,
	 "No acknowledgement for this long while publishes are pending: the connection is dropped and they are retried.", NULL},
	{"max_records", CFG_INT, "1000", 1, 100000, NOFF(max_records), 0, "Records handed to one send.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
#undef NOFF

typedef struct pend {
	const void *msg; /* the natsMsg as published (only compared, never dereferenced) */
	int32_t idx;     /* record index, -1 = answered (the slot stays as a tombstone) */
} pend;

struct sink {
	const nats_js_opts *o;
	char *gateway_id;
	msgsink_tmpl subject;
	char *urls;              /* the url option split in place */
	const char **servers;
	int nservers;
	int secure;
	natsConnection *nc;      /* NULL while disconnected */
	jsCtx *js;
	size_t server_max;
	/* the batch in flight, shared with libnats's acknowledgement thread under mu */
	pthread_mutex_t mu;
	pend *map;
	size_t map_mask;
	const sink_record *recs;
	sink_status *results;
	size_t answered;
	uint64_t dups, dups_total; /* duplicate acknowledgements: this batch, since open */
	char ack_poison[256], ack_retry[256]; /* the first refusal of each kind */
	msgsink_names subjects; /* of the batch (read by on_ack too, under mu) */
};

/* ---- pure parts ------------------------------------------------------------------------ */

size_t sink_nats_header_bytes(const char *msg_id, const char *stream)
{
	size_t n = strlen("NATS/1.0\r\n") + strlen("Nats-Msg-Id: ") + strlen(msg_id) + 2 + 2;
	if (stream && *stream)
		n += strlen("Nats-Expected-Stream: ") + strlen(stream) + 2;
	return n;
}

sink_status sink_nats_check(const sink_record *r, const char *subject, size_t subject_len, size_t max_payload,
			    size_t header_bytes, char *why, size_t whylen)
{
	if (max_payload && r->len + header_bytes > max_payload) {
		tg_seterr(why, whylen, TG_EPERM, "record %s: message of %zu bytes (payload %zu + headers %zu) over max_payload %zu",
			  r->msg_id, r->len + header_bytes, r->len, header_bytes, max_payload);
		return SINK_POISON;
	}
	int bad = subject_len == 0;
	size_t tok = 0; /* start of the current token */
	for (size_t i = 0; !bad && i <= subject_len; i++) {
		if (i == subject_len || subject[i] == '.') {
			size_t tl = i - tok;
			bad = tl == 0 || (tl == 1 && (subject[tok] == '*' || subject[tok] == '>'));
			tok = i + 1;
		} else {
			bad = (unsigned char)subject[i] <= ' ' || subject[i] == 0x7f;
		}
	}
	if (bad) {
		tg_seterr(why, whylen, TG_EPERM,
			  "record %s: \"%.*s\" is not a subject one can publish to (empty token, wildcard or whitespace)",
			  r->msg_id, (int)(subject_len < 200 ? subject_len : 200), subject);
		return SINK_POISON;
	}
	return SINK_OK;
}

sink_status sink_nats_ack_status(int js_err_code)
{
	return js_err_code == SINK_NATS_JS_MSG_TOO_BIG ? SINK_POISON : SINK_RETRY;
}

/* ---- the batch's message map (caller holds mu) ---------------------------------------- */

static size_t map_slot(const sink *b, const void *msg)
{
	uint64_t h = (uint64_t)(uintptr_t)msg * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 32) & b->map_mask;
}

static void map_put(sink *b, const void *msg, int32_t idx)
{
	size_t i = map_slot(b, msg);
	while (b->map[i].msg)
		i = (i + 1) & b->map_mask;
	b->map[i] = (pend){msg, idx};
}

/* The live entry for msg (an address may come back after its message was freed, so
 * answered entries are skipped, never matched): its index, now answered; or -1. */
static int32_t map_take(sink *b, const void *msg)
{
	for (size_t i = map_slot(b, msg); b->map[i].msg; i = (i + 1) & b->map_mask)
		if (b->map[i].msg == msg && b->map[i].idx >= 0) {
			int32_t idx = b->map[i].idx;
			b->map[i].idx = -1;
			return idx;
		}
	return -1;
}

/* Room for n entries at half load; clears it. 0 or TG_ENOMEM. */
static int map_reset(sink *b, size_t n)
{
	size_t cap = 64;
	while (cap < 2 * n + 2)
		cap *= 2;
	if (cap - 1 > b->map_mask || !b->map) {
		pend *m = realloc(b->map, cap * sizeof *m);
		if (!m)
			return TG_ENOMEM;
		b->map = m;
		b->map_mask = cap - 1;
	}
	memset(b->map, 0, (b->map_mask + 1) * sizeof *b->map);
	return 0;
}

/* ---- acknowledgements (libnats thread) -------------------------------------------------- */

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	sink *b = closure;
	pthread_mutex_lock(&b->mu);
	int32_t idx = b->results ? map_take(b, msg) : -1;
	if (idx >= 0) {
		if (pa) {
			b->results[idx] = SINK_OK;
			b->dups += pa->Duplicate;
		} else {
			int code = pae ? (int)pae->ErrCode : 0;
			sink_status st = sink_nats_ack_status(code);
			char *e = st == SINK_POISON ? b->ack_poison : b->ack_retry;
			b->results[idx] = st;
			if (e[0])
				;
			else if (pae && pae->Err == NATS_NO_RESPONDERS)
				snprintf(e, sizeof b->ack_retry, "no JetStream stream captures subject %s (no responders)",
					 msgsink_name(&b->subjects, idx));
			else
				snprintf(e, sizeof b->ack_retry, "JetStream refused %s: %s (err_code %d)", b->recs[idx].msg_id,
					 pae && pae->ErrText ? pae->ErrText : "no acknowledgement", code);
		}
		b->answered++;
	}
	pthread_mutex_unlock(&b->mu);
	natsMsg_Destroy(msg);
}

/* ---- connection ------------------------------------------------------------------------ */

/* libnats's last error of this thread without its "(file.c:123): " location, or "" when
 * it only repeats the status text. */
static const char *last_error(natsStatus s)
{
	const char *t = nats_GetLastError(NULL);
	if (!t)
		return "";
	if (t[0] == '(') {
		const char *e = strstr(t, "): ");
		if (e)
			t = e + 3;
	}
	return strcmp(t, natsStatus_GetText(s)) ? t : "";
}

static void drop(sink *b)
{
	if (b->js)
		jsCtx_Destroy(b->js);
	if (b->nc)
		natsConnection_Destroy(b->nc); /* closes it */
	b->js = NULL;
	b->nc = NULL;
}

static int nats_connect(sink *b, char *err, size_t errlen)
{
	const nats_js_opts *o = b->o;
	natsOptions *no = NULL;
	char name[160];
	natsStatus s = natsOptions_Create(&no);
	drop(b);
	snprintf(name, sizeof name, "tidegate %s", b->gateway_id);
	if (s == NATS_OK)
		s = natsOptions_SetServers(no, b->servers, b->nservers);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(no, o->connect_timeout_ms);
	if (s == NATS_OK) /* the forwarder's backoff decides when to try again, not libnats */
		s = natsOptions_SetAllowReconnect(no, false);
	if (s == NATS_OK)
		s = natsOptions_SetName(no, name);
	if (s == NATS_OK && b->secure)
		s = natsOptions_SetSecure(no, true);
	if (s == NATS_OK && *o->ca_file)
		s = natsOptions_LoadCATrustedCertificates(no, o->ca_file);
	if (s == NATS_OK && *o->cert_file)
		s = natsOptions_LoadCertificatesChain(no, o->cert_file, o->key_file);
	if (s == NATS_OK && *o->user)
		s = natsOptions_SetUserInfo(no, o->user, o->password);
	if (s == NATS_OK && *o->token)
		s = natsOptions_SetToken(no, o->token);
	if (s == NATS_OK && *o->creds_file)
		s = natsOptions_SetUserCredentialsFromFiles(no, o->creds_file, NULL);
	if (s != NATS_OK) {
		const char *le = last_error(s);
		tg_seterr(err, errlen, TG_EINVAL, "nats: client options: %s%s%s", natsStatus_GetText(s), *le ? ": " : "", le);
		natsOptions_Destroy(no);
		return TG_EINVAL;
	}
	s = natsConnection_Connect(&b->nc, no);
	natsOptions_Destroy(no); /* the connection keeps its own copy */
	if (s != NATS_OK) {
		const char *le = last_error(s);
		tg_seterr(err, errlen, TG_ENET, "connect to %s: %s%s%s", o->url, natsStatus_GetText(s), *le ? ": " : "", le);
		b->nc = NULL;
		return TG_ENET;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = o->ack_timeout_ms;
	jo.PublishAsync.MaxPending = o->max_inflight;
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = b;
	jo.PublishAsync.StallWait = o->ack_timeout_ms; /* a full window waits this long for a slot */
	s = natsConnection_JetStream(&b->js, b->nc, &jo);
	if (s != NATS_OK) {
		tg_seterr(err, errlen, TG_ENET, "nats: JetStream context: %s", natsStatus_GetText(s));
		b->js = NULL;
		drop(b);
		return TG_ENET;
	}
	int64_t mp = natsConnection_GetMaxPayload(b->nc);
	b->server_max = mp > 0 ? (size_t)mp : 0;
	char url[256] = "";
	natsConnection_GetConnectedUrl(b->nc, url, sizeof url);
	LOG_INFO("nats", "msg=connected url=%s server_max_payload=%zu", url, b->server_max);
	return 0;
}

/* ---- the sink ------------------------------------------------------------------------- */

static void nats_close(sink *b)
{
	if (!b)
		return;
	drop(b);
	msgsink_tmpl_free(&b->subject);
	msgsink_names_free(&b->subjects);
	pthread_mutex_destroy(&b->mu);
	free(b->map);
	free(b->servers);
	free(b->urls);
	free(b->gateway_id);
	free(b);
}

static sink *nats_open(const void *opts, const sink_env *env, sink_limits *limits, char *err, size_t errlen)
{
	const nats_js_opts *o = opts;
	char why[256];
	if (nats_dl_load(err, errlen))
		return NULL;
	sink *b = calloc(1, sizeof *b);
	if (!b) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&b->mu, NULL);
	b->o = o;
	if (msgsink_tmpl_compile(&b->subject, o->subject, why, sizeof why)) {
		tg_seterr(err, errlen, TG_EINVAL, "nats: subject \"%s\": %s", o->subject, why);
		goto fail;
	}
	if (!(b->gateway_id = strdup(env && env->gateway_id ? env->gateway_id : "")) || !(b->urls = strdup(o->url)) ||
	    !(b->servers = calloc(strlen(o->url) / 2 + 2, sizeof *b->servers))) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	char *save = NULL;
	for (char *u = strtok_r(b->urls, ", ", &save); u; u = strtok_r(NULL, ", ", &save)) {
		b->servers[b->nservers++] = u;
		b->secure |= strncmp(u, "tls://", 6) == 0;
	}
	if (!b->nservers) {
		tg_seterr(err, errlen, TG_EINVAL, "nats: url lists no server");
		goto fail;
	}
	b->secure |= o->tls;
	if ((*o->ca_file || *o->cert_file) && !b->secure) {
		tg_seterr(err, errlen, TG_EINVAL, "nats: ca_file/cert_file given but TLS is off (tls = true or tls:// URLs)");
		goto fail;
	}
	if ((!*o->cert_file) != (!*o->key_file)) {
		tg_seterr(err, errlen, TG_EINVAL, "nats: cert_file and key_file go together");
		goto fail;
	}
	limits->max_records = (size_t)o->max_records;
	limits->max_bytes = 8u << 20;
	limits->max_age_ms = 0;
	return b;
fail:
	nats_close(b);
	return NULL;
}

/* The batch is over: take back what is unanswered (it stays SINK_RETRY) and wait for
 * callbacks that already took their message, so none can touch the next batch. */
static void batch_end(sink *b)
{
	natsMsgList left = {0};
	if (js_PublishAsyncGetPendingList(&left, b->js) == NATS_OK)
		natsMsgList_Destroy(&left);
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = 2000;
	js_PublishAsyncComplete(b->js, &po);
	pthread_mutex_lock(&b->mu);
	b->results = NULL;
	b->recs = NULL;
	pthread_mutex_unlock(&b->mu);
}

/* Mark what cannot be published (see sink_nats_check) SINK_POISON, skipping what already
 * is; the first reason goes to why unless one is there. Returns how many it marked. */
static size_t screen(sink *b, const sink_record *recs, size_t n, sink_status *results, size_t max_payload,
		     const char *stream, char *why, size_t whylen)
{
	char scratch[256];
	size_t marked = 0;
	for (size_t i = 0; i < n; i++)
		if (results[i] != SINK_POISON &&
		    sink_nats_check(&recs[i], msgsink_name(&b->subjects, i), b->subjects.len[i], max_payload,
				    sink_nats_header_bytes(recs[i].msg_id, stream), why[0] ? scratch : why,
				    why[0] ? sizeof scratch : whylen) == SINK_POISON) {
			results[i] = SINK_POISON;
			marked++;
		}
	return marked;
}

static int nats_send(sink *b, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms, char *err,
		     size_t errlen)
{
	const nats_js_opts *o = b->o;
	const char *stream = *o->stream ? o->stream : NULL;
	char why[384] = "", poison_why[256] = "";
	size_t npoison = 0;
	int rc = 0;

	/* 1. screen (the server's own max_payload is checked once connected); the subjects are
	 * expanded outside mu: no callback runs between batches */
	if (msgsink_names_expand(&b->subjects, &b->subject, o->prefix, b->gateway_id, recs, n))
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		results[i] = SINK_RETRY;
	npoison = screen(b, recs, n, results, (size_t)o->max_payload, stream, poison_why, sizeof poison_why);
	if (npoison == n) {
		tg_seterr(err, errlen, TG_EPERM, "%s", poison_why);
		return 0;
	}

	/* 2. a connection */
	if (!b->nc || natsConnection_Status(b->nc) != NATS_CONN_STATUS_CONNECTED) {
		rc = nats_connect(b, why, sizeof why);
		if (rc) {
			msgsink_reason(err, errlen, rc, poison_why, "", why);
			return npoison ? 0 : rc;
		}
	}
	npoison += screen(b, recs, n, results, b->server_max, stream, poison_why, sizeof poison_why);

	/* 3. publish everything; libnats holds the window at max_inflight */
	pthread_mutex_lock(&b->mu);
	rc = map_reset(b, n);
	b->recs = recs;
	b->results = results;
	b->answered = npoison;
	b->dups = 0;
	b->ack_poison[0] = b->ack_retry[0] = '\0';
	pthread_mutex_unlock(&b->mu);
	if (rc)
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	for (size_t i = 0; i < n && !rc; i++) {
		if (results[i] == SINK_POISON)
			continue;
		natsMsg *m = NULL;
		natsStatus s = natsMsg_Create(&m, msgsink_name(&b->subjects, i), NULL, recs[i].data, (int)recs[i].len);
		if (s != NATS_OK) {
			rc = tg_seterr(why, sizeof why, TG_ENOMEM, "nats: message: %s", natsStatus_GetText(s));
			break;
		}
		const void *key = m;
		pthread_mutex_lock(&b->mu); /* in the map before it can be acknowledged */
		map_put(b, key, (int32_t)i);
		pthread_mutex_unlock(&b->mu);
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MsgId = recs[i].msg_id;
		po.ExpectStream = stream;
		s = js_PublishMsgAsync(b->js, &m, &po);
		if (s != NATS_OK) { /* not sent: m is still ours */
			pthread_mutex_lock(&b->mu);
			map_take(b, key);
			pthread_mutex_unlock(&b->mu);
			natsMsg_Destroy(m);
			const char *le = last_error(s);
			rc = tg_seterr(why, sizeof why, TG_ENET, "publish: %s%s%s", natsStatus_GetText(s), *le ? ": " : "", le);
		}
	}

	/* 4. the acknowledgements: wait while they keep coming */
	size_t seen = 0;
	int64_t last = tg_mono_ms();
	while (!rc) {
		pthread_mutex_lock(&b->mu);
		size_t answered = b->answered;
		pthread_mutex_unlock(&b->mu);
		if (answered == n)
			break;
		int64_t now = tg_mono_ms();
		if (answered != seen) {
			seen = answered;
			last = now;
		}
		if (natsConnection_Status(b->nc) != NATS_CONN_STATUS_CONNECTED) {
			rc = tg_seterr(why, sizeof why, TG_ENET, "connection to %s lost", o->url);
			break;
		}
		if (now - last >= o->ack_timeout_ms) {
			rc = tg_seterr(why, sizeof why, TG_ENET, "no JetStream acknowledgement for %" PRId64 " ms (%zu of %zu answered)",
				       o->ack_timeout_ms, answered, n);
			break;
		}
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = 100;
		js_PublishAsyncComplete(b->js, &po);
	}
	batch_end(b);
	size_t retry = 0, ok = 0;
	for (size_t i = 0; i < n; i++) {
		retry += results[i] == SINK_RETRY;
		ok += results[i] == SINK_OK;
	}
	if (b->dups) { /* the running total keeps consecutive lines apart (the log folds repeats) */
		b->dups_total += b->dups;
		LOG_INFO("nats", "msg=\"JetStream dropped re-sent records as duplicates (Nats-Msg-Id)\" duplicates=%" PRIu64
			 " total=%" PRIu64, b->dups, b->dups_total);
	}
	if (rc) {
		LOG_WARN("nats", "msg=\"dropping the connection\" url=%s acked=%zu of=%zu err=\"%s\"", o->url, ok, n, why);
		drop(b);
	}
	if (rc == TG_ENOMEM)
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	msgsink_reason(err, errlen, rc ? rc : retry ? TG_ERETRY : TG_EPERM, poison_why, b->ack_poison,
		       retry ? (why[0] ? why : b->ack_retry) : "");
	if (retry == n)
		return rc ? rc : TG_ERETRY;
	return 0;
}

const sink_ops sink_nats_ops = {
	.conf = {.type = "nats", .options = nats_options, .options_size = sizeof(nats_js_opts)},
	.open = nats_open,
	.send = nats_send,
	.close = nats_close,
};
