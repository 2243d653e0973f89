/*
 * shadow/shadow.c — see shadow.h.
 *
 * Held responses form one FIFO: entries [head, ready) may be published, [ready, n) belong to
 * the open group and wait for its end, which the outbox reports through its group-end hook
 * (committed: they become ready; rolled back: they are dropped). A response made while no
 * group is open (a get, a rejection) is ready at once; since waiting entries only exist while
 * a group is open, FIFO order is request order. Each request's last response carries its
 * in-flight count (a small chained table by thing), given back when it is published or
 * dropped.
 */
#include "shadow/shadow.h"

#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/jsonout.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "edge/schema.h"
#include "shadow/shadow_doc.h"
#include "shadow/shadow_store.h"

#define IDENTITY_PROPERTY "tidegate-thing" /* stamped by the broker plugin (docs/registry.md) */
#define FLIGHT_BUCKETS 1024
#define PURGE_EVERY_MS 60000
#define MAX_RESPONSES 3 /* a request makes at most accepted + delta + documents */

const int SHADOW_CODES[SHADOW_CODE__COUNT] = {400, 404, 409, 413, 415, 429, 500, 503};

/* Requests of one thing whose responses are held. */
typedef struct flight {
	struct flight *next;
	int64_t n;
	char thing[];
} flight;

typedef struct pending {
	char *topic;   /* owned; the payload follows it in the same allocation */
	char *payload;
	size_t len;
	int qos;
	flight *fl;    /* on a request's last response: its in-flight count */
} pending;

/* One response being made: the topic suffix and the document. */
typedef struct response {
	const char *suffix;
	json_t *doc;
} response;

struct shadow_svc {
	shadow_conf conf;
	outbox *ob;
	shadow_store *st;
	shadow_limits lim;
	pending *q;
	size_t head, ready, n, cap;
	flight *flights[FLIGHT_BUCKETS];
	int recount;            /* a group was rolled back: read the live count again */
	int64_t next_purge_ms;
	tg_buf text[MAX_RESPONSES]; /* one request's responses, serialised */
	shadow_stats stats;
};

/* ---- held responses ------------------------------------------------------------------ */

static flight **flight_slot(shadow_svc *s, const char *thing)
{
	uint64_t h = tg_hash_final(tg_hash_str(TG_HASH_SEED, thing));
	flight **p = &s->flights[h & (FLIGHT_BUCKETS - 1)];
	while (*p && strcmp((*p)->thing, thing) != 0)
		p = &(*p)->next;
	return p;
}

static flight *flight_get(shadow_svc *s, const char *thing)
{
	flight **p = flight_slot(s, thing);
	if (*p)
		return *p;
	size_t n = strlen(thing);
	flight *f = calloc(1, sizeof *f + n + 1);
	if (!f)
		return NULL;
	memcpy(f->thing, thing, n + 1);
	*p = f;
	return f;
}

/* Give one request back; the entry goes when the thing has none left. */
static void flight_done(shadow_svc *s, flight *f)
{
	if (!f || --f->n > 0)
		return;
	flight **p = flight_slot(s, f->thing);
	if (*p == f) {
		*p = f->next;
		free(f);
	}
}

static void pending_done(shadow_svc *s, pending *p)
{
	flight_done(s, p->fl);
	free(p->topic);
	p->topic = p->payload = NULL;
}

static void update_waiting(shadow_svc *s)
{
	atomic_store(&s->stats.waiting, (int64_t)(s->n - s->head));
}

static int on_group_end(void *ud, outbox_group_event ev, int64_t now_ms)
{
	shadow_svc *s = ud;
	if (ev == OUTBOX_GROUP_COMMITTING)
		return 0;
	if (ev == OUTBOX_GROUP_COMMITTED) {
		s->ready = s->n;
		return 0;
	}
	for (size_t i = s->ready; i < s->n; i++) {
		atomic_fetch_add(&s->stats.dropped, 1);
		pending_done(s, &s->q[i]);
	}
	s->n = s->ready;
	s->recount = 1;
	update_waiting(s);
	return 0;
}

/* /documents is the change feed (its durable copy is the "shadows" record); everything else
 * answers a request or tells a device what to change. */
static int qos_of(const shadow_svc *s, const char *suffix)
{
	return strcmp(suffix, "/documents") == 0 ? s->conf.documents_qos : s->conf.response_qos;
}

