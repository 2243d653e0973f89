/*
 * jsonout.h — compact JSON text of a jansson value, byte for byte what
 * json_dumpb(v, ..., JSON_COMPACT | JSON_REAL_PRECISION(15)) writes, at a fraction of the
 * cost: jansson formats every number through snprintf, which is most of the serialising work
 * of a telemetry record (five or six numbers). Integers are converted directly; a real that
 * is exactly a decimal with at most six places and fifteen significant digits (the common
 * telemetry reading) is written from its integer scaling, which is the text "%.15g" gives
 * for such a value; any other real goes through snprintf as in jansson.
 *
 * Ownership: the caller owns the buffer (buf.h); jsonout_write grows it.
 */
#ifndef TG_JSONOUT_H
#define TG_JSONOUT_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"

/* Append v's text to b (no terminating NUL is counted in len; one is kept after it).
 * Returns 0, TG_ENOMEM, or TG_EINVAL for what json_dumpb refuses too (NaN, infinity, a
 * non-object/array/scalar type, nesting deeper than 2048). */
int jsonout_write(tg_buf *b, const json_t *v);

/* The same text as a malloc'ed string the caller frees; NULL when jsonout_write fails.
 * Everything the gateway writes as JSON (records, republishes, alerts, webhooks, what
 * `tidegate rules test` prints) goes through here, so a number reads the same everywhere:
 * 60.7 is 60.7, not 60.700000000000003. */
char *jsonout_dumps(const json_t *v);

#endif
