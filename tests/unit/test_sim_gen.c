/*
 * test_sim_gen.c — device_sim's payload generator and command line, without a network.
 *
 * device_sim's sources are not part of libtidegate.a, so this test compiles them in
 * directly (the Makefile builds each tests/unit/test_*.c against the library only).
 * Every hostile kind is checked by an independent judgement of the bytes (jansson, a
 * separate UTF-8 validator, a depth counter), not by trusting the generator's own label.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../device_sim/sim_gen.c"
#include "../../device_sim/sim_opts.c"

#define TS0 1764086400000LL /* 2025-11-25T16:00:00Z */
#define DAY_MS 86400000LL

static json_t *parse(const char *buf, size_t len, size_t flags)
{
	json_error_t e;
	return json_loadb(buf, len, flags, &e);
}

static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t need;
		unsigned min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			need = 1, min = 0x80, c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			need = 2, min = 0x800, c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			need = 3, min = 0x10000, c &= 0x07;
		} else {
			return 0;
		}
		if (i + need >= n)
			return 0;
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			c = (c << 6) | (s[i + k] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return 0;
		i += need + 1;
	}
	return 1;
}

static int json_depth(const json_t *j)
{
	int best = 0;
	if (json_is_array(j)) {
		size_t i;
		json_t *v;
		json_array_foreach(j, i, v) {
			int d = json_depth(v);
			best = d > best ? d : best;
		}
		return best + 1;
	}
	if (json_is_object(j)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)j, k, v) {
			int d = json_depth(v);
			best = d > best ? d : best;
		}
		return best + 1;
	}
	return 0;
}

static int id_ok(const char *s)
{
	return name_ok(s); /* the same rule as certs/lib.sh and the ACL topic segment */
}

/* ---- normal payloads ---- */

static void test_normal_payload_fields(void **state)
{
	(void)state;
	struct sim_gen g;
	struct sim_gen_cfg cfg = {0};
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	assert_non_null(buf);
	sim_gen_init(&g, 42, 3, "dev-0004");
	for (int i = 0; i < 100; i++) {
		int64_t ts = TS0 + i * 1000;
		int n = sim_gen_next(&g, &cfg, ts, i, buf, SIM_PAYLOAD_CAP, &m);
		assert_true(n > 100 && n < 200);
		assert_int_equal(m.kind, SIM_NORMAL);
		assert_int_equal((size_t)n, strlen(buf));
		assert_true(utf8_valid((const unsigned char *)buf, (size_t)n));
		assert_true(utf8_valid((const unsigned char *)"d\xc3\xa9v\xe2\x82\xac", 7));
		json_t *j = parse(buf, (size_t)n, 0);
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "sensor_id")), "dev-0004");
		assert_true(json_integer_value(json_object_get(j, "ts")) == ts);
		assert_true(json_integer_value(json_object_get(j, "seq")) == i);
		assert_true(json_is_number(json_object_get(j, "temperature")));
		assert_true(json_is_number(json_object_get(j, "humidity")));
		assert_true(json_is_number(json_object_get(j, "pressure")));
		json_decref(j);
	}
	free(buf);
}

static void test_deterministic_with_seed(void **state)
{
	(void)state;
	struct sim_gen a, b, c;
	struct sim_gen_cfg cfg = {.hostile_rate = 0.3, .hostile_mask = SIM_HOSTILE_ALL,
				  .anomaly_rate = 0.05, .stuck_rate = 0.01};
	char *ba = malloc(SIM_PAYLOAD_CAP), *bb = malloc(SIM_PAYLOAD_CAP), *bc = malloc(SIM_PAYLOAD_CAP);
	struct sim_msg ma, mb, mc;
	int differ = 0;
	sim_gen_init(&a, 7, 0, "dev-0001");
	sim_gen_init(&b, 7, 0, "dev-0001");
	sim_gen_init(&c, 8, 0, "dev-0001");
	for (int i = 0; i < 2000; i++) {
		int na = sim_gen_next(&a, &cfg, TS0 + i, i, ba, SIM_PAYLOAD_CAP, &ma);
		int nb = sim_gen_next(&b, &cfg, TS0 + i, i, bb, SIM_PAYLOAD_CAP, &mb);
		int nc = sim_gen_next(&c, &cfg, TS0 + i, i, bc, SIM_PAYLOAD_CAP, &mc);
		assert_int_equal(na, nb);
		assert_memory_equal(ba, bb, (size_t)na);
		assert_int_equal(ma.kind, mb.kind);
		differ += na != nc || memcmp(ba, bc, (size_t)na) != 0;
	}
	assert_true(differ > 1900); /* another seed gives another stream */
	free(ba);
	free(bb);
	free(bc);
}

