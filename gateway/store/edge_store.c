/*
 * edge_store.c — see edge_store.h. The store is a journal: right before a group commits,
 * what the group changed (the things' new readings, the changed aggregate keys' states) is
 * encoded into one blob and inserted as one row, so a group costs one insert whatever the
 * number of things in it — a row per thing and key cost a third of the throughput on the
 * benchmark, where groups hold a few dozen things. Once the rows written since the last
 * snapshot outweigh four snapshots (and 1 MiB), the whole state is written instead
 * (chunked into rows), the rows before it are deleted, and edge_meta 'snapshot' points at
 * it. Restoring reads the snapshot and the rows after it in order: readings are put back
 * oldest first (rebuilding the least-recently-seen order), a key's later record supersedes
 * an earlier one. At start, after the restore, a snapshot is written at once, so the
 * journal never carries expired readings or a dropped aggregate's windows past a start.
 *
 * Record encoding (native byte order, no alignment): 'D' str thing, u32 n, n x (i64 ts,
 * i64 seen); 'A' str aggregate, str thing, str group, u32 len, blob (len 0: the key holds
 * nothing any more). str = u16 length (0xffff: NULL) and the bytes.
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

#define SNAPSHOT_MIN_BYTES (1 << 20)
#define SNAPSHOT_FACTOR 4
#define CHUNK_BYTES (256 * 1024)
#define NO_STR 0xffff

struct edge_store {
	outbox *ob;
	sqlite3 *db;
	dedupe *dd;
	aggregate_set *agg;
	int hooked, persist;
	sqlite3_stmt *log_put, *log_trim, *snap_set;
	tg_buf rec;          /* records not yet inserted */
	int64_t log_bytes;   /* journal bytes written since the last snapshot */
	int64_t snap_bytes;  /* the last snapshot's size */
	int64_t snap_first;  /* id of the snapshot's first row (while writing one) */
	int chunked;         /* writing a snapshot: insert a row whenever rec reaches CHUNK_BYTES */
	char **stale;        /* aggregates whose stored records are not restored */
	size_t nstale;
};

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen, const char *what)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	tg_seterr(err, errlen, TG_EDB, "edge state: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
	sqlite3_free(msg);
	return TG_EDB;
}

/* Its tables live in outbox.db beside the outbox's (store/outbox.h, substores). */
static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	static const char *const steps[EDGE_SCHEMA_VERSION] = {
		"BEGIN IMMEDIATE;" EDGE_SQL_V1 "UPDATE edge_meta SET value = 1 WHERE key = 'schema_version'; COMMIT;",
	};
	return outbox_substore_migrate(db, EDGE_SQL_GET_VERSION, steps, EDGE_SCHEMA_VERSION, "edge state", err, errlen);
}

static int prep(edge_store *es, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(es->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "edge state: prepare: %s", sqlite3_errmsg(es->db));
	return 0;
}

static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : TG_EDB;
}

/* ---- encoding ------------------------------------------------------------------------------ */

static int put_str(tg_buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n >= NO_STR)
		return TG_EINVAL;
	uint16_t l = s ? (uint16_t)n : NO_STR;
	return tg_buf_put(b, &l, 2) || (n && tg_buf_put(b, s, n)) ? TG_ENOMEM : 0;
}

/* Insert what rec holds as one row. */
static int log_row(edge_store *es)
{
	sqlite3_bind_blob(es->log_put, 1, es->rec.len ? es->rec.p : "", (int)es->rec.len, SQLITE_STATIC);
	if (step_done(es->log_put))
		return TG_EDB;
	if (!es->snap_first)
		es->snap_first = sqlite3_last_insert_rowid(es->db);
	es->log_bytes += (int64_t)es->rec.len;
	es->rec.len = 0;
	return 0;
}

static int chunk_done(edge_store *es)
{
	return es->chunked && es->rec.len >= CHUNK_BYTES ? log_row(es) : 0;
}

