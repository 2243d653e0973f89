/*
 * sim_shadow.c — see sim_shadow.h. One thread drives every connection: a poll() over all
 * sockets, then libmosquitto's loop functions for each; the callbacks only record what
 * arrived, and the loop publishes the reports when their delay is over. Demo scale (tens to
 * hundreds of things), so clarity wins over the load mode's batching.
 */
#include "sim_shadow.h"

#include <inttypes.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/log.h"

#define SUB "sim-shadow"

struct counters {
	uint64_t gets, created, deltas, reports, accepted, rejected, reconnects;
};

struct sthing {
	char name[64];
	char topic[7][192]; /* T_* below */
	struct mosquitto *m;
	json_t *state;   /* the device itself: what it reports */
	json_t *pending; /* delta fields it has not applied yet */
	int64_t due_ms;
	int connected, ready;
	int64_t retry_ms;
	uint64_t seq, rng;
	const struct sim_opts *o;
	struct counters *k;
};

enum { T_UPDATE, T_GET, T_DELTA, T_UACC, T_UREJ, T_GACC, T_GREJ, T__COUNT };

static uint64_t next_rand(struct sthing *t)
{
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return t->rng;
}

/* Deep merge of src into dst: objects member by member, anything else replaces. */
static int merge_into(json_t *dst, const json_t *src)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)src, k, v) {
		json_t *cur = json_object_get(dst, k);
		if (json_is_object(v) && json_is_object(cur)) {
			if (merge_into(cur, v))
				return TG_ENOMEM;
		} else if (json_object_set_new(dst, k, json_deep_copy(v))) {
			return TG_ENOMEM;
		}
	}
	return 0;
}

static void publish(struct sthing *t, int which, json_t *body)
{
	char tok[96];
	snprintf(tok, sizeof tok, "%s-%" PRIu64, t->name, ++t->seq);
	json_object_set_new(body, "clientToken", json_string(tok));
	char *text = json_dumps(body, JSON_COMPACT);
	if (text && mosquitto_publish_v5(t->m, NULL, t->topic[which], (int)strlen(text), text, 1, false, NULL) ==
			    MOSQ_ERR_SUCCESS) {
		if (which == T_UPDATE)
			t->k->reports++;
		else
			t->k->gets++;
	}
	free(text);
	json_decref(body);
}

static void report(struct sthing *t, const json_t *fields)
{
	publish(t, T_UPDATE, json_pack("{s:{s:O}}", "state", "reported", fields));
}

/* A delta to apply after the thing's delay (later deltas join the one waiting). */
static void schedule(struct sthing *t, const json_t *delta)
{
	if (!json_is_object(delta) || json_object_size(delta) == 0)
		return;
	if (!t->pending) {
		t->pending = json_object();
		const struct sim_opts *o = t->o;
		int span = o->apply_max_ms - o->apply_min_ms;
		t->due_ms = tg_mono_ms() + o->apply_min_ms + (span > 0 ? (int)(next_rand(t) % (uint64_t)(span + 1)) : 0);
	}
	if (t->pending)
		merge_into(t->pending, delta);
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
	struct sthing *t = ud;
	if (rc != 0) {
		LOG_ERROR(SUB, "msg=\"connection refused\" thing=%s reason=\"%s\"", t->name, mosquitto_reason_string(rc));
		return;
	}
	t->connected = 1;
	char *subs[5] = {t->topic[T_DELTA], t->topic[T_UACC], t->topic[T_UREJ], t->topic[T_GACC], t->topic[T_GREJ]};
	mosquitto_subscribe_multiple(m, NULL, 5, subs, 1, 0, NULL);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
			 const mosquitto_property *props)
{
	struct sthing *t = ud;
	for (int i = 0; i < n; i++)
		if (granted[i] >= 0x80)
			LOG_ERROR(SUB, "msg=\"subscription refused\" thing=%s reason=%d", t->name, granted[i]);
	t->ready = 1;
	publish(t, T_GET, json_object()); /* what does the shadow say? (after a reconnect too) */
}

