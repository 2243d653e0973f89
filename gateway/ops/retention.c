/*
 * retention.c — see retention.h. The writer keeps its statements prepared on its own
 * connection; the pending rows of the open outbox group live in one arena (tg_buf) plus an
 * index array, both reused from group to group, so adding a record is two copies.
 */
#include "ops/retention.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#define RET_SCHEMA_VERSION 1
#define RET_SQL_SCHEMA                                                                         \
	"CREATE TABLE IF NOT EXISTS samples(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"     \
	" thing TEXT NOT NULL, body TEXT NOT NULL);"                                          \
	"CREATE INDEX IF NOT EXISTS samples_thing_ts ON samples(thing, ts);"                  \
	"PRAGMA user_version=1;"
#define RET_SQL_INSERT "INSERT INTO samples(ts, thing, body) VALUES(?,?,?)"
#define RET_SQL_MIN "SELECT min(id) FROM samples"
#define RET_SQL_TRIM_AGE "DELETE FROM samples WHERE id < ?1 AND ts < ?2 RETURNING length(body)"
#define RET_SQL_TRIM_ANY "DELETE FROM samples WHERE id < ?1 RETURNING length(body)"
#define RET_SQL_TOTALS "SELECT count(*), coalesce(sum(length(body)), 0) FROM samples"
#define RET_SQL_LATEST "SELECT body FROM samples WHERE thing = ?1 ORDER BY ts DESC, id DESC LIMIT 1"
#define RET_SQL_SERIES                                                                         \
	"SELECT (ts - ?3) / ?5 AS b, min(v), avg(v), max(v), count(v) FROM"                   \
	" (SELECT ts, json_extract(body, ?2) AS v FROM samples WHERE thing = ?1 AND ts >= ?3 AND ts < ?4)" \
	" WHERE typeof(v) IN ('integer', 'real') GROUP BY b ORDER BY b"

#define TRIM_CHUNK 4096
#define TRIM_MAX_PER_TICK 200000
#define PENDING_MAX 100000
/* committed rows are written at most this often (or at FLUSH_ROWS): one retention commit
 * per outbox group rewrote the index pages of every thing in the group each time — at 100
 * things and 36 groups a second that was most of the retention's cost */
#define FLUSH_MS 500
#define FLUSH_ROWS 20000
#define MAX_BUCKETS 5000
#define READ_TIMEOUT_MS 2000
/* The series cache: what the console's page asks for every few seconds (one thing's or
 * every thing's recent window) is read from the store once, then only the rows written
 * since. Reading the whole window each time cost a pread() and a json_extract per row —
 * the writer's commits empty a reader's page cache twice a second — and grew with the
 * window (a mapped file would save the copies, but turn a read error into SIGBUS). Bounded in entries and points (24 bytes each, 3 MiB in all); an entry is read
 * again in full at least every SER_REFRESH_MS, which bounds what a lost update (a wall-
 * clock step back) can leave out. */
#define SER_MAX_ENTRIES 256
#define SER_MAX_POINTS 131072
#define SER_REFRESH_MS 60000
#define SER_SLACK_MS 5000   /* rows come in at most FLUSH_MS + a group's time after their ts */
#define SER_RECENT_MS 60000 /* a window ending earlier than this before now is not cached */
#define RET_SQL_SER_ROWS                                                                       \
	"SELECT id, ts, json_extract(body, ?2) FROM samples WHERE thing = ?1 AND ts >= ?3 AND id > ?4"

/* One (thing, field) of the series cache: the numeric values of every row of the thing
 * with ts >= lo_ts and id <= hi_id, as they were read. */
typedef struct ser_pt {
	int64_t id, ts;
	double v;
} ser_pt;

typedef struct ser_entry {
	char *thing, *field;
	int64_t lo_ts, hi_id, hi_ts;
	int64_t loaded_ms, used_ms; /* monotonic */
	uint64_t epoch;
	ser_pt *p;
	size_t n, cap;
} ser_entry;

typedef struct pend_row {
	int64_t ts;
	size_t thing_off, text_off, text_len;
} pend_row;

