/*
 * aggregate.c — tumbling windows with grace, bounded per key.
 *
 * Design: every configured aggregate ("spec") owns a chained hash table of keys
 * (thing [+ group value]); a key owns a fixed ring of `nslots` window slots, each holding a
 * count and one accumulator per configured field (the value count plus only the cells its
 * functions need). A window maps to slot (window index mod nslots). nslots =
 * ceil(grace/W) + 2 is exactly enough that, with now_ms moving forward, a slot is only ever
 * reused by a window whose predecessor in that slot is already due to close — so
 * aggregate_add never has to hold more than nslots windows, and if it finds a due window in
 * the slot it needs (tick not called recently) it emits the key's due windows first, in
 * order. Output names ("temperature_avg") are built at load so emitting only formats numbers.
 * The per-message path allocates nothing except a key's node the first time it is seen.
 * Tick walks a spec's keys only when a window may be due (the spec keeps a lower bound of
 * the earliest close time) or once per window length to drop idle keys, not every second.
 */
#include "edge/aggregate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/hash.h"
#include "core/timefmt.h"
#include "core/topic.h"
#include "edge/schema.h"

#define AGG_FILE_MAX (1024 * 1024)
#define AGG_MAX_SLOTS 16
#define AGG_IDLE_WINDOWS 10
#define AGG_MIN_BUCKETS 64
#define AGG_PREFETCH_FIELDS 16 /* values read before the key is touched; the rest after */

enum { FN_AVG, FN_MIN, FN_MAX, FN_COUNT, FN_SUM, FN_FIRST, FN_LAST, FN__N };
static const char *const fn_names[FN__N] = {"avg", "min", "max", "count", "sum", "first", "last"};

struct afield {
	char *name;
	size_t len;            /* strlen(name), for json_object_getn */
	unsigned fns;          /* bit per FN_* */
	char *out[FN__N];      /* "<name>_<fn>" for the configured fns */
	/* The field's accumulator in a slot: cells base.. of struct slot's c[]: c[base] is the
	 * count of numeric values, then only the cells its functions need (0 = not kept): a
	 * field with avg/min/max keeps 4 cells, not 8, and a key's hot slot spans fewer cache
	 * lines. first and last keep their event time in the next cell. */
	size_t base, i_sum, i_min, i_max, i_first, i_last;
};

union cell {
	uint64_t n;
	double d;
	int64_t ts;
};

struct slot {
	int64_t start;
	uint64_t count;
	int used;
	union cell c[]; /* the fields' accumulators, see struct afield */
};

struct key {
	struct key *hnext;       /* hash chain */
	struct key *prev, *next; /* all keys of the spec, for tick */
	uint64_t hash;
	char *thing, *group;     /* point into mem[]: the name shares the node's cache lines */
	unsigned char *slots;    /* nslots slots of slot_size bytes (8-aligned), in mem[] */
	int64_t last_seen;
	uint64_t late_pending;   /* late arrivals reported with the next emitted window */
	int64_t cur_start;       /* the window last used and its slot: most messages fall in it, */
	size_t cur_idx;          /* which saves the two 64-bit divisions of the general path */
	int cur_valid;
	int64_t mem[];           /* thing\0[group\0], padding, slots */
};

struct spec {
	char *name, *time_field, *group_by;
	tg_topic_filter *topic;
	size_t time_field_len;
	int time_field_is_ts;    /* the caller may hand us obj's "ts" already read */
	int64_t W, grace;
	size_t max_keys;
	struct afield *fields;
	size_t nfields;
	size_t nslots, slot_size;
	struct key **buckets;
	size_t mask;
	struct key *keys;
	size_t nkeys;
	int64_t next_walk;       /* tick has nothing to do before this (a lower bound) */
};

