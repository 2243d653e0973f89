/*
 * ingest.h — what happens to one message from the broker, on the ingest thread:
 * identity -> size/UTF-8/JSON/depth checks -> record -> outbox (default sink) -> rules.
 *
 * Anything rejected goes to quarantine with a reason: the outbox's quarantine table, the
 * default sink's "quarantine" table (so the lake keeps it) and, if configured, a republish
 * on <quarantine_topic>/<thing>. Nothing is dropped silently.
 *
 * Ownership: ingest_new() borrows cfg, the outbox and the broker (the daemon owns them and
 * outlives the ingest object).
 */
#ifndef TG_INGEST_H
#define TG_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "config.h"
#include "outbox.h"

typedef enum {
	INGEST_R_TOO_LARGE = 0,
	INGEST_R_INVALID_UTF8,
	INGEST_R_BAD_JSON,
	INGEST_R_NOT_OBJECT,
	INGEST_R_TOO_DEEP,
	INGEST_R_BAD_TOPIC,
	INGEST_R_COUNT
} ingest_reason;

const char *ingest_reason_name(ingest_reason r);

typedef struct ingest_stats {
	_Atomic uint64_t received, accepted, quarantined, rejected_full, errors;
	_Atomic uint64_t by_reason[INGEST_R_COUNT];
} ingest_stats;

typedef struct ingest ingest;

ingest *ingest_new(const tg_config *cfg, outbox *ob, broker *br, char *err, size_t errlen);
void ingest_free(ingest *ig); /* NULL-safe */
ingest_stats *ingest_stats_of(ingest *ig);

/* Process one message. payload is borrowed. Returns 0 (accepted or quarantined) or < 0
 * when the outbox failed (the daemon logs it; the message was not accepted). */
int ingest_message(ingest *ig, const char *topic, const void *payload, size_t len, int qos,
		   const struct mqtt5__property *props, int64_t now_ms);

/* Checks on raw bytes, exposed for tests and fuzzing: 0 if fine, else the reason. */
int ingest_utf8_valid(const unsigned char *s, size_t n);
int ingest_json_depth(const char *s, size_t n); /* max nesting depth of [ and { outside strings */
/* "2026-11-25T17:20:01.123Z" into buf (>= 25 bytes) */
void ingest_rfc3339_ms(int64_t ms, char *buf, size_t len);

#endif
