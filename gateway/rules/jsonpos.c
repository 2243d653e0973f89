/*
 * jsonpos.c — positions of values inside a JSON rule file.
 *
 * jansson tells us where a syntax error is but not where a valid value sits, and errors in
 * the SQL (or in a template or alert condition) must be reported at the file's line and
 * column. This is a small read-only walker over the raw text that finds the string token
 * at a key path, and a mapper from a byte index in the decoded string back to the raw
 * offset, stepping over escapes (\n, \", \uXXXX and surrogate pairs) exactly as the
 * decoder consumed them.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_int.h"

typedef struct jw {
	const char *s;
	size_t n, i;
	int depth;
} jw;

static void ws(jw *w)
{
	while (w->i < w->n && (w->s[w->i] == ' ' || w->s[w->i] == '\t' || w->s[w->i] == '\n' || w->s[w->i] == '\r'))
		w->i++;
}

/* at '"': move past the closing quote */
static int skip_string(jw *w)
{
	if (w->i >= w->n || w->s[w->i] != '"')
		return -1;
	w->i++;
	while (w->i < w->n) {
		char c = w->s[w->i];
		if (c == '\\') {
			w->i += 2;
			continue;
		}
		w->i++;
		if (c == '"')
			return 0;
	}
	return -1;
}

static int skip_value(jw *w);

static int skip_container(jw *w, char close)
{
	if (++w->depth > 256)
		return -1;
	w->i++;
	ws(w);
	if (w->i < w->n && w->s[w->i] == close) {
		w->i++;
		w->depth--;
		return 0;
	}
	for (;;) {
		ws(w);
		if (close == '}') {
			if (skip_string(w) < 0)
				return -1;
			ws(w);
			if (w->i >= w->n || w->s[w->i] != ':')
				return -1;
			w->i++;
			ws(w);
		}
		if (skip_value(w) < 0)
			return -1;
		ws(w);
		if (w->i >= w->n)
			return -1;
		if (w->s[w->i] == ',') {
			w->i++;
			continue;
		}
		if (w->s[w->i] == close) {
			w->i++;
			w->depth--;
			return 0;
		}
		return -1;
	}
}

static int skip_value(jw *w)
{
	ws(w);
	if (w->i >= w->n)
		return -1;
	char c = w->s[w->i];
	if (c == '"')
		return skip_string(w);
	if (c == '{')
		return skip_container(w, '}');
	if (c == '[')
		return skip_container(w, ']');
	while (w->i < w->n && (isalnum((unsigned char)w->s[w->i]) || strchr("+-.", w->s[w->i])))
		w->i++;
	return 0;
}

/* compare a raw key token (at its opening quote) with a plain key */
static int key_eq(const char *raw, size_t rawlen, const char *key)
{
	size_t kl = strlen(key);
	return rawlen == kl + 2 && memcmp(raw + 1, key, kl) == 0;
}

static int walk(jw *w, const char *const *path, int npath, size_t *out)
{
	ws(w);
	if (w->i >= w->n)
		return -1;
	if (npath == 0) {
		*out = w->i; /* any value; callers that map string offsets check for '"' */
		return 1;
	}
	char c = w->s[w->i];
	if (c != '{' && c != '[')
		return 0;
	char close = c == '{' ? '}' : ']';
	long want = close == ']' ? strtol(path[0], NULL, 10) : -1;
	long idx = 0;
	w->i++;
	ws(w);
	if (w->i < w->n && w->s[w->i] == close)
		return 0;
	for (;;) {
		ws(w);
		int hit;
		if (close == '}') {
			size_t ks = w->i;
			if (skip_string(w) < 0)
				return -1;
			hit = key_eq(w->s + ks, w->i - ks, path[0]);
			ws(w);
			if (w->i >= w->n || w->s[w->i] != ':')
				return -1;
			w->i++;
		} else {
			hit = idx == want;
		}
		if (hit) {
			int r = walk(w, path + 1, npath - 1, out);
			if (r != 0)
				return r;
			return 0;
		}
		if (skip_value(w) < 0)
			return -1;
		ws(w);
		if (w->i >= w->n)
			return -1;
		if (w->s[w->i] == ',') {
			w->i++;
			idx++;
			continue;
		}
		return 0;
	}
}

int rules_jpos_find(const char *text, size_t len, const char *const *path, int npath, size_t *raw_off)
{
	jw w = {text, len, 0, 0};
	return walk(&w, path, npath, raw_off) == 1 ? 0 : -1;
}

static int hexval(const char *p, unsigned *v)
{
	*v = 0;
	for (int k = 0; k < 4; k++) {
		char h = p[k];
		*v <<= 4;
		if (h >= '0' && h <= '9')
			*v |= (unsigned)(h - '0');
		else if (h >= 'a' && h <= 'f')
			*v |= (unsigned)(h - 'a' + 10);
		else if (h >= 'A' && h <= 'F')
			*v |= (unsigned)(h - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

size_t rules_jpos_map(const char *text, size_t len, size_t raw_off, size_t idx)
{
	size_t i = raw_off + 1, d = 0;
	while (i < len && text[i] != '"') {
		size_t start = i, bytes = 1;
		if (text[i] == '\\' && i + 1 < len) {
			if (text[i + 1] == 'u' && i + 6 <= len) {
				unsigned cp;
				i += 6;
				if (hexval(text + start + 2, &cp) == 0) {
					if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= len && text[i] == '\\' && text[i + 1] == 'u') {
						i += 6;
						bytes = 4;
					} else {
						bytes = cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
					}
				}
			} else {
				i += 2;
			}
		} else {
			i++;
		}
		if (idx < d + bytes)
			return start;
		d += bytes;
	}
	return i;
}

void rules_jpos_linecol(const char *text, size_t len, size_t off, int *line, int *col)
{
	int l = 1, c = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (text[i] == '\n') {
			l++;
			c = 1;
		} else if (((unsigned char)text[i] & 0xC0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*col = c;
}
