/*
 * test_outbox.c — the SQLite outbox: group commit, per-sink rows, batches in priority
 * order, settle (delete / keep / dead-letter), caps with drop_oldest and reject_new,
 * ids never reused, durability across reopen, a corrupt file moved aside, and the files
 * on disk: the WAL kept under its bound, max_bytes bounding database + WAL + index.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "store/outbox.h"
#include "store/outbox_sql.h"
#include "test_util.h"

static char *dir;
static char path[4096];

static outbox_opts opts(void)
{
	return (outbox_opts){.commit_interval_ms = 5, .commit_max_records = 100, .gateway_id = "gw"};
}

static int append(outbox *ob, const char *sink_name, int prio, int i)
{
	json_t *o = json_pack("{s:i, s:s}", "i", i, "pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	const char *sinks[] = {sink_name};
	int rc = outbox_append(ob, sinks, 1, prio, "telemetry", "dev-1", 1700000000000 + i, o, NULL);
	json_decref(o);
	return rc;
}

static int64_t count_rows(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t n = -1;
	sqlite3_open(path, &db);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static void test_group_commit_and_batches(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	/* two sinks for the same record: two rows, one msg_id */
	json_t *rec = json_pack("{s:i}", "temperature", 21);
	const char *both[] = {"a", "b"};
	int64_t id = 0;
	assert_int_equal(outbox_append(ob, both, 2, OUTBOX_PRIO_BULK, "telemetry", "dev-9", 1700000000000, rec, &id), 0);
	json_decref(rec);
	assert_int_equal(id, 1);
	/* not committed yet: another connection sees nothing */
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
	assert_int_equal(outbox_tick(ob, 1700000000000 + 1), 0);
	assert_int_equal(outbox_tick(ob, 1700000000000 + 10), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 2);
	for (int i = 0; i < 10; i++)
		assert_int_equal(append(ob, "a", i == 7 ? OUTBOX_PRIO_ALERT : OUTBOX_PRIO_BULK, i), 0);
	assert_int_equal(outbox_commit(ob), 0);

	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	assert_non_null(r);
	outbox_batch b = {0};
	assert_int_equal(outbox_read_batch(r, "a", 4, 1 << 20, &b), 4);
	/* the alert comes first, then id order */
	assert_non_null(strstr(b.recs[0].data, "\"i\":7"));
	assert_string_equal(b.recs[1].msg_id, "gw-1");
	/* msg_id is the first member of the line a sink gets */
	assert_string_equal(b.recs[1].data, "{\"msg_id\":\"gw-1\",\"temperature\":21}");
	assert_int_equal(b.recs[1].len, strlen(b.recs[1].data));
	assert_string_equal(b.recs[1].pkey, "dev-9");
	assert_string_equal(b.recs[2].table, "telemetry");
	assert_int_equal(outbox_pending(r, "a"), 11);
	sink_status st[4] = {SINK_OK, SINK_RETRY, SINK_POISON, SINK_OK};
	assert_int_equal(outbox_settle(r, "a", &b, st, "400 bad record", 1), 0);
	assert_int_equal(outbox_pending(r, "a"), 8);
	assert_int_equal(outbox_pending(r, "b"), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM dead WHERE error = '400 bad record'"), 1);
	outbox_counters *c = outbox_counters_of(ob);
	assert_int_equal(atomic_load(&c->rows), 9);
	assert_int_equal(atomic_load(&c->delivered), 2);
	assert_int_equal(atomic_load(&c->dead), 1);
	/* the retried record is still first in line */
	assert_int_equal(outbox_read_batch(r, "a", 1, 1 << 20, &b), 1);
	assert_string_equal(b.recs[0].msg_id, "gw-1");
	/* max_bytes bounds a batch but never below one record */
	assert_int_equal(outbox_read_batch(r, "a", 100, 10, &b), 1);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
}

/* A wall clock stepped back an hour while a group is open (issue 20, clock jumps): the group
 * is due at once, not in an hour (its PUBACKs wait for that commit); so is the idle commit
 * of the forwarders' deletions. */
