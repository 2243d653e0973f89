/*
 * parser.c — recursive-descent parser from IoT SQL text to the compiled tree.
 *
 * Grammar (lowest precedence first): OR, AND, NOT, comparison (= <> != < <= > >=),
 * + -, * / %, unary minus, postfix (.name, [index]), primary (literals, fields, @vars,
 * function calls, cast(x AS type), CASE, object/array literals, parenthesised
 * expressions and nested SELECTs). All resolution work happens here, once: function
 * names are looked up (AWS-service functions are refused with "not supported at the
 * edge"), argument counts checked, SET variables bound to slots and literal regex
 * patterns compiled with pcre2 + JIT, so evaluation never looks anything up by name
 * except JSON members. Every error carries the byte offset of the offending token.
 * Recursion depth is capped so hostile input (the fuzz target) cannot exhaust the stack.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules/rules_int.h"

#define MAX_DEPTH 128

typedef struct parser {
	rules_lexer lx;
	char **vars;   /* names without '@' (borrowed) */
	int nvars;
	int depth;
	int failed;
	size_t err_pos;
	char err[200];
} parser;

static rules_node *parse_expr(parser *p);
static rules_query *parse_query(parser *p, int top);
static void query_free(rules_query *q);

static void *fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *fail(parser *p, size_t pos, const char *fmt, ...)
{
	if (p->failed)
		return NULL;
	p->failed = 1;
	p->err_pos = pos;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof p->err, fmt, ap);
	va_end(ap);
	return NULL;
}

static int next(parser *p)
{
	if (rules_lex_next(&p->lx) < 0) {
		fail(p, p->lx.err_pos, "%s", p->lx.err);
		return -1;
	}
	return 0;
}

/* "identifier 'foo'" for tokens with text of their own, "'>'" for punctuation */
static const char *describe(parser *p, char *buf, size_t len)
{
	rules_tok_kind k = p->lx.tok.k;
	if (k == TK_EOF)
		return "end of input";
	if (k >= TK_SELECT) { /* keywords as the reader would write them */
		size_t n = p->lx.tok.len < len - 1 ? p->lx.tok.len : len - 1;
		for (size_t i = 0; i < n; i++)
			buf[i] = (char)toupper((unsigned char)p->lx.src[p->lx.tok.pos + i]);
		buf[n] = '\0';
	} else if (k == TK_IDENT || k == TK_STR || k == TK_INT || k == TK_DEC || k == TK_VAR)
		snprintf(buf, len, "%s '%.*s'", rules_tok_name(k), (int)(p->lx.tok.len > 40 ? 40 : p->lx.tok.len),
			 p->lx.src + p->lx.tok.pos);
	else
		snprintf(buf, len, "%s", rules_tok_name(k));
	return buf;
}

static rules_tok_kind cur(parser *p)
{
	return p->lx.tok.k;
}

static int expect(parser *p, rules_tok_kind k, const char *what)
{
	char dbuf[80];
	if (cur(p) != k) {
		if (cur(p) == TK_EOF)
			fail(p, p->lx.tok.pos, "expected %s, found end of input", what);
		else
			fail(p, p->lx.tok.pos, "expected %s, found %s", what, describe(p, dbuf, sizeof dbuf));
		return -1;
	}
	return next(p);
}

static rules_node *node_new(parser *p, rules_node_kind k, size_t pos)
{
	rules_node *n = calloc(1, sizeof *n);
	if (!n)
		return fail(p, pos, "out of memory");
	n->k = k;
	n->pos = pos;
	return n;
}

static int node_add(parser *p, rules_node *n, rules_node *child)
{
	rules_node **a = realloc(n->a, sizeof *a * (size_t)(n->na + 1));
	if (!a) {
		rules_node_free(child);
		fail(p, n->pos, "out of memory");
		return -1;
	}
	n->a = a;
	n->a[n->na++] = child;
	if (child->depth + 1 > n->depth)
		n->depth = child->depth + 1;
	if (n->depth > MAX_DEPTH) {
		fail(p, child->pos, "expression nested too deeply");
		return -1;
	}
	return 0;
}

