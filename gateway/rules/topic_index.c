/*
 * topic_index.c — a trie of MQTT topic filters that picks the candidate rules for a topic.
 *
 * Each level of a filter is one trie edge; children of a node are kept sorted so a level
 * is found by binary search, and a node with many children also gets an FNV-1a hash table
 * of them so a level costs one hash and one compare however wide the node is; '+' has its
 * own edge and '#' is a list of ids on the node it
 * hangs off. Matching walks the topic once and only descends into the literal child that
 * equals the level and the '+' child, so rules whose filters do not match are never
 * visited: with 1,000 non-matching rules the cost stays close to the cost with 10. As in
 * MQTT, wildcards at the first level do not match topics that start with '$'.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "core/err.h"
#include "rules/rules_int.h"

typedef struct tnode {
	char *seg;
	size_t seglen;
	uint32_t hash;
	struct tnode **kids;      /* sorted by segment */
	size_t nkids, capkids;
	struct tnode **table;     /* open-addressing hash of kids once there are many */
	size_t tcap;
	struct tnode *plus;
	uint32_t *ids, *hash_ids;
	size_t nids, nhash;
} tnode;

struct rules_trie {
	tnode root;
};

static void node_clear(tnode *n)
{
	for (size_t i = 0; i < n->nkids; i++) {
		node_clear(n->kids[i]);
		free(n->kids[i]);
	}
	if (n->plus) {
		node_clear(n->plus);
		free(n->plus);
	}
	free(n->kids);
	free(n->table);
	free(n->seg);
	free(n->ids);
	free(n->hash_ids);
}

rules_trie *rules_trie_new(void)
{
	return calloc(1, sizeof(rules_trie));
}

void rules_trie_free(rules_trie *t)
{
	if (!t)
		return;
	node_clear(&t->root);
	free(t);
}

#define HASH_MIN_KIDS 8

static uint32_t seg_hash(const char *p, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 16777619u;
	}
	return h;
}

static void table_put(tnode *n, tnode *kid)
{
	size_t i = kid->hash & (n->tcap - 1);
	while (n->table[i])
		i = (i + 1) & (n->tcap - 1);
	n->table[i] = kid;
}

/* keep the table at most 1/4 full so probes stay short */
static int table_update(tnode *n, tnode *kid)
{
	if (n->nkids < HASH_MIN_KIDS)
		return 0;
	if (n->nkids * 4 > n->tcap) {
		size_t cap = 16;
		while (cap < n->nkids * 8)
			cap *= 2;
		tnode **t = calloc(cap, sizeof *t);
		if (!t)
			return TG_ENOMEM;
		free(n->table);
		n->table = t;
		n->tcap = cap;
		for (size_t i = 0; i < n->nkids; i++)
			table_put(n, n->kids[i]);
		return 0;
	}
	table_put(n, kid);
	return 0;
}

static tnode *table_get(const tnode *n, const char *seg, size_t len)
{
	uint32_t h = seg_hash(seg, len);
	size_t i = h & (n->tcap - 1);
	for (tnode *k; (k = n->table[i]); i = (i + 1) & (n->tcap - 1))
		if (k->hash == h && k->seglen == len && memcmp(k->seg, seg, len) == 0)
			return k;
	return NULL;
}

static int seg_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	size_t m = an < bn ? an : bn;
	int c = memcmp(a, b, m);
	if (c)
		return c;
	return (an > bn) - (an < bn);
}

