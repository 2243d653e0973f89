/*
 * outbox_stress.c — the outbox's connections racing each other, then an integrity check.
 *
 * Issue 20: chaos runs sometimes left outbox.db "malformed". The outbox has three kinds of
 * connection on one file: the ingest writer (group commits, and a RESTART checkpoint when the
 * WAL passes half its bound), the checkpoint thread (a passive pass every 250 ms, or when the
 * writer asks), and one reader per forwarder (reads, deletes when its queue of settled rows
 * is long, dead-letters, incremental vacuum, and a RESTART of its own). With a WAL bound of
 * 1 MiB the WAL restarts many times a second, which is when checkpoints and write
 * transactions meet. This tool runs that for --seconds with the real outbox.c, then closes
 * it and asks SQLite for PRAGMA integrity_check, and checks the books: every row of a
 * committed group was either delivered, dead-lettered or is still queued, none twice.
 * --outage-ms N: the readers stop for N ms and drain for N ms in turn, so a backlog builds
 * and is deleted (and vacuumed) in bulk; on a small file system (a tmpfs) that also fills
 * the disk, when appends and commits fail (counted, as the daemon would refuse those
 * messages) and must leave nothing behind. Prints one JSON line; exit 0 only when the
 * integrity check and the books hold and no call failed other than for a full disk.
 * A group hook plays a module that notes something for each record before appending it (as
 * dedupe and aggregates do): the note must be made durable with the record's group or taken
 * back, never kept for a record that was refused (a redelivery would be taken for a
 * duplicate); notes_committed must equal the rows of committed groups.
 * --small-fs 1 says the file system is meant to fill: failures are then expected of the
 * forwarders' writes too.
 *   outbox_stress --db PATH [--seconds S] [--readers N] [--wal-max BYTES] [--outage-ms N]
 *                 [--small-fs 0|1]
 */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "store/outbox.h"

#define MAX_READERS 4

static const char *const sink_names[MAX_READERS] = {"s0", "s1", "s2", "s3"};

/* the module noting a record before its append (writer thread only) */
struct notes {
	long long pending, committed, rollbacks;
};

static int on_group(void *ud, outbox_group_event ev, int64_t now_ms)
{
	(void)now_ms;
	struct notes *n = ud;
	if (ev == OUTBOX_GROUP_COMMITTED)
		n->committed += n->pending;
	else if (ev == OUTBOX_GROUP_ROLLED_BACK)
		n->rollbacks++;
	if (ev != OUTBOX_GROUP_COMMITTING)
		n->pending = 0;
	return 0;
}

struct shared {
	outbox *ob;
	int nreaders;
	_Atomic int64_t outage_ms;
	int small_fs; /* --small-fs: failures for want of space are expected */
	atomic_int stop;
	atomic_int failed;
	atomic_llong delivered[MAX_READERS], dead[MAX_READERS];
	char err[256];
	pthread_mutex_t err_mu;
};

struct reader_arg {
	struct shared *sh;
	int idx;
};

static int64_t wall_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void fail(struct shared *sh, const char *what)
{
	pthread_mutex_lock(&sh->err_mu);
	if (!atomic_load(&sh->failed))
		snprintf(sh->err, sizeof sh->err, "%s", what);
	atomic_store(&sh->failed, 1);
	pthread_mutex_unlock(&sh->err_mu);
}

/* whether a failure is the full disk's: the writer's flag, or the file system itself */
static int disk_full(struct shared *sh)
{
	return atomic_load(&outbox_counters_of(sh->ob)->disk_full) || sh->small_fs;
}

/* A forwarder that delivers at once: mostly whole batches (queued deletions), every 7th
 * batch with one row dead-lettered and one retried (a write transaction of its own), and
 * now and then an incremental vacuum. */
