/*
 * eval.c — the evaluator: values, the documented conversions, every operator's type
 * table, CASE, field access, SELECT output building and nested queries.
 *
 * Values are rules_val (see rules_int.h). Numbers are Int (int64) or Decimal (IEEE
 * double: the 34-digit decimal of AWS is not reproduced, see docs/rules-reference.md);
 * Int overflow falls back to Decimal. The rule's SQL version (rules_ctx.ver) decides whether
 * a whole-number Decimal is processed as an Int where values are read from JSON and written
 * to JSON or text: one flag test in those conversions, nowhere else. Undefined propagates
 * as the tables say and is left out of SELECT output. Strings produced during evaluation
 * (conversions, concatenation) live in the context's scratch arena, which is reset per
 * message, so evaluating a rule allocates nothing but the output JSON. WHERE is evaluated
 * through rules_eval_cond(), which may stop an AND early: in a condition "false" and
 * "Undefined" both mean no match, so skipping the right operand cannot change the outcome.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "rules/rules_int.h"

#define ARENA_FIRST (16 * 1024)

/* ---- context ------------------------------------------------------------------------ */
int rules_ctx_init(rules_ctx *c)
{
	memset(c, 0, sizeof *c);
	c->first = malloc(sizeof(rules_chunk) + ARENA_FIRST);
	c->caprefs = 32;
	c->refs = malloc(sizeof *c->refs * c->caprefs);
	c->md = pcre2_match_data_create(32, NULL);
	c->mctx = pcre2_match_context_create(NULL);
	if (!c->first || !c->refs || !c->md || !c->mctx) {
		rules_ctx_free(c);
		return TG_ENOMEM;
	}
	pcre2_set_match_limit(c->mctx, 100000);
	pcre2_set_depth_limit(c->mctx, 10000);
	c->first->next = NULL;
	c->first->cap = ARENA_FIRST;
	c->first->used = 0;
	c->arena = c->first;
	c->rand_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)c;
	return 0;
}

void rules_ctx_reset(rules_ctx *c)
{
	for (size_t i = 0; i < c->nrefs; i++)
		json_decref(c->refs[i]);
	c->nrefs = 0;
	rules_chunk *k = c->arena;
	while (k && k != c->first) {
		rules_chunk *nx = k->next;
		free(k);
		k = nx;
	}
	c->arena = c->first;
	if (c->first)
		c->first->used = 0;
	c->err = 0;
	c->errmsg[0] = '\0';
	c->nvars = 0;
	c->row = NULL;
	c->m = NULL;
}

void rules_ctx_free(rules_ctx *c)
{
	if (!c)
		return;
	if (c->refs)
		rules_ctx_reset(c);
	free(c->first);
	free(c->refs);
	if (c->md)
		pcre2_match_data_free(c->md);
	if (c->mctx)
		pcre2_match_context_free(c->mctx);
	memset(c, 0, sizeof *c);
}

void *rules_ctx_alloc(rules_ctx *c, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	rules_chunk *k = c->arena;
	if (k->cap - k->used < n) {
		size_t cap = n > ARENA_FIRST ? n : ARENA_FIRST;
		rules_chunk *nk = malloc(sizeof(rules_chunk) + cap);
		if (!nk) {
			c->err = 1;
			snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
			return NULL;
		}
		nk->cap = cap;
		nk->used = 0;
		nk->next = k;
		c->arena = k = nk;
	}
	void *p = k->data + k->used;
	k->used += n;
	return p;
}

json_t *rules_ctx_keep(rules_ctx *c, json_t *j)
{
	if (!j)
		return NULL;
	if (c->nrefs == c->caprefs) {
		json_t **r = realloc(c->refs, sizeof *r * c->caprefs * 2);
		if (!r) {
			json_decref(j);
			c->err = 1;
			snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
			return NULL;
		}
		c->refs = r;
		c->caprefs *= 2;
	}
	c->refs[c->nrefs++] = j;
	return j;
}

