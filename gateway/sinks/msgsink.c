/*
 * msgsink.c — see msgsink.h. A template is a short list of parts (literal runs and
 * placeholders); expansion appends them in order, so a record costs a few memcpy.
 */
#include "sinks/msgsink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

static const struct {
	const char *name;
	msgsink_tmpl_kind kind;
} placeholders[] = {
	{"<prefix>", TMPL_PREFIX},
	{"<table>", TMPL_TABLE},
	{"<thing>", TMPL_THING},
	{"<gateway>", TMPL_GATEWAY},
};

static int add_part(msgsink_tmpl *t, size_t *cap, msgsink_tmpl_part p)
{
	if (t->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		msgsink_tmpl_part *np = realloc(t->parts, nc * sizeof *np);
		if (!np)
			return TG_ENOMEM;
		t->parts = np;
		*cap = nc;
	}
	t->parts[t->n++] = p;
	return 0;
}

int msgsink_tmpl_compile(msgsink_tmpl *t, const char *text, char *err, size_t errlen)
{
	size_t cap = 0;
	*t = (msgsink_tmpl){0};
	if (!(t->text = strdup(text)))
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	size_t i = 0, lit = 0, len = strlen(text);
	while (i < len) {
		if (text[i] != '<') {
			i++;
			continue;
		}
		const char *close = strchr(text + i, '>');
		if (!close) {
			msgsink_tmpl_free(t);
			return tg_seterr(err, errlen, TG_EINVAL, "column %zu: '<' without '>'", i + 1);
		}
		size_t plen = (size_t)(close - (text + i)) + 1, k = 0;
		while (k < sizeof placeholders / sizeof placeholders[0] &&
		       (strlen(placeholders[k].name) != plen || memcmp(placeholders[k].name, text + i, plen)))
			k++;
		if (k == sizeof placeholders / sizeof placeholders[0]) {
			tg_seterr(err, errlen, TG_EINVAL,
				  "column %zu: unknown placeholder %.*s (known: <prefix> <table> <thing> <gateway>)", i + 1,
				  (int)plen, text + i);
			msgsink_tmpl_free(t);
			return TG_EINVAL;
		}
		if ((i > lit && add_part(t, &cap, (msgsink_tmpl_part){TMPL_LIT, lit, i - lit})) ||
		    add_part(t, &cap, (msgsink_tmpl_part){placeholders[k].kind, 0, 0})) {
			msgsink_tmpl_free(t);
			return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		}
		i += plen;
		lit = i;
	}
	if (len > lit && add_part(t, &cap, (msgsink_tmpl_part){TMPL_LIT, lit, len - lit})) {
		msgsink_tmpl_free(t);
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	}
	return 0;
}

/* Append the expansion for r to b, NUL-terminated (the NUL is not counted in b->len). */
static int append_expansion(const msgsink_tmpl *t, tg_buf *b, const char *prefix, const char *gateway,
			    const sink_record *r)
{
	for (size_t i = 0; i < t->n; i++) {
		const msgsink_tmpl_part *p = &t->parts[i];
		const char *s = NULL;
		switch (p->kind) {
		case TMPL_LIT:
			if (tg_buf_put(b, t->text + p->off, p->len))
				return TG_ENOMEM;
			continue;
		case TMPL_PREFIX: s = prefix; break;
		case TMPL_TABLE: s = r->table; break;
		case TMPL_THING: s = r->pkey; break;
		case TMPL_GATEWAY: s = gateway; break;
		}
		if (tg_buf_puts(b, s ? s : ""))
			return TG_ENOMEM;
	}
	if (tg_buf_reserve(b, 0))
		return TG_ENOMEM;
	b->p[b->len] = '\0'; /* even for an empty expansion */
	return 0;
}

int msgsink_tmpl_expand(const msgsink_tmpl *t, tg_buf *b, const char *prefix, const char *gateway,
			const sink_record *r)
{
	tg_buf_reset(b);
	return append_expansion(t, b, prefix, gateway, r);
}

int msgsink_names_expand(msgsink_names *nm, const msgsink_tmpl *t, const char *prefix, const char *gateway,
			 const sink_record *recs, size_t n)
{
	if (n > nm->cap) {
		size_t *off = realloc(nm->off, n * sizeof *off);
		if (!off)
			return TG_ENOMEM;
		nm->off = off;
		size_t *len = realloc(nm->len, n * sizeof *len);
		if (!len)
			return TG_ENOMEM;
		nm->len = len;
		nm->cap = n;
	}
	tg_buf_reset(&nm->all);
	for (size_t i = 0; i < n; i++) {
		nm->off[i] = nm->all.len;
		if (append_expansion(t, &nm->all, prefix, gateway, &recs[i]))
			return TG_ENOMEM;
		nm->len[i] = nm->all.len - nm->off[i];
		nm->all.len++; /* keep the NUL: the next name starts after it */
	}
	return 0;
}

void msgsink_names_free(msgsink_names *nm)
{
	if (!nm)
		return;
	tg_buf_free(&nm->all);
	free(nm->off);
	free(nm->len);
	*nm = (msgsink_names){0};
}

void msgsink_tmpl_free(msgsink_tmpl *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->parts);
	*t = (msgsink_tmpl){0};
}

int msgsink_reason(char *err, size_t errlen, int code, const char *screened, const char *refused,
		   const char *retried)
{
	const char *parts[] = {screened, refused, retried};
	size_t used = 0;
	if (!err || !errlen)
		return code;
	for (size_t i = 0; i < 3; i++) {
		if (!parts[i] || !*parts[i])
			continue;
		if (used == 0)
			err[0] = '\0';
		int n = snprintf(err + used, errlen - used, "%s%s", used ? "; " : "", parts[i]);
		if (n < 0)
			break;
		used += (size_t)n;
		if (used >= errlen - 1) {
			used = errlen - 1;
			break;
		}
	}
	return code;
}
