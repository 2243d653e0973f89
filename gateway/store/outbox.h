/*
 * outbox.h — the durable hand-off between ingest and forwarding (SQLite, WAL).
 *
 * One row per (record, sink): each sink advances independently and a row is deleted once
 * its sink delivered it. A record is "accepted" once the transaction holding it commits;
 * the ingest thread appends into an open transaction and commits in groups (outbox_tick:
 * after commit_max_records records or commit_interval_ms after the first, whichever
 * first), so durability costs one fsync-free WAL commit per group (synchronous=NORMAL:
 * survives kill -9 of the daemon; a power cut may lose the last groups — set
 * synchronous=FULL in outbox_opts to trade speed for that).
 *
 * Threads: exactly two handles may exist on one file — the writer (ingest thread,
 * outbox_open) and a reader/deleter (forwarder thread, outbox_open_reader). They never
 * share a handle. The byte/row counters used for caps are shared through the outbox_shared
 * struct the writer owns (atomics).
 *
 * msg_id: every record gets a 64-bit id from a persisted high-water mark, so ids are never
 * reused even after the table drains; "<gateway_id>-<id>" is the record's msg_id.
 */
#ifndef TG_OUTBOX_H
#define TG_OUTBOX_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/sink.h"

typedef struct outbox outbox;

enum { OUTBOX_PRIO_BULK = 0, OUTBOX_PRIO_AGGREGATE = 1, OUTBOX_PRIO_ALERT = 2 };
enum { OUTBOX_DROP_OLDEST = 0, OUTBOX_REJECT_NEW = 1 };

typedef struct outbox_opts {
	int64_t commit_interval_ms;
	int64_t commit_max_records;
	int64_t max_bytes; /* 0 = no cap */
	int64_t max_rows;  /* 0 = no cap */
	int full_policy;   /* OUTBOX_DROP_OLDEST / OUTBOX_REJECT_NEW */
	int64_t wal_max_bytes; /* the WAL's bound (0 = 64 MiB), at most a quarter of max_bytes */
	int synchronous_full;
	const char *gateway_id;
} outbox_opts;

typedef struct outbox_counters {
	_Atomic int64_t rows, bytes;        /* currently queued (all sinks) */
	_Atomic uint64_t appended;          /* rows committed */
	_Atomic uint64_t commits;
	_Atomic uint64_t dropped;           /* rows removed by drop_oldest */
	_Atomic uint64_t dropped_alerts;    /* of which priority >= OUTBOX_PRIO_ALERT */
	_Atomic uint64_t rejected;          /* appends refused by reject_new */
	_Atomic uint64_t delivered;         /* rows deleted after delivery */
	_Atomic uint64_t dead;              /* rows moved to dead letters */
	_Atomic uint64_t quarantined;
	_Atomic int64_t oldest_uncommitted_ms;
	_Atomic int64_t last_commit_ms;
	/* on disk (see outbox_disk_usage) */
	_Atomic int64_t db_used_bytes;      /* pages in use (not on the free list), at the last commit */
	_Atomic int64_t record_cap_bytes;   /* max_bytes turned into record bytes (0 = no cap) */
	_Atomic int64_t wal_bytes;          /* frames in the WAL since it last restarted */
	_Atomic int64_t wal_peak_bytes;     /* highest wal_bytes seen */
	_Atomic int64_t wal_limit_bytes;    /* the bound in force */
	_Atomic uint64_t wal_restarts;      /* checkpoints that let the WAL start over */
	_Atomic uint64_t wal_restart_busy;  /* attempts a reader held up (retried at the next commit) */
	_Atomic int64_t wal_restart_max_us; /* longest such checkpoint, on the ingest thread */
	_Atomic uint64_t ckpt_skipped;      /* checkpoints not run: WAL copied back, its restart pending */
	_Atomic uint64_t wal_restart_us;     /* time spent in them, in all */
	_Atomic uint64_t aborted;           /* groups rolled back because they could not be stored */
	_Atomic int disk_full;              /* 1 from a group rolled back for a full disk to the next commit */
} outbox_counters;

/* What the outbox's files take on disk now (stat of the database, -wal and -shm files). */
typedef struct outbox_disk {
	int64_t db, wal, shm, total;
} outbox_disk;

