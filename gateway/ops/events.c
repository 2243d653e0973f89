/*
 * events.c — see events.h. The ring holds cap frames; frame seq lives in slot seq % cap.
 */
#include "ops/events.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

struct ops_events {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char **ring;
	size_t *lens;
	size_t cap;
	uint64_t seq; /* next frame's number; frames [seq - min(seq, cap), seq) are held */
	int closed;
};

ops_events *ops_events_new(size_t cap)
{
	ops_events *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->cap = cap ? cap : 256;
	e->ring = calloc(e->cap, sizeof *e->ring);
	e->lens = calloc(e->cap, sizeof *e->lens);
	if (!e->ring || !e->lens) {
		free(e->ring);
		free(e->lens);
		free(e);
		return NULL;
	}
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* waits survive wall-clock steps */
	pthread_cond_init(&e->cv, &ca);
	pthread_condattr_destroy(&ca);
	e->seq = 1;
	return e;
}

void ops_events_free(ops_events *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->cap; i++)
		free(e->ring[i]);
	free(e->ring);
	free(e->lens);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
}

void ops_events_publish(ops_events *e, const char *type, const char *json)
{
	char frame[OPS_EVENT_MAX + 64];
	pthread_mutex_lock(&e->mu);
	uint64_t id = e->seq;
	pthread_mutex_unlock(&e->mu);
	/* the id is only a hint for clients (Last-Event-ID is not honoured): formatting
	 * outside the lock may number two racing frames out of order, which harms nothing */
	int n = snprintf(frame, sizeof frame, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)id, type, json);
	if (n < 0 || (size_t)n >= sizeof frame)
		return;
	char *copy = malloc((size_t)n + 1);
	if (!copy)
		return;
	memcpy(copy, frame, (size_t)n + 1);
	pthread_mutex_lock(&e->mu);
	size_t slot = e->seq % e->cap;
	free(e->ring[slot]);
	e->ring[slot] = copy;
	e->lens[slot] = (size_t)n;
	e->seq++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

uint64_t ops_events_head(ops_events *e)
{
	pthread_mutex_lock(&e->mu);
	uint64_t s = e->seq;
	pthread_mutex_unlock(&e->mu);
	return s;
}

ssize_t ops_events_read(ops_events *e, uint64_t *next, char *buf, size_t max, int wait_ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += wait_ms / 1000;
	dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	size_t used = 0;
	pthread_mutex_lock(&e->mu);
	while (!e->closed && *next >= e->seq)
		if (pthread_cond_timedwait(&e->cv, &e->mu, &dl) != 0)
			break;
	if (e->closed) {
		pthread_mutex_unlock(&e->mu);
		return -1;
	}
	uint64_t oldest = e->seq > e->cap ? e->seq - e->cap : 1;
	if (*next < oldest) {
		int n = snprintf(buf, max, "event: lost\ndata: {\"missed\":%llu}\n\n", (unsigned long long)(oldest - *next));
		if (n > 0 && (size_t)n < max)
			used = (size_t)n;
		*next = oldest;
	}
	while (*next < e->seq) {
		size_t slot = *next % e->cap;
		if (used + e->lens[slot] > max)
			break;
		memcpy(buf + used, e->ring[slot], e->lens[slot]);
		used += e->lens[slot];
		(*next)++;
	}
	pthread_mutex_unlock(&e->mu);
	return (ssize_t)used;
}

void ops_events_close(ops_events *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->closed = 1;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}
