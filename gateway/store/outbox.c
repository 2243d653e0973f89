/*
 * outbox.c — SQLite store-and-forward queue; see outbox.h for the contract.
 *
 * The writer keeps one transaction open while records arrive and commits it as a group;
 * every statement is prepared once. Caps are enforced on the writer side from in-memory
 * counters (initialised from the table at open) so an append never scans the table: when
 * a cap is crossed, drop_oldest deletes the lowest-priority oldest rows down to 95 % of the
 * cap in one statement run, reject_new refuses the append.
 *
 * The disk, not only the records. max_bytes bounds the three files (database, -wal, -shm):
 * the WAL has a bound of its own (wal_max_bytes, at most a quarter of max_bytes), and the
 * rest is the database's budget. A deleted row's pages go to the free list and are reused
 * before the file grows, so the database file stays within the budget as long as the pages
 * in use do. Pages per record byte are measured at every commit (pages in use / record
 * bytes queued), which turns the page budget into the record-byte cap the appends check
 * (record_cap_bytes), so quarantine and dead-letter pages count against it too.
 *
 * Keeping the WAL small under continuous ingest. A WAL only starts over when a checkpoint
 * has copied every frame back AND the next write transaction begins with no reader still
 * using an old snapshot; the passive checkpoints of the checkpoint thread copy frames but,
 * with a group commit every few milliseconds and forwarders reading, that moment never
 * came, and the WAL grew for as long as ingest ran (17 MB/s at 5k msg/s). So the writer
 * itself, right after a commit that leaves the WAL past half its bound, runs a RESTART
 * checkpoint on its own connection: it waits (briefly) for readers to finish their
 * statement, copies the few frames the background checkpoints have not, and its next BEGIN
 * writes the WAL from the start again. The background passive checkpoints keep doing the
 * bulk of the copying (and its fsync) off the ingest thread, so the RESTART on the ingest
 * thread costs little (wal_restart_max_us in /metrics). If a reader holds the WAL until the
 * bound itself is near, begin() insists (the full busy timeout) and, failing that, refuses
 * to take more: the daemon then stops acknowledging and the broker keeps the messages.
 */
#include "store/outbox.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/jsonout.h"
#include "core/log.h"
#include "store/outbox_sql.h"

#define MAX_SINKS 32
#define QUARANTINE_KEEP 100000
#define NPRIO (OUTBOX_PRIO_ALERT + 1)
/* queued deletions beyond which the forwarder deletes them itself (see outbox_settle) */
#define OUTBOX_PENDING_HELP 2000
#define WAL_DEFAULT_MAX (64LL << 20)
#define WAL_MIN_MAX (1LL << 20)
/* record bytes to pages-in-use until enough is queued to measure it (measured: about 2 for
 * ~150-byte telemetry records) */
#define DEFAULT_PAGES_PER_BYTE 3.0
#define MEASURE_MIN_BYTES (1LL << 20)
/* how long a RESTART checkpoint below the bound may wait for readers */
#define SOFT_RESTART_WAIT_US 20000
/* free space kept beyond the WAL's frames (see disk_low), and how often it is looked at */
#define DISK_MARGIN (4LL << 20)
#define DISK_CHECK_MS 100
#define HARD_RESTART_WAIT_US 5000000

/* A delivered run of rows of one (sink, priority), waiting to be deleted. */
struct pend_del {
	int64_t sink, seq_lo, seq_hi, id_lo, id_hi, n, bytes;
	int prio;
};

struct outbox {
	sqlite3 *db;
	/* Forwarders waiting for the write lock (settling a delivered batch). The ingest thread
	 * takes the lock again microseconds after each group commit, so a waiting forwarder gets
	 * its turn only if begin() lets it: see begin() and reader_write(). */
	atomic_int readers_waiting;
	/* WAL checkpoints run on their own thread: a checkpoint fsyncs the database, and on
	 * the ingest thread that stalled message handling for tens of milliseconds. */
	pthread_t ckpt_tid;
	int ckpt_started, ckpt_stop;
	pthread_mutex_t ckpt_mu;
	pthread_cond_t ckpt_cv;
	atomic_ullong ckpt_passes; /* passive checkpoints finished (the writer waits for one) */
	atomic_int ckpt_copied;    /* frames the last passive pass had copied back (-1: none) */
	/* ckpt_run: one checkpoint at a time in this process, and none while the WAL may be
	 * about to start over. wal_commits counts commits (the WAL hook, any connection);
	 * under ckpt_run_mu, full_at is its value when a checkpoint last copied everything. */
	pthread_mutex_t ckpt_run_mu;
	int ckpt_run_mu_init;
	atomic_ullong wal_commits;
	atomic_int wal_frames; /* the WAL's length in frames after the last commit */
	int full_pending;
	uint64_t full_at;
	int restart_wanted;        /* writer: asked for a pass before its RESTART */
	uint64_t restart_after;    /* writer: ckpt_passes when it asked */
	int restart_passes;        /* writer: passes asked for since restart_wanted was set */
	_Atomic int64_t writer_commit_ms; /* when the ingest writer last committed (monotonic) */
	char *path;
	outbox_opts opts;
	char *gateway_id;
	sqlite3_stmt *ins, *set_last, *sink_id, *sink_add, *oldest, *del, *quar, *quar_trim;
	sqlite3_stmt *page_count, *freelist_count;
	sqlite3_stmt *dead_list, *dead_delete; /* outbox_requeue_dead */
	/* outbox_add_group_hook, called in the order they were added */
	struct {
		outbox_group_fn fn;
		void *ud;
	} hooks[OUTBOX_MAX_GROUP_HOOKS];
	size_t nhooks;
	int line_valid; /* line holds the last appended record */
	/* disk_low: the file system's free space, as last looked at */
	int64_t disk_avail, disk_need, disk_checked_ms;
	int64_t disk_since; /* record bytes appended since the last look */
	int disk_checked, disk_low;
	int64_t page_size, wal_limit, db_budget;
	int64_t group_wal_max; /* the most WAL one commit has added (the margin under the bound) */
	int busy_soft;         /* the busy handler gives up after SOFT_RESTART_WAIT_US */
	int64_t caps_ms;       /* when update_caps last ran while idle */
	struct {
		char *name;
		int64_t id;
	} sinks[MAX_SINKS];
	size_t nsinks;
	int in_txn;
	int64_t group_n, group_rows, group_bytes, group_first_ms;
	int64_t last_id, committed_last_id;
	uint64_t quarantine_n;
	outbox_counters ctr;
	tg_buf line; /* scratch for serialising, reused */
	sqlite3_stmt *del_range; /* the writer's, for queued deletions */
	struct pend_del *applied; /* runs deleted in the open transaction (counted at commit) */
	size_t napplied;
	int64_t applied_rows, applied_bytes;
	/* Delivered rows waiting to be deleted, and per sink the highest seq delivered per
	 * priority (readers skip seqs up to it). Under pend_mu; pend_rows is also read without
	 * it as a hint. */
	pthread_mutex_t pend_mu;
	struct pend_del *pend;
	size_t npend, pend_cap;
	atomic_llong pend_rows;
	struct {
		int64_t sink;
		int64_t after_seq[NPRIO];
	} cursors[MAX_SINKS];
	size_t ncursors;
	/* Per sink, the rows and payload bytes queued — ctr.rows/bytes split by sink, changed
	 * wherever those change (outbox_sink_backlog). A slot is filled once (id, name) before
	 * nbacklog publishes it, so the HTTP thread reads them without a lock. */
	struct sink_backlog {
		int64_t id;
		char *name;
		atomic_llong rows, bytes;
	} backlog[MAX_SINKS];
	atomic_int nbacklog;
	struct sink_delta *applied_delta; /* per sink share of applied_rows/bytes (writer) */
};

/* Rows and bytes per sink taken out in one go, counted out of the backlog when their
 * deletion commits. */
struct sink_delta {
	size_t n;
	struct {
		int64_t sink, rows, bytes;
	} d[MAX_SINKS];
};

struct outbox_reader {
	sqlite3 *db;
	outbox *ob; /* for counters only */
	sqlite3_stmt *batch, *del, *del_range, *dead, *attempt, *sink_id, *pending, *freelist;
	char *sink_name; /* the last sink looked up and its id (a sink's id never changes) */
	int64_t sink_id_cached;
	sqlite3_stmt *oldest; /* outbox_oldest_pending, prepared on first use */
};

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

