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
 * `overwritten` counter says when that happens. A thing's ring starts with room for two
 * readings and doubles only when a reading still inside the window would be pushed out,
 * so a thing that sent a few messages costs about 200 bytes, not per_thing x 16.
 *
 * Persistence (edge_store.h) without SQL here: the readings added since the last group
 * end are "dirty"; dedupe_foreach_dirty hands them out per thing, dedupe_dirty_done
 * forgets the marks once they are stored (or takes the readings back out when their group
 * was rolled back, so a message the broker delivers again is not taken for a duplicate of
 * itself), dedupe_restore puts stored readings back at start. Time is always passed in
 * (now_ms); the module never reads a clock. Not thread-safe: one dedupe per ingest thread.
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

int64_t dedupe_window(const dedupe *d); /* the configured window_ms */
/* Current counters (copied out). */
void dedupe_get_stats(const dedupe *d, dedupe_stats *out);

/* ---- persistence (edge_store.h) ---------------------------------------------------------- */
typedef struct dedupe_entry {
	int64_t ts;   /* the reading's ts */
	int64_t seen; /* gateway time of its first sighting (the window runs from it) */
} dedupe_entry;

/* Called per thing: e (borrowed, valid during the call) holds n readings, oldest first.
 * Return < 0 to stop (returned by the foreach). */
typedef int (*dedupe_dirty_fn)(void *ud, const char *thing, const dedupe_entry *e, size_t n);
/* Readings are marked only once a store asks for them (on: 1). */
void dedupe_track_changes(dedupe *d, int on);
/* fn per thing with readings added since the last dedupe_dirty_done: those readings. */
int dedupe_foreach_dirty(dedupe *d, dedupe_dirty_fn fn, void *ud);
/* fn per thing tracked, least recently seen first (so putting them back in this order
 * rebuilds the same order): every reading it remembers. */
int dedupe_foreach(dedupe *d, dedupe_dirty_fn fn, void *ud);
/* The group that held the dirty readings ended: stored 1 forgets the marks; stored 0 (rolled
 * back) removes those readings again. A reading that one of them had pushed out of a full
 * ring (per_thing reached) stays forgotten. */
void dedupe_dirty_done(dedupe *d, int stored);
/* Put stored readings of thing back (oldest first; those outside the window at now_ms are
 * skipped), as if seen then, without counting or marking them. Returns how many were put
 * back, or TG_ENOMEM/TG_EINVAL. */
int dedupe_restore(dedupe *d, const char *thing, const dedupe_entry *e, size_t n, int64_t now_ms);
/* Bytes held for the things tracked now (nodes, names, rings; not the allocator's overhead). */
size_t dedupe_memory(const dedupe *d);

#endif
