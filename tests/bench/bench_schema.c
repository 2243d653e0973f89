/*
 * bench_schema.c — single-core throughput of the edge-processing hot path on the standard
 * telemetry payload (the device_sim shape), and the added cost of aggregates + alerts.
 *
 * Stages measured over the same pre-generated payloads (distinct things, timestamps and
 * values, so nothing is unrealistically cached):
 *   parse       json_loadb only (the floor any JSON pipeline pays)
 *   check+parse schema_parse_payload (size cap, UTF-8, depth, parse, object check)
 *   full        check+parse + schema_apply with rules/schemas (the validation+normalisation
 *               figure, target >= 500,000 msgs/s)
 *   apply       schema_apply alone on an already-parsed object
 *   full'       full with event time moving forward (ts replaced after parsing), the baseline
 *   full'+dedupe   + dedupe_check
 *   full'+edge  + aggregate_add (rules/aggregates.json, tick every simulated second) +
 *               alerts_report for one alert action (":memory:" database); the rules engine's
 *               own evaluation is not included (it is a separate module)
 * and prints each overhead against full' (aggregates + alerts target: < 20%).
 *
 * Usage: bench_schema [messages] (default 2,000,000; run from the repository root, under nice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aggregate.h"
#include "alerts.h"
#include "dedupe.h"
#include "err.h"
#include "schema.h"

#define NPAY 4096
#define NTHINGS 1000

static double now_s(void)
{
	struct timespec ts;
	/* CPU time of this thread: the machine is shared, and wall time would charge us for
	 * other processes' slices. */
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int agg_sink(void *ud, const aggregate_window *w)
{
	(*(long *)ud)++;
	(void)w;
	return 0;
}

static int alert_sink(void *ud, const alerts_event *ev)
{
	(*(long *)ud)++;
	(void)ev;
	return 0;
}

struct payload {
	char text[256];
	size_t len;
	char thing[16];
	char topic[64];
	int64_t ts;
};

static void report(const char *name, long n, double secs, double base)
{
	double rate = (double)n / secs;
	printf("%-12s %10.0f msgs/s  %7.1f ns/msg", name, rate, secs / (double)n * 1e9);
	if (base > 0)
		printf("  (%+.1f%% vs full')", (secs / (double)n * 1e9 / base - 1.0) * 100.0);
	printf("\n");
}

struct edge_ctx {
	schema_set *set;
	dedupe *dd;
	aggregate_set *agg;
	alerts *al;
	json_t *params;
	const struct payload *p;
	schema_stats *st;
};

/* The full path with event time moving forward (the payload's ts is replaced after parsing so
 * windows close and dedupe sees new readings); mode 0 = nothing else (the baseline the
 * overheads are measured against), 1 = + dedupe, 2 = + aggregates + alerts. */
