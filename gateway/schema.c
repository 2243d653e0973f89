/*
 * schema.c — declarative payload schemas: load-time compilation and the per-message apply.
 *
 * Design: a schema file is parsed with jansson once and turned into flat arrays (renames,
 * fields, unit fields, known names) with every decision the hot path would otherwise make
 * precomputed — unit conversion becomes one scale/offset pair, patterns become JIT-compiled
 * pcre2 codes with their own match data and a match-limited context. schema_apply() then
 * walks those arrays doing jansson hash lookups and in-place edits only; it allocates nothing
 * itself (jansson allocates for values it adds). Because jansson keeps no source positions,
 * semantic load errors are located by searching the file text for the key path ("fields",
 * "temperature", "min"), which points at the right key in any sanely written file.
 * Time formatting and parsing are done by hand (civil-from-days arithmetic) so normalising
 * a timestamp needs neither the C library's time zone machinery nor snprintf.
 */
#include "schema.h"
#include "topic.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "err.h"

#define SCHEMA_FILE_MAX (1024 * 1024)      /* a schema file larger than this is a mistake */
#define SCHEMA_MATCH_LIMIT_DEFAULT 10000u
#define TS_MAX_MS 253402300799999LL        /* 9999-12-31T23:59:59.999Z */
#define TS_AUTO_SECONDS_BELOW 100000000000LL /* 1e11: as seconds that is year 5138, as ms 1973 */

/* ---- reasons and stats ------------------------------------------------------------------- */

static const char *const reason_names[SCHEMA_R__COUNT] = {
	[SCHEMA_R_NONE] = "none",
	[SCHEMA_R_MISSING_FIELD] = "missing_field",
	[SCHEMA_R_WRONG_TYPE] = "wrong_type",
	[SCHEMA_R_OUT_OF_RANGE] = "out_of_range",
	[SCHEMA_R_PATTERN_MISMATCH] = "pattern_mismatch",
	[SCHEMA_R_BAD_TIMESTAMP] = "bad_timestamp",
	[SCHEMA_R_BAD_UNIT] = "bad_unit",
	[SCHEMA_R_UNKNOWN_FIELD] = "unknown_field",
	[SCHEMA_R_NOT_OBJECT] = "not_object",
	[SCHEMA_R_INVALID_UTF8] = "invalid_utf8",
	[SCHEMA_R_TOO_LARGE] = "too_large",
	[SCHEMA_R_TOO_DEEP] = "too_deep",
	[SCHEMA_R_BAD_JSON] = "bad_json",
	[SCHEMA_R_DUPLICATE_KEY] = "duplicate_key",
	[SCHEMA_R_DUPLICATE] = "duplicate",
};

const char *schema_json_error_text(const json_error_t *e)
{
	switch (json_error_code(e)) {
	case json_error_null_character: return "a string holds \\u0000 (a NUL character), which is not accepted";
	case json_error_null_byte_in_key: return "an object key holds \\u0000 (a NUL character), which is not accepted";
	default: return e->text;
	}
}

const char *schema_reason_name(schema_reason r)
{
	if ((int)r < 0 || r >= SCHEMA_R__COUNT)
		return "unknown";
	return reason_names[r];
}

void schema_stats_reject(schema_stats *st, schema_reason r)
{
	if (st && (int)r >= 0 && r < SCHEMA_R__COUNT)
		st->rejected[r]++;
}

/* Fill *why (cold path: only runs on rejection) and count it; returns TG_EINVAL. */
static int reject(schema_reject *why, schema_stats *st, schema_reason r, const char *field,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int reject(schema_reject *why, schema_stats *st, schema_reason r, const char *field,
		  const char *fmt, ...)
{
	schema_stats_reject(st, r);
	if (why) {
		why->reason = r;
		snprintf(why->field, sizeof why->field, "%s", field ? field : "");
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why->text, sizeof why->text, fmt, ap);
		va_end(ap);
	}
	return TG_EINVAL;
}

/* ---- raw payload checks ------------------------------------------------------------------ */

/* One pass over the bytes: UTF-8 well-formedness (no overlongs, surrogates or > U+10FFFF)
 * and bracket depth outside strings. Jansson has a compiled-in depth limit only, and reports
 * bad UTF-8 as a generic parse error, so both are checked here to give precise reasons. */