/* Turning hostile injection on must not change the readings of the normal slots. */
static void test_injection_does_not_shift_readings(void **state)
{
	(void)state;
	struct sim_gen plain, mixed;
	struct sim_gen_cfg c0 = {0};
	struct sim_gen_cfg c1 = {.hostile_rate = 0.5,
				 .hostile_mask = SIM_HOSTILE_ALL & ~(1u << SIM_H_DUPLICATE)};
	char *b0 = malloc(SIM_PAYLOAD_CAP), *b1 = malloc(SIM_PAYLOAD_CAP);
	struct sim_msg m0, m1;
	int compared = 0;
	sim_gen_init(&plain, 99, 2, "dev-0003");
	sim_gen_init(&mixed, 99, 2, "dev-0003");
	for (int i = 0; i < 1000; i++) {
		int n0 = sim_gen_next(&plain, &c0, TS0 + i * 1000, i, b0, SIM_PAYLOAD_CAP, &m0);
		int n1 = sim_gen_next(&mixed, &c1, TS0 + i * 1000, i, b1, SIM_PAYLOAD_CAP, &m1);
		if (m1.kind == SIM_NORMAL) {
			assert_int_equal(n0, n1);
			assert_memory_equal(b0, b1, (size_t)n0);
			compared++;
		}
	}
	assert_true(compared > 400 && compared < 600);
	free(b0);
	free(b1);
}

static double field(const char *buf, size_t len, const char *key)
{
	json_t *j = parse(buf, len, 0);
	assert_non_null(j);
	double v = json_number_value(json_object_get(j, key));
	json_decref(j);
	return v;
}

static void test_walk_stays_physical(void **state)
{
	(void)state;
	struct sim_gen g;
	struct sim_gen_cfg cfg = {0};
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	double tmin = 1e9, tmax = -1e9;
	for (int thing = 0; thing < 4; thing++) {
		sim_gen_init(&g, 5, thing, "dev-0001");
		for (int i = 0; i < 20000; i++) { /* two weeks at one reading a minute */
			int n = sim_gen_next(&g, &cfg, TS0 + (int64_t)i * 60000, i, buf, SIM_PAYLOAD_CAP, &m);
			json_t *j = parse(buf, (size_t)n, 0);
			assert_non_null(j);
			double t = json_number_value(json_object_get(j, "temperature"));
			double h = json_number_value(json_object_get(j, "humidity"));
			double p = json_number_value(json_object_get(j, "pressure"));
			json_decref(j);
			assert_true(h >= 0.0 && h <= 100.0);
			assert_true(p > 990.0 && p < 1035.0);
			assert_true(t > 5.0 && t < 40.0);
			tmin = t < tmin ? t : tmin;
			tmax = t > tmax ? t : tmax;
		}
	}
	assert_true(tmax - tmin > 6.0); /* it does move */
	free(buf);
}

static void test_daily_cycle(void **state)
{
	(void)state;
	struct sim_gen g;
	struct sim_gen_cfg cfg = {0};
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	double afternoon = 0, night = 0;
	const int n_each = 2000;
	sim_gen_init(&g, 11, 0, "dev-0001");
	for (int i = 0; i < 2 * n_each; i++) {
		/* alternate 15:00 and 03:00 UTC on successive days */
		int64_t ts = TS0 - 16 * 3600000LL + (int64_t)(i / 2) * DAY_MS +
			     (i % 2 ? 3 : 15) * 3600000LL;
		int n = sim_gen_next(&g, &cfg, ts, i, buf, SIM_PAYLOAD_CAP, &m);
		double t = field(buf, (size_t)n, "temperature");
		if (i % 2)
			night += t;
		else
			afternoon += t;
	}
	double diff = (afternoon - night) / n_each;
	assert_true(diff > 6.5 && diff < 9.5); /* 2 x amplitude 4 C */
	free(buf);
}

