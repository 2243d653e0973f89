/*
 * dedupe.c — bounded (thing, ts) duplicate detection.
 *
 * Design: a chained hash table of things (hash.h over the name, bucket count a power of two
 * sized for max_things up front) plus an LRU list through the same nodes, so a full table
 * recycles its least recently seen node instead of allocating. Each node holds a fixed ring
 * of (ts, first-seen) pairs. A lookup scans the ring from the newest entry and stops at the
 * first entry older than the window: arrival times are (near-)monotonic, so everything
 * beyond it has expired too, and in steady state only the window's worth of entries is
 * looked at. Nothing is freed while running; the memory high-water mark is
 * max_things * (node + per_thing * 16 bytes).
 */
#include "edge/dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/hash.h"

#define DEDUPE_MIN_BUCKETS 64

struct entry {
	int64_t ts;
	int64_t seen;
};

struct thing {
	struct thing *hnext;          /* hash chain */
	struct thing *lprev, *lnext;  /* LRU list, head = most recently seen */
	uint64_t hash;
	char *name;                   /* in mem[], right after the header (same cache lines) */
	size_t name_cap;
	struct entry *ring;           /* in mem[], after the name */
	int64_t max_ts;               /* largest ts ever put in the ring (may have left it) */
	size_t head;                  /* next write position in ring */
	size_t count;                 /* valid entries */
	int64_t mem[];
};

struct dedupe {
	dedupe_conf c;
	struct thing **buckets;
	size_t mask;
	struct thing *lru_head, *lru_tail;
	dedupe_stats st;
};

static uint64_t hash_thing(const char *s)
{
	return tg_hash_final(tg_hash_str(TG_HASH_SEED, s));
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
	/* starts small and doubles with the things (grow_buckets) */
	if (!(d->buckets = calloc(DEDUPE_MIN_BUCKETS, sizeof *d->buckets)))
		goto nomem;
	d->mask = DEDUPE_MIN_BUCKETS - 1;
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

/* Double the bucket array once things outnumber buckets; on allocation failure the chains
 * just get longer. */
static void grow_buckets(dedupe *d)
{
	size_t nb = (d->mask + 1) * 2;
	if (d->st.things < d->mask + 1 || nb > ((size_t)1 << 24))
		return;
	struct thing **b = calloc(nb, sizeof *b);
	if (!b)
		return;
	for (struct thing *t = d->lru_head; t; t = t->lnext) {
		t->hnext = b[t->hash & (nb - 1)];
		b[t->hash & (nb - 1)] = t;
	}
	free(d->buckets);
	d->buckets = b;
	d->mask = nb - 1;
}

/* A node for a thing not seen before: recycled from the LRU tail when full (grown if the
 * new name does not fit; it is unlinked at that point, so moving it is safe). */
static struct thing *thing_new(dedupe *d, const char *name, uint64_t h)
{
	struct thing *t;
	size_t nl = strlen(name) + 1;
	size_t cap = (nl + 7) & ~(size_t)7;
	size_t ring = d->c.per_thing * sizeof(struct entry);
	if (d->st.things >= d->c.max_things) {
		t = d->lru_tail;
		lru_unlink(d, t);
		hash_unlink(d, t);
		d->st.things_evicted++;
		if (t->name_cap < cap) {
			struct thing *n = realloc(t, sizeof *t + cap + ring);
			if (!n) {
				free(t);
				d->st.things--;
				return NULL;
			}
			t = n;
			t->name_cap = cap;
		}
	} else {
		if (cap < 32)
			cap = 32; /* room for a longer name when recycled */
		if (!(t = malloc(sizeof *t + cap + ring)))
			return NULL;
		t->name_cap = cap;
		d->st.things++;
	}
	t->name = (char *)t->mem;
	memcpy(t->name, name, nl);
	t->ring = (struct entry *)((char *)t->mem + t->name_cap);
	t->hash = h;
	t->head = t->count = 0;
	t->max_ts = INT64_MIN;
	t->hnext = d->buckets[h & d->mask];
	d->buckets[h & d->mask] = t;
	lru_push_front(d, t);
	grow_buckets(d);
	return t;
}

int dedupe_check(dedupe *d, const char *thing, int64_t ts_ms, int64_t now_ms)
{
	if (!d || !thing)
		return TG_EINVAL;
	uint64_t h = hash_thing(thing);
	struct thing *t = d->buckets[h & d->mask];
	while (t && (t->hash != h || strcmp(t->name, thing) != 0))
		t = t->hnext;
	size_t cap = d->c.per_thing;
	if (t) {
		if (t != d->lru_head) {
			lru_unlink(d, t);
			lru_push_front(d, t);
		}
		/* A device's clock moves forward, so a ts above everything remembered cannot be a
		 * repeat: the common case costs no scan. */
		for (size_t i = 0; ts_ms <= t->max_ts && i < t->count; i++) {
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
	if (ts_ms > t->max_ts)
		t->max_ts = ts_ms;
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
