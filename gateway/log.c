/*
 * log.c — see log.h. Lines look like
 *   2026-11-25T16:30:09.123Z level=warn sub=broker msg="connect failed" rc=7
 * The message text is the caller's printf output; callers write key=value pairs in it.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum tg_log_level g_level = TG_LOG_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last[512];
static unsigned g_repeats;
static time_t g_last_sec;

void tg_log_init(enum tg_log_level level) { g_level = level; }
enum tg_log_level tg_log_level_get(void) { return g_level; }

int tg_log_level_parse(const char *s)
{
	static const char *names[] = {"debug", "info", "warn", "error", "off"};
	for (int i = 0; i < 5; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

void tg_log_write(enum tg_log_level level, const char *sub, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error", "off"};
	char body[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

	pthread_mutex_lock(&g_lock);
	if (strcmp(body, g_last) == 0 && ts.tv_sec == g_last_sec) {
		g_repeats++;
		pthread_mutex_unlock(&g_lock);
		return;
	}
	if (g_repeats)
		fprintf(stderr, "%s.%03ldZ level=info sub=log msg=\"previous line repeated %u times\"\n",
			when, ts.tv_nsec / 1000000, g_repeats);
	g_repeats = 0;
	g_last_sec = ts.tv_sec;
	snprintf(g_last, sizeof g_last, "%s", body);
	fprintf(stderr, "%s.%03ldZ level=%s sub=%s %s\n", when, ts.tv_nsec / 1000000, names[level],
		sub, body);
	pthread_mutex_unlock(&g_lock);
}
