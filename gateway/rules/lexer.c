/*
 * lexer.c — tokenizer for the IoT SQL dialect.
 *
 * A hand-written scanner over a byte range that records the byte offset of every token so
 * the parser can report errors at exact positions (which the loader then maps to the
 * rule file's line and column). Keywords are case-insensitive, identifiers are
 * case-sensitive; strings may use single or double quotes with backslash escapes or a
 * doubled quote. Numbers without a fraction or exponent are Int; a literal such as 10.0
 * is a whole number and, as SQL version 2016-03-23 prescribes, is treated as Int.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules/rules_int.h"

static const struct {
	const char *w;
	rules_tok_kind k;
} keywords[] = {
	{"select", TK_SELECT}, {"from", TK_FROM}, {"where", TK_WHERE}, {"as", TK_AS},
	{"and", TK_AND},       {"or", TK_OR},     {"not", TK_NOT},     {"case", TK_CASE},
	{"when", TK_WHEN},     {"then", TK_THEN}, {"else", TK_ELSE},   {"end", TK_END},
	{"value", TK_VALUE},   {"null", TK_NULL}, {"true", TK_TRUE},   {"false", TK_FALSE},
	{"set", TK_SET},
};

const char *rules_tok_name(rules_tok_kind k)
{
	switch (k) {
	case TK_EOF: return "end of input";
	case TK_ERR: return "invalid token";
	case TK_IDENT: return "identifier";
	case TK_VAR: return "variable";
	case TK_INT:
	case TK_DEC: return "number";
	case TK_STR: return "string";
	case TK_LPAREN: return "'('";
	case TK_RPAREN: return "')'";
	case TK_LBRACK: return "'['";
	case TK_RBRACK: return "']'";
	case TK_LBRACE: return "'{'";
	case TK_RBRACE: return "'}'";
	case TK_COMMA: return "','";
	case TK_DOT: return "'.'";
	case TK_COLON: return "':'";
	case TK_STAR: return "'*'";
	case TK_PLUS: return "'+'";
	case TK_MINUS: return "'-'";
	case TK_SLASH: return "'/'";
	case TK_PERCENT: return "'%'";
	case TK_EQ: return "'='";
	case TK_NE: return "'<>'";
	case TK_LT: return "'<'";
	case TK_LE: return "'<='";
	case TK_GT: return "'>'";
	case TK_GE: return "'>='";
	default: break;
	}
	for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
		if (keywords[i].k == k)
			return keywords[i].w;
	return "token";
}

void rules_lex_init(rules_lexer *lx, const char *src, size_t len, size_t start)
{
	memset(lx, 0, sizeof *lx);
	lx->src = src;
	lx->len = len;
	lx->pos = start;
}

void rules_lex_free(rules_lexer *lx)
{
	if (!lx)
		return;
	free(lx->tok.str);
	lx->tok.str = NULL;
}

static int lex_fail(rules_lexer *lx, size_t pos, const char *msg)
{
	lx->err_pos = pos;
	snprintf(lx->err, sizeof lx->err, "%s", msg);
	lx->tok.k = TK_ERR;
	lx->tok.pos = pos;
	return -1;
}

static int put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	o[0] = (char)(0xE0 | (cp >> 12));
	o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[2] = (char)(0x80 | (cp & 0x3F));
	return 3;
}

static int lex_string(rules_lexer *lx, size_t start)
{
	char q = lx->src[start];
	size_t i = start + 1;
	char *buf = malloc(lx->len - start + 1);
	size_t n = 0;
	if (!buf)
		return lex_fail(lx, start, "out of memory");
	for (;;) {
		if (i >= lx->len) {
			free(buf);
			return lex_fail(lx, start, "unterminated string literal");
		}
		char ch = lx->src[i];
		if (ch == q) {
			if (i + 1 < lx->len && lx->src[i + 1] == q) { /* doubled quote */
				buf[n++] = q;
				i += 2;
				continue;
			}
			i++;
			break;
		}
		if (ch == '\\' && i + 1 < lx->len) {
			char e = lx->src[i + 1];
			i += 2;
			switch (e) {
			case 'n': buf[n++] = '\n'; break;
			case 't': buf[n++] = '\t'; break;
			case 'r': buf[n++] = '\r'; break;
			case 'b': buf[n++] = '\b'; break;
			case 'f': buf[n++] = '\f'; break;
			case '0': buf[n++] = '\0'; break;
			case 'u': {
				unsigned cp = 0;
				if (i + 4 > lx->len) {
					free(buf);
					return lex_fail(lx, i - 2, "bad \\u escape in string literal");
				}
				for (int k = 0; k < 4; k++) {
					int h = lx->src[i + (size_t)k];
					cp <<= 4;
					if (h >= '0' && h <= '9')
						cp |= (unsigned)(h - '0');
					else if (h >= 'a' && h <= 'f')
						cp |= (unsigned)(h - 'a' + 10);
					else if (h >= 'A' && h <= 'F')
						cp |= (unsigned)(h - 'A' + 10);
					else {
						free(buf);
						return lex_fail(lx, i - 2, "bad \\u escape in string literal");
					}
				}
				i += 4;
				n += (size_t)put_utf8(buf + n, cp);
				break;
			}
			default: buf[n++] = e; break; /* \\ \' \" and anything else: literal */
			}
			continue;
		}
		buf[n++] = ch;
		i++;
	}
	buf[n] = '\0';
	lx->tok.k = TK_STR;
	lx->tok.str = buf;
	lx->tok.slen = n;
	lx->tok.len = i - start;
	lx->pos = i;
	return 0;
}

