/*
 * fuzz_shadow_doc.c — fuzz target for the Device Shadow update-document parser and the merge
 * behind it (gateway/shadow/shadow_doc.c). The first input byte picks the operation (update,
 * get, delete; bit 2 set: also run the rest through the topic parser); the rest is the
 * request payload. An accepted update is merged into an empty shadow and into a populated
 * one, and the invariants checked (abort() on failure) are: no crash, no leak; a rejection
 * has a code AWS lists and a message; an accepted update bumps the version by one, leaves no
 * null and no empty object in the state, keeps the metadata exactly the state's shape, stays
 * under the state cap, is idempotent (merging it again changes nothing), and survives the
 * store's text round trip; the delta names only desired fields; every response renders.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/jsonout.h"
#include "shadow/shadow_doc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const shadow_limits LIM = {.max_payload_bytes = 65536, .max_state_bytes = 8192};

static const char BASE_STATE[] =
	"{\"desired\":{\"color\":\"red\",\"fan\":{\"speed\":2,\"mode\":\"auto\"},\"list\":[1,2,3]},"
	"\"reported\":{\"color\":\"blue\",\"fan\":{\"speed\":1},\"uptime\":12345}}";
static const char BASE_META[] =
	"{\"desired\":{\"color\":{\"timestamp\":1},\"fan\":{\"speed\":{\"timestamp\":1},\"mode\":{\"timestamp\":1}},"
	"\"list\":[{\"timestamp\":1},{\"timestamp\":1},{\"timestamp\":1}]},"
	"\"reported\":{\"color\":{\"timestamp\":1},\"fan\":{\"speed\":{\"timestamp\":1}},\"uptime\":{\"timestamp\":1}}}";

/* A value of the state: no null anywhere, no empty object. */
static void check_state_value(const json_t *v)
{
	if (json_is_null(v))
		abort();
	if (json_is_object(v)) {
		if (json_object_size(v) == 0)
			abort();
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)v, k, x)
			check_state_value(x);
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++)
			if (json_is_null(json_array_get(v, i)))
				abort();
	}
}

/* Metadata mirrors the state: objects key by key, arrays element by element, leaves a
 * {"timestamp": integer}. */
static void check_meta(const json_t *v, const json_t *m)
{
	if (json_is_object(v)) {
		if (!json_is_object(m) || json_object_size(m) != json_object_size(v))
			abort();
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)v, k, x)
			check_meta(x, json_object_get(m, k));
	} else if (json_is_array(v)) {
		if (!json_is_array(m) || json_array_size(m) != json_array_size(v))
			abort();
		for (size_t i = 0; i < json_array_size(v); i++)
			check_meta(json_array_get(v, i), json_array_get(m, i));
	} else if (!json_is_object(m) || !json_is_integer(json_object_get(m, "timestamp"))) {
		abort();
	}
}

static void render(json_t *doc)
{
	if (!doc)
		abort();
	tg_buf b = {0};
	if (jsonout_write(&b, doc))
		abort();
	tg_buf_free(&b);
	json_decref(doc);
}

static void check_doc(const shadow_doc *d)
{
	const char *k;
	json_t *x;
	json_object_foreach(d->state, k, x) {
		if (strcmp(k, "desired") != 0 && strcmp(k, "reported") != 0)
			abort();
		check_state_value(x);
	}
	check_meta(d->state, d->metadata);
	json_t *delta = shadow_delta(d->state);
	if (delta) {
		const json_t *des = json_object_get(d->state, "desired");
		json_object_foreach(delta, k, x)
			if (!json_object_get(des, k))
				abort();
		render(shadow_resp_delta(d, delta, 7, "tok"));
	}
	json_decref(delta);
	render(shadow_resp_get(d, 7, NULL));
}

static void update_into(shadow_doc *d, const shadow_request *req)
{
	shadow_error e;
	int64_t before = d->version;
	shadow_doc prev;
	if (shadow_doc_copy(&prev, d))
		abort();
	int rc = shadow_doc_apply(d, req, 5, &LIM, &e);
	if (rc == 1) {
		if (e.code != 413 || !e.message[0])
			abort();
		shadow_doc_free(&prev);
		return;
	}
	if (rc != 0 || d->version != before + 1 || shadow_state_bytes(d->state) > LIM.max_state_bytes)
		abort();
	check_doc(d);
	/* idempotent: the same update again changes neither state nor metadata */
	shadow_doc again;
	if (shadow_doc_copy(&again, d) || shadow_doc_apply(&again, req, 5, &LIM, &e) != 0)
		abort();
	if (!json_equal(again.state, d->state) || !json_equal(again.metadata, d->metadata))
		abort();
	shadow_doc_free(&again);
	/* the store's text round trip */
	tg_buf st = {0}, me = {0};
	if (jsonout_write(&st, d->state) || jsonout_write(&me, d->metadata))
		abort();
	shadow_doc back;
	if (shadow_doc_load(&back, st.p, st.len, me.p, me.len, d->version) != 0)
		abort();
	if (!json_equal(back.state, d->state) || !json_equal(back.metadata, d->metadata))
		abort();
	shadow_doc_free(&back);
	tg_buf_free(&st);
	tg_buf_free(&me);
	render(shadow_resp_accepted(req, d->version, 5));
	render(shadow_resp_documents(prev.version ? &prev : NULL, d, 5, req->client_token));
	shadow_doc_free(&prev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	shadow_op op = (shadow_op)(data[0] % 3);
	const char *payload = (const char *)data + 1;
	size_t len = size - 1;
	if (data[0] & 4) { /* the bytes as a topic too */
		char *topic = malloc(len + 1);
		if (!topic)
			return 0;
		memcpy(topic, payload, len);
		topic[len] = '\0';
		shadow_topic t;
		shadow_error e;
		int rc = shadow_topic_parse(topic, &t, &e);
		if (rc < -1 || rc > 1 || (rc == -1 && e.code != 400) || (rc == 1 && (!t.thing[0] || t.len != strlen(topic))))
			abort();
		free(topic);
	}
	shadow_request req;
	shadow_error e = {0};
	if (shadow_request_parse(op, payload, len, &LIM, &req, &e) != 0) {
		if ((e.code != 400 && e.code != 413 && e.code != 415) || !e.message[0])
			abort();
		render(shadow_resp_error(&e, 5, req.client_token));
		shadow_request_free(&req);
		return 0;
	}
	if (req.client_token && strlen(req.client_token) > SHADOW_MAX_TOKEN)
		abort();
	if (op == SHADOW_UPDATE) {
		shadow_doc empty, full;
		if (shadow_doc_init(&empty) ||
		    shadow_doc_load(&full, BASE_STATE, strlen(BASE_STATE), BASE_META, strlen(BASE_META), 9))
			abort();
		update_into(&empty, &req);
		update_into(&full, &req);
		shadow_doc_free(&empty);
		shadow_doc_free(&full);
	}
	shadow_request_free(&req);
	return 0;
}
