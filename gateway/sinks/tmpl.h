/*
 * tmpl.h — the per-record topic / subject templates of the message sinks (mqtt, nats):
 * literal text with the placeholders <prefix>, <table>, <thing> and <gateway>, compiled
 * once when the sink opens (an unknown placeholder is refused there, with its column) and
 * expanded per record into a reused buffer without parsing the template again.
 *
 * <thing> is the record's partition key: the thing name, unless a rule's sink action set
 * its own partitionKey. <table> is the record's table (telemetry, alerts, aggregates, …),
 * <prefix> the sink's `prefix` option and <gateway> the gateway_id.
 *
 * Ownership: a sink_tmpl owns its copy of the text; sink_tmpl_free releases it.
 */
#ifndef TG_SINKS_TMPL_H
#define TG_SINKS_TMPL_H

#include <stddef.h>

#include "buf.h"
#include "sinks/sink.h"

typedef enum { TMPL_LIT = 0, TMPL_PREFIX, TMPL_TABLE, TMPL_THING, TMPL_GATEWAY } sink_tmpl_kind;

typedef struct sink_tmpl_part {
	sink_tmpl_kind kind;
	size_t off, len; /* the literal's bytes in text (TMPL_LIT only) */
} sink_tmpl_part;

typedef struct sink_tmpl {
	char *text;
	sink_tmpl_part *parts;
	size_t n;
} sink_tmpl;

/* Compile text into t (t is overwritten). 0, TG_ENOMEM, or TG_EINVAL with
 * "column N: unknown placeholder <x> (known: …)" or "…: '<' without '>'" in err. */
int sink_tmpl_compile(sink_tmpl *t, const char *text, char *err, size_t errlen);
/* Replace b's contents with the expansion for r. prefix and gateway are borrowed.
 * 0 or TG_ENOMEM. */
int sink_tmpl_expand(const sink_tmpl *t, tg_buf *b, const char *prefix, const char *gateway,
		     const sink_record *r);
void sink_tmpl_free(sink_tmpl *t); /* NULL-safe; frees what t points to, not t */

#endif