/* Open (create, migrate) the writer handle. If the file is corrupt or not a database it
 * is renamed to <path>.corrupt-<epoch> and a new one is created (logged). Caller owns the
 * result; NULL + err on failure. opts is copied. */
outbox *outbox_open(const char *path, const outbox_opts *opts, char *err, size_t errlen);
/* Commits what is pending, then closes. NULL-safe. */
void outbox_close(outbox *ob);
outbox_counters *outbox_counters_of(outbox *ob); /* borrowed, lives as long as ob */
/* stat() the three files; any thread. 0 or TG_EIO (then *d holds what could be read). */
int outbox_disk_usage(const outbox *ob, outbox_disk *d);

/* Append one record for each of nsinks sinks: serialises obj (borrowed; a "msg_id" member
 * of it is removed, since the gateway's msg_id is the record's identity) and queues the
 * rows in the open transaction. The reader puts "msg_id":"<gateway_id>-<id>" in as the
 * first member when it hands the record to a sink, so the id is never serialised twice.
 * Returns 0, TG_EFULL (reject_new and full), or another TG_E*. *id_out gets the record id. */
int outbox_append(outbox *ob, const char *const *sinks, size_t nsinks, int prio, const char *table,
		  const char *pkey, int64_t created_ms, json_t *obj, int64_t *id_out);
/* Store a rejected message in the quarantine table (inside the same group commit). */
int outbox_quarantine(outbox *ob, int64_t received_ms, const char *thing, const char *topic,
		      const char *reason, const char *field, const char *detail, const void *payload,
		      size_t len);
/* Commit if the group is full or old enough. Returns 1 if it committed, 0 if not, < 0 on error. */
int outbox_tick(outbox *ob, int64_t now_ms);
int outbox_commit(outbox *ob); /* commit now */
int outbox_in_txn(const outbox *ob); /* appends are waiting for a commit */
/* ms until the open group must be committed (INT64_MAX when nothing is pending) */
int64_t outbox_next_deadline(const outbox *ob, int64_t now_ms);

/* ---- tables of other modules in the outbox database (writer side, ingest thread) ------ */
/* A module that keeps its own tables in this database (gateway/shadow/) writes them on the
 * writer's connection, inside the group transaction, so its changes commit or roll back with
 * the records and PUBACKs of the same group. Borrowed, lives as long as ob; its statements
 * must never COMMIT or ROLLBACK themselves. */
struct sqlite3 *outbox_writer_db(outbox *ob);
/* Open the group transaction if none is open and count one entry in it (commit_max_records
 * counts these too). 0 or TG_EDB. */
int outbox_join(outbox *ob, int64_t now_ms);
/* A write of such a module failed: roll the whole group back, as a failed append does (the
 * caller makes sure the messages of the group are not acknowledged). */
void outbox_abort(outbox *ob);
/* ---- group hooks ------------------------------------------------------------------- */
/* Modules that keep something per group hear of each group's end on the writer's thread:
 *  OUTBOX_GROUP_COMMITTING  inside the open transaction, right before its COMMIT: the last
 *                           moment to write into it (the edge state writes what changed in
 *                           the group here). A return < 0 rolls the whole group back.
 *  OUTBOX_GROUP_COMMITTED   right after the COMMIT: what the module did in the group is durable.
 *  OUTBOX_GROUP_ROLLED_BACK after a rollback (a failed append, write or commit): undone.
 * now_ms: the group's first append (COMMITTING) or the wall clock. Hooks run in the order
 * they were added; for COMMITTED and ROLLED_BACK the return value is ignored. A hook may
 * write on outbox_writer_db() while COMMITTING, and must not call outbox_commit/abort. */
typedef enum { OUTBOX_GROUP_COMMITTING, OUTBOX_GROUP_COMMITTED, OUTBOX_GROUP_ROLLED_BACK } outbox_group_event;
typedef int (*outbox_group_fn)(void *ud, outbox_group_event ev, int64_t now_ms);
#define OUTBOX_MAX_GROUP_HOOKS 8
/* 0, TG_EINVAL (fn NULL) or TG_EFULL (OUTBOX_MAX_GROUP_HOOKS already). ud is borrowed. */
int outbox_add_group_hook(outbox *ob, outbox_group_fn fn, void *ud);
/* Remove the hook added with exactly (fn, ud); nothing if there is none. */
void outbox_remove_group_hook(outbox *ob, outbox_group_fn fn, void *ud);
/* The text the last successful outbox_append stored (the record without msg_id), so a
 * caller that wants the same text does not serialise it again. Borrowed: valid until the
 * next append or quarantine. NULL before any append. */