static int rec_readings(void *ud, const char *thing, const dedupe_entry *e, size_t n)
{
	edge_store *es = ud;
	uint32_t nn = (uint32_t)n;
	if (tg_buf_put(&es->rec, "D", 1) || put_str(&es->rec, thing) || tg_buf_put(&es->rec, &nn, 4) ||
	    tg_buf_put(&es->rec, e, n * sizeof *e))
		return TG_ENOMEM;
	return chunk_done(es);
}

static int rec_key(void *ud, const aggregate_key_state *ks)
{
	edge_store *es = ud;
	uint32_t len = (uint32_t)ks->len;
	if (tg_buf_put(&es->rec, "A", 1) || put_str(&es->rec, ks->aggregate) || put_str(&es->rec, ks->thing) ||
	    put_str(&es->rec, ks->group) || tg_buf_put(&es->rec, &len, 4) || (len && tg_buf_put(&es->rec, ks->blob, len)))
		return TG_ENOMEM;
	return chunk_done(es);
}

/* The whole state, in rows of about CHUNK_BYTES; the journal before it goes. */
static int snapshot(edge_store *es)
{
	es->rec.len = 0;
	es->snap_first = 0;
	es->chunked = 1;
	int64_t before = es->log_bytes;
	int rc = 0;
	if (es->dd)
		rc = dedupe_foreach(es->dd, rec_readings, es);
	if (!rc && es->agg)
		rc = aggregate_foreach_key(es->agg, rec_key, es);
	es->chunked = 0;
	if (!rc && (es->rec.len || !es->snap_first))
		rc = log_row(es);
	if (rc)
		return rc;
	sqlite3_bind_int64(es->snap_set, 1, es->snap_first);
	sqlite3_bind_int64(es->log_trim, 1, es->snap_first);
	if (step_done(es->snap_set) || step_done(es->log_trim))
		return TG_EDB;
	es->snap_bytes = es->log_bytes - before;
	es->log_bytes = 0;
	return 0;
}

/* ---- writing a group's changes ---------------------------------------------------------- */

static int on_group(void *ud, outbox_group_event ev, int64_t now_ms)
{
	edge_store *es = ud;
	int rc = 0;
	switch (ev) {
	case OUTBOX_GROUP_COMMITTING: {
		int64_t limit = es->snap_bytes * SNAPSHOT_FACTOR;
		if (es->log_bytes > (limit > SNAPSHOT_MIN_BYTES ? limit : SNAPSHOT_MIN_BYTES)) {
			rc = snapshot(es); /* holds this group's changes too */
			break;
		}
		es->rec.len = 0;
		if (es->dd && (rc = dedupe_foreach_dirty(es->dd, rec_readings, es)))
			break;
		if (es->agg && (rc = aggregate_foreach_dirty(es->agg, rec_key, es)))
			break;
		es->snap_first = -1; /* not a snapshot: log_row must not note the id */
		if (es->rec.len)
			rc = log_row(es);
		break;
	}
	case OUTBOX_GROUP_COMMITTED:
	case OUTBOX_GROUP_ROLLED_BACK:
		if (es->dd)
			dedupe_dirty_done(es->dd, ev == OUTBOX_GROUP_COMMITTED);
		if (es->agg)
			aggregate_dirty_done(es->agg, ev == OUTBOX_GROUP_COMMITTED);
		break;
	}
	if (rc)
		LOG_ERROR("edge", "msg=\"cannot store the edge state of the group\" err=\"%s\"",
			  rc == TG_EDB ? sqlite3_errmsg(es->db) : tg_strerror(rc));
	return rc;
}

/* ---- start ------------------------------------------------------------------------------- */

static int is_stale(const edge_store *es, const char *aggregate)
{
	for (size_t i = 0; i < es->nstale; i++)
		if (strcmp(es->stale[i], aggregate) == 0)
			return 1;
	return 0;
}

/* Aggregates whose stored layout differs from the configured one (or that are gone): their
 * records are skipped (logged). */
