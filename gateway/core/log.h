/*
 * log.h — one-line key=value log records on stderr, journald-friendly.
 *
 * The level is checked before any formatting happens, so a disabled debug line costs one
 * comparison. Identical consecutive lines within a second are folded into a
 * "repeated N times" line so a flapping peer cannot flood the journal. The log state is
 * the one piece of process-wide state besides the signal flags: it is set once at start-up
 * (tg_log_init) before any thread starts, and the repeat suppression is mutex-protected.
 *
 * Callers write `key=%s` or `key=\"%s\"` pairs in the format; the values are escaped by
 * logfmt rules when the line is assembled (log.c), so any argument text is safe.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum tg_log_level { TG_LOG_DEBUG = 0, TG_LOG_INFO, TG_LOG_WARN, TG_LOG_ERROR, TG_LOG_OFF };

void tg_log_init(enum tg_log_level level);
enum tg_log_level tg_log_level_get(void);
int tg_log_level_parse(const char *s); /* returns level or -1 */
void tg_log_write(enum tg_log_level level, const char *sub, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The body of a line as tg_log_write assembles it (no timestamp, level or sub), into buf;
 * returns its length. For tests and for callers that build a line elsewhere. */
size_t tg_log_format(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
size_t tg_log_vformat(char *buf, size_t cap, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#define TG_LOG(level, sub, ...)                                   \
	do {                                                      \
		if ((level) >= tg_log_level_get())                \
			tg_log_write((level), (sub), __VA_ARGS__); \
	} while (0)

#define LOG_DEBUG(sub, ...) TG_LOG(TG_LOG_DEBUG, sub, __VA_ARGS__)
#define LOG_INFO(sub, ...) TG_LOG(TG_LOG_INFO, sub, __VA_ARGS__)
#define LOG_WARN(sub, ...) TG_LOG(TG_LOG_WARN, sub, __VA_ARGS__)
#define LOG_ERROR(sub, ...) TG_LOG(TG_LOG_ERROR, sub, __VA_ARGS__)

#endif