static void test_group_due_after_clock_step_back(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, 0), 0);
	assert_true(outbox_in_txn(ob));
	assert_int_equal(outbox_tick(ob, 1700000000000 + 1), 0);
	assert_int_equal(outbox_next_deadline(ob, 1700000000000 - 3600000), 0);
	assert_int_equal(outbox_tick(ob, 1700000000000 - 3600000), 1);
	assert_false(outbox_in_txn(ob));
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 1);
	outbox_close(ob);
}

static void test_ids_never_reused_and_durable(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	for (int i = 0; i < 5; i++)
		append(ob, "a", 0, i);
	outbox_close(ob); /* close commits */
	ob = outbox_open(path, &o, NULL, 0);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	assert_int_equal(outbox_read_batch(r, "a", 100, 1 << 20, &b), 5);
	sink_status st[5] = {0};
	assert_int_equal(outbox_settle(r, "a", &b, st, NULL, 1), 0);
	assert_int_equal(outbox_pending(r, "a"), 0);
	outbox_reader_close(r);
	outbox_batch_free(&b);
	outbox_close(ob);
	/* drained: a new record must still get id 6, not 1 */
	ob = outbox_open(path, &o, NULL, 0);
	json_t *rec = json_object();
	const char *s[] = {"a"};
	int64_t id;
	assert_int_equal(outbox_append(ob, s, 1, 0, "t", "k", 1, rec, &id), 0);
	assert_int_equal(id, 6);
	json_decref(rec);
	outbox_close(ob);
}

static void test_cap_drop_oldest_keeps_alerts(void **state)
{
	outbox_opts o = opts();
	o.max_rows = 100;
	o.full_policy = OUTBOX_DROP_OLDEST;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_ALERT, i), 0);
	for (int i = 0; i < 300; i++)
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, 100 + i), 0);
	outbox_commit(ob);
	outbox_counters *c = outbox_counters_of(ob);
	int64_t rows = count_rows("SELECT count(*) FROM outbox");
	assert_true(rows <= 100);
	assert_int_equal(rows, atomic_load(&c->rows));
	assert_int_equal(atomic_load(&c->dropped), 320 - rows);
	assert_int_equal(atomic_load(&c->dropped_alerts), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE prio = 2"), 20);
	/* what survived of the bulk rows is the newest */
	assert_int_equal(count_rows("SELECT max(id) FROM outbox"), 320);
	outbox_close(ob);
}

static void test_cap_reject_new(void **state)
{
	outbox_opts o = opts();
	o.max_rows = 10;
	o.full_policy = OUTBOX_REJECT_NEW;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	int rejected = 0;
	for (int i = 0; i < 15; i++)
		if (append(ob, "a", 0, i) == TG_EFULL)
			rejected++;
	outbox_commit(ob);
	assert_int_equal(rejected, 5);
	assert_int_equal(atomic_load(&outbox_counters_of(ob)->rejected), 5);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 10);
	outbox_close(ob);
}

static void test_quarantine_table(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_int_equal(outbox_quarantine(ob, 5, "dev-1", "devices/dev-1/telemetry", "bad_json", NULL, "line 1", "{x", 2), 0);
	outbox_commit(ob);
	assert_int_equal(count_rows("SELECT count(*) FROM quarantine WHERE reason='bad_json' AND thing='dev-1'"), 1);
	outbox_close(ob);
}

static void test_corrupt_file_moved_aside(void **state)
{
	FILE *f = fopen(path, "w");
	for (int i = 0; i < 1000; i++)
		fputs("this is not a database at all ", f);
	fclose(f);
	outbox_opts o = opts();
	char err[256] = "";
	outbox *ob = outbox_open(path, &o, err, sizeof err);
	assert_non_null(ob);
	assert_int_equal(append(ob, "a", 0, 1), 0);
	outbox_close(ob);
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "ls %s.corrupt-* >/dev/null 2>&1", path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 1);
}