static int queue_push(shadow_svc *s, const char *topic, const char *suffix, const char *text, size_t len, flight *fl)
{
	if (s->head > 0 && s->n == s->cap) { /* reuse the published front before growing */
		memmove(s->q, s->q + s->head, (s->n - s->head) * sizeof *s->q);
		s->n -= s->head;
		s->ready -= s->head;
		s->head = 0;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		pending *q = realloc(s->q, cap * sizeof *q);
		if (!q)
			return TG_ENOMEM;
		s->q = q;
		s->cap = cap;
	}
	size_t tl = strlen(topic), sl = strlen(suffix);
	char *mem = malloc(tl + sl + 1 + len + 1);
	if (!mem)
		return TG_ENOMEM;
	memcpy(mem, topic, tl);
	memcpy(mem + tl, suffix, sl + 1);
	memcpy(mem + tl + sl + 1, text, len);
	mem[tl + sl + 1 + len] = '\0';
	s->q[s->n++] = (pending){.topic = mem, .payload = mem + tl + sl + 1, .len = len,
				     .qos = qos_of(s, suffix), .fl = fl};
	if (!outbox_in_txn(s->ob)) /* nothing of it waits for a commit */
		s->ready = s->n;
	update_waiting(s);
	return 0;
}

int shadow_waiting(const shadow_svc *s) { return s && s->n > s->ready; }

int shadow_release(shadow_svc *s)
{
	if (!s)
		return 0;
	int n = 0;
	while (s->head < s->ready) {
		pending *p = &s->q[s->head++];
		if (s->conf.publish(s->conf.ud, p->topic, p->payload, p->len, p->qos) == 0)
			atomic_fetch_add(&s->stats.published, 1);
		else
			atomic_fetch_add(&s->stats.publish_errors, 1);
		pending_done(s, p);
		n++;
	}
	if (s->head == s->n)
		s->head = s->ready = s->n = 0;
	update_waiting(s);
	return n;
}

/* ---- requests ------------------------------------------------------------------------ */

/* The thing the broker plugin stamped on the request, if any (service identities and the ACL
 * mode leave none). */
static void requested_by(const mosquitto_property *props, char *out, size_t outlen)
{
	out[0] = '\0';
	int first = 1; /* later searches start past the property the previous one found */
	for (const mosquitto_property *p = props; p && !out[0]; first = 0) {
		char *name = NULL, *value = NULL;
		p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, !first);
		if (p && name && value && strcmp(name, IDENTITY_PROPERTY) == 0)
			snprintf(out, outlen, "%s", value);
		free(name);
		free(value);
	}
}

/* Serialise the responses of one request into s->text[i] and run them through the rules
 * (a rule's actions join the same group). */
static int render(shadow_svc *s, const shadow_topic *t, const char *topic, const response *r, int nr, int64_t now_ms)
{
	for (int i = 0; i < nr; i++) {
		s->text[i].len = 0;
		int rc = jsonout_write(&s->text[i], r[i].doc);
		if (rc)
			return rc;
		if (!s->conf.rules || !t->thing[0])
			continue;
		char full[512];
		snprintf(full, sizeof full, "%s%s", topic, r[i].suffix);
		tg_msg m = {.topic = full, .thing = t->thing, .client_id = t->thing, .principal = t->thing,
			    .payload = s->text[i].p, .payloadlen = s->text[i].len, .json = r[i].doc,
			    .received_ms = now_ms, .qos = qos_of(s, r[i].suffix)};
		s->conf.rules(s->conf.ud, &m);
	}
	return 0;
}

static int count_rejection(shadow_svc *s, const shadow_error *e)
{
	atomic_fetch_add(&s->stats.rejected, 1);
	for (int i = 0; i < SHADOW_CODE__COUNT; i++)
		if (SHADOW_CODES[i] == e->code)
			atomic_fetch_add(&s->stats.rejected_by[i], 1);
	return 0;
}

/* The "shadows" record of an accepted change: the /documents form plus who and where. */
static int append_record(shadow_svc *s, const shadow_topic *t, const char *topic, const char *op, json_t *documents,
			 int64_t version, const char *by, int64_t now_ms)
{
	if (!s->conf.nsinks)
		return 0;
	char when[32];
	timefmt_format_rfc3339(now_ms, when, sizeof when);
	json_t *rec = json_pack("{s:s, s:s, s:s, s:I}", "thing", t->thing, "shadow", t->name, "operation", op, "version",
				(json_int_t)version);
	const char *keys[] = {"previous", "current", "timestamp", "clientToken"};
	for (size_t i = 0; rec && i < sizeof keys / sizeof keys[0]; i++) {
		json_t *v = json_object_get(documents, keys[i]);
		if (v && json_object_set(rec, keys[i], v)) {
			json_decref(rec);
			rec = NULL;
		}
	}
	if (!rec || json_object_set_new(rec, "topic", json_string(topic)) ||
	    json_object_set_new(rec, "received_at", json_string(when)) ||
	    (by[0] && json_object_set_new(rec, "requested_by", json_string(by)))) {
		json_decref(rec);
		return TG_ENOMEM;
	}
	int rc = outbox_append(s->ob, s->conf.sinks, s->conf.nsinks, OUTBOX_PRIO_BULK, "shadows", t->thing, now_ms, rec, NULL);
	json_decref(rec);
	if (rc == 0)
		atomic_fetch_add(&s->stats.records, 1);
	return rc;
}

