/*
 * sink.h — the one interface every upstream sink implements (file, kinesis, s3, …).
 *
 * A sink only moves bytes: the forwarder (forwarder.c) owns batching, retry, backoff,
 * caps and dead letters. The forwarder reads a batch from the outbox sized by the sink's
 * limits, calls send(), and the sink writes one status per record into `results`:
 * SINK_OK (delivered, delete it), SINK_RETRY (transient, try this record again later),
 * SINK_POISON (permanent, dead-letter it). A partial Kinesis failure therefore retries
 * only the failed records.
 *
 * Batching by size or age (S3 objects, lake files) is expressed through `limits`: the
 * forwarder waits until the oldest pending record is max_age_ms old or the batch reaches
 * max_records/max_bytes, then hands the whole batch to send(), which must make it durable
 * upstream before returning SINK_OK. A sink never holds acknowledged records in memory.
 *
 * Sinks whose upstream acknowledges each message on its own (MQTT PUBACKs, JetStream
 * publish acks) pipeline inside one send(): they keep up to a window of publishes in
 * flight, publish the next record of the batch as an acknowledgement frees a slot, and
 * return once every record has its final status (acknowledged, refused, or left
 * SINK_RETRY when the connection dropped or the acknowledgement timed out). So the
 * window never spans two send() calls, and what the forwarder settles is exactly what
 * the upstream acknowledged. Such sinks keep their connection open between batches;
 * idle() lets them service it (keepalive pings) while the forwarder has nothing to send.
 *
 * Each sink type declares its options as a config_option table (config.h) with offsets
 * into its own options struct; the config loader parses `[sink NAME]` sections with it,
 * so unknown keys and bad values are refused with file:line:col.
 */
#ifndef TG_SINK_H
#define TG_SINK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

typedef enum { SINK_OK = 0, SINK_RETRY = 1, SINK_POISON = 2 } sink_status;

typedef struct sink_record {
	int64_t id;              /* outbox id; msg_id = "<gateway_id>-<id>" */
	const char *msg_id;      /* "<gateway_id>-<id>" */
	const char *table;       /* logical table / stream name: telemetry, alerts, aggregates, … */
	const char *pkey;        /* partition key (already expanded) */
	int64_t created_ms;      /* when the gateway accepted it; drives the Hive partition */
	const char *data;        /* NDJSON line without the newline (a JSON object, msg_id inside) */
	size_t len;
} sink_record;

typedef struct sink_limits {
	size_t max_records;      /* per send() call */
	size_t max_bytes;        /* sum of record lengths per send() call */
	int64_t max_age_ms;      /* 0: send as soon as anything is pending */
} sink_limits;

typedef struct sink sink; /* opaque, per type */

typedef struct sink_env {
	const char *gateway_id;
	/* Set (non-zero) when the forwarder gives up on the sends under way: a stop whose drain
	 * budget ran out. A sink that can interrupt a request (the HTTP sinks, from libcurl's
	 * progress callback) checks it and fails the send at once instead of waiting out its
	 * timeout (up to a minute for S3). Owned by the forwarder; lives as long as the sink. */
	const _Atomic int *abandon;
} sink_env;

typedef struct sink_ops {
	/* The type's name ("file", "kinesis", "s3", …) and option table. First member, so the
	 * config_sink_type a parsed [sink NAME] points at leads back to its ops
	 * (sink_conf_ops). */
	config_sink_type conf;
	/* The checks of opts that need no I/O beyond reading the environment (names, URLs,
	 * credentials): run by preflight (check-config and run alike) and by open() itself.
	 * 0, or < 0 with a reason in err and *key set to the option at fault (NULL: the
	 * section). May be NULL. */
	int (*check)(const void *opts, const char **key, char *err, size_t errlen);
	/* opts is borrowed for the sink's lifetime (the config owns it). */
	sink *(*open)(const void *opts, const sink_env *env, sink_limits *limits, char *err, size_t errlen);
	/* Returns 0 when every record has a status in results[], or a negative TG_E* when
	 * the whole call failed (then every record counts as SINK_RETRY). err gets a reason. */
	int (*send)(sink *s, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms,
		    char *err, size_t errlen);
	void (*close)(sink *s); /* NULL-safe */
	/* Optional (NULL: not called). The forwarder thread calls it when nothing is pending
	 * for the sink, at least once a second, so a sink holding a connection between
	 * batches keeps it alive and notices a drop; it must return within milliseconds and
	 * must not reconnect (the next send() does, after the forwarder's backoff). */
	void (*idle)(sink *s, int64_t now_ms);
	/* Optional (NULL: plain backoff). Is the endpoint there? 0 when it accepts a TCP
	 * connection and answers within timeout_ms, < 0 when not (refused, unreachable, or
	 * silent: a black hole). Called by the forwarder thread while the sink backs off
	 * (forwarder.h): down then answering ends the backoff. Must be cheap (no signed
	 * request, no TLS handshake) and bounded by timeout_ms beyond name resolution. */
	int (*probe)(sink *s, int timeout_ms);
} sink_ops;

/* The ops of a parsed [sink NAME] section (its type is the conf member of one). */
static inline const sink_ops *sink_conf_ops(const tg_sink_conf *sc)
{
	return (const sink_ops *)(const void *)sc->type;
}

#endif