static void settle_all_ok(outbox_reader *r, const char *sink_name, outbox_batch *b)
{
	sink_status *st = calloc(b->n ? b->n : 1, sizeof *st); /* SINK_OK is 0 */
	assert_int_equal(outbox_settle(r, sink_name, b, st, NULL, 1), 0);
	free(st);
}

/* An all-delivered batch is queued for deletion: the reader does not see it again at once,
 * the writer deletes it in its next transaction (or an idle tick), and the counters follow.
 * A batch with two priorities is two runs. */
static void test_deferred_delete(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	outbox_counters *c = outbox_counters_of(ob);
	for (int i = 0; i < 30; i++)
		assert_int_equal(append(ob, i % 2 ? "a" : "b", i == 4 || i == 5 ? OUTBOX_PRIO_ALERT : OUTBOX_PRIO_BULK, i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	assert_int_equal(outbox_read_batch(r, "b", 6, 1 << 20, &b), 6);
	assert_non_null(strstr(b.recs[0].data, "\"i\":4")); /* the alert, then bulk in order */
	assert_non_null(strstr(b.recs[1].data, "\"i\":0"));
	assert_non_null(strstr(b.recs[5].data, "\"i\":10"));
	settle_all_ok(r, "b", &b);
	/* still in the table, but neither pending nor read again */
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 30);
	assert_int_equal(outbox_pending(r, "b"), 9);
	assert_int_equal(outbox_pending(r, "a"), 15);
	assert_int_equal(atomic_load(&c->delivered), 6);
	assert_int_equal(atomic_load(&c->rows), 30);
	assert_int_equal(outbox_read_batch(r, "b", 100, 1 << 20, &b), 9);
	assert_non_null(strstr(b.recs[0].data, "\"i\":12"));
	/* the writer's next transaction deletes them; counted out at its commit */
	assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, 100), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 30);
	assert_int_equal(outbox_pending(r, "b"), 9);
	assert_int_equal(outbox_commit(ob), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 25);
	assert_int_equal(atomic_load(&c->rows), 25);
	assert_int_equal(outbox_pending(r, "b"), 9);
	/* with no traffic an idle tick does it */
	settle_all_ok(r, "b", &b);
	assert_int_equal(outbox_pending(r, "b"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = 'b')"), 9);
	int64_t t = atomic_load(&c->last_commit_ms);
	assert_int_equal(outbox_tick(ob, t + 1), 0); /* not before commit_interval */
	assert_int_equal(outbox_tick(ob, t + 10), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = 'b')"), 0);
	assert_int_equal(atomic_load(&c->rows), 16);
	assert_int_equal(outbox_read_batch(r, "b", 100, 1 << 20, &b), 0);
	/* sink a is untouched and complete */
	assert_int_equal(outbox_read_batch(r, "a", 100, 1 << 20, &b), 16);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
}

/* Drained and deleted, a rowid table would hand out small rowids again; seqs follow ids,
 * which are never reused, so the cursor never skips a new row. And a settle that was never committed as a
 * deletion is delivered again after a restart (at-least-once), while one that was is not. */
static void test_deferred_delete_reuse_and_restart(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 5; i++)
			assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, round * 10 + i), 0);
		assert_int_equal(outbox_commit(ob), 0);
		assert_int_equal(outbox_read_batch(r, "a", 100, 1 << 20, &b), 5);
		assert_non_null(strstr(b.recs[0].data, round == 0 ? "\"i\":0," : round == 1 ? "\"i\":10," : "\"i\":20,"));
		settle_all_ok(r, "a", &b);
		int64_t t = atomic_load(&outbox_counters_of(ob)->last_commit_ms);
		assert_int_equal(outbox_tick(ob, t + 10), 1);
		assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
		assert_int_equal(count_rows("SELECT coalesce(max(seq), 0) FROM outbox"), 0);
	}
	/* settled, deletion not committed, "crash": simulated by reopening the file from a
	 * copy taken now */
	for (int i = 0; i < 4; i++)
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, 100 + i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	assert_int_equal(outbox_read_batch(r, "a", 100, 1 << 20, &b), 4);
	settle_all_ok(r, "a", &b);
	char cmd[8400];
	/* WAL mode: the committed state is the database file plus its -wal file */
	snprintf(cmd, sizeof cmd, "cp %s %s.copy && { ! test -e %s-wal || cp %s-wal %s.copy-wal; }", path, path, path, path,
		 path);
	assert_int_equal(system(cmd), 0);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob); /* a clean close deletes them */
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
	char copy[4200];
	snprintf(copy, sizeof copy, "%s.copy", path);
	ob = outbox_open(copy, &o, NULL, 0);
	r = outbox_open_reader(ob, NULL, 0);
	assert_int_equal(outbox_read_batch(r, "a", 100, 1 << 20, &b), 4);
	assert_non_null(strstr(b.recs[0].data, "\"i\":100,"));
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
}

