/*
 * schema_load.c — compiling schema files into the flat form schema_apply() walks.
 *
 * A schema file is parsed with jansson once and turned into flat arrays (renames, fields,
 * unit fields, known names) with every decision the hot path would otherwise make
 * precomputed: unit conversion becomes one scale/offset pair, patterns become JIT-compiled
 * pcre2 codes with their own match data and a match-limited context. Because jansson keeps
 * no source positions, semantic load errors are located by searching the file text for the
 * key path ("fields", "temperature", "min"), which points at the right key in any sanely
 * written file.
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

#define SCHEMA_FILE_MAX (1024 * 1024)      /* a schema file larger than this is a mistake */
#define SCHEMA_MATCH_LIMIT_DEFAULT 10000u

static void schema_free_one(struct schema *s)
{
	if (!s)
		return;
	free(s->name);
	for (size_t i = 0; i < s->nfilters; i++)
		tg_topic_filter_free(s->filters[i]);
	free(s->filters);
	for (size_t i = 0; i < s->nrenames; i++) {
		free(s->renames[i].from);
		free(s->renames[i].to);
	}
	free(s->renames);
	free(s->ts_in);
	free(s->ts_out);
	free(s->ts_iso);
	for (size_t i = 0; i < s->nfields; i++) {
		struct sfield *f = &s->fields[i];
		free(f->name);
		pcre2_match_data_free(f->md);
		pcre2_code_free(f->re);
		json_decref(f->enum_vals);
		json_decref(f->def);
	}
	free(s->fields);
	for (size_t i = 0; i < s->nufs; i++)
		free(s->ufs[i].name);
	free(s->ufs);
	free(s->known);
	pcre2_match_context_free(s->mctx);
	memset(s, 0, sizeof *s);
}

void schema_set_free(schema_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		schema_free_one(&set->v[i]);
	free(set->v);
	free(set);
}

size_t schema_count(const schema_set *set) { return set ? set->n : 0; }

/* ---- loading ----------------------------------------------------------------------------- */

struct lctx {
	const char *file;
	const char *text;
	size_t textlen;
	char *err;
	size_t errlen, used;
	int nerr;
};

/* Position of the last key of path in the text: search each "key" (followed by ':') after
 * the previous one. Good enough to point at the offending key of a hand-written file. */
