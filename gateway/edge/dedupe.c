/*
 * dedupe.c — bounded (thing, ts) duplicate detection.
 *
 * Design: a chained hash table of things (hash.h over the name, bucket count a power of two
 * that doubles with the things) plus an LRU list through the same nodes, so a full table
 * recycles its least recently seen node instead of allocating. Each node holds a ring of
 * (ts, first-seen) pairs in an allocation of its own that starts with two slots and doubles
 * (up to per_thing) only when a reading still inside the window would be overwritten: most
 * things of a big fleet send a reading now and then and never need more. A lookup scans the
 * ring from the newest entry and stops at the first entry older than the window: arrival
 * times are (near-)monotonic, so everything beyond it has expired too, and in steady state
 * only the window's worth of entries is looked at. Things with readings not yet stored sit
 * on a second list (dirty), so a group's end touches only them.
 */
#include "edge/dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/hash.h"

#define DEDUPE_MIN_BUCKETS 64
#define DEDUPE_FIRST_CAP 2

struct thing {
	struct thing *hnext;          /* hash chain */
	struct thing *lprev, *lnext;  /* LRU list, head = most recently seen */
	struct thing *dprev, *dnext;  /* dirty list (readings added since the last group end) */
	uint64_t hash;
	dedupe_entry *ring;           /* cap entries, its own allocation (grows) */
	int64_t max_ts;               /* largest ts ever put in the ring (may have left it) */
	uint32_t cap, head, count;    /* head: next write position */
	uint32_t ndirty;              /* newest readings not yet stored (<= count) */
	uint8_t dirty;                /* on the dirty list */
	uint16_t name_cap;
	char name[];
};

struct dedupe {
	dedupe_conf c;
	struct thing **buckets;
	size_t mask;
	struct thing *lru_head, *lru_tail;
	struct thing *dirty;
	dedupe_entry *scratch; /* per_thing entries, for dedupe_foreach_dirty */
	int tracking;          /* dedupe_track_changes */
	size_t ring_bytes;     /* sum of the rings' capacities, for dedupe_memory */
	size_t node_bytes;
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
		free(t->ring);
		free(t);
		t = n;
	}
	free(d->buckets);
	free(d->scratch);
	free(d);
}

static void dirty_unlink(dedupe *d, struct thing *t)
{
	if (!t->dirty)
		return;
	if (t->dprev)
		t->dprev->dnext = t->dnext;
	else
		d->dirty = t->dnext;
	if (t->dnext)
		t->dnext->dprev = t->dprev;
	t->dprev = t->dnext = NULL;
	t->dirty = 0;
	t->ndirty = 0;
}

static void dirty_link(dedupe *d, struct thing *t)
{
	if (t->dirty)
		return;
	t->dirty = 1;
	t->dprev = NULL;
	t->dnext = d->dirty;
	if (d->dirty)
		d->dirty->dprev = t;
	d->dirty = t;
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
 * new name does not fit; it is unlinked from every list at that point, so moving it is
 * safe). The ring is kept (a recycled node keeps its capacity). */
static struct thing *thing_new(dedupe *d, const char *name, uint64_t h)
{
	struct thing *t;
	size_t nl = strlen(name) + 1;
	size_t cap = (nl + 7) & ~(size_t)7;
	if (cap > UINT16_MAX)
		return NULL;
	if (d->st.things >= d->c.max_things) {
		t = d->lru_tail;
		lru_unlink(d, t);
		hash_unlink(d, t);
		dirty_unlink(d, t); /* its readings are forgotten with it, stored or not */
		d->st.things_evicted++;
		if (t->name_cap < cap) {
			struct thing *n = realloc(t, sizeof *t + cap);
			if (!n) {
				free(t->ring);
				d->ring_bytes -= (size_t)t->cap * sizeof(dedupe_entry);
				d->node_bytes -= sizeof *t + t->name_cap;
				free(t);
				d->st.things--;
				return NULL;
			}
			t = n;
			d->node_bytes += cap - t->name_cap;
			t->name_cap = (uint16_t)cap;
		}
	} else {
		if (cap < 16)
			cap = 16; /* room for a longer name when recycled */
		if (!(t = malloc(sizeof *t + cap)))
			return NULL;
		t->name_cap = (uint16_t)cap;
		t->ring = NULL;
		t->cap = 0;
		d->node_bytes += sizeof *t + cap;
		d->st.things++;
	}
	memcpy(t->name, name, nl);
	t->hash = h;
	t->head = t->count = t->ndirty = 0;
	t->dirty = 0;
	t->dprev = t->dnext = NULL;
	t->max_ts = INT64_MIN;
	t->hnext = d->buckets[h & d->mask];
	d->buckets[h & d->mask] = t;
	lru_push_front(d, t);
	grow_buckets(d);
	return t;
}

static struct thing *find(dedupe *d, const char *thing, uint64_t h)
{
	struct thing *t = d->buckets[h & d->mask];
	while (t && (t->hash != h || strcmp(t->name, thing) != 0))
		t = t->hnext;
	return t;
}

/* Double the ring (up to per_thing), oldest entry first in the new one. 0 or TG_ENOMEM. */
static int ring_grow(dedupe *d, struct thing *t)
{
	size_t ncap = t->cap ? (size_t)t->cap * 2 : DEDUPE_FIRST_CAP;
	if (ncap > d->c.per_thing)
		ncap = d->c.per_thing;
	dedupe_entry *r = malloc(ncap * sizeof *r);
	if (!r)
		return TG_ENOMEM;
	for (uint32_t i = 0; i < t->count; i++)
		r[i] = t->ring[(t->head + t->cap - t->count + i) % t->cap];
	free(t->ring);
	d->ring_bytes += (ncap - t->cap) * sizeof *r;
	t->ring = r;
	t->cap = (uint32_t)ncap;
	t->head = t->count % t->cap;
	return 0;
}