static void test_spike_window_exact(void **state)
{
	(void)state;
	struct sim_spike sp = {.thing = 1, .at_s = 10, .dur_s = 5, .value = 42.5};
	struct sim_gen_cfg cfg = {.spikes = &sp, .nspikes = 1};
	struct sim_gen g1, g0;
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	sim_gen_init(&g1, 3, 1, "dev-0002");
	sim_gen_init(&g0, 3, 0, "dev-0001");
	int in = 0;
	for (int i = 0; i < 40; i++) {
		double t_s = i * 0.5;
		int n = sim_gen_next(&g1, &cfg, TS0 + i * 500, t_s, buf, SIM_PAYLOAD_CAP, &m);
		int inside = t_s >= 10 && t_s < 15;
		assert_int_equal(!!(m.flags & SIM_F_SPIKE), inside);
		if (inside) {
			assert_true(field(buf, (size_t)n, "temperature") == 42.5);
			in++;
		} else {
			assert_true(field(buf, (size_t)n, "temperature") < 40.0);
		}
		n = sim_gen_next(&g0, &cfg, TS0 + i * 500, t_s, buf, SIM_PAYLOAD_CAP, &m);
		assert_false(m.flags & SIM_F_SPIKE); /* another thing is not touched */
	}
	assert_int_equal(in, 10);
	free(buf);
}

static void test_stuck_sensor_repeats(void **state)
{
	(void)state;
	struct sim_gen_cfg cfg = {.stuck_rate = 1.0};
	struct sim_gen g;
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	sim_gen_init(&g, 1, 0, "dev-0001");
	int n = sim_gen_next(&g, &cfg, TS0, 0, buf, SIM_PAYLOAD_CAP, &m);
	assert_false(m.flags & SIM_F_STUCK);
	double t0 = field(buf, (size_t)n, "temperature"), h0 = field(buf, (size_t)n, "humidity");
	int repeats = 0;
	for (;;) {
		n = sim_gen_next(&g, &cfg, TS0 + (repeats + 1) * 1000, 0, buf, SIM_PAYLOAD_CAP, &m);
		if (!(m.flags & SIM_F_STUCK))
			break;
		assert_true(field(buf, (size_t)n, "temperature") == t0);
		assert_true(field(buf, (size_t)n, "humidity") == h0);
		repeats++;
		assert_true(repeats <= 50);
	}
	assert_true(repeats >= 10);
	free(buf);
}

static void test_random_anomaly_magnitude(void **state)
{
	(void)state;
	struct sim_gen_cfg c0 = {0}, c1 = {.anomaly_rate = 1.0};
	struct sim_gen a, b;
	struct sim_msg ma, mb;
	char *ba = malloc(SIM_PAYLOAD_CAP), *bb = malloc(SIM_PAYLOAD_CAP);
	sim_gen_init(&a, 2, 0, "dev-0001");
	sim_gen_init(&b, 2, 0, "dev-0001");
	for (int i = 0; i < 200; i++) {
		int na = sim_gen_next(&a, &c0, TS0 + i, i, ba, SIM_PAYLOAD_CAP, &ma);
		int nb = sim_gen_next(&b, &c1, TS0 + i, i, bb, SIM_PAYLOAD_CAP, &mb);
		assert_true(mb.flags & SIM_F_ANOMALY);
		double d = fabs(field(ba, (size_t)na, "temperature") - field(bb, (size_t)nb, "temperature"));
		assert_true(d >= 9.99 && d <= 25.01);
	}
	free(ba);
	free(bb);
}

/* ---- hostile kinds ---- */