static int64_t scalar(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void max_store(_Atomic int64_t *a, int64_t v)
{
	int64_t cur = atomic_load(a);
	while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static int on_wal_commit(void *ud, sqlite3 *db, const char *name, int frames)
{
	outbox *ob = ud;
	/* ckpt_run: the WAL's length after this commit, then that a commit has finished */
	atomic_store(&ob->wal_frames, frames);
	atomic_fetch_add(&ob->wal_commits, 1);
	int64_t bytes = frames > 0 ? 32 + (int64_t)frames * ((ob->page_size ? ob->page_size : 16384) + 24) : 0;
	atomic_store(&ob->ctr.wal_bytes, bytes);
	max_store(&ob->ctr.wal_peak_bytes, bytes);
	return SQLITE_OK;
}

static int64_t step_scalar(sqlite3_stmt *st)
{
	int64_t v = -1;
	sqlite3_reset(st);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return v;
}

/* Pages in use, and the record-byte cap they allow (see the top of the file). Writer. */
static void update_caps(outbox *ob)
{
	int64_t pages = step_scalar(ob->page_count), freel = step_scalar(ob->freelist_count);
	if (pages < 0 || freel < 0)
		return;
	int64_t used = (pages - freel) * ob->page_size;
	atomic_store(&ob->ctr.db_used_bytes, used);
	if (ob->opts.max_bytes <= 0) {
		atomic_store(&ob->ctr.record_cap_bytes, 0);
		return;
	}
	int64_t rec = atomic_load(&ob->ctr.bytes);
	double per_byte = rec >= MEASURE_MIN_BYTES && used > 0 ? (double)used / (double)rec : DEFAULT_PAGES_PER_BYTE;
	if (per_byte < 1.0)
		per_byte = 1.0;
	int64_t cap = (int64_t)((double)ob->db_budget / per_byte);
	atomic_store(&ob->ctr.record_cap_bytes, cap > 1 ? cap : 1);
}

/* Page cache per connection (KiB): the ingest writer appends at the right edge of the
 * table and its index, a few pages deep (512 KiB appends as fast as 1 MiB in bench_outbox);
 * a forwarder reads its batch front to back and deletes it; the checkpointer copies WAL
 * frames without going through its cache. Each cache is resident once filled, so they are
 * sized to what each connection touches. */
enum { CACHE_WRITER_KIB = 256, CACHE_READER_KIB = 256, CACHE_CHECKPOINT_KIB = 64 };

static int poll_busy(void *ud, int n)
{
	const int *soft = ud;
	if (n >= 50000 || (soft && *soft && n >= SOFT_RESTART_WAIT_US / 100))
		return 0;
	struct timespec ts = {0, 100000};
	nanosleep(&ts, NULL);
	return 1;
}

static int64_t mono_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* ---- checkpoints and SQLite's WAL-reset race ------------------------------------------
 * SQLite up to 3.51.2 (Debian 12 ships 3.40.1) has a data race, the "WAL-reset bug"
 * (sqlite.org/wal.html#walresetbug): when a checkpoint starts just after another one copied
 * the whole WAL back, while a third connection's commit is starting the WAL over, the second
 * checkpoint can record frames of the new WAL as copied when they are not; a later restart
 * of the WAL loses them and the database is corrupt. The outbox invited it: a checkpoint
 * thread passing every 250 ms, RESTART checkpoints from the writer and the forwarders (each
 * copying everything back, the state the race starts from), and commits on four or more
 * connections. Once a checkpoint has copied everything, the next commit to finish has either
 * started the WAL over or, with a reader still on an older snapshot, appended to it; in both
 * cases no restart is pending any more until a checkpoint copies everything again. So every
 * checkpoint of this process goes through ckpt_run, one at a time, which notes the count of
 * finished commits (the WAL hook) when a checkpoint copied everything, and starts none until
 * a commit has finished since: the window of the race never sees a second checkpoint, and
 * there is nothing to copy in it anyway. "Copied everything" must be true of the WAL as it
 * is, not only of the pass's snapshot: a commit that finished during the pass may have
 * appended frames the pass did not see (then no restart is pending and the next checkpoint
 * is safe), so it counts only when the last commit's WAL length is the pass's. Taking a
 * snapshot's full copy for the WAL's let the writer believe in restarts that never came,
 * and the WAL passed its bound (test_outbox, test_wal_bounded_during_a_drain, under load).
 * No other process writes outbox.db.
 *
 * sqlite3_wal_checkpoint_v2(db, mode) when it is safe: SQLITE_OK with *nlog == *nckpt when
 * everything was already copied and no commit has finished since (nothing run); SQLITE_BUSY
 * when another checkpoint of this process kept ckpt_run_mu past wait_us. */
static int ckpt_run(outbox *ob, sqlite3 *db, int mode, int64_t wait_us, int *nlog, int *nckpt)
{
	int64_t until = mono_us() + wait_us;
	while (pthread_mutex_trylock(&ob->ckpt_run_mu) != 0) {
		if (mono_us() >= until)
			return SQLITE_BUSY;
		struct timespec ts = {0, 100000};
		nanosleep(&ts, NULL);
	}
	int log = -1, ckpt = -1, rc = SQLITE_OK;
	if (ob->full_pending && atomic_load(&ob->wal_commits) == ob->full_at) {
		log = ckpt = 0; /* copied back, the restart still pending: leave it alone */
		atomic_fetch_add(&ob->ctr.ckpt_skipped, 1);
	} else {
		ob->full_pending = 0;
		rc = sqlite3_wal_checkpoint_v2(db, NULL, mode, &log, &ckpt);
		/* whatever rc says (a RESTART that fell back to a passive pass returns BUSY), the
		 * counts tell whether every frame of the pass's snapshot was copied; the commit
		 * count and the WAL length are read after it, as a pair */
		if (log > 0 && ckpt >= log) {
			for (int tries = 0; tries < 3; tries++) {
				uint64_t c = atomic_load(&ob->wal_commits);
				int frames = atomic_load(&ob->wal_frames);
				if (atomic_load(&ob->wal_commits) != c)
					continue;
				if (frames == log) { /* the WAL as it is: all copied back */
					ob->full_pending = 1;
					ob->full_at = c;
				}
				break;
			}
		}
	}
	pthread_mutex_unlock(&ob->ckpt_run_mu);
	if (nlog)
		*nlog = log;
	if (nckpt)
		*nckpt = ckpt;
	return rc;
}

static int on_wal_commit(void *ud, sqlite3 *db, const char *name, int frames);
static int wal_restart(outbox *ob, int soft);
static void abort_group(outbox *ob);
static int disk_low(outbox *ob);

/* A statement of the group failed with SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM: SQLite
 * then rolls the whole transaction back on its own. The group must end there (abort_group):
 * carrying on as if it were open ran the next statements in autocommit, each committed at
 * once, and the group's COMMIT failed with "no transaction is active" while its appends
 * (and the ids they took) stayed. */
static int txn_lost(const outbox *ob) { return ob->in_txn && sqlite3_get_autocommit(ob->db); }

/* The group hooks in order; for OUTBOX_GROUP_COMMITTING the first failure stops the round
 * (the caller rolls the group back, and every hook then hears of that). */
static int run_hooks(outbox *ob, outbox_group_event ev, int64_t now_ms)
{
	for (size_t i = 0; i < ob->nhooks; i++) {
		int rc = ob->hooks[i].fn(ob->hooks[i].ud, ev, now_ms);
		if (rc < 0 && ev == OUTBOX_GROUP_COMMITTING)
			return rc;
	}
	return 0;
}

/* A record was refused (not stored, so the daemon does not acknowledge it and the broker
 * delivers it again): the open group goes too, since its messages' acknowledgements are held
 * and dropped with the connection, and the group hooks hear of a rollback even when no group
 * was open, so that what a module noted for this record before the append (the dedupe
 * reading, an aggregate's change) is taken back. Without that, the broker's redelivery was
 * taken for a duplicate of a message that was never stored (the chaos run's disk_full and
 * uplink_slow phases each lost one). */
static void refuse_group(outbox *ob)
{
	if (ob->in_txn)
		abort_group(ob);
	else
		run_hooks(ob, OUTBOX_GROUP_ROLLED_BACK, tg_wall_ms());
}

/* Every connection's commits report the WAL's length (frames since it last restarted). */
static int open_db(outbox *ob, sqlite3 **out, int cache_kib, int *soft, char *err, size_t errlen)
{
	const char *path = ob->path;
	int sync_full = ob->opts.synchronous_full;
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return TG_EDB;
	}
	/* poll for the lock every 100 us for up to 5 s: SQLite's default handler sleeps for
	 * growing intervals (up to 100 ms) and, with the ingest writer and the forwarders'
	 * deletes taking turns every few milliseconds, overslept each turn by milliseconds */
	sqlite3_busy_handler(db, poll_busy, soft);
	char sql[320];
	/* journal_size_limit: a restarted WAL file is cut back to the bound */
	snprintf(sql, sizeof sql,
		 "PRAGMA page_size=16384; PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
		 "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-%d; PRAGMA wal_autocheckpoint=0;"
		 "PRAGMA journal_size_limit=%lld;",
		 sync_full ? "FULL" : "NORMAL", cache_kib, (long long)ob->wal_limit);
	*out = db; /* even on failure, so the caller can read the error code, then close */
	rc = exec(db, sql, err, errlen);
	/* after the pragmas: wal_autocheckpoint replaces the WAL hook */
	sqlite3_wal_hook(db, on_wal_commit, ob);
	return rc;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	int64_t v = scalar(db, "PRAGMA user_version");
	if (v < 0)
		return tg_seterr(err, errlen, TG_EDB, "cannot read schema version: %s", sqlite3_errmsg(db));
	if (v > OUTBOX_SCHEMA_VERSION)
		return tg_seterr(err, errlen, TG_EDB, "outbox schema version %" PRId64 " is newer than this build (%d)", v,
				 OUTBOX_SCHEMA_VERSION);
	static const char *const steps[OUTBOX_SCHEMA_VERSION] = {
		"BEGIN;" OUTBOX_SQL_V1 "PRAGMA user_version=1; COMMIT;",
		"BEGIN;" OUTBOX_SQL_V2 "PRAGMA user_version=2; COMMIT;",
		"BEGIN;" OUTBOX_SQL_V3 "PRAGMA user_version=3; COMMIT;",
	};
	for (int64_t step = v; step < OUTBOX_SCHEMA_VERSION; step++) {
		int rc = exec(db, steps[step], err, errlen);
		if (rc) {
			exec(db, "ROLLBACK", NULL, 0);
			return rc;
		}
	}
	return 0;
}

static void writer_finalize(outbox *ob)
{
	sqlite3_stmt **all[] = {&ob->ins, &ob->set_last, &ob->sink_id, &ob->sink_add, &ob->oldest, &ob->del,
				&ob->quar, &ob->quar_trim, &ob->del_range, &ob->page_count, &ob->freelist_count,
				&ob->dead_list, &ob->dead_delete};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
		sqlite3_finalize(*all[i]);
		*all[i] = NULL;
	}
}

/* ---- per-sink backlog ---------------------------------------------------------------- */

static struct sink_backlog *backlog_of(outbox *ob, int64_t sink_id)
{
	int n = atomic_load(&ob->nbacklog);
	for (int i = 0; i < n; i++)
		if (ob->backlog[i].id == sink_id)
			return &ob->backlog[i];
	return NULL;
}

/* A slot for a sink the writer knows (writer thread only). */
static void backlog_register(outbox *ob, int64_t sink_id, const char *name)
{
	int n = atomic_load(&ob->nbacklog);
	if (backlog_of(ob, sink_id) || n >= MAX_SINKS || !(ob->backlog[n].name = strdup(name)))
		return;
	ob->backlog[n].id = sink_id;
	atomic_store(&ob->backlog[n].rows, 0);
	atomic_store(&ob->backlog[n].bytes, 0);
	atomic_store(&ob->nbacklog, n + 1);
}

static void backlog_add(outbox *ob, int64_t sink_id, int64_t rows, int64_t bytes)
{
	struct sink_backlog *b = backlog_of(ob, sink_id);
	if (b) {
		atomic_fetch_add(&b->rows, rows);
		atomic_fetch_add(&b->bytes, bytes);
	}
}

static void delta_add(struct sink_delta *sd, int64_t sink_id, int64_t rows, int64_t bytes)
{
	if (!sd)
		return;
	size_t i = 0;
	while (i < sd->n && sd->d[i].sink != sink_id)
		i++;
	if (i == sd->n) {
		if (sd->n == MAX_SINKS)
			return;
		sd->n++;
		sd->d[i].sink = sink_id;
		sd->d[i].rows = sd->d[i].bytes = 0;
	}
	sd->d[i].rows += rows;
	sd->d[i].bytes += bytes;
}

/* Count a committed deletion out of the backlog and clear sd. */
static void delta_apply(outbox *ob, struct sink_delta *sd)
{
	for (size_t i = 0; sd && i < sd->n; i++)
		backlog_add(ob, sd->d[i].sink, -sd->d[i].rows, -sd->d[i].bytes);
	if (sd)
		sd->n = 0;
}

/* The queued totals, whole and per sink, from one scan of the table at open. */
static int backlog_load(outbox *ob, char *err, size_t errlen)
{
	for (int i = 0; i < atomic_load(&ob->nbacklog); i++) /* a second open after moving a corrupt file aside */
		free(ob->backlog[i].name);
	atomic_store(&ob->nbacklog, 0);
	for (size_t i = 0; i < ob->nsinks; i++)
		backlog_register(ob, ob->sinks[i].id, ob->sinks[i].name);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(ob->db, OUTBOX_SQL_SINK_TOTALS, -1, &st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "totals: %s", sqlite3_errmsg(ob->db));
	int64_t rows = 0, bytes = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t r = sqlite3_column_int64(st, 1), b = sqlite3_column_int64(st, 2);
		backlog_add(ob, sqlite3_column_int64(st, 0), r, b);
		rows += r;
		bytes += b;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return tg_seterr(err, errlen, TG_EDB, "totals: %s", sqlite3_errmsg(ob->db));
	atomic_store(&ob->ctr.rows, rows);
	atomic_store(&ob->ctr.bytes, bytes);
	return 0;
}

/* Try to open and prepare; returns TG_EDB with SQLite's primary code in *sqlite_rc. */
static int writer_setup(outbox *ob, char *err, size_t errlen)
{
	int rc;
	if ((rc = open_db(ob, &ob->db, CACHE_WRITER_KIB, &ob->busy_soft, err, errlen)))
		return rc;
	if ((rc = migrate(ob->db, err, errlen)))
		return rc;
	if ((rc = prep(ob->db, &ob->ins, OUTBOX_SQL_INSERT, err, errlen)) ||
	    (rc = prep(ob->db, &ob->set_last, OUTBOX_SQL_SET_LAST_ID, err, errlen)) ||
	    (rc = prep(ob->db, &ob->sink_id, OUTBOX_SQL_SINK_ID, err, errlen)) ||
	    (rc = prep(ob->db, &ob->sink_add, OUTBOX_SQL_SINK_ADD, err, errlen)) ||
	    (rc = prep(ob->db, &ob->oldest, OUTBOX_SQL_OLDEST, err, errlen)) ||
	    (rc = prep(ob->db, &ob->del, OUTBOX_SQL_DELETE, err, errlen)) ||
	    (rc = prep(ob->db, &ob->quar, OUTBOX_SQL_QUARANTINE, err, errlen)) ||
	    (rc = prep(ob->db, &ob->quar_trim, OUTBOX_SQL_QUARANTINE_TRIM, err, errlen)) ||
	    (rc = prep(ob->db, &ob->del_range, OUTBOX_SQL_DELETE_RANGE, err, errlen)) ||
	    (rc = prep(ob->db, &ob->page_count, OUTBOX_SQL_PAGE_COUNT, err, errlen)) ||
	    (rc = prep(ob->db, &ob->freelist_count, OUTBOX_SQL_FREELIST, err, errlen)) ||
	    (rc = prep(ob->db, &ob->dead_list, OUTBOX_SQL_DEAD_LIST, err, errlen)) ||
	    (rc = prep(ob->db, &ob->dead_delete, OUTBOX_SQL_DEAD_DELETE, err, errlen)))
		return rc;
	ob->page_size = scalar(ob->db, "PRAGMA page_size");
	if (ob->page_size <= 0)
		return tg_seterr(err, errlen, TG_EDB, "cannot read the page size: %s", sqlite3_errmsg(ob->db));
	if (ob->opts.max_bytes > 0) {
		/* the -shm index: 32 KiB per 4096 WAL frames, and a header */
		int64_t shm = 32768 * (ob->wal_limit / ob->page_size / 4096 + 2);
		ob->db_budget = ob->opts.max_bytes - ob->wal_limit - shm;
		if (ob->db_budget < ob->opts.max_bytes / 2)
			ob->db_budget = ob->opts.max_bytes / 2;
	}
	int64_t last = scalar(ob->db, OUTBOX_SQL_GET_LAST_ID), maxid = scalar(ob->db, OUTBOX_SQL_MAX_ID);
	if (last < 0 || maxid < 0)
		return tg_seterr(err, errlen, TG_EDB, "cannot read ids: %s", sqlite3_errmsg(ob->db));
	ob->last_id = ob->committed_last_id = last > maxid ? last : maxid;
	sqlite3_stmt *all;
	if (sqlite3_prepare_v2(ob->db, OUTBOX_SQL_ALL_SINKS, -1, &all, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "sinks: %s", sqlite3_errmsg(ob->db));
	/* A second setup (after moving a corrupt file aside) starts from the new file's sinks. */
	for (size_t i = 0; i < ob->nsinks; i++)
		free(ob->sinks[i].name);
	ob->nsinks = 0;
	while (ob->nsinks < MAX_SINKS && sqlite3_step(all) == SQLITE_ROW) {
		char *name = strdup((const char *)sqlite3_column_text(all, 1));
		if (!name)
			break;
		ob->sinks[ob->nsinks].id = sqlite3_column_int64(all, 0);
		ob->sinks[ob->nsinks++].name = name;
	}
	sqlite3_finalize(all);
	rc = backlog_load(ob, err, errlen);
	if (rc == 0)
		update_caps(ob);
	return rc;
}

#define CHECKPOINT_EVERY_MS 250

static void *checkpointer(void *arg)
{
	outbox *ob = arg;
	sqlite3 *db = NULL;
	if (open_db(ob, &db, CACHE_CHECKPOINT_KIB, NULL, NULL, 0)) {
		LOG_ERROR("outbox", "msg=\"checkpointer cannot open the outbox\" path=%s", ob->path);
		sqlite3_close(db);
		return NULL;
	}
	pthread_mutex_lock(&ob->ckpt_mu);
	while (!ob->ckpt_stop) {
		struct timespec ts = tg_deadline_in(CHECKPOINT_EVERY_MS);
		pthread_cond_timedwait(&ob->ckpt_cv, &ob->ckpt_mu, &ts);
		if (ob->ckpt_stop)
			break;
		pthread_mutex_unlock(&ob->ckpt_mu);
		/* PASSIVE never blocks the writer or readers; what it cannot copy now it copies next time */
		int nlog = -1, nckpt = -1;
		int rc = ckpt_run(ob, db, SQLITE_CHECKPOINT_PASSIVE, CHECKPOINT_EVERY_MS * 1000, &nlog, &nckpt);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			LOG_WARN("outbox", "msg=\"checkpoint failed\" err=\"%s\"", sqlite3_errmsg(db));
		atomic_store(&ob->ckpt_copied, rc == SQLITE_OK ? nckpt : -1);
		atomic_fetch_add(&ob->ckpt_passes, 1);
		pthread_mutex_lock(&ob->ckpt_mu);
	}
	pthread_mutex_unlock(&ob->ckpt_mu);
	ckpt_run(ob, db, SQLITE_CHECKPOINT_PASSIVE, CHECKPOINT_EVERY_MS * 1000, NULL, NULL);
	sqlite3_close(db);
	return NULL;
}

outbox *outbox_open(const char *path, const outbox_opts *opts, char *err, size_t errlen)
{
	outbox *ob = calloc(1, sizeof *ob);
	if (!ob || !(ob->path = strdup(path)) || !(ob->gateway_id = strdup(opts->gateway_id ? opts->gateway_id : "gw"))) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&ob->pend_mu, NULL);
	pthread_mutex_init(&ob->ckpt_run_mu, NULL);
	ob->ckpt_run_mu_init = 1;
	ob->opts = *opts;
	ob->opts.gateway_id = ob->gateway_id;
	if (ob->opts.commit_max_records <= 0)
		ob->opts.commit_max_records = 500;
	if (ob->opts.commit_interval_ms <= 0)
		ob->opts.commit_interval_ms = 5;
	ob->wal_limit = ob->opts.wal_max_bytes > 0 ? ob->opts.wal_max_bytes : WAL_DEFAULT_MAX;
	if (ob->opts.max_bytes > 0 && ob->wal_limit > ob->opts.max_bytes / 4)
		ob->wal_limit = ob->opts.max_bytes / 4;
	if (ob->wal_limit < WAL_MIN_MAX)
		ob->wal_limit = WAL_MIN_MAX;
	atomic_store(&ob->ctr.wal_limit_bytes, ob->wal_limit);
	char why[512];
	if (writer_setup(ob, why, sizeof why)) {
		int code = ob->db ? sqlite3_errcode(ob->db) : SQLITE_CANTOPEN;
		if (code != SQLITE_CORRUPT && code != SQLITE_NOTADB) {
			tg_seterr(err, errlen, TG_EDB, "outbox %s: %s", path, why);
			goto fail;
		}
		/* unreadable database: move it aside and start over rather than crash-loop */
		writer_finalize(ob);
		sqlite3_close(ob->db);
		ob->db = NULL;
		char aside[4096];
		snprintf(aside, sizeof aside, "%s.corrupt-%" PRId64, path, tg_wall_ms() / 1000);
		LOG_ERROR("outbox", "msg=\"outbox database unreadable, moved aside\" path=%s moved_to=%s reason=\"%s\"", path,
			  aside, why);
		if (rename(path, aside) != 0) {
			tg_seterr(err, errlen, TG_EIO, "outbox %s is corrupt and cannot be moved aside: %s", path, strerror(errno));
			goto fail;
		}
		char side[4200];
		snprintf(side, sizeof side, "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof side, "%s-shm", path);
		unlink(side);
		if (writer_setup(ob, why, sizeof why)) {
			tg_seterr(err, errlen, TG_EDB, "outbox %s: %s", path, why);
			goto fail;
		}
		/* ids must not restart at 1: downstream dedupes on msg_id and S3/lake object
		 * names carry ids. Continue from a clock-derived floor instead. */
		int64_t floor_id = tg_wall_ms() * 1000;
		if (ob->last_id < floor_id)
			ob->last_id = ob->committed_last_id = floor_id;
	}
	pthread_mutex_init(&ob->ckpt_mu, NULL);
	tg_cond_init_mono(&ob->ckpt_cv);
	if (pthread_create(&ob->ckpt_tid, NULL, checkpointer, ob) != 0) {
		tg_seterr(err, errlen, TG_ENOMEM, "cannot start the checkpoint thread");
		goto fail;
	}
	ob->ckpt_started = 1;
	return ob;
fail:
	outbox_close(ob);
	return NULL;
}

outbox_counters *outbox_counters_of(outbox *ob) { return &ob->ctr; }

int outbox_disk_usage(const outbox *ob, outbox_disk *d)
{
	*d = (outbox_disk){0};
	char p[4200];
	struct stat st;
	int rc = 0;
	if (stat(ob->path, &st) == 0)
		d->db = (int64_t)st.st_size;
	else
		rc = TG_EIO;
	snprintf(p, sizeof p, "%s-wal", ob->path);
	if (stat(p, &st) == 0) /* absent between runs: 0 */
		d->wal = (int64_t)st.st_size;
	snprintf(p, sizeof p, "%s-shm", ob->path);
	if (stat(p, &st) == 0)
		d->shm = (int64_t)st.st_size;
	d->total = d->db + d->wal + d->shm;
	return rc;
}

static int begin(outbox *ob, int64_t now_ms);

void outbox_close(outbox *ob)
{
	if (!ob)
		return;
	if (ob->db && ob->in_txn && outbox_commit(ob) < 0)
		LOG_ERROR("outbox", "msg=\"final commit failed\" err=\"%s\"", sqlite3_errmsg(ob->db));
	/* deliveries settled since the last commit: delete them now (the forwarders have
	 * stopped), or they would be delivered again after the restart */
	if (ob->db && atomic_load(&ob->pend_rows) > 0 && (begin(ob, tg_wall_ms()) || outbox_commit(ob) < 0))
		LOG_ERROR("outbox", "msg=\"deleting delivered rows failed\" err=\"%s\"", sqlite3_errmsg(ob->db));
	if (ob->ckpt_started) {
		pthread_mutex_lock(&ob->ckpt_mu);
		ob->ckpt_stop = 1;
		pthread_cond_signal(&ob->ckpt_cv);
		pthread_mutex_unlock(&ob->ckpt_mu);
		pthread_join(ob->ckpt_tid, NULL);
		pthread_cond_destroy(&ob->ckpt_cv);
		pthread_mutex_destroy(&ob->ckpt_mu);
	}
	writer_finalize(ob);
	if (ob->db)
		sqlite3_close(ob->db);
	if (ob->ckpt_run_mu_init)
		pthread_mutex_destroy(&ob->ckpt_run_mu);
	for (size_t i = 0; i < ob->nsinks; i++)
		free(ob->sinks[i].name);
	for (int i = 0; i < atomic_load(&ob->nbacklog); i++)
		free(ob->backlog[i].name);
	free(ob->applied_delta);
	free(ob->pend);
	free(ob->applied);
	pthread_mutex_destroy(&ob->pend_mu);
	free(ob->line.p);
	free(ob->path);
	free(ob->gateway_id);
	free(ob);
}

/* ---- delivered rows queued for deletion (see outbox_settle) ------------------------- */

/* Take every queued run (the caller owns the array). */
static struct pend_del *pend_take(outbox *ob, size_t *n)
{
	pthread_mutex_lock(&ob->pend_mu);
	struct pend_del *v = ob->pend;
	*n = ob->npend;
	ob->pend = NULL;
	ob->npend = ob->pend_cap = 0;
	atomic_store(&ob->pend_rows, 0);
	pthread_mutex_unlock(&ob->pend_mu);
	return v;
}

/* Append runs to the queue; 0 or TG_ENOMEM (then nothing was added). */
static int pend_add_locked(outbox *ob, const struct pend_del *v, size_t n)
{
	if (n == 0) /* v may be NULL then (an aborted group that had applied nothing) */
		return 0;
	if (ob->npend + n > ob->pend_cap) {
		size_t cap = ob->pend_cap ? ob->pend_cap * 2 : 16;
		while (cap < ob->npend + n)
			cap *= 2;
		struct pend_del *p = realloc(ob->pend, cap * sizeof *p);
		if (!p)
			return TG_ENOMEM;
		ob->pend = p;
		ob->pend_cap = cap;
	}
	memcpy(ob->pend + ob->npend, v, n * sizeof *v);
	ob->npend += n;
	for (size_t i = 0; i < n; i++)
		atomic_fetch_add(&ob->pend_rows, v[i].n);
	return 0;
}

/* Give taken runs back (their deletion did not commit); frees v. */
static void pend_putback(outbox *ob, struct pend_del *v, size_t n)
{
	if (!v)
		return;
	pthread_mutex_lock(&ob->pend_mu);
	if (pend_add_locked(ob, v, n))
		LOG_ERROR("outbox", "msg=\"out of memory: %zu delivered runs stay until the restart resends them\"", n);
	pthread_mutex_unlock(&ob->pend_mu);
	free(v);
}

/* Delete runs through st (a DELETE_RANGE on db, inside the caller's transaction); adds the
 * rows and stored bytes actually deleted (fewer when drop_oldest got there first). */
static int pend_delete(sqlite3 *db, sqlite3_stmt *st, const struct pend_del *v, size_t n, int64_t *rows,
		       int64_t *bytes, struct sink_delta *sd)
{
	for (size_t i = 0; i < n; i++) {
		const struct pend_del *p = &v[i];
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, p->sink);
		sqlite3_bind_int(st, 2, p->prio);
		sqlite3_bind_int64(st, 3, p->seq_lo);
		sqlite3_bind_int64(st, 4, p->seq_hi);
		sqlite3_bind_int64(st, 5, p->id_lo);
		sqlite3_bind_int64(st, 6, p->id_hi);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return TG_EDB;
		int64_t ch = sqlite3_changes(db);
		int64_t chb = ch == p->n ? p->bytes : p->bytes * ch / p->n;
		*rows += ch;
		*bytes += chb;
		delta_add(sd, p->sink, ch, chb);
	}
	return 0;
}

/* Writer side: delete the queued runs inside the open transaction; they are counted out
 * when it commits. 0, or TG_EDB when SQLite rolled the whole transaction back (see
 * txn_lost): the caller aborts the group. */
static int writer_apply(outbox *ob)
{
	if (atomic_load(&ob->pend_rows) == 0)
		return 0;
	size_t n;
	struct pend_del *v = pend_take(ob, &n);
	if (!n) {
		free(v);
		return 0;
	}
	int64_t rows = 0, bytes = 0;
	if (!ob->applied_delta && !(ob->applied_delta = calloc(1, sizeof *ob->applied_delta))) {
		pend_putback(ob, v, n);
		return 0;
	}
	struct pend_del *all = realloc(ob->applied, (ob->napplied + n) * sizeof *all);
	if (!all || pend_delete(ob->db, ob->del_range, v, n, &rows, &bytes, ob->applied_delta)) {
		if (all)
			ob->applied = all;
		/* the runs before the failure are deleted in this transaction: count them out at
		 * its commit; all go back to the queue (a run deleted twice deletes nothing) */
		ob->applied_rows += rows;
		ob->applied_bytes += bytes;
		LOG_WARN("outbox", "msg=\"deleting delivered rows failed, will retry\" err=\"%s\"", sqlite3_errmsg(ob->db));
		pend_putback(ob, v, n);
		return txn_lost(ob) ? TG_EDB : 0;
	}
	pthread_mutex_lock(&ob->pend_mu); /* outbox_pending reads the list too */
	ob->applied = all;
	memcpy(ob->applied + ob->napplied, v, n * sizeof *v);
	ob->napplied += n;
	pthread_mutex_unlock(&ob->pend_mu);
	ob->applied_rows += rows;
	ob->applied_bytes += bytes;
	free(v);
	return 0;
}

static int begin(outbox *ob, int64_t now_ms)
{
	if (ob->in_txn)
		return 0;
	/* one more group must not take the WAL past its bound: insist on the restart the soft
	 * attempts after the last commits could not get */
	int64_t margin = ob->group_wal_max < ob->wal_limit / 4 ? ob->group_wal_max : ob->wal_limit / 4;
	if (atomic_load(&ob->ctr.wal_bytes) + margin > ob->wal_limit && !wal_restart(ob, 0)) {
		LOG_ERROR("outbox", "msg=\"WAL at its bound and a reader keeps it from starting over; not taking more\" "
				    "wal_bytes=%" PRId64 " wal_max_bytes=%" PRId64,
			  atomic_load(&ob->ctr.wal_bytes), ob->wal_limit);
		return TG_EDB;
	}
	/* let a waiting forwarder have the lock first (its delete takes about a millisecond);
	 * bounded, so a stuck reader cannot stall ingest */
	for (int i = 0; i < 400 && atomic_load(&ob->readers_waiting) > 0; i++) {
		struct timespec ts = {0, 50000};
		nanosleep(&ts, NULL);
	}
	if (exec(ob->db, "BEGIN IMMEDIATE", NULL, 0))
		return TG_EDB;
	ob->in_txn = 1;
	ob->group_n = ob->group_rows = ob->group_bytes = 0;
	ob->group_first_ms = now_ms;
	atomic_store(&ob->ctr.oldest_uncommitted_ms, now_ms);
	if (writer_apply(ob)) {
		abort_group(ob);
		return TG_EDB;
	}
	return 0;
}

static int64_t sink_id_of(outbox *ob, const char *name)
{
	for (size_t i = 0; i < ob->nsinks; i++)
		if (strcmp(ob->sinks[i].name, name) == 0)
			return ob->sinks[i].id;
	if (ob->nsinks == MAX_SINKS)
		return TG_EFULL;
	int64_t id = -1;
	sqlite3_reset(ob->sink_id);
	sqlite3_bind_text(ob->sink_id, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(ob->sink_id) == SQLITE_ROW)
		id = sqlite3_column_int64(ob->sink_id, 0);
	sqlite3_reset(ob->sink_id);
	if (id < 0) {
		sqlite3_reset(ob->sink_add);
		sqlite3_bind_text(ob->sink_add, 1, name, -1, SQLITE_STATIC);
		if (sqlite3_step(ob->sink_add) != SQLITE_DONE)
			return TG_EDB;
		id = sqlite3_last_insert_rowid(ob->db);
		sqlite3_reset(ob->sink_add);
	}
	char *dup = strdup(name);
	if (!dup)
		return TG_ENOMEM;
	ob->sinks[ob->nsinks].name = dup;
	ob->sinks[ob->nsinks++].id = id;
	backlog_register(ob, id, name);
	return id;
}

/* The first (oldest) seq of (sink, prio), or INT64_MAX when it has none. */
static int64_t first_seq(outbox *ob, int64_t sid, int prio)
{
	sqlite3_reset(ob->oldest);
	sqlite3_bind_int64(ob->oldest, 1, sid);
	sqlite3_bind_int(ob->oldest, 2, prio);
	sqlite3_bind_int64(ob->oldest, 3, INT64_MAX);
	sqlite3_bind_int64(ob->oldest, 4, 1);
	int64_t seq = sqlite3_step(ob->oldest) == SQLITE_ROW ? sqlite3_column_int64(ob->oldest, 0) : INT64_MAX;
	sqlite3_reset(ob->oldest);
	return seq;
}

/* Delete lowest-priority oldest rows until under 95 % of the caps: priority by priority
 * (bulk first, alerts last), and within one the oldest records first whichever sink holds
 * them (seqs follow record ids across sinks), so a sink that is down loses its oldest rows
 * before a working sink loses the few it has not sent yet. */
static int make_room(outbox *ob, int64_t need_bytes)
{
	if (writer_apply(ob)) /* delivered rows go first, and must not count as dropped */
		return TG_EDB;
	int64_t rows = atomic_load(&ob->ctr.rows), bytes = atomic_load(&ob->ctr.bytes);
	int64_t target_rows = ob->opts.max_rows ? ob->opts.max_rows - ob->opts.max_rows / 20 - 1 : INT64_MAX;
	int64_t cap = atomic_load(&ob->ctr.record_cap_bytes);
	int64_t target_bytes = cap > 0 ? cap - cap / 20 - need_bytes : INT64_MAX;
	uint64_t dropped = 0, dropped_alerts = 0;
	for (int prio = OUTBOX_PRIO_BULK; prio <= OUTBOX_PRIO_ALERT; prio++) {
		int progress = 1;
		while ((rows > target_rows || bytes > target_bytes) && progress) {
			progress = 0;
			/* the sink holding the oldest row, and where the next-oldest sink starts */
			int64_t sid = -1, lo = INT64_MAX, next = INT64_MAX;
			for (size_t k = 0; k < ob->nsinks; k++) {
				int64_t f = first_seq(ob, ob->sinks[k].id, prio);
				if (f < lo) {
					next = lo;
					lo = f;
					sid = ob->sinks[k].id;
				} else if (f < next) {
					next = f;
				}
			}
			if (sid < 0)
				break;
			int64_t seqs[256], lens[256];
			int n = 0;
			sqlite3_reset(ob->oldest);
			sqlite3_bind_int64(ob->oldest, 1, sid);
			sqlite3_bind_int(ob->oldest, 2, prio);
			sqlite3_bind_int64(ob->oldest, 3, next);
			sqlite3_bind_int64(ob->oldest, 4, 256);
			while (n < 256 && sqlite3_step(ob->oldest) == SQLITE_ROW) {
				seqs[n] = sqlite3_column_int64(ob->oldest, 0);
				lens[n++] = sqlite3_column_int64(ob->oldest, 1);
			}
			sqlite3_reset(ob->oldest);
			for (int i = 0; i < n && (rows > target_rows || bytes > target_bytes); i++) {
				sqlite3_reset(ob->del);
				sqlite3_bind_int64(ob->del, 1, sid);
				sqlite3_bind_int(ob->del, 2, prio);
				sqlite3_bind_int64(ob->del, 3, seqs[i]);
				int rc = sqlite3_step(ob->del);
				sqlite3_reset(ob->del);
				if (rc != SQLITE_DONE)
					return TG_EDB;
				if (sqlite3_changes(ob->db) != 1)
					continue;
				progress = 1;
				rows--;
				bytes -= lens[i];
				atomic_fetch_sub(&ob->ctr.rows, 1);
				atomic_fetch_sub(&ob->ctr.bytes, lens[i]);
				backlog_add(ob, sid, -1, -lens[i]);
				dropped++;
				if (prio >= OUTBOX_PRIO_ALERT)
					dropped_alerts++;
			}
		}
	}
	if (dropped) {
		atomic_fetch_add(&ob->ctr.dropped, dropped);
		atomic_fetch_add(&ob->ctr.dropped_alerts, dropped_alerts);
		LOG_WARN("outbox", "msg=\"outbox full, dropped oldest\" dropped=%" PRIu64 " alerts_dropped=%" PRIu64
			 " rows=%" PRId64 " bytes=%" PRId64, dropped, dropped_alerts, rows, bytes);
	}
	return 0;
}

static int over_cap(const outbox *ob, int64_t add_rows, int64_t add_bytes)
{
	int64_t cap = atomic_load(&ob->ctr.record_cap_bytes);
	return (ob->opts.max_rows && atomic_load(&ob->ctr.rows) + add_rows > ob->opts.max_rows) ||
	       (cap > 0 && atomic_load(&ob->ctr.bytes) + add_bytes > cap);
}

int outbox_append(outbox *ob, const char *const *sinks, size_t nsinks, int prio, const char *table,
		  const char *pkey, int64_t created_ms, json_t *obj, int64_t *id_out)
{
	ob->line_valid = 0;
	if (nsinks == 0)
		return 0;
	if (nsinks > MAX_SINKS || prio < 0 || prio >= NPRIO)
		return TG_EINVAL;
	if (disk_low(ob)) {
		refuse_group(ob);
		return TG_EIO;
	}
	int64_t id = ob->last_id + 1;
	/* the line is stored without msg_id; the reader puts "msg_id" first when it hands the
	 * record to a sink (the id is the row's), so a device's own msg_id must not clash */
	json_object_del(obj, "msg_id");
	/* jsonout: json_dumpb's text without its snprintf per number */
	ob->line.len = 0;
	ob->line_valid = 0;
	int wrc = jsonout_write(&ob->line, obj);
	if (wrc)
		return wrc;
	const char *text = ob->line.p;
	size_t len = ob->line.len;
	int rc = 0;
	ob->disk_since += (int64_t)(len * nsinks);
	if (over_cap(ob, (int64_t)nsinks, (int64_t)(len * nsinks))) {
		if (ob->opts.full_policy == OUTBOX_REJECT_NEW) {
			atomic_fetch_add(&ob->ctr.rejected, 1);
			LOG_WARN("outbox", "msg=\"outbox full, record rejected\" table=%s pkey=%s", table, pkey);
			return TG_EFULL;
		}
		if ((rc = begin(ob, created_ms)) || (rc = make_room(ob, (int64_t)(len * nsinks))))
			goto out;
	}
	if ((rc = begin(ob, created_ms)))
		goto out;
	for (size_t i = 0; i < nsinks; i++) {
		int64_t sid = sink_id_of(ob, sinks[i]);
		if (sid < 0) {
			rc = (int)sid;
			goto out;
		}
		sqlite3_stmt *st = ob->ins;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_int(st, 2, prio);
		sqlite3_bind_int64(st, 3, id);
		sqlite3_bind_int64(st, 4, created_ms);
		sqlite3_bind_text(st, 5, table, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, pkey ? pkey : "", -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 7, text, (int)len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 8, id * MAX_SINKS + (int64_t)i);
		if (sqlite3_step(st) != SQLITE_DONE) {
			LOG_ERROR("outbox", "msg=\"insert failed, group rolled back\" err=\"%s\"", sqlite3_errmsg(ob->db));
			sqlite3_reset(st);
			abort_group(ob);
			return TG_EDB;
		}
		sqlite3_reset(st);
		ob->group_n++;
		ob->group_rows++;
		ob->group_bytes += (int64_t)len;
		atomic_fetch_add(&ob->ctr.rows, 1);
		atomic_fetch_add(&ob->ctr.bytes, (int64_t)len);
		backlog_add(ob, sid, 1, (int64_t)len);
	}
	ob->last_id = id;
	ob->line_valid = 1;
	if (id_out)
		*id_out = id;
out:
	/* TG_EFULL: no room in the outbox's caps, a refusal the caller counts and acknowledges;
	 * anything else was not stored and is delivered again */
	if (rc < 0 && (rc != TG_EFULL || txn_lost(ob)))
		refuse_group(ob);
	return rc;
}

int outbox_quarantine(outbox *ob, int64_t received_ms, const char *thing, const char *topic,
		      const char *reason, const char *field, const char *detail, const void *payload,
		      size_t len)
{
	if (disk_low(ob)) {
		refuse_group(ob);
		return TG_EIO;
	}
	int rc = begin(ob, received_ms);
	if (rc)
		return rc;
	sqlite3_stmt *st = ob->quar;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, received_ms);
	sqlite3_bind_text(st, 2, thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, topic, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, field, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, detail, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 7, payload, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 : TG_EDB;
	sqlite3_reset(st);
	if (rc) {
		if (txn_lost(ob))
			abort_group(ob);
		return rc;
	}
	ob->group_n++;
	atomic_fetch_add(&ob->ctr.quarantined, 1);
	/* keep the table bounded: ops inspect recent rejects; the full record also goes
	 * through the outbox to the lake's quarantine table */
	if (++ob->quarantine_n % 1024 == 0) {
		sqlite3_reset(ob->quar_trim);
		sqlite3_bind_int64(ob->quar_trim, 1, QUARANTINE_KEEP);
		int trc = sqlite3_step(ob->quar_trim);
		sqlite3_reset(ob->quar_trim);
		if (trc != SQLITE_DONE && txn_lost(ob)) {
			abort_group(ob);
			return TG_EDB;
		}
	}
	return 0;
}

/* The outbox must not fill its own file system. Once the disk is full, deleting delivered
 * rows needs room too (their WAL frames), and so does the checkpoint that copies frames of
 * new pages into the database file: with the disk full of the outbox's own backlog, neither
 * could run, nothing was ever freed, and the outbox stayed wedged after the uplink came
 * back (outbox_stress on a 24 MiB tmpfs). So appends stop while the file system's free space
 * is below what the checkpoint will add to the database file (the pages the WAL has beyond
 * the file's end) plus a margin for the deletions' frames (new rows that reuse free pages
 * inside the file need none): the daemon stops acknowledging (as for a full disk), the
 * forwarders drain, and appends resume by themselves. A file system filled by something else gets the same
 * answer, before SQLite's own SQLITE_FULL. */
static int disk_low(outbox *ob)
{
	int64_t now = tg_mono_ms();
	/* looked at again every DISK_CHECK_MS, and sooner under a fast stream of appends, so that
	 * what is appended between two looks stays well inside the margin (pages take about
	 * three times the record bytes) */
	if (!ob->disk_checked || now - ob->disk_checked_ms >= DISK_CHECK_MS || ob->disk_since * 3 > DISK_MARGIN / 4) {
		ob->disk_since = 0;
		struct statvfs sv;
		ob->disk_checked = 1;
		ob->disk_checked_ms = now;
		ob->disk_avail = statvfs(ob->path, &sv) == 0 ? (int64_t)sv.f_bavail * (int64_t)sv.f_frsize : -1;
		/* the database as the WAL has it (page_count) against the file: what the
		 * checkpoint will add to the file when it copies the frames back */
		struct stat st;
		int64_t pages = step_scalar(ob->page_count);
		int64_t grow = pages > 0 && stat(ob->path, &st) == 0 ? pages * ob->page_size - (int64_t)st.st_size : 0;
		/* and the WAL file's own growth up to where the writer restarts it (half its bound) */
		char wal[4200];
		snprintf(wal, sizeof wal, "%s-wal", ob->path);
		int64_t wal_grow = ob->wal_limit / 2 - (stat(wal, &st) == 0 ? (int64_t)st.st_size : 0);
		ob->disk_need = (grow > 0 ? grow : 0) + (wal_grow > 0 ? wal_grow : 0) + DISK_MARGIN;
	}
	int64_t need = ob->disk_need;
	int low = ob->disk_avail >= 0 && ob->disk_avail < need;
	if (low != ob->disk_low) {
		ob->disk_low = low;
		if (low)
			LOG_ERROR("outbox", "msg=\"disk full (less free space than the outbox needs to go on): taking no "
					    "more records until deliveries free space; nothing is acknowledged meanwhile, the "
					    "broker keeps the messages\" path=%s avail_bytes=%" PRId64 " need_bytes=%" PRId64,
				  ob->path, ob->disk_avail, need);
		else
			LOG_INFO("outbox", "msg=\"free space back, taking records again\" avail_bytes=%" PRId64,
				 ob->disk_avail);
	}
	if (low)
		atomic_store(&ob->ctr.disk_full, 1);
	return low;
}

/* The open group could not be stored (disk full, I/O error): roll it back and put the
 * counters and the queued deletions back as they were, so the next group starts clean. The
 * caller makes sure the messages of the group are not acknowledged. */
static void abort_group(outbox *ob)
{
	/* the error that brought us here, before ROLLBACK replaces it: a full disk is shown in
	 * /metrics (tidegate_outbox_disk_full) until a commit succeeds again */
	int code = sqlite3_extended_errcode(ob->db) & 0xff;
	if (code == SQLITE_FULL) {
		if (!atomic_exchange(&ob->ctr.disk_full, 1))
			LOG_ERROR("outbox", "msg=\"disk full: nothing is acknowledged until space returns; the broker keeps "
				  "the messages\" path=%s", ob->path);
	}
	if (!sqlite3_get_autocommit(ob->db))
		exec(ob->db, "ROLLBACK", NULL, 0);
	ob->in_txn = 0;
	ob->last_id = ob->committed_last_id;
	ob->group_n = ob->group_rows = ob->group_bytes = 0;
	pthread_mutex_lock(&ob->pend_mu);
	struct pend_del *undone = ob->applied;
	size_t nundone = ob->napplied;
	ob->applied = NULL;
	ob->napplied = 0;
	pthread_mutex_unlock(&ob->pend_mu);
	pend_putback(ob, undone, nundone); /* their deletion was rolled back too */
	ob->applied_rows = ob->applied_bytes = 0;
	if (ob->applied_delta)
		ob->applied_delta->n = 0;
	/* appends and drop_oldest moved the counters: read them back from what is stored, in
	 * one scan (a rare path: a disk that filled up) */
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(ob->db, OUTBOX_SQL_SINK_TOTALS, -1, &st, NULL) == SQLITE_OK) {
		int64_t rows = 0, bytes = 0;
		int n = atomic_load(&ob->nbacklog);
		for (int i = 0; i < n; i++) {
			atomic_store(&ob->backlog[i].rows, 0);
			atomic_store(&ob->backlog[i].bytes, 0);
		}
		while (sqlite3_step(st) == SQLITE_ROW) {
			int64_t r = sqlite3_column_int64(st, 1), b = sqlite3_column_int64(st, 2);
			backlog_add(ob, sqlite3_column_int64(st, 0), r, b);
			rows += r;
			bytes += b;
		}
		sqlite3_finalize(st);
		atomic_store(&ob->ctr.rows, rows);
		atomic_store(&ob->ctr.bytes, bytes);
	}
	atomic_store(&ob->ctr.oldest_uncommitted_ms, 0);
	atomic_fetch_add(&ob->ctr.aborted, 1);
	run_hooks(ob, OUTBOX_GROUP_ROLLED_BACK, tg_wall_ms());
}

