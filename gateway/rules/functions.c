/*
 * functions.c — the built-in SQL functions and the name table the parser resolves calls
 * against.
 *
 * Each implementation receives already-evaluated arguments and applies the argument
 * conversions of its documented type table (numeric strings become Decimal, other values
 * are converted to String with the standard conversion, wrong types give Undefined).
 * Results that are strings live in the context arena; JSON built here (decode, concat of
 * arrays, registry data) is registered with the context. Functions that need an AWS
 * service are in the table only so the parser can refuse them by name with "not supported
 * at the edge". Regex functions use the pattern compiled at load when it was a literal,
 * and a pcre2 match limit so a pathological pattern cannot stall the ingest thread.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "rules/rules_int.h"

#define F(name) static void fn_##name(rules_ctx *c, const rules_node *n, const rules_val *a, int argc, rules_val *o)

static void set_int(rules_val *o, int64_t i)
{
	o->t = RV_INT;
	o->u.i = i;
}

static void set_dec(rules_val *o, double d)
{
	if (isnan(d) || isinf(d)) {
		o->t = RV_UNDEF; /* imaginary / out of range results are Undefined */
		return;
	}
	o->t = RV_DEC;
	o->u.d = d;
}

static void set_bool(rules_val *o, int b)
{
	o->t = RV_BOOL;
	o->u.b = b;
}

static char *arena_copy(rules_ctx *c, const char *p, size_t n)
{
	char *s = rules_ctx_alloc(c, n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static void set_str(rules_ctx *c, rules_val *o, const char *p, size_t n)
{
	char *s = arena_copy(c, p, n);
	if (s)
		rules_val_str(o, s, n);
}

/* Int conversion for bit functions, pads, chr, substring: Decimal/String rounded down. */
static int to_int_floor(const rules_val *v, int64_t *i)
{
	double d;
	if (v->t == RV_INT) {
		*i = v->u.i;
		return 0;
	}
	if (v->t == RV_DEC || v->t == RV_STR) {
		if (rules_to_dec(v, &d) < 0 || isnan(d))
			return -1;
		d = floor(d);
		if (d > 9.2e18)
			*i = INT64_MAX;
		else if (d < -9.2e18)
			*i = INT64_MIN;
		else
			*i = (int64_t)d;
		return 0;
	}
	return -1;
}

/* The standard conversion to Int (iot-sql-data-types.md): a Decimal is rounded to the
 * nearest Int, a String is parsed as a Decimal and truncated. */
static int to_int_std(const rules_val *v, int64_t *i)
{
	double d;
	if (v->t == RV_INT) {
		*i = v->u.i;
		return 0;
	}
	if ((v->t != RV_DEC && v->t != RV_STR) || rules_to_dec(v, &d) < 0 || isnan(d))
		return -1;
	d = v->t == RV_DEC ? round(d) : trunc(d);
	*i = d > 9.2e18 ? INT64_MAX : d < -9.2e18 ? INT64_MIN : (int64_t)d;
	return 0;
}

static int str_arg(rules_ctx *c, const rules_val *v, const char **p, size_t *n)
{
	return rules_to_str(c, v, p, n);
}

/* ---- math -------------------------------------------------------------------------- */
static void math1(const rules_val *a, rules_val *o, double (*f)(double))
{
	double d;
	if (rules_to_dec(a, &d) < 0)
		return;
	set_dec(o, f(d));
}

#define MATH1(name, cf)                                                                                  \
	F(name)                                                                                          \
	{                                                                                                \
		math1(&a[0], o, cf);                                                                     \
	}
MATH1(acos, acos)
MATH1(asin, asin)
MATH1(atan, atan)
MATH1(cos, cos)
MATH1(cosh, cosh)
MATH1(exp, exp)
MATH1(ln, log)
MATH1(log, log10)
MATH1(sin, sin)
MATH1(sinh, sinh)
MATH1(sqrt, sqrt)
MATH1(tan, tan)
MATH1(tanh, tanh)

F(atan2)
{
	double y, x;
	if (rules_to_dec(&a[0], &y) == 0 && rules_to_dec(&a[1], &x) == 0)
		set_dec(o, atan2(y, x));
}

F(power)
{
	double x, y;
	if (rules_to_dec(&a[0], &x) == 0 && rules_to_dec(&a[1], &y) == 0)
		set_dec(o, pow(x, y));
}

F(abs)
{
	if (a[0].t == RV_INT) {
		if (a[0].u.i == INT64_MIN)
			set_dec(o, 9.223372036854775808e18);
		else
			set_int(o, a[0].u.i < 0 ? -a[0].u.i : a[0].u.i);
		return;
	}
	double d;
	if (rules_to_dec(&a[0], &d) == 0)
		set_dec(o, fabs(d));
}

static void round_fn(const rules_val *a, rules_val *o, double (*f)(double))
{
	if (a->t == RV_INT) {
		*o = *a;
		return;
	}
	double d;
	if (rules_to_dec(a, &d) < 0)
		return;
	d = f(d);
	if (fabs(d) < 9.2e18)
		set_int(o, (int64_t)d);
	else
		set_dec(o, d);
}

F(ceil) { round_fn(&a[0], o, ceil); }
F(floor) { round_fn(&a[0], o, floor); }
F(round) { round_fn(&a[0], o, round); } /* halves away from zero: round(-1.5) = -2 */

F(sign)
{
	double d;
	if (a[0].t == RV_INT)
		set_int(o, (a[0].u.i > 0) - (a[0].u.i < 0));
	else if (rules_to_dec(&a[0], &d) == 0 && !isnan(d))
		set_int(o, (d > 0) - (d < 0));
}

F(mod)
{
	rules_val x, y;
	if (rules_to_num(&a[0], &x) < 0 || rules_to_num(&a[1], &y) < 0)
		return;
	if (x.t == RV_INT && y.t == RV_INT) {
		if (y.u.i == 0 || (x.u.i == INT64_MIN && y.u.i == -1))
			return;
		set_int(o, x.u.i % y.u.i);
		return;
	}
	double dx = x.t == RV_INT ? (double)x.u.i : x.u.d, dy = y.t == RV_INT ? (double)y.u.i : y.u.d;
	if (dy != 0)
		set_dec(o, fmod(dx, dy));
}

F(trunc)
{
	if (a[0].t == RV_INT && a[1].t == RV_INT) {
		*o = a[0];
		return;
	}
	double d;
	int64_t places;
	if (rules_to_dec(&a[0], &d) < 0 || (a[1].t != RV_INT && a[1].t != RV_DEC) || to_int_floor(&a[1], &places) < 0)
		return;
	if (places < 0)
		places = 0;
	if (places > 34)
		places = 34;
	if (places > 15) {
		set_dec(o, d); /* beyond double precision: nothing to cut */
		return;
	}
	/* "Trailing zeroes are stripped from the result" (trunc(2.00, 5) = 2), so a whole
	 * result has no decimal places left and is written as the Int AWS's examples show */
	double f = pow(10, (double)places);
	double t = trunc(d * f);
	/* 2.3 * 10 is 22.999999999999996 in binary: step to the next integer when that one,
	 * scaled back, is still not beyond d (so the decimal digits of d are kept exactly) */
	if (d >= 0 && (t + 1) / f <= d)
		t += 1;
	else if (d < 0 && (t - 1) / f >= d)
		t -= 1;
	double r = t / f;
	if (r == trunc(r) && fabs(r) < 9.007199254740992e15)
		set_int(o, (int64_t)r);
	else
		set_dec(o, r);
}

F(nanvl)
{
	if (a[0].t == RV_UNDEF || a[0].t == RV_NULL || (a[0].t == RV_DEC && isnan(a[0].u.d)))
		*o = a[1];
	else
		*o = a[0];
}

F(rand)
{
	/* xorshift64*: quality is plenty for sampling; state lives in the context */
	uint64_t x = c->rand_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rand_state = x;
	set_dec(o, (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0);
}

static void bit2(const rules_val *a, rules_val *o, int op)
{
	int64_t x, y;
	if (to_int_floor(&a[0], &x) < 0 || to_int_floor(&a[1], &y) < 0)
		return;
	set_int(o, op == 0 ? (x & y) : op == 1 ? (x | y) : (x ^ y));
}

F(bitand) { bit2(a, o, 0); }
F(bitor) { bit2(a, o, 1); }
F(bitxor) { bit2(a, o, 2); }
F(bitnot)
{
	int64_t x;
	if (to_int_floor(&a[0], &x) == 0)
		set_int(o, ~x);
}

/* ---- strings ------------------------------------------------------------------------ */
static size_t utf8_len(const char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)p[i] & 0xC0) != 0x80)
			k++;
	return k;
}