static double run_moving(struct edge_ctx *c, long n, int mode)
{
	schema_reject why;
	int64_t last_tick = 0;
	double t = now_s();
	for (long i = 0; i < n; i++) {
		const struct payload *x = &c->p[i % NPAY];
		/* 1 ms of event time per message over NTHINGS things = each thing publishes about
		 * once a second, device_sim's default rate */
		int64_t ts = 1764088200000LL + i + (int64_t)mode * n;
		json_t *o = schema_parse_payload(x->text, x->len, NULL, &why, c->st);
		json_object_set_new(o, "ts", json_integer(ts));
		schema_apply(c->set, x->topic, o, ts + 5, &why, c->st);
		if (mode == 1)
			dedupe_check(c->dd, x->thing, ts, ts + 5);
		if (mode == 2) {
			aggregate_add(c->agg, x->topic, x->thing, o, ts + 5, ts + 5);
			if (ts - last_tick >= 1000) {
				aggregate_tick(c->agg, ts + 5);
				last_tick = ts;
			}
			double temp = json_real_value(json_object_get(o, "temperature"));
			alerts_input in = {.rule = "temp_high", .alert = "high_temp", .thing = x->thing,
					   .cond = temp > 28.0   ? RULES_ALERT_RAISE
						   : temp < 27.0 ? RULES_ALERT_CLEAR
								 : RULES_ALERT_NONE,
					   .payload = o, .params = c->params, .ts_ms = ts};
			alerts_report(c->al, &in, ts + 5);
		}
		json_decref(o);
	}
	return now_s() - t;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000000;
	char err[2048];
	schema_set *set = schema_load_dir("rules/schemas", err, sizeof err);
	if (!set) {
		fprintf(stderr, "bench_schema: %s (run from the repository root)\n", err);
		return 1;
	}
	struct payload *p = calloc(NPAY, sizeof *p);
	unsigned seed = 1;
	const int64_t t0 = 1764088200000LL;
	/* per-thing random walk, like device_sim, so threshold crossings are as rare as in life */
	double walk[NTHINGS];
	for (int i = 0; i < NTHINGS; i++)
		walk[i] = 20.0 + (rand_r(&seed) % 800) / 100.0;
	for (int i = 0; i < NPAY; i++) {
		int th = rand_r(&seed) % NTHINGS;
		walk[th] += ((rand_r(&seed) % 201) - 100) / 200.0;
		snprintf(p[i].thing, sizeof p[i].thing, "dev-%04d", th);
		snprintf(p[i].topic, sizeof p[i].topic, "devices/%s/telemetry", p[i].thing);
		p[i].ts = t0 + i * 7;
		p[i].len = (size_t)snprintf(
			p[i].text, sizeof p[i].text,
			"{\"sensor_id\":\"%s\",\"ts\":%lld,\"temperature\":%.2f,\"humidity\":%.2f,"
			"\"pressure\":%.2f,\"seq\":%d}",
			p[i].thing, (long long)p[i].ts, walk[th],
			30 + (rand_r(&seed) % 4000) / 100.0, 990 + (rand_r(&seed) % 4000) / 100.0, i);
	}
	printf("payload e.g. %s (%zu bytes), %ld messages per stage\n", p[0].text, p[0].len, n);

	/* parse only */
	double t = now_s();
	for (long i = 0; i < n; i++) {
		const struct payload *x = &p[i % NPAY];
		json_t *o = json_loadb(x->text, x->len, JSON_REJECT_DUPLICATES, NULL);
		json_decref(o);
	}
	double parse = now_s() - t;

	t = now_s();
	for (long i = 0; i < n; i++) {
		const struct payload *x = &p[i % NPAY];
		json_t *o = schema_parse_payload(x->text, x->len, NULL, NULL, NULL);
		json_decref(o);
	}
	double check = now_s() - t;

	schema_stats st = {0};
	schema_reject why;
	t = now_s();
	for (long i = 0; i < n; i++) {
		const struct payload *x = &p[i % NPAY];
		json_t *o = schema_parse_payload(x->text, x->len, NULL, &why, &st);
		if (!o || schema_apply(set, x->topic, o, x->ts + 5, &why, &st) != SCHEMA_APPLIED) {
			fprintf(stderr, "unexpected reject: %s %s\n", why.field, why.text);
			return 1;
		}
		json_decref(o);
	}
	double full = now_s() - t;

	/* apply alone: objects parsed up front, normalised again and again (same work each time) */
	json_t **objs = calloc(NPAY, sizeof *objs);
	for (int i = 0; i < NPAY; i++)
		objs[i] = json_loadb(p[i].text, p[i].len, 0, NULL);
	t = now_s();
	for (long i = 0; i < n; i++)
		schema_apply(set, p[i % NPAY].topic, objs[i % NPAY], p[i % NPAY].ts + 5, &why, &st);
	double apply = now_s() - t;
	for (int i = 0; i < NPAY; i++)
		json_decref(objs[i]);
	free(objs);

	/* full + dedupe (separately) and full + aggregates + alerts */
	dedupe_conf dc = {.window_ms = 600000, .per_thing = 256, .max_things = 100000};
	dedupe *dd = dedupe_new(&dc, err, sizeof err);
	long windows = 0, alerts_emitted = 0;
	aggregate_set *agg = aggregate_load_file("rules/aggregates.json", agg_sink, &windows, err,
						 sizeof err);
	alerts_conf ac = {.db_path = ":memory:", .emit = alert_sink, .ud = &alerts_emitted};
	alerts *al = alerts_open(&ac, err, sizeof err);
	if (!dd || !agg || !al) {
		fprintf(stderr, "bench_schema: %s\n", err);
		return 1;
	}
	json_t *params = json_pack("{sssisf}", "clear", "temperature < 27", "for", 2,
				   "rateLimitSeconds", 60.0);
	struct edge_ctx ctx = {.set = set, .dd = dd, .agg = agg, .al = al, .params = params,
			       .p = p, .st = &st};
	double moving = run_moving(&ctx, n, 0);
	double dedup = run_moving(&ctx, n, 1);
	double edge = run_moving(&ctx, n, 2);

	double base = moving / (double)n * 1e9;
	report("parse", n, parse, 0);
	report("check+parse", n, check, 0);
	report("full", n, full, 0);
	report("apply", n, apply, 0);
	report("full'", n, moving, 0);
	report("full'+dedupe", n, dedup, base);
	report("full'+edge", n, edge, base);
	alerts_stats ast;
	alerts_get_stats(al, &ast);
	aggregate_stats ags;
	aggregate_get_stats(agg, &ags);
	printf("edge work done: %ld windows emitted, %llu alert messages (%llu suppressed), "
	       "%llu accepted by schema\n",
	       windows, (unsigned long long)(ast.raised + ast.cleared),
	       (unsigned long long)ast.suppressed, (unsigned long long)st.accepted);
	json_decref(params);
	alerts_close(al);
	aggregate_free(agg);
	dedupe_free(dd);
	schema_set_free(set);
	free(p);
	return 0;
}