/* After a commit: a WAL past half its bound starts over (see the top of the file). soft:
 * give up quickly when a reader holds it (the next commit tries again). Returns 1 when
 * the WAL will start over, 0 when not (yet). */
static int wal_restart(outbox *ob, int soft)
{
	int64_t t0 = mono_us();
	ob->busy_soft = soft;
	int nlog = 0, nckpt = 0, rc;
	int64_t us = 0, wait = soft ? SOFT_RESTART_WAIT_US : HARD_RESTART_WAIT_US;
	/* within one budget: ckpt_run waits for another checkpoint of this process (the
	 * checkpoint thread's pass), the busy handler for readers, and this loop tries again
	 * while a reader's snapshot still holds the WAL (SQLITE_BUSY) */
	for (;;) {
		rc = ckpt_run(ob, ob->db, SQLITE_CHECKPOINT_RESTART, wait - us, &nlog, &nckpt);
		us = mono_us() - t0;
		if (rc != SQLITE_BUSY || us >= wait)
			break;
		struct timespec pause = {0, 200000};
		nanosleep(&pause, NULL);
	}
	ob->busy_soft = 0;
	max_store(&ob->ctr.wal_restart_max_us, us);
	atomic_fetch_add(&ob->ctr.wal_restart_us, (uint64_t)us);
	if (rc == SQLITE_OK) {
		atomic_fetch_add(&ob->ctr.wal_restarts, 1);
		atomic_store(&ob->ctr.wal_bytes, 0); /* the next write transaction starts it over */
		return 1;
	}
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		atomic_fetch_add(&ob->ctr.wal_restart_busy, 1);
	else
		LOG_WARN("outbox", "msg=\"WAL checkpoint failed\" err=\"%s\"", sqlite3_errmsg(ob->db));
	return 0;
}

