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
 *               for the two below
 *   full'+dedupe   + dedupe_check (10 min window, 1024 per thing)
 *   full'+edge  + aggregate_add (rules/aggregates/aggregates.json, tick every simulated second) +
 *               alerts_report for one alert action (":memory:" database; each thing over the
 *               threshold one minute in thirty); the rules engine's own evaluation is not
 *               included (it is a separate module)
 *   jfull', jfull'+edge  the same two with jansson's json_loadb as the parser (how the
 *               daemon's ingest.c parses today), to show the edge overhead on that path too
 * and prints each overhead against its baseline (aggregates + alerts target: < 20%).
 *
 * Every stage runs `reps` times, interleaved, and the best (lowest CPU time) repetition is
 * reported: on a shared machine the minimum is the figure least disturbed by neighbours.
 *
 * Usage: bench_schema [messages per stage and repetition (default 500000)] [reps (default 5)]
 * from the repository root, under nice. BENCH_STAGE=<name> runs one stage only (for perf).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alerts/alerts.h"
#include "core/err.h"
#include "core/hash.h"
#include "edge/aggregate.h"
#include "edge/dedupe.h"
#include "edge/schema.h"

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
	int thing_idx;
	char text[256];
	size_t len;
	char thing[16];
	char topic[64];
	int64_t ts;
};

static void report(const char *name, long n, double secs, double base)
{
	double rate = (double)n / secs;
	printf("%-13s %10.0f msgs/s  %7.1f ns/msg", name, rate, secs / (double)n * 1e9);
	if (base > 0)
		printf("  (%+.1f%% vs the same stage without it)", (secs / base - 1.0) * 100.0);
	printf("\n");
}

enum { S_PARSE, S_CHECK, S_FULL, S_APPLY, S_MOVING, S_DEDUPE, S_EDGE, S_JMOVING, S_JEDGE, S__N };
static const char *const stage_names[S__N] = {"parse", "check+parse", "full", "apply",
					       "full'", "full'+dedupe", "full'+edge",
					       "jfull'", "jfull'+edge"};

struct bench {
	schema_set *set;
	dedupe *dd;
	aggregate_set *agg[2]; /* one per edge stage, so each sees its own forward-moving clock */
	alerts *al[2];
	json_t *params;
	const struct payload *p;
	json_t **objs; /* pre-parsed payloads for S_APPLY */
	schema_stats st;
	int64_t last_tick[2];
	uint64_t alert_key; /* what the rules engine passes for rule temp_high, alert high_temp */
};

