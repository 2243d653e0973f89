/*
 * edge_store.c — see edge_store.h. Statements are prepared once on the outbox writer's
 * connection and run only on its thread (the ingest thread), inside the group transaction:
 * per group, one insert per thing that sent readings (its new readings in one blob) and one
 * upsert or delete per aggregate key that changed, so the cost follows the things active
 * in the group, not the messages or the size of the state.
 */
#include "store/edge_store.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "store/edge_store_sql.h"
#include "core/err.h"
#include "core/log.h"

#define PRUNE_EVERY_MAX_MS 60000

struct edge_store {
	outbox *ob;
	sqlite3 *db;
	dedupe *dd;
	aggregate_set *agg;
	int hooked, persist;
	int64_t window_ms;     /* dedupe window: rows older than it are pruned */
	int64_t prune_every_ms, last_prune_ms;
	int64_t next_id;       /* edge_dedupe.id of the next row */
	sqlite3_stmt *dd_put, *dd_drop, *dd_prune, *agg_put, *agg_del, *agg_get;
	tg_buf got;            /* the blob agg_get read, for aggregate_dirty_done */
};

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen, const char *what)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	tg_seterr(err, errlen, TG_EDB, "edge state: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
	sqlite3_free(msg);
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return TG_EDB;
}

static int64_t schema_version(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, EDGE_SQL_GET_VERSION, -1, &st, NULL) != SQLITE_OK)
		return strncmp(sqlite3_errmsg(db), "no such table", 13) == 0 ? 0 : -1;
	int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	return v;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	int64_t v = schema_version(db);
	if (v < 0)
		return tg_seterr(err, errlen, TG_EDB, "edge state: cannot read the schema version: %s", sqlite3_errmsg(db));
	if (v > EDGE_SCHEMA_VERSION)
		return tg_seterr(err, errlen, TG_EDB, "edge state: schema version %" PRId64 " is newer than this build (%d)", v,
				 EDGE_SCHEMA_VERSION);
	static const char *const steps[EDGE_SCHEMA_VERSION] = {
		"BEGIN IMMEDIATE;" EDGE_SQL_V1 "UPDATE edge_meta SET value = 1 WHERE key = 'schema_version'; COMMIT;",
	};
	for (int64_t step = v; step < EDGE_SCHEMA_VERSION; step++)
		if (exec(db, steps[step], err, errlen, "migration"))
			return TG_EDB;
	return 0;
}

static int prep(edge_store *es, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(es->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "edge state: prepare: %s", sqlite3_errmsg(es->db));
	return 0;
}

/* Run a prepared write with its bindings; 0 or TG_EDB. */
static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : TG_EDB;
}

/* ---- writing a group's changes ---------------------------------------------------------- */

static int put_readings(void *ud, const char *thing, const dedupe_entry *e, size_t n, int all)
{
	edge_store *es = ud;
	if (all) { /* the whole ring replaces every row the thing has */
		sqlite3_bind_text(es->dd_drop, 1, thing, -1, SQLITE_STATIC);
		if (step_done(es->dd_drop))
			return TG_EDB;
	}
	int64_t seen = INT64_MIN;
	for (size_t i = 0; i < n; i++)
		if (e[i].seen > seen)
			seen = e[i].seen;
	sqlite3_bind_text(es->dd_put, 1, thing, -1, SQLITE_STATIC);
	sqlite3_bind_int64(es->dd_put, 2, es->next_id++);
	sqlite3_bind_int64(es->dd_put, 3, seen);
	sqlite3_bind_blob(es->dd_put, 4, e, (int)(n * sizeof *e), SQLITE_STATIC);
	return step_done(es->dd_put);
}

