/*
 * ratelog.c — see ratelog.h. A slot remembers when its key last reported and how many events
 * arrived since; keys are hashed into a power-of-two table and probed over PROBE slots.
 */
#include "core/ratelog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

#define PROBE 4
#define KEY_MAX 96
#define CTX_MAX 200

struct slot {
	int used;
	int kind;
	int64_t reported_ms; /* when this key last reported */
	uint64_t pending;    /* events since then */
	char key[KEY_MAX];
	char ctx[CTX_MAX];
};

struct ratelog {
	struct slot *s;
	size_t mask;
	int64_t interval_ms;
	ratelog_report_fn fn;
	void *ud;
};

ratelog *ratelog_new(size_t slots, int64_t interval_ms, ratelog_report_fn fn, void *ud)
{
	size_t n = PROBE;
	while (n < slots)
		n *= 2;
	ratelog *rl = calloc(1, sizeof *rl);
	if (!rl || !(rl->s = calloc(n, sizeof *rl->s))) {
		free(rl);
		return NULL;
	}
	rl->mask = n - 1;
	rl->interval_ms = interval_ms > 0 ? interval_ms : 1;
	rl->fn = fn;
	rl->ud = ud;
	return rl;
}

static void report(ratelog *rl, struct slot *s, int64_t now_ms)
{
	if (s->pending)
		rl->fn(rl->ud, s->key, s->kind, s->pending, s->ctx);
	s->pending = 0;
	s->reported_ms = now_ms;
}

void ratelog_free(ratelog *rl)
{
	if (!rl)
		return;
	for (size_t i = 0; i <= rl->mask; i++)
		if (rl->s[i].used)
			report(rl, &rl->s[i], 0);
	free(rl->s);
	free(rl);
}

static void set_ctx(struct slot *s, const char *context)
{
	snprintf(s->ctx, sizeof s->ctx, "%s", context ? context : "");
}

void ratelog_hit(ratelog *rl, const char *key, int kind, const char *context, int64_t now_ms)
{
	char k[KEY_MAX];
	snprintf(k, sizeof k, "%s", key ? key : "");
	size_t h = (size_t)(tg_hash_str(TG_HASH_SEED ^ (uint64_t)(unsigned)kind, k));
	struct slot *free_slot = NULL, *oldest = NULL;
	for (size_t i = 0; i < PROBE; i++) {
		struct slot *s = &rl->s[(h + i) & rl->mask];
		if (s->used && s->kind == kind && strcmp(s->key, k) == 0) {
			s->pending++;
			set_ctx(s, context);
			if (now_ms - s->reported_ms >= rl->interval_ms)
				report(rl, s, now_ms);
			return;
		}
		if (!s->used) {
			if (!free_slot)
				free_slot = s;
		} else if (!oldest || s->reported_ms < oldest->reported_ms) {
			oldest = s;
		}
	}
	struct slot *victim = free_slot ? free_slot : oldest;
	if (victim->used)
		report(rl, victim, now_ms); /* no room: the oldest neighbour reports early */
	memset(victim, 0, sizeof *victim);
	victim->used = 1;
	victim->kind = kind;
	memcpy(victim->key, k, sizeof k);
	victim->pending = 1;
	set_ctx(victim, context);
	report(rl, victim, now_ms); /* the first event of a key is reported at once */
}

void ratelog_tick(ratelog *rl, int64_t now_ms)
{
	for (size_t i = 0; i <= rl->mask; i++) {
		struct slot *s = &rl->s[i];
		if (!s->used || now_ms - s->reported_ms < rl->interval_ms)
			continue;
		if (s->pending)
			report(rl, s, now_ms);
		else
			s->used = 0; /* quiet for a whole interval: its next event reports at once */
	}
}