static int find_stale(edge_store *es, char *err, size_t errlen)
{
	sqlite3_stmt *ls = NULL;
	if (prep(es, &ls, EDGE_SQL_LAYOUTS, err, errlen))
		return TG_EDB;
	int rc = 0;
	while (sqlite3_step(ls) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(ls, 0), *stored = (const char *)sqlite3_column_text(ls, 1);
		const char *now_layout = NULL;
		for (size_t i = 0; i < aggregate_count(es->agg) && !now_layout; i++) {
			const char *n, *l = aggregate_layout(es->agg, i, &n);
			if (strcmp(n, name) == 0)
				now_layout = l;
		}
		if (now_layout && stored && strcmp(now_layout, stored) == 0)
			continue;
		char **v = realloc(es->stale, (es->nstale + 1) * sizeof *v);
		if (!v || !(v[es->nstale] = strdup(name))) {
			if (v)
				es->stale = v;
			rc = TG_ENOMEM;
			break;
		}
		es->stale = v;
		es->nstale++;
		if (es->agg)
			LOG_WARN("edge", "msg=\"dropping the stored open windows of an aggregate that is %s\" aggregate=%s",
				 now_layout ? "configured differently now (its accumulators would mean something else)"
					    : "no longer configured",
				 name);
	}
	sqlite3_finalize(ls);
	return rc;
}

static int get_str(const unsigned char **p, const unsigned char *end, char *buf, size_t cap, const char **out)
{
	uint16_t l;
	if (end - *p < 2)
		return -1;
	memcpy(&l, *p, 2);
	*p += 2;
	if (l == NO_STR) {
		*out = NULL;
		return 0;
	}
	if ((size_t)(end - *p) < l || l >= cap)
		return -1;
	memcpy(buf, *p, l);
	buf[l] = '\0';
	*p += l;
	*out = buf;
	return 0;
}

/* Apply one row's records. -1: malformed (the rest of the row is ignored). */
static int apply_row(edge_store *es, const unsigned char *p, size_t len, int64_t now_ms, edge_store_restored *out,
		     dedupe_entry **tmp, size_t *tmpcap)
{
	const unsigned char *end = p + len;
	char a[NO_STR], t[NO_STR], g[NO_STR];
	while (p < end) {
		char tag = (char)*p++;
		const char *thing, *agg, *grp;
		uint32_t n;
		if (tag == 'D') {
			if (get_str(&p, end, t, sizeof t, &thing) || !thing || end - p < 4)
				return -1;
			memcpy(&n, p, 4);
			p += 4;
			if ((size_t)(end - p) / sizeof(dedupe_entry) < n)
				return -1;
			if (n > *tmpcap) {
				dedupe_entry *e = realloc(*tmp, n * sizeof *e);
				if (!e)
					return TG_ENOMEM;
				*tmp = e;
				*tmpcap = n;
			}
			memcpy(*tmp, p, n * sizeof(dedupe_entry)); /* the record is not aligned */
			p += n * sizeof(dedupe_entry);
			if (es->dd) {
				int rc = dedupe_restore(es->dd, thing, *tmp, n, now_ms);
				if (rc < 0)
					return rc;
				out->readings += (uint64_t)rc;
			}
		} else if (tag == 'A') {
			if (get_str(&p, end, a, sizeof a, &agg) || !agg || get_str(&p, end, t, sizeof t, &thing) || !thing ||
			    get_str(&p, end, g, sizeof g, &grp) || end - p < 4)
				return -1;
			memcpy(&n, p, 4);
			p += 4;
			if ((size_t)(end - p) < n)
				return -1;
			aggregate_key_state ks = {.aggregate = agg, .thing = thing, .group = grp, .blob = n ? p : NULL, .len = n};
			p += n;
			if (!es->agg)
				continue;
			if (is_stale(es, agg)) {
				out->keys_dropped++;
				continue;
			}
			int rc = aggregate_restore(es->agg, &ks);
			if (rc == TG_ENOMEM)
				return rc;
			if (rc)
				out->keys_dropped++;
		} else {
			return -1;
		}
	}
	return 0;
}

