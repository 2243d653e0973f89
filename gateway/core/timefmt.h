/*
 * timefmt.h — RFC 3339 timestamps to and from epoch milliseconds, for every stage that
 * writes or reads one (schemas normalise device timestamps, aggregates stamp window bounds,
 * quarantine and shadow documents stamp when). Done by hand (civil-from-days arithmetic)
 * so a timestamp on the hot path needs neither the C library's time zone machinery nor
 * snprintf; always UTC, always milliseconds.
 */
#ifndef TG_TIMEFMT_H
#define TG_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* The last millisecond RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59.999Z. */
#define TIMEFMT_MAX_MS 253402300799999LL

/* Parse RFC 3339 ("2026-11-25T16:30:09.123Z", "+01:00" offsets, 't'/' ' separator,
 * any number of fraction digits) into epoch ms. 0 or TG_EINVAL. */
int timefmt_parse_rfc3339(const char *s, int64_t *out_ms);
/* Format epoch ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 25 bytes). Returns length or
 * TG_EINVAL (out of years 0000..9999). */
int timefmt_format_rfc3339(int64_t ms, char *buf, size_t len);

#endif