static void ask_for_pass(outbox *ob)
{
	ob->restart_after = atomic_load(&ob->ckpt_passes);
	ob->restart_passes++;
	pthread_mutex_lock(&ob->ckpt_mu);
	pthread_cond_signal(&ob->ckpt_cv);
	pthread_mutex_unlock(&ob->ckpt_mu);
}

/* Past half the bound: first passive passes on the checkpoint thread, which sync the WAL
 * and copy it back off the ingest thread, then (at a commit after the last of them) the
 * RESTART here, which is left with the frames written since that pass to sync and copy.
 * Measured at 18k msg/s: 14 ms a restart without the pass first, most of it the WAL's
 * fdatasync. One pass was not enough where the WAL grows fast: shadow updates rewrite
 * 16 KiB pages at random and grew it by about 70 MB/s at 5,000 updates/s, so the frames
 * written during the pass left the RESTART 9 ms on average and 28 at worst, stalling every
 * request behind it (the p99 of the shadow round trip). So another pass follows while more
 * than RESTART_LEFT_MAX is left, each shorter than the one before (copying runs far faster
 * than the WAL grows), up to RESTART_PASSES_MAX or until the WAL nears its bound. */
#define RESTART_LEFT_MAX (1LL << 20)
#define RESTART_PASSES_MAX 8
static void wal_keep_small(outbox *ob)
{
	if (!ob->ckpt_started) {
		wal_restart(ob, 1);
		return;
	}
	if (!ob->restart_wanted) {
		ob->restart_wanted = 1;
		ob->restart_passes = 0;
		ask_for_pass(ob);
		return;
	}
	if (atomic_load(&ob->ckpt_passes) <= ob->restart_after)
		return; /* the pass asked for has not finished */
	int copied = atomic_load(&ob->ckpt_copied), frames = atomic_load(&ob->wal_frames);
	int64_t left = copied < 0 || copied > frames ? INT64_MAX : (int64_t)(frames - copied) * (ob->page_size + 24);
	if (left > RESTART_LEFT_MAX && ob->restart_passes < RESTART_PASSES_MAX &&
	    atomic_load(&ob->ctr.wal_bytes) < ob->wal_limit / 4 * 3) {
		ask_for_pass(ob);
		return;
	}
	if (wal_restart(ob, 1))
		ob->restart_wanted = 0;
	else
		ob->restart_passes = 0; /* a reader held it: the next commit tries again */
}

