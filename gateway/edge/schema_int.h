/*
 * schema_int.h — what the three parts of the schema module share and nothing outside it
 * sees: the compiled form (schema_load.c builds it, schema.c applies it), the unit table
 * (schema_units.c) and the rejection helper (schema_payload.c fills a schema_reject for
 * the payload checks and the apply step alike).
 */
#ifndef TG_SCHEMA_INT_H
#define TG_SCHEMA_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/topic.h"
#include "edge/schema.h"

#define TS_AUTO_SECONDS_BELOW 100000000000LL /* 1e11: as seconds that is year 5138, as ms 1973 */

/* ---- units (schema_units.c) ---------------------------------------------------------------- */

enum { Q_TEMP, Q_PRESSURE, Q_LENGTH, Q_SPEED };
struct unit_def {
	const char *name;
	int quantity;
	double scale, offset;
};
extern const struct unit_def schema_units[];
/* Index into schema_units by name (exact spelling first, then case-insensitive), or -1. */
int schema_unit_lookup(const char *s);

/* ---- compiled form ----------------------------------------------------------------------- */

enum {
	T_STRING = 1 << 0,
	T_NUMBER = 1 << 1, /* integer or real */
	T_INTEGER = 1 << 2,
	T_BOOLEAN = 1 << 3,
	T_OBJECT = 1 << 4,
	T_ARRAY = 1 << 5,
	T_NULL = 1 << 6,
	T_ANY = 0x7f,
};
enum { UNKNOWN_KEEP, UNKNOWN_DROP, UNKNOWN_REJECT };
enum { TSF_AUTO, TSF_MS, TSF_S, TSF_RFC3339 };

struct sfield {
	char *name;
	unsigned types;
	int required;
	int has_min, has_max;
	double min, max;
	long long min_len, max_len; /* code points; -1 = unbounded */
	pcre2_code *re;
	pcre2_match_data *md;
	json_t *enum_vals; /* array of allowed values */
	json_t *def;       /* default value */
	int unit_from;     /* fixed source unit, or -1 */
	int unit_to;       /* target unit, or -1: no conversion */
	int unit_default;  /* unit assumed when the unit field is absent */
	int unit_field;    /* index into schema.ufs, or -1 */
	int round;         /* decimals to round a converted value to, -1 = keep */
	int topic_level;   /* 1-based topic level the string must equal (identity), 0 = none */
};

struct ufield {
	char *name;
	int to; /* written back after conversion */
};

struct rename {
	char *from, *to;
};

struct schema {
	char *name;
	tg_topic_filter **filters;
	size_t nfilters;
	int unknown;
	struct rename *renames;
	size_t nrenames;
	int has_ts, ts_fmt, ts_required, ts_fallback;
	char *ts_in, *ts_out, *ts_iso;
	int64_t ts_skew_ms;
	struct sfield *fields;
	size_t nfields;
	struct ufield *ufs;
	size_t nufs;
	const char **known; /* borrowed pointers into the arrays above */
	size_t nknown;
	pcre2_match_context *mctx;
};

struct schema_set {
	struct schema *v;
	size_t n;
};

/* Fill *why (cold path: only runs on rejection) and count it; returns TG_EINVAL. */
int schema_reject_set(schema_reject *why, schema_stats *st, schema_reason r, const char *field, const char *fmt,
		      ...) __attribute__((format(printf, 5, 6)));
/* Per-field helpers of the apply step's hot path, inline in both files that use them. */
/* The T_* bits of a JSON value's type. */
static inline unsigned schema_type_bits(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: return T_STRING;
	case JSON_INTEGER: return T_NUMBER | T_INTEGER;
	case JSON_REAL: return T_NUMBER;
	case JSON_TRUE:
	case JSON_FALSE: return T_BOOLEAN;
	case JSON_OBJECT: return T_OBJECT;
	case JSON_ARRAY: return T_ARRAY;
	case JSON_NULL: return T_NULL;
	}
	return 0;
}

/* Code points of UTF-8 text already checked valid. */
static inline long long schema_utf8_len(const char *s, size_t n)
{
	long long cp = 0;
	for (size_t i = 0; i < n; i++)
		cp += ((unsigned char)s[i] & 0xC0) != 0x80;
	return cp;
}

static inline int schema_enum_has(const json_t *vals, const json_t *v)
{
	size_t i;
	json_t *e;
	json_array_foreach(vals, i, e) {
		if (json_equal(e, v))
			return 1;
	}
	return 0;
}

#endif
