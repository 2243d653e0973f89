/*
 * kinesis.h — the Kinesis Data Streams sink (PutRecords) and its pure parts.
 *
 * The sink itself is reached through sink_kinesis_ops (sink.h); this header exists so the
 * unit tests can pin down the request body, the response parsing and the per-record and
 * whole-call classifications without a network. Record format: each outbox record becomes
 * one Kinesis record whose Data is the NDJSON line *with* its trailing "\n" (so anything
 * that concatenates records — Firehose to S3, a shard dump — yields valid NDJSON) and
 * whose PartitionKey is the record's pkey.
 */
#ifndef TG_SINKS_KINESIS_H
#define TG_SINKS_KINESIS_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/aws.h"
#include "store/sink.h"

/* Kinesis service limits (PutRecords API reference). */
#define KINESIS_MAX_RECORDS 500
#define KINESIS_MAX_REQUEST (5u * 1024 * 1024) /* data + partition keys per call */
#define KINESIS_MAX_RECORD (1024u * 1024)      /* data + partition key per record */
#define KINESIS_MAX_PKEY_CHARS 256

typedef struct kinesis_opts {
	char *stream;
	char *region;
	char *endpoint;          /* "" = https://kinesis.<region>.amazonaws.com */
	char *access_key_id;     /* "" = from the environment */
	char *secret_access_key;
	char *session_token;
	int64_t timeout_ms;
	int64_t max_records;
	int64_t max_bytes;
} kinesis_opts;

extern const sink_ops sink_kinesis_ops;

/* SINK_OK when r can be sent, SINK_POISON (reason in why) when Kinesis would refuse it
 * whatever happens: empty partition key, key over 256 UTF-16 code units (Kinesis counts
 * like a Java String), data + "\n" + key over 1 MiB. */
sink_status sink_kinesis_check_record(const sink_record *r, char *why, size_t whylen);

/* Bytes r adds to a PutRecords request for the 5 MiB limit: data + "\n" + partition key. */
size_t sink_kinesis_record_cost(const sink_record *r);

/* Append the PutRecords JSON body for recs[idx[0..m-1]] to b. 0 or TG_ENOMEM. */
int sink_kinesis_build_body(tg_buf *b, const char *stream, const sink_record *recs,
			    const size_t *idx, size_t m);

/* Parse a 200 PutRecords response for m records: results[idx[i]] becomes SINK_OK or
 * SINK_RETRY (any per-record ErrorCode: throughput exceeded, internal failure, KMS
 * throttling are all transient). *nfailed counts the failures; err names the first one.
 * TG_EPARSE when the body is not a PutRecords answer for m records (then nothing is
 * written to results). */
int sink_kinesis_parse_response(const char *body, size_t len, const size_t *idx, size_t m,
				sink_status *results, size_t *nfailed, char *err, size_t errlen);

/* What to do with a non-200 answer. */
typedef enum {
	KINESIS_CALL_RETRY = 0,  /* transient or configuration: retry every record later */
	KINESIS_CALL_RECORD = 1, /* request validation: some record is bad; split to find it */
} kinesis_call_action;

/* Classify a whole-call HTTP failure from status and the JSON error body; writes the
 * error type (e.g. "ResourceNotFoundException", without a "namespace#" prefix) to type. */
kinesis_call_action sink_kinesis_classify(long status, const char *body, size_t len, char *type,
					  size_t typelen);

#endif
