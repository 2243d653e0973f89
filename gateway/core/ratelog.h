/*
 * ratelog.h — rate-limited reporting of repeated events, one line per key and interval.
 *
 * Some events repeat per message — a device sending bad JSON at 10 Hz, a rule whose every
 * republish the broker refuses — and a log line each would drown the journal, while folding
 * identical consecutive lines (log.c) does not help when several devices interleave. A
 * ratelog counts events per (key, kind): the first one is reported at once with count 1;
 * the following ones within the interval are only counted, and reported as one line with
 * their count when the interval has passed (at the next event, or from ratelog_tick). So
 * each (key, kind) gives at most one line per interval, and no event goes uncounted.
 *
 * The table is fixed-size (open addressing over a few slots per key): a key that finds no
 * room reports the oldest neighbour's pending count early and takes its slot, so memory is
 * bounded whatever the number of keys and counts are never dropped. Time comes in as now_ms.
 * Not thread-safe: one owner thread (the ingest thread).
 *
 * Ownership: ratelog_new() returns a table the caller frees with ratelog_free(); the
 * report callback's strings are borrowed for the call.
 */
#ifndef TG_RATELOG_H
#define TG_RATELOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct ratelog ratelog;

/* Report count events of (key, kind) since the last report; context is the last event's
 * (what ratelog_hit was given, possibly truncated). */
typedef void (*ratelog_report_fn)(void *ud, const char *key, int kind, uint64_t count, const char *context);

/* slots: table size (rounded up to a power of two); interval_ms > 0. NULL when out of memory. */
ratelog *ratelog_new(size_t slots, int64_t interval_ms, ratelog_report_fn fn, void *ud);
/* Reports what is pending (a clean stop), then frees. NULL-safe. */
void ratelog_free(ratelog *rl);
/* One event. Reports at once when (key, kind) has not been reported within the interval. */
void ratelog_hit(ratelog *rl, const char *key, int kind, const char *context, int64_t now_ms);
/* Report counts whose interval has passed and forget quiet keys. Call about once a second. */
void ratelog_tick(ratelog *rl, int64_t now_ms);

#endif
