/*
 * sim_gen.c — see sim_gen.h. The normal payload is formatted with one snprintf into the
 * caller's buffer (no allocation); hostile payloads are derived from the normal one of the
 * same slot so they look like what a buggy or malicious device would really send. Each
 * slot draws a fixed number of numbers from the walk stream whatever happens to the
 * message, which is what keeps the readings independent of the injection settings.
 */
#include "sim_gen.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"

static const char *const kind_names[SIM_KIND_COUNT] = {
	[SIM_NORMAL] = "normal",
	[SIM_H_MALFORMED_JSON] = "malformed_json",
	[SIM_H_WRONG_TYPE] = "wrong_type",
	[SIM_H_BAD_ID] = "bad_id",
	[SIM_H_MISSING_FIELD] = "missing_field",
	[SIM_H_OUT_OF_RANGE] = "out_of_range",
	[SIM_H_OVERSIZED] = "oversized",
	[SIM_H_DUPLICATE] = "duplicate",
	[SIM_H_CLOCK_SKEW] = "clock_skew",
	[SIM_H_NON_OBJECT] = "non_object",
	[SIM_H_INVALID_UTF8] = "invalid_utf8",
	[SIM_H_TOO_DEEP] = "too_deep",
	[SIM_H_EMPTY] = "empty",
};

const char *sim_kind_name(enum sim_kind k)
{
	return (unsigned)k < SIM_KIND_COUNT ? kind_names[k] : "unknown";
}

int sim_kind_parse(const char *name)
{
	for (int k = 0; k < SIM_KIND_COUNT; k++)
		if (strcmp(name, kind_names[k]) == 0)
			return k;
	return -1;
}

/* ---- PRNG: splitmix64 to seed, xoshiro256** to draw (both public-domain algorithms) ---- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void sim_rng_seed(struct sim_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sim_rng_next(struct sim_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double sim_rng_uniform(struct sim_rng *r) { return (double)(sim_rng_next(r) >> 11) * 0x1.0p-53; }

double sim_rng_normal(struct sim_rng *r)
{
	/* Box–Muller, one value per call (two uniforms), so the draw count per call is fixed. */
	double u1 = sim_rng_uniform(r), u2 = sim_rng_uniform(r);
	if (u1 < 1e-300)
		u1 = 1e-300;
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static unsigned pick(struct sim_rng *r, unsigned n) { return (unsigned)(sim_rng_uniform(r) * n); }

/* ---- generator ---- */

void sim_gen_init(struct sim_gen *g, uint64_t seed, int index, const char *name)
{
	memset(g, 0, sizeof *g);
	snprintf(g->name, sizeof g->name, "%s", name);
	g->index = index;
	/* Distinct, well-mixed seeds per (run seed, thing, stream). */
	uint64_t x = seed ^ (0x6a09e667f3bcc909ull * (uint64_t)(index + 1));
	sim_rng_seed(&g->walk, splitmix64(&x));
	sim_rng_seed(&g->anom, splitmix64(&x));
	sim_rng_seed(&g->host, splitmix64(&x));
	g->t_base = 18.0 + 6.0 * sim_rng_uniform(&g->walk);
	g->h_base = 40.0 + 20.0 * sim_rng_uniform(&g->walk);
	g->p_base = 1005.0 + 16.0 * sim_rng_uniform(&g->walk);
	g->battery = 3.6 + 0.5 * sim_rng_uniform(&g->walk);
	g->rr = (unsigned)index;
}

struct reading {
	double t, h, p, batt;
	int rssi;
};

/* Advance the walk one slot and compute this slot's readings (always 4 normal draws). */
static void step_walk(struct sim_gen *g, int64_t ts_ms, struct reading *rd)
{
	const double theta = 0.02;
	g->t_dev += -theta * g->t_dev + 0.08 * sim_rng_normal(&g->walk);
	g->h_dev += -theta * g->h_dev + 0.30 * sim_rng_normal(&g->walk);
	g->p_dev += -theta * g->p_dev + 0.10 * sim_rng_normal(&g->walk);
	double rssi_noise = sim_rng_normal(&g->walk);

	double hour = fmod((double)ts_ms / 3600000.0, 24.0);
	if (hour < 0)
		hour += 24.0;
	double day = sin(2.0 * M_PI * (hour - 9.0) / 24.0); /* peaks at 15:00 UTC */
	rd->t = g->t_base + 4.0 * day + g->t_dev;
	rd->h = g->h_base - 10.0 * day + g->h_dev;
	if (rd->h < 0.0)
		rd->h = 0.0;
	if (rd->h > 100.0)
		rd->h = 100.0;
	rd->p = g->p_base + 1.5 * sin(2.0 * M_PI * (hour - 10.0) / 12.0) + g->p_dev;
	if (g->battery > 3.3)
		g->battery -= 1e-6;
	rd->batt = g->battery;
	rd->rssi = (int)lround(-62.0 + 6.0 * rssi_noise);
}

