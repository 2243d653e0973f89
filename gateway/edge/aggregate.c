/*
 * aggregate.c — tumbling windows with grace, bounded per key.
 *
 * Design: every configured aggregate ("spec") owns a chained hash table of keys
 * (thing [+ group value]); a key owns up to `nslots` window slots, each holding a count and
 * one accumulator per configured field (the value count plus only the cells its functions
 * need). nslots = ceil(grace/W) + 2 is exactly enough that, with now_ms moving forward, the
 * windows not yet due to close fit — so when a key needs a slot and none is free it emits
 * its due windows first, in order (tick not called recently). The slots are allocated on
 * demand (one at first, the rest only while a window is in its grace period beside the
 * next one), so a thing that sent a message or two costs one slot, not nslots.
 * Output names ("temperature_avg") are built at load so emitting only formats numbers.
 * The per-message path allocates nothing except a key's node the first time it is seen.
 * Tick walks a spec's keys only when a window may be due (the spec keeps a lower bound of
 * the earliest close time) or once per window length to drop idle keys, not every second.
 * Keys changed since the last group end sit on a dirty list, each with its state from
 * before the first change (kept when it was marked): aggregate_foreach_dirty hands their
 * state out as a small blob (layout below, native byte order), aggregate_dirty_done forgets
 * the marks or, for a group rolled back, puts the earlier states back.
 */
#include "edge/aggregate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
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
	struct key *dprev, *dnext; /* the set's dirty list */
	uint64_t hash;
	char *group;             /* points into name[] after the thing, or NULL */
	unsigned char *slots;    /* nalloc slots of slot_size bytes (8-aligned), own allocation */
	int64_t last_seen;
	uint64_t late_pending;   /* late arrivals reported with the next emitted window */
	int64_t cur_start;       /* the window last used and its slot: most messages fall in it, */
	uint8_t cur_idx;         /* which saves the 64-bit division of the general path */
	uint8_t cur_valid, nalloc, dirty, undo_ok;
	uint32_t undo_off, undo_len; /* its state before the group's first change, in set->undo */
	uint32_t spec;           /* index of its spec in the set */
	char thing[];            /* thing\0[group\0] */
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
	size_t nslots, slot_size, ncells;
	char *layout;            /* what the stored state depends on (aggregate_layout) */
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
	struct key *dirty;       /* keys changed since the last aggregate_dirty_done */
	int tracking;            /* aggregate_track_changes */
	tg_buf scratch;          /* a key's blob, for the foreach functions */
	tg_buf undo;             /* dirty keys' states before the group changed them */
	size_t key_bytes;        /* nodes and slots held, for aggregate_memory */
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
	if (k)
		free(k->slots);
	free(k);
}

static int key_blob(const struct spec *s, const struct key *k, tg_buf *out);

/* Called before a key changes: the first change in a group puts it on the dirty list and
 * keeps its state as it was, which a rollback puts back. */
static void dirty_mark(aggregate_set *set, struct key *k)
{
	if (k->dirty || !set->tracking)
		return;
	size_t off = set->undo.len;
	k->undo_ok = key_blob(&set->v[k->spec], k, &set->undo) == 0 && set->undo.len - off <= UINT32_MAX;
	if (!k->undo_ok)
		set->undo.len = off;
	k->undo_off = (uint32_t)off;
	k->undo_len = (uint32_t)(set->undo.len - off);
	k->dirty = 1;
	k->dprev = NULL;
	k->dnext = set->dirty;
	if (set->dirty)
		set->dirty->dprev = k;
	set->dirty = k;
}