int outbox_commit(outbox *ob)
{
	if (!ob->in_txn)
		return 0;
	if (run_hooks(ob, OUTBOX_GROUP_COMMITTING, ob->group_first_ms) < 0) {
		LOG_ERROR("outbox", "msg=\"a module could not write its part of the group, group rolled back\" err=\"%s\"",
			  sqlite3_errmsg(ob->db));
		abort_group(ob);
		return TG_EDB;
	}
	if (ob->last_id != ob->committed_last_id) {
		sqlite3_reset(ob->set_last);
		sqlite3_bind_int64(ob->set_last, 1, ob->last_id);
		int rc = sqlite3_step(ob->set_last);
		sqlite3_reset(ob->set_last);
		if (rc != SQLITE_DONE) {
			LOG_ERROR("outbox", "msg=\"commit failed, group rolled back\" err=\"%s\"", sqlite3_errmsg(ob->db));
			abort_group(ob);
			return TG_EDB;
		}
	}
	update_caps(ob);
	int64_t wal_before = atomic_load(&ob->ctr.wal_bytes);
	if (exec(ob->db, "COMMIT", NULL, 0)) {
		LOG_ERROR("outbox", "msg=\"commit failed, group rolled back\" err=\"%s\"", sqlite3_errmsg(ob->db));
		abort_group(ob);
		return TG_EDB;
	}
	ob->in_txn = 0;
	int64_t wal = atomic_load(&ob->ctr.wal_bytes);
	atomic_store(&ob->writer_commit_ms, mono_us() / 1000);
	if (wal - wal_before > ob->group_wal_max)
		ob->group_wal_max = wal - wal_before;
	if (wal >= ob->wal_limit / 2)
		wal_keep_small(ob);
	ob->committed_last_id = ob->last_id;
	if (ob->napplied || ob->applied_rows) {
		atomic_fetch_sub(&ob->ctr.rows, ob->applied_rows);
		atomic_fetch_sub(&ob->ctr.bytes, ob->applied_bytes);
		delta_apply(ob, ob->applied_delta);
		pthread_mutex_lock(&ob->pend_mu);
		ob->napplied = 0;
		pthread_mutex_unlock(&ob->pend_mu);
		ob->applied_rows = ob->applied_bytes = 0;
	}
	atomic_fetch_add(&ob->ctr.appended, (uint64_t)ob->group_rows);
	atomic_fetch_add(&ob->ctr.commits, 1);
	if (!ob->disk_low && atomic_exchange(&ob->ctr.disk_full, 0))
		LOG_INFO("outbox", "msg=\"disk space back: commits resumed\" path=%s", ob->path);
	atomic_store(&ob->ctr.oldest_uncommitted_ms, 0);
	int64_t now = tg_wall_ms();
	atomic_store(&ob->ctr.last_commit_ms, now);
	ob->group_n = ob->group_rows = 0;
	run_hooks(ob, OUTBOX_GROUP_COMMITTED, now);
	return 0;
}