void rules_node_free(rules_node *n)
{
	if (!n)
		return;
	for (int i = 0; i < n->na; i++)
		rules_node_free(n->a[i]);
	free(n->a);
	if (n->names) {
		for (int i = 0; i < n->na; i++)
			free(n->names[i]);
		free(n->names);
	}
	if (n->k == RN_LIT && n->lit.t == RV_STR)
		free((char *)n->lit.u.s.p);
	free(n->name);
	if (n->re)
		pcre2_code_free(n->re);
	query_free(n->q);
	json_decref(n->cjson);
	free(n);
}

static void query_free(rules_query *q)
{
	if (!q)
		return;
	for (int i = 0; i < q->nitems; i++) {
		rules_node_free(q->items[i].e);
		free(q->items[i].alias);
	}
	free(q->items);
	free(q->from_topic);
	rules_node_free(q->from_expr);
	rules_node_free(q->where);
	free(q);
}

void rules_stmt_free(rules_stmt *st)
{
	if (!st)
		return;
	for (int i = 0; i < st->nvars; i++) {
		free(st->var_names[i]);
		rules_node_free(st->var_exprs[i]);
	}
	free(st->var_names);
	free(st->var_exprs);
	query_free(st->q);
	free(st);
}

/* Take the current token's text as a malloc'd string. */
static char *tok_text(parser *p)
{
	char *s = strndup(p->lx.src + p->lx.tok.pos, p->lx.tok.len);
	if (!s)
		fail(p, p->lx.tok.pos, "out of memory");
	return s;
}

static int is_word(rules_tok_kind k)
{
	return k == TK_IDENT || (k >= TK_SELECT && k <= TK_SET);
}

static rules_node *compile_regex(parser *p, rules_node *call)
{
	int ra = call->fn->regex_arg;
	if (ra < 0 || ra >= call->na)
		return call;
	rules_node *pat = call->a[ra];
	if (pat->k != RN_LIT || pat->lit.t != RV_STR)
		return call; /* compiled per evaluation */
	int ec = 0;
	PCRE2_SIZE eo = 0;
	call->re = pcre2_compile((PCRE2_SPTR)pat->lit.u.s.p, pat->lit.u.s.n, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
				 &ec, &eo, NULL);
	if (!call->re) {
		PCRE2_UCHAR msg[120];
		pcre2_get_error_message(ec, msg, sizeof msg);
		fail(p, pat->pos + 1 + eo, "invalid regular expression: %s", (const char *)msg);
		rules_node_free(call);
		return NULL;
	}
	pcre2_jit_compile(call->re, PCRE2_JIT_COMPLETE); /* best effort: interpreter otherwise */
	return call;
}

