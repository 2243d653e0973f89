/*
 * shadow/shadow_doc.c — see shadow_doc.h.
 *
 * The request document is parsed by schema.c's payload reader (size, UTF-8, depth guard,
 * duplicate keys), whose reasons map onto AWS's codes (415 for encoding, 413 for size, 400
 * for the rest). Values from the request are shared into the stored document by reference
 * rather than copied: only objects are ever modified in place (a merge descends into
 * objects, never into arrays or scalars), and objects are always created fresh by the merge,
 * so nothing the request still holds is mutated. Metadata leaves written by one update share
 * one {"timestamp": s} object for the same reason.
 */
#include "shadow/shadow_doc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/jsonout.h"
#include "edge/schema.h"

#define TOPIC_PREFIX "$aws/things/"
/* The parse-time nesting guard for the whole document (root, state, section and the six
 * levels inside it fit far below); AWS's own limit is checked per section. */
#define PARSE_MAX_DEPTH 64

/* Replace every byte that does not belong to a well-formed UTF-8 sequence with '?': a
 * message quotes input (a name, the JSON parser's "near '…'") and may cut a character in
 * two, and a JSON string must be valid UTF-8 or the rejection could not be written. */
static void utf8_sanitize(char *s)
{
	unsigned char *p = (unsigned char *)s;
	while (*p) {
		int n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 && *p >= 0xc2 ? 2 : (*p & 0xf0) == 0xe0 ? 3
			: (*p & 0xf8) == 0xf0 && *p <= 0xf4 ? 4 : 0;
		int ok = n > 0;
		for (int i = 1; ok && i < n; i++)
			ok = (p[i] & 0xc0) == 0x80;
		if (ok && n == 3) /* no overlong forms, no surrogates */
			ok = !(p[0] == 0xe0 && p[1] < 0xa0) && !(p[0] == 0xed && p[1] >= 0xa0);
		if (ok && n == 4)
			ok = !(p[0] == 0xf0 && p[1] < 0x90) && !(p[0] == 0xf4 && p[1] >= 0x90);
		if (!ok) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

int shadow_fail(shadow_error *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		e->code = code;
		vsnprintf(e->message, sizeof e->message, fmt, ap);
		va_end(ap);
		utf8_sanitize(e->message);
	}
	return -1;
}

/* ---- topics -------------------------------------------------------------------------- */

/* IoT Core's character set for thing and shadow names. */
static int name_ok(const char *s, size_t n, size_t max)
{
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      c == ':'))
			return 0;
	}
	return 1;
}

int shadow_topic_parse(const char *topic, shadow_topic *t, shadow_error *err)
{
	static const size_t plen = sizeof TOPIC_PREFIX - 1;
	memset(t, 0, sizeof *t);
	if (strncmp(topic, TOPIC_PREFIX, plen) != 0)
		return 0;
	const char *thing = topic + plen, *slash = strchr(thing, '/');
	if (!slash || strncmp(slash + 1, "shadow/", 7) != 0)
		return 0;
	size_t thing_n = (size_t)(slash - thing);
	const char *rest = slash + 8, *name = NULL;
	size_t name_n = 0;
	if (strncmp(rest, "name/", 5) == 0) {
		name = rest + 5;
		const char *end = strchr(name, '/');
		if (!end)
			return 0;
		name_n = (size_t)(end - name);
		rest = end + 1;
	}
	if (strcmp(rest, "update") == 0)
		t->op = SHADOW_UPDATE;
	else if (strcmp(rest, "get") == 0)
		t->op = SHADOW_GET;
	else if (strcmp(rest, "delete") == 0)
		t->op = SHADOW_DELETE;
	else
		return 0;
	t->len = strlen(topic);
	if (!name_ok(thing, thing_n, SHADOW_MAX_THING))
		return shadow_fail(err, 400, "Invalid thing name: 1 to %d characters of A-Z a-z 0-9 _ - : (got \"%.*s\")",
				   SHADOW_MAX_THING, (int)(thing_n > 140 ? 140 : thing_n), thing);
	if (name && !name_ok(name, name_n, SHADOW_MAX_NAME))
		return shadow_fail(err, 400, "Invalid shadow name: 1 to %d characters of A-Z a-z 0-9 _ - : (got \"%.*s\")",
				   SHADOW_MAX_NAME, (int)(name_n > 80 ? 80 : name_n), name);
	memcpy(t->thing, thing, thing_n);
	if (name)
		memcpy(t->name, name, name_n);
	return 1;
}