/* ---- values ------------------------------------------------------------------------- */
void rules_val_str(rules_val *v, const char *p, size_t n)
{
	v->t = RV_STR;
	v->u.s.p = p;
	v->u.s.n = n;
}

/* with whole_int (SQL 2016-03-23) a whole-number real is read as the Int it equals */
static void val_of_json(json_t *j, rules_val *out, int whole_int)
{
	if (!j) {
		out->t = RV_UNDEF;
		return;
	}
	switch (json_typeof(j)) {
	case JSON_OBJECT: out->t = RV_OBJ; out->u.j = j; break;
	case JSON_ARRAY: out->t = RV_ARR; out->u.j = j; break;
	case JSON_STRING: rules_val_str(out, json_string_value(j), json_string_length(j)); break;
	case JSON_INTEGER: out->t = RV_INT; out->u.i = json_integer_value(j); break;
	case JSON_REAL: {
		double d = json_real_value(j);
		if (whole_int && rules_dec_is_whole(d)) {
			out->t = RV_INT;
			out->u.i = (int64_t)d;
		} else {
			out->t = RV_DEC;
			out->u.d = d;
		}
		break;
	}
	case JSON_TRUE: out->t = RV_BOOL; out->u.b = 1; break;
	case JSON_FALSE: out->t = RV_BOOL; out->u.b = 0; break;
	case JSON_NULL: out->t = RV_NULL; break;
	}
}

void rules_val_from_json(const rules_ctx *c, json_t *j, rules_val *out)
{
	val_of_json(j, out, c->ver == RULES_SQL_2016_03_23);
}

json_t *rules_val_to_json(const rules_ctx *c, const rules_val *v)
{
	switch (v->t) {
	case RV_UNDEF: return NULL;
	case RV_NULL: return json_null();
	case RV_BOOL: return json_boolean(v->u.b);
	case RV_INT: return json_integer(v->u.i);
	case RV_DEC:
		if (!isfinite(v->u.d))
			return NULL;
		/* 2016-03-23 writes a whole Decimal as the Int (10); 2015-10-08 as a real (10.0) */
		if (c->ver == RULES_SQL_2016_03_23 && rules_dec_is_whole(v->u.d))
			return json_integer((json_int_t)v->u.d);
		return json_real(v->u.d);
	case RV_STR: return json_stringn(v->u.s.p, v->u.s.n); /* NULL if not UTF-8 */
	case RV_ARR:
	case RV_OBJ: return json_incref(v->u.j);
	}
	return NULL;
}

/* Strings that convert to Decimal: ^-?\d+(\.\d+)?([eE]-?\d+)?$ */
int rules_str_to_dec(const char *p, size_t n, double *d)
{
	size_t i = 0;
	if (i < n && p[i] == '-')
		i++;
	size_t ds = i;
	while (i < n && p[i] >= '0' && p[i] <= '9')
		i++;
	if (i == ds)
		return -1;
	if (i < n && p[i] == '.') {
		i++;
		size_t fs = i;
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
		if (i == fs)
			return -1;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && p[i] == '-')
			i++;
		size_t es = i;
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
		if (i == es)
			return -1;
	}
	if (i != n || n > 400)
		return -1;
	char buf[401];
	memcpy(buf, p, n);
	buf[n] = '\0';
	*d = strtod(buf, NULL);
	return 0;
}

int rules_to_dec(const rules_val *v, double *d)
{
	switch (v->t) {
	case RV_INT: *d = (double)v->u.i; return 0;
	case RV_DEC: *d = v->u.d; return 0;
	case RV_STR: return rules_str_to_dec(v->u.s.p, v->u.s.n, d);
	default: return -1;
	}
}

/* Numeric view for arithmetic: Int stays Int, Decimal stays, numeric strings -> Decimal
 * (the tables say "if all strings convert to decimals ... a Decimal value"). */
