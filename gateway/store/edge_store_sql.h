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

/* migration to version 1. edge_dedupe: id orders the rows (restore replays them in order,
 * which also rebuilds the least-recently-seen order); seen is the newest reading's first
 * sighting, so a row whose readings all left the window goes by the index. */
#define EDGE_SQL_V1                                                                              \
	"CREATE TABLE IF NOT EXISTS edge_meta(key TEXT PRIMARY KEY, value);"                       \
	"CREATE TABLE IF NOT EXISTS edge_dedupe(thing TEXT NOT NULL, id INTEGER NOT NULL,"        \
	"  seen INTEGER NOT NULL, entries BLOB NOT NULL, PRIMARY KEY(thing, id)) WITHOUT ROWID;"   \
	"CREATE INDEX IF NOT EXISTS edge_dedupe_seen ON edge_dedupe(seen);"                         \
	"CREATE TABLE IF NOT EXISTS edge_aggregate(aggregate TEXT NOT NULL, thing TEXT NOT NULL,"  \
	"  grp TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY(aggregate, thing, grp)) WITHOUT ROWID;" \
	"INSERT OR IGNORE INTO edge_meta(key, value) VALUES('schema_version', 0);"

#define EDGE_SQL_GET_VERSION "SELECT value FROM edge_meta WHERE key = 'schema_version'"

#define EDGE_SQL_DEDUPE_PUT "INSERT INTO edge_dedupe(thing, id, seen, entries) VALUES(?1, ?2, ?3, ?4)"
#define EDGE_SQL_DEDUPE_DROP_THING "DELETE FROM edge_dedupe WHERE thing = ?1"
#define EDGE_SQL_DEDUPE_PRUNE "DELETE FROM edge_dedupe WHERE seen < ?1"
#define EDGE_SQL_DEDUPE_MAX_ID "SELECT coalesce(max(id), 0) FROM edge_dedupe"
#define EDGE_SQL_DEDUPE_LOAD "SELECT thing, entries FROM edge_dedupe WHERE seen >= ?1 ORDER BY id"
#define EDGE_SQL_DEDUPE_CLEAR "DELETE FROM edge_dedupe"

/* grp is '' for an aggregate without groupBy */
#define EDGE_SQL_AGG_PUT "INSERT OR REPLACE INTO edge_aggregate(aggregate, thing, grp, state) VALUES(?1, ?2, ?3, ?4)"
#define EDGE_SQL_AGG_DEL "DELETE FROM edge_aggregate WHERE aggregate = ?1 AND thing = ?2 AND grp = ?3"
#define EDGE_SQL_AGG_GET "SELECT state FROM edge_aggregate WHERE aggregate = ?1 AND thing = ?2 AND grp = ?3"
#define EDGE_SQL_AGG_LOAD "SELECT aggregate, thing, grp, state FROM edge_aggregate"
#define EDGE_SQL_AGG_DROP "DELETE FROM edge_aggregate WHERE aggregate = ?1"
#define EDGE_SQL_AGG_CLEAR "DELETE FROM edge_aggregate"
/* the layout each aggregate's stored windows were written under */
#define EDGE_SQL_LAYOUTS "SELECT substr(key, 11), value FROM edge_meta WHERE key LIKE 'aggregate:%'"
#define EDGE_SQL_LAYOUT_PUT "INSERT OR REPLACE INTO edge_meta(key, value) VALUES('aggregate:' || ?1, ?2)"
#define EDGE_SQL_LAYOUT_DEL "DELETE FROM edge_meta WHERE key = 'aggregate:' || ?1"

#endif