/* byte offset of character index ci (clamped to n) */
static size_t utf8_off(const char *p, size_t n, size_t ci)
{
	size_t i = 0, k = 0;
	while (i < n) {
		if (((unsigned char)p[i] & 0xC0) != 0x80) {
			if (k == ci)
				return i;
			k++;
		}
		i++;
	}
	return n;
}

F(length)
{
	const char *p;
	size_t len;
	if (str_arg(c, &a[0], &p, &len) == 0)
		set_int(o, (int64_t)utf8_len(p, len));
}

F(numbytes)
{
	const char *p;
	size_t len;
	if (str_arg(c, &a[0], &p, &len) == 0)
		set_int(o, (int64_t)len);
}

static void change_case(rules_ctx *c, const rules_val *a, rules_val *o, int up)
{
	const char *p;
	size_t len;
	if (str_arg(c, a, &p, &len) < 0)
		return;
	char *s = arena_copy(c, p, len);
	if (!s)
		return;
	for (size_t i = 0; i < len; i++)
		s[i] = (char)(up ? toupper((unsigned char)s[i]) : tolower((unsigned char)s[i]));
	rules_val_str(o, s, len);
}

F(lower) { change_case(c, &a[0], o, 0); }
F(upper) { change_case(c, &a[0], o, 1); }

static void pad(rules_ctx *c, const rules_val *a, rules_val *o, int left)
{
	const char *p;
	size_t len;
	int64_t k;
	if (str_arg(c, &a[0], &p, &len) < 0)
		return;
	if (a[1].t != RV_INT && a[1].t != RV_DEC && a[1].t != RV_STR)
		return;
	if (to_int_floor(&a[1], &k) < 0)
		return;
	if (k < 0)
		k = 0;
	if (k > 1000)
		k = 1000;
	char *s = rules_ctx_alloc(c, len + (size_t)k + 1);
	if (!s)
		return;
	if (left) {
		memset(s, ' ', (size_t)k);
		memcpy(s + k, p, len);
	} else {
		memcpy(s, p, len);
		memset(s + len, ' ', (size_t)k);
	}
	s[len + (size_t)k] = '\0';
	rules_val_str(o, s, len + (size_t)k);
}

F(lpad) { pad(c, a, o, 1); }
F(rpad) { pad(c, a, o, 0); }

