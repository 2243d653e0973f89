/*
 * clock.h — the few clock readings the gateway takes, in one place. Logic that depends on
 * time takes now_ms as a parameter (tests inject it); only the edges of the program read
 * the clock, through these. Header-only so the broker plugin can use it without linking.
 */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <pthread.h>
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

/* A condition variable whose timed waits run on CLOCK_MONOTONIC: a wall-clock step (NTP
 * at boot, an operator's `date -s`) neither stretches a wait by the size of the step nor
 * cuts it short. Every condition variable waited on with tg_deadline_in() is made here. */
static inline int tg_cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	int rc = pthread_condattr_init(&ca);
	if (rc)
		return rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return rc;
}

/* Absolute CLOCK_MONOTONIC time timeout_ms from now, for pthread_cond_timedwait on a
 * condition variable made by tg_cond_init_mono(). */
static inline struct timespec tg_deadline_in(int64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (timeout_ms % 1000) * 1000000;
	ts.tv_sec += (time_t)(timeout_ms / 1000 + ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return ts;
}

/* Milliseconds from `since` to `now`, both wall-clock readings, with a backward step seen
 * as "due now" (INT64_MAX) rather than as a wait of the step's size: what times a group
 * commit or a keep-alive with injected wall time uses it, so a clock stepped back an hour
 * cannot hold a commit (and the PUBACKs behind it) for an hour. */
static inline int64_t tg_elapsed_ms(int64_t now, int64_t since)
{
	return now < since ? INT64_MAX : now - since;
}

#endif