struct aggregate_set {
	struct spec *v;
	size_t n;
	aggregate_emit_fn emit;
	void *ud;
	aggregate_stats st;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static uint64_t hash_key(const char *thing, const char *group)
{
	uint64_t h = tg_hash_str(TG_HASH_SEED, thing);
	if (group)
		h = tg_hash_str(h ^ 1, group);
	return tg_hash_final(h);
}

static struct slot *slot_at(const struct spec *s, struct key *k, size_t i)
{
	return (struct slot *)(k->slots + i * s->slot_size);
}

static void key_free(struct key *k)
{
	free(k);
}

static void spec_free(struct spec *s)
{
	free(s->name);
	tg_topic_filter_free(s->topic);
	free(s->time_field);
	free(s->group_by);
	for (size_t i = 0; i < s->nfields; i++) {
		free(s->fields[i].name);
		for (int f = 0; f < FN__N; f++)
			free(s->fields[i].out[f]);
	}
	free(s->fields);
	struct key *k = s->keys;
	while (k) {
		struct key *n = k->next;
		key_free(k);
		k = n;
	}
	free(s->buckets);
}

void aggregate_free(aggregate_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		spec_free(&set->v[i]);
	free(set->v);
	free(set);
}

size_t aggregate_count(const aggregate_set *set) { return set ? set->n : 0; }

void aggregate_get_stats(const aggregate_set *set, aggregate_stats *out)
{
	if (!out)
		return;
	if (!set)
		memset(out, 0, sizeof *out);
	else
		*out = set->st;
}

/* ---- loading ----------------------------------------------------------------------------- */

struct lctx {
	const char *file, *text;
	size_t len;
	char *err;
	size_t errlen, used;
};

/* Offset of the spec whose "name" is name: the position of its name value, from which its
 * other keys are searched (several specs share key names, so a global search would always
 * find the first spec's). */
static size_t spec_offset(const struct lctx *c, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = c->text; (p = memmem(p, c->len - (size_t)(p - c->text), "\"name\"", 6));
	     p += 6) {
		const char *q = p + 6, *end = c->text + c->len;
		while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r' || *q == ':'))
			q++;
		if (q < end && *q == '"' && (size_t)(end - q) > nl + 1 && memcmp(q + 1, name, nl) == 0 &&
		    q[nl + 1] == '"')
			return (size_t)(q - c->text);
	}
	return 0;
}

/* spec: the aggregate's name or NULL for file-level errors; k1, k2: a key path below it. */
static void lerr(struct lctx *c, const char *spec, const char *k1, const char *k2, const char *fmt,
		 ...) __attribute__((format(printf, 5, 6)));