static int is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static void trim(rules_ctx *c, const rules_val *a, rules_val *o, int l, int r)
{
	const char *p;
	size_t len;
	if (str_arg(c, a, &p, &len) < 0)
		return;
	if (l)
		while (len && is_ws(*p)) {
			p++;
			len--;
		}
	if (r)
		while (len && is_ws(p[len - 1]))
			len--;
	rules_val_str(o, p, len); /* a view into the same string: no copy needed */
}

F(ltrim) { trim(c, &a[0], o, 1, 0); }
F(rtrim) { trim(c, &a[0], o, 0, 1); }
F(trim) { trim(c, &a[0], o, 1, 1); }

F(substring)
{
	const char *p;
	size_t len;
	int64_t s, e;
	if (str_arg(c, &a[0], &p, &len) < 0 || to_int_floor(&a[1], &s) < 0)
		return;
	int64_t clen = (int64_t)utf8_len(p, len);
	if (argc > 2) {
		if (to_int_floor(&a[2], &e) < 0)
			return;
	} else {
		e = clen;
	}
	if (s < 0)
		s = 0;
	if (s > clen)
		s = clen;
	if (e < 0)
		e = 0;
	if (e > clen)
		e = clen;
	if (s >= e) {
		rules_val_str(o, "", 0);
		return;
	}
	size_t bs = utf8_off(p, len, (size_t)s), be = utf8_off(p, len, (size_t)e);
	rules_val_str(o, p + bs, be - bs);
}

static const char *memmem_s(const char *h, size_t hn, const char *nd, size_t nn)
{
	if (nn == 0)
		return h;
	if (nn > hn)
		return NULL;
	return memmem(h, hn, nd, nn);
}

F(indexof)
{
	const char *h, *nd;
	size_t hn, nn;
	if (str_arg(c, &a[0], &h, &hn) < 0 || str_arg(c, &a[1], &nd, &nn) < 0)
		return;
	const char *f = memmem_s(h, hn, nd, nn);
	set_int(o, f ? (int64_t)utf8_len(h, (size_t)(f - h)) : -1);
}

F(startswith)
{
	const char *h, *nd;
	size_t hn, nn;
	if (str_arg(c, &a[0], &h, &hn) < 0 || str_arg(c, &a[1], &nd, &nn) < 0)
		return;
	set_bool(o, nn <= hn && memcmp(h, nd, nn) == 0);
}

F(endswith)
{
	const char *h, *nd;
	size_t hn, nn;
	if (str_arg(c, &a[0], &h, &hn) < 0 || str_arg(c, &a[1], &nd, &nn) < 0)
		return;
	set_bool(o, nn <= hn && memcmp(h + hn - nn, nd, nn) == 0);
}

F(replace)
{
	const char *s, *f, *r;
	size_t sn, fn, rn;
	if (str_arg(c, &a[0], &s, &sn) < 0 || str_arg(c, &a[1], &f, &fn) < 0 || str_arg(c, &a[2], &r, &rn) < 0)
		return;
	size_t count = 0;
	if (fn == 0) {
		count = utf8_len(s, sn) + 1; /* like Java: the replacement goes between every char */
	} else {
		for (const char *q = s; (q = memmem_s(q, sn - (size_t)(q - s), f, fn)); q += fn)
			count++;
	}
	size_t outn = sn + count * rn - (fn ? count * fn : 0);
	char *out = rules_ctx_alloc(c, outn + 1), *w = out;
	if (!out)
		return;
	if (fn == 0) {
		for (size_t i = 0; i < sn; i++) {
			if (((unsigned char)s[i] & 0xC0) != 0x80) {
				memcpy(w, r, rn);
				w += rn;
			}
			*w++ = s[i];
		}
		memcpy(w, r, rn);
		w += rn;
	} else {
		const char *q = s, *hit;
		while ((hit = memmem_s(q, sn - (size_t)(q - s), f, fn))) {
			memcpy(w, q, (size_t)(hit - q));
			w += hit - q;
			memcpy(w, r, rn);
			w += rn;
			q = hit + fn;
		}
		memcpy(w, q, sn - (size_t)(q - s));
		w += sn - (size_t)(q - s);
	}
	*w = '\0';
	rules_val_str(o, out, (size_t)(w - out));
}

F(chr)
{
	int64_t k;
	if (to_int_floor(&a[0], &k) < 0 || k < 0 || k > 127)
		return;
	char ch = (char)k;
	set_str(c, o, &ch, 1);
}

F(concat)
{
	if (argc == 0)
		return;
	int any_arr = 0;
	for (int i = 0; i < argc; i++)
		any_arr |= a[i].t == RV_ARR;
	if (any_arr) {
		if (argc == 1) {
			*o = a[0];
			return;
		}
		json_t *arr = rules_ctx_keep(c, json_array());
		if (!arr)
			return;
		for (int i = 0; i < argc; i++) {
			if (a[i].t == RV_ARR) {
				json_array_extend(arr, a[i].u.j);
			} else {
				json_t *j = rules_val_to_json(&a[i]);
				if (j)
					json_array_append_new(arr, j);
			}
		}
		o->t = RV_ARR;
		o->u.j = arr;
		return;
	}
	size_t total = 0;
	const char *ps[RULES_MAX_ARGS];
	size_t ns[RULES_MAX_ARGS];
	for (int i = 0; i < argc; i++) {
		if (str_arg(c, &a[i], &ps[i], &ns[i]) < 0)
			return;
		total += ns[i];
	}
	char *s = rules_ctx_alloc(c, total + 1), *w = s;
	if (!s)
		return;
	for (int i = 0; i < argc; i++) {
		memcpy(w, ps[i], ns[i]);
		w += ns[i];
	}
	*w = '\0';
	rules_val_str(o, s, total);
}