/* A version-2 outbox (rowid table + index, seq picked by SQLite) with rows in it migrates
 * to version 3 (one WITHOUT ROWID table): the rows keep their seqs, come before new ones
 * (seq = id * 32 + k), and are delivered and deleted like them; out-of-range priorities
 * are refused. */
static void test_migrate_v2_rows(void **state)
{
	outbox_opts o = opts();
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN;" OUTBOX_SQL_V1 OUTBOX_SQL_V2 "PRAGMA user_version=2; COMMIT;"
					  "INSERT INTO sinks(name) VALUES('z'), ('a');"
					  "UPDATE meta SET value = 4 WHERE key = 'last_id'",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	for (int i = 2; i <= 4; i++) { /* seq left to SQLite, as version 2 did */
		char sql[256];
		snprintf(sql, sizeof sql,
			 "INSERT INTO outbox(sink, prio, id, created_ms, tbl, pkey, payload)"
			 " VALUES((SELECT id FROM sinks WHERE name = 'a'), 0, %d, 1, 't', 'k', '{\"old\":%d}')",
			 i, i);
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(db);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 3);
	assert_true(count_rows("SELECT max(seq) FROM outbox") < 32);
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	assert_int_equal(count_rows("PRAGMA user_version"), 3);
	assert_int_equal(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_by_sink'"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 3);
	assert_int_equal(atomic_load(&outbox_counters_of(ob)->rows), 3);
	ob = outbox_open(path, &o, NULL, 0);
	assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, 50), 0);
	assert_int_equal(append(ob, "a", 3, 51), TG_EINVAL);
	assert_int_equal(append(ob, "a", -1, 52), TG_EINVAL);
	assert_int_equal(outbox_commit(ob), 0);
	assert_int_equal(count_rows("SELECT seq FROM outbox WHERE id = 5"), 5 * 32);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	assert_int_equal(outbox_read_batch(r, "a", 2, 1 << 20, &b), 2);
	assert_non_null(strstr(b.recs[0].data, "\"old\":2"));
	assert_non_null(strstr(b.recs[1].data, "\"old\":3"));
	settle_all_ok(r, "a", &b);
	assert_int_equal(outbox_read_batch(r, "a", 10, 1 << 20, &b), 2);
	assert_non_null(strstr(b.recs[0].data, "\"old\":4"));
	assert_non_null(strstr(b.recs[1].data, "\"i\":50"));
	settle_all_ok(r, "a", &b);
	assert_int_equal(outbox_read_batch(r, "a", 10, 1 << 20, &b), 0);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
}

/* Past OUTBOX_PENDING_HELP queued rows (a drain: nobody appends or ticks) the forwarder
 * deletes them itself. */
static void test_deferred_delete_drain(void **state)
{
	outbox_opts o = opts();
	o.commit_max_records = 10000;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	for (int i = 0; i < 5000; i++)
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	int64_t seen = 0, max_left = 0;
	int n;
	while ((n = outbox_read_batch(r, "a", 500, 1 << 20, &b)) > 0) {
		seen += n;
		settle_all_ok(r, "a", &b);
		int64_t left = count_rows("SELECT count(*) FROM outbox") - (5000 - seen);
		if (left > max_left)
			max_left = left;
	}
	assert_int_equal(n, 0);
	assert_int_equal(seen, 5000);
	assert_true(max_left < 2000 + 500); /* delivered rows never pile up past the threshold */
	assert_true(atomic_load(&outbox_counters_of(ob)->rows) < 2000 + 500);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
}

