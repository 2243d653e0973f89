/*
 * shadow/shadow.h — the Device Shadow service of the gateway: AWS IoT's reserved shadow
 * topics served on the local broker, so device code written against the AWS IoT Device
 * SDK's shadow client works unchanged against tidegate.
 *
 *   $aws/things/THING/shadow[/name/NAME]/update  ->  .../update/accepted | /rejected,
 *                                                    .../update/delta, .../update/documents
 *   $aws/things/THING/shadow[/name/NAME]/get     ->  .../get/accepted | /rejected
 *   $aws/things/THING/shadow[/name/NAME]/delete  ->  .../delete/accepted | /rejected
 *
 * The daemon hands every message on a $aws/things/ topic to shadow_handle() (on the ingest
 * thread, instead of ingest). A change is written to the shadow store inside the outbox's
 * group transaction together with its "shadows" record for the sinks (shadow_store.h), and
 * its responses are held here until that transaction has committed: the daemon commits as
 * soon as responses wait (shadow_waiting), and publishes them with shadow_release() after
 * every commit, before it flushes the PUBACKs of the group. So /accepted never announces a
 * change a crash could still lose, and the request's PUBACK leaves with it. A group that is
 * rolled back takes its waiting responses with it (the broker delivers the requests again).
 *
 * Per thing, at most max_inflight requests may wait for their responses; more get 429, as
 * IoT Core answers more than 10 in-flight requests on a connection (the broker does not tell
 * the gateway which connection a request came on; the thing is what the topic names).
 * Every response also runs through the rules (the rules hook), so rules can select from
 * shadow topics as on IoT Core.
 *
 * Ownership: shadow_new borrows the outbox (the daemon owns it and closes it after
 * shadow_free) and copies conf; payloads given to shadow_handle are borrowed for the call.
 */
#ifndef TG_SHADOW_H
#define TG_SHADOW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/msg.h"
#include "store/outbox.h"

typedef struct shadow_svc shadow_svc;

typedef struct shadow_conf {
	int64_t max_shadows;       /* live shadows stored (a new one beyond it gets 503) */
	int64_t max_state_bytes;   /* desired + reported, compact JSON (413) */
	int64_t max_payload_bytes; /* a request as received (413) */
	int64_t max_inflight;      /* requests of one thing waiting for their responses (429) */
	int64_t tombstone_ms;      /* how long a deleted shadow's version counter is kept */
	int response_qos;          /* QoS of accepted, rejected and delta */
	int documents_qos;         /* QoS of update/documents, the change feed */
	const char *const *sinks;  /* the sinks of the "shadows" records (borrowed, may be empty) */
	size_t nsinks;
	/* Publish one response (the daemon: broker_publish). 0 or < 0. */
	int (*publish)(void *ud, const char *topic, const void *payload, size_t len, int qos);
	/* Run the rules on one response message (optional). */
	void (*rules)(void *ud, const tg_msg *m);
	void *ud;
} shadow_conf;

/* Counters for /metrics (written by the ingest thread, read by any). */
enum { SHADOW_CODE_400, SHADOW_CODE_404, SHADOW_CODE_409, SHADOW_CODE_413, SHADOW_CODE_415, SHADOW_CODE_429,
       SHADOW_CODE_500, SHADOW_CODE_503, SHADOW_CODE__COUNT };
typedef struct shadow_stats {
	_Atomic uint64_t requests, accepted, rejected, deltas, records;
	_Atomic uint64_t published, publish_errors, dropped; /* responses; dropped: their group rolled back */
	_Atomic uint64_t rejected_by[SHADOW_CODE__COUNT];
	_Atomic int64_t live;    /* shadows stored */
	_Atomic int64_t waiting; /* responses held until a commit */
} shadow_stats;
extern const int SHADOW_CODES[SHADOW_CODE__COUNT]; /* 400, 404, … in the order above */

/* Attach the store to the outbox database (creating or migrating its tables) and start the
 * service. NULL + err on failure. */
shadow_svc *shadow_new(const shadow_conf *conf, outbox *ob, char *err, size_t errlen);
void shadow_free(shadow_svc *s); /* NULL-safe; drops responses still held */

/* 1 when topic is for the shadow service ($aws/things/...). */
int shadow_topic_is_ours(const char *topic);

/* Handle one message on a $aws/things/ topic. Returns 0 (answered, or not a request: other
 * $aws/things topics are ignored) or < 0 when the store or the outbox failed (the message was
 * not handled: the daemon must not acknowledge it). props: MQTT v5 properties (the identity
 * the broker plugin stamps is recorded as requested_by). */
int shadow_handle(shadow_svc *s, const char *topic, const void *payload, size_t len,
		  const struct mqtt5__property *props, int64_t now_ms);

/* Responses held until the open group commits (the daemon commits now when there are). */
int shadow_waiting(const shadow_svc *s);
/* Publish every response whose group has committed, in the order of the requests. Returns
 * how many were published. */
int shadow_release(shadow_svc *s);
/* Time-driven work: removes expired tombstones (at most once a minute). */
void shadow_tick(shadow_svc *s, int64_t now_ms);

const shadow_stats *shadow_stats_of(const shadow_svc *s);

#endif
