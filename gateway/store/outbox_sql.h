/*
 * outbox_sql.h — every SQL statement of the outbox in one place. Schema changes append a
 * new migration step; the schema version is kept in PRAGMA user_version.
 */
#ifndef TG_OUTBOX_SQL_H
#define TG_OUTBOX_SQL_H

#define OUTBOX_SCHEMA_VERSION 3

/* migration to version 1 */
#define OUTBOX_SQL_V1                                                                     \
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"     \
	"CREATE TABLE IF NOT EXISTS sinks(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);" \
	"CREATE TABLE IF NOT EXISTS outbox("                                               \
	"  seq INTEGER PRIMARY KEY, sink INTEGER NOT NULL, prio INTEGER NOT NULL,"         \
	"  id INTEGER NOT NULL, created_ms INTEGER NOT NULL, tbl TEXT NOT NULL,"           \
	"  pkey TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);" \
	"CREATE INDEX IF NOT EXISTS outbox_by_sink ON outbox(sink, prio DESC, seq);"       \
	"CREATE TABLE IF NOT EXISTS dead("                                                 \
	"  seq INTEGER PRIMARY KEY, sink TEXT NOT NULL, id INTEGER NOT NULL,"              \
	"  created_ms INTEGER NOT NULL, tbl TEXT NOT NULL, pkey TEXT NOT NULL,"            \
	"  payload BLOB NOT NULL, error TEXT NOT NULL, dead_ms INTEGER NOT NULL);"         \
	"CREATE TABLE IF NOT EXISTS quarantine("                                           \
	"  seq INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, thing TEXT, topic TEXT," \
	"  reason TEXT NOT NULL, field TEXT, detail TEXT, payload BLOB);"                  \
	"INSERT OR IGNORE INTO meta(key, value) VALUES('last_id', 0);"

/* migration to version 2: drop_oldest walks outbox_by_sink per (sink, prio) instead of a
 * second index that every insert had to maintain */
#define OUTBOX_SQL_V2 "DROP INDEX IF EXISTS outbox_by_age;"

/* migration to version 3: the rows live in their (sink, prio, seq) order — the order every
 * read, delete and drop walks — in one WITHOUT ROWID b-tree, instead of a rowid table plus
 * an index every insert and delete had to maintain (and every read had to look up through) */
#define OUTBOX_SQL_V3                                                                      \
	"CREATE TABLE outbox_v3("                                                          \
	"  seq INTEGER NOT NULL, sink INTEGER NOT NULL, prio INTEGER NOT NULL,"            \
	"  id INTEGER NOT NULL, created_ms INTEGER NOT NULL, tbl TEXT NOT NULL,"           \
	"  pkey TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0," \
	"  PRIMARY KEY(sink, prio, seq)) WITHOUT ROWID;"                                  \
	"INSERT INTO outbox_v3(seq, sink, prio, id, created_ms, tbl, pkey, payload, attempts)" \
	"  SELECT seq, sink, prio, id, created_ms, tbl, pkey, payload, attempts FROM outbox;" \
	"DROP TABLE outbox;"                                                               \
	"ALTER TABLE outbox_v3 RENAME TO outbox;"

/* seq is given, not left to SQLite: id * 32 + the sink's place in the append, so seqs follow
 * ids and, like ids, are never reused (a rowid is, once the table drains); readers keep a
 * seq cursor per sink and priority (outbox_settle). Rows written before this have smaller
 * seqs than any id * 32 after them, so the order holds across the upgrade. */
#define OUTBOX_SQL_INSERT                                                                  \
	"INSERT INTO outbox(sink, prio, id, created_ms, tbl, pkey, payload, seq) VALUES(?,?,?,?,?,?,?,?)"
#define OUTBOX_SQL_SET_LAST_ID "UPDATE meta SET value = ? WHERE key = 'last_id'"
#define OUTBOX_SQL_GET_LAST_ID "SELECT value FROM meta WHERE key = 'last_id'"
#define OUTBOX_SQL_MAX_ID "SELECT coalesce(max(id), 0) FROM outbox"
/* rows and payload bytes queued, per sink (read once at open; the totals are their sum) */
#define OUTBOX_SQL_SINK_TOTALS "SELECT sink, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY sink"
#define OUTBOX_SQL_SINK_ID "SELECT id FROM sinks WHERE name = ?"
#define OUTBOX_SQL_SINK_ADD "INSERT INTO sinks(name) VALUES(?)"
#define OUTBOX_SQL_OLDEST                                                                  \
	"SELECT seq, length(payload) FROM outbox WHERE sink = ? AND prio = ? AND seq < ? ORDER BY seq ASC LIMIT ?"
#define OUTBOX_SQL_ALL_SINKS "SELECT id, name FROM sinks"
#define OUTBOX_SQL_DELETE "DELETE FROM outbox WHERE sink = ? AND prio = ? AND seq = ?"
/* a whole delivered batch of one priority: the batch is every row of (sink, prio) up to
 * its last seq, since rows are read in (prio DESC, seq) order and new rows get larger
 * seqs; the id range (never reused, unlike a rowid) keeps a later row out in any case */
#define OUTBOX_SQL_DELETE_RANGE                                                            \
	"DELETE FROM outbox WHERE sink = ? AND prio = ? AND seq BETWEEN ? AND ? AND id BETWEEN ? AND ?"
#define OUTBOX_SQL_QUARANTINE                                                              \
	"INSERT INTO quarantine(received_ms, thing, topic, reason, field, detail, payload)"  \
	" VALUES(?,?,?,?,?,?,?)"
#define OUTBOX_SQL_QUARANTINE_TRIM                                                         \
	"DELETE FROM quarantine WHERE seq <= (SELECT max(seq) FROM quarantine) - ?"
/* one priority of one sink, past the rows delivered but not yet deleted (their seqs are at
 * most the sink's cursor for that priority, see outbox_settle) */
#define OUTBOX_SQL_BATCH                                                                   \
	"SELECT seq, id, created_ms, tbl, pkey, payload FROM outbox"                         \
	" WHERE sink = ? AND prio = ? AND seq > ? ORDER BY seq ASC LIMIT ?"
#define OUTBOX_SQL_DEAD                                                                    \
	"INSERT INTO dead(sink, id, created_ms, tbl, pkey, payload, error, dead_ms)"         \
	" SELECT ?, id, created_ms, tbl, pkey, payload, ?, ? FROM outbox WHERE sink = ? AND prio = ? AND seq = ?"
#define OUTBOX_SQL_ATTEMPT "UPDATE outbox SET attempts = attempts + 1 WHERE sink = ? AND prio = ? AND seq = ?"
#define OUTBOX_SQL_PENDING "SELECT count(*) FROM outbox WHERE sink = ?"
/* the operator's console: requeue a sink's dead letters (outbox_requeue_dead) */
#define OUTBOX_SQL_DEAD_LIST "SELECT seq, created_ms, tbl, pkey, payload FROM dead WHERE sink = ? ORDER BY seq"
#define OUTBOX_SQL_DEAD_DELETE "DELETE FROM dead WHERE sink = ? AND seq <= ?"
#define OUTBOX_SQL_FREELIST "PRAGMA freelist_count"
#define OUTBOX_SQL_PAGE_COUNT "PRAGMA page_count"
/* the oldest undelivered row of one priority of one sink (past its cursor): an index seek */
#define OUTBOX_SQL_OLDEST_PENDING                                                           \
	"SELECT created_ms FROM outbox WHERE sink = ? AND prio = ? AND seq > ? ORDER BY seq ASC LIMIT 1"

#endif