static void lerr(struct lctx *c, const char *spec, const char *k1, const char *k2, const char *fmt,
		 ...)
{
	const char *path[3] = {k1, k1 ? k2 : NULL, NULL};
	size_t base = spec ? spec_offset(c, spec) : 0;
	int line = 1, col = 1, rl, rc;
	for (size_t i = 0; i < base; i++) {
		if (c->text[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	schema_locate(c->text + base, c->len - base, path, &rl, &rc);
	if (rl > 1) {
		line += rl - 1;
		col = rc;
	} else {
		col += rc - 1;
	}
	if (!c->err || c->used + 1 >= c->errlen)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	int n = snprintf(c->err + c->used, c->errlen - c->used, "%s:%d:%d: %s\n", c->file, line, col,
			 msg);
	if (n > 0)
		c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
}

static int get_seconds(struct lctx *c, json_t *o, const char *key, const char *name, double dflt,
		       double min, double max, int64_t *out)
{
	json_t *v = json_object_get(o, key);
	double x = v ? json_number_value(v) : dflt;
	if ((v && !json_is_number(v)) || x < min || x > max) {
		lerr(c, name, key, NULL, "%s must be a number of seconds in %g..%g", key, min, max);
		return TG_EPARSE;
	}
	*out = (int64_t)llround(x * 1000.0);
	return 0;
}

static int compile_spec(struct lctx *c, struct spec *s, json_t *o, size_t idx)
{
	static const char *const allowed[] = {"name", "topic", "windowSeconds", "graceSeconds",
					      "timeField", "groupBy", "maxKeys", "fields",
					      "description", NULL};
	int bad = 0;
	char label[48];
	snprintf(label, sizeof label, "aggregates[%zu]", idx);
	if (!json_is_object(o)) {
		lerr(c, NULL, "aggregates", NULL, "%s must be an object", label);
		return TG_EPARSE;
	}
	json_t *nm = json_object_get(o, "name");
	if (!json_is_string(nm) || !*json_string_value(nm)) {
		lerr(c, NULL, "aggregates", NULL, "%s needs a \"name\"", label);
		return TG_EPARSE;
	}
	const char *name = json_string_value(nm);
	if (!(s->name = strdup(name)))
		return TG_ENOMEM;
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v) {
		int ok = 0;
		for (int i = 0; allowed[i]; i++)
			ok |= strcmp(key, allowed[i]) == 0;
		if (!ok) {
			lerr(c, name, key, NULL, "unknown key \"%s\"", key);
			bad = 1;
		}
	}
	v = json_object_get(o, "topic");
	if (!json_is_string(v) || !tg_topic_filter_valid(json_string_value(v))) {
		lerr(c, name, "topic", NULL, "topic must be an MQTT topic filter");
		bad = 1;
	} else if (!(s->topic = tg_topic_filter_new(json_string_value(v)))) {
		return TG_ENOMEM;
	}
	if (get_seconds(c, o, "windowSeconds", name, 60, 0.001, 86400, &s->W) ||
	    get_seconds(c, o, "graceSeconds", name, 0, 0, 86400, &s->grace))
		return TG_EPARSE;
	if (s->W <= 0) {
		lerr(c, name, "windowSeconds", NULL, "windowSeconds must be at least 1 ms");
		return TG_EPARSE;
	}
	s->nslots = (size_t)((s->grace + s->W - 1) / s->W) + 2;
	if (s->nslots > AGG_MAX_SLOTS) {
		lerr(c, name, "graceSeconds", NULL, "graceSeconds may be at most %d windows",
		     AGG_MAX_SLOTS - 2);
		return TG_EPARSE;
	}
	v = json_object_get(o, "timeField");
	if (v && !json_is_string(v)) {
		lerr(c, name, "timeField", NULL, "timeField must be a string");
		bad = 1;
	}
	s->time_field_len = strlen(json_is_string(v) ? json_string_value(v) : "ts");
	s->time_field_is_ts = strcmp(json_is_string(v) ? json_string_value(v) : "ts", "ts") == 0;
	if (!(s->time_field = strdup(json_is_string(v) ? json_string_value(v) : "ts")))
		return TG_ENOMEM;
	v = json_object_get(o, "groupBy");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || !*json_string_value(v)) {
			lerr(c, name, "groupBy", NULL, "groupBy must be a field name or null");
			bad = 1;
		} else if (!(s->group_by = strdup(json_string_value(v)))) {
			return TG_ENOMEM;
		}
	}
	s->max_keys = 10000;
	v = json_object_get(o, "maxKeys");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 10000000) {
			lerr(c, name, "maxKeys", NULL, "maxKeys must be an integer 1..10000000");
			bad = 1;
		} else {
			s->max_keys = (size_t)json_integer_value(v);
		}
	}
	json_t *fo = json_object_get(o, "fields");
	if (!json_is_object(fo) || json_object_size(fo) == 0) {
		lerr(c, name, "fields", NULL, "fields must be a non-empty object {\"field\": [\"avg\", ...]}");
		return TG_EPARSE;
	}
	if (!(s->fields = calloc(json_object_size(fo), sizeof *s->fields)))
		return TG_ENOMEM;
	json_object_foreach(fo, key, v) {
		struct afield *f = &s->fields[s->nfields++];
		f->len = strlen(key);
		if (!(f->name = strdup(key)))
			return TG_ENOMEM;
		if (!json_is_array(v) || json_array_size(v) == 0) {
			lerr(c, name, "fields", key, "functions of \"%s\" must be a non-empty array", key);
			bad = 1;
			continue;
		}
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			int fn = -1;
			for (int k = 0; k < FN__N && json_is_string(e); k++)
				if (strcmp(json_string_value(e), fn_names[k]) == 0)
					fn = k;
			if (fn < 0) {
				lerr(c, name, "fields", key,
				     "unknown function (use avg, min, max, count, sum, first, last)");
				bad = 1;
				continue;
			}
			f->fns |= 1u << fn;
			if (!f->out[fn]) {
				size_t l = strlen(key) + strlen(fn_names[fn]) + 2;
				if (!(f->out[fn] = malloc(l)))
					return TG_ENOMEM;
				snprintf(f->out[fn], l, "%s_%s", key, fn_names[fn]);
			}
		}
	}
	size_t ncells = 0;
	for (size_t i = 0; i < s->nfields; i++) {
		struct afield *f = &s->fields[i];
		unsigned fns = f->fns;
		f->base = ncells++;
		f->i_sum = fns & (1u << FN_AVG | 1u << FN_SUM) ? ncells++ : 0;
		f->i_min = fns & 1u << FN_MIN ? ncells++ : 0;
		f->i_max = fns & 1u << FN_MAX ? ncells++ : 0;
		f->i_first = fns & 1u << FN_FIRST ? (ncells += 2) - 2 : 0;
		f->i_last = fns & 1u << FN_LAST ? (ncells += 2) - 2 : 0;
	}
	size_t raw = sizeof(struct slot) + ncells * sizeof(union cell);
	s->slot_size = (raw + 7) & ~(size_t)7;
	/* the table starts small and doubles with the keys (see new_key): sized for max_keys up
	 * front, a few hundred things would touch a page of buckets each and miss the cache on
	 * every lookup */
	if (!(s->buckets = calloc(AGG_MIN_BUCKETS, sizeof *s->buckets)))
		return TG_ENOMEM;
	s->mask = AGG_MIN_BUCKETS - 1;
	return bad ? TG_EPARSE : 0;
}