/* A load that found no live shadow; tombstones past their time restart the counter. */
static int not_found(shadow_error *e, const shadow_topic *t)
{
	return shadow_fail(e, 404, "No shadow exists with name: '%s'", t->name[0] ? t->name : t->thing);
}

/* The record of a change could not be queued (full_policy reject_new): the change is
 * refused rather than made without its record. */
static int outbox_full(shadow_error *e)
{
	shadow_fail(e, 503, "Service unavailable: the outbox is full ([outbox] full_policy = reject_new)");
	return 1;
}

static int load(shadow_svc *s, const shadow_topic *t, int64_t now_ms, shadow_row *row, shadow_doc *doc, int *live,
		shadow_error *e)
{
	int rc = shadow_store_load(s->st, t->thing, t->name, row, doc);
	*live = rc == 0 && !row->deleted_ms;
	if (rc == 0 && row->deleted_ms && now_ms - row->deleted_ms >= s->conf.tombstone_ms)
		doc->version = 0;
	if (rc == TG_EPARSE) {
		LOG_ERROR("shadow", "msg=\"stored shadow cannot be read\" thing=%s shadow=%s", t->thing, t->name);
		shadow_fail(e, 500, "Internal service failure: the stored shadow cannot be read");
		return 1;
	}
	return rc == TG_ENOTFOUND ? 0 : rc;
}

/* Each op: 0 with the responses in r (accepted ones, or one rejection in *e with return 1),
 * or < 0 when the store or outbox failed. */
static int do_update(shadow_svc *s, const shadow_topic *t, const char *topic, const shadow_request *req,
		     const char *by, int64_t now_ms, response *r, int *nr, shadow_error *e)
{
	int64_t ts = now_ms / 1000;
	shadow_row row;
	shadow_doc doc = {0}, prev = {0};
	int live, rc = outbox_join(s->ob, now_ms);
	if (rc || (rc = load(s, t, now_ms, &row, &doc, &live, e)))
		goto out;
	if (shadow_check_version(req, doc.version, e)) {
		rc = 1;
		goto out;
	}
	if (!live && atomic_load(&s->stats.live) >= s->conf.max_shadows) {
		shadow_fail(e, 503, "Service unavailable: the gateway stores at most %" PRId64 " shadows ([shadow] max_shadows)",
			    s->conf.max_shadows);
		LOG_WARN("shadow", "msg=\"shadow limit reached, new shadow refused\" thing=%s shadow=%s max_shadows=%" PRId64,
			 t->thing, t->name, s->conf.max_shadows);
		rc = 1;
		goto out;
	}
	if ((live && (rc = shadow_doc_copy(&prev, &doc))) || (rc = shadow_doc_apply(&doc, req, ts, &s->lim, e)))
		goto out;
	json_t *delta = req->desired && json_is_object(req->desired) ? shadow_delta(doc.state) : NULL;
	r[0] = (response){"/accepted", shadow_resp_accepted(req, doc.version, ts)};
	r[1] = (response){"/documents", shadow_resp_documents(live ? &prev : NULL, &doc, ts, req->client_token)};
	*nr = 2;
	if (delta) { /* before /documents, so a subscriber that sees /documents has seen any /delta */
		r[2] = r[1];
		r[1] = (response){"/delta", shadow_resp_delta(&doc, delta, ts, req->client_token)};
		*nr = 3;
		atomic_fetch_add(&s->stats.deltas, 1);
	}
	json_decref(delta);
	for (int i = 0; i < *nr; i++)
		if (!r[i].doc)
			rc = TG_ENOMEM;
	if (rc || (rc = append_record(s, t, topic, "update", r[*nr - 1].doc, doc.version, by, now_ms)))
		goto full;
	if ((rc = shadow_store_put(s->st, t->thing, t->name, &doc, now_ms))) {
		LOG_ERROR("shadow", "msg=\"shadow write failed, group rolled back\" thing=%s shadow=%s", t->thing, t->name);
		outbox_abort(s->ob);
		goto out;
	}
	if (!live)
		atomic_fetch_add(&s->stats.live, 1);
	goto out;
full:
	if (rc == TG_EFULL)
		rc = outbox_full(e);
out:
	shadow_doc_free(&doc);
	shadow_doc_free(&prev);
	return rc;
}

