/*
 * aggregate.h — tumbling-window aggregates per thing (and optionally per group key).
 *
 * Configured by a small JSON file (rules/aggregates/aggregates.json, documented in docs/schemas.md):
 *
 *   {"aggregates": [{"name": "telemetry_1m", "topic": "devices/+/telemetry",
 *                    "windowSeconds": 60, "graceSeconds": 10, "timeField": "ts",
 *                    "groupBy": "sensor_id", "maxKeys": 10000,
 *                    "fields": {"temperature": ["avg", "min", "max"], "seq": ["count"]}}]}
 *
 * Windows are aligned to the epoch ([k*W, (k+1)*W)) and assigned by event time (the
 * normalised `ts`, else the receive time). A window closes once now_ms >= end + grace; data
 * for a window still open is counted into it (late but within grace), data for a closed
 * window is counted as late (stats and the `late` field of the key's next emitted window),
 * data more than one window ahead of now_ms is counted as `future` and ignored.
 *
 * At close the window is handed to the caller's emit callback as a JSON object (flat, so a
 * lake table gets stable columns):
 *   {"aggregate", "thing", [groupBy field], "window_start", "window_end", "window_start_iso",
 *    "window_end_iso", "ts" (= window_start), "count", "late", "<field>_<fn>" ...}
 * A function over a field that had no numeric value in the window is null (count is 0).
 * The daemon republishes it on aggregates/<thing> so it runs through the rules.
 *
 * Memory is bounded by maxKeys x fields x slots, slots = ceil(grace/window) + 2: each key
 * keeps up to that many open windows, allocated as they are needed. Time is always injected
 * (now_ms). The state is kept in memory; edge_store.h stores what changed with each outbox
 * group (aggregate_foreach_dirty, aggregate_dirty_done) and restores it at start
 * (aggregate_restore; windows that closed meanwhile are emitted by the first tick, with
 * their own bounds). Not thread-safe: one set per ingest thread. The emit
 * callback is called from aggregate_add, aggregate_tick and aggregate_flush and must not
 * call back into the same aggregate_set (queue the message and publish it afterwards).
 */
#ifndef TG_AGGREGATE_H
#define TG_AGGREGATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct aggregate_set aggregate_set;

typedef struct aggregate_window {
	const char *aggregate; /* config name, e.g. "telemetry_1m" */
	const char *thing;
	const char *group;     /* group value as text, or NULL without groupBy */
	int64_t start_ms, end_ms;
	json_t *json;          /* the output object; borrowed: json_incref to keep it */
} aggregate_window;

/* Return < 0 to count an emit error (the window is gone either way). */
typedef int (*aggregate_emit_fn)(void *ud, const aggregate_window *w);

typedef struct aggregate_stats {
	uint64_t added;           /* (message, aggregate) pairs counted into a window */
	uint64_t late;            /* arrived after their window closed */
	uint64_t future;          /* ts more than one window ahead of now: ignored */
	uint64_t windows_emitted;
	uint64_t emit_errors;     /* callback returned < 0 */
	uint64_t keys_dropped;    /* a new key refused because maxKeys was reached */
	uint64_t keys;            /* keys currently held (gauge) */
} aggregate_stats;

/* Compile a config file / buffer. emit (required) and ud are kept for the set's lifetime.
 * On error NULL and "file:line:col: message" lines in err. The caller owns the set. */
aggregate_set *aggregate_load_file(const char *path, aggregate_emit_fn emit, void *ud, char *err,
				   size_t errlen);
aggregate_set *aggregate_load_buffer(const char *name, const char *text, size_t len,
				     aggregate_emit_fn emit, void *ud, char *err, size_t errlen);
/* Frees without emitting (call aggregate_flush first to keep open windows). NULL-safe. */
void aggregate_free(aggregate_set *set);
size_t aggregate_count(const aggregate_set *set); /* configured aggregates */

/* Count one (normalised) message into every aggregate whose topic filter matches. obj and
 * thing are borrowed. Event time is obj[timeField] (integer epoch ms) or received_ms.
 * ts_ms: the integer value of obj's "ts" when the caller has read it already (it then
 * serves the aggregates whose timeField is "ts"); NULL: looked up here.
 * Returns the number of aggregates it was counted into (0 when none matched or it was
 * late/future), or TG_ENOMEM / TG_EINVAL. May emit a window whose slot it needs. */
int aggregate_add(aggregate_set *set, const char *topic, const char *thing, const json_t *obj,
		  const int64_t *ts_ms, int64_t received_ms, int64_t now_ms);

/* Emit every window with end + grace <= now_ms, oldest first per key, and forget keys idle
 * for 10 windows. Call it about once a second. Returns windows emitted or TG_E*. */
int aggregate_tick(aggregate_set *set, int64_t now_ms);

/* Emit every open window now (clean shutdown). Returns windows emitted or TG_E*. */
int aggregate_flush(aggregate_set *set);

void aggregate_get_stats(const aggregate_set *set, aggregate_stats *out);

/* ---- persistence (edge_store.h) ---------------------------------------------------------- */
/* One key's state: its open windows and pending late count, as an opaque blob (NULL/0: the
 * key holds nothing worth keeping; a store deletes what it has for it). */
typedef struct aggregate_key_state {
	const char *aggregate, *thing;
	const char *group; /* NULL without groupBy */
	const void *blob;
	size_t len;
} aggregate_key_state;

/* fn for every key changed since the last aggregate_dirty_done; ks and its strings are
 * borrowed for the call. A return < 0 stops and is returned. */
typedef int (*aggregate_state_fn)(void *ud, const aggregate_key_state *ks);
/* Changes are marked only once a store asks for them (on: 1). */
void aggregate_track_changes(aggregate_set *set, int on);
int aggregate_foreach_dirty(aggregate_set *set, aggregate_state_fn fn, void *ud);
/* fn for every key holding open windows (or a late count): a snapshot of the whole state. */
int aggregate_foreach_key(aggregate_set *set, aggregate_state_fn fn, void *ud);
/* The group holding the changes ended: stored 1 forgets the marks; stored 0 (rolled back)
 * puts every changed key back as it was before the group (kept in memory when the group
 * first changed it), so windows emitted in that group open again and are emitted anew. */
void aggregate_dirty_done(aggregate_set *set, int stored);
/* Put a stored key back at start (not marked changed); a NULL blob empties the key (a later
 * record of the same key superseding an earlier one). TG_ENOTFOUND: no aggregate of that
 * name; TG_EINVAL: the blob does not fit its layout; TG_EFULL: maxKeys reached. */
int aggregate_restore(aggregate_set *set, const aggregate_key_state *ks);
/* The text that describes what aggregate i's stored blobs depend on (window, grace, time
 * field, groupBy, fields and functions); a stored state is only restored under the same
 * text. *name gets the aggregate's name. NULL when i is out of range. Borrowed. */
const char *aggregate_layout(const aggregate_set *set, size_t i, const char **name);
/* Bytes held for keys and their windows (not the allocator's overhead). */
size_t aggregate_memory(const aggregate_set *set);

#endif