int outbox_add_group_hook(outbox *ob, outbox_group_fn fn, void *ud)
{
	if (!fn)
		return TG_EINVAL;
	if (ob->nhooks == OUTBOX_MAX_GROUP_HOOKS)
		return TG_EFULL;
	ob->hooks[ob->nhooks].fn = fn;
	ob->hooks[ob->nhooks].ud = ud;
	ob->nhooks++;
	return 0;
}

void outbox_remove_group_hook(outbox *ob, outbox_group_fn fn, void *ud)
{
	for (size_t i = 0; i < ob->nhooks; i++)
		if (ob->hooks[i].fn == fn && ob->hooks[i].ud == ud) {
			memmove(&ob->hooks[i], &ob->hooks[i + 1], (ob->nhooks - i - 1) * sizeof ob->hooks[0]);
			ob->nhooks--;
			return;
		}
}

const char *outbox_last_text(const outbox *ob, size_t *len)
{
	if (!ob->line_valid)
		return NULL;
	*len = ob->line.len;
	return ob->line.p;
}

int outbox_requeue_dead(outbox *ob, const char *sink_name, int64_t now_ms, int64_t *moved)
{
	*moved = 0;
	if (ob->in_txn)
		return TG_EINVAL;
	int rc = begin(ob, now_ms);
	if (rc)
		return rc;
	int64_t sid = sink_id_of(ob, sink_name), n = 0, bytes = 0, last_seq = -1;
	sqlite3_stmt *st = ob->dead_list;
	if (sid < 0) {
		rc = (int)sid;
		goto fail;
	}
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, sink_name, -1, SQLITE_STATIC);
	int step;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = ob->last_id + 1;
		int len = sqlite3_column_bytes(st, 4);
		sqlite3_stmt *ins = ob->ins;
		sqlite3_reset(ins);
		sqlite3_bind_int64(ins, 1, sid);
		sqlite3_bind_int(ins, 2, OUTBOX_PRIO_BULK);
		sqlite3_bind_int64(ins, 3, id);
		sqlite3_bind_int64(ins, 4, sqlite3_column_int64(st, 1));
		sqlite3_bind_text(ins, 5, (const char *)sqlite3_column_text(st, 2), -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 6, (const char *)sqlite3_column_text(st, 3), -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(ins, 7, sqlite3_column_blob(st, 4), len, SQLITE_TRANSIENT);
		sqlite3_bind_int64(ins, 8, id * MAX_SINKS);
		int irc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (irc != SQLITE_DONE) {
			rc = TG_EDB;
			goto fail;
		}
		ob->last_id = id;
		last_seq = sqlite3_column_int64(st, 0);
		n++;
		bytes += len;
	}
	sqlite3_reset(st);
	if (step != SQLITE_DONE) {
		rc = TG_EDB;
		goto fail;
	}
	if (n) {
		sqlite3_reset(ob->dead_delete);
		sqlite3_bind_text(ob->dead_delete, 1, sink_name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ob->dead_delete, 2, last_seq);
		int drc = sqlite3_step(ob->dead_delete);
		sqlite3_reset(ob->dead_delete);
		if (drc != SQLITE_DONE) {
			rc = TG_EDB;
			goto fail;
		}
	}
	ob->group_n += n;
	ob->group_rows += n;
	ob->group_bytes += bytes;
	atomic_fetch_add(&ob->ctr.rows, n);
	atomic_fetch_add(&ob->ctr.bytes, bytes);
	if ((rc = outbox_commit(ob)))
		return rc; /* rolled back, counters read back */
	*moved = n;
	return 0;
fail:
	LOG_ERROR("outbox", "msg=\"requeue of dead letters failed, rolled back\" sink_name=%s err=\"%s\"", sink_name, sqlite3_errmsg(ob->db));
	sqlite3_reset(st);
	abort_group(ob);
	return rc;
}

int outbox_in_txn(const outbox *ob) { return ob && ob->in_txn; }

struct sqlite3 *outbox_writer_db(outbox *ob) { return ob->db; }

int outbox_join(outbox *ob, int64_t now_ms)
{
	int rc = begin(ob, now_ms);
	if (rc == 0)
		ob->group_n++;
	return rc;
}

void outbox_abort(outbox *ob)
{
	if (ob->in_txn)
		abort_group(ob);
}

int outbox_tick(outbox *ob, int64_t now_ms)
{
	if (!ob->in_txn) {
		/* no traffic: delete what the forwarders delivered in a transaction of its own */
		if (atomic_load(&ob->pend_rows) > 0 &&
		    tg_elapsed_ms(now_ms, atomic_load(&ob->ctr.last_commit_ms)) >= ob->opts.commit_interval_ms) {
			int rc = begin(ob, now_ms);
			if (!rc)
				rc = outbox_commit(ob);
			return rc < 0 ? rc : 1;
		}
		/* idle: forwarders may have deleted (a drain) or vacuumed; keep the figures fresh */
		if (tg_elapsed_ms(now_ms, ob->caps_ms) >= 1000) {
			ob->caps_ms = now_ms;
			update_caps(ob);
		}
		return 0;
	}
	/* a wall clock stepped back since the group opened makes it due now (tg_elapsed_ms):
	 * its PUBACKs must not wait for the clock to catch up */
	if (ob->group_n >= ob->opts.commit_max_records ||
	    tg_elapsed_ms(now_ms, ob->group_first_ms) >= ob->opts.commit_interval_ms) {
		int rc = outbox_commit(ob);
		return rc < 0 ? rc : 1;
	}
	return 0;
}

int64_t outbox_next_deadline(const outbox *ob, int64_t now_ms)
{
	if (!ob->in_txn)
		return INT64_MAX;
	int64_t age = tg_elapsed_ms(now_ms, ob->group_first_ms);
	return age >= ob->opts.commit_interval_ms ? 0 : ob->opts.commit_interval_ms - age;
}

/* ---- reader ------------------------------------------------------------------------- */

/* Run a write statement (BEGIN IMMEDIATE, a vacuum step) on a reader's connection, flagged
 * as waiting so the ingest thread's next begin() yields to it. */
