/*
 * dedupe.h — drop a message whose (thing, ts) was already seen within a time window.
 *
 * Devices retry: a QoS 1 publish whose PUBACK got lost arrives twice, and a device that
 * buffers while offline may replay. The pair (thing, normalised ts) identifies a reading,
 * so a second sighting of the same pair within the window (e.g. 10 minutes, measured on the
 * gateway's clock from the first sighting) is a duplicate.
 *
 * Memory is bounded: at most max_things things are tracked (the least recently seen thing
 * is forgotten when a new one arrives) and at most per_thing timestamps per thing (a ring:
 * the oldest is overwritten). A thing publishing faster than per_thing readings per window
 * therefore gets duplicates detected only within its last per_thing readings; the
 * `overwritten` counter says when that happens. Time is always passed in (now_ms); the
 * module never reads a clock. Not thread-safe: one dedupe per ingest thread.
 */
#ifndef TG_DEDUPE_H
#define TG_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dedupe dedupe;

typedef struct dedupe_conf {
	int64_t window_ms;  /* > 0, e.g. 600000 */
	size_t per_thing;   /* timestamps remembered per thing, 1..65536, e.g. 256 */
	size_t max_things;  /* things tracked, >= 1, e.g. 100000 */
} dedupe_conf;

typedef struct dedupe_stats {
	uint64_t checked;      /* dedupe_check calls that returned 0 or 1 */
	uint64_t duplicates;   /* returned 1 */
	uint64_t overwritten;  /* a remembered ts still inside the window was pushed out of a full ring */
	uint64_t things_evicted; /* a thing forgotten to make room (max_things reached) */
	uint64_t things;       /* things currently tracked (a gauge) */
} dedupe_stats;

/* Returns a new dedupe the caller owns (dedupe_free), or NULL with a message in err. */
dedupe *dedupe_new(const dedupe_conf *conf, char *err, size_t errlen);
void dedupe_free(dedupe *d); /* NULL-safe */

/* Check (thing, ts_ms) at time now_ms and remember it. thing is borrowed (copied when new).
 * Returns 1 when it is a duplicate (seen within the window; not re-remembered, so the window
 * runs from the first sighting), 0 when new, TG_EINVAL for a NULL thing, TG_ENOMEM. */
int dedupe_check(dedupe *d, const char *thing, int64_t ts_ms, int64_t now_ms);

/* Current counters (copied out). */
void dedupe_get_stats(const dedupe *d, dedupe_stats *out);

#endif
