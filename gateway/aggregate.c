/*
 * aggregate.c — tumbling windows with grace, bounded per key.
 *
 * Design: every configured aggregate ("spec") owns a chained hash table of keys
 * (thing [+ group value]); a key owns a fixed ring of `nslots` window slots, each holding a
 * count and one accumulator (n, sum, min, max, first/last with their event times) per
 * configured field. A window maps to slot (window index mod nslots). nslots =
 * ceil(grace/W) + 2 is exactly enough that, with now_ms moving forward, a slot is only ever
 * reused by a window whose predecessor in that slot is already due to close — so
 * aggregate_add never has to hold more than nslots windows, and if it finds a due window in
 * the slot it needs (tick not called recently) it emits the key's due windows first, in
 * order. Output names ("temperature_avg") are built at load so emitting only formats numbers.
 * The per-message path allocates nothing except a key's node the first time it is seen.
 */
#include "aggregate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "schema.h"

#define AGG_FILE_MAX (1024 * 1024)
#define AGG_MAX_SLOTS 16
#define AGG_IDLE_WINDOWS 10

enum { FN_AVG, FN_MIN, FN_MAX, FN_COUNT, FN_SUM, FN_FIRST, FN_LAST, FN__N };
static const char *const fn_names[FN__N] = {"avg", "min", "max", "count", "sum", "first", "last"};

struct afield {
	char *name;
	unsigned fns;          /* bit per FN_* */
	char *out[FN__N];      /* "<name>_<fn>" for the configured fns */
};

struct acc {
	uint64_t n;
	double sum, min, max, first, last;
	int64_t first_ts, last_ts;
};

struct slot {
	int64_t start;
	uint64_t count;
	int used;
	struct acc acc[]; /* nfields */
};

struct key {
	struct key *hnext;       /* hash chain */
	struct key *prev, *next; /* all keys of the spec, for tick */
	uint64_t hash;
	char *thing, *group;
	int64_t last_seen;
	uint64_t late_pending;   /* late arrivals reported with the next emitted window */
	int64_t data[];          /* nslots slots of slot_size bytes (8-aligned) */
};