/* Remember (ts, seen) as the thing's newest reading. */
static int put(dedupe *d, struct thing *t, int64_t ts, int64_t seen, int64_t now_ms, int live)
{
	if (t->count == t->cap) {
		/* full: grow rather than push out a reading still inside the window */
		int in_window = t->cap && now_ms - t->ring[t->head].seen <= d->c.window_ms;
		if ((!t->cap || (in_window && t->cap < d->c.per_thing)) && ring_grow(d, t) && !t->cap)
			return TG_ENOMEM;
		if (live && t->count == t->cap && now_ms - t->ring[t->head].seen <= d->c.window_ms)
			d->st.overwritten++;
	}
	dedupe_entry *w = &t->ring[t->head];
	w->ts = ts;
	w->seen = seen;
	if (ts > t->max_ts)
		t->max_ts = ts;
	t->head = (t->head + 1) % t->cap;
	if (t->count < t->cap)
		t->count++;
	return 0;
}

int dedupe_check(dedupe *d, const char *thing, int64_t ts_ms, int64_t now_ms)
{
	if (!d || !thing)
		return TG_EINVAL;
	uint64_t h = hash_thing(thing);
	struct thing *t = find(d, thing, h);
	if (t) {
		if (t != d->lru_head) {
			lru_unlink(d, t);
			lru_push_front(d, t);
		}
		/* A device's clock moves forward, so a ts above everything remembered cannot be a
		 * repeat: the common case costs no scan. */
		for (uint32_t i = 0; ts_ms <= t->max_ts && i < t->count; i++) {
			const dedupe_entry *e = &t->ring[(t->head + t->cap - 1 - i) % t->cap];
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
	if (put(d, t, ts_ms, now_ms, now_ms, 1))
		return TG_ENOMEM;
	if (d->tracking) {
		if (t->ndirty < t->count)
			t->ndirty++;
		dirty_link(d, t);
	}
	d->st.checked++;
	return 0;
}

void dedupe_track_changes(dedupe *d, int on)
{
	if (!d)
		return;
	d->tracking = on;
	while (!on && d->dirty)
		dirty_unlink(d, d->dirty);
}

int dedupe_foreach_dirty(dedupe *d, dedupe_dirty_fn fn, void *ud)
{
	if (!d->dirty)
		return 0;
	if (!d->scratch && !(d->scratch = malloc(d->c.per_thing * sizeof *d->scratch)))
		return TG_ENOMEM;
	for (struct thing *t = d->dirty; t; t = t->dnext) {
		if (!t->ndirty)
			continue;
		uint32_t n = t->ndirty;
		for (uint32_t i = 0; i < n; i++)
			d->scratch[i] = t->ring[(t->head + t->cap - n + i) % t->cap];
		int rc = fn(ud, t->name, d->scratch, n);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int dedupe_foreach(dedupe *d, dedupe_dirty_fn fn, void *ud)
{
	if (!d->scratch && !(d->scratch = malloc(d->c.per_thing * sizeof *d->scratch)))
		return TG_ENOMEM;
	for (struct thing *t = d->lru_tail; t; t = t->lprev) {
		if (!t->count)
			continue;
		for (uint32_t i = 0; i < t->count; i++)
			d->scratch[i] = t->ring[(t->head + t->cap - t->count + i) % t->cap];
		int rc = fn(ud, t->name, d->scratch, t->count);
		if (rc < 0)
			return rc;
	}
	return 0;
}

void dedupe_dirty_done(dedupe *d, int stored)
{
	while (d->dirty) {
		struct thing *t = d->dirty;
		if (!stored) {
			t->head = (t->head + t->cap - t->ndirty) % (t->cap ? t->cap : 1);
			t->count -= t->ndirty;
			t->max_ts = INT64_MIN;
			for (uint32_t i = 0; i < t->count; i++) {
				int64_t ts = t->ring[(t->head + t->cap - 1 - i) % t->cap].ts;
				if (ts > t->max_ts)
					t->max_ts = ts;
			}
		}
		dirty_unlink(d, t);
	}
}

int dedupe_restore(dedupe *d, const char *thing, const dedupe_entry *e, size_t n, int64_t now_ms)
{
	if (!d || !thing || (n && !e))
		return TG_EINVAL;
	struct thing *t = NULL;
	int put_back = 0;
	for (size_t i = 0; i < n; i++) {
		if (now_ms - e[i].seen > d->c.window_ms)
			continue;
		uint64_t h = hash_thing(thing);
		if (!t && !(t = find(d, thing, h)) && !(t = thing_new(d, thing, h)))
			return TG_ENOMEM;
		if (t != d->lru_head) {
			lru_unlink(d, t);
			lru_push_front(d, t);
		}
		if (put(d, t, e[i].ts, e[i].seen, now_ms, 0))
			return TG_ENOMEM;
		put_back++;
	}
	return put_back;
}

int64_t dedupe_window(const dedupe *d) { return d ? d->c.window_ms : 0; }

size_t dedupe_memory(const dedupe *d)
{
	return d ? sizeof *d + (d->mask + 1) * sizeof *d->buckets + d->node_bytes + d->ring_bytes : 0;
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