static void *reader_main(void *arg)
{
	struct reader_arg *ra = arg;
	struct shared *sh = ra->sh;
	char err[256];
	outbox_reader *r = outbox_open_reader(sh->ob, err, sizeof err);
	if (!r) {
		fail(sh, err);
		return NULL;
	}
	outbox_batch b = {0};
	sink_status st[256];
	unsigned round = 0;
	while (!atomic_load(&sh->stop)) {
		int64_t outage = atomic_load(&sh->outage_ms);
		if (outage > 0 && (wall_ms() / outage) % 2 == 0) {
			struct timespec ts = {0, 5000000};
			nanosleep(&ts, NULL);
			continue;
		}
		int n = outbox_read_batch(r, sink_names[ra->idx], 256, 1 << 20, &b);
		if (n < 0) {
			fail(sh, "read_batch failed");
			break;
		}
		if (n == 0) {
			struct timespec ts = {0, 200000};
			nanosleep(&ts, NULL);
			continue;
		}
		long long ok = n, dead = 0;
		for (int i = 0; i < n; i++)
			st[i] = SINK_OK;
		if (++round % 7 == 0 && n >= 2) {
			st[0] = SINK_POISON;
			st[1] = SINK_RETRY;
			ok -= 2;
			dead = 1;
		}
		if (outbox_settle(r, sink_names[ra->idx], &b, st, "stress", wall_ms()) < 0) {
			if (!disk_full(sh)) {
				fail(sh, "settle failed, disk not full");
				break;
			}
			/* as the forwarder does: the batch stays and is read again */
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, NULL);
			continue;
		}
		atomic_fetch_add(&sh->delivered[ra->idx], ok);
		atomic_fetch_add(&sh->dead[ra->idx], dead);
		if (round % 50 == 0 && outbox_reclaim(r) < 0 && !disk_full(sh)) {
			fail(sh, "reclaim failed, disk not full");
			break;
		}
	}
	outbox_batch_free(&b);
	outbox_reader_close(r);
	return NULL;
}

