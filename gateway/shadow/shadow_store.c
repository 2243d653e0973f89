/*
 * shadow/shadow_store.c — see shadow_store.h. The state and metadata are stored as compact
 * JSON text (jsonout), parsed straight from SQLite's column buffer on load, so a request
 * costs one indexed read, one parse and, for a change, one upsert of two texts.
 */
#include "shadow/shadow_store.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/jsonout.h"
#include "shadow/shadow_sql.h"
#include "store/outbox.h"

struct shadow_store {
	sqlite3 *db;
	int owns_db;
	sqlite3_stmt *load, *put, *del, *expired, *purge, *count, *list;
	tg_buf state_text, meta_text; /* scratch for put, reused */
};

static int prep(shadow_store *s, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "shadow store: prepare: %s", sqlite3_errmsg(s->db));
	return 0;
}

/* Its tables live in outbox.db beside the outbox's (store/outbox.h, substores). */
static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	static const char *const steps[SHADOW_SCHEMA_VERSION] = {
		"BEGIN IMMEDIATE;" SHADOW_SQL_V1 "UPDATE shadow_meta SET value = 1 WHERE key = 'schema_version'; COMMIT;",
	};
	return outbox_substore_migrate(db, SHADOW_SQL_GET_VERSION, steps, SHADOW_SCHEMA_VERSION, "shadow store", err, errlen);
}

static int prepare_all(shadow_store *s, char *err, size_t errlen)
{
	int rc;
	if ((rc = prep(s, &s->load, SHADOW_SQL_LOAD, err, errlen)) || (rc = prep(s, &s->count, SHADOW_SQL_COUNT, err, errlen)) ||
	    (rc = prep(s, &s->list, SHADOW_SQL_LIST, err, errlen)) ||
	    (rc = prep(s, &s->expired, SHADOW_SQL_EXPIRED, err, errlen)))
		return rc;
	if (!s->owns_db &&
	    ((rc = prep(s, &s->put, SHADOW_SQL_PUT, err, errlen)) || (rc = prep(s, &s->del, SHADOW_SQL_DELETE, err, errlen)) ||
	     (rc = prep(s, &s->purge, SHADOW_SQL_PURGE, err, errlen))))
		return rc;
	return 0;
}

shadow_store *shadow_store_attach(sqlite3 *db, char *err, size_t errlen)
{
	shadow_store *s = calloc(1, sizeof *s);
	if (!s) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	s->db = db;
	if (migrate(db, err, errlen) || prepare_all(s, err, errlen)) {
		shadow_store_close(s);
		return NULL;
	}
	return s;
}

shadow_store *shadow_store_open_ro(const char *path, char *err, size_t errlen)
{
	shadow_store *s = calloc(1, sizeof *s);
	if (!s) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	s->owns_db = 1;
	int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 5000);
	int64_t v = outbox_substore_version(s->db, SHADOW_SQL_GET_VERSION);
	if (v < 0) {
		tg_seterr(err, errlen, TG_EDB, "%s: %s", path, sqlite3_errmsg(s->db));
		goto fail;
	}
	if (v == 0) {
		tg_seterr(err, errlen, TG_ENOTFOUND, "%s holds no shadows yet (the daemon creates the tables)", path);
		goto fail;
	}
	if (v > SHADOW_SCHEMA_VERSION) {
		tg_seterr(err, errlen, TG_EDB, "%s: shadow schema version %" PRId64 " is newer than this build (%d)", path, v,
			  SHADOW_SCHEMA_VERSION);
		goto fail;
	}
	if (prepare_all(s, err, errlen))
		goto fail;
	return s;
fail:
	shadow_store_close(s);
	return NULL;
}

void shadow_store_close(shadow_store *s)
{
	if (!s)
		return;
	sqlite3_stmt *all[] = {s->load, s->put, s->del, s->expired, s->purge, s->count, s->list};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sqlite3_finalize(all[i]);
	if (s->owns_db)
		sqlite3_close(s->db);
	tg_buf_free(&s->state_text);
	tg_buf_free(&s->meta_text);
	free(s);
}