static int lex_number(rules_lexer *lx, size_t start)
{
	size_t i = start;
	int is_dec = 0;
	const char *s = lx->src;
	while (i < lx->len && isdigit((unsigned char)s[i]))
		i++;
	if (i < lx->len && s[i] == '.' && i + 1 < lx->len && isdigit((unsigned char)s[i + 1])) {
		is_dec = 1;
		i++;
		while (i < lx->len && isdigit((unsigned char)s[i]))
			i++;
	}
	if (i < lx->len && (s[i] == 'e' || s[i] == 'E')) {
		size_t j = i + 1;
		if (j < lx->len && (s[j] == '-' || s[j] == '+'))
			j++;
		if (j < lx->len && isdigit((unsigned char)s[j])) {
			is_dec = 1;
			i = j;
			while (i < lx->len && isdigit((unsigned char)s[i]))
				i++;
		}
	}
	if (i < lx->len && (isalpha((unsigned char)s[i]) || s[i] == '_'))
		return lex_fail(lx, start, "malformed number");
	char tmp[128];
	size_t n = i - start;
	if (n >= sizeof tmp)
		return lex_fail(lx, start, "number literal too long");
	memcpy(tmp, s + start, n);
	tmp[n] = '\0';
	lx->tok.pos = start;
	lx->tok.len = n;
	lx->pos = i;
	if (!is_dec) {
		errno = 0;
		long long v = strtoll(tmp, NULL, 10);
		if (errno == 0) {
			lx->tok.k = TK_INT;
			lx->tok.ival = v;
			return 0;
		}
	}
	double d = strtod(tmp, NULL);
	if (!isfinite(d))
		return lex_fail(lx, start, "number literal out of range");
	lx->tok.k = TK_DEC;
	lx->tok.dval = d;
	return 0;
}

int rules_lex_next(rules_lexer *lx)
{
	free(lx->tok.str);
	lx->tok.str = NULL;
	lx->tok.slen = 0;
	const char *s = lx->src;
	while (lx->pos < lx->len && isspace((unsigned char)s[lx->pos]))
		lx->pos++;
	size_t p = lx->pos;
	lx->tok.pos = p;
	lx->tok.len = 1;
	if (p >= lx->len) {
		lx->tok.k = TK_EOF;
		lx->tok.len = 0;
		return 0;
	}
	char ch = s[p];
	if (isalpha((unsigned char)ch) || ch == '_' || ch == '@') {
		size_t i = p + (ch == '@');
		if (ch == '@' && (i >= lx->len || !(isalpha((unsigned char)s[i]) || s[i] == '_')))
			return lex_fail(lx, p, "expected a variable name after '@'");
		while (i < lx->len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		lx->tok.len = i - p;
		lx->pos = i;
		if (ch == '@') {
			lx->tok.k = TK_VAR;
			return 0;
		}
		lx->tok.k = TK_IDENT;
		for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++) {
			if (strlen(keywords[k].w) == lx->tok.len &&
			    strncasecmp(keywords[k].w, s + p, lx->tok.len) == 0) {
				lx->tok.k = keywords[k].k;
				break;
			}
		}
		return 0;
	}
	if (isdigit((unsigned char)ch))
		return lex_number(lx, p);
	if (ch == '\'' || ch == '"')
		return lex_string(lx, p);
	lx->pos = p + 1;
	char nx = p + 1 < lx->len ? s[p + 1] : '\0';
	switch (ch) {
	case '(': lx->tok.k = TK_LPAREN; return 0;
	case ')': lx->tok.k = TK_RPAREN; return 0;
	case '[': lx->tok.k = TK_LBRACK; return 0;
	case ']': lx->tok.k = TK_RBRACK; return 0;
	case '{': lx->tok.k = TK_LBRACE; return 0;
	case '}': lx->tok.k = TK_RBRACE; return 0;
	case ',': lx->tok.k = TK_COMMA; return 0;
	case '.':
		if (isdigit((unsigned char)nx))
			return lex_fail(lx, p, "a number must start with a digit");
		lx->tok.k = TK_DOT;
		return 0;
	case ':': lx->tok.k = TK_COLON; return 0;
	case '*': lx->tok.k = TK_STAR; return 0;
	case '+': lx->tok.k = TK_PLUS; return 0;
	case '-': lx->tok.k = TK_MINUS; return 0;
	case '/': lx->tok.k = TK_SLASH; return 0;
	case '%': lx->tok.k = TK_PERCENT; return 0;
	case '=':
		lx->tok.k = TK_EQ;
		if (nx == '=') {
			lx->pos++;
			lx->tok.len = 2;
		}
		return 0;
	case '!':
		if (nx == '=') {
			lx->tok.k = TK_NE;
			lx->pos++;
			lx->tok.len = 2;
			return 0;
		}
		return lex_fail(lx, p, "unexpected character '!'");
	case '<':
		if (nx == '>' || nx == '=') {
			lx->tok.k = nx == '>' ? TK_NE : TK_LE;
			lx->pos++;
			lx->tok.len = 2;
		} else {
			lx->tok.k = TK_LT;
		}
		return 0;
	case '>':
		if (nx == '=') {
			lx->tok.k = TK_GE;
			lx->pos++;
			lx->tok.len = 2;
		} else {
			lx->tok.k = TK_GT;
		}
		return 0;
	default: break;
	}
	char msg[64];
	if ((unsigned char)ch >= 0x20 && (unsigned char)ch < 0x7f)
		snprintf(msg, sizeof msg, "unexpected character '%c'", ch);
	else
		snprintf(msg, sizeof msg, "unexpected byte 0x%02x", (unsigned char)ch);
	return lex_fail(lx, p, msg);
}