static void check_hostile(enum sim_kind kind, const char *buf, size_t len, const struct sim_msg *m,
			  int64_t ts, const char *name)
{
	json_t *j = NULL;
	assert_int_equal(m->kind, kind);
	assert_non_null(m->variant);
	assert_true(m->variant[0] != '\0');
	switch (kind) {
	case SIM_H_MALFORMED_JSON:
		assert_null(parse(buf, len, JSON_DECODE_ANY));
		break;
	case SIM_H_WRONG_TYPE: {
		j = parse(buf, len, 0);
		assert_non_null(j);
		int wrong = !json_is_string(json_object_get(j, "sensor_id")) ||
			    !json_is_integer(json_object_get(j, "ts")) ||
			    !json_is_number(json_object_get(j, "temperature")) ||
			    !json_is_number(json_object_get(j, "humidity")) ||
			    !json_is_number(json_object_get(j, "pressure"));
		assert_true(wrong);
		break;
	}
	case SIM_H_BAD_ID: {
		j = parse(buf, len, 0);
		assert_non_null(j);
		const char *id = json_string_value(json_object_get(j, "sensor_id"));
		assert_non_null(id);
		assert_true(!id_ok(id) || strcmp(id, name) != 0);
		break;
	}
	case SIM_H_MISSING_FIELD:
		j = parse(buf, len, 0);
		assert_non_null(j);
		assert_true(!json_object_get(j, "ts") || !json_object_get(j, "temperature") ||
			    !json_object_get(j, "sensor_id"));
		break;
	case SIM_H_OUT_OF_RANGE: {
		j = parse(buf, len, 0);
		assert_non_null(j);
		double t = json_number_value(json_object_get(j, "temperature"));
		double h = json_number_value(json_object_get(j, "humidity"));
		double p = json_number_value(json_object_get(j, "pressure"));
		assert_true(t > 200 || t < -273.15 || h > 100 || h < 0 || p < 0);
		break;
	}
	case SIM_H_OVERSIZED:
		assert_true(len > SIM_OVERSIZE_LIMIT && len <= SIM_PAYLOAD_CAP);
		j = parse(buf, len, 0);
		assert_non_null(j);
		assert_true(json_is_object(j));
		break;
	case SIM_H_DUPLICATE:
		assert_true(m->flags & SIM_F_PREFIX_DUP); /* hostile-only mode */
		assert_int_equal(m->prefix_len, len);
		assert_memory_equal(m->prefix, buf, len);
		j = parse(buf, len, 0);
		assert_non_null(j);
		assert_true(json_integer_value(json_object_get(j, "ts")) == ts);
		break;
	case SIM_H_CLOCK_SKEW: {
		j = parse(buf, len, 0);
		assert_non_null(j);
		int64_t got = json_integer_value(json_object_get(j, "ts"));
		assert_true(llabs(got - ts) >= 400 * DAY_MS || got == 0);
		break;
	}
	case SIM_H_NON_OBJECT:
		j = parse(buf, len, JSON_DECODE_ANY);
		assert_non_null(j);
		assert_false(json_is_object(j));
		break;
	case SIM_H_INVALID_UTF8:
		assert_false(utf8_valid((const unsigned char *)buf, len));
		assert_null(parse(buf, len, 0));
		break;
	case SIM_H_TOO_DEEP:
		j = parse(buf, len, 0);
		assert_non_null(j);
		assert_true(json_depth(j) > SIM_TOO_DEEP_LEVELS);
		break;
	case SIM_H_EMPTY:
		assert_int_equal(len, 0);
		break;
	default:
		fail();
	}
	json_decref(j);
}

static void test_every_hostile_kind_is_what_it_says(void **state)
{
	(void)state;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	for (int kind = SIM_HOSTILE_FIRST; kind < SIM_KIND_COUNT; kind++) {
		struct sim_gen_cfg cfg = {.hostile_only = 1, .hostile_mask = 1u << kind};
		struct sim_gen g;
		struct sim_msg m;
		sim_gen_init(&g, (uint64_t)kind, 0, "dev-0001");
		for (int i = 0; i < 60; i++) { /* enough to hit every variant */
			int64_t ts = TS0 + i * 1000;
			int n = sim_gen_next(&g, &cfg, ts, i, buf, SIM_PAYLOAD_CAP, &m);
			assert_true(n >= 0);
			assert_int_equal((size_t)n, m.len);
			check_hostile((enum sim_kind)kind, buf, (size_t)n, &m, ts, "dev-0001");
		}
	}
	free(buf);
}