int shadow_store_load(shadow_store *s, const char *thing, const char *name, shadow_row *row, shadow_doc *doc)
{
	memset(row, 0, sizeof *row);
	memset(doc, 0, sizeof *doc);
	sqlite3_stmt *st = s->load;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return shadow_doc_init(doc) ? TG_ENOMEM : TG_ENOTFOUND;
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return TG_EDB;
	}
	row->version = sqlite3_column_int64(st, 0);
	row->created_ms = sqlite3_column_int64(st, 3);
	row->updated_ms = sqlite3_column_int64(st, 4);
	row->deleted_ms = sqlite3_column_type(st, 5) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 5);
	if (row->deleted_ms) {
		rc = shadow_doc_init(doc);
		doc->version = row->version;
	} else {
		const char *state = (const char *)sqlite3_column_text(st, 1);
		size_t slen = (size_t)sqlite3_column_bytes(st, 1);
		const char *meta = (const char *)sqlite3_column_text(st, 2);
		size_t mlen = (size_t)sqlite3_column_bytes(st, 2);
		rc = shadow_doc_load(doc, state, slen, meta, mlen, row->version);
	}
	sqlite3_reset(st);
	return rc;
}

int shadow_store_put(shadow_store *s, const char *thing, const char *name, const shadow_doc *d, int64_t now_ms)
{
	if (!s->put)
		return TG_EINVAL;
	s->state_text.len = s->meta_text.len = 0;
	int rc = jsonout_write(&s->state_text, d->state);
	if (rc || (rc = jsonout_write(&s->meta_text, d->metadata)))
		return rc;
	sqlite3_stmt *st = s->put;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, d->version);
	sqlite3_bind_text(st, 4, s->state_text.p, (int)s->state_text.len, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, s->meta_text.p, (int)s->meta_text.len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, now_ms);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 : TG_EDB;
	sqlite3_reset(st);
	return rc;
}

int shadow_store_delete(shadow_store *s, const char *thing, const char *name, int64_t now_ms)
{
	if (!s->del)
		return TG_EINVAL;
	sqlite3_stmt *st = s->del;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : TG_EDB;
	sqlite3_reset(st);
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = TG_ENOTFOUND;
	return rc;
}

int shadow_store_has_expired(shadow_store *s, int64_t before_ms)
{
	sqlite3_reset(s->expired);
	sqlite3_bind_int64(s->expired, 1, before_ms);
	int rc = sqlite3_step(s->expired);
	sqlite3_reset(s->expired);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : TG_EDB;
}

int shadow_store_purge(shadow_store *s, int64_t before_ms)
{
	if (!s->purge)
		return TG_EINVAL;
	sqlite3_reset(s->purge);
	sqlite3_bind_int64(s->purge, 1, before_ms);
	int rc = sqlite3_step(s->purge) == SQLITE_DONE ? sqlite3_changes(s->db) : TG_EDB;
	sqlite3_reset(s->purge);
	return rc;
}

int64_t shadow_store_count(shadow_store *s)
{
	sqlite3_reset(s->count);
	int64_t n = sqlite3_step(s->count) == SQLITE_ROW ? sqlite3_column_int64(s->count, 0) : TG_EDB;
	sqlite3_reset(s->count);
	return n;
}

int shadow_store_list(shadow_store *s, const char *thing, int (*fn)(void *ud, const shadow_list_item *it), void *ud)
{
	sqlite3_stmt *st = s->list;
	sqlite3_reset(st);
	if (thing)
		sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 1);
	int rc, out = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		shadow_list_item it = {
			.thing = (const char *)sqlite3_column_text(st, 0),
			.name = (const char *)sqlite3_column_text(st, 1),
			.version = sqlite3_column_int64(st, 2),
			.created_ms = sqlite3_column_int64(st, 3),
			.updated_ms = sqlite3_column_int64(st, 4),
			.state_bytes = sqlite3_column_int64(st, 5),
		};
		if ((out = fn(ud, &it)) != 0)
			break;
	}
	if (out == 0 && rc != SQLITE_DONE)
		out = TG_EDB;
	sqlite3_reset(st);
	return out;
}