aggregate_set *aggregate_load_buffer(const char *name, const char *text, size_t len,
				     aggregate_emit_fn emit, void *ud, char *err, size_t errlen)
{
	struct lctx c = {.file = name, .text = text, .len = len, .err = err, .errlen = errlen};
	aggregate_set *set = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	int bad = 0;
	if (err && errlen)
		err[0] = '\0';
	if (!emit) {
		tg_seterr(err, errlen, TG_EINVAL, "%s:1:1: no emit callback\n", name);
		return NULL;
	}
	if (!(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr))) {
		tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: %s\n", name, jerr.line, jerr.column, schema_json_error_text(&jerr));
		return NULL;
	}
	json_t *arr = json_object_get(root, "aggregates");
	if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(arr)) {
		lerr(&c, NULL, NULL, NULL, "expected {\"aggregates\": [ ... ]}");
		goto fail;
	}
	if (!(set = calloc(1, sizeof *set)))
		goto nomem;
	set->emit = emit;
	set->ud = ud;
	size_t n = json_array_size(arr);
	if (n && !(set->v = calloc(n, sizeof *set->v)))
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		int rc = compile_spec(&c, &set->v[set->n], json_array_get(arr, i), i);
		set->n++;
		if (rc == TG_ENOMEM)
			goto nomem;
		if (rc) {
			bad = 1;
			continue;
		}
		for (size_t k = 0; k + 1 < set->n; k++)
			if (set->v[k].name && strcmp(set->v[k].name, set->v[i].name) == 0) {
				lerr(&c, set->v[i].name, NULL, NULL, "duplicate aggregate name \"%s\"",
				     set->v[i].name);
				bad = 1;
			}
	}
	if (bad)
		goto fail;
	json_decref(root);
	return set;
nomem:
	tg_seterr(err, errlen, TG_ENOMEM, "%s: out of memory\n", name);
fail:
	json_decref(root);
	aggregate_free(set);
	return NULL;
}

aggregate_set *aggregate_load_file(const char *path, aggregate_emit_fn emit, void *ud, char *err,
				   size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	aggregate_set *set = NULL;
	if (!f) {
		tg_seterr(err, errlen, TG_EIO, "%s:1:1: cannot open\n", path);
		return NULL;
	}
	if (!(buf = malloc(AGG_FILE_MAX + 1))) {
		tg_seterr(err, errlen, TG_ENOMEM, "%s: out of memory\n", path);
		goto out;
	}
	size_t n = fread(buf, 1, AGG_FILE_MAX + 1, f);
	if (ferror(f) || n > AGG_FILE_MAX) {
		tg_seterr(err, errlen, TG_EIO, "%s:1:1: unreadable or larger than %d bytes\n", path,
			  AGG_FILE_MAX);
		goto out;
	}
	set = aggregate_load_buffer(path, buf, n, emit, ud, err, errlen);
out:
	free(buf);
	fclose(f);
	return set;
}

/* ---- windows ----------------------------------------------------------------------------- */

