/*
 * events.h — the console's live event stream: a bounded ring of Server-Sent-Events frames
 * ("id: N\nevent: TYPE\ndata: JSON\n\n") that publishers append to and every SSE client
 * reads from at its own pace. A client that falls more than the ring's size behind skips
 * to the oldest frame still held (it gets a "lost" frame saying how many it missed), so a
 * slow client costs memory of nobody but the ring.
 *
 * Threads: publish from any thread (the ingest thread, the console's ticker, HTTP
 * handlers); each reader on its own connection thread. One mutex and one condition
 * variable; a frame is formatted before the lock is taken.
 *
 * Ownership: frames are copied in; ops_events_free frees them. ops_events_close wakes every
 * reader for good (the daemon is stopping).
 */
#ifndef TG_OPS_EVENTS_H
#define TG_OPS_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ops_events ops_events;

ops_events *ops_events_new(size_t cap);
void ops_events_free(ops_events *e); /* NULL-safe; readers must be gone */
/* Append one frame; json is the data line (one line, no newline). Frames longer than
 * OPS_EVENT_MAX are dropped (publishers keep theirs short). */
#define OPS_EVENT_MAX 3800
void ops_events_publish(ops_events *e, const char *type, const char *json);
/* The sequence number the next frame will get (a new reader starts there). */
uint64_t ops_events_head(ops_events *e);
/* Copy whole frames from *next on into buf (at most max bytes), waiting up to wait_ms for
 * the first; advances *next. Returns bytes (0: none arrived in time) or -1 once closed. */
ssize_t ops_events_read(ops_events *e, uint64_t *next, char *buf, size_t max, int wait_ms);
void ops_events_close(ops_events *e);

#endif