int rules_to_num(const rules_val *v, rules_val *out)
{
	switch (v->t) {
	case RV_INT:
	case RV_DEC: *out = *v; return 0;
	case RV_STR:
		out->t = RV_DEC;
		return rules_str_to_dec(v->u.s.p, v->u.s.n, &out->u.d);
	default: return -1;
	}
}

int rules_to_bool(const rules_val *v, int *b)
{
	if (v->t == RV_BOOL) {
		*b = v->u.b;
		return 0;
	}
	if (v->t == RV_STR) {
		if (v->u.s.n == 4 && strncasecmp(v->u.s.p, "true", 4) == 0) {
			*b = 1;
			return 0;
		}
		if (v->u.s.n == 5 && strncasecmp(v->u.s.p, "false", 5) == 0) {
			*b = 0;
			return 0;
		}
	}
	return -1;
}

/* Decimal to text like Java's BigDecimal.toString() of the shortest decimal that reads
 * back as the same double: plain digits ("0.00001", "22.5") unless the exponent is below
 * -6 or above 20, then scientific ("1.5E-7", "1E+21"). */
int rules_fmt_double(double d, char *buf, size_t len)
{
	char e[40];
	int prec;
	for (prec = 14; prec <= 16; prec++) {
		snprintf(e, sizeof e, "%.*e", prec, d);
		if (strtod(e, NULL) == d)
			break;
	}
	/* e: [-]D.DDDDe[+-]XX -> sign, digits, exponent */
	const char *p = e;
	int neg = *p == '-';
	if (neg)
		p++;
	char digits[24];
	size_t nd = 0;
	for (; *p && *p != 'e'; p++)
		if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1)
			digits[nd++] = *p;
	int exp10 = *p == 'e' ? atoi(p + 1) : 0;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';
	char out[64];
	size_t o = 0;
	if (neg)
		out[o++] = '-';
	if (exp10 < -6 || exp10 > 20) {
		out[o++] = digits[0];
		if (nd > 1) {
			out[o++] = '.';
			memcpy(out + o, digits + 1, nd - 1);
			o += nd - 1;
		}
		o += (size_t)snprintf(out + o, sizeof out - o, "E%s%d", exp10 < 0 ? "-" : "+", exp10 < 0 ? -exp10 : exp10);
	} else if (exp10 < 0) {
		out[o++] = '0';
		out[o++] = '.';
		for (int i = -1; i > exp10; i--)
			out[o++] = '0';
		memcpy(out + o, digits, nd);
		o += nd;
	} else {
		for (int i = 0; i <= exp10 || (size_t)i < nd; i++) {
			if (i == exp10 + 1)
				out[o++] = '.';
			out[o++] = (size_t)i < nd ? digits[i] : '0';
		}
	}
	out[o] = '\0';
	snprintf(buf, len, "%s", out);
	return (int)strlen(buf);
}