const char *outbox_last_text(const outbox *ob, size_t *len);
/* Move every dead letter of sink_name back into its queue (bulk priority, new ids, so they sort
 * after the sink's cursor), in a transaction of its own committed before it returns.
 * Writer's thread only, and only while no group is open (outbox_in_txn() == 0): a failure
 * then rolls back nothing but this. *moved gets the number of rows. 0, TG_EINVAL (a group
 * is open) or TG_EDB. */
int outbox_requeue_dead(outbox *ob, const char *sink_name, int64_t now_ms, int64_t *moved);

/* ---- reader side (forwarder thread) ------------------------------------------------- */
typedef struct outbox_reader outbox_reader;

typedef struct outbox_batch {
	sink_record *recs;
	int64_t *seqs;     /* row ids to delete */
	int *prios;        /* priority per row (rows come highest priority first) */
	int64_t *stored;   /* stored payload length per row (what the byte cap counts) */
	char **bufs;       /* owned strings behind recs */
	size_t n, cap;
	size_t bytes;
	int64_t oldest_ms; /* created_ms of the first (oldest) record, 0 if empty */
	int64_t sink_id;   /* outbox-internal id of the batch's sink */
} outbox_batch;

outbox_reader *outbox_open_reader(outbox *ob, char *err, size_t errlen);
void outbox_reader_close(outbox_reader *r); /* NULL-safe */
/* Read up to max_records / max_bytes rows of one sink in priority then id order into b
 * (b is cleared first). Returns the number of records or < 0. */
int outbox_read_batch(outbox_reader *r, const char *sink_name, size_t max_records, size_t max_bytes,
		      outbox_batch *b);
/* Settle a sent batch. status[i] per record.
 * All SINK_OK (the usual case): the batch's rows are queued for deletion and the sink's
 * cursor moves past them, so the next read does not see them again; the ingest thread
 * deletes them inside its next group transaction (outbox_append / outbox_tick), which
 * spares the forwarder a write transaction of its own and the lock hand-over with the
 * ingest thread. A queue beyond OUTBOX_PENDING_HELP rows (a drain with no ingest traffic)
 * is deleted by the forwarder itself. A crash before the deletion commits delivers those
 * rows again after the restart (at-least-once, as a crash between send and settle always
 * did).
 * Otherwise, in one transaction: delivered rows deleted, SINK_POISON rows dead-lettered
 * (error is stored with them), SINK_RETRY rows stay and are read again. */
int outbox_settle(outbox_reader *r, const char *sink_name, const outbox_batch *b, const sink_status *status,
		  const char *error, int64_t now_ms);
/* Reclaim free pages when many are free (incremental vacuum). */
int outbox_reclaim(outbox_reader *r);
int64_t outbox_pending(outbox_reader *r, const char *sink_name); /* rows queued for one sink */
void outbox_batch_free(outbox_batch *b); /* frees contents; NULL-safe */

/* ---- per sink ----------------------------------------------------------------------- */
/* Rows and payload bytes queued for one sink, from counters kept as rows come and go (any
 * thread; no query). TG_ENOTFOUND (and 0, 0) for a sink nothing was ever queued for. */
int outbox_sink_backlog(outbox *ob, const char *sink_name, int64_t *rows, int64_t *bytes);
/* created_ms of the oldest row the sink has not been handed yet (0: none), < 0 on error.
 * One index seek per priority; reader side. */
int64_t outbox_oldest_pending(outbox_reader *r, const char *sink_name);

/* ---- stores that keep their own tables in outbox.db (shadows, edge state) ---------------- */

struct sqlite3;
/* Such a store's schema version, read with get_version_sql: 0 before its tables exist, -1
 * on error. */
int64_t outbox_substore_version(struct sqlite3 *db, const char *get_version_sql);
/* Bring such a store to version nsteps: steps[v] takes version v to v + 1, each a whole
 * transaction that also records the new version. Refuses a version newer than this build.
 * what names the store in errors ("shadow store: ..."). 0 or TG_EDB. */
int outbox_substore_migrate(struct sqlite3 *db, const char *get_version_sql, const char *const *steps, int nsteps,
			    const char *what, char *err, size_t errlen);

#endif