static schema_reason scan_payload(const unsigned char *p, size_t n, int maxdepth)
{
	int depth = 0, instr = 0;
	size_t i = 0;
	while (i < n) {
		unsigned c = p[i];
		if (c < 0x80) {
			if (instr) {
				if (c == '\\') {
					i++;
					if (i < n && p[i] < 0x80)
						i++;
					continue;
				}
				if (c == '"')
					instr = 0;
			} else if (c == '"') {
				instr = 1;
			} else if (c == '{' || c == '[') {
				if (++depth > maxdepth)
					return SCHEMA_R_TOO_DEEP;
			} else if (c == '}' || c == ']') {
				depth--;
			}
			i++;
			continue;
		}
		size_t need;
		if (c >= 0xC2 && c <= 0xDF)
			need = 1;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3;
		else
			return SCHEMA_R_INVALID_UTF8;
		if (n - i - 1 < need)
			return SCHEMA_R_INVALID_UTF8;
		unsigned c1 = p[i + 1];
		if ((c1 & 0xC0) != 0x80 || (c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
		    (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
			return SCHEMA_R_INVALID_UTF8;
		for (size_t k = 2; k <= need; k++)
			if ((p[i + k] & 0xC0) != 0x80)
				return SCHEMA_R_INVALID_UTF8;
		i += need + 1;
	}
	return SCHEMA_R_NONE;
}

/* ---- fast JSON parser ---------------------------------------------------------------------
 *
 * jansson's reader lexes through a character stream and costs ~1.6 us for the standard
 * 110-byte payload, while building the same object costs ~0.2 us; parsing dominated the whole
 * validation path. This recursive-descent parser builds jansson values directly from the
 * buffer (plain strings and keys without copying into a scratch buffer, UTF-8 and depth
 * checked on the way). It is an accelerator only: it gives up (returns NULL) on anything
 * unusual — any syntax error, a duplicate key, an escaped string longer than its scratch
 * buffer, an integer that does not fit, a number strtod does not consume exactly — and the
 * caller then runs the precise checks and jansson itself, which decides and names the reason.
 * So it may never accept what jansson rejects, nor build a different value; the fuzz target
 * (tests/fuzz/fuzz_schema.c) checks exactly that against jansson on every input.
 */
struct fp {
	const unsigned char *p, *end;
	int depth, maxdepth;
	char scratch[4096]; /* decoded escaped strings */
};

static json_t *fp_value(struct fp *f);

static void fp_ws(struct fp *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\n' || *f->p == '\r' || *f->p == '\t'))
		f->p++;
}

static int fp_hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
	unsigned v = 0;
	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

/* Length of the valid UTF-8 sequence starting at p (lead byte >= 0x80), or 0. */
static size_t fp_utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
	if (!need || (size_t)(end - p) <= need)
		return 0;
	unsigned c1 = p[1];
	if ((c1 & 0xC0) != 0x80 || (c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
	    (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
		return 0;
	for (size_t k = 2; k <= need; k++)
		if ((p[k] & 0xC0) != 0x80)
			return 0;
	return need + 1;
}

/* A string whose opening quote was consumed. *out points into the input (no escapes) or
 * into f->scratch. */
static int fp_string(struct fp *f, const char **out, size_t *outlen)
{
	const unsigned char *s = f->p, *p = s, *end = f->end;
	while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
		p++;
	if (p < end && *p == '"') {
		*out = (const char *)s;
		*outlen = (size_t)(p - s);
		f->p = p + 1;
		return 0;
	}
	size_t n = 0, cap = sizeof f->scratch;
	p = s;
	while (p < end) {
		unsigned c = *p;
		if (c == '"') {
			f->p = p + 1;
			*out = f->scratch;
			*outlen = n;
			return 0;
		}
		if (n + 4 > cap || c < 0x20)
			return -1;
		if (c >= 0x80) {
			size_t l = fp_utf8_seq(p, end);
			if (!l)
				return -1;
			memcpy(f->scratch + n, p, l);
			n += l;
			p += l;
			continue;
		}
		if (c != '\\') {
			f->scratch[n++] = (char)c;
			p++;
			continue;
		}
		if (++p >= end)
			return -1;
		unsigned e = *p++, cp;
		switch (e) {
		case '"': cp = '"'; break;
		case '\\': cp = '\\'; break;
		case '/': cp = '/'; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (fp_hex4(p, end, &cp))
				return -1;
			p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned lo;
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || fp_hex4(p + 2, end, &lo) ||
				    lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				p += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
				return -1; /* lone low surrogate; NUL is refused as jansson does */
			}
			break;
		default:
			return -1;
		}
		char *o = f->scratch + n;
		if (cp < 0x80) {
			o[0] = (char)cp;
			n += 1;
		} else if (cp < 0x800) {
			o[0] = (char)(0xC0 | cp >> 6);
			o[1] = (char)(0x80 | (cp & 0x3F));
			n += 2;
		} else if (cp < 0x10000) {
			o[0] = (char)(0xE0 | cp >> 12);
			o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
			o[2] = (char)(0x80 | (cp & 0x3F));
			n += 3;
		} else {
			o[0] = (char)(0xF0 | cp >> 18);
			o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
			o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
			o[3] = (char)(0x80 | (cp & 0x3F));
			n += 4;
		}
	}
	return -1;
}

static int fp_digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

static json_t *fp_number(struct fp *f)
{
	const unsigned char *s = f->p, *p = s, *end = f->end;
	int real = 0;
	if (p < end && *p == '-')
		p++;
	if (!fp_digit(p, end))
		return NULL;
	if (*p == '0')
		p++;
	else
		while (fp_digit(p, end))
			p++;
	if (p < end && *p == '.') {
		real = 1;
		if (!fp_digit(++p, end))
			return NULL;
		while (fp_digit(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = 1;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!fp_digit(p, end))
			return NULL;
		while (fp_digit(p, end))
			p++;
	}
	f->p = p;
	if (!real) {
		int neg = *s == '-';
		uint64_t v = 0;
		for (const unsigned char *d = s + neg; d < p; d++) {
			unsigned dig = *d - '0';
			if (v > (UINT64_MAX - dig) / 10)
				return NULL;
			v = v * 10 + dig;
		}
		if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
			return NULL; /* jansson refuses integers that overflow, so do we */
		json_int_t x = neg ? (json_int_t)(0 - v) : (json_int_t)v;
		return json_integer(x);
	}
	char nb[64];
	size_t l = (size_t)(p - s);
	if (l >= sizeof nb)
		return NULL;
	memcpy(nb, s, l);
	nb[l] = '\0';
	char *e;
	errno = 0;
	double d = strtod(nb, &e);
	/* e short of the end: a locale with another decimal point; leave it to jansson */
	if (e != nb + l || ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE))
		return NULL;
	return json_real(d);
}

static json_t *fp_object(struct fp *f)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	fp_ws(f);
	if (f->p < f->end && *f->p == '}') {
		f->p++;
		return o;
	}
	for (;;) {
		const char *k;
		size_t kl;
		char *kcopy = NULL;
		fp_ws(f);
		if (f->p >= f->end || *f->p != '"')
			goto fail;
		f->p++;
		if (fp_string(f, &k, &kl))
			goto fail;
		if (k == f->scratch) { /* the value may reuse the scratch buffer (rare: escaped key) */
			if (!(kcopy = strndup(k, kl)))
				goto fail;
			k = kcopy;
		}
		fp_ws(f);
		json_t *v = NULL;
		if (json_object_getn(o, k, kl) || f->p >= f->end || *f->p != ':' ||
		    (f->p++, !(v = fp_value(f))) || json_object_setn_new_nocheck(o, k, kl, v)) {
			free(kcopy);
			goto fail;
		}
		free(kcopy);
		fp_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			continue;
		}
		if (f->p < f->end && *f->p == '}') {
			f->p++;
			return o;
		}
		goto fail;
	}
fail:
	json_decref(o);
	return NULL;
}

static json_t *fp_array(struct fp *f)
{
	json_t *a = json_array();
	if (!a)
		return NULL;
	fp_ws(f);
	if (f->p < f->end && *f->p == ']') {
		f->p++;
		return a;
	}
	for (;;) {
		json_t *v = fp_value(f);
		if (!v || json_array_append_new(a, v))
			goto fail;
		fp_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			continue;
		}
		if (f->p < f->end && *f->p == ']') {
			f->p++;
			return a;
		}
		goto fail;
	}
fail:
	json_decref(a);
	return NULL;
}

static json_t *fp_value(struct fp *f)
{
	fp_ws(f);
	if (f->p >= f->end)
		return NULL;
	size_t left = (size_t)(f->end - f->p);
	switch (*f->p) {
	case '{':
	case '[': {
		if (++f->depth > f->maxdepth)
			return NULL;
		int obj = *f->p++ == '{';
		json_t *v = obj ? fp_object(f) : fp_array(f);
		f->depth--;
		return v;
	}
	case '"': {
		const char *s;
		size_t l;
		f->p++;
		return fp_string(f, &s, &l) ? NULL : json_stringn_nocheck(s, l);
	}
	case 't':
		if (left >= 4 && memcmp(f->p, "true", 4) == 0) {
			f->p += 4;
			return json_true();
		}
		return NULL;
	case 'f':
		if (left >= 5 && memcmp(f->p, "false", 5) == 0) {
			f->p += 5;
			return json_false();
		}
		return NULL;
	case 'n':
		if (left >= 4 && memcmp(f->p, "null", 4) == 0) {
			f->p += 4;
			return json_null();
		}
		return NULL;
	default:
		return fp_number(f);
	}
}

static json_t *fast_parse(const void *buf, size_t len, int maxdepth)
{
	struct fp f;
	f.p = buf;
	f.end = f.p + len;
	f.depth = 0;
	f.maxdepth = maxdepth;
	json_t *v = fp_value(&f);
	if (!v)
		return NULL;
	fp_ws(&f);
	if (f.p != f.end) {
		json_decref(v);
		return NULL;
	}
	return v;
}

json_t *schema_parse_payload(const void *buf, size_t len, const schema_limits *lim,
			     schema_reject *why, schema_stats *st)
{
	size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : SCHEMA_DEFAULT_MAX_BYTES;
	int max_depth = lim && lim->max_depth > 0 ? lim->max_depth : SCHEMA_DEFAULT_MAX_DEPTH;

	if (!buf && len)
		len = 0;
	if (max_depth > JSON_PARSER_MAX_DEPTH)
		max_depth = JSON_PARSER_MAX_DEPTH; /* jansson's own limit; also bounds recursion */
	if (len > max_bytes) {
		reject(why, st, SCHEMA_R_TOO_LARGE, NULL, "payload %zu bytes > cap %zu", len, max_bytes);
		return NULL;
	}
	json_t *fj = len ? fast_parse(buf, len, max_depth) : NULL;
	if (fj) {
		if (json_is_object(fj))
			return fj;
		json_decref(fj);
		reject(why, st, SCHEMA_R_NOT_OBJECT, NULL, "top level is not an object");
		return NULL;
	}
	/* Slow path: the fast parser gave up, so find the precise reason. Pure ASCII with fewer
	 * brackets than the depth cap cannot fail these two checks, and this loop vectorises. */
	const unsigned char *u = buf;
	unsigned hi = 0;
	size_t brackets = 0;
	for (size_t i = 0; i < len; i++) {
		hi |= u[i];
		brackets += (u[i] == '{') | (u[i] == '[');
	}
	schema_reason r = SCHEMA_R_NONE;
	if ((hi & 0x80) || brackets > (size_t)max_depth)
		r = scan_payload(buf, len, max_depth);
	if (r == SCHEMA_R_INVALID_UTF8) {
		reject(why, st, r, NULL, "payload is not valid UTF-8");
		return NULL;
	}
	if (r == SCHEMA_R_TOO_DEEP) {
		reject(why, st, r, NULL, "nesting deeper than %d", max_depth);
		return NULL;
	}
	json_error_t jerr;
	json_t *j = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!j) {
		if (json_error_code(&jerr) == json_error_duplicate_key)
			reject(why, st, SCHEMA_R_DUPLICATE_KEY, NULL, "%s", jerr.text);
		else
			reject(why, st, SCHEMA_R_BAD_JSON, NULL, "%d:%d: %s", jerr.line, jerr.column,
			       schema_json_error_text(&jerr));
		return NULL;
	}
	if (!json_is_object(j)) {
		reject(why, st, SCHEMA_R_NOT_OBJECT, NULL, "top level is not an object");
		json_decref(j);
		return NULL;
	}
	return j;
}