static int put_key(void *ud, const aggregate_key_state *ks)
{
	edge_store *es = ud;
	sqlite3_stmt *st = ks->blob ? es->agg_put : es->agg_del;
	sqlite3_bind_text(st, 1, ks->aggregate, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, ks->thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, ks->group ? ks->group : "", -1, SQLITE_STATIC);
	if (ks->blob)
		sqlite3_bind_blob(st, 4, ks->blob, (int)ks->len, SQLITE_STATIC);
	return step_done(st);
}

/* aggregate_load_fn: what is stored for a key, after a rollback */
static int get_key(void *ud, aggregate_key_state *ks)
{
	edge_store *es = ud;
	sqlite3_stmt *st = es->agg_get;
	sqlite3_bind_text(st, 1, ks->aggregate, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, ks->thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, ks->group ? ks->group : "", -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), out = 0;
	ks->blob = NULL;
	ks->len = 0;
	if (rc == SQLITE_ROW) {
		es->got.len = 0;
		if (tg_buf_put(&es->got, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0))) {
			out = TG_ENOMEM;
		} else {
			ks->blob = es->got.p;
			ks->len = es->got.len;
		}
	} else if (rc != SQLITE_DONE) {
		out = TG_EDB;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return out;
}

static int on_group(void *ud, outbox_group_event ev, int64_t now_ms)
{
	edge_store *es = ud;
	int rc = 0;
	switch (ev) {
	case OUTBOX_GROUP_COMMITTING:
		if (es->dd && (rc = dedupe_foreach_dirty(es->dd, put_readings, es)))
			break;
		if (es->dd && now_ms - es->last_prune_ms >= es->prune_every_ms) {
			es->last_prune_ms = now_ms;
			sqlite3_bind_int64(es->dd_prune, 1, now_ms - es->window_ms);
			if ((rc = step_done(es->dd_prune)))
				break;
		}
		if (es->agg)
			rc = aggregate_foreach_dirty(es->agg, put_key, es);
		break;
	case OUTBOX_GROUP_COMMITTED:
	case OUTBOX_GROUP_ROLLED_BACK:
		if (es->dd)
			dedupe_dirty_done(es->dd, ev == OUTBOX_GROUP_COMMITTED);
		if (es->agg)
			aggregate_dirty_done(es->agg, ev == OUTBOX_GROUP_COMMITTED, get_key, es);
		break;
	}
	if (rc)
		LOG_ERROR("edge", "msg=\"cannot store the edge state of the group\" err=\"%s\"",
			  rc == TG_EDB ? sqlite3_errmsg(es->db) : tg_strerror(rc));
	return rc;
}

/* ---- start ------------------------------------------------------------------------------- */

/* In one transaction before anything is read: readings out of the window go, and so do
 * the windows of an aggregate that is gone or whose layout changed (logged). */