static void put_num(json_t *o, const char *k, double x)
{
	json_object_set_new_nocheck(o, k, json_real(x));
}

/* Build the window's JSON, hand it to the callback, free the slot. The keys are our own
 * names or names validated at load and the values are UTF-8 already (things come from MQTT
 * topics, groups from JSON strings or our own number formatting), so the _nocheck setters
 * skip jansson's UTF-8 scans. */
static int emit_slot(aggregate_set *set, struct spec *s, struct key *k, struct slot *sl)
{
	char iso[32];
	json_t *o = json_object();
	if (!o)
		return TG_ENOMEM;
	int64_t end = sl->start + s->W;
	json_object_set_new_nocheck(o, "aggregate", json_string_nocheck(s->name));
	json_object_set_new_nocheck(o, "thing", json_string_nocheck(k->thing));
	if (s->group_by)
		json_object_set_new_nocheck(o, s->group_by, json_string_nocheck(k->group));
	json_object_set_new_nocheck(o, "window_start", json_integer(sl->start));
	json_object_set_new_nocheck(o, "window_end", json_integer(end));
	if (timefmt_format_rfc3339(sl->start, iso, sizeof iso) > 0)
		json_object_set_new_nocheck(o, "window_start_iso", json_string_nocheck(iso));
	if (timefmt_format_rfc3339(end, iso, sizeof iso) > 0)
		json_object_set_new_nocheck(o, "window_end_iso", json_string_nocheck(iso));
	json_object_set_new_nocheck(o, "ts", json_integer(sl->start));
	json_object_set_new_nocheck(o, "count", json_integer((json_int_t)sl->count));
	json_object_set_new_nocheck(o, "late", json_integer((json_int_t)k->late_pending));
	k->late_pending = 0;
	for (size_t i = 0; i < s->nfields; i++) {
		const struct afield *f = &s->fields[i];
		const union cell *c = sl->c;
		uint64_t n = c[f->base].n;
		for (int fn = 0; fn < FN__N; fn++) {
			if (!(f->fns & (1u << fn)))
				continue;
			if (fn == FN_COUNT) {
				json_object_set_new_nocheck(o, f->out[fn], json_integer((json_int_t)n));
				continue;
			}
			if (n == 0) {
				json_object_set_new_nocheck(o, f->out[fn], json_null());
				continue;
			}
			double x = fn == FN_AVG ? c[f->i_sum].d / (double)n
				 : fn == FN_MIN ? c[f->i_min].d
				 : fn == FN_MAX ? c[f->i_max].d
				 : fn == FN_SUM ? c[f->i_sum].d
				 : fn == FN_FIRST ? c[f->i_first].d
						  : c[f->i_last].d;
			put_num(o, f->out[fn], x);
		}
	}
	aggregate_window w = {.aggregate = s->name, .thing = k->thing, .group = k->group,
			      .start_ms = sl->start, .end_ms = end, .json = o};
	sl->used = 0;
	set->st.windows_emitted++;
	if (set->emit(set->ud, &w) < 0)
		set->st.emit_errors++;
	json_decref(o);
	return 1;
}

/* Emit the key's windows that are due (or all with force), oldest first. */
static int close_due(aggregate_set *set, struct spec *s, struct key *k, int64_t now, int force)
{
	int n = 0;
	for (;;) {
		struct slot *best = NULL;
		for (size_t i = 0; i < s->nslots; i++) {
			struct slot *sl = slot_at(s, k, i);
			if (sl->used && (force || sl->start + s->W + s->grace <= now) &&
			    (!best || sl->start < best->start))
				best = sl;
		}
		if (!best)
			return n;
		int rc = emit_slot(set, s, k, best);
		if (rc < 0)
			return rc;
		n += rc;
	}
}

static struct key *find_key(struct spec *s, const char *thing, const char *group, uint64_t h)
{
	for (struct key *k = s->buckets[h & s->mask]; k; k = k->hnext)
		if (k->hash == h && strcmp(k->thing, thing) == 0 &&
		    (group ? (k->group && strcmp(k->group, group) == 0) : !k->group))
			return k;
	return NULL;
}

/* Double the bucket array once keys outnumber buckets; on allocation failure the chains just
 * get longer. */