static int do_get(shadow_svc *s, const shadow_topic *t, const shadow_request *req, int64_t now_ms, response *r,
		  int *nr, shadow_error *e)
{
	shadow_row row;
	shadow_doc doc = {0};
	int live, rc = load(s, t, now_ms, &row, &doc, &live, e);
	if (rc == 0 && !live) {
		not_found(e, t);
		rc = 1;
	}
	if (rc == 0) {
		r[0] = (response){"/accepted", shadow_resp_get(&doc, now_ms / 1000, req->client_token)};
		*nr = 1;
		rc = r[0].doc ? 0 : TG_ENOMEM;
	}
	shadow_doc_free(&doc);
	return rc;
}

static int do_delete(shadow_svc *s, const shadow_topic *t, const char *topic, const shadow_request *req,
		     const char *by, int64_t now_ms, response *r, int *nr, shadow_error *e)
{
	int64_t ts = now_ms / 1000;
	shadow_row row;
	shadow_doc doc = {0};
	int live, rc = outbox_join(s->ob, now_ms);
	if (rc || (rc = load(s, t, now_ms, &row, &doc, &live, e)))
		goto out;
	if (!live || shadow_check_version(req, doc.version, e)) {
		if (!live)
			not_found(e, t);
		rc = 1;
		goto out;
	}
	json_t *snap = shadow_doc_snapshot(&doc);
	json_t *docs = snap ? json_pack("{s:O, s:I}", "previous", snap, "timestamp", (json_int_t)ts) : NULL;
	json_decref(snap);
	if (docs && req->client_token && json_object_set_new(docs, "clientToken", json_string(req->client_token))) {
		json_decref(docs);
		docs = NULL;
	}
	rc = docs ? append_record(s, t, topic, "delete", docs, doc.version, by, now_ms) : TG_ENOMEM;
	json_decref(docs);
	if (rc == TG_EFULL)
		rc = outbox_full(e);
	if (rc)
		goto out;
	if ((rc = shadow_store_delete(s->st, t->thing, t->name, now_ms))) {
		LOG_ERROR("shadow", "msg=\"shadow delete failed, group rolled back\" thing=%s shadow=%s", t->thing, t->name);
		outbox_abort(s->ob);
		goto out;
	}
	atomic_fetch_sub(&s->stats.live, 1);
	r[0] = (response){"/accepted", shadow_resp_deleted(doc.version, ts, req->client_token)};
	*nr = 1;
	rc = r[0].doc ? 0 : TG_ENOMEM;
out:
	shadow_doc_free(&doc);
	return rc;
}

int shadow_topic_is_ours(const char *topic) { return strncmp(topic, "$aws/things/", 12) == 0; }

static void recount(shadow_svc *s)
{
	int64_t n = shadow_store_count(s->st);
	if (n >= 0) {
		atomic_store(&s->stats.live, n);
		s->recount = 0;
	}
}