struct spec {
	char *name, *topic, *time_field, *group_by;
	int64_t W, grace;
	size_t max_keys;
	struct afield *fields;
	size_t nfields;
	size_t nslots, slot_size;
	struct key **buckets;
	size_t mask;
	struct key *keys;
	size_t nkeys;
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
	uint64_t h = 1469598103934665603ULL;
	for (const char *p = thing; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	if (group) {
		h = (h ^ 0x1f) * 1099511628211ULL;
		for (const char *p = group; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	}
	return h;
}

static struct slot *slot_at(const struct spec *s, struct key *k, size_t i)
{
	return (struct slot *)((char *)k->data + i * s->slot_size);
}

static void key_free(struct key *k)
{
	if (!k)
		return;
	free(k->thing);
	free(k->group);
	free(k);
}

static void spec_free(struct spec *s)
{
	free(s->name);
	free(s->topic);
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
	if (!json_is_string(v) || !*json_string_value(v)) {
		lerr(c, name, "topic", NULL, "topic must be an MQTT topic filter");
		bad = 1;
	} else if (!(s->topic = strdup(json_string_value(v)))) {
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
	size_t raw = sizeof(struct slot) + s->nfields * sizeof(struct acc);
	s->slot_size = (raw + 7) & ~(size_t)7;
	size_t nb = 16;
	while (nb < s->max_keys && nb < (1u << 20))
		nb <<= 1;
	if (!(s->buckets = calloc(nb, sizeof *s->buckets)))
		return TG_ENOMEM;
	s->mask = nb - 1;
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
		tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: %s\n", name, jerr.line, jerr.column, jerr.text);
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
	json_object_set_new(o, k, json_real(x));
}

/* Build the window's JSON, hand it to the callback, free the slot. */
static int emit_slot(aggregate_set *set, struct spec *s, struct key *k, struct slot *sl)
{
	char iso[32];
	json_t *o = json_object();
	if (!o)
		return TG_ENOMEM;
	int64_t end = sl->start + s->W;
	json_object_set_new(o, "aggregate", json_string(s->name));
	json_object_set_new(o, "thing", json_string(k->thing));
	if (s->group_by)
		json_object_set_new(o, s->group_by, json_string(k->group));
	json_object_set_new(o, "window_start", json_integer(sl->start));
	json_object_set_new(o, "window_end", json_integer(end));
	if (schema_format_rfc3339(sl->start, iso, sizeof iso) > 0)
		json_object_set_new(o, "window_start_iso", json_string(iso));
	if (schema_format_rfc3339(end, iso, sizeof iso) > 0)
		json_object_set_new(o, "window_end_iso", json_string(iso));
	json_object_set_new(o, "ts", json_integer(sl->start));
	json_object_set_new(o, "count", json_integer((json_int_t)sl->count));
	json_object_set_new(o, "late", json_integer((json_int_t)k->late_pending));
	k->late_pending = 0;
	for (size_t i = 0; i < s->nfields; i++) {
		const struct afield *f = &s->fields[i];
		const struct acc *a = &sl->acc[i];
		for (int fn = 0; fn < FN__N; fn++) {
			if (!(f->fns & (1u << fn)))
				continue;
			if (fn == FN_COUNT) {
				json_object_set_new(o, f->out[fn], json_integer((json_int_t)a->n));
				continue;
			}
			if (a->n == 0) {
				json_object_set_new(o, f->out[fn], json_null());
				continue;
			}
			double x = fn == FN_AVG ? a->sum / (double)a->n
				 : fn == FN_MIN ? a->min
				 : fn == FN_MAX ? a->max
				 : fn == FN_SUM ? a->sum
				 : fn == FN_FIRST ? a->first
						  : a->last;
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

static struct key *new_key(aggregate_set *set, struct spec *s, const char *thing,
			   const char *group, uint64_t h)
{
	struct key *k = calloc(1, sizeof *k + s->nslots * s->slot_size);
	if (!k || !(k->thing = strdup(thing)) || (group && !(k->group = strdup(group)))) {
		key_free(k);
		return NULL;
	}
	k->hash = h;
	k->hnext = s->buckets[h & s->mask];
	s->buckets[h & s->mask] = k;
	k->next = s->keys;
	if (s->keys)
		s->keys->prev = k;
	s->keys = k;
	s->nkeys++;
	set->st.keys++;
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

static void acc_add(struct acc *a, double x, int64_t ts)
{
	if (a->n == 0) {
		a->min = a->max = a->first = a->last = x;
		a->first_ts = a->last_ts = ts;
		a->sum = x;
		a->n = 1;
		return;
	}
	a->n++;
	a->sum += x;
	if (x < a->min)
		a->min = x;
	if (x > a->max)
		a->max = x;
	if (ts < a->first_ts) {
		a->first = x;
		a->first_ts = ts;
	}
	if (ts >= a->last_ts) {
		a->last = x;
		a->last_ts = ts;
	}
}

int aggregate_add(aggregate_set *set, const char *topic, const char *thing, const json_t *obj,
		  int64_t received_ms, int64_t now_ms)
{
	if (!set || !topic || !thing)
		return TG_EINVAL;
	int counted = 0;
	for (size_t i = 0; i < set->n; i++) {
		struct spec *s = &set->v[i];
		if (!schema_topic_match(s->topic, topic))
			continue;
		json_t *tv = obj ? json_object_get(obj, s->time_field) : NULL;
		int64_t ts = json_is_integer(tv) ? json_integer_value(tv) : received_ms;
		int64_t widx = floor_div(ts, s->W);
		int64_t start = widx * s->W;
		char gbuf[40];
		const char *group = s->group_by ? group_text(json_object_get(obj, s->group_by), gbuf,
							     sizeof gbuf)
						: NULL;
		uint64_t h = hash_key(thing, group);
		struct key *k = find_key(s, thing, group, h);
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
		struct slot *sl = slot_at(s, k, (size_t)(((widx % (int64_t)s->nslots) + (int64_t)s->nslots) %
							(int64_t)s->nslots));
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
		}
		sl->count++;
		for (size_t f = 0; f < s->nfields; f++) {
			json_t *v = json_object_get(obj, s->fields[f].name);
			if (json_is_number(v))
				acc_add(&sl->acc[f], json_number_value(v), ts);
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
		struct key *k = s->keys;
		while (k) {
			struct key *next = k->next;
			int rc = close_due(set, s, k, now_ms, 0);
			if (rc < 0)
				return rc;
			total += rc;
			int open = 0;
			for (size_t j = 0; j < s->nslots; j++)
				open |= slot_at(s, k, j)->used;
			if (!open && k->last_seen + AGG_IDLE_WINDOWS * s->W <= now_ms)
				drop_key(set, s, k);
			k = next;
		}
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