static void grow_buckets(struct spec *s)
{
	size_t nb = (s->mask + 1) * 2;
	if (s->nkeys < s->mask + 1 || nb > (1u << 20))
		return;
	struct key **b = calloc(nb, sizeof *b);
	if (!b)
		return;
	for (struct key *k = s->keys; k; k = k->next) {
		k->hnext = b[k->hash & (nb - 1)];
		b[k->hash & (nb - 1)] = k;
	}
	free(s->buckets);
	s->buckets = b;
	s->mask = nb - 1;
}

static struct key *new_key(aggregate_set *set, struct spec *s, const char *thing,
			   const char *group, uint64_t h)
{
	size_t lt = strlen(thing) + 1, lg = group ? strlen(group) + 1 : 0;
	size_t names = (lt + lg + 7) & ~(size_t)7;
	struct key *k = calloc(1, sizeof *k + names + s->nslots * s->slot_size);
	if (!k)
		return NULL;
	k->thing = (char *)k->mem;
	memcpy(k->thing, thing, lt);
	if (group) {
		k->group = k->thing + lt;
		memcpy(k->group, group, lg);
	}
	k->slots = (unsigned char *)k->mem + names;
	k->hash = h;
	k->hnext = s->buckets[h & s->mask];
	s->buckets[h & s->mask] = k;
	k->next = s->keys;
	if (s->keys)
		s->keys->prev = k;
	s->keys = k;
	s->nkeys++;
	set->st.keys++;
	grow_buckets(s);
	return k;
}

static void drop_key(aggregate_set *set, struct spec *s, struct key *k)
{
	struct key **pp = &s->buckets[k->hash & s->mask];
	while (*pp && *pp != k)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = k->hnext;
	if (k->prev)
		k->prev->next = k->next;
	else
		s->keys = k->next;
	if (k->next)
		k->next->prev = k->prev;
	s->nkeys--;
	set->st.keys--;
	key_free(k);
}

static const char *group_text(const json_t *v, char *buf, size_t len)
{
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	}
	if (json_is_real(v)) {
		snprintf(buf, len, "%.17g", json_real_value(v));
		return buf;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	return "null";
}

/* Add one value to a field's accumulator (cells laid out at load, see struct afield). */
static inline __attribute__((always_inline)) void acc_add(const struct afield *f, union cell *c, double x, int64_t ts)
{
	int first = c[f->base].n++ == 0;
	if (f->i_sum)
		c[f->i_sum].d = first ? x : c[f->i_sum].d + x;
	if (f->i_min && (first || x < c[f->i_min].d))
		c[f->i_min].d = x;
	if (f->i_max && (first || x > c[f->i_max].d))
		c[f->i_max].d = x;
	if (f->i_first && (first || ts < c[f->i_first + 1].ts)) {
		c[f->i_first].d = x;
		c[f->i_first + 1].ts = ts;
	}
	if (f->i_last && (first || ts >= c[f->i_last + 1].ts)) {
		c[f->i_last].d = x;
		c[f->i_last + 1].ts = ts;
	}
}