int rules_to_str(rules_ctx *c, const rules_val *v, const char **p, size_t *n)
{
	char tmp[64];
	switch (v->t) {
	case RV_STR: *p = v->u.s.p; *n = v->u.s.n; return 0;
	case RV_BOOL:
		*p = v->u.b ? "true" : "false";
		*n = v->u.b ? 4 : 5;
		return 0;
	case RV_INT: {
		int k = snprintf(tmp, sizeof tmp, "%" PRId64, v->u.i);
		char *o = rules_ctx_alloc(c, (size_t)k + 1);
		if (!o)
			return -1;
		memcpy(o, tmp, (size_t)k + 1);
		*p = o;
		*n = (size_t)k;
		return 0;
	}
	case RV_DEC: {
		if (!isfinite(v->u.d)) {
			snprintf(tmp, sizeof tmp, "%s", isnan(v->u.d) ? "NaN" : v->u.d > 0 ? "Infinity" : "-Infinity");
		} else if (c->ver == RULES_SQL_2016_03_23 && rules_dec_is_whole(v->u.d)) {
			snprintf(tmp, sizeof tmp, "%" PRId64, (int64_t)v->u.d); /* processed as the Int */
		} else {
			rules_fmt_double(v->u.d, tmp, sizeof tmp);
			/* 2015-10-08: a whole Decimal reads as one (10.0, not the Int 10), as BigDecimal
			 * writes 10.0 */
			if (!strpbrk(tmp, ".E") && strlen(tmp) + 2 < sizeof tmp)
				strcat(tmp, ".0");
		}
		size_t k = strlen(tmp);
		char *o = rules_ctx_alloc(c, k + 1);
		if (!o)
			return -1;
		memcpy(o, tmp, k + 1);
		*p = o;
		*n = k;
		return 0;
	}
	case RV_ARR:
	case RV_OBJ: {
		size_t need = json_dumpb(v->u.j, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
		if (need == 0)
			return -1;
		char *o = rules_ctx_alloc(c, need + 1);
		if (!o)
			return -1;
		json_dumpb(v->u.j, o, need, JSON_COMPACT | JSON_ENCODE_ANY);
		o[need] = '\0';
		*p = o;
		*n = need;
		return 0;
	}
	default: return -1; /* Null and Undefined have no string form */
	}
}

static int num_eq(const rules_val *a, const rules_val *b)
{
	if (a->t == RV_INT && b->t == RV_INT)
		return a->u.i == b->u.i;
	double x = a->t == RV_INT ? (double)a->u.i : a->u.d;
	double y = b->t == RV_INT ? (double)b->u.i : b->u.d;
	return x == y;
}

static int is_num(rules_vtype t)
{
	return t == RV_INT || t == RV_DEC;
}

/* Deep equality for the = table: numbers compare by value (Int as Decimal), arrays in
 * order, objects by keys and values regardless of order. Mismatched types: not equal.
 * Because numbers compare by value, whether a whole real is read as an Int (the SQL
 * version) cannot change the outcome: members are read without that step. */
int rules_val_equal(const rules_val *a, const rules_val *b)
{
	if (is_num(a->t) && is_num(b->t))
		return num_eq(a, b);
	if (a->t != b->t)
		return 0;
	switch (a->t) {
	case RV_NULL: return 1;
	case RV_BOOL: return a->u.b == b->u.b;
	case RV_STR: return a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
	case RV_ARR: {
		size_t n = json_array_size(a->u.j);
		if (n != json_array_size(b->u.j))
			return 0;
		for (size_t i = 0; i < n; i++) {
			rules_val x, y;
			val_of_json(json_array_get(a->u.j, i), &x, 0);
			val_of_json(json_array_get(b->u.j, i), &y, 0);
			if (!rules_val_equal(&x, &y))
				return 0;
		}
		return 1;
	}
	case RV_OBJ: {
		if (json_object_size(a->u.j) != json_object_size(b->u.j))
			return 0;
		const char *k;
		json_t *va;
		json_object_foreach(a->u.j, k, va)
		{
			rules_val x, y;
			val_of_json(va, &x, 0);
			val_of_json(json_object_get(b->u.j, k), &y, 0);
			if (y.t == RV_UNDEF || !rules_val_equal(&x, &y))
				return 0;
		}
		return 1;
	}
	default: return 0;
	}
}

/* ---- operators ----------------------------------------------------------------------- */
static void set_bool(rules_val *o, int b)
{
	o->t = RV_BOOL;
	o->u.b = b;
}

static void op_compare(int op, const rules_val *l, const rules_val *r, rules_val *o)
{
	o->t = RV_UNDEF;
	if (op == TK_EQ || op == TK_NE) {
		if (l->t == RV_UNDEF || r->t == RV_UNDEF)
			return;
		int eq = rules_val_equal(l, r);
		set_bool(o, op == TK_EQ ? eq : !eq);
		return;
	}
	int c;
	if (l->t == RV_INT && r->t == RV_INT) {
		c = (l->u.i > r->u.i) - (l->u.i < r->u.i);
	} else {
		double x, y;
		if (is_num(l->t) && is_num(r->t)) { /* the usual case, without the calls */
			x = l->t == RV_INT ? (double)l->u.i : l->u.d;
			y = r->t == RV_INT ? (double)r->u.i : r->u.d;
		} else if (rules_to_dec(l, &x) < 0 || rules_to_dec(r, &y) < 0) {
			return;
		}
		if (isnan(x) || isnan(y)) {
			set_bool(o, 0);
			return;
		}
		c = (x > y) - (x < y);
	}
	switch (op) {
	case TK_LT: set_bool(o, c < 0); break;
	case TK_LE: set_bool(o, c <= 0); break;
	case TK_GT: set_bool(o, c > 0); break;
	case TK_GE: set_bool(o, c >= 0); break;
	default: break;
	}
}

int rules_compare_holds(int op, const rules_val *l, const rules_val *r)
{
	rules_val o;
	op_compare(op, l, r, &o);
	return o.t == RV_BOOL && o.u.b;
}

static void set_dec(rules_val *o, double d)
{
	o->t = RV_DEC;
	o->u.d = d;
}

static void op_arith(rules_ctx *c, int op, const rules_val *l, const rules_val *r, rules_val *o)
{
	o->t = RV_UNDEF;
	if (op == TK_PLUS && (l->t == RV_STR || r->t == RV_STR)) {
		const char *a, *b;
		size_t an, bn;
		if (rules_to_str(c, l, &a, &an) < 0 || rules_to_str(c, r, &b, &bn) < 0)
			return;
		char *s = rules_ctx_alloc(c, an + bn + 1);
		if (!s)
			return;
		memcpy(s, a, an);
		memcpy(s + an, b, bn);
		s[an + bn] = '\0';
		rules_val_str(o, s, an + bn);
		return;
	}
	rules_val x, y;
	if (op == TK_PLUS) {
		/* + has no string-to-number row: only Int/Decimal operands add */
		if (!is_num(l->t) || !is_num(r->t))
			return;
		x = *l;
		y = *r;
	} else if (rules_to_num(l, &x) < 0 || rules_to_num(r, &y) < 0) {
		return;
	}
	if (x.t == RV_INT && y.t == RV_INT) {
		int64_t a = x.u.i, b = y.u.i, res;
		switch (op) {
		case TK_PLUS:
			if (__builtin_add_overflow(a, b, &res))
				return set_dec(o, (double)a + (double)b);
			break;
		case TK_MINUS:
			if (__builtin_sub_overflow(a, b, &res))
				return set_dec(o, (double)a - (double)b);
			break;
		case TK_STAR:
			if (__builtin_mul_overflow(a, b, &res))
				return set_dec(o, (double)a * (double)b);
			break;
		case TK_SLASH:
			if (b == 0 || (a == INT64_MIN && b == -1))
				return;
			res = a / b;
			break;
		case TK_PERCENT:
			if (b == 0 || (a == INT64_MIN && b == -1))
				return;
			res = a % b;
			break;
		default: return;
		}
		o->t = RV_INT;
		o->u.i = res;
		return;
	}
	double a = x.t == RV_INT ? (double)x.u.i : x.u.d;
	double b = y.t == RV_INT ? (double)y.u.i : y.u.d;
	switch (op) {
	case TK_PLUS: set_dec(o, a + b); break;
	case TK_MINUS: set_dec(o, a - b); break;
	case TK_STAR: set_dec(o, a * b); break;
	case TK_SLASH:
		if (b == 0)
			return;
		set_dec(o, a / b);
		break;
	case TK_PERCENT:
		if (b == 0)
			return;
		set_dec(o, fmod(a, b));
		break;
	default: break;
	}
	if (o->t == RV_DEC && !isfinite(o->u.d))
		o->t = RV_UNDEF;
}

/* ---- field access --------------------------------------------------------------------- */
static void member(rules_ctx *c, const rules_val *base, const char *name, rules_val *out)
{
	if (base->t != RV_OBJ) {
		out->t = RV_UNDEF;
		return;
	}
	rules_val_from_json(c, json_object_get(base->u.j, name), out);
}

static void index_of(rules_ctx *c, const rules_val *base, const rules_val *idx, rules_val *out)
{
	out->t = RV_UNDEF;
	if (base->t == RV_OBJ && idx->t == RV_STR) {
		/* obj['key']: like get(); key must be a NUL-free string */
		if (memchr(idx->u.s.p, '\0', idx->u.s.n))
			return;
		char *k = rules_ctx_alloc(c, idx->u.s.n + 1);
		if (!k)
			return;
		memcpy(k, idx->u.s.p, idx->u.s.n);
		k[idx->u.s.n] = '\0';
		rules_val_from_json(c, json_object_get(base->u.j, k), out);
		return;
	}
	if (base->t != RV_ARR)
		return;
	double d;
	int64_t i;
	/* the standard Int conversion: Decimal rounded to nearest, String truncated */
	if (idx->t == RV_INT)
		i = idx->u.i;
	else if ((idx->t == RV_DEC || idx->t == RV_STR) && rules_to_dec(idx, &d) == 0 && d > -1e18 && d < 1e18)
		i = (int64_t)(idx->t == RV_DEC ? round(d) : trunc(d));
	else
		return;
	if (i < 0 || (size_t)i >= json_array_size(base->u.j))
		return;
	rules_val_from_json(c, json_array_get(base->u.j, (size_t)i), out);
}

/* ---- CASE, cast, literals ------------------------------------------------------------ */
static void eval_case(rules_ctx *c, const rules_node *n, rules_val *out)
{
	int searched = n->ival & 1, has_else = (n->ival & 2) != 0;
	int i = 0;
	rules_val subj = {0};
	out->t = RV_UNDEF;
	if (!searched) {
		rules_eval_node(c, n->a[0], &subj);
		if (subj.t == RV_UNDEF)
			return; /* documented: Undefined subject -> Undefined */
		i = 1;
	}
	int end = n->na - has_else;
	for (; i + 1 < end + 1 && i < end; i += 2) {
		if (searched) {
			if (rules_eval_cond(c, n->a[i])) {
				rules_eval_node(c, n->a[i + 1], out);
				return;
			}
		} else {
			rules_val t;
			rules_eval_node(c, n->a[i], &t);
			if (t.t != RV_UNDEF && rules_val_equal(&subj, &t)) {
				rules_eval_node(c, n->a[i + 1], out);
				return;
			}
		}
	}
	if (has_else)
		rules_eval_node(c, n->a[n->na - 1], out);
}

static void eval_cast(rules_ctx *c, const rules_node *n, rules_val *out)
{
	rules_val v;
	rules_eval_node(c, n->a[0], &v);
	out->t = RV_UNDEF;
	double d;
	switch ((rules_cast_type)n->ival) {
	case RC_STRING:
		if (v.t == RV_STR) {
			*out = v;
		} else {
			const char *p;
			size_t len;
			if (rules_to_str(c, &v, &p, &len) == 0)
				rules_val_str(out, p, len);
		}
		return;
	case RC_INT:
		if (v.t == RV_INT) {
			*out = v;
		} else if (v.t == RV_BOOL) {
			out->t = RV_INT;
			out->u.i = v.u.b;
		} else if (rules_to_dec(&v, &d) == 0 && isfinite(d) && fabs(d) < 9.2e18) {
			out->t = RV_INT;
			out->u.i = (int64_t)floor(d);
		}
		return;
	case RC_DOUBLE:
	case RC_DECIMAL:
		if (v.t == RV_BOOL) {
			set_dec(out, v.u.b ? 1.0 : 0.0);
		} else if (rules_to_dec(&v, &d) == 0) {
			set_dec(out, d);
		}
		return;
	case RC_BOOL:
		if (v.t == RV_INT)
			set_bool(out, v.u.i != 0);
		else if (v.t == RV_DEC)
			set_bool(out, v.u.d != 0);
		else {
			int b;
			if (rules_to_bool(&v, &b) == 0)
				set_bool(out, b);
		}
		return;
	}
}

static void eval_obj(rules_ctx *c, const rules_node *n, rules_val *out)
{
	json_t *o = rules_ctx_keep(c, json_object());
	out->t = RV_UNDEF;
	if (!o)
		return;
	for (int i = 0; i < n->na; i++) {
		rules_val v;
		rules_eval_node(c, n->a[i], &v);
		json_t *j = rules_val_to_json(c, &v);
		if (j)
			json_object_set_new(o, n->names[i], j);
	}
	out->t = RV_OBJ;
	out->u.j = o;
}

static void eval_arr(rules_ctx *c, const rules_node *n, rules_val *out)
{
	json_t *a = rules_ctx_keep(c, json_array());
	out->t = RV_UNDEF;
	if (!a)
		return;
	for (int i = 0; i < n->na; i++) {
		rules_val v;
		rules_eval_node(c, n->a[i], &v);
		json_t *j = rules_val_to_json(c, &v);
		if (j)
			json_array_append_new(a, j);
	}
	out->t = RV_ARR;
	out->u.j = a;
}

/* Nested query: iterate the FROM array, each element becomes the row. */
static void eval_subq(rules_ctx *c, const rules_node *n, rules_val *out)
{
	const rules_query *q = n->q;
	rules_val src;
	out->t = RV_UNDEF;
	rules_eval_node(c, q->from_expr, &src);
	if (src.t != RV_ARR)
		return;
	json_t *res = rules_ctx_keep(c, json_array());
	if (!res)
		return;
	json_t *saved = c->row;
	size_t i;
	json_t *el;
	json_array_foreach(src.u.j, i, el)
	{
		c->row = el;
		if (q->where && !rules_eval_cond(c, q->where))
			continue;
		json_t *r = rules_eval_select(c, q);
		if (r)
			json_array_append_new(res, r);
	}
	c->row = saved;
	out->t = RV_ARR;
	out->u.j = res;
}

void rules_eval_node(rules_ctx *c, const rules_node *n, rules_val *out)
{
	rules_val l, r;
	switch (n->k) {
	case RN_LIT: *out = n->lit; return;
	case RN_FIELD:
		if (c->row && json_is_object(c->row))
			rules_val_from_json(c, json_object_get(c->row, n->name), out);
		else
			out->t = RV_UNDEF;
		return;
	case RN_VAR:
		*out = n->ival < c->nvars ? c->vars[n->ival] : (rules_val){0};
		return;
	case RN_DOT:
		rules_eval_node(c, n->a[0], &l);
		member(c, &l, n->name, out);
		return;
	case RN_INDEX:
		rules_eval_node(c, n->a[0], &l);
		rules_eval_node(c, n->a[1], &r);
		index_of(c, &l, &r, out);
		return;
	case RN_NEG:
		rules_eval_node(c, n->a[0], &l);
		out->t = RV_UNDEF;
		if (l.t == RV_INT && l.u.i != INT64_MIN) {
			out->t = RV_INT;
			out->u.i = -l.u.i;
		} else if (rules_to_num(&l, &r) == 0) {
			set_dec(out, -(r.t == RV_INT ? (double)r.u.i : r.u.d));
		}
		return;
	case RN_NOT: {
		int b;
		rules_eval_node(c, n->a[0], &l);
		if (rules_to_bool(&l, &b) == 0)
			set_bool(out, !b);
		else
			out->t = RV_UNDEF;
		return;
	}
	case RN_AND:
	case RN_OR: {
		int a, b;
		rules_eval_node(c, n->a[0], &l);
		rules_eval_node(c, n->a[1], &r);
		if (rules_to_bool(&l, &a) < 0 || rules_to_bool(&r, &b) < 0)
			out->t = RV_UNDEF;
		else
			set_bool(out, n->k == RN_AND ? (a && b) : (a || b));
		return;
	}
	case RN_BIN:
		rules_eval_node(c, n->a[0], &l);
		rules_eval_node(c, n->a[1], &r);
		if (n->ival >= TK_EQ && n->ival <= TK_GE)
			op_compare((int)n->ival, &l, &r, out);
		else
			op_arith(c, (int)n->ival, &l, &r, out);
		return;
	case RN_CASE: eval_case(c, n, out); return;
	case RN_CAST: eval_cast(c, n, out); return;
	case RN_OBJ: eval_obj(c, n, out); return;
	case RN_ARR: eval_arr(c, n, out); return;
	case RN_SUBQ: eval_subq(c, n, out); return;
	case RN_STAR:
		/* the whole payload: the row object, or the raw bytes as a string */
		if (c->row) {
			rules_val_from_json(c, c->row, out);
		} else if (c->m && c->m->payload) {
			rules_val_str(out, c->m->payload, c->m->payloadlen);
		} else {
			out->t = RV_UNDEF;
		}
		return;
	case RN_CALL: {
		rules_val argv[RULES_MAX_ARGS];
		for (int i = 0; i < n->na; i++)
			rules_eval_node(c, n->a[i], &argv[i]);
		out->t = RV_UNDEF;
		n->fn->fn(c, n, argv, n->na, out);
		return;
	}
	}
	out->t = RV_UNDEF;
}

int rules_eval_cond(rules_ctx *c, const rules_node *n)
{
	if (n->k == RN_AND)
		return rules_eval_cond(c, n->a[0]) && rules_eval_cond(c, n->a[1]);
	rules_val v;
	int b;
	rules_eval_node(c, n, &v);
	return rules_to_bool(&v, &b) == 0 && b;
}

/* Put j at a dotted key path (an alias such as bar.baz), creating objects on the way. */
static void set_path(json_t *o, const char *alias, json_t *j)
{
	const char *dot = strchr(alias, '.');
	if (!dot) {
		json_object_set_new(o, alias, j);
		return;
	}
	char key[256];
	size_t kl = (size_t)(dot - alias);
	if (kl >= sizeof key) {
		json_object_set_new(o, alias, j);
		return;
	}
	memcpy(key, alias, kl);
	key[kl] = '\0';
	json_t *sub = json_object_get(o, key);
	if (!json_is_object(sub)) {
		sub = json_object();
		if (!sub) {
			json_decref(j);
			return;
		}
		json_object_set_new(o, key, sub);
	}
	set_path(sub, dot + 1, j);
}

json_t *rules_eval_select(rules_ctx *c, const rules_query *q)
{
	if (q->value) {
		rules_val v;
		rules_eval_node(c, q->items[0].e, &v);
		return rules_val_to_json(c, &v);
	}
	if (q->nitems == 1 && !q->items[0].e && !json_is_object(c->row)) {
		/* SELECT * of something that is not an object: the row itself (a scalar element of
		 * a nested query) or, for a non-JSON payload, its bytes as a string (Undefined when
		 * they are not UTF-8, as JSON cannot carry them) */
		if (c->row)
			return json_incref(c->row);
		if (c->m && c->m->payload)
			return json_stringn(c->m->payload, c->m->payloadlen);
		return NULL;
	}
	json_t *o = json_object();
	if (!o)
		return NULL;
	for (int i = 0; i < q->nitems; i++) {
		const rules_item *it = &q->items[i];
		if (!it->e) {
			if (json_is_object(c->row))
				json_object_update(o, c->row);
			continue;
		}
		rules_val v;
		rules_eval_node(c, it->e, &v);
		json_t *j = rules_val_to_json(c, &v);
		if (j)
			set_path(o, it->alias, j);
	}
	return o;
}
