/*
 * clock.h — the few clock readings the gateway takes, in one place. Logic that depends on
 * time takes now_ms as a parameter (tests inject it); only the edges of the program read
 * the clock, through these. Header-only so the broker plugin can use it without linking.
 */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall clock, epoch milliseconds (record timestamps, group-commit deadlines). */
static inline int64_t tg_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic milliseconds (timeouts and backoff that must survive clock steps). */
static inline int64_t tg_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute CLOCK_REALTIME time timeout_ms from now, for pthread_cond_timedwait. */
static inline struct timespec tg_deadline_in(int64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = ts.tv_nsec + (timeout_ms % 1000) * 1000000;
	ts.tv_sec += (time_t)(timeout_ms / 1000 + ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return ts;
}

#endif