/* ---- requests ------------------------------------------------------------------------ */

/* AWS's per-section rules: at most SHADOW_MAX_DEPTH levels, no null inside an array. path
 * names the value for the message ("state.desired.a.b"). depth: the level of v's members. */
static int check_section(const json_t *v, int depth, int in_array, char *path, size_t plen, size_t cap,
			 shadow_error *err)
{
	if (json_is_null(v) && in_array)
		return shadow_fail(err, 400, "State contains an invalid node: null inside an array at %s", path);
	if (!json_is_object(v) && !json_is_array(v))
		return 0;
	if (depth > SHADOW_MAX_DEPTH)
		return shadow_fail(err, 400, "JSON contains too many levels of nesting; maximum is %d: %s", SHADOW_MAX_DEPTH,
				   path);
	if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)v, k, x) {
			int n = snprintf(path + plen, cap - plen, ".%s", k);
			size_t np = n > 0 && (size_t)n < cap - plen ? plen + (size_t)n : plen;
			if (check_section(x, depth + 1, in_array, path, np, cap, err))
				return -1;
			path[plen] = '\0';
		}
		return 0;
	}
	for (size_t i = 0; i < json_array_size(v); i++) {
		int n = snprintf(path + plen, cap - plen, "[%zu]", i);
		size_t np = n > 0 && (size_t)n < cap - plen ? plen + (size_t)n : plen;
		if (check_section(json_array_get(v, i), depth + 1, 1, path, np, cap, err))
			return -1;
		path[plen] = '\0';
	}
	return 0;
}

size_t shadow_state_bytes(const json_t *state)
{
	tg_buf b = {0};
	size_t n = jsonout_write(&b, state) == 0 ? b.len : (size_t)-1;
	tg_buf_free(&b);
	return n;
}

static int parse_section(const json_t *state, const char *key, const char *label, const json_t **out,
			 shadow_error *err)
{
	const json_t *v = json_object_get(state, key);
	*out = v;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return shadow_fail(err, 400, "%s node must be an object", label);
	char path[160];
	int n = snprintf(path, sizeof path, "state.%s", key);
	return check_section(v, 1, 0, path, (size_t)n, sizeof path, err);
}

int shadow_request_parse(shadow_op op, const void *payload, size_t len, const shadow_limits *lim,
			 shadow_request *req, shadow_error *err)
{
	memset(req, 0, sizeof *req);
	if (len > lim->max_payload_bytes)
		return shadow_fail(err, 413, "The payload exceeds the maximum size allowed: %zu bytes, the limit is %zu", len,
				   lim->max_payload_bytes);
	if (len == 0 && op != SHADOW_UPDATE)
		return 0;
	schema_limits sl = {.max_bytes = len + 1, .max_depth = PARSE_MAX_DEPTH};
	schema_reject why;
	req->root = schema_parse_payload(payload, len, &sl, &why, NULL);
	if (!req->root) {
		switch (why.reason) {
		case SCHEMA_R_INVALID_UTF8:
			return shadow_fail(err, 415, "Unsupported documented encoding; supported encoding is UTF-8");
		case SCHEMA_R_TOO_DEEP:
			return shadow_fail(err, 400, "JSON contains too many levels of nesting; maximum is %d", SHADOW_MAX_DEPTH);
		case SCHEMA_R_NOT_OBJECT:
			return shadow_fail(err, 400, "Invalid JSON: the document must be an object");
		default:
			return shadow_fail(err, 400, "Invalid JSON: %s", why.text);
		}
	}
	const json_t *tok = json_object_get(req->root, "clientToken");
	if (tok) {
		if (!json_is_string(tok) || json_string_length(tok) > SHADOW_MAX_TOKEN ||
		    strlen(json_string_value(tok)) != json_string_length(tok))
			return shadow_fail(err, 400, "Invalid clientToken: a string of at most %d bytes", SHADOW_MAX_TOKEN);
		req->client_token = json_string_value(tok);
	}
	if (op == SHADOW_GET)
		return 0;
	const json_t *ver = json_object_get(req->root, "version");
	if (ver) {
		if (!json_is_integer(ver) || json_integer_value(ver) < 0)
			return shadow_fail(err, 400, "Invalid version: a non-negative integer");
		req->has_version = 1;
		req->version = (int64_t)json_integer_value(ver);
	}
	if (op == SHADOW_DELETE)
		return 0;
	const json_t *state = json_object_get(req->root, "state");
	if (!state)
		return shadow_fail(err, 400, "Missing required node: state");
	if (!json_is_object(state))
		return shadow_fail(err, 400, "State node must be an object");
	const char *k;
	json_t *x;
	json_object_foreach((json_t *)state, k, x) {
		if (strcmp(k, "desired") != 0 && strcmp(k, "reported") != 0)
			return shadow_fail(err, 400, "State contains an invalid node: '%.64s' (only desired and reported)", k);
	}
	if (parse_section(state, "desired", "Desired", &req->desired, err) ||
	    parse_section(state, "reported", "Reported", &req->reported, err))
		return -1;
	size_t bytes = shadow_state_bytes(state);
	if (bytes > lim->max_state_bytes)
		return shadow_fail(err, 413, "The payload exceeds the maximum size allowed: the state is %zu bytes, the limit is %zu",
				   bytes, lim->max_state_bytes);
	return 0;
}

