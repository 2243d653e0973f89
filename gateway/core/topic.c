/*
 * topic.c — MQTT topic filters: validate, compile into levels, match (see topic.h).
 */
#include "core/topic.h"

#include <stdlib.h>
#include <string.h>

enum { LV_LITERAL, LV_PLUS, LV_HASH };

struct level {
	unsigned off, len; /* literal text: filter text + off, len bytes */
	int kind;
};

struct tg_topic_filter {
	char *text;
	unsigned n;
	struct level lv[];
};

int tg_topic_filter_valid(const char *f)
{
	if (!f || !*f)
		return 0;
	for (const char *p = f; *p; p++) {
		if (*p == '+' && ((p != f && p[-1] != '/') || (p[1] && p[1] != '/')))
			return 0;
		if (*p == '#' && ((p != f && p[-1] != '/') || p[1]))
			return 0;
	}
	return 1;
}

tg_topic_filter *tg_topic_filter_new(const char *filter)
{
	if (!tg_topic_filter_valid(filter))
		return NULL;
	unsigned n = 1;
	for (const char *p = filter; *p; p++)
		n += *p == '/';
	tg_topic_filter *f = calloc(1, sizeof *f + n * sizeof f->lv[0]);
	if (!f)
		return NULL;
	if (!(f->text = strdup(filter))) {
		free(f);
		return NULL;
	}
	const char *p = f->text;
	for (unsigned i = 0; i < n; i++) {
		const char *e = strchrnul(p, '/');
		struct level *l = &f->lv[i];
		l->off = (unsigned)(p - f->text);
		l->len = (unsigned)(e - p);
		l->kind = l->len == 1 && *p == '+' ? LV_PLUS : l->len == 1 && *p == '#' ? LV_HASH : LV_LITERAL;
		p = *e ? e + 1 : e;
	}
	f->n = n;
	return f;
}

void tg_topic_filter_free(tg_topic_filter *f)
{
	if (!f)
		return;
	free(f->text);
	free(f);
}

const char *tg_topic_filter_text(const tg_topic_filter *f)
{
	return f ? f->text : NULL;
}

int tg_topic_filter_match(const tg_topic_filter *f, const char *t)
{
	if (!f || !t)
		return 0;
	if (t[0] == '$' && f->lv[0].kind != LV_LITERAL)
		return 0;
	for (unsigned i = 0;;) {
		const struct level *l = &f->lv[i];
		if (l->kind == LV_HASH)
			return 1;
		if (l->kind == LV_PLUS) {
			t = strchrnul(t, '/');
		} else {
			/* strncmp stops at the topic's end, so a shorter topic cannot be over-read */
			if (strncmp(t, f->text + l->off, l->len) != 0)
				return 0;
			t += l->len;
			if (*t && *t != '/')
				return 0;
		}
		if (++i == f->n)
			return *t == '\0';
		if (*t == '/') {
			t++;
			continue;
		}
		/* the topic ended a level early: only a final '#' matches on (it includes the
		 * parent level) */
		return f->lv[i].kind == LV_HASH;
	}
}

int tg_topic_match(const char *f, const char *t)
{
	if (!f || !t)
		return 0;
	if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
		return 0;
	for (;;) {
		if (f[0] == '#' && f[1] == '\0')
			return 1;
		if (f[0] == '+' && (f[1] == '/' || f[1] == '\0')) {
			f++;
			while (*t && *t != '/')
				t++;
		} else {
			while (*f && *f != '/') {
				if (*f != *t)
					return 0;
				f++;
				t++;
			}
			if (*t && *t != '/')
				return 0;
		}
		if (*f == '\0' && *t == '\0')
			return 1;
		if (*f == '/' && *t == '/') {
			f++;
			t++;
			continue;
		}
		/* "a/#" also matches "a" (MQTT: # includes the parent level) */
		if (*f == '/' && *t == '\0' && f[1] == '#' && f[2] == '\0')
			return 1;
		return 0;
	}
}