static int reader_write(outbox_reader *r, const char *sql)
{
	atomic_fetch_add(&r->ob->readers_waiting, 1);
	int rc = exec(r->db, sql, NULL, 0);
	atomic_fetch_sub(&r->ob->readers_waiting, 1);
	return rc;
}

outbox_reader *outbox_open_reader(outbox *ob, char *err, size_t errlen)
{
	outbox_reader *r = calloc(1, sizeof *r);
	if (!r) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	r->ob = ob;
	if (open_db(ob, &r->db, CACHE_READER_KIB, NULL, err, errlen) ||
	    prep(r->db, &r->batch, OUTBOX_SQL_BATCH, err, errlen) || prep(r->db, &r->del, OUTBOX_SQL_DELETE, err, errlen) ||
	    prep(r->db, &r->del_range, OUTBOX_SQL_DELETE_RANGE, err, errlen) ||
	    prep(r->db, &r->dead, OUTBOX_SQL_DEAD, err, errlen) || prep(r->db, &r->attempt, OUTBOX_SQL_ATTEMPT, err, errlen) ||
	    prep(r->db, &r->sink_id, OUTBOX_SQL_SINK_ID, err, errlen) ||
	    prep(r->db, &r->pending, OUTBOX_SQL_PENDING, err, errlen) ||
	    prep(r->db, &r->freelist, OUTBOX_SQL_FREELIST, err, errlen)) {
		outbox_reader_close(r);
		return NULL;
	}
	return r;
}

void outbox_reader_close(outbox_reader *r)
{
	if (!r)
		return;
	sqlite3_finalize(r->batch);
	sqlite3_finalize(r->del);
	sqlite3_finalize(r->del_range);
	sqlite3_finalize(r->dead);
	sqlite3_finalize(r->attempt);
	sqlite3_finalize(r->sink_id);
	sqlite3_finalize(r->pending);
	sqlite3_finalize(r->freelist);
	sqlite3_finalize(r->oldest);
	sqlite3_close(r->db);
	free(r->sink_name);
	free(r);
}

static int64_t reader_sink_id(outbox_reader *r, const char *name)
{
	if (r->sink_name && strcmp(r->sink_name, name) == 0)
		return r->sink_id_cached;
	int64_t id = -1;
	sqlite3_reset(r->sink_id);
	sqlite3_bind_text(r->sink_id, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(r->sink_id) == SQLITE_ROW)
		id = sqlite3_column_int64(r->sink_id, 0);
	sqlite3_reset(r->sink_id);
	if (id >= 0) { /* not cached while unknown: the writer may add it any time */
		char *dup = strdup(name);
		if (dup) {
			free(r->sink_name);
			r->sink_name = dup;
			r->sink_id_cached = id;
		}
	}
	return id;
}

static void batch_clear(outbox_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->bufs[i]);
	b->n = 0;
	b->bytes = 0;
	b->oldest_ms = 0;
}

void outbox_batch_free(outbox_batch *b)
{
	if (!b)
		return;
	batch_clear(b);
	free(b->recs);
	free(b->seqs);
	free(b->prios);
	free(b->bufs);
	free(b->stored);
	memset(b, 0, sizeof *b);
}

static int batch_grow(outbox_batch *b)
{
	size_t cap = b->cap ? b->cap * 2 : 64;
	sink_record *recs = realloc(b->recs, cap * sizeof *recs);
	if (!recs)
		return TG_ENOMEM;
	b->recs = recs;
	int64_t *seqs = realloc(b->seqs, cap * sizeof *seqs);
	if (!seqs)
		return TG_ENOMEM;
	b->seqs = seqs;
	int *prios = realloc(b->prios, cap * sizeof *prios);
	if (!prios)
		return TG_ENOMEM;
	b->prios = prios;
	char **bufs = realloc(b->bufs, cap * sizeof *bufs);
	if (!bufs)
		return TG_ENOMEM;
	b->bufs = bufs;
	int64_t *stored = realloc(b->stored, cap * sizeof *stored);
	if (!stored)
		return TG_ENOMEM;
	b->stored = stored;
	b->cap = cap;
	return 0;
}

/* Append the row st is on (OUTBOX_SQL_BATCH's columns) to b; plen is its payload size. */
static int add_row(outbox_batch *b, sqlite3_stmt *st, const char *gw, int prio, size_t plen)
{
	if (b->n == b->cap && batch_grow(b))
		return TG_ENOMEM;
	const char *tbl = (const char *)sqlite3_column_text(st, 3);
	const char *pkey = (const char *)sqlite3_column_text(st, 4);
	size_t tl = strlen(tbl), kl = strlen(pkey);
	/* one allocation per record: line \0 table \0 pkey \0 msg_id \0, where line is the
	 * stored object with "msg_id" put in as its first member */
	int64_t id = sqlite3_column_int64(st, 1);
	char mid[192]; /* "<gateway_id>-<id>", without an snprintf per record */
	size_t gl = strlen(gw);
	if (gl > sizeof mid - 24)
		gl = sizeof mid - 24;
	memcpy(mid, gw, gl);
	mid[gl] = '-';
	char digits[24];
	size_t nd = 0;
	uint64_t u = id < 0 ? 0 : (uint64_t)id;
	do
		digits[nd++] = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	size_t ml = gl + 1;
	while (nd)
		mid[ml++] = digits[--nd];
	mid[ml] = '\0';
	const char *payload = sqlite3_column_blob(st, 5);
	static const char head[] = "{\"msg_id\":\"";
	char *buf = malloc(sizeof head + ml + plen + 4 + tl + kl + ml + 4);
	if (!buf)
		return TG_ENOMEM;
	memcpy(buf, head, sizeof head - 1);
	memcpy(buf + sizeof head - 1, mid, ml);
	size_t llen = sizeof head - 1 + ml;
	buf[llen++] = '"';
	if (plen > 2 && payload[0] == '{') { /* {"a":1} -> {"msg_id":"…","a":1} */
		buf[llen++] = ',';
		memcpy(buf + llen, payload + 1, plen - 1);
		llen += plen - 1;
	} else {
		buf[llen++] = '}';
	}
	buf[llen] = '\0';
	char *t = buf + llen + 1;
	memcpy(t, tbl, tl + 1);
	char *k = t + tl + 1;
	memcpy(k, pkey, kl + 1);
	char *m = k + kl + 1;
	memcpy(m, mid, ml + 1);
	b->stored[b->n] = (int64_t)plen;
	plen = llen;
	sink_record *rec = &b->recs[b->n];
	rec->id = id;
	rec->msg_id = m;
	rec->table = t;
	rec->pkey = k;
	rec->created_ms = sqlite3_column_int64(st, 2);
	rec->data = buf;
	rec->len = plen;
	b->seqs[b->n] = sqlite3_column_int64(st, 0);
	b->prios[b->n] = prio;
	b->bufs[b->n] = buf;
	if (b->n == 0 || rec->created_ms < b->oldest_ms)
		b->oldest_ms = rec->created_ms;
	b->n++;
	b->bytes += plen;
	return 0;
}

/* A sink's cursor: per priority, the highest seq already delivered (outbox_settle). */
static void cursor_of(outbox *ob, int64_t sid, int64_t after[NPRIO])
{
	memset(after, 0, sizeof(int64_t) * NPRIO);
	pthread_mutex_lock(&ob->pend_mu);
	for (size_t i = 0; i < ob->ncursors; i++)
		if (ob->cursors[i].sink == sid)
			memcpy(after, ob->cursors[i].after_seq, sizeof(int64_t) * NPRIO);
	pthread_mutex_unlock(&ob->pend_mu);
}

int outbox_read_batch(outbox_reader *r, const char *sink_name, size_t max_records, size_t max_bytes,
		      outbox_batch *b)
{
	batch_clear(b);
	int64_t sid = reader_sink_id(r, sink_name);
	if (sid < 0)
		return 0; /* nothing was ever queued for it */
	b->sink_id = sid;
	const char *gw = r->ob->gateway_id;
	int64_t after[NPRIO];
	cursor_of(r->ob, sid, after);
	sqlite3_stmt *st = r->batch;
	int rc = SQLITE_DONE, full = 0;
	/* highest priority first, id order within one */
	for (int prio = NPRIO - 1; prio >= 0 && !full && b->n < max_records; prio--) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_int(st, 2, prio);
		sqlite3_bind_int64(st, 3, after[prio]);
		sqlite3_bind_int64(st, 4, (int64_t)(max_records - b->n));
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			size_t plen = (size_t)sqlite3_column_bytes(st, 5);
			if (b->n > 0 && b->bytes + plen > max_bytes) {
				full = 1;
				break;
			}
			if (add_row(b, st, gw, prio, plen)) {
				sqlite3_reset(st);
				return TG_ENOMEM;
			}
		}
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return TG_EDB;
	}
	return (int)b->n;
}

/* A batch as runs, one per priority (read_batch gives each priority's rows as one
 * contiguous run in seq order, highest priority first). Returns the number of runs, or
 * TG_EINVAL for a batch read_batch did not make. */
static int batch_runs(const outbox_batch *b, struct pend_del runs[NPRIO])
{
	int nr = 0;
	for (size_t i = 0; i < b->n; i++) {
		int prio = b->prios[i];
		if (prio < 0 || prio >= NPRIO)
			return TG_EINVAL;
		if (nr == 0 || runs[nr - 1].prio != prio) {
			if (nr == NPRIO)
				return TG_EINVAL;
			runs[nr++] = (struct pend_del){.sink = b->sink_id, .prio = prio, .seq_lo = b->seqs[i],
						       .id_lo = b->recs[i].id};
		}
		struct pend_del *p = &runs[nr - 1];
		p->seq_hi = b->seqs[i];
		p->id_hi = b->recs[i].id;
		p->n++;
		p->bytes += b->stored[i];
	}
	return nr;
}

/* Queue a delivered batch's runs for deletion and move the sink's cursor past them. 0, or
 * < 0 when they could not be queued (the caller deletes them at once instead). */
static int queue_delivered(outbox *ob, int64_t sink_id, const struct pend_del *runs, size_t nr)
{
	pthread_mutex_lock(&ob->pend_mu);
	size_t c = 0;
	while (c < ob->ncursors && ob->cursors[c].sink != sink_id)
		c++;
	int rc = 0;
	if (c == ob->ncursors) {
		if (c == MAX_SINKS) {
			rc = TG_EFULL;
		} else {
			memset(&ob->cursors[c], 0, sizeof ob->cursors[c]);
			ob->cursors[c].sink = sink_id;
			ob->ncursors++;
		}
	}
	if (!rc && !(rc = pend_add_locked(ob, runs, nr)))
		for (size_t i = 0; i < nr; i++)
			if (runs[i].seq_hi > ob->cursors[c].after_seq[runs[i].prio])
				ob->cursors[c].after_seq[runs[i].prio] = runs[i].seq_hi;
	pthread_mutex_unlock(&ob->pend_mu);
	return rc;
}

/* After a forwarder's own commit: during a drain nobody appends, so the writer never gets
 * to restart the WAL (outbox_commit); the forwarder's deletions and vacuum steps would grow
 * it for as long as the drain lasts (330 MiB for a 1M-row drain in the benchmark). The same
 * RESTART, on the forwarder's connection: it waits for the ingest thread's transaction, if
 * one is open, like any writer. While the writer commits it leaves the restart to it: a
 * RESTART blocks every writer while it runs, and this one, without the writer's passes
 * first (wal_keep_small), stalled ingest for up to 28 ms under shadow updates; it still
 * goes ahead when the WAL nears its bound. */