void shadow_request_free(shadow_request *req)
{
	if (!req)
		return;
	json_decref(req->root);
	memset(req, 0, sizeof *req);
}

/* ---- documents ----------------------------------------------------------------------- */

int shadow_doc_init(shadow_doc *d)
{
	d->state = json_object();
	d->metadata = json_object();
	d->version = 0;
	if (d->state && d->metadata)
		return 0;
	shadow_doc_free(d);
	return TG_ENOMEM;
}

int shadow_doc_load(shadow_doc *d, const char *state, size_t slen, const char *meta, size_t mlen, int64_t version)
{
	memset(d, 0, sizeof *d);
	d->version = version;
	/* what we stored is ours: text that does not load as an object is damage, not input.
	 * schema.c's reader: the same values as json_loadb, at a fraction of its cost */
	schema_limits sl = {.max_bytes = (slen > mlen ? slen : mlen) + 1, .max_depth = PARSE_MAX_DEPTH};
	d->state = state && slen ? schema_parse_payload(state, slen, &sl, NULL, NULL) : json_object();
	d->metadata = meta && mlen ? schema_parse_payload(meta, mlen, &sl, NULL, NULL) : json_object();
	if (json_is_object(d->state) && json_is_object(d->metadata))
		return 0;
	int damaged = (state && slen && !json_is_object(d->state)) || (meta && mlen && !json_is_object(d->metadata));
	shadow_doc_free(d);
	return damaged ? TG_EPARSE : TG_ENOMEM;
}

int shadow_doc_copy(shadow_doc *dst, const shadow_doc *src)
{
	dst->state = json_deep_copy(src->state);
	dst->metadata = json_deep_copy(src->metadata);
	dst->version = src->version;
	if (dst->state && dst->metadata)
		return 0;
	shadow_doc_free(dst);
	return TG_ENOMEM;
}

void shadow_doc_free(shadow_doc *d)
{
	if (!d)
		return;
	json_decref(d->state);
	json_decref(d->metadata);
	d->state = d->metadata = NULL;
}

int shadow_check_version(const shadow_request *req, int64_t current, shadow_error *err)
{
	if (req->has_version && req->version != current)
		return shadow_fail(err, 409, "Version conflict: the request names version %lld, the shadow is at %lld",
				   (long long)req->version, (long long)current);
	return 0;
}

/* Metadata of a value written at one time: a leaf is the stamp, an object maps its members
 * (a null member, as the accepted response shows it, is stamped too), an array has one entry
 * per element. */
static json_t *meta_of(const json_t *v, json_t *stamp)
{
	if (json_is_object(v)) {
		json_t *m = json_object();
		const char *k;
		json_t *x;
		if (!m)
			return NULL;
		json_object_foreach((json_t *)v, k, x) {
			json_t *sub = meta_of(x, stamp);
			if (!sub || json_object_set_new(m, k, sub)) {
				json_decref(m);
				return NULL;
			}
		}
		return m;
	}
	if (json_is_array(v)) {
		json_t *m = json_array();
		if (!m)
			return NULL;
		for (size_t i = 0; i < json_array_size(v); i++) {
			json_t *sub = meta_of(json_array_get(v, i), stamp);
			if (!sub || json_array_append_new(m, sub)) {
				json_decref(m);
				return NULL;
			}
		}
		return m;
	}
	return json_incref(stamp);
}

