/*
 * retention.h — a bounded local store of recent accepted telemetry, for the console's
 * "latest" and "series" views and its read-only SQL endpoint: one SQLite file beside the
 * outbox (default <data_dir>/retention.db), one row per accepted device record (the text
 * the outbox stored, without msg_id), keyed by the gateway's receive time.
 *
 * Cost: the ingest thread only copies each record's text into a pending list; the outbox's
 * group-commit hook keeps the rows of a committed group and drops those of a rolled-back
 * one, and the kept rows are written in one transaction at most twice a second, right after
 * an outbox commit (or from the daemon's loop when ingest is idle) — never one per message. Rows older than
 * the retention period, and the oldest rows while the stored text is over max_bytes, are
 * deleted at most once a second inside that same transaction, in id order (ids follow
 * receive time). The file is a cache: synchronous=OFF, and a file that cannot be opened as
 * a database is replaced by a new one.
 *
 * Threads: add/group on the ingest thread only; the readers (latest, series, query, stats)
 * from any thread — they share one read-only connection each under a mutex, so a slow
 * query is bounded by its own time limit, not by the writer.
 *
 * Ownership: ops_retention_open copies the conf; results of the readers are new references
 * the caller decrefs.
 */
#ifndef TG_OPS_RETENTION_H
#define TG_OPS_RETENTION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ops_retention ops_retention;

typedef struct ops_retention_conf {
	const char *path;
	int64_t period_ms; /* keep this long (> 0) */
	int64_t max_bytes; /* cap on stored record text (> 0) */
} ops_retention_conf;

typedef struct ops_retention_stats {
	int64_t rows, bytes;   /* stored now (bytes: record text) */
	int64_t disk_bytes;    /* database + WAL files */
	uint64_t written, trimmed, dropped, write_errors;
} ops_retention_stats;

ops_retention *ops_retention_open(const ops_retention_conf *c, char *err, size_t errlen);
void ops_retention_close(ops_retention *r); /* NULL-safe; writes nothing pending */

/* Writer side (ingest thread). text is copied. */
void ops_retention_add(ops_retention *r, const char *thing, int64_t received_ms, const char *text, size_t len);
/* The outbox group hook: committed = 1 keeps the group's rows for writing, 0 drops them.
 * Kept rows are written (and the store trimmed) in one transaction at most every 500 ms
 * (or 20,000 rows), at a group commit or at ops_retention_tick — so a reader sees a record
 * at most about half a second after it was accepted. */
void ops_retention_group(ops_retention *r, int committed, int64_t now_ms);
/* Writer thread, when no outbox group is open (the daemon's loop): write what is due. */
void ops_retention_tick(ops_retention *r, int64_t now_ms);

/* Readers (any thread). NULL with err set on failure; err "" with NULL = nothing found. */
json_t *ops_retention_latest(ops_retention *r, const char *thing, char *err, size_t errlen);
/* Buckets of step_ms from since_ms (inclusive) to until_ms (exclusive): an array of
 * {"t": bucket start, "min", "avg", "max", "n"} for the numeric values of field (a dotted
 * path of [A-Za-z0-9_] names) of one thing's records; empty buckets are left out. */
json_t *ops_retention_series(ops_retention *r, const char *thing, const char *field, int64_t since_ms,
			     int64_t until_ms, int64_t step_ms, char *err, size_t errlen);
/* Run one read-only SELECT over the table `samples(id, ts, thing, body)`. SQLite's
 * authorizer allows reading that table and calling functions, nothing else; the statement
 * is interrupted after timeout_ms; at most max_rows rows come back ("truncated": true).
 * Returns {"columns": [...], "rows": [[...], ...], "truncated": bool}. */
json_t *ops_retention_query(ops_retention *r, const char *sql, int64_t max_rows, int64_t timeout_ms, char *err,
			    size_t errlen);
void ops_retention_stats_get(ops_retention *r, ops_retention_stats *st);

#endif
