/*
 * registry_sql.h — every SQL text of the device registry, in one place.
 *
 * The schema evolves only forwards: REGISTRY_MIGRATIONS[i] takes a database from
 * `PRAGMA user_version` i to i+1, and registry_open() applies the missing ones in one
 * transaction. A migration is never edited once released; a change is a new entry. The
 * statements are prepared once by registry_open() and kept in the registry struct, indexed
 * by enum registry_stmt, so the hot path (the broker plugin's fingerprint lookup) never
 * parses SQL. Only registry.c and the unit test of the migrations include this header.
 */
#ifndef TG_REGISTRY_SQL_H
#define TG_REGISTRY_SQL_H

/* clang-format off */
static const char *const REGISTRY_MIGRATIONS[] = {
	/* 0 -> 1: things and their certificates (IoT Core's thing + certificate, attached). */
	"CREATE TABLE thing("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL);"
	"CREATE TABLE certificate("
	"  id INTEGER PRIMARY KEY,"
	"  thing_id INTEGER NOT NULL REFERENCES thing(id) ON DELETE CASCADE,"
	"  fingerprint TEXT NOT NULL UNIQUE," /* lowercase hex SHA-256 of the DER */
	"  subject_cn TEXT NOT NULL DEFAULT '',"
	"  status TEXT NOT NULL CHECK (status IN ('ACTIVE','INACTIVE','REVOKED')),"
	"  not_after_ms INTEGER NOT NULL DEFAULT 0,"
	"  pem TEXT,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL);"
	"CREATE INDEX certificate_thing ON certificate(thing_id);",

	/* 1 -> 2: thing attributes (key/value) and where a certificate came from (cli/jitr). */
	"CREATE TABLE attribute("
	"  thing_id INTEGER NOT NULL REFERENCES thing(id) ON DELETE CASCADE,"
	"  key TEXT NOT NULL,"
	"  value TEXT NOT NULL,"
	"  PRIMARY KEY (thing_id, key)) WITHOUT ROWID;"
	"ALTER TABLE certificate ADD COLUMN source TEXT NOT NULL DEFAULT 'cli';",
};
/* clang-format on */

/* Used before the statements below exist (opening, migrating). */
#define REGISTRY_SQL_GET_VERSION "PRAGMA user_version"
#define REGISTRY_SQL_SET_VERSION "PRAGMA user_version = %d" /* printf format */
#define REGISTRY_SQL_TX_BEGIN "BEGIN IMMEDIATE"
#define REGISTRY_SQL_TX_COMMIT "COMMIT"
#define REGISTRY_SQL_TX_ROLLBACK "ROLLBACK"
/* WAL lets the plugin read while the CLI writes; NORMAL is durable enough in WAL (a power cut
 * may lose the last commit, never corrupt the file). */
#define REGISTRY_SQL_RW_SETUP \
	"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"

#define REGISTRY_SCHEMA_VERSION ((int)(sizeof REGISTRY_MIGRATIONS / sizeof REGISTRY_MIGRATIONS[0]))

enum registry_stmt {
	RS_BEGIN,
	RS_COMMIT,
	RS_ROLLBACK,
	RS_DATA_VERSION,
	RS_READ_BEGIN,
	RS_THING_INSERT,
	RS_THING_GET,
	RS_THING_TOUCH,
	RS_THING_LIST,
	RS_THING_PAGE,
	RS_CERT_INSERT,
	RS_CERT_OWNER,
	RS_CERT_LOOKUP,
	RS_CERT_STATUS_ONE_GET,
	RS_CERT_STATUS_ONE_SET,
	RS_CERT_STATUS_ALL_SET,
	RS_CERT_STATUS_COUNT,
	RS_CERT_LIST,
	RS_ATTR_SET,
	RS_ATTR_DEL,
	RS_ATTR_LIST,
	RS__COUNT
};