/* Merge patch into target, keeping tmeta (target's metadata, same shape) in step. */
static int merge(json_t *target, json_t *tmeta, const json_t *patch, json_t *stamp)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)patch, k, v) {
		if (json_is_null(v)) {
			json_object_del(target, k);
			json_object_del(tmeta, k);
			continue;
		}
		if (json_is_object(v)) {
			json_t *cur = json_object_get(target, k), *cm = json_object_get(tmeta, k);
			if (!json_is_object(cur)) { /* a new object, or one replacing a value */
				if (!(cur = json_object()) || json_object_set_new(target, k, cur))
					return TG_ENOMEM;
				cm = NULL;
			}
			if (!json_is_object(cm) && (!(cm = json_object()) || json_object_set_new(tmeta, k, cm)))
				return TG_ENOMEM;
			if (merge(cur, cm, v, stamp))
				return TG_ENOMEM;
			if (json_object_size(cur) == 0) { /* an empty object carries no state */
				json_object_del(target, k);
				json_object_del(tmeta, k);
			}
			continue;
		}
		json_t *m = meta_of(v, stamp);
		if (!m || json_object_set(target, k, v) || json_object_set_new(tmeta, k, m))
			return TG_ENOMEM;
	}
	return 0;
}

static int apply_section(shadow_doc *d, const char *sec, const json_t *patch, json_t *stamp)
{
	if (!patch)
		return 0;
	if (json_is_null(patch)) {
		json_object_del(d->state, sec);
		json_object_del(d->metadata, sec);
		return 0;
	}
	json_t *cur = json_object_get(d->state, sec), *cm = json_object_get(d->metadata, sec);
	if (!json_is_object(cur) && (!(cur = json_object()) || json_object_set_new(d->state, sec, cur)))
		return TG_ENOMEM;
	if (!json_is_object(cm) && (!(cm = json_object()) || json_object_set_new(d->metadata, sec, cm)))
		return TG_ENOMEM;
	if (merge(cur, cm, patch, stamp))
		return TG_ENOMEM;
	if (json_object_size(cur) == 0) {
		json_object_del(d->state, sec);
		json_object_del(d->metadata, sec);
	}
	return 0;
}

static json_t *new_stamp(int64_t ts_s)
{
	return json_pack("{s:I}", "timestamp", (json_int_t)ts_s);
}

int shadow_doc_apply(shadow_doc *d, const shadow_request *req, int64_t ts_s, const shadow_limits *lim,
		     shadow_error *err)
{
	json_t *stamp = new_stamp(ts_s);
	if (!stamp)
		return TG_ENOMEM;
	int rc = apply_section(d, "desired", req->desired, stamp);
	if (!rc)
		rc = apply_section(d, "reported", req->reported, stamp);
	json_decref(stamp);
	if (rc)
		return rc;
	d->version++;
	size_t bytes = shadow_state_bytes(d->state);
	if (bytes > lim->max_state_bytes) {
		shadow_fail(err, 413,
			    "The payload exceeds the maximum size allowed: the shadow's state would be %zu bytes, the limit is %zu",
			    bytes, lim->max_state_bytes);
		return 1;
	}
	return 0;
}

/* JSON equality with numbers compared by value (1 and 1.0 are the same setting). */
static int same_value(const json_t *a, const json_t *b)
{
	if (json_is_number(a) && json_is_number(b)) {
		if (json_is_integer(a) && json_is_integer(b))
			return json_integer_value(a) == json_integer_value(b);
		return json_number_value(a) == json_number_value(b);
	}
	if (json_typeof(a) != json_typeof(b))
		return 0;
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!same_value(json_array_get(a, i), json_array_get(b, i)))
				return 0;
		return 1;
	}
	if (json_is_object(a)) {
		if (json_object_size(a) != json_object_size(b))
			return 0;
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)a, k, x) {
			json_t *y = json_object_get(b, k);
			if (!y || !same_value(x, y))
				return 0;
		}
		return 1;
	}
	return json_equal((json_t *)a, (json_t *)b);
}

