/*
 * shadow/shadow_doc.h — the document logic of AWS IoT's Device Shadow service, as pure
 * functions on jansson values: the reserved request topics, the checks on a request document
 * (with AWS's error codes and messages), merging an update into a shadow (only the fields
 * given change, nested objects merge, arrays replace whole, null deletes, a null section
 * removes the section), the per-field metadata timestamps, the version counter and its
 * optimistic lock, the delta between desired and reported, and every response document
 * (accepted, delta, documents, get, delete, error).
 *
 * No I/O and no clock: callers pass the time. Shadow timestamps are epoch *seconds*, as AWS
 * writes them and the device SDKs read them (the rest of tidegate uses milliseconds).
 * An empty object carries no state and is never stored: merging {"a": {}} changes nothing,
 * and an object emptied by deletions disappears with its metadata.
 *
 * Ownership: a shadow_request owns its parsed root (shadow_request_free); the pointers into
 * it are borrowed. A shadow_doc owns its state and metadata (shadow_doc_free). Every
 * json_t * a function returns is a new reference the caller owns.
 */
#ifndef TG_SHADOW_DOC_H
#define TG_SHADOW_DOC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* AWS IoT's Device Shadow limits that are not adjustable there either. */
enum {
	SHADOW_MAX_DEPTH = 6,   /* levels inside the desired or reported section */
	SHADOW_MAX_TOKEN = 64,  /* bytes of a clientToken */
	SHADOW_MAX_THING = 128, /* bytes of a thing name */
	SHADOW_MAX_NAME = 64,   /* bytes of a named shadow's name */
};

typedef enum { SHADOW_UPDATE = 0, SHADOW_GET, SHADOW_DELETE } shadow_op;

/* An error as the service reports it on .../rejected: an HTTP-style code and a message that
 * starts with AWS's text for it (a detail naming the field may follow after ": "). */
typedef struct shadow_error {
	int code;
	char message[256];
} shadow_error;

/* Fill e; returns -1 so that `return shadow_fail(e, 400, "…")` reads naturally. */
int shadow_fail(shadow_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- topics -------------------------------------------------------------------------- */

/* A request topic, split: $aws/things/THING/shadow[/name/NAME]/{update,get,delete}. */
typedef struct shadow_topic {
	char thing[SHADOW_MAX_THING + 1];
	char name[SHADOW_MAX_NAME + 1]; /* "" for the classic (unnamed) shadow */
	shadow_op op;
	size_t len; /* of the request topic; responses are the topic plus a suffix */
} shadow_topic;

/* 1: topic is a shadow request (t filled), 0: it is not (another $aws topic, a response
 * topic, or not $aws at all), -1: a request whose thing or shadow name is not valid (err
 * filled; t->op and t->len are set so the rejection can still be addressed). */
int shadow_topic_parse(const char *topic, shadow_topic *t, shadow_error *err);

/* ---- requests ------------------------------------------------------------------------ */

typedef struct shadow_limits {
	size_t max_payload_bytes; /* the request as received (413 above it) */
	size_t max_state_bytes;   /* desired + reported as compact JSON, metadata not counted */
} shadow_limits;

typedef struct shadow_request {
	json_t *root;             /* owned; NULL for an empty payload (get, delete) */
	const json_t *desired;    /* NULL absent, JSON null: remove the section, else an object */
	const json_t *reported;
	int has_version;
	int64_t version;
	const char *client_token; /* NULL when absent; borrowed from root */
} shadow_request;

/* Parse and check a request document for op. Always initialises *req (free it with
 * shadow_request_free, also after an error: client_token stays valid for the rejection).
 * 0, or -1 with err filled: 413 over the payload cap, 415 not UTF-8, 400 for AWS's list
 * (invalid JSON, missing or non-object state, non-object desired/reported, an unknown node
 * in state, an invalid version or clientToken, null inside an array, more than 6 levels),
 * and 413 when the request's own state is over the state cap. get and delete accept an
 * empty payload. */
int shadow_request_parse(shadow_op op, const void *payload, size_t len, const shadow_limits *lim,
			 shadow_request *req, shadow_error *err);
void shadow_request_free(shadow_request *req); /* NULL-safe */

/* ---- documents ----------------------------------------------------------------------- */

typedef struct shadow_doc {
	json_t *state;    /* {"desired": {...}, "reported": {...}}, each present only when non-empty */
	json_t *metadata; /* the same shape; every leaf {"timestamp": s}, arrays per element */
	int64_t version;  /* 0 before the first update */
} shadow_doc;

/* An empty document (version 0). 0 or TG_ENOMEM. */
int shadow_doc_init(shadow_doc *d);
/* From the stored texts (either may be NULL: empty). 0, TG_EPARSE or TG_ENOMEM. */
int shadow_doc_load(shadow_doc *d, const char *state, size_t slen, const char *meta, size_t mlen, int64_t version);
int shadow_doc_copy(shadow_doc *dst, const shadow_doc *src); /* deep; 0 or TG_ENOMEM */
void shadow_doc_free(shadow_doc *d);                          /* NULL-safe, idempotent */

/* The optimistic lock: a request that names a version must name the current one (409). */
int shadow_check_version(const shadow_request *req, int64_t current, shadow_error *err);

/* Merge an update into d at time ts_s and count the version up. 0; 1 with err (413) when
 * the resulting state is over the cap (d is then merged but must be thrown away); TG_ENOMEM. */
int shadow_doc_apply(shadow_doc *d, const shadow_request *req, int64_t ts_s, const shadow_limits *lim,
		     shadow_error *err);

/* Compact JSON length of d's state (what the state cap counts). */
size_t shadow_state_bytes(const json_t *state);

/* The desired fields whose value differs from reported (recursively for objects; a field
 * reported does not have counts as different; numbers compare by value). NULL: none. */
json_t *shadow_delta(const json_t *state);

/* ---- responses ----------------------------------------------------------------------- */

/* update/accepted: the request's sections as given (nulls included), their metadata, the
 * new version, timestamp and clientToken. */
json_t *shadow_resp_accepted(const shadow_request *req, int64_t version, int64_t ts_s);
/* update/delta: delta (from shadow_delta on d's state) with the desired metadata of its fields. */
json_t *shadow_resp_delta(const shadow_doc *d, const json_t *delta, int64_t ts_s, const char *token);
/* update/documents: previous (NULL for a shadow that did not exist) and current. */
json_t *shadow_resp_documents(const shadow_doc *prev, const shadow_doc *cur, int64_t ts_s, const char *token);
/* get/accepted: state with delta, metadata, version. */
json_t *shadow_resp_get(const shadow_doc *d, int64_t ts_s, const char *token);
/* delete/accepted. */
json_t *shadow_resp_deleted(int64_t version, int64_t ts_s, const char *token);
/* .../rejected: {code, message, timestamp, clientToken}. */
json_t *shadow_resp_error(const shadow_error *e, int64_t ts_s, const char *token);
/* {"state": ..., "metadata": ..., "version": ...}: one side of /documents. */
json_t *shadow_doc_snapshot(const shadow_doc *d);

#endif