/* outbox_sink_backlog against the table itself: rows and stored payload bytes per sink. */
static void expect_backlog(outbox *ob, const char *sink_name)
{
	char q[256];
	int64_t rows, bytes;
	outbox_sink_backlog(ob, sink_name, &rows, &bytes);
	snprintf(q, sizeof q, "SELECT count(*) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = '%s')",
		 sink_name);
	int64_t want_rows = count_rows(q);
	snprintf(q, sizeof q,
		 "SELECT coalesce(sum(length(payload)), 0) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = '%s')",
		 sink_name);
	int64_t want_bytes = count_rows(q);
	if (rows != want_rows || bytes != want_bytes)
		fail_msg("sink %s: backlog %lld rows %lld bytes, table %lld rows %lld bytes", sink_name, (long long)rows,
			 (long long)bytes, (long long)want_rows, (long long)want_bytes);
}

/* Per-sink backlog counters follow every way a row comes and goes — append, delivery
 * deleted by the writer or by the forwarder, dead letters, drop_oldest — and are read back
 * at open, without a query per read (issue 12 item 4). */
static void test_sink_backlog_and_oldest(void **state)
{
	outbox_opts o = opts();
	o.max_rows = 400;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	int64_t rows, bytes;
	assert_int_equal(outbox_sink_backlog(ob, "a", &rows, &bytes), TG_ENOTFOUND);
	assert_int_equal(rows, 0);
	for (int i = 0; i < 60; i++)
		assert_int_equal(append(ob, i % 3 ? "a" : "b", i == 30 ? OUTBOX_PRIO_ALERT : OUTBOX_PRIO_BULK, i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	expect_backlog(ob, "a");
	expect_backlog(ob, "b");
	outbox_sink_backlog(ob, "a", &rows, &bytes);
	assert_int_equal(rows, 40);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	/* the oldest undelivered: the first record, whatever its priority */
	assert_int_equal(outbox_oldest_pending(r, "a"), 1700000000000 + 1);
	assert_int_equal(outbox_oldest_pending(r, "b"), 1700000000000 + 0);
	assert_int_equal(outbox_oldest_pending(r, "nope"), 0);
	/* delivered, queued, deleted by the writer's next transaction */
	assert_int_equal(outbox_read_batch(r, "a", 10, 1 << 20, &b), 10);
	settle_all_ok(r, "a", &b);
	assert_int_equal(outbox_oldest_pending(r, "a"), 1700000000000 + 16); /* past the cursor */
	assert_int_equal(append(ob, "b", OUTBOX_PRIO_BULK, 1000), 0);
	assert_int_equal(outbox_commit(ob), 0);
	expect_backlog(ob, "a");
	expect_backlog(ob, "b");
	/* dead letters and retries */
	assert_int_equal(outbox_read_batch(r, "b", 5, 1 << 20, &b), 5);
	sink_status st[5] = {SINK_OK, SINK_POISON, SINK_RETRY, SINK_POISON, SINK_RETRY};
	assert_int_equal(outbox_settle(r, "b", &b, st, "refused", 2), 0);
	expect_backlog(ob, "b");
	/* the forwarder deletes a big queue itself (a drain) */
	while (outbox_read_batch(r, "a", 7, 1 << 20, &b) > 0)
		settle_all_ok(r, "a", &b);
	assert_int_equal(outbox_tick(ob, atomic_load(&outbox_counters_of(ob)->last_commit_ms) + 10), 1);
	expect_backlog(ob, "a");
	outbox_sink_backlog(ob, "a", &rows, &bytes);
	assert_int_equal(rows, 0);
	assert_int_equal(outbox_oldest_pending(r, "a"), 0);
	/* drop_oldest */
	for (int i = 0; i < 500; i++)
		assert_int_equal(append(ob, i % 2 ? "a" : "b", OUTBOX_PRIO_BULK, 2000 + i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	assert_true(atomic_load(&outbox_counters_of(ob)->dropped) > 0);
	expect_backlog(ob, "a");
	expect_backlog(ob, "b");
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
	/* read back at open */
	ob = outbox_open(path, &o, NULL, 0);
	expect_backlog(ob, "a");
	expect_backlog(ob, "b");
	int64_t ra, rb, ba, bb;
	outbox_sink_backlog(ob, "a", &ra, &ba);
	outbox_sink_backlog(ob, "b", &rb, &bb);
	assert_int_equal(ra + rb, atomic_load(&outbox_counters_of(ob)->rows));
	assert_int_equal(ba + bb, atomic_load(&outbox_counters_of(ob)->bytes));
	outbox_close(ob);
}

static int setup(void **state)
{
	dir = tu_tmpdir();
	snprintf(path, sizeof path, "%s/outbox.db", dir);
	return 0;
}

/* Size of one of the outbox's files, 0 when absent. */
static int64_t file_size(const char *suffix)
{
	char p[4200];
	snprintf(p, sizeof p, "%s%s", path, suffix);
	struct stat st;
	return stat(p, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* Continuous ingest with a reader delivering: the WAL starts over between group commits and
 * never passes its bound (the smallest one, 1 MiB, so that a few seconds of appends would
 * take it far past it without the restarts). */
static void test_wal_restarts_under_continuous_ingest(void **state)
{
	outbox_opts o = opts();
	o.wal_max_bytes = 1 << 20;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	assert_non_null(r);
	outbox_batch b = {0};
	sink_status st[100];
	int64_t wal_max = 0;
	for (int i = 0; i < 40000; i++) {
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, i), 0);
		if (i % 100 == 99) {
			assert_int_equal(outbox_commit(ob), 0);
			int n = outbox_read_batch(r, "a", 100, 1 << 20, &b);
			assert_true(n > 0);
			for (int k = 0; k < n; k++)
				st[k] = SINK_OK;
			assert_int_equal(outbox_settle(r, "a", &b, st, NULL, 0), 0);
			int64_t w = file_size("-wal");
			if (w > wal_max)
				wal_max = w;
		}
	}
	outbox_counters *c = outbox_counters_of(ob);
	assert_true(atomic_load(&c->wal_restarts) > 0);
	assert_true(atomic_load(&c->wal_peak_bytes) <= 1 << 20);
	assert_true(wal_max <= 1 << 20);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
}

/* max_bytes bounds database + WAL + WAL index with nobody delivering; drop_oldest counts
 * exactly what it removed, and the disk figure never passes the cap. */
static void test_cap_bounds_the_files_on_disk(void **state)
{
	outbox_opts o = opts();
	o.max_bytes = 4 << 20;
	o.full_policy = OUTBOX_DROP_OLDEST;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	outbox_counters *c = outbox_counters_of(ob);
	assert_int_equal(atomic_load(&c->wal_limit_bytes), 1 << 20); /* a quarter of max_bytes */
	int64_t disk_max = 0;
	const int total = 80000; /* ~6 MB of JSON: well past the cap */
	for (int i = 0; i < total; i++) {
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, i), 0);
		if (i % 100 == 99) {
			assert_int_equal(outbox_commit(ob), 0);
			outbox_disk d;
			assert_int_equal(outbox_disk_usage(ob, &d), 0);
			assert_int_equal(d.total, d.db + d.wal + d.shm);
			if (d.total > disk_max)
				disk_max = d.total;
		}
	}
	assert_int_equal(outbox_commit(ob), 0);
	int64_t rows = count_rows("SELECT count(*) FROM outbox");
	assert_true(atomic_load(&c->dropped) > 0);
	assert_int_equal(rows + (int64_t)atomic_load(&c->dropped), total);
	assert_int_equal(rows, atomic_load(&c->rows));
	assert_true(disk_max <= 4 << 20);
	/* the newest survive */
	assert_int_equal(count_rows("SELECT max(id) FROM outbox"), total);
	outbox_close(ob);
}

/* drop_oldest takes the oldest records whichever sink holds them: a sink that is down
 * loses its oldest rows, a working sink's few recent ones are kept. */
static void test_drop_oldest_across_sinks(void **state)
{
	outbox_opts o = opts();
	o.max_rows = 1000;
	o.full_policy = OUTBOX_DROP_OLDEST;
	outbox *ob = outbox_open(path, &o, NULL, 0);
	for (int i = 0; i < 990; i++)
		assert_int_equal(append(ob, "down", OUTBOX_PRIO_BULK, i), 0);
	for (int i = 0; i < 50; i++) { /* the working sink's last few, and the down sink's */
		assert_int_equal(append(ob, "up", OUTBOX_PRIO_BULK, 990 + i), 0);
		assert_int_equal(append(ob, "down", OUTBOX_PRIO_BULK, 990 + i), 0);
	}
	assert_int_equal(outbox_commit(ob), 0);
	assert_true(atomic_load(&outbox_counters_of(ob)->dropped) > 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE sink = (SELECT id FROM sinks WHERE name = 'up')"),
			 50);
	outbox_close(ob);
}

/* A drained outbox gives its space back: deleted rows' pages are reused, and once a
 * forwarder has nothing to send, incremental vacuum shrinks the file. */
static void test_drained_outbox_shrinks(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	for (int i = 0; i < 60000; i++) /* ~5 MB of JSON: some 400 pages of 16 KiB */
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, i), 0);
	assert_int_equal(outbox_commit(ob), 0);
	int64_t full = count_rows("PRAGMA page_count") * count_rows("PRAGMA page_size"); /* WAL included */
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	sink_status st[1000];
	int n;
	while ((n = outbox_read_batch(r, "a", 1000, 8 << 20, &b)) > 0) {
		for (int k = 0; k < n; k++)
			st[k] = SINK_OK;
		assert_int_equal(outbox_settle(r, "a", &b, st, NULL, 0), 0);
		assert_int_equal(outbox_tick(ob, tg_wall_ms() + 1000), 1); /* the writer deletes them */
	}
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 0);
	/* nothing left to send: what a forwarder does when its sink is idle */
	for (int i = 0; i < 20; i++)
		assert_int_equal(outbox_reclaim(r), 0);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob); /* the last connection checkpoints, so the database file shows it */
	int64_t drained = file_size("");
	assert_true(full > 4 << 20);
	assert_true(drained < full / 4);
}