struct ops_retention {
	char *path;
	int64_t period_ms, max_bytes;
	/* writer (ingest thread) */
	sqlite3 *db;
	sqlite3_stmt *ins, *min_id, *trim_age, *trim_any;
	tg_buf arena;
	pend_row *pend;
	size_t npend, pend_cap;
	size_t ncommitted, committed_len; /* rows (and arena bytes) of groups the outbox committed */
	int64_t last_flush_ms, last_trim_ms;
	/* readers */
	pthread_mutex_t rd_mu, q_mu;
	sqlite3 *rd, *q;
	int64_t rd_deadline_ms, q_deadline_ms; /* monotonic; each under its connection's mutex */
	/* the series cache (under rd_mu), see series_cached() */
	ser_entry *ser;
	size_t nser, ser_points;
	_Atomic int64_t min_live_id; /* rows with a smaller id were trimmed (0: none yet) */
	_Atomic uint64_t epoch;      /* bumped when a trim empties the store: ids may start over */
	/* counters */
	_Atomic int64_t rows, bytes;
	_Atomic uint64_t written, trimmed, dropped, write_errors;
};

static void flush(ops_retention *r, int64_t now_ms);

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return TG_EDB;
	}
	return 0;
}

static int prep(sqlite3 *db, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "prepare: %s", sqlite3_errmsg(db));
	return 0;
}

static void writer_close(ops_retention *r)
{
	sqlite3_finalize(r->ins);
	sqlite3_finalize(r->min_id);
	sqlite3_finalize(r->trim_age);
	sqlite3_finalize(r->trim_any);
	r->ins = r->min_id = r->trim_age = r->trim_any = NULL;
	sqlite3_close(r->db);
	r->db = NULL;
}