static json_t *delta_of(const json_t *des, const json_t *rep)
{
	json_t *out = NULL;
	const char *k;
	json_t *dv;
	json_object_foreach((json_t *)des, k, dv) {
		const json_t *rv = json_is_object(rep) ? json_object_get(rep, k) : NULL;
		json_t *piece = NULL;
		if (json_is_object(dv) && json_is_object(rv))
			piece = delta_of(dv, rv);
		else if (!rv || !same_value(dv, rv))
			piece = json_incref(dv);
		if (!piece)
			continue;
		if ((!out && !(out = json_object())) || json_object_set_new(out, k, piece)) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

json_t *shadow_delta(const json_t *state)
{
	const json_t *des = json_object_get(state, "desired");
	return json_is_object(des) ? delta_of(des, json_object_get(state, "reported")) : NULL;
}

/* The metadata of delta's fields, taken from the desired section's metadata. */
static json_t *delta_meta(const json_t *delta, const json_t *meta)
{
	json_t *out = json_object();
	const char *k;
	json_t *dv;
	if (!out)
		return NULL;
	json_object_foreach((json_t *)delta, k, dv) {
		json_t *m = json_is_object(meta) ? json_object_get(meta, k) : NULL;
		if (!m)
			continue;
		json_t *sub = json_is_object(dv) ? delta_meta(dv, m) : json_incref(m);
		if (!sub || json_object_set_new(out, k, sub)) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

/* ---- responses ----------------------------------------------------------------------- */

/* Add timestamp and clientToken (when given), consuming o; NULL on failure. */
static json_t *finish(json_t *o, int64_t ts_s, const char *token)
{
	if (!o)
		return NULL;
	if (json_object_set_new(o, "timestamp", json_integer((json_int_t)ts_s)) ||
	    (token && json_object_set_new(o, "clientToken", json_string(token)))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *shadow_resp_accepted(const shadow_request *req, int64_t version, int64_t ts_s)
{
	json_t *state = json_object(), *meta = json_object(), *stamp = new_stamp(ts_s), *o = NULL;
	int bad = !state || !meta || !stamp;
	const json_t *secs[2] = {req->desired, req->reported};
	const char *names[2] = {"desired", "reported"};
	for (int i = 0; i < 2 && !bad; i++) {
		if (!secs[i])
			continue;
		json_t *m = meta_of(secs[i], stamp);
		bad = !m || json_object_set(state, names[i], (json_t *)secs[i]) || json_object_set_new(meta, names[i], m);
	}
	if (!bad)
		o = json_pack("{s:O, s:O, s:I}", "state", state, "metadata", meta, "version", (json_int_t)version);
	json_decref(state);
	json_decref(meta);
	json_decref(stamp);
	return finish(o, ts_s, req->client_token);
}

json_t *shadow_resp_delta(const shadow_doc *d, const json_t *delta, int64_t ts_s, const char *token)
{
	json_t *meta = delta_meta(delta, json_object_get(d->metadata, "desired"));
	json_t *o = meta ? json_pack("{s:I, s:I, s:O, s:O}", "version", (json_int_t)d->version, "timestamp",
				     (json_int_t)ts_s, "state", delta, "metadata", meta)
			 : NULL;
	json_decref(meta);
	if (o && token && json_object_set_new(o, "clientToken", json_string(token))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *shadow_doc_snapshot(const shadow_doc *d)
{
	return json_pack("{s:O, s:O, s:I}", "state", d->state, "metadata", d->metadata, "version", (json_int_t)d->version);
}

json_t *shadow_resp_documents(const shadow_doc *prev, const shadow_doc *cur, int64_t ts_s, const char *token)
{
	json_t *o = json_object();
	if (!o || (prev && json_object_set_new(o, "previous", shadow_doc_snapshot(prev))) ||
	    json_object_set_new(o, "current", shadow_doc_snapshot(cur))) {
		json_decref(o);
		return NULL;
	}
	return finish(o, ts_s, token);
}

json_t *shadow_resp_get(const shadow_doc *d, int64_t ts_s, const char *token)
{
	json_t *state = json_copy(d->state), *delta = shadow_delta(d->state), *o = NULL;
	if (state && (!delta || json_object_set(state, "delta", delta) == 0))
		o = json_pack("{s:O, s:O, s:I}", "state", state, "metadata", d->metadata, "version", (json_int_t)d->version);
	json_decref(state);
	json_decref(delta);
	return finish(o, ts_s, token);
}

json_t *shadow_resp_deleted(int64_t version, int64_t ts_s, const char *token)
{
	return finish(json_pack("{s:I}", "version", (json_int_t)version), ts_s, token);
}

json_t *shadow_resp_error(const shadow_error *e, int64_t ts_s, const char *token)
{
	return finish(json_pack("{s:i, s:s}", "code", e->code, "message", e->message), ts_s, token);
}