static int tidy(edge_store *es, int64_t now_ms, edge_store_restored *out, char *err, size_t errlen)
{
	if (exec(es->db, "BEGIN IMMEDIATE", err, errlen, "begin"))
		return TG_EDB;
	int rc = 0;
	if (!es->dd) {
		rc = exec(es->db, EDGE_SQL_DEDUPE_CLEAR, err, errlen, "clear dedupe");
	} else {
		sqlite3_bind_int64(es->dd_prune, 1, now_ms - es->window_ms);
		if (step_done(es->dd_prune))
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: prune: %s", sqlite3_errmsg(es->db));
	}
	sqlite3_stmt *ls = NULL, *drop = NULL, *lput = NULL, *ldel = NULL;
	if (!rc && (prep(es, &ls, EDGE_SQL_LAYOUTS, err, errlen) || prep(es, &drop, EDGE_SQL_AGG_DROP, err, errlen) ||
		    prep(es, &lput, EDGE_SQL_LAYOUT_PUT, err, errlen) || prep(es, &ldel, EDGE_SQL_LAYOUT_DEL, err, errlen)))
		rc = TG_EDB;
	/* stored layouts against the configured ones; the statements below change rows the
	 * SELECT has passed (edge_meta's keys are read in order), which SQLite allows */
	while (!rc && sqlite3_step(ls) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(ls, 0), *stored = (const char *)sqlite3_column_text(ls, 1);
		const char *now_layout = NULL;
		for (size_t i = 0; i < aggregate_count(es->agg) && !now_layout; i++) {
			const char *n, *l = aggregate_layout(es->agg, i, &n);
			if (strcmp(n, name) == 0)
				now_layout = l;
		}
		if (now_layout && stored && strcmp(now_layout, stored) == 0)
			continue;
		sqlite3_bind_text(drop, 1, name, -1, SQLITE_TRANSIENT);
		if (step_done(drop)) {
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: drop: %s", sqlite3_errmsg(es->db));
			break;
		}
		int dropped = sqlite3_changes(es->db);
		sqlite3_bind_text(ldel, 1, name, -1, SQLITE_TRANSIENT);
		if (step_done(ldel)) {
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: drop: %s", sqlite3_errmsg(es->db));
			break;
		}
		if (es->persist && dropped > 0)
			LOG_WARN("edge", "msg=\"dropping the stored open windows of an aggregate that is %s\" aggregate=%s keys=%d",
				 now_layout ? "configured differently now (its accumulators would mean something else)"
					    : "no longer configured",
				 name, dropped);
		out->keys_dropped += (uint64_t)dropped;
	}
	for (size_t i = 0; !rc && i < aggregate_count(es->agg); i++) {
		const char *n, *l = aggregate_layout(es->agg, i, &n);
		sqlite3_bind_text(lput, 1, n, -1, SQLITE_STATIC);
		sqlite3_bind_text(lput, 2, l, -1, SQLITE_STATIC);
		if (step_done(lput))
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: layout: %s", sqlite3_errmsg(es->db));
	}
	if (!rc && !es->agg)
		rc = exec(es->db, EDGE_SQL_AGG_CLEAR, err, errlen, "clear aggregates");
	sqlite3_finalize(ls);
	sqlite3_finalize(drop);
	sqlite3_finalize(lput);
	sqlite3_finalize(ldel);
	if (rc) {
		if (!sqlite3_get_autocommit(es->db))
			sqlite3_exec(es->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	return exec(es->db, "COMMIT", err, errlen, "commit");
}

static int restore(edge_store *es, int64_t now_ms, edge_store_restored *out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = 0, step;
	if (es->dd) {
		if (prep(es, &st, EDGE_SQL_DEDUPE_MAX_ID, err, errlen))
			return TG_EDB;
		es->next_id = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) + 1 : 1;
		sqlite3_finalize(st);
		if (prep(es, &st, EDGE_SQL_DEDUPE_LOAD, err, errlen))
			return TG_EDB;
		sqlite3_bind_int64(st, 1, now_ms - es->window_ms);
		dedupe_stats before;
		dedupe_get_stats(es->dd, &before);
		while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
			size_t len = (size_t)sqlite3_column_bytes(st, 1);
			const void *blob = sqlite3_column_blob(st, 1);
			size_t n = len / sizeof(dedupe_entry);
			dedupe_entry *e = n ? malloc(n * sizeof *e) : NULL; /* the blob may be unaligned */
			if (n && !e) {
				rc = TG_ENOMEM;
				break;
			}
			if (n)
				memcpy(e, blob, n * sizeof *e);
			rc = dedupe_restore(es->dd, (const char *)sqlite3_column_text(st, 0), e, n, now_ms);
			free(e);
			out->readings += n;
		}
		sqlite3_finalize(st);
		dedupe_stats after;
		dedupe_get_stats(es->dd, &after);
		out->things = after.things;
		if (rc)
			return tg_seterr(err, errlen, rc, "edge state: restoring the dedupe memory: %s", tg_strerror(rc));
	}
	if (es->agg) {
		if (prep(es, &st, EDGE_SQL_AGG_LOAD, err, errlen))
			return TG_EDB;
		while ((step = sqlite3_step(st)) == SQLITE_ROW) {
			const char *grp = (const char *)sqlite3_column_text(st, 2);
			aggregate_key_state ks = {.aggregate = (const char *)sqlite3_column_text(st, 0),
						  .thing = (const char *)sqlite3_column_text(st, 1),
						  .blob = sqlite3_column_blob(st, 3),
						  .len = (size_t)sqlite3_column_bytes(st, 3)};
			/* '' stands for no group; restore says whether the aggregate groups */
			ks.group = grp;
			int r = aggregate_restore(es->agg, &ks);
			if (r == TG_EINVAL && grp && !*grp) {
				ks.group = NULL;
				r = aggregate_restore(es->agg, &ks);
			}
			if (r == TG_ENOMEM) {
				sqlite3_finalize(st);
				return tg_seterr(err, errlen, r, "edge state: restoring the aggregates: out of memory");
			}
			if (r == 0)
				out->keys++;
			else
				out->keys_dropped++;
		}
		sqlite3_finalize(st);
	}
	return 0;
}