/* A drain with nobody appending: the forwarder's own deletions keep the WAL under its bound
 * too (the writer, which restarts it after its commits, is idle). */
static void test_wal_bounded_during_a_drain(void **state)
{
	outbox_opts o = opts();
	o.wal_max_bytes = 4 << 20; /* a deletion commit of the drain is ~0.5 MiB */
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	for (int i = 0; i < 60000; i++) { /* group commits, as ingest makes them */
		assert_int_equal(append(ob, "a", OUTBOX_PRIO_BULK, i), 0);
		if (i % 100 == 99)
			assert_int_equal(outbox_commit(ob), 0);
	}
	assert_int_equal(outbox_commit(ob), 0);
	outbox_counters *c = outbox_counters_of(ob);
	assert_true(atomic_load(&c->wal_peak_bytes) <= 4 << 20);
	outbox_reader *r = outbox_open_reader(ob, NULL, 0);
	outbox_batch b = {0};
	sink_status st[1000];
	int n;
	int64_t wal_max = 0;
	while ((n = outbox_read_batch(r, "a", 1000, 8 << 20, &b)) > 0) {
		for (int k = 0; k < n; k++)
			st[k] = SINK_OK;
		/* past OUTBOX_PENDING_HELP queued rows the forwarder deletes them itself */
		assert_int_equal(outbox_settle(r, "a", &b, st, NULL, 0), 0);
		int64_t w = file_size("-wal");
		if (w > wal_max)
			wal_max = w;
	}
	assert_true(atomic_load(&c->wal_peak_bytes) <= 4 << 20);
	assert_true(wal_max <= 4 << 20);
	outbox_batch_free(&b);
	outbox_reader_close(r);
	outbox_close(ob);
}

