/*
 * dedupe.c — bounded (thing, ts) duplicate detection.
 *
 * Design: a chained hash table of things (FNV-1a over the name, bucket count a power of two
 * sized for max_things up front) plus an LRU list through the same nodes, so a full table
 * recycles its least recently seen node instead of allocating. Each node holds a fixed ring
 * of (ts, first-seen) pairs. A lookup scans the ring from the newest entry and stops at the
 * first entry older than the window: arrival times are (near-)monotonic, so everything
 * beyond it has expired too, and in steady state only the window's worth of entries is
 * looked at. Nothing is freed while running; the memory high-water mark is
 * max_things * (node + per_thing * 16 bytes).
 */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

struct entry {
	int64_t ts;
	int64_t seen;
};

struct thing {
	struct thing *hnext;          /* hash chain */
	struct thing *lprev, *lnext;  /* LRU list, head = most recently seen */
	uint64_t hash;
	char *name;
	size_t head;                  /* next write position in ring */
	size_t count;                 /* valid entries */
	struct entry ring[];
};

struct dedupe {
	dedupe_conf c;
	struct thing **buckets;
	size_t mask;
	struct thing *lru_head, *lru_tail;
	dedupe_stats st;
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

dedupe *dedupe_new(const dedupe_conf *conf, char *err, size_t errlen)
{
	dedupe *d = NULL;
	if (!conf || conf->window_ms <= 0 || conf->per_thing < 1 || conf->per_thing > 65536 ||
	    conf->max_things < 1 || conf->max_things > 10000000) {
		tg_seterr(err, errlen, TG_EINVAL,
			  "dedupe: need window_ms > 0, per_thing 1..65536, max_things 1..10000000");
		return NULL;
	}
	if (!(d = calloc(1, sizeof *d)))
		goto nomem;
	d->c = *conf;
	size_t nb = 16;
	while (nb < conf->max_things)
		nb <<= 1;
	if (!(d->buckets = calloc(nb, sizeof *d->buckets)))
		goto nomem;
	d->mask = nb - 1;
	return d;
nomem:
	dedupe_free(d);
	tg_seterr(err, errlen, TG_ENOMEM, "dedupe: out of memory");
	return NULL;
}

void dedupe_free(dedupe *d)
{
	if (!d)
		return;
	struct thing *t = d->lru_head;
	while (t) {
		struct thing *n = t->lnext;
		free(t->name);
		free(t);
		t = n;
	}
	free(d->buckets);
	free(d);
}

static void lru_unlink(dedupe *d, struct thing *t)
{
	if (t->lprev)
		t->lprev->lnext = t->lnext;
	else
		d->lru_head = t->lnext;
	if (t->lnext)
		t->lnext->lprev = t->lprev;
	else
		d->lru_tail = t->lprev;
	t->lprev = t->lnext = NULL;
}

static void lru_push_front(dedupe *d, struct thing *t)
{
	t->lprev = NULL;
	t->lnext = d->lru_head;
	if (d->lru_head)
		d->lru_head->lprev = t;
	d->lru_head = t;
	if (!d->lru_tail)
		d->lru_tail = t;
}

static void hash_unlink(dedupe *d, struct thing *t)
{
	struct thing **pp = &d->buckets[t->hash & d->mask];
	while (*pp && *pp != t)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = t->hnext;
	t->hnext = NULL;
}

/* A node for a thing not seen before: recycled from the LRU tail when full. */
static struct thing *thing_new(dedupe *d, const char *name, uint64_t h)
{
	struct thing *t;
	char *nm = strdup(name);
	if (!nm)
		return NULL;
	if (d->st.things >= d->c.max_things) {
		t = d->lru_tail;
		lru_unlink(d, t);
		hash_unlink(d, t);
		free(t->name);
		d->st.things_evicted++;
	} else {
		t = malloc(sizeof *t + d->c.per_thing * sizeof t->ring[0]);
		if (!t) {
			free(nm);
			return NULL;
		}
		d->st.things++;
	}
	t->name = nm;
	t->hash = h;
	t->head = t->count = 0;
	t->hnext = d->buckets[h & d->mask];
	d->buckets[h & d->mask] = t;
	lru_push_front(d, t);
	return t;
}

int dedupe_check(dedupe *d, const char *thing, int64_t ts_ms, int64_t now_ms)
{
	if (!d || !thing)
		return TG_EINVAL;
	uint64_t h = fnv1a(thing);
	struct thing *t = d->buckets[h & d->mask];
	while (t && (t->hash != h || strcmp(t->name, thing) != 0))
		t = t->hnext;
	size_t cap = d->c.per_thing;
	if (t) {
		if (t != d->lru_head) {
			lru_unlink(d, t);
			lru_push_front(d, t);
		}
		for (size_t i = 0; i < t->count; i++) {
			const struct entry *e = &t->ring[(t->head + cap - 1 - i) % cap];
			if (now_ms - e->seen > d->c.window_ms)
				break; /* this and every older entry expired */
			if (e->ts == ts_ms) {
				d->st.checked++;
				d->st.duplicates++;
				return 1;
			}
		}
	} else if (!(t = thing_new(d, thing, h))) {
		return TG_ENOMEM;
	}
	struct entry *w = &t->ring[t->head];
	if (t->count == cap && now_ms - w->seen <= d->c.window_ms)
		d->st.overwritten++;
	w->ts = ts_ms;
	w->seen = now_ms;
	t->head = (t->head + 1) % cap;
	if (t->count < cap)
		t->count++;
	d->st.checked++;
	return 0;
}

void dedupe_get_stats(const dedupe *d, dedupe_stats *out)
{
	if (!out)
		return;
	if (!d) {
		memset(out, 0, sizeof *out);
		return;
	}
	*out = d->st;
}
