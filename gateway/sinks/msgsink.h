/*
 * msgsink.h — what the message sinks (mqtt, nats) share: the per-record topic / subject
 * templates, and the one-line reason a send() reports.
 *
 * Templates are literal text with the placeholders <prefix>, <table>, <thing> and
 * <gateway>, compiled once when the sink opens (an unknown placeholder is refused there,
 * with its column) and expanded per record into a reused buffer without parsing the
 * template again. <thing> is the record's partition key: the thing name, unless a rule's
 * sink action set its own partitionKey. <table> is the record's table (telemetry, alerts,
 * aggregates, …), <prefix> the sink's `prefix` option and <gateway> the gateway_id.
 *
 * Ownership: a msgsink_tmpl owns its copy of the text; msgsink_tmpl_free releases it.
 */
#ifndef TG_SINKS_MSGSINK_H
#define TG_SINKS_MSGSINK_H

#include <stddef.h>

#include "core/buf.h"
#include "store/sink.h"

typedef enum { TMPL_LIT = 0, TMPL_PREFIX, TMPL_TABLE, TMPL_THING, TMPL_GATEWAY } msgsink_tmpl_kind;

typedef struct msgsink_tmpl_part {
	msgsink_tmpl_kind kind;
	size_t off, len; /* the literal's bytes in text (TMPL_LIT only) */
} msgsink_tmpl_part;

typedef struct msgsink_tmpl {
	char *text;
	msgsink_tmpl_part *parts;
	size_t n;
} msgsink_tmpl;

/* Compile text into t (t is overwritten). 0, TG_ENOMEM, or TG_EINVAL with
 * "column N: unknown placeholder <x> (known: …)" or "…: '<' without '>'" in err. */
int msgsink_tmpl_compile(msgsink_tmpl *t, const char *text, char *err, size_t errlen);
/* Replace b's contents with the expansion for r. prefix and gateway are borrowed.
 * 0 or TG_ENOMEM. */
int msgsink_tmpl_expand(const msgsink_tmpl *t, tg_buf *b, const char *prefix, const char *gateway,
		     const sink_record *r);
void msgsink_tmpl_free(msgsink_tmpl *t); /* NULL-safe; frees what t points to, not t */

/* The expanded topics / subjects of one batch, kept for the whole send(): each name is
 * NUL-terminated inside `all`. The struct is the sink's; its memory is reused batch after
 * batch and released by msgsink_names_free. */
typedef struct msgsink_names {
	tg_buf all;
	size_t *off, *len;
	size_t cap;
} msgsink_names;

/* Expand t for each of recs[0..n-1] into nm (previous contents dropped). 0 or TG_ENOMEM. */
int msgsink_names_expand(msgsink_names *nm, const msgsink_tmpl *t, const char *prefix, const char *gateway,
			 const sink_record *recs, size_t n);
static inline const char *msgsink_name(const msgsink_names *nm, size_t i) { return nm->all.p + nm->off[i]; }
void msgsink_names_free(msgsink_names *nm); /* NULL-safe; frees what nm points to, not nm */

/* A send's reason for the forwarder, which stores it with every dead-lettered record of
 * the batch and logs it when records are retried: the non-empty parts joined by "; " —
 * why records were refused before sending, why the remote refused records, why the rest
 * waits. Leaves err alone when all are empty. Returns code. */
int msgsink_reason(char *err, size_t errlen, int code, const char *screened, const char *refused,
		   const char *retried);

#endif