int shadow_handle(shadow_svc *s, const char *topic, const void *payload, size_t len,
		  const struct mqtt5__property *props, int64_t now_ms)
{
	shadow_topic t;
	shadow_error e = {0}, perr = {0};
	int pr = shadow_topic_parse(topic, &t, &e);
	if (pr == 0)
		return 0; /* a response topic or another $aws topic: not a request */
	atomic_fetch_add(&s->stats.requests, 1);
	if (s->recount)
		recount(s);
	uint64_t aborted = atomic_load(&outbox_counters_of(s->ob)->aborted);
	shadow_request req;
	int prc = shadow_request_parse(t.op, payload, len, &s->lim, &req, &perr);
	if (pr > 0 && prc < 0)
		e = perr;
	response r[MAX_RESPONSES] = {{0}};
	int nr = 0, rc = pr < 0 || prc < 0 ? 1 : 0;
	flight *fl = NULL;
	if (rc == 0) {
		if (!(fl = flight_get(s, t.thing))) {
			rc = TG_ENOMEM;
			goto out;
		}
		if (fl->n >= s->conf.max_inflight) { /* the entry has requests: it stays */
			shadow_fail(&e, 429, "Too many requests: %" PRId64 " requests of %s are in flight, the limit is %" PRId64,
				    fl->n, t.thing, s->conf.max_inflight);
			fl = NULL; /* a 429 is not counted in flight */
			rc = 1;
		}
	}
	if (rc == 0) {
		char by[SHADOW_MAX_THING + 1];
		requested_by(props, by, sizeof by);
		fl->n++;
		switch (t.op) {
		case SHADOW_UPDATE: rc = do_update(s, &t, topic, &req, by, now_ms, r, &nr, &e); break;
		case SHADOW_GET: rc = do_get(s, &t, &req, now_ms, r, &nr, &e); break;
		case SHADOW_DELETE: rc = do_delete(s, &t, topic, &req, by, now_ms, r, &nr, &e); break;
		}
	}
	if (rc == 1) { /* rejected: one error document instead of whatever was made */
		for (int i = 0; i < nr; i++)
			json_decref(r[i].doc);
		count_rejection(s, &e);
		LOG_DEBUG("shadow", "msg=rejected topic=%s code=%d message=\"%s\"", topic, e.code, e.message);
		r[0] = (response){"/rejected", shadow_resp_error(&e, now_ms / 1000, req.client_token)};
		nr = 1;
		rc = r[0].doc ? 0 : TG_ENOMEM;
	}
	if (rc == 0)
		rc = render(s, &t, topic, r, nr, now_ms);
	/* the group this request wrote in was rolled back under it (an outbox append of its own
	 * or of a rule action failed): nothing of it may be answered */
	if (rc == 0 && atomic_load(&outbox_counters_of(s->ob)->aborted) != aborted)
		rc = TG_EDB;
	for (int i = 0; rc == 0 && i < nr; i++) {
		rc = queue_push(s, topic, r[i].suffix, s->text[i].p, s->text[i].len, i == nr - 1 ? fl : NULL);
		if (rc == 0 && i == nr - 1)
			fl = NULL; /* the queue gives it back */
	}
	if (rc == 0 && r[0].suffix[1] == 'a')
		atomic_fetch_add(&s->stats.accepted, 1);
out:
	if (fl)
		flight_done(s, fl);
	for (int i = 0; i < nr; i++)
		json_decref(r[i].doc);
	shadow_request_free(&req);
	return rc;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

shadow_svc *shadow_new(const shadow_conf *conf, outbox *ob, char *err, size_t errlen)
{
	shadow_svc *s = calloc(1, sizeof *s);
	if (!s) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	s->conf = *conf;
	s->ob = ob;
	s->lim = (shadow_limits){.max_payload_bytes = (size_t)conf->max_payload_bytes,
				 .max_state_bytes = (size_t)conf->max_state_bytes};
	if (!(s->st = shadow_store_attach(outbox_writer_db(ob), err, errlen))) {
		free(s);
		return NULL;
	}
	recount(s);
	if (s->recount) {
		tg_seterr(err, errlen, TG_EDB, "shadow store: cannot count the shadows");
		shadow_store_close(s->st);
		free(s);
		return NULL;
	}
	if (outbox_add_group_hook(ob, on_group_end, s)) {
		tg_seterr(err, errlen, TG_EFULL, "shadow service: no room for its outbox group hook");
		shadow_store_close(s->st);
		free(s);
		return NULL;
	}
	return s;
}

void shadow_free(shadow_svc *s)
{
	if (!s)
		return;
	outbox_remove_group_hook(s->ob, on_group_end, s);
	for (size_t i = s->head; i < s->n; i++)
		pending_done(s, &s->q[i]);
	free(s->q);
	for (size_t b = 0; b < FLIGHT_BUCKETS; b++)
		for (flight *f = s->flights[b], *next; f; f = next) {
			next = f->next;
			free(f);
		}
	shadow_store_close(s->st);
	for (int i = 0; i < MAX_RESPONSES; i++)
		tg_buf_free(&s->text[i]);
	free(s);
}

void shadow_tick(shadow_svc *s, int64_t now_ms)
{
	if (!s || now_ms < s->next_purge_ms)
		return;
	s->next_purge_ms = now_ms + PURGE_EVERY_MS;
	int64_t before = now_ms - s->conf.tombstone_ms;
	if (shadow_store_has_expired(s->st, before) != 1 || outbox_join(s->ob, now_ms))
		return;
	int n = shadow_store_purge(s->st, before);
	if (n < 0) {
		LOG_WARN("shadow", "msg=\"removing old tombstones failed, group rolled back\"");
		outbox_abort(s->ob);
	} else if (n > 0) {
		LOG_INFO("shadow", "msg=\"removed deleted shadows' version counters\" count=%d", n);
	}
}

const shadow_stats *shadow_stats_of(const shadow_svc *s) { return &s->stats; }