/* SQLITE_FULL inside a group (a full disk; here the writer's max_page_count, so the
 * quarantine row has no page to go to) makes SQLite roll the whole transaction back by
 * itself. The group must end there. It used to stay "open": the next append ran in
 * autocommit and was stored at once, and the group's COMMIT then failed with "no
 * transaction is active" (seen in the chaos run), so the caller left unacknowledged a
 * record that was stored, and the broker's redelivery stored it again under a new id. */
static void test_full_inside_group_ends_it(void **state)
{
	outbox_opts o = opts();
	outbox *ob = outbox_open(path, &o, NULL, 0);
	assert_non_null(ob);
	assert_int_equal(append(ob, "a", 0, 1), 0);
	assert_int_equal(outbox_commit(ob), 0);
	sqlite3 *db = outbox_writer_db(ob);
	char sql[80];
	snprintf(sql, sizeof sql, "PRAGMA max_page_count=%lld", (long long)count_rows("PRAGMA page_count"));
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	size_t nbig = 200000;
	char *big = malloc(nbig);
	assert_non_null(big);
	memset(big, 'q', nbig);
	assert_int_equal(append(ob, "a", 0, 2), 0);
	assert_true(outbox_quarantine(ob, 1700000000000, "dev-1", "devices/dev-1/telemetry", "schema", "x", "too big", big,
				      nbig) < 0);
	free(big);
	assert_int_equal(sqlite3_exec(db, "PRAGMA max_page_count=1073741823", NULL, NULL, NULL), SQLITE_OK);
	/* the failed group is over; the next one starts clean and commits */
	assert_false(outbox_in_txn(ob));
	json_t *rec = json_pack("{s:s}", "marker", "after");
	const char *sinks[] = {"a"};
	assert_int_equal(outbox_append(ob, sinks, 1, OUTBOX_PRIO_BULK, "telemetry", "dev-1", 1700000010000, rec, NULL), 0);
	json_decref(rec);
	assert_int_equal(outbox_commit(ob), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE CAST(payload AS TEXT) LIKE '%after%'"), 1);
	/* record 2 went with its group: the caller was told (the quarantine failed) */
	assert_int_equal(count_rows("SELECT count(*) FROM outbox"), 2);
	assert_int_equal(atomic_load(&outbox_counters_of(ob)->rows), 2);
	outbox_close(ob);
}

static int each(void **state)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -f %s/outbox.db*", dir);
	return system(cmd);
}