/* Anomalies on top of the walk; returns SIM_F_* flags. */
static unsigned apply_anomalies(struct sim_gen *g, const struct sim_gen_cfg *cfg, double t_s,
				struct reading *rd)
{
	unsigned flags = 0;
	if (g->stuck_left > 0) {
		g->stuck_left--;
		rd->t = g->stuck_t;
		rd->h = g->stuck_h;
		rd->p = g->stuck_p;
		flags |= SIM_F_STUCK;
	} else if (cfg->stuck_rate > 0 && sim_rng_uniform(&g->anom) < cfg->stuck_rate) {
		/* This reading is the frozen one; the next 10..50 repeat it. */
		g->stuck_left = 10 + (int)pick(&g->anom, 41);
		g->stuck_t = rd->t;
		g->stuck_h = rd->h;
		g->stuck_p = rd->p;
	}
	if (cfg->anomaly_rate > 0 && sim_rng_uniform(&g->anom) < cfg->anomaly_rate) {
		double mag = 10.0 + 15.0 * sim_rng_uniform(&g->anom);
		rd->t += sim_rng_uniform(&g->anom) < 0.5 ? -mag : mag;
		flags |= SIM_F_ANOMALY;
	}
	for (size_t i = 0; i < cfg->nspikes; i++) {
		const struct sim_spike *s = &cfg->spikes[i];
		if (s->thing == g->index && t_s >= s->at_s && t_s < s->at_s + s->dur_s) {
			rd->t = s->value;
			flags |= SIM_F_SPIKE;
		}
	}
	return flags;
}

static int fmt_normal(char *buf, size_t cap, const char *id, int64_t ts, const struct reading *rd,
		      uint64_t seq)
{
	return snprintf(buf, cap,
			"{\"sensor_id\":\"%s\",\"ts\":%lld,\"temperature\":%.2f,\"humidity\":%.1f,"
			"\"pressure\":%.1f,\"battery\":%.3f,\"rssi\":%d,\"seq\":%llu}",
			id, (long long)ts, rd->t, rd->h, rd->p, rd->batt, rd->rssi,
			(unsigned long long)seq);
}

/* Replace the first occurrence of `from` in buf (length *len) by `to`; 0 or TG_EINVAL. */
static int replace(char *buf, size_t cap, size_t *len, const char *from, const char *to)
{
	char *at = strstr(buf, from);
	size_t lf = strlen(from), lt = strlen(to);
	if (!at || *len - lf + lt + 1 > cap)
		return TG_EINVAL;
	memmove(at + lt, at + lf, *len - (size_t)(at - buf) - lf + 1);
	memcpy(at, to, lt);
	*len = *len - lf + lt;
	return 0;
}

/* Replace the value of "key": (up to the next ',' or '}') with `val`. */
static int replace_value(char *buf, size_t cap, size_t *len, const char *key, const char *val)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	char *at = strstr(buf, pat);
	if (!at)
		return TG_EINVAL;
	char *v = at + strlen(pat);
	char *end = v + strcspn(v, ",}");
	size_t lv = (size_t)(end - v), ln = strlen(val);
	if (*len - lv + ln + 1 > cap)
		return TG_EINVAL;
	memmove(v + ln, end, *len - (size_t)(end - buf) + 1);
	memcpy(v, val, ln);
	*len = *len - lv + ln;
	return 0;
}

/* Remove "key":value and its separating comma. */
static int remove_field(char *buf, size_t *len, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	char *at = strstr(buf, pat);
	if (!at)
		return TG_EINVAL;
	char *end = at + strlen(pat);
	end += strcspn(end, ",}");
	if (*end == ',')
		end++;
	else if (at > buf && at[-1] == ',')
		at--; /* last field: drop the comma before it instead */
	memmove(at, end, *len - (size_t)(end - buf) + 1);
	*len -= (size_t)(end - at);
	return 0;
}

/* Pick the hostile kind for this slot, or SIM_NORMAL. */
static enum sim_kind choose_kind(struct sim_gen *g, const struct sim_gen_cfg *cfg)
{
	unsigned mask = cfg->hostile_mask & SIM_HOSTILE_ALL;
	if (!mask)
		return SIM_NORMAL;
	unsigned n = (unsigned)__builtin_popcount(mask), k;
	if (cfg->hostile_only) {
		k = g->rr++ % n; /* round-robin: K >= n messages cover every enabled kind */
	} else {
		/* Always one draw for the decision, so the stream stays aligned. */
		if (cfg->hostile_rate <= 0 || sim_rng_uniform(&g->host) >= cfg->hostile_rate)
			return SIM_NORMAL;
		k = pick(&g->host, n);
	}
	for (int kind = SIM_HOSTILE_FIRST; kind < SIM_KIND_COUNT; kind++)
		if ((mask >> kind) & 1u) {
			if (k == 0)
				return (enum sim_kind)kind;
			k--;
		}
	return SIM_NORMAL;
}