static const char *const REGISTRY_SQL[RS__COUNT] = {
	[RS_BEGIN] = REGISTRY_SQL_TX_BEGIN,
	[RS_COMMIT] = REGISTRY_SQL_TX_COMMIT,
	[RS_ROLLBACK] = REGISTRY_SQL_TX_ROLLBACK,
	[RS_DATA_VERSION] = "PRAGMA data_version",
	/* a reader's snapshot over many look-ups (the plugin's re-check after a change); RS_COMMIT ends it */
	[RS_READ_BEGIN] = "BEGIN DEFERRED",
	[RS_THING_INSERT] = "INSERT INTO thing(name, created_ms, updated_ms) VALUES (?1, ?2, ?2)",
	[RS_THING_GET] = "SELECT id, created_ms, updated_ms FROM thing WHERE name = ?1",
	[RS_THING_TOUCH] = "UPDATE thing SET updated_ms = ?2 WHERE id = ?1",
	[RS_THING_LIST] = "SELECT t.name, t.created_ms, t.updated_ms, count(c.id),"
			  " coalesce(sum(c.status = 'ACTIVE'), 0), coalesce(sum(c.status = 'REVOKED'), 0)"
			  " FROM thing t LEFT JOIN certificate c ON c.thing_id = t.id"
			  " GROUP BY t.id ORDER BY t.name",
	/* one page after a name (keyset paging): walks the name index, so a page of a
	 * 100,000-thing registry costs what a page of a small one does */
	[RS_THING_PAGE] = "SELECT t.name, t.created_ms, t.updated_ms,"
			  " (SELECT count(*) FROM certificate c WHERE c.thing_id = t.id),"
			  " (SELECT count(*) FROM certificate c WHERE c.thing_id = t.id AND c.status = 'ACTIVE'),"
			  " (SELECT count(*) FROM certificate c WHERE c.thing_id = t.id AND c.status = 'REVOKED')"
			  " FROM thing t WHERE t.name > ?1 ORDER BY t.name LIMIT ?2",
	[RS_CERT_INSERT] = "INSERT INTO certificate(thing_id, fingerprint, subject_cn, status,"
			   " not_after_ms, pem, source, created_ms, updated_ms)"
			   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
	[RS_CERT_OWNER] = "SELECT t.name FROM certificate c JOIN thing t ON t.id = c.thing_id"
			  " WHERE c.fingerprint = ?1",
	[RS_CERT_LOOKUP] = "SELECT t.name, c.status, c.id, c.subject_cn"
			   " FROM certificate c JOIN thing t ON t.id = c.thing_id"
			   " WHERE c.fingerprint = ?1",
	[RS_CERT_STATUS_ONE_GET] = "SELECT status FROM certificate WHERE thing_id = ?1 AND fingerprint = ?2",
	[RS_CERT_STATUS_ONE_SET] = "UPDATE certificate SET status = ?3, updated_ms = ?4"
				   " WHERE thing_id = ?1 AND fingerprint = ?2 AND status <> ?3",
	/* REVOKED is terminal: bulk changes never bring a revoked certificate back. */
	[RS_CERT_STATUS_ALL_SET] = "UPDATE certificate SET status = ?2, updated_ms = ?3"
				   " WHERE thing_id = ?1 AND status <> 'REVOKED' AND status <> ?2",
	[RS_CERT_STATUS_COUNT] = "SELECT count(*), coalesce(sum(status = 'REVOKED'), 0) FROM certificate"
				 " WHERE thing_id = ?1",
	[RS_CERT_LIST] = "SELECT fingerprint, subject_cn, status, not_after_ms, created_ms,"
			 " updated_ms, pem, source FROM certificate WHERE thing_id = ?1 ORDER BY id",
	[RS_ATTR_SET] = "INSERT INTO attribute(thing_id, key, value) VALUES (?1, ?2, ?3)"
			" ON CONFLICT(thing_id, key) DO UPDATE SET value = excluded.value",
	[RS_ATTR_DEL] = "DELETE FROM attribute WHERE thing_id = ?1 AND key = ?2",
	[RS_ATTR_LIST] = "SELECT key, value FROM attribute WHERE thing_id = ?1 ORDER BY key",
};

#endif
