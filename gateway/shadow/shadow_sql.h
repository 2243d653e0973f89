/*
 * shadow/shadow_sql.h — every SQL statement of the shadow store in one place.
 *
 * The tables live in the outbox database (see shadow_store.h for why), whose PRAGMA
 * user_version is the outbox's, so the shadow store keeps its own schema version in
 * shadow_meta. Schema changes append a migration step; released steps are never edited.
 */
#ifndef TG_SHADOW_SQL_H
#define TG_SHADOW_SQL_H

#define SHADOW_SCHEMA_VERSION 1

/* migration to version 1. A deleted shadow stays as a tombstone (state NULL, deleted_ms
 * set) so that a shadow created again under its name continues its version counter. */
#define SHADOW_SQL_V1                                                                          \
	"CREATE TABLE IF NOT EXISTS shadow_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"  \
	"CREATE TABLE IF NOT EXISTS shadow("                                                    \
	"  thing TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,"                 \
	"  state TEXT, metadata TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL," \
	"  deleted_ms INTEGER, PRIMARY KEY(thing, name)) WITHOUT ROWID;"                       \
	"CREATE INDEX IF NOT EXISTS shadow_tombstones ON shadow(deleted_ms) WHERE deleted_ms IS NOT NULL;" \
	"INSERT OR IGNORE INTO shadow_meta(key, value) VALUES('schema_version', 0);"

#define SHADOW_SQL_GET_VERSION "SELECT value FROM shadow_meta WHERE key = 'schema_version'"
#define SHADOW_SQL_SET_VERSION "UPDATE shadow_meta SET value = ? WHERE key = 'schema_version'"

#define SHADOW_SQL_LOAD                                                                        \
	"SELECT version, state, metadata, created_ms, updated_ms, deleted_ms FROM shadow"       \
	" WHERE thing = ? AND name = ?"
/* a write revives a tombstone: it keeps the version counter and starts a new life */
#define SHADOW_SQL_PUT                                                                         \
	"INSERT INTO shadow(thing, name, version, state, metadata, created_ms, updated_ms, deleted_ms)" \
	" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL)"                                              \
	" ON CONFLICT(thing, name) DO UPDATE SET version = excluded.version, state = excluded.state," \
	" metadata = excluded.metadata, updated_ms = excluded.updated_ms,"                       \
	" created_ms = CASE WHEN shadow.deleted_ms IS NULL THEN shadow.created_ms ELSE excluded.created_ms END," \
	" deleted_ms = NULL"
#define SHADOW_SQL_DELETE                                                                      \
	"UPDATE shadow SET state = NULL, metadata = NULL, deleted_ms = ?3, updated_ms = ?3"      \
	" WHERE thing = ?1 AND name = ?2 AND deleted_ms IS NULL"
#define SHADOW_SQL_EXPIRED "SELECT 1 FROM shadow WHERE deleted_ms IS NOT NULL AND deleted_ms < ? LIMIT 1"
#define SHADOW_SQL_PURGE "DELETE FROM shadow WHERE deleted_ms IS NOT NULL AND deleted_ms < ?"
#define SHADOW_SQL_COUNT "SELECT count(*) FROM shadow WHERE deleted_ms IS NULL"
#define SHADOW_SQL_LIST                                                                        \
	"SELECT thing, name, version, created_ms, updated_ms, length(state) FROM shadow"        \
	" WHERE deleted_ms IS NULL AND (?1 IS NULL OR thing = ?1) ORDER BY thing, name"

#endif