static void dirty_unmark(aggregate_set *set, struct key *k)
{
	if (!k->dirty)
		return;
	if (k->dprev)
		k->dprev->dnext = k->dnext;
	else
		set->dirty = k->dnext;
	if (k->dnext)
		k->dnext->dprev = k->dprev;
	k->dprev = k->dnext = NULL;
	k->dirty = 0;
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
	free(s->layout);
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
	tg_buf_free(&set->scratch);
	tg_buf_free(&set->undo);
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
	s->ncells = ncells;
	/* everything the meaning of a stored slot depends on: a change of any of it makes the
	 * state stored by an earlier configuration unusable */
	tg_buf lb = {0};
	int lrc = tg_buf_printf(&lb, "v1 window=%lld grace=%lld time=%s group=%s fields=", (long long)s->W,
				(long long)s->grace, s->time_field, s->group_by ? s->group_by : "");
	for (size_t i = 0; i < s->nfields && !lrc; i++)
		lrc = tg_buf_printf(&lb, "%s%s:%x", i ? "," : "", s->fields[i].name, s->fields[i].fns);
	if (lrc || !(s->layout = strndup(lb.p ? lb.p : "", lb.len))) {
		tg_buf_free(&lb);
		return TG_ENOMEM;
	}
	tg_buf_free(&lb);
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
	dirty_mark(set, k);
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
		for (size_t i = 0; i < k->nalloc; i++) {
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

/* Room for n slots (n <= nslots); the new ones are free. 0 or TG_ENOMEM. */
static int key_slots(aggregate_set *set, struct spec *s, struct key *k, size_t n)
{
	if (n <= k->nalloc)
		return 0;
	unsigned char *p = realloc(k->slots, n * s->slot_size);
	if (!p)
		return TG_ENOMEM;
	memset(p + k->nalloc * s->slot_size, 0, (n - k->nalloc) * s->slot_size);
	set->key_bytes += (n - k->nalloc) * s->slot_size;
	k->slots = p;
	k->nalloc = (uint8_t)n;
	return 0;
}

static struct key *new_key(aggregate_set *set, struct spec *s, const char *thing,
			   const char *group, uint64_t h)
{
	size_t lt = strlen(thing) + 1, lg = group ? strlen(group) + 1 : 0;
	struct key *k = calloc(1, sizeof *k + lt + lg);
	if (!k)
		return NULL;
	if (key_slots(set, s, k, 1)) {
		free(k);
		return NULL;
	}
	memcpy(k->thing, thing, lt);
	if (group) {
		k->group = k->thing + lt;
		memcpy(k->group, group, lg);
	}
	k->spec = (uint32_t)(s - set->v);
	k->hash = h;
	k->hnext = s->buckets[h & s->mask];
	s->buckets[h & s->mask] = k;
	k->next = s->keys;
	if (s->keys)
		s->keys->prev = k;
	s->keys = k;
	s->nkeys++;
	set->st.keys++;
	set->key_bytes += sizeof *k + lt + lg;
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
	dirty_unmark(set, k);
	s->nkeys--;
	set->st.keys--;
	set->key_bytes -= sizeof *k + strlen(k->thing) + 1 + (k->group ? strlen(k->group) + 1 : 0) +
			  k->nalloc * s->slot_size;
	key_free(k);
}

/* The slot for the window starting at start: the one holding it, else a free one (grown
 * on demand), else — every slot open — the key's due windows are emitted first and, if
 * none was due (a clock that ran backwards), the oldest window is emitted early unless it
 * is newer than this one (then *late). Returns the index, or TG_E*. */
static int slot_for(aggregate_set *set, struct spec *s, struct key *k, int64_t start, int64_t now_ms, int *late)
{
	*late = 0;
	int free_idx = -1;
	for (size_t i = 0; i < k->nalloc; i++) {
		const struct slot *sl = slot_at(s, k, i);
		if (sl->used && sl->start == start)
			return (int)i;
		if (!sl->used && free_idx < 0)
			free_idx = (int)i;
	}
	if (free_idx >= 0)
		return free_idx;
	if (k->nalloc < s->nslots) {
		size_t want = k->nalloc * 2 > s->nslots ? s->nslots : (size_t)k->nalloc * 2;
		int idx = k->nalloc;
		if (key_slots(set, s, k, want) == 0)
			return idx;
	}
	int rc = close_due(set, s, k, now_ms, 0);
	if (rc < 0)
		return rc;
	struct slot *oldest = NULL;
	int oidx = -1;
	for (size_t i = 0; i < k->nalloc; i++) {
		struct slot *sl = slot_at(s, k, i);
		if (!sl->used)
			return (int)i;
		if (!oldest || sl->start < oldest->start) {
			oldest = sl;
			oidx = (int)i;
		}
	}
	if (oldest->start > start) { /* only with a clock running backwards */
		*late = 1;
		return 0;
	}
	if ((rc = emit_slot(set, s, k, oldest)) < 0)
		return rc;
	return oidx;
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
		int idx = -1;
		if (k && k->cur_valid && ts >= k->cur_start && ts - k->cur_start < s->W) {
			start = k->cur_start;
			idx = k->cur_idx;
		} else {
			start = floor_div(ts, s->W) * s->W;
		}
		if (start + s->W + s->grace <= now_ms) {
			set->st.late++;
			if (k) {
				dirty_mark(set, k);
				k->late_pending++;
			}
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
		dirty_mark(set, k);
		k->last_seen = now_ms;
		if (idx < 0 || !slot_at(s, k, (size_t)idx)->used || slot_at(s, k, (size_t)idx)->start != start) {
			int late;
			idx = slot_for(set, s, k, start, now_ms, &late);
			if (idx < 0)
				return idx;
			if (late) {
				set->st.late++;
				k->late_pending++;
				continue;
			}
		}
		k->cur_start = start;
		k->cur_idx = (uint8_t)idx;
		k->cur_valid = 1;
		struct slot *sl = slot_at(s, k, (size_t)idx);
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
			for (size_t j = 0; j < k->nalloc; j++) {
				const struct slot *sl = slot_at(s, k, j);
				open |= sl->used;
				if (sl->used && sl->start + s->W + s->grace < next)
					next = sl->start + s->W + s->grace;
			}
			/* a dirty key's change (its last window emitted) is not stored yet: it goes
			 * at a later tick */
			if (!open && !k->dirty && k->last_seen + AGG_IDLE_WINDOWS * s->W <= now_ms)
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

/* ---- persistence ------------------------------------------------------------------------- */
/* A key's blob: u32 version (1), u32 open windows n, i64 last_seen, u64 late_pending, then
 * per open window i64 start, u64 count, ncells x 8 bytes of accumulators. Native byte order:
 * the blob never leaves the box's own outbox.db. */
#define BLOB_VERSION 1u
#define BLOB_HEAD 24

/* Append the key's blob to out; nothing when the key holds nothing worth keeping. */
static int key_blob(const struct spec *s, const struct key *k, tg_buf *out)
{
	uint32_t n = 0;
	for (size_t i = 0; i < k->nalloc; i++)
		n += ((const struct slot *)(k->slots + i * s->slot_size))->used != 0;
	if (!n && !k->late_pending)
		return 0;
	size_t per = 16 + s->ncells * 8, need = BLOB_HEAD + n * per;
	if (tg_buf_reserve(out, need))
		return TG_ENOMEM;
	unsigned char *p = (unsigned char *)out->p + out->len;
	uint32_t ver = BLOB_VERSION;
	memcpy(p, &ver, 4);
	memcpy(p + 4, &n, 4);
	memcpy(p + 8, &k->last_seen, 8);
	memcpy(p + 16, &k->late_pending, 8);
	p += BLOB_HEAD;
	for (size_t i = 0; i < k->nalloc; i++) {
		const struct slot *sl = (const struct slot *)(k->slots + i * s->slot_size);
		if (!sl->used)
			continue;
		memcpy(p, &sl->start, 8);
		memcpy(p + 8, &sl->count, 8);
		memcpy(p + 16, sl->c, s->ncells * 8);
		p += per;
	}
	out->len += need;
	return 0;
}

static int hand_out(aggregate_set *set, const struct key *k, aggregate_state_fn fn, void *ud)
{
	const struct spec *s = &set->v[k->spec];
	set->scratch.len = 0;
	int rc = key_blob(s, k, &set->scratch);
	if (rc)
		return rc;
	aggregate_key_state ks = {.aggregate = s->name, .thing = k->thing, .group = k->group,
				  .blob = set->scratch.len ? set->scratch.p : NULL, .len = set->scratch.len};
	return fn(ud, &ks);
}

void aggregate_track_changes(aggregate_set *set, int on)
{
	if (!set)
		return;
	set->tracking = on;
	while (!on && set->dirty)
		dirty_unmark(set, set->dirty);
	if (!on)
		set->undo.len = 0;
}

int aggregate_foreach_dirty(aggregate_set *set, aggregate_state_fn fn, void *ud)
{
	if (!set)
		return TG_EINVAL;
	for (struct key *k = set->dirty; k; k = k->dnext) {
		int rc = hand_out(set, k, fn, ud);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int aggregate_foreach_key(aggregate_set *set, aggregate_state_fn fn, void *ud)
{
	if (!set)
		return TG_EINVAL;
	for (size_t i = 0; i < set->n; i++)
		for (struct key *k = set->v[i].keys; k; k = k->next) {
			int open = k->late_pending != 0;
			for (size_t j = 0; j < k->nalloc && !open; j++)
				open = slot_at(&set->v[i], k, j)->used;
			if (!open)
				continue;
			int rc = hand_out(set, k, fn, ud);
			if (rc < 0)
				return rc;
		}
	return 0;
}

/* Replace the key's state by a blob (NULL: no open window, nothing late). The key's
 * windows must be free of anything not in the blob (the caller emptied them). */
static int key_load(aggregate_set *set, struct spec *s, struct key *k, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < k->nalloc; i++)
		slot_at(s, k, i)->used = 0;
	k->late_pending = 0;
	k->cur_valid = 0;
	if (!p)
		return 0;
	uint32_t ver, n;
	size_t per = 16 + s->ncells * 8;
	if (len < BLOB_HEAD)
		return TG_EINVAL;
	memcpy(&ver, p, 4);
	memcpy(&n, p + 4, 4);
	if (ver != BLOB_VERSION || n > s->nslots || len != BLOB_HEAD + n * per)
		return TG_EINVAL;
	if (key_slots(set, s, k, n))
		return TG_ENOMEM;
	memcpy(&k->last_seen, p + 8, 8);
	memcpy(&k->late_pending, p + 16, 8);
	p += BLOB_HEAD;
	for (uint32_t i = 0; i < n; i++, p += per) {
		struct slot *sl = slot_at(s, k, i);
		memset(sl, 0, s->slot_size);
		sl->used = 1;
		memcpy(&sl->start, p, 8);
		memcpy(&sl->count, p + 8, 8);
		memcpy(sl->c, p + 16, s->ncells * 8);
		if (sl->start + s->W + s->grace < s->next_walk)
			s->next_walk = sl->start + s->W + s->grace;
	}
	return 0;
}

void aggregate_dirty_done(aggregate_set *set, int stored)
{
	if (!set)
		return;
	while (set->dirty) {
		struct key *k = set->dirty;
		dirty_unmark(set, k);
		if (stored)
			continue;
		/* the rolled-back group's changes are undone; a key whose earlier state could not
		 * be kept is emptied (its windows restart from here) */
		struct spec *s = &set->v[k->spec];
		const unsigned char *p = k->undo_ok && k->undo_len ? (const unsigned char *)set->undo.p + k->undo_off : NULL;
		if (key_load(set, s, k, p, k->undo_len) < 0)
			key_load(set, s, k, NULL, 0);
	}
	set->undo.len = 0;
}

int aggregate_restore(aggregate_set *set, const aggregate_key_state *ks)
{
	if (!set || !ks || !ks->aggregate || !ks->thing)
		return TG_EINVAL;
	for (size_t i = 0; i < set->n; i++) {
		struct spec *s = &set->v[i];
		if (strcmp(s->name, ks->aggregate) != 0)
			continue;
		if (!s->group_by != !ks->group)
			return TG_EINVAL;
		uint64_t h = hash_key(ks->thing, ks->group);
		struct key *k = find_key(s, ks->thing, ks->group, h);
		if (!ks->blob) { /* a later record: the key holds nothing any more */
			if (k)
				drop_key(set, s, k);
			return 0;
		}
		if (!k) {
			if (s->nkeys >= s->max_keys) {
				set->st.keys_dropped++;
				return TG_EFULL;
			}
			if (!(k = new_key(set, s, ks->thing, ks->group, h)))
				return TG_ENOMEM;
		}
		int rc = key_load(set, s, k, ks->blob, ks->len);
		if (rc)
			drop_key(set, s, k);
		return rc;
	}
	return TG_ENOTFOUND;
}

const char *aggregate_layout(const aggregate_set *set, size_t i, const char **name)
{
	if (!set || i >= set->n)
		return NULL;
	if (name)
		*name = set->v[i].name;
	return set->v[i].layout;
}

size_t aggregate_memory(const aggregate_set *set)
{
	if (!set)
		return 0;
	size_t n = set->key_bytes;
	for (size_t i = 0; i < set->n; i++)
		n += (set->v[i].mask + 1) * sizeof *set->v[i].buckets;
	return n;
}