static int hostile(struct sim_gen *g, enum sim_kind kind, int64_t ts_ms,
		   const struct reading *rd, char *buf, size_t cap, struct sim_msg *out)
{
	struct sim_rng *r = &g->host;
	size_t len = strlen(buf);
	int rc = 0;
	char tmp[512];

	switch (kind) {
	case SIM_H_MALFORMED_JSON: {
		static const char *const v[] = {"truncated", "trailing_garbage", "single_quotes",
						"unquoted_key", "nan_value"};
		unsigned i = pick(r, 5);
		out->variant = v[i];
		if (i == 0) {
			len = 1 + pick(r, (unsigned)len - 2); /* a proper prefix: never valid */
			buf[len] = '\0';
		} else if (i == 1) {
			rc = replace(buf, cap, &len, "}", "}}garbage");
			/* the first '}' is the object's last byte: no nested objects in it */
		} else if (i == 2) {
			for (size_t j = 0; j < len; j++)
				if (buf[j] == '"')
					buf[j] = '\'';
		} else if (i == 3) {
			rc = replace(buf, cap, &len, "\"sensor_id\"", "sensor_id");
		} else {
			rc = replace_value(buf, cap, &len, "temperature", "NaN");
		}
		break;
	}
	case SIM_H_WRONG_TYPE: {
		static const char *const v[] = {"temperature_string", "ts_string", "humidity_array",
						"pressure_object", "sensor_id_number"};
		static const char *const key[] = {"temperature", "ts", "humidity", "pressure",
						  "sensor_id"};
		static const char *const val[] = {"\"hot\"", "\"yesterday\"", "[48.2]",
						  "{\"hPa\":1013.2}", "1234"};
		unsigned i = pick(r, 5);
		out->variant = v[i];
		rc = replace_value(buf, cap, &len, key[i], val[i]);
		break;
	}
	case SIM_H_BAD_ID: {
		static const char *const v[] = {"empty", "too_long", "bad_chars", "control_char",
						"mismatch"};
		unsigned i = pick(r, 5);
		out->variant = v[i];
		char id[320];
		if (i == 0)
			snprintf(id, sizeof id, "\"\"");
		else if (i == 1) {
			memset(id, 'x', 302);
			id[0] = '"';
			id[301] = '"';
			id[302] = '\0';
		} else if (i == 2)
			snprintf(id, sizeof id, "\"dev 00/01#+\"");
		else if (i == 3)
			snprintf(id, sizeof id, "\"dev\\u0001x\"");
		else
			snprintf(id, sizeof id, "\"%.40s-spoof\"", g->name);
		rc = replace_value(buf, cap, &len, "sensor_id", id);
		break;
	}
	case SIM_H_MISSING_FIELD: {
		static const char *const v[] = {"no_ts", "no_temperature", "no_sensor_id"};
		static const char *const key[] = {"ts", "temperature", "sensor_id"};
		unsigned i = pick(r, 3);
		out->variant = v[i];
		rc = remove_field(buf, &len, key[i]);
		break;
	}
	case SIM_H_OUT_OF_RANGE: {
		static const char *const v[] = {"temperature_high", "temperature_below_absolute_zero",
						"humidity_over_100", "pressure_negative"};
		static const char *const key[] = {"temperature", "temperature", "humidity",
						  "pressure"};
		static const char *const val[] = {"1000000.0", "-500.0", "150.0", "-5.0"};
		unsigned i = pick(r, 4);
		out->variant = v[i];
		rc = replace_value(buf, cap, &len, key[i], val[i]);
		break;
	}
	case SIM_H_OVERSIZED: {
		out->variant = "blob";
		size_t target = SIM_OVERSIZE_LIMIT + 1 + pick(r, 16384);
		static const char head[] = ",\"blob\":\"";
		if (target + 1 > cap)
			return TG_EINVAL;
		len--; /* drop the closing brace, append the blob field, close again */
		memcpy(buf + len, head, sizeof head - 1);
		len += sizeof head - 1;
		size_t fill = target - len - 2;
		memset(buf + len, 'A', fill);
		len += fill;
		buf[len++] = '"';
		buf[len++] = '}';
		buf[len] = '\0';
		break;
	}
	case SIM_H_CLOCK_SKEW: {
		static const char *const v[] = {"future", "past"};
		unsigned i = pick(r, 2);
		out->variant = v[i];
		int64_t day = 86400000LL;
		int64_t off = 400 * day + (int64_t)(sim_rng_uniform(r) * (double)(3250 * day));
		int64_t skewed = i == 0 ? ts_ms + off : (ts_ms > off ? ts_ms - off : 0);
		snprintf(tmp, sizeof tmp, "%lld", (long long)skewed);
		rc = replace_value(buf, cap, &len, "ts", tmp);
		break;
	}
	case SIM_H_NON_OBJECT: {
		static const char *const v[] = {"array", "string", "number", "null", "bool"};
		unsigned i = pick(r, 5);
		out->variant = v[i];
		if (i == 0)
			len = (size_t)snprintf(buf, cap, "[\"%s\",%lld,%.2f]", g->name, (long long)ts_ms,
					       rd->t);
		else if (i == 1)
			len = (size_t)snprintf(buf, cap, "\"%s\"", g->name);
		else if (i == 2)
			len = (size_t)snprintf(buf, cap, "%.2f", rd->t);
		else if (i == 3)
			len = (size_t)snprintf(buf, cap, "null");
		else
			len = (size_t)snprintf(buf, cap, "true");
		break;
	}
	case SIM_H_INVALID_UTF8: {
		static const char *const v[] = {"lone_continuation", "overlong", "truncated_sequence",
						"invalid_byte"};
		static const char *const bytes[] = {"\x80", "\xc0\xaf", "\xe2\x82", "\xff"};
		unsigned i = pick(r, 4);
		out->variant = v[i];
		snprintf(tmp, sizeof tmp, "\"%.40s%s\"", g->name, bytes[i]);
		rc = replace_value(buf, cap, &len, "sensor_id", tmp);
		break;
	}
	case SIM_H_TOO_DEEP: {
		out->variant = "nested_arrays";
		static const char head[] = ",\"nested\":";
		if (len + sizeof head + 2 * SIM_TOO_DEEP_LEVELS + 2 > cap)
			return TG_EINVAL;
		len--;
		memcpy(buf + len, head, sizeof head - 1);
		len += sizeof head - 1;
		memset(buf + len, '[', SIM_TOO_DEEP_LEVELS);
		len += SIM_TOO_DEEP_LEVELS;
		memset(buf + len, ']', SIM_TOO_DEEP_LEVELS);
		len += SIM_TOO_DEEP_LEVELS;
		buf[len++] = '}';
		buf[len] = '\0';
		break;
	}
	case SIM_H_EMPTY:
		out->variant = "empty";
		len = 0;
		buf[0] = '\0';
		break;
	case SIM_H_DUPLICATE: /* handled by the caller */
	case SIM_NORMAL:
	case SIM_KIND_COUNT:
		return TG_EINVAL;
	}
	if (rc < 0)
		return rc;
	out->len = len;
	return (int)len;
}