/* An answer to one of this thing's own requests (their clientTokens are "<thing>-<n>"). */
static int own(const struct sthing *t, const json_t *doc)
{
	const char *tok = json_string_value(json_object_get(doc, "clientToken"));
	size_t n = strlen(t->name);
	return tok && strncmp(tok, t->name, n) == 0 && tok[n] == '-';
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	struct sthing *t = ud;
	json_t *doc = json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return;
	}
	json_t *state = json_object_get(doc, "state");
	if (strcmp(msg->topic, t->topic[T_DELTA]) == 0) {
		t->k->deltas++;
		schedule(t, state);
	} else if (!own(t, doc)) {
		/* an answer to somebody else's request about this shadow (an app's) */
	} else if (strcmp(msg->topic, t->topic[T_GACC]) == 0) {
		/* the thing resumes what it last reported, then catches up with desired */
		json_t *rep = json_object_get(state, "reported");
		if (json_is_object(rep)) {
			json_decref(t->state);
			t->state = json_deep_copy(rep);
		}
		schedule(t, json_object_get(state, "delta"));
	} else if (strcmp(msg->topic, t->topic[T_GREJ]) == 0) {
		if (json_integer_value(json_object_get(doc, "code")) == 404) { /* no shadow yet: create it */
			t->k->created++;
			report(t, t->state);
		}
	} else if (strcmp(msg->topic, t->topic[T_UACC]) == 0) {
		t->k->accepted++;
	} else if (strcmp(msg->topic, t->topic[T_UREJ]) == 0) {
		t->k->rejected++;
		LOG_WARN(SUB, "msg=\"update rejected\" thing=%s code=%lld message=\"%s\"", t->name,
			 (long long)json_integer_value(json_object_get(doc, "code")),
			 json_string_value(json_object_get(doc, "message")) ? json_string_value(json_object_get(doc, "message")) : "");
	}
	json_decref(doc);
}

static int thing_init(struct sthing *t, const struct sim_opts *o, int i, struct counters *k)
{
	memset(t, 0, sizeof *t);
	t->o = o;
	t->k = k;
	sim_opts_thing_name(o, i, t->name, sizeof t->name);
	t->rng = tg_hash_final(tg_hash_str(o->seed ^ TG_HASH_SEED, t->name)) | 1;
	char prefix[160];
	if (o->shadow_name)
		snprintf(prefix, sizeof prefix, "$aws/things/%s/shadow/name/%s", t->name, o->shadow_name);
	else
		snprintf(prefix, sizeof prefix, "$aws/things/%s/shadow", t->name);
	static const char *const suffix[T__COUNT] = {"/update",	   "/get",	   "/update/delta", "/update/accepted",
						     "/update/rejected", "/get/accepted", "/get/rejected"};
	for (int s = 0; s < T__COUNT; s++)
		snprintf(t->topic[s], sizeof t->topic[s], "%s%s", prefix, suffix[s]);
	t->state = json_pack("{s:s, s:i, s:s}", "led", "off", "interval", 60, "firmware", "1.0.0");
	char cert[4096], key[4096];
	snprintf(cert, sizeof cert, "%s/%s.crt", o->certs_dir, t->name);
	snprintf(key, sizeof key, "%s/%s.key", o->certs_dir, t->name);
	if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
		LOG_ERROR(SUB, "msg=\"cannot read cert or key\" thing=%s cert=%s", t->name, cert);
		return TG_EIO;
	}
	if (!t->state || !(t->m = mosquitto_new(t->name, true, t)))
		return TG_ENOMEM;
	mosquitto_int_option(t->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	if (mosquitto_tls_set(t->m, o->cafile, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS ||
	    mosquitto_tls_opts_set(t->m, 1, "tlsv1.2", NULL) != MOSQ_ERR_SUCCESS) {
		LOG_ERROR(SUB, "msg=\"TLS setup failed\" thing=%s", t->name);
		return TG_EINVAL;
	}
	mosquitto_connect_v5_callback_set(t->m, on_connect);
	mosquitto_subscribe_v5_callback_set(t->m, on_subscribe);
	mosquitto_message_v5_callback_set(t->m, on_message);
	return 0;
}

static int write_summary(const struct sim_opts *o, const struct counters *k, int pending, double elapsed)
{
	json_t *s = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:f}", "mode", "shadow", "things",
			      o->things, "gets", (json_int_t)k->gets, "created", (json_int_t)k->created, "deltas",
			      (json_int_t)k->deltas, "reports", (json_int_t)k->reports, "accepted", (json_int_t)k->accepted,
			      "rejected", (json_int_t)k->rejected, "reconnects", (json_int_t)k->reconnects,
			      "pending_at_exit", pending, "elapsed_s", elapsed);
	int rc = s && json_dump_file(s, o->summary_json, JSON_INDENT(1) | JSON_SORT_KEYS) == 0 ? 0 : TG_EIO;
	json_decref(s);
	return rc;
}

