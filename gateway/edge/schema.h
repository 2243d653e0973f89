/*
 * schema.h — validation and normalisation of incoming JSON payloads.
 *
 * A schema set is compiled once from a folder of declarative JSON schema files
 * (rules/schemas/NAME.json, format in docs/schemas.md); each schema names one or more MQTT topic
 * filters (+ and # wildcards). Everything the hot path needs is precomputed at load: field
 * tables, unit conversion factors, pcre2 patterns (JIT-compiled, with a match limit). The set
 * is immutable afterwards, so the daemon builds a new one on reload and swaps it between two
 * messages; a load error names file:line:col and leaves the old set running.
 *
 * Per message the ingest thread calls schema_parse_payload() on the raw bytes (size cap,
 * UTF-8, depth cap, JSON syntax, object check) and then schema_apply() on the object, which
 * renames fields, normalises the timestamp to epoch ms + RFC 3339, converts units, applies
 * defaults, checks types, ranges and patterns and keeps, drops or rejects unknown fields.
 * A rejection is described by a schema_reject: the field, a reason code whose name is a
 * metric label (schema_reason_name) and a short text.
 *
 * Threading: schema_apply() uses per-pattern pcre2 match data stored in the set, so one set
 * must be used by one thread at a time (the ingest thread). Loading is thread-safe.
 */
#ifndef TG_SCHEMA_H
#define TG_SCHEMA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Reason codes. The names (schema_reason_name) are stable metric labels / quarantine reasons. */
typedef enum {
	SCHEMA_R_NONE = 0,        /* "none": not rejected */
	SCHEMA_R_MISSING_FIELD,   /* "missing_field": a required field is absent */
	SCHEMA_R_WRONG_TYPE,      /* "wrong_type" */
	SCHEMA_R_OUT_OF_RANGE,    /* "out_of_range": min/max, string length */
	SCHEMA_R_PATTERN_MISMATCH,/* "pattern_mismatch": pattern, enum, or regex match limit hit */
	SCHEMA_R_BAD_TIMESTAMP,   /* "bad_timestamp": unparsable, out of range or too skewed */
	SCHEMA_R_BAD_UNIT,        /* "bad_unit": the unit field names an unknown/incompatible unit */
	SCHEMA_R_UNKNOWN_FIELD,   /* "unknown_field": unknownFields is "reject" */
	SCHEMA_R_NOT_OBJECT,      /* "not_object": payload is JSON but not an object */
	SCHEMA_R_INVALID_UTF8,    /* "invalid_utf8" */
	SCHEMA_R_TOO_LARGE,       /* "too_large": over the payload size cap */
	SCHEMA_R_TOO_DEEP,        /* "too_deep": nesting over the depth cap */
	SCHEMA_R_BAD_JSON,        /* "bad_json": syntax error */
	SCHEMA_R_DUPLICATE_KEY,   /* "duplicate_key": a key twice in one object, or a rename clash */
	SCHEMA_R_DUPLICATE,       /* "duplicate": same (thing, ts) seen again (dedupe.c) */
	SCHEMA_R__COUNT
} schema_reason;

/* Stable lower-case name of a reason ("missing_field", …); "unknown" if out of range. */
const char *schema_reason_name(schema_reason r);
/* jansson's error text in the words of someone who wrote the JSON (never a library flag
 * name such as JSON_ALLOW_NUL). Borrowed: static text or e->text. */
const char *schema_json_error_text(const json_error_t *e);

typedef struct schema_reject {
	schema_reason reason;
	char field[64];   /* offending field name ("" when the whole payload is at fault) */
	char text[160];   /* human-readable detail, e.g. "temperature 123.4 > max 90" */
} schema_reject;

/* Counters a caller owns and passes in (may be NULL everywhere). Plain integers: the daemon
 * reads them for /metrics from the ingest thread or under its own lock. */