static rules_node *parse_cast(parser *p, rules_node *n)
{
	rules_node *e = parse_expr(p);
	if (!e) {
		rules_node_free(n);
		return NULL;
	}
	n->k = RN_CAST;
	if (node_add(p, n, e) < 0 || expect(p, TK_AS, "AS in cast(value AS type)") < 0)
		goto fail;
	if (cur(p) != TK_IDENT) {
		fail(p, p->lx.tok.pos, "expected a type name after AS");
		goto fail;
	}
	static const struct {
		const char *n;
		rules_cast_type t;
	} types[] = {{"string", RC_STRING}, {"nvarchar", RC_STRING}, {"text", RC_STRING},
		     {"ntext", RC_STRING},  {"varchar", RC_STRING},  {"int", RC_INT},
		     {"integer", RC_INT},   {"double", RC_DOUBLE},   {"decimal", RC_DECIMAL},
		     {"bool", RC_BOOL},     {"boolean", RC_BOOL}};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strlen(types[i].n) == p->lx.tok.len &&
		    strncasecmp(types[i].n, p->lx.src + p->lx.tok.pos, p->lx.tok.len) == 0)
			n->ival = types[i].t;
	if (!n->ival) {
		fail(p, p->lx.tok.pos, "unknown cast type '%.*s'", (int)p->lx.tok.len, p->lx.src + p->lx.tok.pos);
		goto fail;
	}
	if (next(p) < 0 || expect(p, TK_RPAREN, "')'") < 0)
		goto fail;
	return n;
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_call(parser *p, size_t pos)
{
	rules_node *n = node_new(p, RN_CALL, pos);
	if (!n)
		return NULL;
	n->name = tok_text(p);
	if (!n->name)
		goto fail;
	for (char *c = n->name; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	if (next(p) < 0 || next(p) < 0) /* name, '(' */
		goto fail;
	if (strcmp(n->name, "cast") == 0)
		return parse_cast(p, n);
	n->fn = rules_func_lookup(n->name);
	if (!n->fn) {
		fail(p, pos, "unknown function '%s'", n->name);
		goto fail;
	}
	if (n->fn->flags & RF_UNSUPPORTED) {
		fail(p, pos, "function '%s' is not supported at the edge", n->name);
		goto fail;
	}
	if (cur(p) != TK_RPAREN) {
		for (;;) {
			rules_node *a;
			if (cur(p) == TK_STAR && n->na == 0 && (n->fn->flags & RF_STAR_ARG)) {
				a = node_new(p, RN_STAR, p->lx.tok.pos);
				if (!a || next(p) < 0) {
					rules_node_free(a);
					goto fail;
				}
			} else {
				a = parse_expr(p);
			}
			if (!a || node_add(p, n, a) < 0)
				goto fail;
			if (n->na > RULES_MAX_ARGS) {
				fail(p, a->pos, "too many arguments to %s()", n->name);
				goto fail;
			}
			if (cur(p) != TK_COMMA)
				break;
			if (next(p) < 0)
				goto fail;
		}
	}
	if (expect(p, TK_RPAREN, "')' or ','") < 0)
		goto fail;
	if (n->na < n->fn->min_args || (n->fn->max_args >= 0 && n->na > n->fn->max_args)) {
		if (n->fn->min_args == n->fn->max_args)
			fail(p, pos, "%s() takes %d argument%s, %d given", n->name, n->fn->min_args,
			     n->fn->min_args == 1 ? "" : "s", n->na);
		else if (n->fn->max_args < 0)
			fail(p, pos, "%s() takes at least %d arguments, %d given", n->name, n->fn->min_args, n->na);
		else
			fail(p, pos, "%s() takes %d to %d arguments, %d given", n->name, n->fn->min_args,
			     n->fn->max_args, n->na);
		goto fail;
	}
	return compile_regex(p, n);
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_case(parser *p, size_t pos)
{
	/* a[0] = subject or NULL placeholder (RN_LIT Undefined with ival=1 marks searched),
	 * then WHEN/THEN pairs, then an optional ELSE flagged by ival bit */
	rules_node *n = node_new(p, RN_CASE, pos);
	if (!n || next(p) < 0)
		goto fail;
	if (cur(p) == TK_WHEN) {
		n->ival = 1; /* searched CASE: WHEN cond THEN r */
	} else {
		rules_node *subj = parse_expr(p);
		if (!subj || node_add(p, n, subj) < 0)
			goto fail;
	}
	if (cur(p) != TK_WHEN) {
		fail(p, p->lx.tok.pos, "CASE needs at least one WHEN");
		goto fail;
	}
	while (cur(p) == TK_WHEN) {
		if (next(p) < 0)
			goto fail;
		rules_node *w = parse_expr(p);
		if (!w || node_add(p, n, w) < 0)
			goto fail;
		if (expect(p, TK_THEN, "THEN") < 0)
			goto fail;
		rules_node *t = parse_expr(p);
		if (!t || node_add(p, n, t) < 0)
			goto fail;
	}
	if (cur(p) == TK_ELSE) {
		if (next(p) < 0)
			goto fail;
		rules_node *e = parse_expr(p);
		if (!e || node_add(p, n, e) < 0)
			goto fail;
		n->ival |= 2;
	}
	if (expect(p, TK_END, "END or WHEN or ELSE") < 0)
		goto fail;
	return n;
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_object(parser *p, size_t pos)
{
	rules_node *n = node_new(p, RN_OBJ, pos);
	if (!n || next(p) < 0)
		goto fail;
	if (cur(p) != TK_RBRACE) {
		for (;;) {
			char *key = NULL;
			if (cur(p) == TK_STR) {
				key = p->lx.tok.str;
				p->lx.tok.str = NULL;
			} else if (is_word(cur(p))) {
				key = tok_text(p);
			} else {
				fail(p, p->lx.tok.pos, "expected an object key");
				goto fail;
			}
			if (!key)
				goto fail;
			char **names = realloc(n->names, sizeof *names * (size_t)(n->na + 1));
			if (!names) {
				free(key);
				fail(p, pos, "out of memory");
				goto fail;
			}
			n->names = names;
			n->names[n->na] = key;
			if (next(p) < 0 || expect(p, TK_COLON, "':'") < 0) {
				free(key);
				goto fail;
			}
			rules_node *v = parse_expr(p);
			if (!v) {
				free(key);
				goto fail;
			}
			if (node_add(p, n, v) < 0) {
				free(key);
				goto fail;
			}
			if (cur(p) != TK_COMMA)
				break;
			if (next(p) < 0)
				goto fail;
		}
	}
	if (expect(p, TK_RBRACE, "'}' or ','") < 0)
		goto fail;
	return n;
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_array(parser *p, size_t pos)
{
	rules_node *n = node_new(p, RN_ARR, pos);
	if (!n || next(p) < 0)
		goto fail;
	if (cur(p) != TK_RBRACK) {
		for (;;) {
			rules_node *v = parse_expr(p);
			if (!v || node_add(p, n, v) < 0)
				goto fail;
			if (cur(p) != TK_COMMA)
				break;
			if (next(p) < 0)
				goto fail;
		}
	}
	if (expect(p, TK_RBRACK, "']' or ','") < 0)
		goto fail;
	return n;
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_primary(parser *p)
{
	char dbuf[80];
	size_t pos = p->lx.tok.pos;
	rules_node *n = NULL;
	switch (cur(p)) {
	case TK_INT:
	case TK_DEC:
		n = node_new(p, RN_LIT, pos);
		if (!n)
			return NULL;
		if (cur(p) == TK_INT) {
			n->lit.t = RV_INT;
			n->lit.u.i = p->lx.tok.ival;
		} else {
			n->lit.t = RV_DEC;
			n->lit.u.d = p->lx.tok.dval;
		}
		break;
	case TK_STR:
		n = node_new(p, RN_LIT, pos);
		if (!n)
			return NULL;
		n->lit.t = RV_STR;
		n->lit.u.s.p = p->lx.tok.str;
		n->lit.u.s.n = p->lx.tok.slen;
		p->lx.tok.str = NULL;
		break;
	case TK_TRUE:
	case TK_FALSE:
		n = node_new(p, RN_LIT, pos);
		if (!n)
			return NULL;
		n->lit.t = RV_BOOL;
		n->lit.u.b = cur(p) == TK_TRUE;
		break;
	case TK_NULL:
		n = node_new(p, RN_LIT, pos);
		if (!n)
			return NULL;
		n->lit.t = RV_NULL;
		break;
	case TK_VAR: {
		int idx = -1;
		for (int i = 0; i < p->nvars; i++)
			if (strlen(p->vars[i]) == p->lx.tok.len - 1 &&
			    memcmp(p->vars[i], p->lx.src + pos + 1, p->lx.tok.len - 1) == 0)
				idx = i;
		if (idx < 0)
			return fail(p, pos, "undefined variable '%.*s'", (int)p->lx.tok.len, p->lx.src + pos);
		n = node_new(p, RN_VAR, pos);
		if (!n)
			return NULL;
		n->ival = idx;
		break;
	}
	case TK_IDENT: {
		/* function call when followed by '(' */
		size_t save = p->lx.pos;
		size_t i = save;
		while (i < p->lx.len && isspace((unsigned char)p->lx.src[i]))
			i++;
		if (i < p->lx.len && p->lx.src[i] == '(')
			return parse_call(p, pos);
		n = node_new(p, RN_FIELD, pos);
		if (!n)
			return NULL;
		n->name = tok_text(p);
		if (!n->name) {
			rules_node_free(n);
			return NULL;
		}
		break;
	}
	case TK_CASE: return parse_case(p, pos);
	case TK_LBRACE: return parse_object(p, pos);
	case TK_LBRACK: return parse_array(p, pos);
	case TK_LPAREN:
		if (next(p) < 0)
			return NULL;
		if (cur(p) == TK_SELECT) {
			rules_query *q = parse_query(p, 0);
			if (!q)
				return NULL;
			n = node_new(p, RN_SUBQ, pos);
			if (!n) {
				query_free(q);
				return NULL;
			}
			n->q = q;
		} else {
			n = parse_expr(p);
			if (!n)
				return NULL;
		}
		if (expect(p, TK_RPAREN, "')'") < 0) {
			rules_node_free(n);
			return NULL;
		}
		return n;
	case TK_EOF: return fail(p, pos, "expected an expression, found end of input");
	case TK_STAR: return fail(p, pos, "'*' is only allowed as a SELECT item or in encode(*, ...)");
	default:
		return fail(p, pos, "expected an expression, found %s", describe(p, dbuf, sizeof dbuf));
	}
	if (next(p) < 0) {
		rules_node_free(n);
		return NULL;
	}
	return n;
}

static rules_node *parse_postfix(parser *p)
{
	rules_node *n = parse_primary(p);
	while (n && (cur(p) == TK_DOT || cur(p) == TK_LBRACK)) {
		size_t pos = p->lx.tok.pos;
		if (cur(p) == TK_DOT) {
			if (next(p) < 0)
				goto fail;
			if (!is_word(cur(p))) {
				fail(p, p->lx.tok.pos, "expected a member name after '.'");
				goto fail;
			}
			rules_node *d = node_new(p, RN_DOT, pos);
			if (!d)
				goto fail;
			d->name = tok_text(p);
			if (node_add(p, d, n) < 0) {
				n = NULL;
				rules_node_free(d);
				goto fail;
			}
			n = d;
			if (!d->name || next(p) < 0)
				goto fail;
		} else {
			if (next(p) < 0)
				goto fail;
			rules_node *idx = parse_expr(p);
			if (!idx)
				goto fail;
			rules_node *d = node_new(p, RN_INDEX, pos);
			if (!d) {
				rules_node_free(idx);
				goto fail;
			}
			if (node_add(p, d, n) < 0) {
				n = NULL;
				rules_node_free(idx);
				rules_node_free(d);
				goto fail;
			}
			n = d;
			if (node_add(p, d, idx) < 0 || expect(p, TK_RBRACK, "']'") < 0)
				goto fail;
		}
	}
	return n;
fail:
	rules_node_free(n);
	return NULL;
}

static rules_node *parse_unary(parser *p)
{
	if (cur(p) == TK_MINUS || cur(p) == TK_PLUS) {
		size_t pos = p->lx.tok.pos;
		int neg = cur(p) == TK_MINUS;
		if (next(p) < 0)
			return NULL;
		if (++p->depth > MAX_DEPTH)
			return fail(p, pos, "expression nested too deeply");
		rules_node *e = parse_unary(p);
		p->depth--;
		if (!e)
			return NULL;
		if (!neg)
			return e;
		/* fold negative literals so -5 is a constant */
		if (e->k == RN_LIT && e->lit.t == RV_INT && e->lit.u.i != INT64_MIN) {
			e->lit.u.i = -e->lit.u.i;
			e->pos = pos;
			return e;
		}
		if (e->k == RN_LIT && e->lit.t == RV_DEC) {
			e->lit.u.d = -e->lit.u.d;
			e->pos = pos;
			return e;
		}
		rules_node *n = node_new(p, RN_NEG, pos);
		if (!n || node_add(p, n, e) < 0) {
			if (!n)
				rules_node_free(e);
			rules_node_free(n);
			return NULL;
		}
		return n;
	}
	return parse_postfix(p);
}

static rules_node *binary(parser *p, rules_node_kind k, int op, size_t pos, rules_node *l, rules_node *r)
{
	rules_node *n = node_new(p, k, pos);
	if (!n) {
		rules_node_free(l);
		rules_node_free(r);
		return NULL;
	}
	n->ival = op;
	if (node_add(p, n, l) < 0) {
		rules_node_free(r);
		rules_node_free(n);
		return NULL;
	}
	if (node_add(p, n, r) < 0) {
		rules_node_free(n);
		return NULL;
	}
	return n;
}

/* One precedence level of left-associative binary operators: operand (op operand)*.
 * is_op says whether a token is an operator of this level. */
typedef rules_node *(*parse_level_fn)(parser *p);

static rules_node *parse_left_assoc(parser *p, parse_level_fn operand, int (*is_op)(int tok), rules_node_kind kind)
{
	rules_node *l = operand(p);
	while (l && is_op(cur(p))) {
		int op = cur(p);
		size_t pos = p->lx.tok.pos;
		rules_node *r = next(p) < 0 ? NULL : operand(p);
		if (!r) {
			rules_node_free(l);
			return NULL;
		}
		l = binary(p, kind, op, pos, l, r);
	}
	return l;
}

static int is_mul_op(int t) { return t == TK_STAR || t == TK_SLASH || t == TK_PERCENT; }
static int is_add_op(int t) { return t == TK_PLUS || t == TK_MINUS; }
static int is_and_op(int t) { return t == TK_AND; }
static int is_or_op(int t) { return t == TK_OR; }

static rules_node *parse_mul(parser *p) { return parse_left_assoc(p, parse_unary, is_mul_op, RN_BIN); }
static rules_node *parse_add(parser *p) { return parse_left_assoc(p, parse_mul, is_add_op, RN_BIN); }

static rules_node *parse_cmp(parser *p)
{
	rules_node *l = parse_add(p);
	if (l && cur(p) >= TK_EQ && cur(p) <= TK_GE) {
		int op = cur(p);
		size_t pos = p->lx.tok.pos;
		if (next(p) < 0) {
			rules_node_free(l);
			return NULL;
		}
		rules_node *r = parse_add(p);
		if (!r) {
			rules_node_free(l);
			return NULL;
		}
		l = binary(p, RN_BIN, op, pos, l, r);
		if (l && cur(p) >= TK_EQ && cur(p) <= TK_GE) {
			rules_node_free(l);
			return fail(p, p->lx.tok.pos, "comparisons cannot be chained; use AND");
		}
	}
	return l;
}

static rules_node *parse_not(parser *p)
{
	if (cur(p) == TK_NOT) {
		size_t pos = p->lx.tok.pos;
		if (next(p) < 0)
			return NULL;
		if (++p->depth > MAX_DEPTH)
			return fail(p, pos, "expression nested too deeply");
		rules_node *e = parse_not(p);
		p->depth--;
		if (!e)
			return NULL;
		rules_node *n = node_new(p, RN_NOT, pos);
		if (!n || node_add(p, n, e) < 0) {
			if (!n)
				rules_node_free(e);
			rules_node_free(n);
			return NULL;
		}
		return n;
	}
	return parse_cmp(p);
}

static rules_node *parse_and(parser *p) { return parse_left_assoc(p, parse_not, is_and_op, RN_AND); }

static rules_node *parse_expr(parser *p)
{
	if (++p->depth > MAX_DEPTH)
		return fail(p, p->lx.tok.pos, "expression nested too deeply");
	rules_node *l = parse_left_assoc(p, parse_and, is_or_op, RN_OR);
	p->depth--;
	return l;
}

/* Default output key of an unaliased SELECT item: a field path's last member, a
 * function's name, else "_N" (1-based position). */
static char *default_alias(const rules_node *e, int idx)
{
	if (e->k == RN_FIELD || e->k == RN_DOT)
		return strdup(e->name);
	if (e->k == RN_CALL && e->name)
		return strdup(e->name);
	if (e->k == RN_CAST)
		return strdup("cast");
	if (e->k == RN_VAR)
		return NULL; /* filled by caller */
	char buf[24];
	snprintf(buf, sizeof buf, "_%d", idx + 1);
	return strdup(buf);
}

static int parse_item(parser *p, rules_query *q)
{
	rules_item *items = realloc(q->items, sizeof *items * (size_t)(q->nitems + 1));
	if (!items) {
		fail(p, p->lx.tok.pos, "out of memory");
		return -1;
	}
	q->items = items;
	rules_item *it = &q->items[q->nitems];
	memset(it, 0, sizeof *it);
	if (cur(p) == TK_STAR) {
		if (q->value) {
			fail(p, p->lx.tok.pos, "SELECT VALUE takes one expression, not '*'");
			return -1;
		}
		q->nitems++;
		return next(p);
	}
	size_t pos = p->lx.tok.pos;
	it->e = parse_expr(p);
	if (!it->e)
		return -1;
	q->nitems++;
	if (cur(p) == TK_AS) {
		if (q->value) {
			fail(p, p->lx.tok.pos, "SELECT VALUE cannot take an alias");
			return -1;
		}
		if (next(p) < 0)
			return -1;
		/* alias: word(.word)* or a quoted string */
		if (cur(p) == TK_STR) {
			it->alias = p->lx.tok.str;
			p->lx.tok.str = NULL;
			if (next(p) < 0)
				return -1;
		} else if (is_word(cur(p))) {
			size_t start = p->lx.tok.pos, end = start + p->lx.tok.len;
			if (next(p) < 0)
				return -1;
			while (cur(p) == TK_DOT) {
				if (next(p) < 0)
					return -1;
				if (!is_word(cur(p))) {
					fail(p, p->lx.tok.pos, "expected a name after '.' in alias");
					return -1;
				}
				end = p->lx.tok.pos + p->lx.tok.len;
				if (next(p) < 0)
					return -1;
			}
			it->alias = strndup(p->lx.src + start, end - start);
		} else {
			fail(p, p->lx.tok.pos, "expected an alias name after AS");
			return -1;
		}
	} else if (!q->value) {
		if (it->e->k == RN_VAR) {
			it->alias = strdup(p->vars[it->e->ival]);
		} else {
			it->alias = default_alias(it->e, q->nitems - 1);
		}
	}
	if (!q->value && !it->alias) {
		fail(p, pos, "out of memory");
		return -1;
	}
	return 0;
}

static rules_query *parse_query(parser *p, int top)
{
	char dbuf[80];
	rules_query *q = calloc(1, sizeof *q);
	if (!q)
		return fail(p, p->lx.tok.pos, "out of memory");
	if (++p->depth > MAX_DEPTH) {
		fail(p, p->lx.tok.pos, "query nested too deeply");
		goto fail;
	}
	if (expect(p, TK_SELECT, "SELECT") < 0)
		goto fail;
	if (cur(p) == TK_VALUE) {
		q->value = 1;
		if (next(p) < 0)
			goto fail;
	}
	for (;;) {
		if (parse_item(p, q) < 0)
			goto fail;
		if (cur(p) != TK_COMMA)
			break;
		if (q->value) {
			fail(p, p->lx.tok.pos, "SELECT VALUE takes exactly one expression");
			goto fail;
		}
		if (next(p) < 0)
			goto fail;
	}
	if (cur(p) != TK_FROM) {
		if (cur(p) == TK_EOF)
			fail(p, p->lx.tok.pos, "expected FROM, found end of input");
		else
			fail(p, p->lx.tok.pos, "expected ',' or FROM, found %s", describe(p, dbuf, sizeof dbuf));
		goto fail;
	}
	if (next(p) < 0)
		goto fail;
	if (top) {
		if (cur(p) != TK_STR) {
			fail(p, p->lx.tok.pos, "FROM needs a topic filter in single quotes");
			goto fail;
		}
		char terr[120];
		if (rules_topic_filter_valid(p->lx.tok.str, terr, sizeof terr) < 0) {
			fail(p, p->lx.tok.pos + 1, "invalid topic filter: %s", terr);
			goto fail;
		}
		q->from_topic = p->lx.tok.str;
		p->lx.tok.str = NULL;
		if (next(p) < 0)
			goto fail;
	} else {
		q->from_expr = parse_expr(p);
		if (!q->from_expr)
			goto fail;
	}
	if (cur(p) == TK_WHERE) {
		if (next(p) < 0)
			goto fail;
		q->where = parse_expr(p);
		if (!q->where)
			goto fail;
	}
	p->depth--;
	return q;
fail:
	query_free(q);
	return NULL;
}

static void parser_init(parser *p, const char *src, size_t len, size_t start, rules_sql_version ver)
{
	memset(p, 0, sizeof *p);
	rules_lex_init(&p->lx, src, len, start, ver);
}

static void report(parser *p, size_t *err_pos, char *err, size_t errlen)
{
	if (err_pos)
		*err_pos = p->err_pos;
	if (err && errlen)
		snprintf(err, errlen, "%s", p->err);
}

rules_stmt *rules_parse_stmt(const char *src, size_t len, rules_sql_version ver, size_t *err_pos, char *err,
			     size_t errlen)
{
	char dbuf[80];
	parser p;
	parser_init(&p, src, len, 0, ver);
	rules_stmt *st = calloc(1, sizeof *st);
	if (!st) {
		fail(&p, 0, "out of memory");
		goto fail;
	}
	if (next(&p) < 0)
		goto fail;
	while (cur(&p) == TK_SET) {
		if (next(&p) < 0)
			goto fail;
		for (;;) {
			if (cur(&p) != TK_VAR) {
				fail(&p, p.lx.tok.pos, "expected @variable after SET");
				goto fail;
			}
			if (st->nvars >= RULES_MAX_VARS) {
				fail(&p, p.lx.tok.pos, "too many SET variables (max %d)", RULES_MAX_VARS);
				goto fail;
			}
			size_t vpos = p.lx.tok.pos;
			char *name = strndup(src + vpos + 1, p.lx.tok.len - 1);
			if (!name) {
				fail(&p, vpos, "out of memory");
				goto fail;
			}
			for (int i = 0; i < st->nvars; i++)
				if (strcmp(st->var_names[i], name) == 0) {
					fail(&p, vpos, "variable '@%s' is set twice", name);
					free(name);
					goto fail;
				}
			char **vn = realloc(st->var_names, sizeof *vn * (size_t)(st->nvars + 1));
			rules_node **ve = vn ? realloc(st->var_exprs, sizeof *ve * (size_t)(st->nvars + 1)) : NULL;
			if (vn)
				st->var_names = vn;
			if (!vn || !ve) {
				free(name);
				fail(&p, vpos, "out of memory");
				goto fail;
			}
			st->var_exprs = ve;
			if (next(&p) < 0 || expect(&p, TK_EQ, "'=' after the variable") < 0) {
				free(name);
				goto fail;
			}
			/* a variable can use the ones set before it, not itself */
			p.vars = st->var_names;
			p.nvars = st->nvars;
			rules_node *e = parse_expr(&p);
			if (!e) {
				free(name);
				goto fail;
			}
			st->var_names[st->nvars] = name;
			st->var_exprs[st->nvars] = e;
			st->nvars++;
			if (cur(&p) != TK_COMMA)
				break;
			if (next(&p) < 0)
				goto fail;
		}
	}
	p.vars = st->var_names;
	p.nvars = st->nvars;
	if (cur(&p) != TK_SELECT) {
		fail(&p, p.lx.tok.pos, "expected SELECT");
		goto fail;
	}
	st->q = parse_query(&p, 1);
	if (!st->q)
		goto fail;
	if (cur(&p) != TK_EOF) {
		fail(&p, p.lx.tok.pos, "unexpected %s after the statement", describe(&p, dbuf, sizeof dbuf));
		goto fail;
	}
	rules_lex_free(&p.lx);
	return st;
fail:
	report(&p, err_pos, err, errlen);
	rules_lex_free(&p.lx);
	rules_stmt_free(st);
	return NULL;
}

rules_node *rules_parse_expr(const char *src, size_t len, size_t start, rules_tok_kind end, rules_sql_version ver,
			     char **var_names, int nvars, size_t *end_pos, size_t *err_pos,
			     char *err, size_t errlen)
{
	char dbuf[80];
	parser p;
	parser_init(&p, src, len, start, ver);
	p.vars = var_names;
	p.nvars = nvars;
	rules_node *e = NULL;
	if (next(&p) < 0)
		goto fail;
	e = parse_expr(&p);
	if (!e)
		goto fail;
	if (cur(&p) != end) {
		if (end == TK_RBRACE)
			fail(&p, p.lx.tok.pos, "expected '}' to close ${...}");
		else
			fail(&p, p.lx.tok.pos, "unexpected %s after the expression", describe(&p, dbuf, sizeof dbuf));
		goto fail;
	}
	if (end_pos)
		*end_pos = p.lx.tok.pos + p.lx.tok.len;
	rules_lex_free(&p.lx);
	return e;
fail:
	report(&p, err_pos, err, errlen);
	rules_lex_free(&p.lx);
	rules_node_free(e);
	return NULL;
}