/* index of the child equal to seg, or -(insertion point) - 1 */
static long find_kid(const tnode *n, const char *seg, size_t len)
{
	size_t lo = 0, hi = n->nkids;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = seg_cmp(n->kids[mid]->seg, n->kids[mid]->seglen, seg, len);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

static int push_id(uint32_t **arr, size_t *n, uint32_t id)
{
	uint32_t *a = realloc(*arr, sizeof *a * (*n + 1));
	if (!a)
		return TG_ENOMEM;
	a[(*n)++] = id;
	*arr = a;
	return 0;
}

int rules_trie_add(rules_trie *t, const char *filter, uint32_t id)
{
	tnode *n = &t->root;
	const char *p = filter;
	for (;;) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == 1 && p[0] == '#')
			return push_id(&n->hash_ids, &n->nhash, id);
		tnode *next;
		if (len == 1 && p[0] == '+') {
			if (!n->plus && !(n->plus = calloc(1, sizeof(tnode))))
				return TG_ENOMEM;
			next = n->plus;
		} else {
			long k = find_kid(n, p, len);
			if (k >= 0) {
				next = n->kids[k];
			} else {
				size_t at = (size_t)(-k - 1);
				if (n->nkids == n->capkids) {
					size_t cap = n->capkids ? n->capkids * 2 : 4;
					tnode **kids = realloc(n->kids, sizeof *kids * cap);
					if (!kids)
						return TG_ENOMEM;
					n->kids = kids;
					n->capkids = cap;
				}
				next = calloc(1, sizeof(tnode));
				if (!next || !(next->seg = strndup(p, len))) {
					free(next);
					return TG_ENOMEM;
				}
				next->seglen = len;
				next->hash = seg_hash(p, len);
				memmove(n->kids + at + 1, n->kids + at, sizeof *n->kids * (n->nkids - at));
				n->kids[at] = next;
				n->nkids++;
				if (table_update(n, next) < 0)
					return TG_ENOMEM;
			}
		}
		n = next;
		if (!e)
			return push_id(&n->ids, &n->nids, id);
		p = e + 1;
	}
}

typedef struct mstate {
	void (*cb)(void *ud, uint32_t id);
	void *ud;
	int count;
	int dollar;
} mstate;

static void emit(mstate *s, const uint32_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		s->cb(s->ud, ids[i]);
	s->count += (int)n;
}

/* p: start of the current level, NULL when the topic is consumed */
static void match_rec(const tnode *n, const char *p, int level, mstate *s)
{
	int wild_ok = !(level == 0 && s->dollar);
	if (n->nhash && wild_ok)
		emit(s, n->hash_ids, n->nhash);
	if (!p) {
		emit(s, n->ids, n->nids);
		return;
	}
	const char *e = strchr(p, '/');
	size_t len = e ? (size_t)(e - p) : strlen(p);
	const char *nx = e ? e + 1 : NULL;
	if (n->table) {
		const tnode *k = table_get(n, p, len);
		if (k)
			match_rec(k, nx, level + 1, s);
	} else if (n->nkids) {
		long k = find_kid(n, p, len);
		if (k >= 0)
			match_rec(n->kids[k], nx, level + 1, s);
	}
	if (n->plus && wild_ok)
		match_rec(n->plus, nx, level + 1, s);
}

int rules_trie_match(const rules_trie *t, const char *topic, void (*cb)(void *ud, uint32_t id), void *ud)
{
	mstate s = {cb, ud, 0, topic[0] == '$'};
	match_rec(&t->root, topic, 0, &s);
	return s.count;
}

int rules_topic_filter_valid(const char *filter, char *err, size_t errlen)
{
	size_t n = strlen(filter);
	if (n == 0)
		return tg_seterr(err, errlen, TG_EINVAL, "empty topic filter");
	if (n > 1024)
		return tg_seterr(err, errlen, TG_EINVAL, "topic filter longer than 1024 bytes");
	for (size_t i = 0; i < n; i++) {
		char ch = filter[i];
		int seg_start = i == 0 || filter[i - 1] == '/';
		int seg_end = i + 1 == n || filter[i + 1] == '/';
		if (ch == '#' && (!seg_start || i + 1 != n))
			return tg_seterr(err, errlen, TG_EINVAL, "'#' must be the last level on its own");
		if (ch == '+' && (!seg_start || !seg_end))
			return tg_seterr(err, errlen, TG_EINVAL, "'+' must be a whole level");
	}
	return 0;
}

static void count_cb(void *ud, uint32_t id)
{
	(void)id;
	(*(int *)ud)++;
}

int rules_topic_matches(const char *filter, const char *topic)
{
	rules_trie *t = rules_trie_new();
	int hits = 0;
	if (!t || rules_trie_add(t, filter, 0) < 0) {
		rules_trie_free(t);
		return 0;
	}
	rules_trie_match(t, topic, count_cb, &hits);
	rules_trie_free(t);
	return hits > 0;
}