int aggregate_add(aggregate_set *set, const char *topic, const char *thing, const json_t *obj,
		  const int64_t *ts_ms, int64_t received_ms, int64_t now_ms)
{
	if (!set || !topic || !thing)
		return TG_EINVAL;
	int counted = 0;
	for (size_t i = 0; i < set->n; i++) {
		struct spec *s = &set->v[i];
		if (!tg_topic_filter_match(s->topic, topic))
			continue;
		char gbuf[40];
		const char *group = s->group_by ? group_text(json_object_get(obj, s->group_by), gbuf,
							     sizeof gbuf)
						: NULL;
		uint64_t h = hash_key(thing, group);
		int64_t ts = received_ms;
		if (ts_ms && s->time_field_is_ts) {
			ts = *ts_ms;
		} else {
			json_t *tv = obj ? json_object_getn(obj, s->time_field, s->time_field_len) : NULL;
			if (json_is_integer(tv))
				ts = json_integer_value(tv);
		}
		/* The key's node is most likely not in cache (one per thing): start loading it, then
		 * read the message's values from the object (which is) while it comes. */
		const struct key *k0 = s->buckets[h & s->mask];
		if (k0) {
			__builtin_prefetch(k0);
			__builtin_prefetch((const char *)k0 + 64);
		}
		double vals[AGG_PREFETCH_FIELDS];
		unsigned char has[AGG_PREFETCH_FIELDS];
		for (size_t f = 0; f < s->nfields && f < AGG_PREFETCH_FIELDS; f++) {
			json_t *v = obj ? json_object_getn(obj, s->fields[f].name, s->fields[f].len) : NULL;
			has[f] = json_is_number(v);
			vals[f] = has[f] ? json_number_value(v) : 0;
		}
		struct key *k = find_key(s, thing, group, h);
		int64_t start;
		size_t idx;
		if (k && k->cur_valid && ts >= k->cur_start && ts - k->cur_start < s->W) {
			start = k->cur_start;
			idx = k->cur_idx;
		} else {
			int64_t widx = floor_div(ts, s->W);
			int64_t ns = (int64_t)s->nslots;
			start = widx * s->W;
			idx = (size_t)(((widx % ns) + ns) % ns);
		}
		if (start + s->W + s->grace <= now_ms) {
			set->st.late++;
			if (k)
				k->late_pending++;
			continue;
		}
		if (start > now_ms + s->W) {
			set->st.future++;
			continue;
		}
		if (!k) {
			if (s->nkeys >= s->max_keys) {
				set->st.keys_dropped++;
				continue;
			}
			if (!(k = new_key(set, s, thing, group, h)))
				return TG_ENOMEM;
		}
		k->last_seen = now_ms;
		k->cur_start = start;
		k->cur_idx = idx;
		k->cur_valid = 1;
		struct slot *sl = slot_at(s, k, idx);
		if (sl->used && sl->start != start) {
			if (sl->start > start) { /* only with a clock running backwards */
				set->st.late++;
				k->late_pending++;
				continue;
			}
			int rc = close_due(set, s, k, now_ms, 0);
			if (rc < 0)
				return rc;
			if (sl->used && (rc = emit_slot(set, s, k, sl)) < 0)
				return rc;
		}
		if (!sl->used) {
			memset(sl, 0, s->slot_size);
			sl->used = 1;
			sl->start = start;
			if (start + s->W + s->grace < s->next_walk)
				s->next_walk = start + s->W + s->grace;
		}
		sl->count++;
		for (size_t f = 0; f < s->nfields; f++) {
			if (f < AGG_PREFETCH_FIELDS) {
				if (has[f])
					acc_add(&s->fields[f], sl->c, vals[f], ts);
				continue;
			}
			json_t *v = json_object_getn(obj, s->fields[f].name, s->fields[f].len);
			if (json_is_number(v))
				acc_add(&s->fields[f], sl->c, json_number_value(v), ts);
		}
		set->st.added++;
		counted++;
	}
	return counted;
}

int aggregate_tick(aggregate_set *set, int64_t now_ms)
{
	if (!set)
		return TG_EINVAL;
	int total = 0;
	for (size_t i = 0; i < set->n; i++) {
		struct spec *s = &set->v[i];
		if (now_ms < s->next_walk)
			continue;
		int64_t next = now_ms + s->W; /* idle keys are looked for once a window length */
		struct key *k = s->keys;
		while (k) {
			struct key *knext = k->next;
			int rc = close_due(set, s, k, now_ms, 0);
			if (rc < 0)
				return rc;
			total += rc;
			int open = 0;
			for (size_t j = 0; j < s->nslots; j++) {
				const struct slot *sl = slot_at(s, k, j);
				open |= sl->used;
				if (sl->used && sl->start + s->W + s->grace < next)
					next = sl->start + s->W + s->grace;
			}
			if (!open && k->last_seen + AGG_IDLE_WINDOWS * s->W <= now_ms)
				drop_key(set, s, k);
			k = knext;
		}
		s->next_walk = next;
	}
	return total;
}

int aggregate_flush(aggregate_set *set)
{
	if (!set)
		return TG_EINVAL;
	int total = 0;
	for (size_t i = 0; i < set->n; i++)
		for (struct key *k = set->v[i].keys; k; k = k->next) {
			int rc = close_due(set, &set->v[i], k, 0, 1);
			if (rc < 0)
				return rc;
			total += rc;
		}
	return total;
}