#define WRITER_ACTIVE_MS 1000
static void reader_wal_restart(outbox_reader *r)
{
	outbox *ob = r->ob;
	int64_t wal = atomic_load(&ob->ctr.wal_bytes), last = atomic_load(&ob->writer_commit_ms);
	if (wal < ob->wal_limit / 2)
		return;
	if (last && mono_us() / 1000 - last < WRITER_ACTIVE_MS && wal < ob->wal_limit / 4 * 3)
		return;
	int nlog = 0, nckpt = 0;
	atomic_fetch_add(&ob->readers_waiting, 1);
	int rc = ckpt_run(ob, r->db, SQLITE_CHECKPOINT_RESTART, HARD_RESTART_WAIT_US, &nlog, &nckpt);
	atomic_fetch_sub(&ob->readers_waiting, 1);
	if (rc == SQLITE_OK) {
		atomic_fetch_add(&ob->ctr.wal_restarts, 1);
		atomic_store(&ob->ctr.wal_bytes, 0);
	} else {
		atomic_fetch_add(&ob->ctr.wal_restart_busy, 1); /* the next commit tries again */
	}
}

/* Forwarder side: delete the queued runs in a transaction of its own. */
static int reader_apply(outbox_reader *r)
{
	size_t n;
	struct pend_del *v = pend_take(r->ob, &n);
	if (!n) {
		free(v);
		return 0;
	}
	int64_t rows = 0, bytes = 0;
	struct sink_delta sd = {0};
	if (reader_write(r, "BEGIN IMMEDIATE")) {
		pend_putback(r->ob, v, n);
		return TG_EDB;
	}
	if (pend_delete(r->db, r->del_range, v, n, &rows, &bytes, &sd) || exec(r->db, "COMMIT", NULL, 0)) {
		LOG_WARN("outbox", "msg=\"deleting delivered rows failed, will retry\" err=\"%s\"", sqlite3_errmsg(r->db));
		exec(r->db, "ROLLBACK", NULL, 0);
		pend_putback(r->ob, v, n);
		return TG_EDB;
	}
	free(v);
	atomic_fetch_sub(&r->ob->ctr.rows, rows);
	atomic_fetch_sub(&r->ob->ctr.bytes, bytes);
	delta_apply(r->ob, &sd);
	reader_wal_restart(r);
	return 0;
}

int outbox_settle(outbox_reader *r, const char *sink_name, const outbox_batch *b, const sink_status *status,
		  const char *error, int64_t now_ms)
{
	int all_ok = b->n > 0;
	for (size_t i = 0; all_ok && i < b->n; i++)
		all_ok = status[i] == SINK_OK;
	struct pend_del runs[NPRIO];
	int nr = all_ok ? batch_runs(b, runs) : -1;
	if (nr > 0 && queue_delivered(r->ob, b->sink_id, runs, (size_t)nr) == 0) { /* the common case */
		atomic_fetch_add(&r->ob->ctr.delivered, (uint64_t)b->n);
		if (atomic_load(&r->ob->pend_rows) >= OUTBOX_PENDING_HELP)
			reader_apply(r); /* no ingest traffic to do it: a drain; on failure the ingest thread retries */
		return 0;
	}
	if (reader_write(r, "BEGIN IMMEDIATE"))
		return TG_EDB;
	int64_t rows = 0, bytes = 0;
	uint64_t delivered = 0, dead = 0;
	if (nr > 0) { /* delivered but could not be queued: a statement per run, now */
		if (pend_delete(r->db, r->del_range, runs, (size_t)nr, &rows, &bytes, NULL))
			goto fail;
		delivered = (uint64_t)rows;
		goto commit;
	}
	for (size_t i = 0; i < b->n; i++) {
		if (status[i] == SINK_RETRY) {
			sqlite3_reset(r->attempt);
			sqlite3_bind_int64(r->attempt, 1, b->sink_id);
			sqlite3_bind_int(r->attempt, 2, b->prios[i]);
			sqlite3_bind_int64(r->attempt, 3, b->seqs[i]);
			sqlite3_step(r->attempt);
			sqlite3_reset(r->attempt);
			continue;
		}
		if (status[i] == SINK_POISON) {
			sqlite3_reset(r->dead);
			sqlite3_bind_text(r->dead, 1, sink_name, -1, SQLITE_STATIC);
			sqlite3_bind_text(r->dead, 2, error ? error : "rejected by upstream", -1, SQLITE_STATIC);
			sqlite3_bind_int64(r->dead, 3, now_ms);
			sqlite3_bind_int64(r->dead, 4, b->sink_id);
			sqlite3_bind_int(r->dead, 5, b->prios[i]);
			sqlite3_bind_int64(r->dead, 6, b->seqs[i]);
			int rc = sqlite3_step(r->dead);
			sqlite3_reset(r->dead);
			if (rc != SQLITE_DONE)
				goto fail;
		}
		sqlite3_reset(r->del);
		sqlite3_bind_int64(r->del, 1, b->sink_id);
		sqlite3_bind_int(r->del, 2, b->prios[i]);
		sqlite3_bind_int64(r->del, 3, b->seqs[i]);
		int rc = sqlite3_step(r->del);
		sqlite3_reset(r->del);
		if (rc != SQLITE_DONE)
			goto fail;
		if (sqlite3_changes(r->db) == 1) { /* 0 if drop_oldest removed it meanwhile */
			rows++;
			bytes += b->stored[i];
			if (status[i] == SINK_POISON)
				dead++;
			else
				delivered++;
		}
	}
commit:
	if (exec(r->db, "COMMIT", NULL, 0))
		goto fail;
	atomic_fetch_sub(&r->ob->ctr.rows, rows);
	atomic_fetch_sub(&r->ob->ctr.bytes, bytes);
	backlog_add(r->ob, b->sink_id, -rows, -bytes); /* every row of a batch is its sink's */
	atomic_fetch_add(&r->ob->ctr.delivered, delivered);
	atomic_fetch_add(&r->ob->ctr.dead, dead);
	reader_wal_restart(r);
	return 0;
fail:
	LOG_ERROR("outbox", "msg=\"settle failed\" sink=%s err=\"%s\"", sink_name, sqlite3_errmsg(r->db));
	exec(r->db, "ROLLBACK", NULL, 0);
	return TG_EDB;
}

int outbox_reclaim(outbox_reader *r)
{
	sqlite3_reset(r->freelist);
	int64_t free_pages = 0;
	if (sqlite3_step(r->freelist) == SQLITE_ROW)
		free_pages = sqlite3_column_int64(r->freelist, 0);
	sqlite3_reset(r->freelist);
	/* 256 pages of 16 KiB: 4 MiB free before it is worth giving back (a gateway's flash is
	 * small); a bounded step (32 MiB) so the writer is not stalled for long, and within a
	 * quarter of the WAL's bound: a page moved writes a frame or two, and one step of 2048
	 * took a 4 MiB WAL to 7.9 MiB (outbox_stress --wal-max 4194304) */
	if (free_pages < 256)
		return 0;
	const outbox *ob = r->ob;
	int64_t step = ob->page_size > 0 ? ob->wal_limit / 4 / ob->page_size : 2048;
	step = step < 16 ? 16 : step > 2048 ? 2048 : step;
	char sql[64];
	snprintf(sql, sizeof sql, "PRAGMA incremental_vacuum(%" PRId64 ")", step);
	int rc = reader_write(r, sql);
	reader_wal_restart(r);
	return rc;
}

int64_t outbox_pending(outbox_reader *r, const char *sink_name)
{
	int64_t sid = reader_sink_id(r, sink_name), n = 0;
	if (sid < 0)
		return 0;
	sqlite3_reset(r->pending);
	sqlite3_bind_int64(r->pending, 1, sid);
	if (sqlite3_step(r->pending) == SQLITE_ROW)
		n = sqlite3_column_int64(r->pending, 0);
	sqlite3_reset(r->pending);
	/* less what was delivered and waits to be deleted (queued, or deleted in the writer's
	 * open transaction) */
	outbox *ob = r->ob;
	pthread_mutex_lock(&ob->pend_mu);
	for (size_t i = 0; i < ob->npend; i++)
		if (ob->pend[i].sink == sid)
			n -= ob->pend[i].n;
	for (size_t i = 0; i < ob->napplied; i++)
		if (ob->applied[i].sink == sid)
			n -= ob->applied[i].n;
	pthread_mutex_unlock(&ob->pend_mu);
	return n < 0 ? 0 : n;
}

int outbox_sink_backlog(outbox *ob, const char *sink_name, int64_t *rows, int64_t *bytes)
{
	int n = atomic_load(&ob->nbacklog);
	for (int i = 0; i < n; i++)
		if (strcmp(ob->backlog[i].name, sink_name) == 0) {
			int64_t r = atomic_load(&ob->backlog[i].rows), b = atomic_load(&ob->backlog[i].bytes);
			*rows = r < 0 ? 0 : r;
			*bytes = b < 0 ? 0 : b;
			return 0;
		}
	*rows = *bytes = 0; /* nothing was ever queued for it */
	return TG_ENOTFOUND;
}

int64_t outbox_oldest_pending(outbox_reader *r, const char *sink_name)
{
	int64_t sid = reader_sink_id(r, sink_name), oldest = 0;
	if (sid < 0)
		return 0;
	if (!r->oldest && sqlite3_prepare_v3(r->db, OUTBOX_SQL_OLDEST_PENDING, -1, SQLITE_PREPARE_PERSISTENT, &r->oldest,
					     NULL) != SQLITE_OK)
		return TG_EDB;
	int64_t after[NPRIO];
	cursor_of(r->ob, sid, after);
	/* the first undelivered row of each priority: an index seek each, never a scan */
	for (int prio = 0; prio < NPRIO; prio++) {
		sqlite3_reset(r->oldest);
		sqlite3_bind_int64(r->oldest, 1, sid);
		sqlite3_bind_int(r->oldest, 2, prio);
		sqlite3_bind_int64(r->oldest, 3, after[prio]);
		int rc = sqlite3_step(r->oldest);
		if (rc == SQLITE_ROW) {
			int64_t c = sqlite3_column_int64(r->oldest, 0);
			if (!oldest || c < oldest)
				oldest = c;
		} else if (rc != SQLITE_DONE) {
			sqlite3_reset(r->oldest);
			return TG_EDB;
		}
	}
	sqlite3_reset(r->oldest);
	return oldest;
}

/* ---- stores that keep their own tables in outbox.db ------------------------------------ */

int64_t outbox_substore_version(sqlite3 *db, const char *get_version_sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, get_version_sql, -1, &st, NULL) != SQLITE_OK)
		return strncmp(sqlite3_errmsg(db), "no such table", 13) == 0 ? 0 : -1;
	int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	return v;
}

int outbox_substore_migrate(sqlite3 *db, const char *get_version_sql, const char *const *steps, int nsteps,
			    const char *what, char *err, size_t errlen)
{
	int64_t v = outbox_substore_version(db, get_version_sql);
	if (v < 0)
		return tg_seterr(err, errlen, TG_EDB, "%s: cannot read the schema version: %s", what, sqlite3_errmsg(db));
	if (v > nsteps)
		return tg_seterr(err, errlen, TG_EDB, "%s: schema version %" PRId64 " is newer than this build (%d)", what,
				 v, nsteps);
	for (int64_t step = v; step < nsteps; step++) {
		char *msg = NULL;
		if (sqlite3_exec(db, steps[step], NULL, NULL, &msg) != SQLITE_OK) {
			tg_seterr(err, errlen, TG_EDB, "%s: migration to version %" PRId64 ": %s", what, step + 1,
				  msg ? msg : sqlite3_errmsg(db));
			sqlite3_free(msg);
			if (!sqlite3_get_autocommit(db))
				sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return TG_EDB;
		}
	}
	return 0;
}
