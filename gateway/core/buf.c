/*
 * buf.c — see buf.h.
 */
#include "core/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

int tg_buf_reserve(tg_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1) {
		if (cap > SIZE_MAX / 2)
			return TG_ENOMEM;
		cap *= 2;
	}
	char *p = realloc(b->p, cap);
	if (!p)
		return TG_ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int tg_buf_put(tg_buf *b, const void *data, size_t len)
{
	if (tg_buf_reserve(b, len))
		return TG_ENOMEM;
	if (len)
		memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
	return 0;
}

int tg_buf_puts(tg_buf *b, const char *s)
{
	return tg_buf_put(b, s, strlen(s));
}

int tg_buf_printf(tg_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return TG_EINVAL;
	if (tg_buf_reserve(b, (size_t)n))
		return TG_ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void tg_buf_reset(tg_buf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

void tg_buf_shrink(tg_buf *b, size_t keep)
{
	if (b && b->cap > keep && b->len < b->cap / 4)
		tg_buf_free(b);
}

void tg_buf_free(tg_buf *b)
{
	if (!b)
		return;
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