static int64_t scalar(sqlite3 *db, const char *sql, char *text, size_t textlen)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		v = sqlite3_column_int64(st, 0);
		if (text)
			snprintf(text, textlen, "%s", (const char *)sqlite3_column_text(st, 0));
	} else if (text) {
		snprintf(text, textlen, "%s", sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	return v;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	double seconds = 20;
	int nreaders = 2;
	long long wal_max = 1 << 20, outage_ms = 0;
	int small_fs = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--db"))
			path = argv[i + 1];
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--readers"))
			nreaders = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--wal-max"))
			wal_max = atoll(argv[i + 1]);
		else if (!strcmp(argv[i], "--small-fs"))
			small_fs = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--outage-ms"))
			outage_ms = atoll(argv[i + 1]);
		else
			path = NULL, i = argc;
	}
	if (!path || nreaders < 1 || nreaders > MAX_READERS || seconds <= 0) {
		fputs("usage: outbox_stress --db PATH [--seconds S] [--readers 1-4] [--wal-max BYTES]\n", stderr);
		return 2;
	}
	struct shared sh = {.nreaders = nreaders, .small_fs = small_fs};
	atomic_store(&sh.outage_ms, outage_ms);
	pthread_mutex_init(&sh.err_mu, NULL);
	char err[256];
	outbox_opts oo = {.commit_interval_ms = 2, .commit_max_records = 200, .wal_max_bytes = wal_max,
			  .gateway_id = "gw-stress", .full_policy = OUTBOX_DROP_OLDEST};
	sh.ob = outbox_open(path, &oo, err, sizeof err);
	if (!sh.ob) {
		fprintf(stderr, "outbox_stress: %s\n", err);
		return 1;
	}
	pthread_t tids[MAX_READERS];
	struct reader_arg ras[MAX_READERS];
	int started = 0;
	for (; started < nreaders; started++) {
		ras[started] = (struct reader_arg){&sh, started};
		if (pthread_create(&tids[started], NULL, reader_main, &ras[started]) != 0) {
			fail(&sh, "cannot start a reader");
			break;
		}
	}
	/* the ingest thread: records of ~300 bytes to every sink, as fast as the outbox takes them */
	struct notes notes = {0};
	if (outbox_add_group_hook(sh.ob, on_group, &notes)) {
		fprintf(stderr, "outbox_stress: cannot add the group hook\n");
		outbox_close(sh.ob);
		return 1;
	}
	json_t *o = json_pack("{s:s, s:i, s:f, s:s}", "thing", "dev-0001", "seq", 0, "temperature", 21.5, "pad",
			      "........................................................................................"
			      "........................................................................................");
	/* appended: rows of committed groups; pending: of the open group. A group that cannot be
	 * stored (full disk) is rolled back whole, and its rows never count. */
	long long appended = 0, pending = 0, refused = 0, seq = 0;
	int64_t t_end = wall_ms() + (int64_t)(seconds * 1000);
	while (!atomic_load(&sh.failed) && wall_ms() < t_end) {
		int64_t now = wall_ms();
		json_object_set_new(o, "seq", json_integer(seq++));
		int64_t id;
		notes.pending++; /* noted before the append, as ingest's dedupe does */
		int rc = outbox_append(sh.ob, sink_names, (size_t)nreaders, OUTBOX_PRIO_BULK, "telemetry", "dev-0001", now,
				       o, &id);
		if (rc >= 0) {
			pending++;
			rc = outbox_tick(sh.ob, now);
		}
		if (rc < 0 && !disk_full(&sh)) {
			fail(&sh, rc == TG_EFULL ? "refused (cap)" : "append or commit failed, disk not full");
			break;
		}
		if (!outbox_in_txn(sh.ob)) {
			if (rc >= 0)
				appended += pending;
			else
				refused += pending + 1;
			pending = 0;
		}
		if (rc < 0) { /* the daemon stops acknowledging; the space comes back as readers drain */
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, NULL);
		}
	}
	if (!atomic_load(&sh.failed) && pending) {
		if (outbox_commit(sh.ob) < 0)
			refused += pending;
		else
			appended += pending;
	}
	/* the uplink is back for good: the readers drain what is queued (up to 60 s) */
	atomic_store(&sh.outage_ms, 0);
	int64_t drain_end = wall_ms() + 60000;
	long long left = 0;
	do {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
		left = 0;
		for (int i = 0; i < nreaders; i++) {
			int64_t rows = 0, bytes = 0;
			outbox_sink_backlog(sh.ob, sink_names[i], &rows, &bytes);
			left += rows;
		}
		outbox_tick(sh.ob, wall_ms()); /* deletions the readers queued are the writer's */
	} while (left > 0 && wall_ms() < drain_end && !atomic_load(&sh.failed));
	atomic_store(&sh.stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	outbox_counters *ctr = outbox_counters_of(sh.ob);
	unsigned long long restarts = (unsigned long long)atomic_load(&ctr->wal_restarts);
	long long wal_peak = (long long)atomic_load(&ctr->wal_peak_bytes);
	long long skipped = (long long)atomic_load(&ctr->ckpt_skipped);
	json_decref(o);
	outbox_close(sh.ob);

	/* the verdict, on a fresh connection after close */
	sqlite3 *db = NULL;
	char integrity[512] = "cannot open";
	long long queued = -1, dead_rows = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		scalar(db, "PRAGMA integrity_check", integrity, sizeof integrity);
		queued = scalar(db, "SELECT count(*) FROM outbox", NULL, 0);
		dead_rows = scalar(db, "SELECT count(*) FROM dead", NULL, 0);
	}
	sqlite3_close(db);
	long long delivered = 0, dead = 0;
	for (int i = 0; i < nreaders; i++)
		delivered += atomic_load(&sh.delivered[i]), dead += atomic_load(&sh.dead[i]);
	long long expect = appended * nreaders;
	/* drained: nothing may be left, and nothing counted twice */
	int books = queued == 0 && delivered + dead == expect && dead_rows == dead && notes.committed == appended;
	int ok = !atomic_load(&sh.failed) && !strcmp(integrity, "ok") && books;
	json_t *out = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s}", "name", "outbox_stress",
				"ok", ok, "refused_full", (json_int_t)refused, "appended", (json_int_t)appended, "rows_expected", (json_int_t)expect,
				"delivered", (json_int_t)delivered, "dead", (json_int_t)dead, "queued",
				(json_int_t)queued, "dead_rows", (json_int_t)dead_rows, "wal_restarts",
				(json_int_t)restarts, "checkpoints_skipped", (json_int_t)skipped, "wal_peak_bytes", (json_int_t)wal_peak, "notes_committed", (json_int_t)notes.committed, "integrity", integrity,
				"error", atomic_load(&sh.failed) ? sh.err : "");
	char *s = json_dumps(out, JSON_COMPACT);
	puts(s ? s : "{}");
	free(s);
	json_decref(out);
	pthread_mutex_destroy(&sh.err_mu);
	return ok ? 0 : 1;
}