int sim_gen_next(struct sim_gen *g, const struct sim_gen_cfg *cfg, int64_t ts_ms, double t_s,
		 char *buf, size_t cap, struct sim_msg *out)
{
	if (cap < SIM_PAYLOAD_CAP)
		return TG_EINVAL;
	memset(out, 0, sizeof *out);
	out->variant = "";
	out->seq = g->seq++;

	struct reading rd;
	step_walk(g, ts_ms, &rd);
	out->flags = apply_anomalies(g, cfg, t_s, &rd);
	out->kind = choose_kind(g, cfg);

	int n = fmt_normal(buf, cap, g->name, ts_ms, &rd, out->seq);
	if (n < 0 || (size_t)n >= cap)
		return TG_EINVAL;
	out->len = (size_t)n;

	if (out->kind == SIM_H_DUPLICATE) {
		out->variant = "exact_copy";
		if (g->last_len == 0 || cfg->hostile_only) {
			/* Nothing sent before to duplicate (or hostile-only mode, which sends no
			 * normal messages otherwise): this slot's normal message goes first (as
			 * `prefix`), then its copy. */
			memcpy(g->last, buf, out->len + 1);
			g->last_len = out->len;
			g->last_seq = out->seq;
			out->flags |= SIM_F_PREFIX_DUP;
			out->prefix = g->last;
			out->prefix_len = g->last_len;
		}
		memcpy(buf, g->last, g->last_len + 1);
		out->len = g->last_len;
		out->seq = g->last_seq;
		return (int)out->len;
	}
	if (out->kind == SIM_NORMAL) {
		if (out->len < sizeof g->last) {
			memcpy(g->last, buf, out->len + 1);
			g->last_len = out->len;
			g->last_seq = out->seq;
		}
		return (int)out->len;
	}
	return hostile(g, out->kind, ts_ms, &rd, buf, cap, out);
}