/* ---- time -------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (the well-known era/day-of-era
 * arithmetic; exact for every year). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int schema_parse_rfc3339(const char *s, int64_t *out_ms)
{
	static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int Y, M, D, h, mi, sec;
	if (!s || strlen(s) < 20)
		return TG_EINVAL;
	if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
	    digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
	    digits(s + 17, 2, &sec))
		return TG_EINVAL;
	if (M < 1 || M > 12 || D < 1 || h > 23 || mi > 59 || sec > 60)
		return TG_EINVAL;
	if (D > mdays[M - 1] + (M == 2 && is_leap(Y)))
		return TG_EINVAL;
	if (sec == 60) /* leap second: fold into the last ms of the minute's 59th second */
		sec = 59;
	const char *p = s + 19;
	int frac_ms = 0;
	if (*p == '.') {
		p++;
		int nd = 0;
		while (*p >= '0' && *p <= '9') {
			if (nd < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
			nd++;
			p++;
		}
		if (nd == 0)
			return TG_EINVAL;
		for (int k = nd; k < 3; k++)
			frac_ms *= 10;
	}
	int off_min = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
			return TG_EINVAL;
		off_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return TG_EINVAL; /* RFC 3339 requires an offset; a bare local time is ambiguous */
	}
	if (*p != '\0')
		return TG_EINVAL;
	int64_t days = days_from_civil(Y, (unsigned)M, (unsigned)D);
	int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)off_min * 60;
	*out_ms = secs * 1000 + frac_ms;
	return 0;
}

static void put2(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
}

int schema_format_rfc3339(int64_t ms, char *buf, size_t len)
{
	if (!buf || len < 25 || ms < -62167219200000LL || ms > TS_MAX_MS)
		return TG_EINVAL;
	int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
	int64_t rem = ms - days * 86400000;
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	unsigned sod = (unsigned)(rem / 1000), msec = (unsigned)(rem % 1000);
	put2(buf, (unsigned)(y / 100));
	put2(buf + 2, (unsigned)(y % 100));
	buf[4] = '-';
	put2(buf + 5, m);
	buf[7] = '-';
	put2(buf + 8, d);
	buf[10] = 'T';
	put2(buf + 11, sod / 3600);
	buf[13] = ':';
	put2(buf + 14, sod / 60 % 60);
	buf[16] = ':';
	put2(buf + 17, sod % 60);
	buf[19] = '.';
	buf[20] = (char)('0' + msec / 100);
	put2(buf + 21, msec % 100);
	buf[23] = 'Z';
	buf[24] = '\0';
	return 24;
}

/* ---- units ------------------------------------------------------------------------------- */

/* canonical = value * scale + offset; canonical units: degC, hPa, m, m/s. */
enum { Q_TEMP, Q_PRESSURE, Q_LENGTH, Q_SPEED };
static const struct unit_def {
	const char *name;
	int quantity;
	double scale, offset;
} units[] = {
	{"C", Q_TEMP, 1.0, 0.0},         {"degC", Q_TEMP, 1.0, 0.0},
	{"celsius", Q_TEMP, 1.0, 0.0},   {"\xc2\xb0" "C", Q_TEMP, 1.0, 0.0},
	{"F", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0}, {"degF", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"fahrenheit", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"\xc2\xb0" "F", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"K", Q_TEMP, 1.0, -273.15},     {"kelvin", Q_TEMP, 1.0, -273.15},
	{"hPa", Q_PRESSURE, 1.0, 0.0},   {"mbar", Q_PRESSURE, 1.0, 0.0},
	{"Pa", Q_PRESSURE, 0.01, 0.0},   {"kPa", Q_PRESSURE, 10.0, 0.0},
	{"bar", Q_PRESSURE, 1000.0, 0.0}, {"psi", Q_PRESSURE, 68.947572932, 0.0},
	{"inHg", Q_PRESSURE, 33.8638866667, 0.0},
	{"m", Q_LENGTH, 1.0, 0.0},       {"cm", Q_LENGTH, 0.01, 0.0},
	{"mm", Q_LENGTH, 0.001, 0.0},    {"km", Q_LENGTH, 1000.0, 0.0},
	{"ft", Q_LENGTH, 0.3048, 0.0},   {"in", Q_LENGTH, 0.0254, 0.0},
	{"m/s", Q_SPEED, 1.0, 0.0},      {"km/h", Q_SPEED, 1.0 / 3.6, 0.0},
	{"mph", Q_SPEED, 0.44704, 0.0},  {"kn", Q_SPEED, 0.514444444, 0.0},
};
#define NUNITS ((int)(sizeof units / sizeof units[0]))

static int unit_lookup(const char *s)
{
	/* Exact match first so "Pa" and "pa" style ambiguities resolve to the spelling given. */
	for (int i = 0; i < NUNITS; i++)
		if (strcmp(units[i].name, s) == 0)
			return i;
	for (int i = 0; i < NUNITS; i++)
		if (strcasecmp(units[i].name, s) == 0)
			return i;
	return -1;
}

/* ---- compiled form ----------------------------------------------------------------------- */

enum {
	T_STRING = 1 << 0,
	T_NUMBER = 1 << 1, /* integer or real */
	T_INTEGER = 1 << 2,
	T_BOOLEAN = 1 << 3,
	T_OBJECT = 1 << 4,
	T_ARRAY = 1 << 5,
	T_NULL = 1 << 6,
	T_ANY = 0x7f,
};
enum { UNKNOWN_KEEP, UNKNOWN_DROP, UNKNOWN_REJECT };
enum { TSF_AUTO, TSF_MS, TSF_S, TSF_RFC3339 };

struct sfield {
	char *name;
	unsigned types;
	int required;
	int has_min, has_max;
	double min, max;
	long long min_len, max_len; /* code points; -1 = unbounded */
	pcre2_code *re;
	pcre2_match_data *md;
	json_t *enum_vals; /* array of allowed values */
	json_t *def;       /* default value */
	int unit_from;     /* fixed source unit, or -1 */
	int unit_to;       /* target unit, or -1: no conversion */
	int unit_default;  /* unit assumed when the unit field is absent */
	int unit_field;    /* index into schema.ufs, or -1 */
	int round;         /* decimals to round a converted value to, -1 = keep */
	int topic_level;   /* 1-based topic level the string must equal (identity), 0 = none */
};

struct ufield {
	char *name;
	int to; /* written back after conversion */
};

struct rename {
	char *from, *to;
};

struct schema {
	char *name;
	tg_topic_filter **filters;
	size_t nfilters;
	int unknown;
	struct rename *renames;
	size_t nrenames;
	int has_ts, ts_fmt, ts_required, ts_fallback;
	char *ts_in, *ts_out, *ts_iso;
	int64_t ts_skew_ms;
	struct sfield *fields;
	size_t nfields;
	struct ufield *ufs;
	size_t nufs;
	const char **known; /* borrowed pointers into the arrays above */
	size_t nknown;
	pcre2_match_context *mctx;
};