edge_store *edge_store_open(outbox *ob, dedupe *dd, aggregate_set *agg, int persist, int64_t now_ms,
			    edge_store_restored *out, char *err, size_t errlen)
{
	edge_store_restored dummy;
	if (!out)
		out = &dummy;
	memset(out, 0, sizeof *out);
	if (!ob || outbox_in_txn(ob)) {
		tg_seterr(err, errlen, TG_EINVAL, "edge state: needs an outbox with no group open");
		return NULL;
	}
	edge_store *es = calloc(1, sizeof *es);
	if (!es) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	es->ob = ob;
	es->db = outbox_writer_db(ob);
	es->persist = persist;
	es->dd = persist ? dd : NULL;
	es->agg = persist ? agg : NULL;
	if (dd) {
		es->window_ms = dedupe_window(dd);
		es->prune_every_ms = es->window_ms / 4 < PRUNE_EVERY_MAX_MS ? es->window_ms / 4 : PRUNE_EVERY_MAX_MS;
		es->last_prune_ms = now_ms;
	}
	if (migrate(es->db, err, errlen) || prep(es, &es->dd_put, EDGE_SQL_DEDUPE_PUT, err, errlen) ||
	    prep(es, &es->dd_drop, EDGE_SQL_DEDUPE_DROP_THING, err, errlen) ||
	    prep(es, &es->dd_prune, EDGE_SQL_DEDUPE_PRUNE, err, errlen) ||
	    prep(es, &es->agg_put, EDGE_SQL_AGG_PUT, err, errlen) || prep(es, &es->agg_del, EDGE_SQL_AGG_DEL, err, errlen) ||
	    prep(es, &es->agg_get, EDGE_SQL_AGG_GET, err, errlen))
		goto fail;
	if (tidy(es, now_ms, out, err, errlen) || restore(es, now_ms, out, err, errlen))
		goto fail;
	if (persist) {
		if (outbox_add_group_hook(ob, on_group, es)) {
			tg_seterr(err, errlen, TG_EFULL, "edge state: no room for its outbox group hook");
			goto fail;
		}
		es->hooked = 1;
		dedupe_track_changes(es->dd, 1);
		aggregate_track_changes(es->agg, 1);
	}
	return es;
fail:
	edge_store_close(es);
	return NULL;
}

void edge_store_close(edge_store *es)
{
	if (!es)
		return;
	if (es->hooked) {
		outbox_remove_group_hook(es->ob, on_group, es);
		dedupe_track_changes(es->dd, 0);
		aggregate_track_changes(es->agg, 0);
	}
	sqlite3_stmt *all[] = {es->dd_put, es->dd_drop, es->dd_prune, es->agg_put, es->agg_del, es->agg_get};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sqlite3_finalize(all[i]);
	tg_buf_free(&es->got);
	free(es);
}
