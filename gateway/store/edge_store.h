/*
 * edge_store.h — the dedupe memory and the open aggregate windows, kept in the outbox
 * database and written in the same group commits as the records they came from.
 *
 * Why the outbox's transaction: a message is accepted when its group commits; its dedupe
 * reading and what it added to a window must become durable at that very moment, or a
 * crash leaves the two disagreeing (a resend stored twice, a window counting a message the
 * outbox never kept, or a window emitted twice). So the store writes, in the
 * OUTBOX_GROUP_COMMITTING hook, only what changed in the group (the dirty readings and
 * keys the modules hand out) and forgets the marks when the group committed.
 *
 * Tables (edge_store_sql.h): edge_log — a journal, one row per group holding what the
 * group changed, and now and then a snapshot of the whole state after which the older rows
 * go (edge_store.c); edge_meta — the schema version, where the last snapshot starts and, per
 * aggregate, the layout its stored windows were written under (a changed aggregate's
 * windows are dropped at start, logged, because their accumulators mean something else).
 * A group rolled back takes its changes out of memory too (dedupe_dirty_done,
 * aggregate_dirty_done), so memory and database agree again.
 *
 * Ownership: dd and agg are borrowed (either may be NULL) and must outlive the store;
 * the store registers itself as a group hook of ob and removes it in edge_store_close.
 */
#ifndef TG_EDGE_STORE_H
#define TG_EDGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "edge/aggregate.h"
#include "edge/dedupe.h"
#include "store/outbox.h"

typedef struct edge_store edge_store;

typedef struct edge_store_restored {
	uint64_t things, readings;     /* dedupe: things and readings (inside the window) put back */
	uint64_t keys;                 /* aggregate keys with open windows put back */
	uint64_t keys_dropped;         /* stored key records not restored: their aggregate is gone or changed */
} edge_store_restored;

/* Create the tables if needed and, when persist is on, restore dd and agg from them (at
 * now_ms: readings outside the window are skipped and their rows pruned) and start writing
 * each group's changes. persist off: what an earlier run stored is deleted (it would be
 * stale when persistence is turned on again) and nothing is written. Must be called while
 * no group is open. The caller owns the result; NULL and err on failure. */
edge_store *edge_store_open(outbox *ob, dedupe *dd, aggregate_set *agg, int persist, int64_t now_ms,
			    edge_store_restored *out, char *err, size_t errlen);
/* Stop writing (removes the group hook). The changes of an open group are lost unless it
 * was committed first. NULL-safe. */
void edge_store_close(edge_store *es);

#endif