struct schema_set {
	struct schema *v;
	size_t n;
};

static void schema_free_one(struct schema *s)
{
	if (!s)
		return;
	free(s->name);
	for (size_t i = 0; i < s->nfilters; i++)
		tg_topic_filter_free(s->filters[i]);
	free(s->filters);
	for (size_t i = 0; i < s->nrenames; i++) {
		free(s->renames[i].from);
		free(s->renames[i].to);
	}
	free(s->renames);
	free(s->ts_in);
	free(s->ts_out);
	free(s->ts_iso);
	for (size_t i = 0; i < s->nfields; i++) {
		struct sfield *f = &s->fields[i];
		free(f->name);
		pcre2_match_data_free(f->md);
		pcre2_code_free(f->re);
		json_decref(f->enum_vals);
		json_decref(f->def);
	}
	free(s->fields);
	for (size_t i = 0; i < s->nufs; i++)
		free(s->ufs[i].name);
	free(s->ufs);
	free(s->known);
	pcre2_match_context_free(s->mctx);
	memset(s, 0, sizeof *s);
}

void schema_set_free(schema_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		schema_free_one(&set->v[i]);
	free(set->v);
	free(set);
}

size_t schema_count(const schema_set *set) { return set ? set->n : 0; }

/* ---- loading ----------------------------------------------------------------------------- */

struct lctx {
	const char *file;
	const char *text;
	size_t textlen;
	char *err;
	size_t errlen, used;
	int nerr;
};

/* Position of the last key of path in the text: search each "key" (followed by ':') after
 * the previous one. Good enough to point at the offending key of a hand-written file. */