/* ---- regular expressions -------------------------------------------------------------- */
static pcre2_code *regex_for(rules_ctx *c, const rules_node *n, const rules_val *pat, int *owned)
{
	*owned = 0;
	if (n->re)
		return n->re;
	const char *p;
	size_t len;
	if (str_arg(c, pat, &p, &len) < 0)
		return NULL;
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
	if (re)
		*owned = 1;
	return re; /* invalid pattern: NULL, the result is Undefined */
}

static int match_failed(rules_ctx *c, int rc)
{
	if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH)
		return 0;
	c->err = 1;
	PCRE2_UCHAR msg[120];
	pcre2_get_error_message(rc, msg, sizeof msg);
	snprintf(c->errmsg, sizeof c->errmsg, "regular expression: %s", (const char *)msg);
	return 1;
}

F(regexp_matches)
{
	const char *s;
	size_t sn;
	int owned;
	if (str_arg(c, &a[0], &s, &sn) < 0)
		return;
	pcre2_code *re = regex_for(c, n, &a[1], &owned);
	if (!re)
		return;
	int rc = pcre2_match(re, (PCRE2_SPTR)s, sn, 0, 0, c->md, c->mctx);
	if (!match_failed(c, rc))
		set_bool(o, rc >= 0);
	if (owned)
		pcre2_code_free(re);
}

F(regexp_substr)
{
	const char *s;
	size_t sn;
	int owned;
	if (str_arg(c, &a[0], &s, &sn) < 0)
		return;
	pcre2_code *re = regex_for(c, n, &a[1], &owned);
	if (!re)
		return;
	int rc = pcre2_match(re, (PCRE2_SPTR)s, sn, 0, 0, c->md, c->mctx);
	if (!match_failed(c, rc)) {
		if (rc >= 0) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
			rules_val_str(o, s + ov[0], ov[1] - ov[0]);
		} else {
			rules_val_str(o, "", 0);
		}
	}
	if (owned)
		pcre2_code_free(re);
}

F(regexp_replace)
{
	const char *s, *r;
	size_t sn, rn;
	int owned;
	if (str_arg(c, &a[0], &s, &sn) < 0 || str_arg(c, &a[2], &r, &rn) < 0)
		return;
	pcre2_code *re = regex_for(c, n, &a[1], &owned);
	if (!re)
		return;
	PCRE2_SIZE outn = sn * 2 + rn + 64;
	for (int attempt = 0; attempt < 2; attempt++) {
		char *out = rules_ctx_alloc(c, outn + 1);
		if (!out)
			break;
		PCRE2_SIZE len = outn;
		int rc = pcre2_substitute(re, (PCRE2_SPTR)s, sn, 0,
					  PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, c->md, c->mctx,
					  (PCRE2_SPTR)r, rn, (PCRE2_UCHAR *)out, &len);
		if (rc == PCRE2_ERROR_NOMEMORY && attempt == 0) {
			outn = len;
			continue;
		}
		if (rc >= 0) {
			rules_val_str(o, out, len);
		} else if (rc != PCRE2_ERROR_BADREPLACEMENT && rc != PCRE2_ERROR_BADREPESCAPE &&
			   rc != PCRE2_ERROR_BADSUBSTITUTION && rc != PCRE2_ERROR_UNKNOWN_ESCAPE &&
			   rc != PCRE2_ERROR_REPMISSINGBRACE && rc != PCRE2_ERROR_NOSUBSTRING) {
			match_failed(c, rc);
		}
		break; /* an invalid replacement string gives Undefined */
	}
	if (owned)
		pcre2_code_free(re);
}

/* ---- hashes and encodings ---------------------------------------------------------------- */
static void hash(rules_ctx *c, const rules_val *a, rules_val *o, const EVP_MD *md)
{
	const char *p;
	size_t len;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;
	if (!md || str_arg(c, a, &p, &len) < 0)
		return;
	if (!EVP_Digest(p, len, dig, &dl, md, NULL))
		return;
	char *hex = rules_ctx_alloc(c, dl * 2 + 1);
	if (!hex)
		return;
	static const char digits[] = "0123456789abcdef";
	for (unsigned i = 0; i < dl; i++) {
		hex[2 * i] = digits[dig[i] >> 4];
		hex[2 * i + 1] = digits[dig[i] & 15];
	}
	hex[dl * 2] = '\0';
	rules_val_str(o, hex, dl * 2);
}

F(md5) { hash(c, &a[0], o, EVP_md5()); }
F(sha1) { hash(c, &a[0], o, EVP_sha1()); }
F(sha224) { hash(c, &a[0], o, EVP_sha224()); }
F(sha256) { hash(c, &a[0], o, EVP_sha256()); }
F(sha384) { hash(c, &a[0], o, EVP_sha384()); }
F(sha512) { hash(c, &a[0], o, EVP_sha512()); }

static int scheme_is_base64(rules_ctx *c, const rules_val *v)
{
	return v->t == RV_STR && v->u.s.n == 6 && strncasecmp(v->u.s.p, "base64", 6) == 0;
}

F(encode)
{
	const char *p;
	size_t len;
	if (!scheme_is_base64(c, &a[1]))
		return;
	if (n->a[0]->k == RN_STAR && c->m && c->m->payload) {
		p = c->m->payload; /* `*`: the raw payload bytes, JSON or not */
		len = c->m->payloadlen;
	} else if (str_arg(c, &a[0], &p, &len) < 0) {
		return;
	}
	if (len > (1u << 30))
		return;
	char *out = rules_ctx_alloc(c, 4 * ((len + 2) / 3) + 1);
	if (!out)
		return;
	int k = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)p, (int)len);
	rules_val_str(o, out, (size_t)k);
}

