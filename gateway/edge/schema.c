/*
 * schema.c — the per-message apply step of declarative payload schemas.
 *
 * schema_apply() walks the arrays schema_load.c compiled, doing jansson hash lookups and
 * in-place edits only: renames, the timestamp normalised to epoch ms and RFC 3339, unit
 * conversion, defaults, type/range/pattern checks, unknown fields kept, dropped or
 * rejected. It allocates nothing itself (jansson allocates for values it adds). The raw
 * payload checks and parser are in schema_payload.c, the unit table in schema_units.c.
 */
#include "edge/schema.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/timefmt.h"
#include "edge/schema_int.h"

/* ---- apply ------------------------------------------------------------------------------- */

static const struct schema *find_schema(const schema_set *set, const char *topic)
{
	if (!set || !topic)
		return NULL;
	for (size_t i = 0; i < set->n; i++)
		for (size_t k = 0; k < set->v[i].nfilters; k++)
			if (tg_topic_filter_match(set->v[i].filters[k], topic))
				return &set->v[i];
	return NULL;
}

const char *schema_match(const schema_set *set, const char *topic)
{
	const struct schema *s = find_schema(set, topic);
	return s ? s->name : NULL;
}

static const char *type_word(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_NULL: return "null";
	}
	return "?";
}

static int set_number(json_t *obj, const char *key, json_t **v, double y)
{
	if (json_is_real(*v) && (*v)->refcount == 1)
		return json_real_set(*v, y) ? TG_ENOMEM : 0;
	json_t *n = json_real(y);
	if (!n || json_object_set_new(obj, key, n))
		return TG_ENOMEM;
	*v = n;
	return 0;
}

static int apply_timestamp(const struct schema *s, json_t *obj, int64_t received_ms,
			   schema_reject *why, schema_stats *st)
{
	json_t *v = json_object_get(obj, s->ts_in);
	int64_t ms;
	if (!v) {
		if (s->ts_required)
			return schema_reject_set(why, st, SCHEMA_R_MISSING_FIELD, s->ts_in, "timestamp missing");
		if (!s->ts_fallback)
			return 0;
		ms = received_ms;
	} else if (json_is_integer(v) || json_is_real(v)) {
		double d = json_number_value(v);
		int secs;
		if (s->ts_fmt == TSF_RFC3339)
			return schema_reject_set(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in,
				      "timestamp: expected an RFC 3339 string");
		secs = s->ts_fmt == TSF_S || (s->ts_fmt == TSF_AUTO && fabs(d) < TS_AUTO_SECONDS_BELOW);
		if (secs)
			d *= 1000.0;
		if (!(d >= 0.0 && d <= (double)TIMEFMT_MAX_MS))
			return schema_reject_set(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
				      "timestamp out of range");
		if (json_is_integer(v))
			ms = secs ? json_integer_value(v) * 1000 : json_integer_value(v);
		else
			ms = (int64_t)llround(d);
	} else if (json_is_string(v)) {
		if (s->ts_fmt != TSF_AUTO && s->ts_fmt != TSF_RFC3339)
			return schema_reject_set(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in,
				      "timestamp: expected an epoch number");
		if (timefmt_parse_rfc3339(json_string_value(v), &ms) || ms < 0 || ms > TIMEFMT_MAX_MS)
			return schema_reject_set(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
				      "not an RFC 3339 timestamp");
	} else {
		return schema_reject_set(why, st, SCHEMA_R_WRONG_TYPE, s->ts_in, "timestamp of type %s",
			      type_word(v));
	}
	if (v && s->ts_skew_ms > 0 &&
	    (ms > received_ms + s->ts_skew_ms || ms < received_ms - s->ts_skew_ms))
		return schema_reject_set(why, st, SCHEMA_R_BAD_TIMESTAMP, s->ts_in,
			      "timestamp %lld ms off the receive time (max %lld)",
			      (long long)(ms - received_ms), (long long)s->ts_skew_ms);

	if (v && strcmp(s->ts_in, s->ts_out) != 0)
		json_object_del(obj, s->ts_in);
	json_t *o = json_object_get(obj, s->ts_out);
	if (o && json_is_integer(o) && o->refcount == 1) {
		json_integer_set(o, ms);
	} else {
		json_t *n = json_integer(ms);
		if (!n || json_object_set_new(obj, s->ts_out, n))
			return TG_ENOMEM;
	}
	if (s->ts_iso) {
		char iso[32];
		timefmt_format_rfc3339(ms, iso, sizeof iso);
		json_t *i = json_object_get(obj, s->ts_iso);
		if (i && json_is_string(i) && i->refcount == 1) {
			if (json_string_set(i, iso))
				return TG_ENOMEM;
		} else {
			json_t *n = json_string(iso);
			if (!n || json_object_set_new(obj, s->ts_iso, n))
				return TG_ENOMEM;
		}
	}
	return 0;
}