static int writer_open(ops_retention *r, char *err, size_t errlen)
{
	int rc = sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "%s: %s", r->path, r->db ? sqlite3_errmsg(r->db) : "cannot open");
	sqlite3_busy_timeout(r->db, 1000);
	/* a cache of what the outbox already keeps durably: no fsync, ever */
	if ((rc = exec(r->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA temp_store=MEMORY;", err, errlen)))
		return rc;
	sqlite3_stmt *st;
	int64_t v = -1;
	if (sqlite3_prepare_v2(r->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	if (v < 0)
		return tg_seterr(err, errlen, TG_EDB, "%s: %s", r->path, sqlite3_errmsg(r->db));
	if (v > RET_SCHEMA_VERSION)
		return tg_seterr(err, errlen, TG_EDB, "%s: schema version %lld is newer than this tidegate's (%d)", r->path,
				 (long long)v, RET_SCHEMA_VERSION);
	if (v < RET_SCHEMA_VERSION && (rc = exec(r->db, "BEGIN;" RET_SQL_SCHEMA "COMMIT;", err, errlen)))
		return rc;
	if ((rc = prep(r->db, &r->ins, RET_SQL_INSERT, err, errlen)) || (rc = prep(r->db, &r->min_id, RET_SQL_MIN, err, errlen)) ||
	    (rc = prep(r->db, &r->trim_age, RET_SQL_TRIM_AGE, err, errlen)) ||
	    (rc = prep(r->db, &r->trim_any, RET_SQL_TRIM_ANY, err, errlen)))
		return rc;
	if (sqlite3_prepare_v2(r->db, RET_SQL_TOTALS, -1, &st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "%s: %s", r->path, sqlite3_errmsg(r->db));
	if (sqlite3_step(st) == SQLITE_ROW) {
		atomic_store(&r->rows, sqlite3_column_int64(st, 0));
		atomic_store(&r->bytes, sqlite3_column_int64(st, 1));
	}
	sqlite3_finalize(st);
	return 0;
}

static int64_t min_id(ops_retention *r);

/* After a trim is committed (or rolled back): what readers may still find. A store that
 * the trim emptied numbers its next rows from 1 again, which the series cache must not
 * take for rows it has seen. */
static void live_ids_update(ops_retention *r)
{
	int64_t lo = min_id(r);
	if (lo < 0 && atomic_load(&r->min_live_id) > 0)
		atomic_fetch_add(&r->epoch, 1);
	atomic_store(&r->min_live_id, lo < 0 ? 0 : lo);
}

static int query_progress(void *ud)
{
	const int64_t *deadline = ud;
	return tg_mono_ms() > *deadline;
}

/* The SQL endpoint's guard: reading the samples table and calling functions, nothing else
 * (no other table, no PRAGMA, no ATTACH, no write). */
static int authorize(void *ud, int action, const char *a, const char *b, const char *dbname, const char *trigger)
{
	switch (action) {
	case SQLITE_SELECT:
	case SQLITE_FUNCTION:
	case SQLITE_RECURSIVE: return SQLITE_OK;
	case SQLITE_READ: /* the table, or a CTE / subquery of the statement (no schema name) */
		return (a && strcmp(a, "samples") == 0) || !dbname || !*dbname ? SQLITE_OK : SQLITE_DENY;
	default: return SQLITE_DENY;
	}
}

static int reader_open(ops_retention *r, sqlite3 **db, int64_t *deadline, int guarded, char *err, size_t errlen)
{
	if (sqlite3_open_v2(r->path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "%s: %s", r->path, *db ? sqlite3_errmsg(*db) : "cannot open");
	sqlite3_busy_timeout(*db, 200);
	sqlite3_progress_handler(*db, 1000, query_progress, deadline);
	if (guarded) {
		sqlite3_limit(*db, SQLITE_LIMIT_LENGTH, 1 << 20);
		sqlite3_limit(*db, SQLITE_LIMIT_SQL_LENGTH, 64 * 1024);
		sqlite3_set_authorizer(*db, authorize, NULL);
	}
	return 0;
}

ops_retention *ops_retention_open(const ops_retention_conf *c, char *err, size_t errlen)
{
	ops_retention *r = calloc(1, sizeof *r);
	if (!r || !(r->path = strdup(c->path))) {
		free(r);
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&r->rd_mu, NULL);
	pthread_mutex_init(&r->q_mu, NULL);
	r->period_ms = c->period_ms;
	r->max_bytes = c->max_bytes;
	char why[512];
	if (writer_open(r, why, sizeof why)) {
		int code = r->db ? sqlite3_errcode(r->db) : SQLITE_CANTOPEN;
		writer_close(r);
		if (code != SQLITE_CORRUPT && code != SQLITE_NOTADB) {
			tg_seterr(err, errlen, TG_EDB, "retention %s", why);
			goto fail;
		}
		/* only a cache: start over rather than refuse to start */
		LOG_WARN("retention", "msg=\"retention database unreadable, starting a new one\" path=%s reason=\"%s\"", r->path, why);
		char side[4200];
		unlink(r->path);
		snprintf(side, sizeof side, "%s-wal", r->path);
		unlink(side);
		snprintf(side, sizeof side, "%s-shm", r->path);
		unlink(side);
		if (writer_open(r, why, sizeof why)) {
			tg_seterr(err, errlen, TG_EDB, "retention %s", why);
			goto fail;
		}
	}
	{
		int64_t lo = min_id(r);
		atomic_store(&r->min_live_id, lo < 0 ? 0 : lo);
	}
	if (reader_open(r, &r->rd, &r->rd_deadline_ms, 0, err, errlen) ||
	    reader_open(r, &r->q, &r->q_deadline_ms, 1, err, errlen))
		goto fail;
	return r;
fail:
	ops_retention_close(r);
	return NULL;
}

static void ser_entry_free(ser_entry *e)
{
	free(e->thing);
	free(e->field);
	free(e->p);
	*e = (ser_entry){0};
}

void ops_retention_close(ops_retention *r)
{
	if (!r)
		return;
	if (r->db && r->ncommitted && r->npend == r->ncommitted)
		flush(r, tg_wall_ms()); /* what the outbox committed last */
	writer_close(r);
	for (size_t i = 0; i < r->nser; i++)
		ser_entry_free(&r->ser[i]);
	free(r->ser);
	sqlite3_close(r->rd);
	sqlite3_close(r->q);
	pthread_mutex_destroy(&r->rd_mu);
	pthread_mutex_destroy(&r->q_mu);
	tg_buf_free(&r->arena);
	free(r->pend);
	free(r->path);
	free(r);
}

void ops_retention_add(ops_retention *r, const char *thing, int64_t received_ms, const char *text, size_t len)
{
	if (r->npend >= PENDING_MAX) {
		atomic_fetch_add(&r->dropped, 1);
		return;
	}
	if (r->npend == r->pend_cap) {
		size_t cap = r->pend_cap ? r->pend_cap * 2 : 512;
		pend_row *np = realloc(r->pend, cap * sizeof *np);
		if (!np) {
			atomic_fetch_add(&r->dropped, 1);
			return;
		}
		r->pend = np;
		r->pend_cap = cap;
	}
	pend_row *p = &r->pend[r->npend];
	p->ts = received_ms;
	p->thing_off = r->arena.len;
	if (tg_buf_put(&r->arena, thing, strlen(thing) + 1)) {
		atomic_fetch_add(&r->dropped, 1);
		return;
	}
	p->text_off = r->arena.len;
	p->text_len = len;
	if (tg_buf_put(&r->arena, text, len)) {
		r->arena.len = p->thing_off;
		atomic_fetch_add(&r->dropped, 1);
		return;
	}
	r->npend++;
}

/* One DELETE ... RETURNING run: rows and text bytes it removed. */
static int trim_step(ops_retention *r, sqlite3_stmt *st, int64_t below_id, int64_t before_ts, int64_t *rows,
		     int64_t *bytes)
{
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, below_id);
	if (st == r->trim_age)
		sqlite3_bind_int64(st, 2, before_ts);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		(*rows)++;
		*bytes += sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : TG_EDB;
}

static int64_t min_id(ops_retention *r)
{
	sqlite3_reset(r->min_id);
	int64_t v = sqlite3_step(r->min_id) == SQLITE_ROW && sqlite3_column_type(r->min_id, 0) != SQLITE_NULL
			    ? sqlite3_column_int64(r->min_id, 0)
			    : -1;
	sqlite3_reset(r->min_id);
	return v;
}

/* Oldest rows first: past the period, then while over the byte cap. Bounded per call so a
 * first trim of a large file does not stall the ingest thread; the rest follows next time. */
static int trim(ops_retention *r, int64_t now_ms)
{
	int64_t rows = 0, bytes = 0;
	int rc = 0;
	for (int pass = 0; pass < 2 && !rc; pass++) {
		while (rows < TRIM_MAX_PER_TICK) {
			if (pass == 1 && atomic_load(&r->bytes) - bytes <= r->max_bytes)
				break;
			int64_t lo = min_id(r);
			if (lo < 0)
				break;
			int64_t before = rows;
			if ((rc = trim_step(r, pass == 0 ? r->trim_age : r->trim_any, lo + TRIM_CHUNK, now_ms - r->period_ms, &rows,
					    &bytes)))
				break;
			if (rows == before || (pass == 0 && rows - before < TRIM_CHUNK))
				break; /* the head is recent enough (or nothing was left) */
		}
	}
	atomic_fetch_sub(&r->rows, rows);
	atomic_fetch_sub(&r->bytes, bytes);
	atomic_fetch_add(&r->trimmed, (uint64_t)rows);
	return rc;
}

void ops_retention_group(ops_retention *r, int committed, int64_t now_ms)
{
	if (!committed) { /* the open group's rows go; those of committed groups stay */
		r->npend = r->ncommitted;
		r->arena.len = r->committed_len;
		return;
	}
	r->ncommitted = r->npend;
	r->committed_len = r->arena.len;
	ops_retention_tick(r, now_ms);
}

void ops_retention_tick(ops_retention *r, int64_t now_ms)
{
	if (r->npend != r->ncommitted) /* a group is open: only at its commit */
		return;
	if (now_ms - r->last_flush_ms >= FLUSH_MS || r->ncommitted >= FLUSH_ROWS)
		flush(r, now_ms);
}

static void flush(ops_retention *r, int64_t now_ms)
{
	size_t n = r->ncommitted;
	r->last_flush_ms = now_ms;
	int due_trim = now_ms - r->last_trim_ms >= 1000;
	if (n == 0 && !due_trim)
		return;
	if (exec(r->db, "BEGIN", NULL, 0)) {
		atomic_fetch_add(&r->write_errors, 1);
		r->npend = r->ncommitted = r->committed_len = 0;
		r->arena.len = 0;
		return;
	}
	int64_t bytes = 0;
	size_t done = 0;
	/* from here on the rows are either written or given up: the next ones start afresh */
	r->npend -= n;
	r->ncommitted = 0;
	r->committed_len = 0;
	for (; done < n; done++) {
		const pend_row *p = &r->pend[done];
		sqlite3_reset(r->ins);
		sqlite3_bind_int64(r->ins, 1, p->ts);
		sqlite3_bind_text(r->ins, 2, r->arena.p + p->thing_off, -1, SQLITE_STATIC);
		sqlite3_bind_text(r->ins, 3, r->arena.p + p->text_off, (int)p->text_len, SQLITE_STATIC);
		int rc = sqlite3_step(r->ins);
		sqlite3_reset(r->ins);
		if (rc != SQLITE_DONE)
			break;
		bytes += (int64_t)p->text_len;
	}
	r->arena.len = 0;
	if (done < n) {
		LOG_WARN("retention", "msg=\"retention write failed; these records are not kept\" rows=%zu err=\"%s\"", n,
			 sqlite3_errmsg(r->db));
		exec(r->db, "ROLLBACK", NULL, 0);
		atomic_fetch_add(&r->write_errors, 1);
		return;
	}
	atomic_fetch_add(&r->rows, (int64_t)n);
	atomic_fetch_add(&r->bytes, bytes);
	if (due_trim) {
		r->last_trim_ms = now_ms;
		if (trim(r, now_ms))
			LOG_WARN("retention", "msg=\"trim failed\" err=\"%s\"", sqlite3_errmsg(r->db));
	}
	if (exec(r->db, "COMMIT", NULL, 0)) {
		LOG_WARN("retention", "msg=\"retention commit failed\" err=\"%s\"", sqlite3_errmsg(r->db));
		exec(r->db, "ROLLBACK", NULL, 0);
		atomic_fetch_add(&r->write_errors, 1);
		/* the counters moved with statements that were rolled back: read them again */
		sqlite3_stmt *st;
		if (sqlite3_prepare_v2(r->db, RET_SQL_TOTALS, -1, &st, NULL) == SQLITE_OK) {
			if (sqlite3_step(st) == SQLITE_ROW) {
				atomic_store(&r->rows, sqlite3_column_int64(st, 0));
				atomic_store(&r->bytes, sqlite3_column_int64(st, 1));
			}
			sqlite3_finalize(st);
		}
		live_ids_update(r);
		return;
	}
	atomic_fetch_add(&r->written, (uint64_t)n);
	if (due_trim)
		live_ids_update(r);
}

/* ---- readers ------------------------------------------------------------------------- */

json_t *ops_retention_latest(ops_retention *r, const char *thing, char *err, size_t errlen)
{
	json_t *out = NULL;
	sqlite3_stmt *st = NULL;
	if (errlen)
		err[0] = '\0';
	pthread_mutex_lock(&r->rd_mu);
	r->rd_deadline_ms = tg_mono_ms() + READ_TIMEOUT_MS;
	if (sqlite3_prepare_v2(r->rd, RET_SQL_LATEST, -1, &st, NULL) != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "%s", sqlite3_errmsg(r->rd));
		goto out;
	}
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		out = json_loadb((const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0), 0, NULL);
	else if (rc != SQLITE_DONE)
		tg_seterr(err, errlen, TG_EDB, "%s", sqlite3_errmsg(r->rd));
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->rd_mu);
	return out;
}

static int field_ok(const char *f)
{
	if (!f || !*f || strlen(f) > 200)
		return 0;
	int seg = 0;
	for (const char *p = f; *p; p++) {
		if (*p == '.') {
			if (!seg)
				return 0;
			seg = 0;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_') {
			seg++;
		} else {
			return 0;
		}
	}
	return seg > 0;
}

/* rd_mu held: the store's own GROUP BY, for a window the cache does not keep. */
static json_t *series_sql(ops_retention *r, const char *thing, const char *path, int64_t since_ms, int64_t until_ms,
			  int64_t step_ms, char *err, size_t errlen)
{
	json_t *arr = json_array();
	sqlite3_stmt *st = NULL;
	if (!arr) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	if (sqlite3_prepare_v2(r->rd, RET_SQL_SERIES, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, since_ms);
	sqlite3_bind_int64(st, 4, until_ms);
	sqlite3_bind_int64(st, 5, step_ms);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *b = json_pack("{s:I, s:f, s:f, s:f, s:I}", "t", (json_int_t)(since_ms + sqlite3_column_int64(st, 0) * step_ms),
				      "min", sqlite3_column_double(st, 1), "avg", sqlite3_column_double(st, 2), "max",
				      sqlite3_column_double(st, 3), "n", (json_int_t)sqlite3_column_int64(st, 4));
		if (!b || json_array_append_new(arr, b))
			goto fail;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	return arr;
fail:
	tg_seterr(err, errlen, TG_EDB, "%s", sqlite3_errcode(r->rd) == SQLITE_INTERRUPT ? "query took too long" : sqlite3_errmsg(r->rd));
	sqlite3_finalize(st);
	json_decref(arr);
	return NULL;
}

/* Buckets being filled: what series_sql's GROUP BY computes, from values one at a time. */
typedef struct ser_acc {
	int64_t since, until, step;
	size_t nb;
	double *mn, *mx, *sum;
	int64_t *cnt;
} ser_acc;

static int acc_init(ser_acc *a, int64_t since, int64_t until, int64_t step)
{
	*a = (ser_acc){.since = since, .until = until, .step = step};
	a->nb = (size_t)((until - since) / step) + 1; /* the caller checked (until - since) / step */
	a->mn = malloc(a->nb * sizeof *a->mn);
	a->mx = malloc(a->nb * sizeof *a->mx);
	a->sum = calloc(a->nb, sizeof *a->sum);
	a->cnt = calloc(a->nb, sizeof *a->cnt);
	return a->mn && a->mx && a->sum && a->cnt ? 0 : TG_ENOMEM;
}

static void acc_free(ser_acc *a)
{
	free(a->mn);
	free(a->mx);
	free(a->sum);
	free(a->cnt);
}

static void acc_add(ser_acc *a, int64_t ts, double v)
{
	if (ts < a->since || ts >= a->until)
		return;
	size_t k = (size_t)((ts - a->since) / a->step);
	if (!a->cnt[k]++) {
		a->mn[k] = a->mx[k] = v;
	} else {
		if (v < a->mn[k])
			a->mn[k] = v;
		if (v > a->mx[k])
			a->mx[k] = v;
	}
	a->sum[k] += v;
}

static json_t *acc_json(const ser_acc *a)
{
	json_t *arr = json_array();
	for (size_t k = 0; arr && k < a->nb; k++) {
		if (!a->cnt[k])
			continue;
		json_t *b = json_pack("{s:I, s:f, s:f, s:f, s:I}", "t", (json_int_t)(a->since + (int64_t)k * a->step), "min",
				      a->mn[k], "avg", a->sum[k] / (double)a->cnt[k], "max", a->mx[k], "n", (json_int_t)a->cnt[k]);
		if (!b || json_array_append_new(arr, b)) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static void ser_drop(ops_retention *r, size_t i)
{
	r->ser_points -= r->ser[i].n;
	ser_entry_free(&r->ser[i]);
	r->ser[i] = r->ser[--r->nser];
}

/* rd_mu held. The thing's rows with ts >= from_ts and id > after_id into e (numeric values
 * only, while the cache has room: else *full) and into acc (when given). 0 or TG_EDB. */
static int ser_scan(ops_retention *r, ser_entry *e, const char *path, int64_t from_ts, int64_t after_id, ser_acc *acc,
		    int *full, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(r->rd, RET_SQL_SER_ROWS, -1, &st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "%s", sqlite3_errmsg(r->rd));
	sqlite3_bind_text(st, 1, e->thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, from_ts);
	sqlite3_bind_int64(st, 4, after_id);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0), ts = sqlite3_column_int64(st, 1);
		if (id > e->hi_id)
			e->hi_id = id;
		if (ts > e->hi_ts)
			e->hi_ts = ts;
		int type = sqlite3_column_type(st, 2);
		if (type != SQLITE_INTEGER && type != SQLITE_FLOAT)
			continue;
		double v = sqlite3_column_double(st, 2);
		if (acc)
			acc_add(acc, ts, v);
		if (*full)
			continue;
		if (e->n == e->cap) { /* the allocation stays within what SER_MAX_POINTS leaves */
			size_t room = SER_MAX_POINTS - r->ser_points, grow = e->cap ? e->cap : 256;
			ser_pt *np = room ? realloc(e->p, (e->cap + (grow < room ? grow : room)) * sizeof *np) : NULL;
			if (!np) {
				*full = 1;
				continue;
			}
			e->p = np;
			e->cap += grow < room ? grow : room;
		}
		e->p[e->n++] = (ser_pt){id, ts, v};
		r->ser_points++;
	}
	if (rc != SQLITE_DONE)
		tg_seterr(err, errlen, TG_EDB, "%s", rc == SQLITE_INTERRUPT ? "query took too long" : sqlite3_errmsg(r->rd));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : TG_EDB;
}

/* rd_mu held. The window from the cache: NULL (err empty) when it cannot keep it — the
 * caller asks the store instead — or NULL with err on a failed read. */
static json_t *series_cached(ops_retention *r, const char *thing, const char *field, const char *path, int64_t since_ms,
			     int64_t until_ms, int64_t step_ms, char *err, size_t errlen)
{
	int64_t now = tg_mono_ms();
	uint64_t epoch = atomic_load(&r->epoch);
	size_t i = 0;
	while (i < r->nser && (strcmp(r->ser[i].thing, thing) != 0 || strcmp(r->ser[i].field, field) != 0))
		i++;
	if (i < r->nser && (r->ser[i].epoch != epoch || since_ms < r->ser[i].lo_ts || now - r->ser[i].loaded_ms > SER_REFRESH_MS))
		ser_drop(r, i), i = r->nser; /* read it again from the store */
	if (i == r->nser) {
		if (r->nser == SER_MAX_ENTRIES) { /* the one used longest ago goes */
			size_t old = 0;
			for (size_t k = 1; k < r->nser; k++)
				if (r->ser[k].used_ms < r->ser[old].used_ms)
					old = k;
			ser_drop(r, old);
		}
		if (!r->ser && !(r->ser = calloc(SER_MAX_ENTRIES, sizeof *r->ser)))
			return NULL;
		i = r->nser;
		ser_entry *e = &r->ser[i];
		*e = (ser_entry){.thing = strdup(thing), .field = strdup(field), .lo_ts = since_ms, .loaded_ms = now, .epoch = epoch};
		if (!e->thing || !e->field) {
			ser_entry_free(e);
			return NULL;
		}
		r->nser++;
		ser_acc acc;
		int full = 0;
		json_t *out = NULL;
		if (acc_init(&acc, since_ms, until_ms, step_ms) == 0) {
			if (ser_scan(r, e, path, since_ms, 0, &acc, &full, err, errlen) == 0)
				out = acc_json(&acc);
		}
		acc_free(&acc);
		if (!out || full)
			ser_drop(r, i);
		else
			r->ser[i].used_ms = now;
		if (!out && !err[0])
			tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return out;
	}
	ser_entry *e = &r->ser[i];
	int full = 0;
	int64_t from = e->hi_ts - SER_SLACK_MS > e->lo_ts ? e->hi_ts - SER_SLACK_MS : e->lo_ts;
	if (ser_scan(r, e, path, from, e->hi_id, NULL, &full, err, errlen) || full) {
		ser_drop(r, i);
		return NULL; /* err set, or empty: the store answers */
	}
	e->used_ms = now;
	ser_acc acc;
	json_t *out = NULL;
	int64_t live = atomic_load(&r->min_live_id);
	if (acc_init(&acc, since_ms, until_ms, step_ms) == 0) {
		for (size_t k = 0; k < e->n; k++)
			if (e->p[k].id >= live) /* trimmed rows are gone from the store too */
				acc_add(&acc, e->p[k].ts, e->p[k].v);
		out = acc_json(&acc);
	}
	acc_free(&acc);
	if (!out)
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	return out;
}

json_t *ops_retention_series(ops_retention *r, const char *thing, const char *field, int64_t since_ms,
			     int64_t until_ms, int64_t step_ms, char *err, size_t errlen)
{
	if (!field_ok(field)) {
		tg_seterr(err, errlen, TG_EINVAL, "field: '%s' is not a dotted name of letters, digits and _", field ? field : "");
		return NULL;
	}
	if (step_ms <= 0 || until_ms <= since_ms || (until_ms - since_ms) / step_ms > MAX_BUCKETS) {
		tg_seterr(err, errlen, TG_EINVAL, "since/until/step: need since < until, step > 0 and at most %d steps",
			  MAX_BUCKETS);
		return NULL;
	}
	char path[256];
	snprintf(path, sizeof path, "$.%s", field);
	char why[512] = "";
	json_t *out = NULL;
	pthread_mutex_lock(&r->rd_mu);
	r->rd_deadline_ms = tg_mono_ms() + READ_TIMEOUT_MS;
	/* a window reaching the present: what the page polls */
	if (until_ms >= tg_wall_ms() - SER_RECENT_MS)
		out = series_cached(r, thing, field, path, since_ms, until_ms, step_ms, why, sizeof why);
	if (!out && why[0])
		tg_seterr(err, errlen, TG_EDB, "%s", why);
	else if (!out)
		out = series_sql(r, thing, path, since_ms, until_ms, step_ms, err, errlen);
	pthread_mutex_unlock(&r->rd_mu);
	return out;
}

static json_t *column_json(sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER: return json_integer((json_int_t)sqlite3_column_int64(st, i));
	case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, i));
	case SQLITE_NULL: return json_null();
	default: {
		const char *t = (const char *)sqlite3_column_text(st, i);
		json_t *s = t ? json_stringn(t, (size_t)sqlite3_column_bytes(st, i)) : NULL;
		return s ? s : json_string("(not UTF-8)");
	}
	}
}

json_t *ops_retention_query(ops_retention *r, const char *sql, int64_t max_rows, int64_t timeout_ms, char *err,
			    size_t errlen)
{
	sqlite3_stmt *st = NULL;
	json_t *res = NULL, *rows = NULL, *cols = NULL;
	const char *tail = NULL;
	pthread_mutex_lock(&r->q_mu);
	r->q_deadline_ms = tg_mono_ms() + timeout_ms;
	if (sqlite3_prepare_v2(r->q, sql, -1, &st, &tail) != SQLITE_OK || !st) {
		tg_seterr(err, errlen, TG_EINVAL, "%s", st ? sqlite3_errmsg(r->q) : sqlite3_errmsg(r->q)[0] ? sqlite3_errmsg(r->q) : "empty statement");
		goto out;
	}
	while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == '\r' || *tail == ';'))
		tail++;
	if (tail && *tail) {
		tg_seterr(err, errlen, TG_EINVAL, "one statement only");
		goto out;
	}
	if (!sqlite3_stmt_readonly(st)) {
		tg_seterr(err, errlen, TG_EPERM, "read-only statements only");
		goto out;
	}
	int nc = sqlite3_column_count(st);
	res = json_object();
	cols = json_array();
	rows = json_array();
	if (!res || !cols || !rows) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nc; i++)
		json_array_append_new(cols, json_string(sqlite3_column_name(st, i)));
	int rc, truncated = 0;
	int64_t n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == max_rows) {
			truncated = 1;
			break;
		}
		json_t *row = json_array();
		for (int i = 0; row && i < nc; i++)
			json_array_append_new(row, column_json(st, i));
		if (!row || json_array_append_new(rows, row)) {
			tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	if (!truncated && rc != SQLITE_DONE) {
		tg_seterr(err, errlen, rc == SQLITE_INTERRUPT ? TG_EFULL : TG_EINVAL, "%s",
			  rc == SQLITE_INTERRUPT ? "query took longer than its time limit" : sqlite3_errmsg(r->q));
		goto out;
	}
	json_object_set(res, "columns", cols);
	json_object_set(res, "rows", rows);
	json_object_set_new(res, "truncated", json_boolean(truncated));
	sqlite3_finalize(st);
	json_decref(cols);
	json_decref(rows);
	pthread_mutex_unlock(&r->q_mu);
	return res;
out:
	sqlite3_finalize(st);
	json_decref(cols);
	json_decref(rows);
	json_decref(res);
	pthread_mutex_unlock(&r->q_mu);
	return NULL;
}

void ops_retention_stats_get(ops_retention *r, ops_retention_stats *s)
{
	memset(s, 0, sizeof *s);
	s->rows = atomic_load(&r->rows);
	s->bytes = atomic_load(&r->bytes);
	s->written = atomic_load(&r->written);
	s->trimmed = atomic_load(&r->trimmed);
	s->dropped = atomic_load(&r->dropped);
	s->write_errors = atomic_load(&r->write_errors);
	struct stat sb;
	char p[4200];
	if (stat(r->path, &sb) == 0)
		s->disk_bytes += (int64_t)sb.st_size;
	snprintf(p, sizeof p, "%s-wal", r->path);
	if (stat(p, &sb) == 0)
		s->disk_bytes += (int64_t)sb.st_size;
}
