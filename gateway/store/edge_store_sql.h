/*
 * edge_store_sql.h — every SQL statement of the edge state store (edge_store.h) in one place.
 *
 * The tables live in the outbox database, whose PRAGMA user_version is the outbox's, so the
 * store keeps its own schema version in edge_meta. Schema changes append a migration step;
 * released steps are never edited. Blobs are native byte order (the database stays on its box).
 */
#ifndef TG_EDGE_STORE_SQL_H
#define TG_EDGE_STORE_SQL_H

#define EDGE_SCHEMA_VERSION 1

/* migration to version 1. edge_log: a journal, one row per group that changed something
 * (the changes, encoded by edge_store.c), and now and then a snapshot of the whole state
 * (its first row's id in edge_meta 'snapshot'), after which the rows before it go. */
#define EDGE_SQL_V1                                                                              \
	"CREATE TABLE IF NOT EXISTS edge_meta(key TEXT PRIMARY KEY, value);"                       \
	"CREATE TABLE IF NOT EXISTS edge_log(id INTEGER PRIMARY KEY, data BLOB NOT NULL);"          \
	"INSERT OR IGNORE INTO edge_meta(key, value) VALUES('schema_version', 0);"                 \
	"INSERT OR IGNORE INTO edge_meta(key, value) VALUES('snapshot', 0);"

#define EDGE_SQL_GET_VERSION "SELECT value FROM edge_meta WHERE key = 'schema_version'"

#define EDGE_SQL_LOG_PUT "INSERT INTO edge_log(data) VALUES(?1)"
#define EDGE_SQL_LOG_READ "SELECT data FROM edge_log WHERE id >= ?1 ORDER BY id"
#define EDGE_SQL_LOG_TRIM "DELETE FROM edge_log WHERE id < ?1"
#define EDGE_SQL_LOG_CLEAR "DELETE FROM edge_log"
#define EDGE_SQL_SNAPSHOT_GET "SELECT value FROM edge_meta WHERE key = 'snapshot'"
#define EDGE_SQL_SNAPSHOT_SET "UPDATE edge_meta SET value = ?1 WHERE key = 'snapshot'"
/* the layout each aggregate's stored windows were written under */
#define EDGE_SQL_LAYOUTS "SELECT substr(key, 11), value FROM edge_meta WHERE key LIKE 'aggregate:%'"
#define EDGE_SQL_LAYOUTS_CLEAR "DELETE FROM edge_meta WHERE key LIKE 'aggregate:%'"
#define EDGE_SQL_LAYOUT_PUT "INSERT OR REPLACE INTO edge_meta(key, value) VALUES('aggregate:' || ?1, ?2)"

#endif
