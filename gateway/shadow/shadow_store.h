/*
 * shadow/shadow_store.h — the shadows on disk (SQLite), one row per (thing, shadow name).
 *
 * The tables live in the outbox database and the daemon's store runs on the outbox writer's
 * own connection (outbox_writer_db), inside the outbox's group transaction: a shadow change,
 * the "shadows" record it makes for the sinks and the PUBACK of the request that asked for it
 * are committed (or rolled back) together, and the change costs no commit of its own. A
 * second database would need two commits per group and could not be atomic with the outbox
 * (SQLite commits across attached WAL databases are atomic per file only): a crash between
 * the two would leave a shadow change without its record, or a record without its change.
 * The outbox's WAL, checkpoints and durability setting (synchronous=NORMAL: a kill -9 loses
 * nothing committed) apply as they are.
 *
 * A deleted shadow stays as a tombstone holding its version, so a shadow created again under
 * the same name continues the counter, as IoT Core does for 48 hours; shadow_store_purge
 * removes tombstones older than that.
 *
 * Every statement is prepared once (shadow_sql.h). Writes must run inside a transaction the
 * caller opened (outbox_join); reads run in it or on their own.
 *
 * Ownership: shadow_store_attach borrows the connection (the outbox owns it and outlives the
 * store); shadow_store_open_ro opens and owns a read-only connection (the CLI). Either way
 * shadow_store_close frees the store.
 */
#ifndef TG_SHADOW_STORE_H
#define TG_SHADOW_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "shadow/shadow_doc.h"

struct sqlite3;
typedef struct shadow_store shadow_store;

/* Create or migrate the tables (in a transaction of its own: call it while no transaction is
 * open on db) and prepare the statements. NULL + err on failure. */
shadow_store *shadow_store_attach(struct sqlite3 *db, char *err, size_t errlen);
/* A read-only store on the database file at path (created by the daemon). NULL + err;
 * the message says so when the file holds no shadow tables yet. */
shadow_store *shadow_store_open_ro(const char *path, char *err, size_t errlen);
void shadow_store_close(shadow_store *s); /* NULL-safe */

typedef struct shadow_row {
	int64_t version;     /* the counter: 0 when there never was a row */
	int64_t created_ms, updated_ms;
	int64_t deleted_ms;  /* 0: live; else a tombstone */
} shadow_row;

/* Read (thing, name) (name "" is the classic shadow). 0 with *row filled and, for a live
 * shadow, *doc loaded (else *doc is empty with the tombstone's version); TG_ENOTFOUND (no row:
 * *doc empty, version 0); TG_EDB, TG_EPARSE (stored JSON unreadable) or TG_ENOMEM. *doc must
 * be freed with shadow_doc_free after any return. */
int shadow_store_load(shadow_store *s, const char *thing, const char *name, shadow_row *row, shadow_doc *doc);
/* Write d as the live shadow (thing, name). created_ms is used when the row is new or a
 * tombstone. 0, TG_ENOMEM or TG_EDB. */
int shadow_store_put(shadow_store *s, const char *thing, const char *name, const shadow_doc *d, int64_t now_ms);
/* Turn a live shadow into a tombstone (its version kept). 0, TG_ENOTFOUND or TG_EDB. */
int shadow_store_delete(shadow_store *s, const char *thing, const char *name, int64_t now_ms);
/* 1 when a tombstone deleted before before_ms exists, 0 when none, TG_EDB. */
int shadow_store_has_expired(shadow_store *s, int64_t before_ms);
/* Remove tombstones deleted before before_ms. Returns how many, or TG_EDB. */
int shadow_store_purge(shadow_store *s, int64_t before_ms);
/* Live shadows stored, or TG_EDB. */
int64_t shadow_store_count(shadow_store *s);

typedef struct shadow_list_item {
	const char *thing, *name; /* borrowed for the callback */
	int64_t version, created_ms, updated_ms, state_bytes;
} shadow_list_item;
/* Call fn for every live shadow (of thing, or of all things when thing is NULL) in (thing,
 * name) order; fn returning non-zero stops the walk and is returned. TG_EDB on error. */
int shadow_store_list(shadow_store *s, const char *thing, int (*fn)(void *ud, const shadow_list_item *it), void *ud);

#endif