static void test_hostile_only_round_robin_covers_kinds(void **state)
{
	(void)state;
	struct sim_gen_cfg cfg = {.hostile_only = 1, .hostile_mask = SIM_HOSTILE_ALL};
	struct sim_gen g;
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	int seen[SIM_KIND_COUNT] = {0};
	sim_gen_init(&g, 1, 4, "dev-0005");
	for (int i = 0; i < 3 * (SIM_KIND_COUNT - 1); i++) {
		assert_true(sim_gen_next(&g, &cfg, TS0 + i, i, buf, SIM_PAYLOAD_CAP, &m) >= 0);
		seen[m.kind]++;
	}
	assert_int_equal(seen[SIM_NORMAL], 0);
	for (int k = SIM_HOSTILE_FIRST; k < SIM_KIND_COUNT; k++)
		assert_int_equal(seen[k], 3);
	free(buf);
}

static void test_hostile_rate_fraction_and_duplicates(void **state)
{
	(void)state;
	struct sim_gen_cfg cfg = {.hostile_rate = 0.25, .hostile_mask = SIM_HOSTILE_ALL};
	struct sim_gen g;
	struct sim_msg m;
	char *buf = malloc(SIM_PAYLOAD_CAP);
	char prev[256] = "";
	size_t prev_len = 0;
	int hostile = 0, seen[SIM_KIND_COUNT] = {0};
	const int total = 20000;
	sim_gen_init(&g, 77, 0, "dev-0001");
	for (int i = 0; i < total; i++) {
		int n = sim_gen_next(&g, &cfg, TS0 + i, i, buf, SIM_PAYLOAD_CAP, &m);
		assert_true(n >= 0);
		seen[m.kind]++;
		if (m.kind == SIM_H_DUPLICATE && !(m.flags & SIM_F_PREFIX_DUP)) {
			assert_int_equal((size_t)n, prev_len); /* copy of the last normal one */
			assert_memory_equal(buf, prev, prev_len);
		}
		if (m.kind == SIM_NORMAL) {
			memcpy(prev, buf, (size_t)n);
			prev_len = (size_t)n;
		} else {
			hostile++;
		}
	}
	assert_true(hostile > total * 0.23 && hostile < total * 0.27);
	for (int k = SIM_HOSTILE_FIRST; k < SIM_KIND_COUNT; k++)
		assert_true(seen[k] > 200);
	free(buf);
}

static void test_small_buffer_refused(void **state)
{
	(void)state;
	struct sim_gen g;
	struct sim_gen_cfg cfg = {0};
	struct sim_msg m;
	char small[512];
	sim_gen_init(&g, 1, 0, "dev-0001");
	assert_int_equal(sim_gen_next(&g, &cfg, TS0, 0, small, sizeof small, &m), TG_EINVAL);
}

static void test_kind_names_roundtrip(void **state)
{
	(void)state;
	for (int k = 0; k < SIM_KIND_COUNT; k++)
		assert_int_equal(sim_kind_parse(sim_kind_name((enum sim_kind)k)), k);
	assert_int_equal(sim_kind_parse("nonsense"), -1);
}

/* ---- command line ---- */

static int parse_args(struct sim_opts *o, char *err, size_t errlen, ...)
{
	char *argv[64];
	int argc = 0;
	va_list ap;
	va_start(ap, errlen);
	argv[argc++] = "device_sim";
	for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return sim_opts_parse(o, argc, argv, err, errlen);
}