static int teardown(void **state)
{
	tu_rmtree(dir);
	free(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_group_commit_and_batches, each),
		cmocka_unit_test_setup(test_group_due_after_clock_step_back, each),
		cmocka_unit_test_setup(test_ids_never_reused_and_durable, each),
		cmocka_unit_test_setup(test_cap_drop_oldest_keeps_alerts, each),
		cmocka_unit_test_setup(test_cap_reject_new, each),
		cmocka_unit_test_setup(test_quarantine_table, each),
		cmocka_unit_test_setup(test_corrupt_file_moved_aside, each),
		cmocka_unit_test_setup(test_deferred_delete, each),
		cmocka_unit_test_setup(test_deferred_delete_reuse_and_restart, each),
		cmocka_unit_test_setup(test_deferred_delete_drain, each),
		cmocka_unit_test_setup(test_migrate_v2_rows, each),
		cmocka_unit_test_setup(test_wal_restarts_under_continuous_ingest, each),
		cmocka_unit_test_setup(test_cap_bounds_the_files_on_disk, each),
		cmocka_unit_test_setup(test_drop_oldest_across_sinks, each),
		cmocka_unit_test_setup(test_drained_outbox_shrinks, each),
		cmocka_unit_test_setup(test_wal_bounded_during_a_drain, each),
		cmocka_unit_test_setup(test_sink_backlog_and_oldest, each),
		cmocka_unit_test_setup(test_full_inside_group_ends_it, each),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