static int restore(edge_store *es, int64_t now_ms, edge_store_restored *out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int64_t from = 0;
	if (prep(es, &st, EDGE_SQL_SNAPSHOT_GET, err, errlen))
		return TG_EDB;
	if (sqlite3_step(st) == SQLITE_ROW)
		from = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (prep(es, &st, EDGE_SQL_LOG_READ, err, errlen))
		return TG_EDB;
	sqlite3_bind_int64(st, 1, from);
	dedupe_entry *tmp = NULL;
	size_t tmpcap = 0;
	int rc = 0, step;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		rc = apply_row(es, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), now_ms, out, &tmp,
			       &tmpcap);
		if (rc == -1) {
			LOG_WARN("edge", "msg=\"a stored edge state record is malformed; the rest of its row is skipped\"");
			rc = 0;
		}
		if (rc)
			break;
	}
	free(tmp);
	sqlite3_finalize(st);
	if (rc)
		return tg_seterr(err, errlen, rc, "edge state: restoring: %s", tg_strerror(rc));
	if (step != SQLITE_DONE && step != SQLITE_ROW)
		return tg_seterr(err, errlen, TG_EDB, "edge state: reading: %s", sqlite3_errmsg(es->db));
	dedupe_stats ds;
	dedupe_get_stats(es->dd, &ds);
	aggregate_stats as;
	aggregate_get_stats(es->agg, &as);
	out->things = es->dd ? ds.things : 0;
	out->keys = es->agg ? as.keys : 0;
	return 0;
}

/* In one transaction at start: a snapshot of what was restored (nothing with persistence
 * off), and the configured aggregates' layouts. */
static int settle(edge_store *es, char *err, size_t errlen)
{
	sqlite3_stmt *lput = NULL;
	int rc = exec(es->db, "BEGIN IMMEDIATE", err, errlen, "begin");
	if (rc)
		return rc;
	if (es->persist) {
		if (snapshot(es))
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: snapshot: %s", sqlite3_errmsg(es->db));
	} else if (!(rc = exec(es->db, EDGE_SQL_LOG_CLEAR, err, errlen, "clear"))) {
		sqlite3_bind_int64(es->snap_set, 1, 0);
		if (step_done(es->snap_set))
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: clear: %s", sqlite3_errmsg(es->db));
	}
	if (!rc)
		rc = exec(es->db, EDGE_SQL_LAYOUTS_CLEAR, err, errlen, "layouts");
	if (!rc && es->persist && prep(es, &lput, EDGE_SQL_LAYOUT_PUT, err, errlen))
		rc = TG_EDB;
	for (size_t i = 0; !rc && lput && i < aggregate_count(es->agg); i++) {
		const char *n, *l = aggregate_layout(es->agg, i, &n);
		sqlite3_bind_text(lput, 1, n, -1, SQLITE_STATIC);
		sqlite3_bind_text(lput, 2, l, -1, SQLITE_STATIC);
		if (step_done(lput))
			rc = tg_seterr(err, errlen, TG_EDB, "edge state: layout: %s", sqlite3_errmsg(es->db));
	}
	sqlite3_finalize(lput);
	if (!rc)
		rc = exec(es->db, "COMMIT", err, errlen, "commit");
	if (rc && !sqlite3_get_autocommit(es->db))
		sqlite3_exec(es->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
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
	if (migrate(es->db, err, errlen) || prep(es, &es->log_put, EDGE_SQL_LOG_PUT, err, errlen) ||
	    prep(es, &es->log_trim, EDGE_SQL_LOG_TRIM, err, errlen) ||
	    prep(es, &es->snap_set, EDGE_SQL_SNAPSHOT_SET, err, errlen))
		goto fail;
	if (persist && (find_stale(es, err, errlen) || restore(es, now_ms, out, err, errlen)))
		goto fail;
	if (settle(es, err, errlen))
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
	sqlite3_finalize(es->log_put);
	sqlite3_finalize(es->log_trim);
	sqlite3_finalize(es->snap_set);
	tg_buf_free(&es->rec);
	for (size_t i = 0; i < es->nstale; i++)
		free(es->stale[i]);
	free(es->stale);
	free(es);
}