static void test_opts_per_thing_defaults(void **state)
{
	(void)state;
	struct sim_opts o;
	char err[256] = "", name[64];
	assert_int_equal(parse_args(&o, err, sizeof err, "--cafile", "ca.crt", "--certs-dir", "t",
				    "--things", "5", "--spike", "dev-0003:2:1.5:41", NULL),
			 0);
	assert_int_equal(o.things, 5);
	assert_int_equal(o.qos, 1);
	assert_true(o.rate == 1.0);
	assert_true(o.count == 10);
	assert_int_equal(o.connections, 0);
	assert_int_equal(o.nspikes, 1);
	assert_int_equal(o.spikes[0].thing, 2);
	assert_true(o.spikes[0].at_s == 2 && o.spikes[0].dur_s == 1.5 && o.spikes[0].value == 41);
	assert_ptr_equal(o.gen.spikes, o.spikes);
	sim_opts_thing_name(&o, 4, name, sizeof name);
	assert_string_equal(name, "dev-0005");
	sim_opts_free(&o);
}

static void test_opts_load_mode(void **state)
{
	(void)state;
	struct sim_opts o;
	char err[256] = "";
	assert_int_equal(parse_args(&o, err, sizeof err, "--cafile", "ca.crt", "--cert", "c",
				    "--key", "k", "--connections", "8", "--things", "3",
				    "--max-rate", "--duration", "2.5", "--hostile-only", "4",
				    "--hostile-kinds", "empty,oversized", "--qos", "0", NULL),
			 0);
	assert_int_equal(o.connections, 3); /* never more connections than things */
	assert_true(o.max_rate && o.rate == 0);
	assert_true(o.count == 4 && o.gen.hostile_only);
	assert_int_equal(o.gen.hostile_mask, (1u << SIM_H_EMPTY) | (1u << SIM_H_OVERSIZED));
	assert_int_equal(o.qos, 0);
	sim_opts_free(&o);
}

static void test_opts_errors(void **state)
{
	(void)state;
	struct sim_opts o;
	char err[256];
	static const char *const cases[][10] = {
		{"--certs-dir", "t", NULL},                                  /* no cafile */
		{"--cafile", "c", NULL},                                     /* no certs */
		{"--cafile", "c", "--certs-dir", "t", "--rate", "10x", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--rate", "5", "--max-rate", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--qos", "2", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--topic-template", "devices/x", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--topic-template", "d/%s/%d", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--spike", "dev-0009:1:1:30", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--spike", "dev-0001:1:1", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--hostile-only", "3", "--count", "3", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--hostile-kinds", "bogus", NULL},
		{"--cafile", "c", "--certs-dir", "t", "--prefix", "a/b", NULL},
		{"--cafile", "c", "--connections", "2", NULL},
		{"--cafile", "c", "--certs-dir", "t", "extra", NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *argv[12] = {"device_sim"};
		int argc = 1;
		for (int k = 0; cases[i][k]; k++)
			argv[argc++] = (char *)cases[i][k];
		err[0] = '\0';
		int rc = sim_opts_parse(&o, argc, argv, err, sizeof err);
		if (rc != TG_EINVAL)
			print_error("case %zu accepted\n", i);
		assert_int_equal(rc, TG_EINVAL);
		assert_true(err[0] != '\0');
		sim_opts_free(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normal_payload_fields),
		cmocka_unit_test(test_deterministic_with_seed),
		cmocka_unit_test(test_injection_does_not_shift_readings),
		cmocka_unit_test(test_walk_stays_physical),
		cmocka_unit_test(test_daily_cycle),
		cmocka_unit_test(test_spike_window_exact),
		cmocka_unit_test(test_stuck_sensor_repeats),
		cmocka_unit_test(test_random_anomaly_magnitude),
		cmocka_unit_test(test_every_hostile_kind_is_what_it_says),
		cmocka_unit_test(test_hostile_only_round_robin_covers_kinds),
		cmocka_unit_test(test_hostile_rate_fraction_and_duplicates),
		cmocka_unit_test(test_small_buffer_refused),
		cmocka_unit_test(test_kind_names_roundtrip),
		cmocka_unit_test(test_opts_per_thing_defaults),
		cmocka_unit_test(test_opts_load_mode),
		cmocka_unit_test(test_opts_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