void schema_locate(const char *text, size_t len, const char *const *path, int *line, int *col)
{
	const struct {
		const char *text;
		size_t textlen;
	} cc = {text, len}, *c = &cc;
	size_t pos = 0, found = 0;
	int have = 0;
	for (int k = 0; path[k]; k++) {
		size_t kl = strlen(path[k]);
		size_t p = pos;
		int ok = 0;
		while (p + kl + 2 <= c->textlen) {
			const char *q = memchr(c->text + p, '"', c->textlen - p);
			if (!q)
				break;
			p = (size_t)(q - c->text);
			if (p + kl + 2 <= c->textlen && memcmp(q + 1, path[k], kl) == 0 && q[kl + 1] == '"') {
				size_t r = p + kl + 2;
				while (r < c->textlen && isspace((unsigned char)c->text[r]))
					r++;
				if (r < c->textlen && c->text[r] == ':') {
					ok = 1;
					break;
				}
			}
			p++;
		}
		if (!ok)
			break;
		found = p;
		pos = p + kl + 2;
		have = 1;
	}
	*line = 1;
	*col = 1;
	if (!have)
		return;
	for (size_t i = 0; i < found; i++) {
		if (c->text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static void lerr(struct lctx *c, const char *k1, const char *k2, const char *k3, const char *fmt,
		 ...) __attribute__((format(printf, 5, 6)));
static void lerr(struct lctx *c, const char *k1, const char *k2, const char *k3, const char *fmt,
		 ...)
{
	const char *path[4] = {k1, k1 ? k2 : NULL, k1 && k2 ? k3 : NULL, NULL};
	int line, col;
	schema_locate(c->text, c->textlen, path, &line, &col);
	c->nerr++;
	if (!c->err || c->used + 1 >= c->errlen)
		return;
	int n = snprintf(c->err + c->used, c->errlen - c->used, "%s:%d:%d: ", c->file, line, col);
	if (n > 0 && (size_t)n < c->errlen - c->used) {
		c->used += (size_t)n;
		va_list ap;
		va_start(ap, fmt);
		n = vsnprintf(c->err + c->used, c->errlen - c->used, fmt, ap);
		va_end(ap);
		if (n > 0)
			c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
		if (c->used + 1 < c->errlen) {
			c->err[c->used++] = '\n';
			c->err[c->used] = '\0';
		}
	} else {
		c->used = c->errlen - 1;
	}
}

static int check_keys(struct lctx *c, json_t *o, const char *const *allowed, const char *k1,
		      const char *k2)
{
	const char *key;
	json_t *v;
	int bad = 0;
	json_object_foreach(o, key, v) {
		int ok = 0;
		for (int i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				ok = 1;
		if (!ok) {
			lerr(c, k1 ? k1 : key, k1 ? (k2 ? k2 : key) : NULL, k1 && k2 ? key : NULL,
			     "unknown key \"%s\"", key);
			bad = 1;
		}
	}
	return bad ? -1 : 0;
}

static unsigned parse_type_name(const char *s)
{
	static const struct {
		const char *n;
		unsigned t;
	} names[] = {{"string", T_STRING}, {"number", T_NUMBER}, {"integer", T_INTEGER},
		     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
		     {"null", T_NULL},       {"any", T_ANY}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(s, names[i].n) == 0)
			return names[i].t;
	return 0;
}


static int add_unit_field(struct schema *s, const char *name, int to)
{
	for (size_t i = 0; i < s->nufs; i++)
		if (strcmp(s->ufs[i].name, name) == 0)
			return s->ufs[i].to == to ? (int)i : -2;
	struct ufield *n = realloc(s->ufs, (s->nufs + 1) * sizeof *n);
	if (!n)
		return -1;
	s->ufs = n;
	s->ufs[s->nufs].name = strdup(name);
	if (!s->ufs[s->nufs].name)
		return -1;
	s->ufs[s->nufs].to = to;
	return (int)s->nufs++;
}


/* Checks that do not depend on the message (here: a default at load time). Returns 1
 * when v passes type/range/length/enum checks; the pattern is checked by the caller. */
static int schema_value_fits(const struct sfield *f, const json_t *v)
{
	if (!(schema_type_bits(v) & f->types))
		return 0;
	if (json_is_number(v)) {
		double x = json_number_value(v);
		if ((f->has_min && x < f->min) || (f->has_max && x > f->max))
			return 0;
	}
	if (json_is_string(v)) {
		long long l = schema_utf8_len(json_string_value(v), json_string_length(v));
		if ((f->min_len >= 0 && l < f->min_len) || (f->max_len >= 0 && l > f->max_len))
			return 0;
	}
	if (f->enum_vals && !schema_enum_has(f->enum_vals, v))
		return 0;
	return 1;
}

static int compile_field(struct lctx *c, struct schema *s, struct sfield *f, const char *name,
			 json_t *spec)
{
	static const char *const allowed[] = {"type", "required", "min", "max", "minLength",
					      "maxLength", "pattern", "enum", "default", "unit",
					      "round", "topicLevel", "description", NULL};
	int bad = 0;
	f->unit_from = f->unit_to = f->unit_default = f->unit_field = -1;
	f->round = -1;
	f->min_len = f->max_len = -1;
	f->types = T_ANY;
	if (!(f->name = strdup(name)))
		return TG_ENOMEM;
	if (!json_is_object(spec)) {
		lerr(c, "fields", name, NULL, "field spec must be an object");
		return TG_EPARSE;
	}
	if (check_keys(c, spec, allowed, "fields", name))
		bad = 1;
	json_t *v = json_object_get(spec, "type");
	if (v) {
		f->types = 0;
		if (json_is_string(v)) {
			f->types = parse_type_name(json_string_value(v));
		} else if (json_is_array(v)) {
			size_t i;
			json_t *e;
			json_array_foreach(v, i, e) {
				unsigned t = json_is_string(e) ? parse_type_name(json_string_value(e)) : 0;
				if (!t) {
					f->types = 0;
					break;
				}
				f->types |= t;
			}
		}
		if (!f->types) {
			lerr(c, "fields", name, "type",
			     "type must be string|number|integer|boolean|object|array|null|any or a list");
			bad = 1;
			f->types = T_ANY;
		}
	}
	if ((v = json_object_get(spec, "required"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "fields", name, "required", "required must be true or false");
			bad = 1;
		}
		f->required = json_is_true(v);
	}
	if ((v = json_object_get(spec, "min"))) {
		if (!json_is_number(v)) {
			lerr(c, "fields", name, "min", "min must be a number");
			bad = 1;
		}
		f->has_min = 1;
		f->min = json_number_value(v);
	}
	if ((v = json_object_get(spec, "max"))) {
		if (!json_is_number(v)) {
			lerr(c, "fields", name, "max", "max must be a number");
			bad = 1;
		}
		f->has_max = 1;
		f->max = json_number_value(v);
	}
	if (f->has_min && f->has_max && f->min > f->max) {
		lerr(c, "fields", name, "max", "max is below min");
		bad = 1;
	}
	if ((v = json_object_get(spec, "minLength"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			lerr(c, "fields", name, "minLength", "minLength must be an integer >= 0");
			bad = 1;
		}
		f->min_len = json_integer_value(v);
	}
	if ((v = json_object_get(spec, "maxLength"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			lerr(c, "fields", name, "maxLength", "maxLength must be an integer >= 0");
			bad = 1;
		}
		f->max_len = json_integer_value(v);
	}
	if ((v = json_object_get(spec, "pattern"))) {
		if (!json_is_string(v)) {
			lerr(c, "fields", name, "pattern", "pattern must be a string");
			bad = 1;
		} else {
			int ec;
			PCRE2_SIZE eo;
			f->re = pcre2_compile((PCRE2_SPTR)json_string_value(v), PCRE2_ZERO_TERMINATED,
					      PCRE2_UTF, &ec, &eo, NULL);
			if (!f->re) {
				PCRE2_UCHAR msg[128];
				pcre2_get_error_message(ec, msg, sizeof msg);
				lerr(c, "fields", name, "pattern", "bad pattern at offset %zu: %s",
				     (size_t)eo, (char *)msg);
				bad = 1;
			} else {
				/* JIT is an optimisation: where unavailable the interpreter runs. */
				(void)pcre2_jit_compile(f->re, PCRE2_JIT_COMPLETE);
				f->md = pcre2_match_data_create_from_pattern(f->re, NULL);
				if (!f->md)
					return TG_ENOMEM;
			}
		}
	}
	if ((v = json_object_get(spec, "enum"))) {
		if (!json_is_array(v) || json_array_size(v) == 0) {
			lerr(c, "fields", name, "enum", "enum must be a non-empty array");
			bad = 1;
		} else {
			f->enum_vals = json_incref(v);
		}
	}
	if ((v = json_object_get(spec, "topicLevel"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 64) {
			lerr(c, "fields", name, "topicLevel", "topicLevel must be an integer 1..64");
			bad = 1;
		} else {
			f->topic_level = (int)json_integer_value(v);
			if (!(f->types & T_STRING)) {
				lerr(c, "fields", name, "topicLevel", "topicLevel needs a string field");
				bad = 1;
			}
		}
	}
	if ((v = json_object_get(spec, "round"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 9) {
			lerr(c, "fields", name, "round", "round must be an integer 0..9");
			bad = 1;
		} else {
			f->round = (int)json_integer_value(v);
		}
	}
	if ((v = json_object_get(spec, "unit"))) {
		static const char *const uallowed[] = {"field", "from", "to", "default", NULL};
		json_t *uf = json_object_get(v, "field"), *from = json_object_get(v, "from");
		json_t *to = json_object_get(v, "to"), *dflt = json_object_get(v, "default");
		if (!json_is_object(v)) {
			lerr(c, "fields", name, "unit", "unit must be an object");
			return TG_EPARSE;
		}
		if (check_keys(c, v, uallowed, "fields", name))
			bad = 1;
		if (!json_is_string(to) || (f->unit_to = schema_unit_lookup(json_string_value(to))) < 0) {
			lerr(c, "fields", name, "unit", "unit.to must name a known unit");
			return TG_EPARSE;
		}
		if (!(f->types & T_NUMBER) || f->types & ~(T_NUMBER | T_INTEGER | T_NULL) ||
		    (f->types & T_INTEGER && !(f->types & T_NUMBER))) {
			lerr(c, "fields", name, "unit", "unit conversion needs \"type\": \"number\"");
			bad = 1;
		}
		if ((uf != NULL) == (from != NULL)) {
			lerr(c, "fields", name, "unit", "unit needs exactly one of \"field\" or \"from\"");
			return TG_EPARSE;
		}
		if (from) {
			if (!json_is_string(from) ||
			    (f->unit_from = schema_unit_lookup(json_string_value(from))) < 0 ||
			    schema_units[f->unit_from].quantity != schema_units[f->unit_to].quantity) {
				lerr(c, "fields", name, "from", "unit.from must be a unit compatible with unit.to");
				return TG_EPARSE;
			}
		} else {
			if (!json_is_string(uf)) {
				lerr(c, "fields", name, "field", "unit.field must be a string");
				return TG_EPARSE;
			}
			f->unit_default = f->unit_to;
			if (dflt) {
				if (!json_is_string(dflt) ||
				    (f->unit_default = schema_unit_lookup(json_string_value(dflt))) < 0 ||
				    schema_units[f->unit_default].quantity != schema_units[f->unit_to].quantity) {
					lerr(c, "fields", name, "default",
					     "unit.default must be a unit compatible with unit.to");
					return TG_EPARSE;
				}
			}
			f->unit_field = add_unit_field(s, json_string_value(uf), f->unit_to);
			if (f->unit_field == -1)
				return TG_ENOMEM;
			if (f->unit_field == -2) {
				lerr(c, "fields", name, "field",
				     "unit field \"%s\" is shared by fields with different target units",
				     json_string_value(uf));
				return TG_EPARSE;
			}
		}
	}
	if ((v = json_object_get(spec, "default"))) {
		f->def = json_deep_copy(v);
		if (!f->def)
			return TG_ENOMEM;
		if (!schema_value_fits(f, f->def)) {
			lerr(c, "fields", name, "default", "default does not satisfy the field's own checks");
			bad = 1;
		}
	}
	return bad ? TG_EPARSE : 0;
}

static int parse_duration_field(struct lctx *c, json_t *o, const char *key, const char *k0,
				int64_t *out_ms)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e9) {
		lerr(c, k0, key, NULL, "%s must be a number of seconds >= 0", key);
		return TG_EPARSE;
	}
	*out_ms = (int64_t)llround(json_number_value(v) * 1000.0);
	return 0;
}

static int compile_timestamp(struct lctx *c, struct schema *s, json_t *t)
{
	static const char *const allowed[] = {"field", "format", "output", "isoOutput", "required",
					      "fallbackToReceived", "maxSkewSeconds", NULL};
	int bad = 0;
	if (!json_is_object(t)) {
		lerr(c, "timestamp", NULL, NULL, "timestamp must be an object");
		return TG_EPARSE;
	}
	if (check_keys(c, t, allowed, "timestamp", NULL))
		bad = 1;
	s->has_ts = 1;
	s->ts_fallback = 1;
	json_t *v = json_object_get(t, "field");
	const char *in = json_is_string(v) ? json_string_value(v) : "ts";
	if (v && !json_is_string(v)) {
		lerr(c, "timestamp", "field", NULL, "field must be a string");
		bad = 1;
	}
	v = json_object_get(t, "output");
	const char *out = json_is_string(v) ? json_string_value(v) : "ts";
	v = json_object_get(t, "isoOutput");
	const char *iso = v == NULL ? "ts_iso" : json_is_string(v) ? json_string_value(v) : NULL;
	if (v && !json_is_string(v) && !json_is_null(v)) {
		lerr(c, "timestamp", "isoOutput", NULL, "isoOutput must be a string or null");
		bad = 1;
	}
	if (iso && !*iso)
		iso = NULL;
	if (!(s->ts_in = strdup(in)) || !(s->ts_out = strdup(out)) || (iso && !(s->ts_iso = strdup(iso))))
		return TG_ENOMEM;
	s->ts_fmt = TSF_AUTO;
	if ((v = json_object_get(t, "format"))) {
		const char *fs = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(fs, "auto") == 0)
			s->ts_fmt = TSF_AUTO;
		else if (strcmp(fs, "epoch_ms") == 0)
			s->ts_fmt = TSF_MS;
		else if (strcmp(fs, "epoch_s") == 0)
			s->ts_fmt = TSF_S;
		else if (strcmp(fs, "rfc3339") == 0)
			s->ts_fmt = TSF_RFC3339;
		else {
			lerr(c, "timestamp", "format", NULL,
			     "format must be auto, epoch_ms, epoch_s or rfc3339");
			bad = 1;
		}
	}
	if ((v = json_object_get(t, "required"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "timestamp", "required", NULL, "required must be true or false");
			bad = 1;
		}
		s->ts_required = json_is_true(v);
	}
	if ((v = json_object_get(t, "fallbackToReceived"))) {
		if (!json_is_boolean(v)) {
			lerr(c, "timestamp", "fallbackToReceived", NULL, "must be true or false");
			bad = 1;
		}
		s->ts_fallback = json_is_true(v);
	}
	if (parse_duration_field(c, t, "maxSkewSeconds", "timestamp", &s->ts_skew_ms))
		bad = 1;
	return bad ? TG_EPARSE : 0;
}

static int add_known(struct schema *s, const char *name)
{
	for (size_t i = 0; i < s->nknown; i++)
		if (strcmp(s->known[i], name) == 0)
			return 0;
	const char **n = realloc(s->known, (s->nknown + 1) * sizeof *n);
	if (!n)
		return TG_ENOMEM;
	s->known = n;
	s->known[s->nknown++] = name;
	return 0;
}

static int compile_schema(struct lctx *c, struct schema *s, const char *name, json_t *root)
{
	static const char *const allowed[] = {"topic", "topics", "description", "unknownFields",
					      "renames", "timestamp", "fields", "matchLimit", NULL};
	int bad = 0, rc;
	if (!(s->name = strdup(name)))
		return TG_ENOMEM;
	if (!json_is_object(root)) {
		lerr(c, NULL, NULL, NULL, "a schema file must hold one JSON object");
		return TG_EPARSE;
	}
	if (check_keys(c, root, allowed, NULL, NULL))
		bad = 1;

	/* topic filters */
	json_t *tv = json_object_get(root, "topics");
	json_t *one = json_object_get(root, "topic");
	const char *tkey = tv ? "topics" : "topic";
	if ((tv != NULL) == (one != NULL)) {
		lerr(c, NULL, NULL, NULL, "exactly one of \"topic\" or \"topics\" is required");
		return TG_EPARSE;
	}
	size_t nt = tv ? (json_is_array(tv) ? json_array_size(tv) : 0) : 1;
	if (nt == 0) {
		lerr(c, tkey, NULL, NULL, "topics must be a non-empty array of topic filters");
		return TG_EPARSE;
	}
	if (!(s->filters = calloc(nt, sizeof *s->filters)))
		return TG_ENOMEM;
	for (size_t i = 0; i < nt; i++) {
		json_t *e = tv ? json_array_get(tv, i) : one;
		if (!json_is_string(e) || !tg_topic_filter_valid(json_string_value(e))) {
			lerr(c, tkey, NULL, NULL, "invalid topic filter");
			return TG_EPARSE;
		}
		if (!(s->filters[i] = tg_topic_filter_new(json_string_value(e))))
			return TG_ENOMEM;
		s->nfilters++;
	}

	json_t *v = json_object_get(root, "unknownFields");
	if (v) {
		const char *u = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(u, "keep") == 0)
			s->unknown = UNKNOWN_KEEP;
		else if (strcmp(u, "drop") == 0)
			s->unknown = UNKNOWN_DROP;
		else if (strcmp(u, "reject") == 0)
			s->unknown = UNKNOWN_REJECT;
		else {
			lerr(c, "unknownFields", NULL, NULL, "unknownFields must be keep, drop or reject");
			bad = 1;
		}
	}

	uint32_t mlimit = SCHEMA_MATCH_LIMIT_DEFAULT;
	if ((v = json_object_get(root, "matchLimit"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 10000000) {
			lerr(c, "matchLimit", NULL, NULL, "matchLimit must be an integer 1..10000000");
			bad = 1;
		} else {
			mlimit = (uint32_t)json_integer_value(v);
		}
	}
	if (!(s->mctx = pcre2_match_context_create(NULL)))
		return TG_ENOMEM;
	pcre2_set_match_limit(s->mctx, mlimit);
	pcre2_set_depth_limit(s->mctx, mlimit);

	if ((v = json_object_get(root, "renames"))) {
		if (!json_is_object(v)) {
			lerr(c, "renames", NULL, NULL, "renames must be an object {\"from\": \"to\"}");
			return TG_EPARSE;
		}
		size_t n = json_object_size(v);
		if (n && !(s->renames = calloc(n, sizeof *s->renames)))
			return TG_ENOMEM;
		const char *key;
		json_t *to;
		json_object_foreach(v, key, to) {
			if (!json_is_string(to) || !*json_string_value(to) ||
			    strcmp(key, json_string_value(to)) == 0) {
				lerr(c, "renames", key, NULL, "rename target must be a different field name");
				bad = 1;
				continue;
			}
			struct rename *r = &s->renames[s->nrenames++];
			if (!(r->from = strdup(key)) || !(r->to = strdup(json_string_value(to))))
				return TG_ENOMEM;
		}
	}

	if ((v = json_object_get(root, "timestamp"))) {
		if ((rc = compile_timestamp(c, s, v)) == TG_ENOMEM)
			return rc;
		if (rc)
			bad = 1;
	}

	if ((v = json_object_get(root, "fields"))) {
		if (!json_is_object(v)) {
			lerr(c, "fields", NULL, NULL, "fields must be an object {\"name\": {spec}}");
			return TG_EPARSE;
		}
		size_t n = json_object_size(v);
		if (n && !(s->fields = calloc(n, sizeof *s->fields)))
			return TG_ENOMEM;
		const char *key;
		json_t *spec;
		json_object_foreach(v, key, spec) {
			struct sfield *f = &s->fields[s->nfields++];
			if ((rc = compile_field(c, s, f, key, spec)) == TG_ENOMEM)
				return rc;
			if (rc)
				bad = 1;
			if (s->has_ts && (strcmp(key, s->ts_out) == 0 ||
					  (s->ts_iso && strcmp(key, s->ts_iso) == 0))) {
				lerr(c, "fields", key, NULL,
				     "\"%s\" is written by the timestamp section; do not declare it", key);
				bad = 1;
			}
		}
	}

	/* Names kept when unknownFields is drop/reject: declared fields, timestamp outputs,
	 * unit fields and rename targets. */
	for (size_t i = 0; i < s->nfields; i++)
		if (add_known(s, s->fields[i].name))
			return TG_ENOMEM;
	for (size_t i = 0; i < s->nufs; i++)
		if (add_known(s, s->ufs[i].name))
			return TG_ENOMEM;
	for (size_t i = 0; i < s->nrenames; i++)
		if (add_known(s, s->renames[i].to))
			return TG_ENOMEM;
	if (s->has_ts) {
		if (add_known(s, s->ts_out) || (s->ts_iso && add_known(s, s->ts_iso)))
			return TG_ENOMEM;
	}
	return bad ? TG_EPARSE : 0;
}

static int set_append_buffer(schema_set *set, const char *file, const char *name,
			     const char *text, size_t len, char *err, size_t errlen, size_t *used)
{
	struct lctx c = {.file = file, .text = text, .textlen = len, .err = err, .errlen = errlen};
	c.used = *used;
	json_error_t jerr;
	int rc;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (err && c.used + 1 < errlen) {
			int n = snprintf(err + c.used, errlen - c.used, "%s:%d:%d: %s\n", file, jerr.line,
					 jerr.column, schema_json_error_text(&jerr));
			if (n > 0)
				c.used += (size_t)n < errlen - c.used ? (size_t)n : errlen - c.used - 1;
		}
		*used = c.used;
		return TG_EPARSE;
	}
	struct schema *nv = realloc(set->v, (set->n + 1) * sizeof *nv);
	if (!nv) {
		json_decref(root);
		return TG_ENOMEM;
	}
	set->v = nv;
	memset(&set->v[set->n], 0, sizeof set->v[0]);
	rc = compile_schema(&c, &set->v[set->n], name, root);
	set->n++; /* the (possibly half-built) entry is freed with the set */
	json_decref(root);
	if (rc == TG_ENOMEM)
		tg_seterr(err ? err + c.used : NULL, err ? errlen - c.used : 0, rc, "%s: out of memory\n", file);
	*used = c.used;
	return rc;
}

static char *name_from_path(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	size_t n = strlen(b);
	if (n > 5 && strcmp(b + n - 5, ".json") == 0)
		n -= 5;
	return strndup(b, n);
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	int rc = 0;
	if (!f)
		return tg_seterr(err, errlen, TG_EIO, "%s:1:1: %s\n", path, strerror(errno));
	if (!(buf = malloc(SCHEMA_FILE_MAX + 1))) {
		rc = TG_ENOMEM;
		goto out;
	}
	size_t n = fread(buf, 1, SCHEMA_FILE_MAX + 1, f);
	if (ferror(f)) {
		rc = tg_seterr(err, errlen, TG_EIO, "%s:1:1: read error\n", path);
		goto out;
	}
	if (n > SCHEMA_FILE_MAX) {
		rc = tg_seterr(err, errlen, TG_EFULL, "%s:1:1: file larger than %d bytes\n", path,
			       SCHEMA_FILE_MAX);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

static int load_file_into(schema_set *set, const char *path, char *err, size_t errlen, size_t *used)
{
	char *text = NULL, *name = NULL;
	size_t len = 0;
	int rc = read_file(path, &text, &len, err ? err + *used : NULL, err ? errlen - *used : 0);
	if (rc) {
		if (err)
			*used += strlen(err + *used);
		goto out;
	}
	if (!(name = name_from_path(path))) {
		rc = TG_ENOMEM;
		goto out;
	}
	rc = set_append_buffer(set, path, name, text, len, err, errlen, used);
out:
	free(text);
	free(name);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

schema_set *schema_load_dir(const char *dir, char *errbuf, size_t errlen)
{
	schema_set *set = calloc(1, sizeof *set);
	DIR *d = NULL;
	char **names = NULL;
	size_t nnames = 0, used = 0;
	int failed = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!set)
		goto fail;
	if (!(d = opendir(dir))) {
		tg_seterr(errbuf, errlen, TG_EIO, "%s:1:1: %s\n", dir, strerror(errno));
		goto fail;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l <= 5 || de->d_name[0] == '.' || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		char **nn = realloc(names, (nnames + 1) * sizeof *nn);
		if (!nn)
			goto fail;
		names = nn;
		if (!(names[nnames] = strdup(de->d_name)))
			goto fail;
		nnames++;
	}
	qsort(names, nnames, sizeof *names, cmp_str);
	for (size_t i = 0; i < nnames; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (load_file_into(set, path, errbuf, errlen, &used))
			failed = 1; /* keep going so every file's errors are reported at once */
	}
	if (failed)
		goto fail;
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return set;
fail:
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	if (d)
		closedir(d);
	schema_set_free(set);
	return NULL;
}

schema_set *schema_load_file(const char *path, char *errbuf, size_t errlen)
{
	size_t used = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	schema_set *set = calloc(1, sizeof *set);
	if (!set || load_file_into(set, path, errbuf, errlen, &used)) {
		schema_set_free(set);
		return NULL;
	}
	return set;
}

schema_set *schema_load_buffer(const char *name, const char *text, size_t len, char *errbuf,
			       size_t errlen)
{
	size_t used = 0;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	schema_set *set = calloc(1, sizeof *set);
	if (!set || set_append_buffer(set, name, name, text, len, errbuf, errlen, &used)) {
		schema_set_free(set);
		return NULL;
	}
	return set;
}
