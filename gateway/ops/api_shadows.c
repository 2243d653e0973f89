/*
 * api_shadows.c — the console's view of the Device Shadows (issue 16): GET /api/shadows
 * lists the live shadows, each with its document as a `get` would answer it (state with
 * delta, metadata, version), and GET /api/shadows/THING (or ?thing=THING) those of one thing.
 *
 * The shadows are read from the shadow tables in the outbox database through a read-only
 * store of the console's own (shadow_store_open_ro), opened on first use and kept under
 * db_mu like api_data.c's handles; until the daemon has created the tables the answer is an
 * empty list that says why. The console never writes a shadow: a change goes over MQTT like
 * any app's (`tidegate shadow update`), so it is made by the one writer and reaches the device
 * as a delta. The walk collects the rows first and loads each document after it, so no read
 * statement stays open across another.
 */
#include "ops/console_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "shadow/shadow_store.h"

#define SHADOWS_DEFAULT_LIMIT 100
#define SHADOWS_MAX_LIMIT 1000

typedef struct shadow_walk {
	json_t *rows;
	size_t limit;
	int truncated;
} shadow_walk;

static int on_shadow(void *ud, const shadow_list_item *it)
{
	shadow_walk *w = ud;
	if (json_array_size(w->rows) >= w->limit) {
		w->truncated = 1;
		return 1;
	}
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "thing", it->thing, "name", it->name, "version",
			      (json_int_t)it->version, "created_ms", (json_int_t)it->created_ms, "updated_ms",
			      (json_int_t)it->updated_ms, "state_bytes", (json_int_t)it->state_bytes);
	return o && json_array_append_new(w->rows, o) == 0 ? 0 : TG_ENOMEM;
}

/* db_mu held. The store, opened on first use; NULL with why filled when it cannot be. */
static shadow_store *store_get(ops_console *c, char *why, size_t whylen)
{
	if (!c->shadows)
		c->shadows = shadow_store_open_ro(c->cfg->outbox_path, why, whylen);
	return c->shadows;
}

/* The document of one listed shadow, merged into its row: state (with delta), metadata. */
static int add_document(shadow_store *st, json_t *row)
{
	const char *thing = json_string_value(json_object_get(row, "thing"));
	const char *name = json_string_value(json_object_get(row, "name"));
	shadow_row sr;
	shadow_doc doc = {0};
	int rc = shadow_store_load(st, thing, name, &sr, &doc);
	if (rc == 0 && !sr.deleted_ms) {
		json_t *g = shadow_resp_get(&doc, 0, NULL);
		if (!g)
			rc = TG_ENOMEM;
		else {
			json_object_set(row, "state", json_object_get(g, "state"));
			json_object_set(row, "metadata", json_object_get(g, "metadata"));
			json_decref(g);
		}
	}
	shadow_doc_free(&doc);
	return rc == TG_ENOTFOUND ? 0 : rc; /* deleted since the walk: listed without a document */
}

int ops_api_shadows(ops_console *c, const http_req *req, http_resp *r, const char *rest)
{
	const char *thing = NULL;
	if (*rest == '/' && rest[1])
		thing = rest + 1;
	else if (*rest)
		return 1;
	const char *q = http_req_query(req, "thing");
	if (!thing && q && *q)
		thing = q;
	if (thing && strchr(thing, '/'))
		return ops_error(r, 400, "bad_request", "thing: a thing name has no '/' ('%s')", thing);
	long long limit = SHADOWS_DEFAULT_LIMIT;
	const char *lv = http_req_query(req, "limit");
	if (lv && *lv) {
		char *end;
		errno = 0;
		limit = strtoll(lv, &end, 10);
		if (*end || errno || limit < 1 || limit > SHADOWS_MAX_LIMIT)
			return ops_error(r, 400, "bad_request", "limit: an integer 1..%d", SHADOWS_MAX_LIMIT);
	}
	shadow_walk w = {json_array(), (size_t)limit, 0};
	if (!w.rows)
		return ops_error(r, 500, "internal", "out of memory");
	char why[256] = "";
	int rc = 0;
	pthread_mutex_lock(&c->db_mu);
	shadow_store *st = store_get(c, why, sizeof why);
	if (st)
		rc = shadow_store_list(st, thing, on_shadow, &w);
	for (size_t i = 0; st && rc >= 0 && i < json_array_size(w.rows); i++)
		rc = add_document(st, json_array_get(w.rows, i));
	pthread_mutex_unlock(&c->db_mu);
	if (rc < 0) {
		json_decref(w.rows);
		return ops_error(r, 503, "unavailable", "cannot read the shadow tables of %s", c->cfg->outbox_path);
	}
	json_t *o = json_pack("{s:o, s:b, s:b}", "shadows", w.rows, "truncated", w.truncated, "enabled", c->cfg->shadow_enabled);
	if (o && thing)
		json_object_set_new(o, "thing", json_string(thing));
	if (o && !st) /* no tables yet (no shadow was ever made), or the file is not there */
		json_object_set_new(o, "note", json_string(why));
	return ops_json(r, 200, o);
}
