/*
 * schema_payload.c — the first check every message gets, before any schema: the raw bytes
 * (size cap, UTF-8, nesting depth) and a JSON parser of our own that refuses duplicate keys
 * and builds the jansson object in one pass, plus the reason names and counters every
 * rejection reports through. Split from the schema compiler and apply step because the
 * rules CLI and the shadow service parse payloads with the same limits and no schema.
 */
#include "edge/schema.h"

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

#include "core/err.h"
#include "core/timefmt.h"
#include "edge/schema_int.h"

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

int schema_reject_set(schema_reject *why, schema_stats *st, schema_reason r, const char *field, const char *fmt, ...)
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
		schema_reject_set(why, st, SCHEMA_R_TOO_LARGE, NULL, "payload %zu bytes > cap %zu", len, max_bytes);
		return NULL;
	}
	json_t *fj = len ? fast_parse(buf, len, max_depth) : NULL;
	if (fj) {
		if (json_is_object(fj))
			return fj;
		json_decref(fj);
		schema_reject_set(why, st, SCHEMA_R_NOT_OBJECT, NULL, "top level is not an object");
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
		schema_reject_set(why, st, r, NULL, "payload is not valid UTF-8");
		return NULL;
	}
	if (r == SCHEMA_R_TOO_DEEP) {
		schema_reject_set(why, st, r, NULL, "nesting deeper than %d", max_depth);
		return NULL;
	}
	json_error_t jerr;
	json_t *j = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!j) {
		if (json_error_code(&jerr) == json_error_duplicate_key)
			schema_reject_set(why, st, SCHEMA_R_DUPLICATE_KEY, NULL, "%s", jerr.text);
		else
			schema_reject_set(why, st, SCHEMA_R_BAD_JSON, NULL, "%d:%d: %s", jerr.line, jerr.column,
			       schema_json_error_text(&jerr));
		return NULL;
	}
	if (!json_is_object(j)) {
		schema_reject_set(why, st, SCHEMA_R_NOT_OBJECT, NULL, "top level is not an object");
		json_decref(j);
		return NULL;
	}
	return j;
}