F(decode)
{
	const char *p;
	size_t len;
	if (!scheme_is_base64(c, &a[1]))
		return;
	if (str_arg(c, &a[0], &p, &len) < 0)
		return;
	o->t = RV_NULL; /* documented: a value that cannot be decoded gives Null */
	while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		len--;
	if (len % 4 != 0 || len > (1u << 30))
		return;
	unsigned char *out = rules_ctx_alloc(c, len / 4 * 3 + 1);
	if (!out)
		return;
	int k = EVP_DecodeBlock(out, (const unsigned char *)p, (int)len);
	if (k < 0)
		return;
	if (len >= 1 && p[len - 1] == '=')
		k--;
	if (len >= 2 && p[len - 2] == '=')
		k--;
	out[k] = '\0';
	json_t *j = json_loadb((const char *)out, (size_t)k, JSON_DECODE_ANY, NULL);
	if (j) {
		rules_ctx_keep(c, j);
		rules_val_from_json(j, o);
		return;
	}
	rules_val_str(o, (const char *)out, (size_t)k);
}

F(newuuid)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof b) != 1)
		return;
	b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
	char *s = rules_ctx_alloc(c, 37);
	if (!s)
		return;
	snprintf(s, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
		 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	rules_val_str(o, s, 36);
}

/* ---- message context ---------------------------------------------------------------------- */
static int64_t now_ms_of(const rules_ctx *c)
{
	if (c->m && c->m->received_ms > 0)
		return c->m->received_ms;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

F(timestamp) { set_int(o, now_ms_of(c)); }

F(topic)
{
	const char *t = c->m ? c->m->topic : NULL;
	if (!t)
		return;
	if (argc == 0) {
		rules_val_str(o, t, strlen(t));
		return;
	}
	int64_t k;
	if (to_int_std(&a[0], &k) < 0 || k < 1)
		return;
	const char *s = t;
	for (int64_t i = 1; i < k; i++) {
		s = strchr(s, '/');
		if (!s)
			return;
		s++;
	}
	const char *e = strchr(s, '/');
	rules_val_str(o, s, e ? (size_t)(e - s) : strlen(s));
}

static void ident(rules_val *o, const char *a, const char *b)
{
	const char *s = a && *a ? a : b && *b ? b : "n/a";
	rules_val_str(o, s, strlen(s));
}

F(clientid) { ident(o, c->m ? c->m->client_id : NULL, c->m ? c->m->thing : NULL); }
F(principal) { ident(o, c->m ? c->m->principal : NULL, c->m ? c->m->thing : NULL); }
F(sql_version) { rules_val_str(o, "2016-03-23", 10); }

F(isnull) { set_bool(o, a[0].t == RV_NULL); }
F(isundefined) { set_bool(o, a[0].t == RV_UNDEF); }

F(get)
{
	int64_t i;
	if (a[0].t == RV_ARR) {
		if (to_int_std(&a[1], &i) < 0 || i < 0 || (size_t)i >= json_array_size(a[0].u.j))
			return;
		rules_val_from_json(json_array_get(a[0].u.j, (size_t)i), o);
	} else if (a[0].t == RV_STR) {
		if (to_int_std(&a[1], &i) < 0 || i < 0)
			return;
		size_t cl = utf8_len(a[0].u.s.p, a[0].u.s.n);
		if ((size_t)i >= cl)
			return;
		size_t b = utf8_off(a[0].u.s.p, a[0].u.s.n, (size_t)i), e = utf8_off(a[0].u.s.p, a[0].u.s.n, (size_t)i + 1);
		rules_val_str(o, a[0].u.s.p + b, e - b);
	} else if (a[0].t == RV_OBJ && a[1].t == RV_STR) {
		char *k = arena_copy(c, a[1].u.s.p, a[1].u.s.n);
		if (k)
			rules_val_from_json(json_object_get(a[0].u.j, k), o);
	}
}

F(get_or_default)
{
	*o = (a[0].t == RV_UNDEF || a[0].t == RV_NULL) ? a[1] : a[0];
}

F(get_mqtt_property)
{
	const mosquitto_property *props = (const mosquitto_property *)(c->m ? c->m->props : NULL);
	const char *name;
	size_t nl;
	if (!props || a[0].t != RV_STR)
		return;
	name = a[0].u.s.p;
	nl = a[0].u.s.n;
#define IS(s) (nl == sizeof(s) - 1 && strncasecmp(name, s, nl) == 0)
	if (IS("format_indicator") || IS("payload_format_indicator")) {
		uint8_t v;
		if (mosquitto_property_read_byte(props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &v, false))
			rules_val_str(o, v ? "UTF8_DATA" : "UNSPECIFIED_BYTES", v ? 9 : 17);
	} else if (IS("content_type") || IS("response_topic")) {
		char *v = NULL;
		int id = IS("content_type") ? MQTT_PROP_CONTENT_TYPE : MQTT_PROP_RESPONSE_TOPIC;
		if (mosquitto_property_read_string(props, id, &v, false) && v)
			set_str(c, o, v, strlen(v));
		free(v);
	} else if (IS("correlation_data")) {
		void *v = NULL;
		uint16_t len = 0;
		if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &v, &len, false) && v) {
			char *out = rules_ctx_alloc(c, 4 * (((size_t)len + 2) / 3) + 1);
			if (out) {
				int k = EVP_EncodeBlock((unsigned char *)out, v, len);
				rules_val_str(o, out, (size_t)k);
			}
		}
		free(v);
	} else if (IS("message_expiry")) {
		uint32_t v;
		if (mosquitto_property_read_int32(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &v, false))
			set_int(o, v);
	}
#undef IS
}

