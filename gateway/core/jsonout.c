/*
 * jsonout.c — see jsonout.h. The text follows jansson 2.14's dump.c (compact separators,
 * insertion order, its escapes: \" \\ \b \f \n \r \t and \u00XX for other control
 * characters, UTF-8 copied as is) and strconv.c's jsonp_dtostr ("%.15g", ".0" added when
 * the text has neither '.' nor 'e', exponent without '+' or leading zeros);
 * tests/unit/test_jsonout.c compares the two byte for byte over random values.
 */
#include "core/jsonout.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define MAX_DEPTH 2048

static size_t fmt_u64(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* jansson's jsonp_dtostr with precision 15 (the general case). */
static size_t fmt_real_printf(char *out, size_t size, double x)
{
	int ret = snprintf(out, size, "%.15g", x);
	if (ret < 0 || (size_t)ret >= size)
		return 0;
	size_t len = (size_t)ret;
	if (!strchr(out, '.') && !strchr(out, 'e')) {
		if (len + 3 >= size)
			return 0;
		memcpy(out + len, ".0", 3);
		len += 2;
	}
	char *start = strchr(out, 'e');
	if (start) {
		start++;
		char *end = start + 1;
		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, len - (size_t)(end - out) + 1);
			len -= (size_t)(end - start);
		}
	}
	return len;
}

/* A real that is exactly (as a double) a decimal of at most 15 significant digits with 0, 2,
 * 4 or 6 places, in fixed notation's range: "%.15g" prints that decimal (DBL_DIG = 15: such
 * a decimal survives the round trip through the nearest double), trailing zeros dropped. */
static size_t fmt_real(char *out, size_t size, double x)
{
	static const double scale[] = {1.0, 100.0, 10000.0, 1000000.0};
	static const int places[] = {0, 2, 4, 6};
	double ax = fabs(x);
	if (ax == 0) {
		memcpy(out, signbit(x) ? "-0.0" : "0.0", signbit(x) ? 5 : 4);
		return signbit(x) ? 4 : 3;
	}
	if (ax >= 1e-4 && ax < 1e13) {
		for (int k = 0; k < 4; k++) {
			double scaled = ax * scale[k];
			if (scaled >= 1e15)
				break;
			double r = floor(scaled + 0.5);
			if (r / scale[k] != ax)
				continue;
			uint64_t n = (uint64_t)r, s = (uint64_t)scale[k];
			size_t len = 0;
			if (x < 0)
				out[len++] = '-';
			len += fmt_u64(out + len, n / s);
			out[len++] = '.';
			uint64_t frac = n % s;
			if (frac == 0) {
				out[len++] = '0';
			} else {
				int digits = places[k];
				while (frac % 10 == 0) {
					frac /= 10;
					digits--;
				}
				for (int i = digits - 1; i >= 0; i--) {
					out[len + (size_t)i] = (char)('0' + frac % 10);
					frac /= 10;
				}
				len += (size_t)digits;
			}
			out[len] = '\0';
			return len;
		}
	}
	return fmt_real_printf(out, size, x);
}

static int put_string(tg_buf *b, const char *s, size_t n)
{
	/* worst case every byte becomes \u00XX */
	if (tg_buf_reserve(b, n * 6 + 2))
		return TG_ENOMEM;
	char *o = b->p + b->len;
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c;
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '\b': *o++ = 'b'; break;
		case '\f': *o++ = 'f'; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default: {
			static const char hex[] = "0123456789ABCDEF";
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
		}
	}
	*o++ = '"';
	b->len = (size_t)(o - b->p);
	return 0;
}

static int write_value(tg_buf *b, const json_t *v, int depth)
{
	char num[64];
	if (depth > MAX_DEPTH)
		return TG_EINVAL;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		int rc = tg_buf_put(b, "{", 1);
		const char *key;
		size_t klen;
		json_t *m;
		int first = 1;
		/* json_object_foreach wants a non-const object; iterating does not modify it */
		json_object_keylen_foreach((json_t *)v, key, klen, m) {
			if (rc || (!first && (rc = tg_buf_put(b, ",", 1))) || (rc = put_string(b, key, klen)) ||
			    (rc = tg_buf_put(b, ":", 1)) || (rc = write_value(b, m, depth + 1)))
				return rc ? rc : TG_EINVAL;
			first = 0;
		}
		return rc ? rc : tg_buf_put(b, "}", 1);
	}
	case JSON_ARRAY: {
		int rc = tg_buf_put(b, "[", 1);
		for (size_t i = 0; !rc && i < json_array_size(v); i++) {
			if (i && (rc = tg_buf_put(b, ",", 1)))
				break;
			rc = write_value(b, json_array_get(v, i), depth + 1);
		}
		return rc ? rc : tg_buf_put(b, "]", 1);
	}
	case JSON_STRING:
		return put_string(b, json_string_value(v), json_string_length(v));
	case JSON_INTEGER: {
		json_int_t i = json_integer_value(v);
		size_t n = 0;
		if (i < 0)
			num[n++] = '-';
		n += fmt_u64(num + n, i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i);
		return tg_buf_put(b, num, n);
	}
	case JSON_REAL: {
		size_t n = fmt_real(num, sizeof num, json_real_value(v));
		return n ? tg_buf_put(b, num, n) : TG_EINVAL;
	}
	case JSON_TRUE:
		return tg_buf_put(b, "true", 4);
	case JSON_FALSE:
		return tg_buf_put(b, "false", 5);
	case JSON_NULL:
		return tg_buf_put(b, "null", 4);
	default:
		return TG_EINVAL;
	}
}

int jsonout_write(tg_buf *b, const json_t *v)
{
	if (!b || !v)
		return TG_EINVAL;
	size_t start = b->len;
	int rc = write_value(b, v, 0);
	if (rc) {
		b->len = start;
		if (b->p)
			b->p[start] = '\0';
		return rc;
	}
	b->p[b->len] = '\0';
	return 0;
}

char *jsonout_dumps(const json_t *v)
{
	tg_buf b = {0};
	if (jsonout_write(&b, v)) {
		tg_buf_free(&b);
		return NULL;
	}
	return b.p; /* the buffer's memory, handed to the caller */
}