int sim_shadow_run(const struct sim_opts *o, atomic_int *stop)
{
	struct counters k = {0};
	struct sthing *things = calloc((size_t)o->things, sizeof *things);
	struct pollfd *pfd = calloc((size_t)o->things, sizeof *pfd);
	int code = 1, pending = 0;
	int64_t start = tg_mono_ms(), end = o->duration_s > 0 ? start + (int64_t)(o->duration_s * 1000) : INT64_MAX;
	if (!things || !pfd)
		goto out;
	for (int i = 0; i < o->things; i++)
		if (thing_init(&things[i], o, i, &k))
			goto out;
	for (int i = 0; i < o->things; i++) {
		struct sthing *t = &things[i];
		if (mosquitto_connect_bind_v5(t->m, o->host, o->port, 60, NULL, NULL) != MOSQ_ERR_SUCCESS) {
			LOG_ERROR(SUB, "msg=\"connect failed\" thing=%s host=%s port=%d", t->name, o->host, o->port);
			code = 3;
			goto out;
		}
	}
	LOG_INFO(SUB, "msg=\"things connected\" things=%d shadow=%s", o->things, o->shadow_name ? o->shadow_name : "(classic)");
	while (!atomic_load(stop) && tg_mono_ms() < end) {
		for (int i = 0; i < o->things; i++) {
			int fd = mosquitto_socket(things[i].m);
			pfd[i] = (struct pollfd){.fd = fd, .events = (short)(POLLIN | (mosquitto_want_write(things[i].m) ? POLLOUT : 0))};
		}
		poll(pfd, (nfds_t)o->things, 20);
		int64_t now = tg_mono_ms();
		for (int i = 0; i < o->things; i++) {
			struct sthing *t = &things[i];
			if (pfd[i].fd < 0 || mosquitto_loop(t->m, 0, 1) != MOSQ_ERR_SUCCESS) {
				t->connected = t->ready = 0;
				if (now >= t->retry_ms) { /* the broker restarted or dropped us: come back */
					t->retry_ms = now + 1000;
					k.reconnects++;
					mosquitto_reconnect(t->m);
				}
				continue;
			}
			if (t->ready && t->pending && now >= t->due_ms) {
				merge_into(t->state, t->pending);
				report(t, t->pending);
				json_decref(t->pending);
				t->pending = NULL;
			}
		}
	}
	code = 0;
out:
	for (int i = 0; things && i < o->things; i++) {
		struct sthing *t = &things[i];
		pending += t->pending != NULL;
		if (t->m) {
			mosquitto_disconnect_v5(t->m, MQTT_RC_NORMAL_DISCONNECTION, NULL);
			mosquitto_loop(t->m, 50, 1);
			mosquitto_destroy(t->m);
		}
		json_decref(t->state);
		json_decref(t->pending);
	}
	double elapsed = (double)(tg_mono_ms() - start) / 1000.0;
	printf("device_sim: shadow mode things=%d gets=%" PRIu64 " created=%" PRIu64 " deltas=%" PRIu64
	       " reports=%" PRIu64 " accepted=%" PRIu64 " rejected=%" PRIu64 " pending=%d elapsed=%.3f\n",
	       o->things, k.gets, k.created, k.deltas, k.reports, k.accepted, k.rejected, pending, elapsed);
	fflush(stdout);
	if (o->summary_json && write_summary(o, &k, pending, elapsed) < 0) {
		fprintf(stderr, "device_sim: cannot write %s\n", o->summary_json);
		code = 1;
	}
	free(things);
	free(pfd);
	return code;
}