F(get_user_properties)
{
	const mosquitto_property *props = (const mosquitto_property *)(c->m ? c->m->props : NULL);
	if (!props)
		return;
	if (argc == 1 && a[0].t != RV_STR)
		return;
	json_t *arr = NULL;
	const mosquitto_property *p = props;
	int first = 1;
	for (;;) {
		char *k = NULL, *v = NULL;
		p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, !first);
		first = 0;
		if (!p)
			break;
		if (argc == 0 || (strlen(k) == a[0].u.s.n && memcmp(k, a[0].u.s.p, a[0].u.s.n) == 0)) {
			if (!arr)
				arr = rules_ctx_keep(c, json_array());
			if (arr) {
				if (argc == 0)
					json_array_append_new(arr, json_pack("{ss}", k, v));
				else
					json_array_append_new(arr, json_string(v));
			}
		}
		free(k);
		free(v);
	}
	if (arr) {
		o->t = RV_ARR;
		o->u.j = arr;
	}
}

F(get_registry_data)
{
	const char *p;
	size_t len;
	if (!c->env || !c->env->registry_lookup || str_arg(c, &a[0], &p, &len) < 0)
		return;
	char *thing = arena_copy(c, p, len);
	if (!thing)
		return;
	json_t *j = c->env->registry_lookup(c->env->registry_ud, thing);
	if (!j)
		return;
	rules_ctx_keep(c, j);
	rules_val_from_json(j, o);
}

/* ---- time ---------------------------------------------------------------------------------- */
static const char *month_names[] = {"January", "February", "March",     "April",   "May",      "June",
				    "July",    "August",   "September", "October", "November", "December"};
static const char *day_names[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};

/* days since 1970-01-01 of a civil date (proleptic Gregorian) */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* "UTC", "GMT", "Z", "+01:00", "-0500", "UTC+01:00", "Etc/UTC": offset in seconds */
static int parse_zone(const char *z, size_t n, int *off)
{
	if ((n == 3 && (strncasecmp(z, "UTC", 3) == 0 || strncasecmp(z, "GMT", 3) == 0)) ||
	    (n == 1 && (z[0] == 'Z' || z[0] == 'z')) || (n == 7 && strncasecmp(z, "Etc/UTC", 7) == 0) ||
	    (n == 7 && strncasecmp(z, "Etc/GMT", 7) == 0)) {
		*off = 0;
		return 0;
	}
	if (n > 3 && (strncasecmp(z, "UTC", 3) == 0 || strncasecmp(z, "GMT", 3) == 0)) {
		z += 3;
		n -= 3;
	}
	if (n < 3 || (z[0] != '+' && z[0] != '-'))
		return -1;
	int sign = z[0] == '-' ? -1 : 1;
	int h = 0, m = 0;
	size_t i = 1;
	if (!isdigit((unsigned char)z[i]) || !isdigit((unsigned char)z[i + 1]))
		return -1;
	h = (z[i] - '0') * 10 + (z[i + 1] - '0');
	i += 2;
	if (i < n && z[i] == ':')
		i++;
	if (i + 2 <= n && isdigit((unsigned char)z[i]) && isdigit((unsigned char)z[i + 1])) {
		m = (z[i] - '0') * 10 + (z[i + 1] - '0');
		i += 2;
	}
	if (i != n || h > 18 || m > 59)
		return -1;
	*off = sign * (h * 3600 + m * 60);
	return 0;
}

typedef struct tbuf {
	char *p;
	size_t n, cap;
	int overflow;
} tbuf;