void schema_locate(const char *text, size_t len, const char *const *path, int *line, int *col)
{
	const struct {
		const char *text;
		size_t textlen;
	} cc = {text, len}, *c = &cc;
	size_t pos = 0, found = 0;
	int have = 0;
	for (int k = 0; path[k]; k++) {
		size_t kl = strlen(path[k]);
		size_t p = pos;
		int ok = 0;
		while (p + kl + 2 <= c->textlen) {
			const char *q = memchr(c->text + p, '"', c->textlen - p);
			if (!q)
				break;
			p = (size_t)(q - c->text);
			if (p + kl + 2 <= c->textlen && memcmp(q + 1, path[k], kl) == 0 && q[kl + 1] == '"') {
				size_t r = p + kl + 2;
				while (r < c->textlen && isspace((unsigned char)c->text[r]))
					r++;
				if (r < c->textlen && c->text[r] == ':') {
					ok = 1;
					break;
				}
			}
			p++;
		}
		if (!ok)
			break;
		found = p;
		pos = p + kl + 2;
		have = 1;
	}
	*line = 1;
	*col = 1;
	if (!have)
		return;
	for (size_t i = 0; i < found; i++) {
		if (c->text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static void lerr(struct lctx *c, const char *k1, const char *k2, const char *k3, const char *fmt,
		 ...) __attribute__((format(printf, 5, 6)));
static void lerr(struct lctx *c, const char *k1, const char *k2, const char *k3, const char *fmt,
		 ...)
{
	const char *path[4] = {k1, k1 ? k2 : NULL, k1 && k2 ? k3 : NULL, NULL};
	int line, col;
	schema_locate(c->text, c->textlen, path, &line, &col);
	c->nerr++;
	if (!c->err || c->used + 1 >= c->errlen)
		return;
	int n = snprintf(c->err + c->used, c->errlen - c->used, "%s:%d:%d: ", c->file, line, col);
	if (n > 0 && (size_t)n < c->errlen - c->used) {
		c->used += (size_t)n;
		va_list ap;
		va_start(ap, fmt);
		n = vsnprintf(c->err + c->used, c->errlen - c->used, fmt, ap);
		va_end(ap);
		if (n > 0)
			c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
		if (c->used + 1 < c->errlen) {
			c->err[c->used++] = '\n';
			c->err[c->used] = '\0';
		}
	} else {
		c->used = c->errlen - 1;
	}
}

static int check_keys(struct lctx *c, json_t *o, const char *const *allowed, const char *k1,
		      const char *k2)
{
	const char *key;
	json_t *v;
	int bad = 0;
	json_object_foreach(o, key, v) {
		int ok = 0;
		for (int i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				ok = 1;
		if (!ok) {
			lerr(c, k1 ? k1 : key, k1 ? (k2 ? k2 : key) : NULL, k1 && k2 ? key : NULL,
			     "unknown key \"%s\"", key);
			bad = 1;
		}
	}
	return bad ? -1 : 0;
}

static unsigned parse_type_name(const char *s)
{
	static const struct {
		const char *n;
		unsigned t;
	} names[] = {{"string", T_STRING}, {"number", T_NUMBER}, {"integer", T_INTEGER},
		     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
		     {"null", T_NULL},       {"any", T_ANY}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(s, names[i].n) == 0)
			return names[i].t;
	return 0;
}

static unsigned json_type_bits(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: return T_STRING;
	case JSON_INTEGER: return T_NUMBER | T_INTEGER;
	case JSON_REAL: return T_NUMBER;
	case JSON_TRUE:
	case JSON_FALSE: return T_BOOLEAN;
	case JSON_OBJECT: return T_OBJECT;
	case JSON_ARRAY: return T_ARRAY;
	case JSON_NULL: return T_NULL;
	}
	return 0;
}

static int add_unit_field(struct schema *s, const char *name, int to)
{
	for (size_t i = 0; i < s->nufs; i++)
		if (strcmp(s->ufs[i].name, name) == 0)
			return s->ufs[i].to == to ? (int)i : -2;
	struct ufield *n = realloc(s->ufs, (s->nufs + 1) * sizeof *n);
	if (!n)
		return -1;
	s->ufs = n;
	s->ufs[s->nufs].name = strdup(name);
	if (!s->ufs[s->nufs].name)
		return -1;
	s->ufs[s->nufs].to = to;
	return (int)s->nufs++;
}

static int value_fits(const struct sfield *f, const json_t *v); /* used for defaults */

static int compile_field(struct lctx *c, struct schema *s, struct sfield *f, const char *name,
			 json_t *spec)
{
	static const char *const allowed[] = {"type", "required", "min", "max", "minLength",
					      "maxLength", "pattern", "enum", "default", "unit",
					      "round", "topicLevel", "description", NULL};
	int bad = 0;
	f->unit_from = f->unit_to = f->unit_default = f->unit_field = -1;
	f->round = -1;
	f->min_len = f->max_len = -1;
	f->types = T_ANY;
	if (!(f->name = strdup(name)))
		return TG_ENOMEM;
	if (!json_is_object(spec)) {
		lerr(c, "fields", name, NULL, "field spec must be an object");
		return TG_EPARSE;
	}
	if (check_keys(c, spec, allowed, "fields", name))
		bad = 1;
	json_t *v = json_object_get(spec, "type");
	if (v) {
		f->types = 0;
		if (json_is_string(v)) {
			f->types = parse_type_name(json_string_value(v));
		} else if (json_is_array(v)) {
			size_t i;
			json_t *e;
			json_array_foreach(v, i, e) {
				unsigned t = json_is_string(e) ? parse_type_name(json_string_value(e)) : 0;
				if (!t) {
					f->types = 0;
					break;
				}
				f->types |= t;
			}
		}
		if (!f->types) {
			lerr(c, "fields", name, "type",
			     "type must be string|number|integer|boolean|object|array|null|any or a list");
			bad = 1;
			f->types = T_ANY;
		}
	}
	if ((v = json_object_get(spec, "required"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "fields", name, "required", "required must be true or false");
			bad = 1;
		}
		f->required = json_is_true(v);
	}
	if ((v = json_object_get(spec, "min"))) {
		if (!json_is_number(v)) {
			lerr(c, "fields", name, "min", "min must be a number");
			bad = 1;
		}
		f->has_min = 1;
		f->min = json_number_value(v);
	}
	if ((v = json_object_get(spec, "max"))) {
		if (!json_is_number(v)) {
			lerr(c, "fields", name, "max", "max must be a number");
			bad = 1;
		}
		f->has_max = 1;
		f->max = json_number_value(v);
	}
	if (f->has_min && f->has_max && f->min > f->max) {
		lerr(c, "fields", name, "max", "max is below min");
		bad = 1;
	}
	if ((v = json_object_get(spec, "minLength"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			lerr(c, "fields", name, "minLength", "minLength must be an integer >= 0");
			bad = 1;
		}
		f->min_len = json_integer_value(v);
	}
	if ((v = json_object_get(spec, "maxLength"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			lerr(c, "fields", name, "maxLength", "maxLength must be an integer >= 0");
			bad = 1;
		}
		f->max_len = json_integer_value(v);
	}
	if ((v = json_object_get(spec, "pattern"))) {
		if (!json_is_string(v)) {
			lerr(c, "fields", name, "pattern", "pattern must be a string");
			bad = 1;
		} else {
			int ec;
			PCRE2_SIZE eo;
			f->re = pcre2_compile((PCRE2_SPTR)json_string_value(v), PCRE2_ZERO_TERMINATED,
					      PCRE2_UTF, &ec, &eo, NULL);
			if (!f->re) {
				PCRE2_UCHAR msg[128];
				pcre2_get_error_message(ec, msg, sizeof msg);
				lerr(c, "fields", name, "pattern", "bad pattern at offset %zu: %s",
				     (size_t)eo, (char *)msg);
				bad = 1;
			} else {
				/* JIT is an optimisation: where unavailable the interpreter runs. */
				(void)pcre2_jit_compile(f->re, PCRE2_JIT_COMPLETE);
				f->md = pcre2_match_data_create_from_pattern(f->re, NULL);
				if (!f->md)
					return TG_ENOMEM;
			}
		}
	}
	if ((v = json_object_get(spec, "enum"))) {
		if (!json_is_array(v) || json_array_size(v) == 0) {
			lerr(c, "fields", name, "enum", "enum must be a non-empty array");
			bad = 1;
		} else {
			f->enum_vals = json_incref(v);
		}
	}
	if ((v = json_object_get(spec, "topicLevel"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 64) {
			lerr(c, "fields", name, "topicLevel", "topicLevel must be an integer 1..64");
			bad = 1;
		} else {
			f->topic_level = (int)json_integer_value(v);
			if (!(f->types & T_STRING)) {
				lerr(c, "fields", name, "topicLevel", "topicLevel needs a string field");
				bad = 1;
			}
		}
	}
	if ((v = json_object_get(spec, "round"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 9) {
			lerr(c, "fields", name, "round", "round must be an integer 0..9");
			bad = 1;
		} else {
			f->round = (int)json_integer_value(v);
		}
	}
	if ((v = json_object_get(spec, "unit"))) {
		static const char *const uallowed[] = {"field", "from", "to", "default", NULL};
		json_t *uf = json_object_get(v, "field"), *from = json_object_get(v, "from");
		json_t *to = json_object_get(v, "to"), *dflt = json_object_get(v, "default");
		if (!json_is_object(v)) {
			lerr(c, "fields", name, "unit", "unit must be an object");
			return TG_EPARSE;
		}
		if (check_keys(c, v, uallowed, "fields", name))
			bad = 1;
		if (!json_is_string(to) || (f->unit_to = unit_lookup(json_string_value(to))) < 0) {
			lerr(c, "fields", name, "unit", "unit.to must name a known unit");
			return TG_EPARSE;
		}
		if (!(f->types & T_NUMBER) || f->types & ~(T_NUMBER | T_INTEGER | T_NULL) ||
		    (f->types & T_INTEGER && !(f->types & T_NUMBER))) {
			lerr(c, "fields", name, "unit", "unit conversion needs \"type\": \"number\"");
			bad = 1;
		}
		if ((uf != NULL) == (from != NULL)) {
			lerr(c, "fields", name, "unit", "unit needs exactly one of \"field\" or \"from\"");
			return TG_EPARSE;
		}
		if (from) {
			if (!json_is_string(from) ||
			    (f->unit_from = unit_lookup(json_string_value(from))) < 0 ||
			    units[f->unit_from].quantity != units[f->unit_to].quantity) {
				lerr(c, "fields", name, "from", "unit.from must be a unit compatible with unit.to");
				return TG_EPARSE;
			}
		} else {
			if (!json_is_string(uf)) {
				lerr(c, "fields", name, "field", "unit.field must be a string");
				return TG_EPARSE;
			}
			f->unit_default = f->unit_to;
			if (dflt) {
				if (!json_is_string(dflt) ||
				    (f->unit_default = unit_lookup(json_string_value(dflt))) < 0 ||
				    units[f->unit_default].quantity != units[f->unit_to].quantity) {
					lerr(c, "fields", name, "default",
					     "unit.default must be a unit compatible with unit.to");
					return TG_EPARSE;
				}
			}
			f->unit_field = add_unit_field(s, json_string_value(uf), f->unit_to);
			if (f->unit_field == -1)
				return TG_ENOMEM;
			if (f->unit_field == -2) {
				lerr(c, "fields", name, "field",
				     "unit field \"%s\" is shared by fields with different target units",
				     json_string_value(uf));
				return TG_EPARSE;
			}
		}
	}
	if ((v = json_object_get(spec, "default"))) {
		f->def = json_deep_copy(v);
		if (!f->def)
			return TG_ENOMEM;
		if (!value_fits(f, f->def)) {
			lerr(c, "fields", name, "default", "default does not satisfy the field's own checks");
			bad = 1;
		}
	}
	return bad ? TG_EPARSE : 0;
}

static int parse_duration_field(struct lctx *c, json_t *o, const char *key, const char *k0,
				int64_t *out_ms)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e9) {
		lerr(c, k0, key, NULL, "%s must be a number of seconds >= 0", key);
		return TG_EPARSE;
	}
	*out_ms = (int64_t)llround(json_number_value(v) * 1000.0);
	return 0;
}

static int compile_timestamp(struct lctx *c, struct schema *s, json_t *t)
{
	static const char *const allowed[] = {"field", "format", "output", "isoOutput", "required",
					      "fallbackToReceived", "maxSkewSeconds", NULL};
	int bad = 0;
	if (!json_is_object(t)) {
		lerr(c, "timestamp", NULL, NULL, "timestamp must be an object");
		return TG_EPARSE;
	}
	if (check_keys(c, t, allowed, "timestamp", NULL))
		bad = 1;
	s->has_ts = 1;
	s->ts_fallback = 1;
	json_t *v = json_object_get(t, "field");
	const char *in = json_is_string(v) ? json_string_value(v) : "ts";
	if (v && !json_is_string(v)) {
		lerr(c, "timestamp", "field", NULL, "field must be a string");
		bad = 1;
	}
	v = json_object_get(t, "output");
	const char *out = json_is_string(v) ? json_string_value(v) : "ts";
	v = json_object_get(t, "isoOutput");
	const char *iso = v == NULL ? "ts_iso" : json_is_string(v) ? json_string_value(v) : NULL;
	if (v && !json_is_string(v) && !json_is_null(v)) {
		lerr(c, "timestamp", "isoOutput", NULL, "isoOutput must be a string or null");
		bad = 1;
	}
	if (iso && !*iso)
		iso = NULL;
	if (!(s->ts_in = strdup(in)) || !(s->ts_out = strdup(out)) || (iso && !(s->ts_iso = strdup(iso))))
		return TG_ENOMEM;
	s->ts_fmt = TSF_AUTO;
	if ((v = json_object_get(t, "format"))) {
		const char *fs = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(fs, "auto") == 0)
			s->ts_fmt = TSF_AUTO;
		else if (strcmp(fs, "epoch_ms") == 0)
			s->ts_fmt = TSF_MS;
		else if (strcmp(fs, "epoch_s") == 0)
			s->ts_fmt = TSF_S;
		else if (strcmp(fs, "rfc3339") == 0)
			s->ts_fmt = TSF_RFC3339;
		else {
			lerr(c, "timestamp", "format", NULL,
			     "format must be auto, epoch_ms, epoch_s or rfc3339");
			bad = 1;
		}
	}
	if ((v = json_object_get(t, "required"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "timestamp", "required", NULL, "required must be true or false");
			bad = 1;
		}
		s->ts_required = json_is_true(v);
	}
	if ((v = json_object_get(t, "fallbackToReceived"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "timestamp", "fallbackToReceived", NULL, "must be true or false");
			bad = 1;
		}
		s->ts_fallback = json_is_true(v);
	}
	if (parse_duration_field(c, t, "maxSkewSeconds", "timestamp", &s->ts_skew_ms))
		bad = 1;
	return bad ? TG_EPARSE : 0;
}

static int add_known(struct schema *s, const char *name)
{
	for (size_t i = 0; i < s->nknown; i++)
		if (strcmp(s->known[i], name) == 0)
			return 0;
	const char **n = realloc(s->known, (s->nknown + 1) * sizeof *n);
	if (!n)
		return TG_ENOMEM;
	s->known = n;
	s->known[s->nknown++] = name;
	return 0;
}

static int compile_schema(struct lctx *c, struct schema *s, const char *name, json_t *root)
{
	static const char *const allowed[] = {"topic", "topics", "description", "unknownFields",
					      "renames", "timestamp", "fields", "matchLimit", NULL};
	int bad = 0, rc;
	if (!(s->name = strdup(name)))
		return TG_ENOMEM;
	if (!json_is_object(root)) {
		lerr(c, NULL, NULL, NULL, "a schema file must hold one JSON object");
		return TG_EPARSE;
	}
	if (check_keys(c, root, allowed, NULL, NULL))
		bad = 1;

	/* topic filters */
	json_t *tv = json_object_get(root, "topics");
	json_t *one = json_object_get(root, "topic");
	const char *tkey = tv ? "topics" : "topic";
	if ((tv != NULL) == (one != NULL)) {
		lerr(c, NULL, NULL, NULL, "exactly one of \"topic\" or \"topics\" is required");
		return TG_EPARSE;
	}
	size_t nt = tv ? (json_is_array(tv) ? json_array_size(tv) : 0) : 1;
	if (nt == 0) {
		lerr(c, tkey, NULL, NULL, "topics must be a non-empty array of topic filters");
		return TG_EPARSE;
	}
	if (!(s->filters = calloc(nt, sizeof *s->filters)))
		return TG_ENOMEM;
	for (size_t i = 0; i < nt; i++) {
		json_t *e = tv ? json_array_get(tv, i) : one;
		if (!json_is_string(e) || !tg_topic_filter_valid(json_string_value(e))) {
			lerr(c, tkey, NULL, NULL, "invalid topic filter");
			return TG_EPARSE;
		}
		if (!(s->filters[i] = tg_topic_filter_new(json_string_value(e))))
			return TG_ENOMEM;
		s->nfilters++;
	}

	json_t *v = json_object_get(root, "unknownFields");
	if (v) {
		const char *u = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(u, "keep") == 0)
			s->unknown = UNKNOWN_KEEP;
		else if (strcmp(u, "drop") == 0)
			s->unknown = UNKNOWN_DROP;
		else if (strcmp(u, "reject") == 0)
			s->unknown = UNKNOWN_REJECT;
		else {
			lerr(c, "unknownFields", NULL, NULL, "unknownFields must be keep, drop or reject");
			bad = 1;
		}
	}

	uint32_t mlimit = SCHEMA_MATCH_LIMIT_DEFAULT;
	if ((v = json_object_get(root, "matchLimit"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 10000000) {
			lerr(c, "matchLimit", NULL, NULL, "matchLimit must be an integer 1..10000000");
			bad = 1;
		} else {
			mlimit = (uint32_t)json_integer_value(v);
		}
	}
	if (!(s->mctx = pcre2_match_context_create(NULL)))
		return TG_ENOMEM;
	pcre2_set_match_limit(s->mctx, mlimit);
	pcre2_set_depth_limit(s->mctx, mlimit);

	if ((v = json_object_get(root, "renames"))) {
		if (!json_is_object(v)) {
			lerr(c, "renames", NULL, NULL, "renames must be an object {\"from\": \"to\"}");
			return TG_EPARSE;
		}
		size_t n = json_object_size(v);
		if (n && !(s->renames = calloc(n, sizeof *s->renames)))
			return TG_ENOMEM;
		const char *key;
		json_t *to;
		json_object_foreach(v, key, to) {
			if (!json_is_string(to) || !*json_string_value(to) ||
			    strcmp(key, json_string_value(to)) == 0) {
				lerr(c, "renames", key, NULL, "rename target must be a different field name");
				bad = 1;
				continue;
			}
			struct rename *r = &s->renames[s->nrenames++];
			if (!(r->from = strdup(key)) || !(r->to = strdup(json_string_value(to))))
				return TG_ENOMEM;
		}
	}

	if ((v = json_object_get(root, "timestamp"))) {
		if ((rc = compile_timestamp(c, s, v)) == TG_ENOMEM)
			return rc;
		if (rc)
			bad = 1;
	}

	if ((v = json_object_get(root, "fields"))) {
		if (!json_is_object(v)) {
			lerr(c, "fields", NULL, NULL, "fields must be an object {\"name\": {spec}}");
			return TG_EPARSE;
		}
		size_t n = json_object_size(v);
		if (n && !(s->fields = calloc(n, sizeof *s->fields)))
			return TG_ENOMEM;
		const char *key;
		json_t *spec;
		json_object_foreach(v, key, spec) {
			struct sfield *f = &s->fields[s->nfields++];
			if ((rc = compile_field(c, s, f, key, spec)) == TG_ENOMEM)
				return rc;
			if (rc)
				bad = 1;
			if (s->has_ts && (strcmp(key, s->ts_out) == 0 ||
					  (s->ts_iso && strcmp(key, s->ts_iso) == 0))) {
				lerr(c, "fields", key, NULL,
				     "\"%s\" is written by the timestamp section; do not declare it", key);
				bad = 1;
			}
		}
	}

	/* Names kept when unknownFields is drop/reject: declared fields, timestamp outputs,
	 * unit fields and rename targets. */
	for (size_t i = 0; i < s->nfields; i++)
		if (add_known(s, s->fields[i].name))
			return TG_ENOMEM;
	for (size_t i = 0; i < s->nufs; i++)
		if (add_known(s, s->ufs[i].name))
			return TG_ENOMEM;
	for (size_t i = 0; i < s->nrenames; i++)
		if (add_known(s, s->renames[i].to))
			return TG_ENOMEM;
	if (s->has_ts) {
		if (add_known(s, s->ts_out) || (s->ts_iso && add_known(s, s->ts_iso)))
			return TG_ENOMEM;
	}
	return bad ? TG_EPARSE : 0;
}

static int set_append_buffer(schema_set *set, const char *file, const char *name,
			     const char *text, size_t len, char *err, size_t errlen, size_t *used)
{
	struct lctx c = {.file = file, .text = text, .textlen = len, .err = err, .errlen = errlen};
	c.used = *used;
	json_error_t jerr;
	int rc;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (err && c.used + 1 < errlen) {
			int n = snprintf(err + c.used, errlen - c.used, "%s:%d:%d: %s\n", file, jerr.line,
					 jerr.column, schema_json_error_text(&jerr));
			if (n > 0)
				c.used += (size_t)n < errlen - c.used ? (size_t)n : errlen - c.used - 1;
		}
		*used = c.used;
		return TG_EPARSE;
	}
	struct schema *nv = realloc(set->v, (set->n + 1) * sizeof *nv);
	if (!nv) {
		json_decref(root);
		return TG_ENOMEM;
	}
	set->v = nv;
	memset(&set->v[set->n], 0, sizeof set->v[0]);
	rc = compile_schema(&c, &set->v[set->n], name, root);
	set->n++; /* the (possibly half-built) entry is freed with the set */
	json_decref(root);
	if (rc == TG_ENOMEM)
		tg_seterr(err ? err + c.used : NULL, err ? errlen - c.used : 0, rc, "%s: out of memory\n", file);
	*used = c.used;
	return rc;
}

static char *name_from_path(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	size_t n = strlen(b);
	if (n > 5 && strcmp(b + n - 5, ".json") == 0)
		n -= 5;
	return strndup(b, n);
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	int rc = 0;
	if (!f)
		return tg_seterr(err, errlen, TG_EIO, "%s:1:1: %s\n", path, strerror(errno));
	if (!(buf = malloc(SCHEMA_FILE_MAX + 1))) {
		rc = TG_ENOMEM;
		goto out;
	}
	size_t n = fread(buf, 1, SCHEMA_FILE_MAX + 1, f);
	if (ferror(f)) {
		rc = tg_seterr(err, errlen, TG_EIO, "%s:1:1: read error\n", path);
		goto out;
	}
	if (n > SCHEMA_FILE_MAX) {
		rc = tg_seterr(err, errlen, TG_EFULL, "%s:1:1: file larger than %d bytes\n", path,
			       SCHEMA_FILE_MAX);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

static int load_file_into(schema_set *set, const char *path, char *err, size_t errlen, size_t *used)
{
	char *text = NULL, *name = NULL;
	size_t len = 0;
	int rc = read_file(path, &text, &len, err ? err + *used : NULL, err ? errlen - *used : 0);
	if (rc) {
		if (err)
			*used += strlen(err + *used);
		goto out;
	}
	if (!(name = name_from_path(path))) {
		rc = TG_ENOMEM;
		goto out;
	}
	rc = set_append_buffer(set, path, name, text, len, err, errlen, used);
out:
	free(text);
	free(name);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

schema_set *schema_load_dir(const char *dir, char *errbuf, size_t errlen)
{
	schema_set *set = calloc(1, sizeof *set);
	DIR *d = NULL;
	char **names = NULL;
	size_t nnames = 0, used = 0;
	int failed = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!set)
		goto fail;
	if (!(d = opendir(dir))) {
		tg_seterr(errbuf, errlen, TG_EIO, "%s:1:1: %s\n", dir, strerror(errno));
		goto fail;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l <= 5 || de->d_name[0] == '.' || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		char **nn = realloc(names, (nnames + 1) * sizeof *nn);
		if (!nn)
			goto fail;
		names = nn;
		if (!(names[nnames] = strdup(de->d_name)))
			goto fail;
		nnames++;
	}
	qsort(names, nnames, sizeof *names, cmp_str);
	for (size_t i = 0; i < nnames; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (load_file_into(set, path, errbuf, errlen, &used))
			failed = 1; /* keep going so every file's errors are reported at once */
	}
	if (failed)
		goto fail;
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return set;
fail:
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	if (d)
		closedir(d);
	schema_set_free(set);
	return NULL;
}

schema_set *schema_load_file(const char *path, char *errbuf, size_t errlen)
{
	size_t used = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	schema_set *set = calloc(1, sizeof *set);
	if (!set || load_file_into(set, path, errbuf, errlen, &used)) {
		schema_set_free(set);
		return NULL;
	}
	return set;
}

schema_set *schema_load_buffer(const char *name, const char *text, size_t len, char *errbuf,
			       size_t errlen)
{
	size_t used = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	schema_set *set = calloc(1, sizeof *set);
	if (!set || set_append_buffer(set, name, name, text, len, errbuf, errlen, &used)) {
		schema_set_free(set);
		return NULL;
	}
	return set;
}

/* ---- apply ------------------------------------------------------------------------------- */

static const struct schema *find_schema(const schema_set *set, const char *topic)
{
	if (!set || !topic)
		return NULL;
	for (size_t i = 0; i < set->n; i++)
		for (size_t k = 0; k < set->v[i].nfilters; k++)
			if (tg_topic_filter_match(set->v[i].filters[k], topic))
				return &set->v[i];
	return NULL;
}

const char *schema_match(const schema_set *set, const char *topic)
{
	const struct schema *s = find_schema(set, topic);
	return s ? s->name : NULL;
}

static long long utf8_len(const char *s, size_t n)
{
	long long cp = 0;
	for (size_t i = 0; i < n; i++)
		cp += ((unsigned char)s[i] & 0xC0) != 0x80;
	return cp;
}

static int enum_has(const json_t *vals, const json_t *v)
{
	size_t i;
	json_t *e;
	json_array_foreach(vals, i, e) {
		if (json_equal(e, v))
			return 1;
	}
	return 0;
}

/* Checks that do not depend on the message (used for defaults at load time too). Returns 1
 * when v passes type/range/length/enum checks; the pattern is checked by the caller. */
static int value_fits(const struct sfield *f, const json_t *v)
{
	if (!(json_type_bits(v) & f->types))
		return 0;
	if (json_is_number(v)) {
		double x = json_number_value(v);
		if ((f->has_min && x < f->min) || (f->has_max && x > f->max))
			return 0;
	}
	if (json_is_string(v)) {
		long long l = utf8_len(json_string_value(v), json_string_length(v));
		if ((f->min_len >= 0 && l < f->min_len) || (f->max_len >= 0 && l > f->max_len))
			return 0;
	}
	if (f->enum_vals && !enum_has(f->enum_vals, v))
		return 0;
	return 1;
}

static const char *type_word(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_NULL: return "null";
	}
	return "?";
}

static int set_number(json_t *obj, const char *key, json_t **v, double y)
{
	if (json_is_real(*v) && (*v)->refcount == 1)
		return json_real_set(*v, y) ? TG_ENOMEM : 0;
	json_t *n = json_real(y);
	if (!n || json_object_set_new(obj, key, n))
		return TG_ENOMEM;
	*v = n;
	return 0;
}

static int apply_timestamp(const struct schema *s, json_t *obj, int64_t received_ms,
			   schema_reject *why, schema_stats *st)
{
	json_t *v = json_object_get(obj, s->ts_in);
	int64_t ms;
	if (!v) {
		if (s->ts_required)
			return reject(why, st, SCHEMA_R_MISSING_FIELD, s->ts_in, "timestamp missing");
		if (!s->ts_fallback)
			return 0;
		ms = received_ms;
	} else if (json_is_integer(v) || json_is_real(v)) {
		double d = json_number_value(v);
		int secs;
		if (s->ts_fmt == TSF_RFC3339)
			return reject(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in,
				      "timestamp: expected an RFC 3339 string");
		secs = s->ts_fmt == TSF_S || (s->ts_fmt == TSF_AUTO && fabs(d) < TS_AUTO_SECONDS_BELOW);
		if (secs)
			d *= 1000.0;
		if (!(d >= 0.0 && d <= (double)TS_MAX_MS))
			return reject(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
				      "timestamp out of range");
		if (json_is_integer(v))
			ms = secs ? json_integer_value(v) * 1000 : json_integer_value(v);
		else
			ms = (int64_t)llround(d);
	} else if (json_is_string(v)) {
		if (s->ts_fmt != TSF_AUTO && s->ts_fmt != TSF_RFC3339)
			return reject(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in,
				      "timestamp: expected an epoch number");
		if (schema_parse_rfc3339(json_string_value(v), &ms) || ms < 0 || ms > TS_MAX_MS)
			return reject(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
				      "not an RFC 3339 timestamp");
	} else {
		return reject(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in, "timestamp of type %s",
			      type_word(v));
	}
	if (v && s->ts_skew_ms > 0 &&
	    (ms > received_ms + s->ts_skew_ms || ms < received_ms - s->ts_skew_ms))
		return reject(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
			      "timestamp %lld ms off the receive time (max %lld)",
			      (long long)(ms - received_ms), (long long)s->ts_skew_ms);

	if (v && strcmp(s->ts_in, s->ts_out) != 0)
		json_object_del(obj, s->ts_in);
	json_t *o = json_object_get(obj, s->ts_out);
	if (o && json_is_integer(o) && o->refcount == 1) {
		json_integer_set(o, ms);
	} else {
		json_t *n = json_integer(ms);
		if (!n || json_object_set_new(obj, s->ts_out, n))
			return TG_ENOMEM;
	}
	if (s->ts_iso) {
		char iso[32];
		schema_format_rfc3339(ms, iso, sizeof iso);
		json_t *i = json_object_get(obj, s->ts_iso);
		if (i && json_is_string(i) && i->refcount == 1) {
			if (json_string_set(i, iso))
				return TG_ENOMEM;
		} else {
			json_t *n = json_string(iso);
			if (!n || json_object_set_new(obj, s->ts_iso, n))
				return TG_ENOMEM;
		}
	}
	return 0;
}

/* Level `level` (1-based, like IoT SQL's topic(n)) of topic, without copying. */
static int topic_level(const char *topic, int level, const char **start, size_t *len)
{
	const char *p = topic;
	for (int i = 1; i < level; i++) {
		p = strchr(p, '/');
		if (!p)
			return -1;
		p++;
	}
	const char *e = strchr(p, '/');
	*start = p;
	*len = e ? (size_t)(e - p) : strlen(p);
	return 0;
}

static int apply_field(const struct schema *s, const struct sfield *f, const char *topic,
		       json_t *obj, schema_reject *why, schema_stats *st)
{
	json_t *v = json_object_get(obj, f->name);
	if (!v) {
		if (f->def) {
			json_t *n = json_deep_copy(f->def);
			if (!n || json_object_set_new(obj, f->name, n))
				return TG_ENOMEM;
			return 0;
		}
		if (f->required)
			return reject(why, st, SCHEMA_R_MISSING_FIELD, f->name, "required field missing");
		return 0;
	}
	if (!(json_type_bits(v) & f->types))
		return reject(why, st, SCHEMA_R_WRONG_TYPE, f->name, "unexpected %s", type_word(v));
	if (f->unit_to >= 0 && json_is_number(v)) {
		int from = f->unit_from;
		if (f->unit_field >= 0) {
			const char *ufn = s->ufs[f->unit_field].name;
			json_t *u = json_object_get(obj, ufn);
			if (!u)
				from = f->unit_default;
			else if (!json_is_string(u))
				return reject(why, st, SCHEMA_R_BAD_UNIT, ufn, "unit is not a string");
			else if ((from = unit_lookup(json_string_value(u))) < 0 ||
				 units[from].quantity != units[f->unit_to].quantity)
				return reject(why, st, SCHEMA_R_BAD_UNIT, ufn, "unit \"%.40s\" not usable for %s",
					      json_string_value(u), f->name);
		}
		if (from != f->unit_to || f->round >= 0) {
			const struct unit_def *a = &units[from], *b = &units[f->unit_to];
			double y = ((json_number_value(v) * a->scale + a->offset) - b->offset) / b->scale;
			if (f->round >= 0) {
				double p = 1.0;
				for (int k = 0; k < f->round; k++)
					p *= 10.0;
				y = round(y * p) / p;
			}
			if (set_number(obj, f->name, &v, y))
				return TG_ENOMEM;
		}
	}
	if (json_is_number(v)) {
		double x = json_number_value(v);
		if (f->has_min && x < f->min)
			return reject(why, st, SCHEMA_R_OUT_OF_RANGE, f->name, "%g < min %g", x, f->min);
		if (f->has_max && x > f->max)
			return reject(why, st, SCHEMA_R_OUT_OF_RANGE, f->name, "%g > max %g", x, f->max);
	} else if (json_is_string(v)) {
		const char *str = json_string_value(v);
		size_t n = json_string_length(v);
		if (f->min_len >= 0 || f->max_len >= 0) {
			long long l = utf8_len(str, n);
			if ((f->min_len >= 0 && l < f->min_len) || (f->max_len >= 0 && l > f->max_len))
				return reject(why, st, SCHEMA_R_OUT_OF_RANGE, f->name,
					      "length %lld outside %lld..%lld", l, f->min_len, f->max_len);
		}
		if (f->re) {
			int rc = pcre2_match(f->re, (PCRE2_SPTR)str, n, 0, 0, f->md, s->mctx);
			if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT)
				return reject(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
					      "pattern match limit reached");
			if (rc < 0)
				return reject(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
					      "does not match the pattern");
		}
	}
	if (f->enum_vals && !enum_has(f->enum_vals, v))
		return reject(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name, "not one of the allowed values");
	if (f->topic_level && json_is_string(v)) {
		const char *lv;
		size_t ll;
		if (topic_level(topic, f->topic_level, &lv, &ll) || ll != json_string_length(v) ||
		    memcmp(lv, json_string_value(v), ll) != 0)
			return reject(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
				      "does not match topic level %d (the publishing thing)", f->topic_level);
	}
	return 0;
}

static int is_known(const struct schema *s, const char *key)
{
	for (size_t i = 0; i < s->nknown; i++)
		if (strcmp(s->known[i], key) == 0)
			return 1;
	return 0;
}

int schema_apply(const schema_set *set, const char *topic, json_t *obj, int64_t received_ms,
		 schema_reject *why, schema_stats *st)
{
	int rc;
	if (why) {
		why->reason = SCHEMA_R_NONE;
		why->field[0] = why->text[0] = '\0';
	}
	if (!json_is_object(obj))
		return reject(why, st, SCHEMA_R_NOT_OBJECT, NULL, "payload is not a JSON object");
	const struct schema *s = find_schema(set, topic);
	if (!s) {
		if (st)
			st->unmatched++;
		return SCHEMA_NO_MATCH;
	}
	for (size_t i = 0; i < s->nrenames; i++) {
		const struct rename *r = &s->renames[i];
		json_t *v = json_object_get(obj, r->from);
		if (!v)
			continue;
		if (json_object_get(obj, r->to))
			return reject(why, st, SCHEMA_R_DUPLICATE_KEY, r->to, "both %s and %s present",
				      r->from, r->to);
		if (json_object_set(obj, r->to, v))
			return TG_ENOMEM;
		json_object_del(obj, r->from);
	}
	if (s->has_ts && (rc = apply_timestamp(s, obj, received_ms, why, st)))
		return rc;
	for (size_t i = 0; i < s->nfields; i++)
		if ((rc = apply_field(s, &s->fields[i], topic, obj, why, st)))
			return rc;
	/* Unit fields are rewritten only after every field was converted, because several
	 * fields may read the same unit field. */
	for (size_t i = 0; i < s->nufs; i++) {
		json_t *u = json_object_get(obj, s->ufs[i].name);
		const char *to = units[s->ufs[i].to].name;
		if (u && json_is_string(u) && strcmp(json_string_value(u), to) != 0 && json_string_set(u, to))
			return TG_ENOMEM;
	}
	if (s->unknown != UNKNOWN_KEEP) {
		const char *key;
		json_t *v;
		void *tmp;
		json_object_foreach_safe(obj, tmp, key, v) {
			if (is_known(s, key))
				continue;
			if (s->unknown == UNKNOWN_REJECT)
				return reject(why, st, SCHEMA_R_UNKNOWN_FIELD, key, "field not in the schema");
			json_object_del(obj, key);
		}
	}
	if (st)
		st->accepted++;
	return SCHEMA_APPLIED;
}