/* Level `level` (1-based, like IoT SQL's topic(n)) of topic, without copying. */
static int topic_level(const char *topic, int level, const char **start, size_t *len)
{
	const char *p = topic;
	for (int i = 1; i < level; i++) {
		p = strchr(p, '/');
		if (!p)
			return -1;
		p++;
	}
	const char *e = strchr(p, '/');
	*start = p;
	*len = e ? (size_t)(e - p) : strlen(p);
	return 0;
}

static int apply_field(const struct schema *s, const struct sfield *f, const char *topic,
		       json_t *obj, schema_reject *why, schema_stats *st)
{
	json_t *v = json_object_get(obj, f->name);
	if (!v) {
		if (f->def) {
			json_t *n = json_deep_copy(f->def);
			if (!n || json_object_set_new(obj, f->name, n))
				return TG_ENOMEM;
			return 0;
		}
		if (f->required)
			return schema_reject_set(why, st, SCHEMA_R_MISSING_FIELD, f->name, "required field missing");
		return 0;
	}
	if (!(schema_type_bits(v) & f->types))
		return schema_reject_set(why, st, SCHEMA_R_WRONG_TYPE, f->name, "unexpected %s", type_word(v));
	if (f->unit_to >= 0 && json_is_number(v)) {
		int from = f->unit_from;
		if (f->unit_field >= 0) {
			const char *ufn = s->ufs[f->unit_field].name;
			json_t *u = json_object_get(obj, ufn);
			if (!u)
				from = f->unit_default;
			else if (!json_is_string(u))
				return schema_reject_set(why, st, SCHEMA_R_BAD_UNIT, ufn, "unit is not a string");
			else if ((from = schema_unit_lookup(json_string_value(u))) < 0 ||
				 schema_units[from].quantity != schema_units[f->unit_to].quantity)
				return schema_reject_set(why, st, SCHEMA_R_BAD_UNIT, ufn, "unit \"%.40s\" not usable for %s",
					      json_string_value(u), f->name);
		}
		if (from != f->unit_to || f->round >= 0) {
			const struct unit_def *a = &schema_units[from], *b = &schema_units[f->unit_to];
			double y = ((json_number_value(v) * a->scale + a->offset) - b->offset) / b->scale;
			if (f->round >= 0) {
				double p = 1.0;
				for (int k = 0; k < f->round; k++)
					p *= 10.0;
				y = round(y * p) / p;
			}
			if (set_number(obj, f->name, &v, y))
				return TG_ENOMEM;
		}
	}
	if (json_is_number(v)) {
		double x = json_number_value(v);
		if (f->has_min && x < f->min)
			return schema_reject_set(why, st, SCHEMA_R_OUT_OF_RANGE, f->name, "%g < min %g", x, f->min);
		if (f->has_max && x > f->max)
			return schema_reject_set(why, st, SCHEMA_R_OUT_OF_RANGE, f->name, "%g > max %g", x, f->max);
	} else if (json_is_string(v)) {
		const char *str = json_string_value(v);
		size_t n = json_string_length(v);
		if (f->min_len >= 0 || f->max_len >= 0) {
			long long l = schema_utf8_len(str, n);
			if ((f->min_len >= 0 && l < f->min_len) || (f->max_len >= 0 && l > f->max_len))
				return schema_reject_set(why, st, SCHEMA_R_OUT_OF_RANGE, f->name,
					      "length %lld outside %lld..%lld", l, f->min_len, f->max_len);
		}
		if (f->re) {
			int rc = pcre2_match(f->re, (PCRE2_SPTR)str, n, 0, 0, f->md, s->mctx);
			if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT)
				return schema_reject_set(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
					      "pattern match limit reached");
			if (rc < 0)
				return schema_reject_set(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
					      "does not match the pattern");
		}
	}
	if (f->enum_vals && !schema_enum_has(f->enum_vals, v))
		return schema_reject_set(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name, "not one of the allowed values");
	if (f->topic_level && json_is_string(v)) {
		const char *lv;
		size_t ll;
		if (topic_level(topic, f->topic_level, &lv, &ll) || ll != json_string_length(v) ||
		    memcmp(lv, json_string_value(v), ll) != 0)
			return schema_reject_set(why, st, SCHEMA_R_PATTERN_MISMATCH, f->name,
				      "does not match topic level %d (the publishing thing)", f->topic_level);
	}
	return 0;
}