/* One repetition of one stage over n messages; returns CPU seconds, or < 0 on a surprise. */
static double run_stage(struct bench *b, int stage, long n, int rep)
{
	schema_reject why;
	double t = now_s();
	for (long i = 0; i < n; i++) {
		const struct payload *x = &b->p[i % NPAY];
		json_t *o;
		if (stage == S_PARSE) {
			json_decref(json_loadb(x->text, x->len, JSON_REJECT_DUPLICATES, NULL));
			continue;
		}
		if (stage == S_CHECK) {
			json_decref(schema_parse_payload(x->text, x->len, NULL, NULL, NULL));
			continue;
		}
		if (stage == S_APPLY) { /* same normalisation work again and again on parsed objects */
			schema_apply(b->set, x->topic, b->objs[i % NPAY], x->ts + 5, &why, &b->st);
			continue;
		}
		if (stage == S_JMOVING || stage == S_JEDGE)
			o = json_loadb(x->text, x->len, JSON_REJECT_DUPLICATES, NULL);
		else
			o = schema_parse_payload(x->text, x->len, NULL, &why, &b->st);
		if (!o)
			return -1;
		/* 1 ms of event time per message over NTHINGS things = each thing publishes about
		 * once a second (device_sim's default rate); each stage keeps its own clock moving
		 * forward across repetitions so windows close and dedupe sees new readings */
		int64_t ts = x->ts;
		if (stage != S_FULL) { /* all stages from S_MOVING on */
			ts = 1764088200000LL + (int64_t)stage * 1000000000LL + (int64_t)rep * n + i;
			json_object_set_new(o, "ts", json_integer(ts));
		}
		if (schema_apply(b->set, x->topic, o, ts + 5, &why, &b->st) != SCHEMA_APPLIED) {
			fprintf(stderr, "unexpected reject: %s %s\n", why.field, why.text);
			json_decref(o);
			return -1;
		}
		if (stage == S_DEDUPE)
			dedupe_check(b->dd, x->thing, ts, ts + 5);
		if (stage == S_EDGE || stage == S_JEDGE) {
			int e = stage == S_JEDGE;
			aggregate_add(b->agg[e], x->topic, x->thing, o, &ts, ts + 5, ts + 5);
			if (ts - b->last_tick[e] >= 1000) {
				aggregate_tick(b->agg[e], ts + 5);
				b->last_tick[e] = ts;
			}
			/* The condition is the rules engine's result (its evaluation is not measured), and
			 * key_prefix the hash of (rule, alert) it computes once per action at load.
			 * Workload: every thing is over the threshold one minute in thirty, then one
			 * minute in the hysteresis band, then below the clear threshold. */
			long phase = ((long)rep * n + i) / 60000 + x->thing_idx;
			phase %= 30;
			alerts_input in = {.rule = "temp_high", .alert = "high_temp", .thing = x->thing,
					   .cond = phase == 0   ? RULES_ALERT_RAISE
						   : phase == 1 ? RULES_ALERT_NONE
								: RULES_ALERT_CLEAR,
					   .payload = o, .params = b->params, .ts_ms = ts,
					   .key_prefix = b->alert_key};
			alerts_report(b->al[e], &in, ts + 5);
		}
		json_decref(o);
	}
	return now_s() - t;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 500000;
	int reps = argc > 2 ? atoi(argv[2]) : 5;
	char err[2048];
	struct bench b = {0};
	long windows = 0, alerts_emitted = 0;
	if (n < 1 || reps < 1) {
		fprintf(stderr, "usage: bench_schema [messages] [reps]\n");
		return 2;
	}
	b.set = schema_load_dir("rules/schemas", err, sizeof err);
	if (!b.set) {
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
		p[i].thing_idx = th;
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
	b.p = p;
	b.objs = calloc(NPAY, sizeof *b.objs);
	for (int i = 0; i < NPAY; i++)
		b.objs[i] = json_loadb(p[i].text, p[i].len, 0, NULL);
	dedupe_conf dc = {.window_ms = 600000, .per_thing = 1024, .max_things = 100000};
	b.dd = dedupe_new(&dc, err, sizeof err);
	alerts_conf ac = {.db_path = ":memory:", .emit = alert_sink, .ud = &alerts_emitted};
	for (int e = 0; e < 2; e++) {
		b.agg[e] = aggregate_load_file("rules/aggregates/aggregates.json", agg_sink, &windows, err, sizeof err);
		b.al[e] = b.agg[e] ? alerts_open(&ac, err, sizeof err) : NULL;
		if (!b.dd || !b.al[e]) {
			fprintf(stderr, "bench_schema: %s\n", err);
			return 1;
		}
	}
	b.alert_key = tg_hash_str(tg_hash_str(TG_HASH_SEED, "temp_high"), "high_temp");
	b.params = json_pack("{sssisf}", "clear", "temperature < 27", "for", 2, "rateLimitSeconds",
			     60.0);
	printf("payload e.g. %s (%zu bytes)\n%ld messages per stage, best of %d interleaved "
	       "repetitions, thread CPU time\n",
	       p[0].text, p[0].len, n, reps);

	double best[S__N];
	for (int s = 0; s < S__N; s++)
		best[s] = 1e300;
	const char *only = getenv("BENCH_STAGE"); /* e.g. for perf: run one stage only */
	for (int r = 0; r < reps; r++)
		for (int s = 0; s < S__N; s++) {
			if (only && strcmp(only, stage_names[s]) != 0)
				continue;
			double t = run_stage(&b, s, n, r);
			if (t < 0)
				return 1;
			if (t < best[s])
				best[s] = t;
		}
	for (int s = 0; s < S__N; s++)
		if (best[s] < 1e300)
			report(stage_names[s], n, best[s],
			       s == S_DEDUPE || s == S_EDGE ? best[S_MOVING] : s == S_JEDGE ? best[S_JMOVING] : 0);

	alerts_stats ast;
	alerts_get_stats(b.al[0], &ast);
	printf("edge work done (both edge stages): %ld windows emitted; full'+edge: %llu alert "
	       "messages (%llu suppressed); %llu accepted by schema\n",
	       windows, (unsigned long long)(ast.raised + ast.cleared),
	       (unsigned long long)ast.suppressed, (unsigned long long)b.st.accepted);
	for (int i = 0; i < NPAY; i++)
		json_decref(b.objs[i]);
	free(b.objs);
	json_decref(b.params);
	for (int e = 0; e < 2; e++) {
		alerts_close(b.al[e]);
		aggregate_free(b.agg[e]);
	}
	dedupe_free(b.dd);
	schema_set_free(b.set);
	free(p);
	return 0;
}