static void tb_put(tbuf *b, const char *s, size_t n)
{
	if (b->n + n >= b->cap) {
		b->overflow = 1; /* the result is Undefined rather than cut short */
		n = b->cap - b->n - 1;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

static void tb_num(tbuf *b, int64_t v, int width)
{
	char t[32];
	int k = snprintf(t, sizeof t, "%0*" PRId64, width, v);
	tb_put(b, t, (size_t)k);
}

/* Joda-Time pattern subset: G y M d H h m s S a E D z Z and 'quoted' text. */
F(parse_time)
{
	const char *pat, *tz = "UTC";
	size_t pn, tzn = 3;
	double msd;
	int off = 0;
	if (str_arg(c, &a[0], &pat, &pn) < 0 || rules_to_dec(&a[1], &msd) < 0 || !isfinite(msd))
		return;
	if (argc > 2 && str_arg(c, &a[2], &tz, &tzn) < 0)
		return;
	if (parse_zone(tz, tzn, &off) < 0)
		return; /* named zones other than UTC are not supported at the edge */
	int64_t ms = (int64_t)floor(msd) + (int64_t)off * 1000;
	int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
	int msec = (int)(ms - secs * 1000);
	int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
	int sod = (int)(secs - days * 86400);
	/* civil from days */
	int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	int wday = (int)(((days % 7) + 7 + 4) % 7);
	int64_t yday = days - days_from_civil(y, 1, 1) + 1;
	char *buf = rules_ctx_alloc(c, 256);
	if (!buf)
		return;
	tbuf b = {buf, 0, 256, 0};
	for (size_t i = 0; i < pn;) {
		char ch = pat[i];
		size_t k = i;
		if (ch == '\'') {
			size_t j = i + 1;
			if (j < pn && pat[j] == '\'') {
				tb_put(&b, "'", 1);
				i = j + 1;
				continue;
			}
			while (j < pn && pat[j] != '\'')
				j++;
			tb_put(&b, pat + i + 1, j - i - 1);
			i = j + 1;
			continue;
		}
		while (k < pn && pat[k] == ch)
			k++;
		int cnt = (int)(k - i);
		i = k;
		switch (ch) {
		case 'y':
		case 'Y':
		case 'u': tb_num(&b, cnt == 2 ? y % 100 : y, cnt == 2 ? 2 : cnt); break;
		case 'M':
			if (cnt >= 4)
				tb_put(&b, month_names[m - 1], strlen(month_names[m - 1]));
			else if (cnt == 3)
				tb_put(&b, month_names[m - 1], 3);
			else
				tb_num(&b, m, cnt);
			break;
		case 'd': tb_num(&b, d, cnt); break;
		case 'D': tb_num(&b, yday, cnt); break;
		case 'H': tb_num(&b, sod / 3600, cnt); break;
		case 'h': tb_num(&b, (sod / 3600) % 12 == 0 ? 12 : (sod / 3600) % 12, cnt); break;
		case 'm': tb_num(&b, (sod / 60) % 60, cnt); break;
		case 's': tb_num(&b, sod % 60, cnt); break;
		case 'S': {
			char t[8];
			snprintf(t, sizeof t, "%03d", msec);
			for (int q = 0; q < cnt; q++)
				tb_put(&b, q < 3 ? &t[q] : "0", 1);
			break;
		}
		case 'a': tb_put(&b, sod < 43200 ? "AM" : "PM", 2); break;
		case 'E':
			if (cnt >= 4)
				tb_put(&b, day_names[wday], strlen(day_names[wday]));
			else
				tb_put(&b, day_names[wday], 3);
			break;
		case 'G': tb_put(&b, y > 0 ? "AD" : "BC", 2); break;
		case 'z':
			if (off == 0)
				tb_put(&b, "UTC", 3);
			else
				tb_put(&b, tz, tzn);
			break;
		case 'Z': {
			int ao = off < 0 ? -off : off;
			char t[16];
			snprintf(t, sizeof t, cnt >= 2 ? "%c%02d:%02d" : "%c%02d%02d", off < 0 ? '-' : '+', ao / 3600,
				 (ao / 60) % 60);
			tb_put(&b, t, strlen(t));
			break;
		}
		default:
			if (isalpha((unsigned char)ch))
				return; /* unsupported pattern letter */
			for (int q = 0; q < cnt; q++)
				tb_put(&b, &ch, 1);
		}
	}
	if (b.overflow)
		return;
	buf[b.n] = '\0';
	rules_val_str(o, buf, b.n);
}

static int read_num(const char *s, size_t n, size_t *i, int maxd, int64_t *out)
{
	int64_t v = 0;
	int k = 0;
	while (*i < n && k < maxd && isdigit((unsigned char)s[*i])) {
		v = v * 10 + (s[*i] - '0');
		(*i)++;
		k++;
	}
	if (k == 0)
		return -1;
	*out = v;
	return 0;
}

/* Parse text by a java.time pattern subset (y M d H h m s S a z VV Z X, literals). */
F(time_to_epoch)
{
	const char *s, *pat;
	size_t sn, pn;
	if (str_arg(c, &a[0], &s, &sn) < 0 || str_arg(c, &a[1], &pat, &pn) < 0)
		return;
	int64_t y = 1970, mo = 1, d = 1, h = 0, mi = 0, se = 0, ms = 0;
	int pm = -1, off = 0;
	size_t si = 0;
	for (size_t i = 0; i < pn;) {
		char ch = pat[i];
		if (ch == '\'') {
			size_t j = i + 1;
			while (j < pn && pat[j] != '\'')
				j++;
			size_t ln = j - i - 1;
			if (si + ln > sn || memcmp(s + si, pat + i + 1, ln) != 0)
				return;
			si += ln;
			i = j + 1;
			continue;
		}
		size_t k = i;
		while (k < pn && pat[k] == ch)
			k++;
		int cnt = (int)(k - i);
		i = k;
		int64_t v;
		switch (ch) {
		case 'y':
		case 'u':
			if (read_num(s, sn, &si, cnt == 2 ? 2 : 9, &v) < 0)
				return;
			y = cnt == 2 ? 2000 + v : v;
			break;
		case 'M':
			if (cnt >= 3) {
				int found = 0;
				for (int q = 0; q < 12 && !found; q++) {
					size_t ln = cnt == 3 ? 3 : strlen(month_names[q]);
					if (si + ln <= sn && strncasecmp(s + si, month_names[q], ln) == 0) {
						mo = q + 1;
						si += ln;
						found = 1;
					}
				}
				if (!found)
					return;
			} else if (read_num(s, sn, &si, 2, &mo) < 0) {
				return;
			}
			break;
		case 'd':
			if (read_num(s, sn, &si, 2, &d) < 0)
				return;
			break;
		case 'H':
		case 'h':
			if (read_num(s, sn, &si, 2, &h) < 0)
				return;
			break;
		case 'm':
			if (read_num(s, sn, &si, 2, &mi) < 0)
				return;
			break;
		case 's':
			if (read_num(s, sn, &si, 2, &se) < 0)
				return;
			break;
		case 'S': {
			size_t st = si;
			if (read_num(s, sn, &si, cnt, &v) < 0)
				return;
			for (size_t q = si - st; q < 3; q++)
				v *= 10;
			for (size_t q = si - st; q > 3; q--)
				v /= 10;
			ms = v;
			break;
		}
		case 'a':
			if (si + 2 > sn)
				return;
			pm = strncasecmp(s + si, "PM", 2) == 0;
			si += 2;
			break;
		case 'E': {
			int found = 0;
			for (int q = 0; q < 7 && !found; q++) {
				size_t ln = cnt >= 4 ? strlen(day_names[q]) : 3;
				if (si + ln <= sn && strncasecmp(s + si, day_names[q], ln) == 0) {
					si += ln;
					found = 1;
				}
			}
			if (!found)
				return;
			break;
		}
		case 'z':
		case 'V':
		case 'Z':
		case 'X':
		case 'x': {
			size_t st = si;
			while (si < sn && !isspace((unsigned char)s[si]))
				si++;
			if (parse_zone(s + st, si - st, &off) < 0)
				return;
			break;
		}
		default:
			if (isalpha((unsigned char)ch))
				return;
			for (int q = 0; q < cnt; q++) {
				if (si >= sn || s[si] != ch)
					return;
				si++;
			}
		}
	}
	if (si != sn || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return;
	if (pm == 1 && h < 12)
		h += 12;
	if (pm == 0 && h == 12)
		h = 0;
	int64_t days = days_from_civil(y, mo, d);
	set_int(o, ((days * 86400 + h * 3600 + mi * 60 + se) - off) * 1000 + ms);
}

/* transform('enrichArray', obj, arr): each object element of arr merged with obj's
 * attributes (obj wins on a clash); any other mode gives Undefined. The result is capped
 * at 128 KiB as documented. */
F(transform)
{
	if (a[0].t != RV_STR || a[0].u.s.n != 11 || memcmp(a[0].u.s.p, "enrichArray", 11) != 0 || a[1].t != RV_OBJ ||
	    a[2].t != RV_ARR)
		return;
	json_t *res = rules_ctx_keep(c, json_array());
	if (!res)
		return;
	size_t i;
	json_t *el;
	json_array_foreach(a[2].u.j, i, el)
	{
		if (!json_is_object(el))
			continue;
		json_t *e = json_copy(el);
		if (!e)
			return;
		if (json_object_update(e, a[1].u.j) < 0) {
			json_decref(e);
			return;
		}
		if (json_array_append_new(res, e) < 0) /* steals e even when it fails */
			return;
	}
	if (json_dumpb(res, NULL, 0, JSON_COMPACT) > 128 * 1024)
		return;
	o->t = RV_ARR;
	o->u.j = res;
}

F(unsupported) {}

/* ---- the table ---------------------------------------------------------------------------- */
#define FN(nm, mn, mx) {#nm, mn, mx, fn_##nm, -1, 0}
static const rules_func funcs[] = {
	FN(abs, 1, 1), FN(acos, 1, 1), FN(asin, 1, 1), FN(atan, 1, 1), FN(atan2, 2, 2), FN(bitand, 2, 2),
	FN(bitor, 2, 2), FN(bitxor, 2, 2), FN(bitnot, 1, 1), FN(ceil, 1, 1), FN(chr, 1, 1),
	{"clientid", 0, 0, fn_clientid, -1, 0}, FN(concat, 0, -1), FN(cos, 1, 1), FN(cosh, 1, 1),
	FN(decode, 2, 2), {"encode", 2, 2, fn_encode, -1, RF_STAR_ARG}, FN(endswith, 2, 2), FN(exp, 1, 1),
	FN(floor, 1, 1), FN(get, 2, 2), FN(get_or_default, 2, 2), FN(get_mqtt_property, 1, 1),
	FN(get_user_properties, 0, 1), FN(get_registry_data, 1, 2), FN(indexof, 2, 2),
	{"isnull", 1, 1, fn_isnull, -1, 0}, {"isundefined", 1, 1, fn_isundefined, -1, 0}, FN(length, 1, 1),
	FN(ln, 1, 1), FN(log, 1, 1), FN(lower, 1, 1), FN(lpad, 2, 2), FN(ltrim, 1, 1), FN(md5, 1, 1),
	FN(mod, 2, 2), FN(nanvl, 2, 2), {"newuuid", 0, 0, fn_newuuid, -1, RF_NONDETERMINISTIC},
	FN(numbytes, 1, 1), FN(parse_time, 2, 3), FN(power, 2, 2), FN(principal, 0, 0),
	{"rand", 0, 0, fn_rand, -1, RF_NONDETERMINISTIC}, {"regexp_matches", 2, 2, fn_regexp_matches, 1, 0},
	{"regexp_replace", 3, 3, fn_regexp_replace, 1, 0}, {"regexp_substr", 2, 2, fn_regexp_substr, 1, 0},
	{"remainder", 2, 2, fn_mod, -1, 0}, FN(replace, 3, 3), FN(round, 1, 1), FN(rpad, 2, 2),
	FN(rtrim, 1, 1), FN(sha1, 1, 1), FN(sha224, 1, 1), FN(sha256, 1, 1), FN(sha384, 1, 1),
	FN(sha512, 1, 1), FN(sign, 1, 1), FN(sin, 1, 1), FN(sinh, 1, 1), FN(sql_version, 0, 0),
	FN(sqrt, 1, 1), FN(startswith, 2, 2), FN(substring, 2, 3), FN(tan, 1, 1), FN(tanh, 1, 1),
	FN(time_to_epoch, 2, 2), FN(timestamp, 0, 0), FN(topic, 0, 1), FN(transform, 3, 3), FN(trim, 1, 1), FN(trunc, 2, 2),
	FN(upper, 1, 1),
	/* need an AWS service or account context: refused at load */
	{"aws_lambda", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"get_dynamodb", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"get_secret", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"get_thing_shadow", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"machinelearning_predict", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"accountid", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"traceid", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"md2", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
	{"kinesis", 0, -1, fn_unsupported, -1, RF_UNSUPPORTED},
};

const rules_func *rules_func_lookup(const char *lname)
{
	for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
		if (strcmp(funcs[i].name, lname) == 0)
			return &funcs[i];
	return NULL;
}