static int is_known(const struct schema *s, const char *key)
{
	for (size_t i = 0; i < s->nknown; i++)
		if (strcmp(s->known[i], key) == 0)
			return 1;
	return 0;
}

int schema_apply(const schema_set *set, const char *topic, json_t *obj, int64_t received_ms,
		 schema_reject *why, schema_stats *st)
{
	int rc;
	if (why) {
		why->reason = SCHEMA_R_NONE;
		why->field[0] = why->text[0] = '\0';
	}
	if (!json_is_object(obj))
		return schema_reject_set(why, st, SCHEMA_R_NOT_OBJECT, NULL, "payload is not a JSON object");
	const struct schema *s = find_schema(set, topic);
	if (!s) {
		if (st)
			st->unmatched++;
		return SCHEMA_NO_MATCH;
	}
	for (size_t i = 0; i < s->nrenames; i++) {
		const struct rename *r = &s->renames[i];
		json_t *v = json_object_get(obj, r->from);
		if (!v)
			continue;
		if (json_object_get(obj, r->to))
			return schema_reject_set(why, st, SCHEMA_R_DUPLICATE_KEY, r->to, "both %s and %s present",
				      r->from, r->to);
		if (json_object_set(obj, r->to, v))
			return TG_ENOMEM;
		json_object_del(obj, r->from);
	}
	if (s->has_ts && (rc = apply_timestamp(s, obj, received_ms, why, st)))
		return rc;
	for (size_t i = 0; i < s->nfields; i++)
		if ((rc = apply_field(s, &s->fields[i], topic, obj, why, st)))
			return rc;
	/* Unit fields are rewritten only after every field was converted, because several
	 * fields may read the same unit field. */
	for (size_t i = 0; i < s->nufs; i++) {
		json_t *u = json_object_get(obj, s->ufs[i].name);
		const char *to = schema_units[s->ufs[i].to].name;
		if (u && json_is_string(u) && strcmp(json_string_value(u), to) != 0 && json_string_set(u, to))
			return TG_ENOMEM;
	}
	if (s->unknown != UNKNOWN_KEEP) {
		const char *key;
		json_t *v;
		void *tmp;
		json_object_foreach_safe(obj, tmp, key, v) {
			if (is_known(s, key))
				continue;
			if (s->unknown == UNKNOWN_REJECT)
				return schema_reject_set(why, st, SCHEMA_R_UNKNOWN_FIELD, key, "field not in the schema");
			json_object_del(obj, key);
		}
	}
	if (st)
		st->accepted++;
	return SCHEMA_APPLIED;
}
