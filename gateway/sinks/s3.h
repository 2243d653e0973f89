/*
 * s3.h — the S3 storage-tier sink (PutObject of gzip NDJSON) and its pure parts.
 *
 * The sink is reached through sink_s3_ops (sink.h); this header exposes the object key
 * layout, batch grouping, gzip body and error classification for the unit tests.
 * A batch becomes one object per (table, UTC hour of created_ms) group, keyed
 *   <prefix>/<table>/year=YYYY/month=MM/day=DD/hour=HH/<gateway-id>-<first-id>-<last-id>.json.gz
 * where first/last are the smallest and largest outbox ids in the group. The same record
 * set always yields the same key, so a retried upload overwrites instead of duplicating.
 */
#ifndef TG_SINKS_S3_H
#define TG_SINKS_S3_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/aws.h"
#include "store/sink.h"

#define S3_MAX_KEY 1024 /* bytes of UTF-8, S3's object key limit */

typedef struct s3_opts {
	char *bucket;
	char *prefix;            /* "" = none; leading/trailing '/' are ignored */
	char *region;
	char *endpoint;          /* "" = https://s3.<region>.amazonaws.com */
	int path_style;          /* 1: <endpoint>/<bucket>/<key>; 0: <bucket>.<endpoint host>/<key> */
	char *access_key_id;
	char *secret_access_key;
	char *session_token;
	int64_t timeout_ms;
	int64_t flush_bytes;     /* -> sink_limits.max_bytes */
	int64_t flush_age_ms;    /* -> sink_limits.max_age_ms */
	int64_t max_records;     /* -> sink_limits.max_records */
	int64_t gzip_level;
} s3_opts;

extern const sink_ops sink_s3_ops;

/* Append the object key for one group to b (not URI-encoded). 0 or TG_ENOMEM. */
int sink_s3_object_key(tg_buf *b, const char *prefix, const char *table, int64_t created_ms,
		       const char *gateway_id, int64_t first_id, int64_t last_id);

/* Append the request URL for key (URI-encoded) to b. 0 or TG_ENOMEM / TG_EINVAL when a
 * virtual-hosted URL cannot be formed from endpoint. */
int sink_s3_object_url(tg_buf *b, const char *endpoint, const char *bucket, int path_style,
		       const char *key);

/* Assign each record a group: records with the same table and the same UTC hour of
 * created_ms share one. group_of[i] gets the group index of recs[i]; groups are numbered
 * in order of first appearance and first_of[g] is the index of group g's first record
 * (both arrays have n entries, caller-owned). Returns the number of groups. */
size_t sink_s3_group(const sink_record *recs, size_t n, size_t *group_of, size_t *first_of);

/* Append to out the gzip (RFC 1952) of each recs[idx[i]].data followed by "\n". */
int sink_s3_gzip_ndjson(tg_buf *out, const sink_record *recs, const size_t *idx, size_t m,
			int level);

/* Status for a whole object from the HTTP answer: SINK_OK for 2xx, SINK_POISON for a
 * refusal of this object's content (4xx other than 403/404/408/429 and not one of the
 * transient or configuration error codes), SINK_RETRY for everything else. Writes the
 * S3 error <Code> (or "") to code. */
sink_status sink_s3_classify(long status, const char *body, size_t len, char *code, size_t codelen);

#endif
