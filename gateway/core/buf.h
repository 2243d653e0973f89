/*
 * buf.h — the growable byte buffer the gateway builds texts in (AWS requests and their
 * canonical strings, serialised records): a NUL-terminated array that doubles as it grows.
 *
 * Ownership: the struct is the caller's (often on the stack or inside another object);
 * tg_buf_free releases the memory it points to.
 */
#ifndef TG_BUF_H
#define TG_BUF_H

#include <stddef.h>

typedef struct tg_buf {
	char *p;     /* NUL-terminated while len < cap */
	size_t len;
	size_t cap;
} tg_buf;

int tg_buf_reserve(tg_buf *b, size_t extra); /* room for extra bytes and a NUL: 0 or TG_ENOMEM */
int tg_buf_put(tg_buf *b, const void *data, size_t len);
int tg_buf_puts(tg_buf *b, const char *s);
int tg_buf_printf(tg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_buf_reset(tg_buf *b);  /* len = 0, keeps the memory */
void tg_buf_free(tg_buf *b);   /* NULL-safe; frees the memory, not b */
/* Give back memory grown for something big once it is used for small things again: frees
 * the buffer (as tg_buf_free) when it holds over keep bytes of room and its content fills
 * under a quarter of it. Buffers sized for a backlog's batches would otherwise hold their
 * high-water mark for the life of the process. */
void tg_buf_shrink(tg_buf *b, size_t keep);
#define TG_BUF_KEEP_BYTES ((size_t)1 << 20) /* the keep of buffers that batches fill */

#endif