typedef struct schema_stats {
	uint64_t accepted;   /* schema_apply returned 0 */
	uint64_t unmatched;  /* no schema for the topic: passed through untouched */
	uint64_t rejected[SCHEMA_R__COUNT]; /* per reason */
} schema_stats;

/* Count one rejection (for reasons found outside this module, e.g. SCHEMA_R_DUPLICATE). */
void schema_stats_reject(schema_stats *st, schema_reason r);

/* ---- pre-parse check of the raw payload -------------------------------------------------- */

#define SCHEMA_DEFAULT_MAX_BYTES (128u * 1024u) /* as AWS IoT Core */
#define SCHEMA_DEFAULT_MAX_DEPTH 32

typedef struct schema_limits {
	size_t max_bytes; /* 0: SCHEMA_DEFAULT_MAX_BYTES */
	int max_depth;    /* 0: SCHEMA_DEFAULT_MAX_DEPTH; nesting of objects + arrays, top = 1;
	                     values above jansson's limit (2048) are clamped to it */
} schema_limits;

/* Check and parse a raw payload: size cap, UTF-8 validity, depth cap, JSON syntax (duplicate
 * keys rejected), object at top level — in that order, first failure wins. The result is the
 * same value json_loadb would build (a faster reader is used, jansson decides the doubtful
 * cases); numbers with a fraction or exponent are reals, others integers (64-bit; larger
 * integers are bad_json, as in jansson).
 * lim: NULL for defaults. Returns a new reference the caller owns (json_decref), or NULL with
 * *why filled (why may be NULL) and the reason counted in st (may be NULL). */
json_t *schema_parse_payload(const void *buf, size_t len, const schema_limits *lim,
			     schema_reject *why, schema_stats *st);

/* ---- schema sets ------------------------------------------------------------------------- */

typedef struct schema_set schema_set;

/* Compile every *.json file in dir (not recursive, sorted by name; the first schema whose
 * filter matches a topic wins, so name files 10-specific.json, 90-generic.json). On error
 * returns NULL and writes "file:line:col: message" lines into errbuf. Caller owns the set. */
schema_set *schema_load_dir(const char *dir, char *errbuf, size_t errlen);
/* One file. */
schema_set *schema_load_file(const char *path, char *errbuf, size_t errlen);
/* One schema from memory; name stands for the file name in messages (tests, fuzzing). */
schema_set *schema_load_buffer(const char *name, const char *text, size_t len, char *errbuf,
			       size_t errlen);
void schema_set_free(schema_set *set); /* NULL-safe */
size_t schema_count(const schema_set *set);
/* Name (file name without .json) of the schema that would handle topic, or NULL. Borrowed. */
const char *schema_match(const schema_set *set, const char *topic);

/* Return values of schema_apply besides TG_E* codes. */
#define SCHEMA_APPLIED 0
#define SCHEMA_NO_MATCH 1

/* Validate and normalise obj in place for topic. obj is borrowed and modified (fields renamed,
 * converted, added, dropped); received_ms is the gateway's receive time (timestamp fallback
 * and skew check). Returns SCHEMA_APPLIED, SCHEMA_NO_MATCH (no schema for the topic; obj
 * untouched), TG_EINVAL when rejected (*why filled; obj may be partly modified, so quarantine
 * the raw payload), or TG_ENOMEM. Counts into st (may be NULL). No allocation happens except
 * inside jansson for values it adds or replaces. */
int schema_apply(const schema_set *set, const char *topic, json_t *obj, int64_t received_ms,
		 schema_reject *why, schema_stats *st);

/* ---- helper shared with the other loaders ------------------------------------------- */

/* Locate the last key of a NULL-terminated key path in JSON source text (each key searched
 * after the previous one) as 1-based line/column; 1:1 when not found. Loaders use it to
 * name file:line:col for semantic errors, since jansson keeps no node positions. */
void schema_locate(const char *text, size_t len, const char *const *path, int *line, int *col);

#endif
