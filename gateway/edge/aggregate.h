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
 * keeps a tiny ring of open windows. Time is always injected (now_ms). State is in memory
 * only (a restart loses open windows). Not thread-safe: one set per ingest thread. The emit
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

#endif
