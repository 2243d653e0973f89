/*
 * bench_rules.c — throughput of the rules engine (a benchmark, not a test).
 *
 * 1. evaluations/s of the typical rule
 *      SELECT temperature, topic(2) AS thing FROM 'devices/+/telemetry'
 *      WHERE temperature > 28 AND regexp_matches(sensor_id, '^dev-[0-9]{4}$')
 *    on an already-parsed message, WHERE true (output built, action callback called) and
 *    WHERE false;
 * 2. the topic index: the per-message cost with that rule plus 9 rules whose filters do
 *    not match, against the same rule plus 999 such rules (target ratio < 2), and the
 *    cost of a message no rule matches with 10 vs 1,000 rules.
 * Usage: bench_rules [seconds-per-figure] (default 1). Run it under `nice`. Rates are per
 * second of CPU time of the evaluating thread (one core), not wall time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rules/rules.h"
#include "rules/rules_int.h"

static const char *typical = "{\"sql\": \"SELECT temperature, topic(2) AS thing FROM 'devices/+/telemetry' WHERE "
			     "temperature > 28 AND regexp_matches(sensor_id, '^dev-[0-9]{4}$')\","
			     " \"actions\": [{\"republish\": {\"topic\": \"alerts/${topic(2)}\", \"qos\": 1}}]}";

/* Thread CPU time: the box is shared, so wall time would measure the neighbours too.
 * "evaluations/s" below means per second of one core's CPU time. */
static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sink_cb(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	(*(long *)ud) += a->payload != NULL;
	return 0;
}

/* A set of the typical rule (optional) plus n non-matching rules of varied shapes. */
static rules_set *build_set(int with_typical, int n)
{
	char dir[] = "/tmp/tg-bench-rules-XXXXXX";
	char path[512], err[4096];
	if (!mkdtemp(dir))
		return NULL;
	if (with_typical) {
		snprintf(path, sizeof path, "%s/0000-typical.json", dir);
		FILE *f = fopen(path, "w");
		fputs(typical, f);
		fclose(f);
	}
	for (int i = 0; i < n; i++) {
		char filter[128];
		switch (i % 4) {
		case 0: snprintf(filter, sizeof filter, "site-%d/+/telemetry", i); break;
		case 1: snprintf(filter, sizeof filter, "devices/+/status-%d", i); break;
		case 2: snprintf(filter, sizeof filter, "devices/dev-x%d/telemetry", i); break;
		default: snprintf(filter, sizeof filter, "fleet/%d/#", i); break;
		}
		snprintf(path, sizeof path, "%s/r%05d.json", dir, i);
		FILE *f = fopen(path, "w");
		fprintf(f, "{\"sql\": \"SELECT * FROM '%s' WHERE temperature > 28\", \"actions\": [{\"republish\": {\"topic\": \"x\"}}]}",
			filter);
		fclose(f);
	}
	rules_set *rs = rules_load_dir(dir, NULL, err, sizeof err);
	if (!rs)
		fprintf(stderr, "load: %s\n", err);
	/* clean up the temp folder */
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/r%05d.json", dir, i);
		unlink(path);
	}
	snprintf(path, sizeof path, "%s/0000-typical.json", dir);
	unlink(path);
	rmdir(dir);
	return rs;
}

/* evaluations per second of rs on message m for about `secs` seconds */
static double rate(const rules_set *rs, const tg_msg *m, double secs, long *outputs)
{
	long iters = 0, batch = 10000;
	double t0 = now_s(), t;
	do {
		for (long i = 0; i < batch; i++)
			rules_eval(rs, m, sink_cb, outputs, NULL);
		iters += batch;
		t = now_s();
	} while (t - t0 < secs);
	return (double)iters / (t - t0);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	if (secs <= 0)
		secs = 1.0;
	const char *hot = "{\"sensor_id\":\"dev-0042\",\"ts\":1700000000000,\"temperature\":31.5,\"humidity\":40.1,"
			  "\"pressure\":1013.2,\"battery\":0.87,\"rssi\":-61,\"seq\":12345}";
	const char *cold = "{\"sensor_id\":\"dev-0042\",\"ts\":1700000000000,\"temperature\":21.5,\"humidity\":40.1,"
			   "\"pressure\":1013.2,\"battery\":0.87,\"rssi\":-61,\"seq\":12345}";
	json_t *jh = json_loads(hot, 0, NULL), *jc = json_loads(cold, 0, NULL);
	tg_msg m = {.topic = "devices/dev-0042/telemetry",
		    .thing = "dev-0042",
		    .client_id = "dev-0042",
		    .principal = "dev-0042",
		    .payload = hot,
		    .payloadlen = strlen(hot),
		    .json = jh,
		    .received_ms = 1700000000000LL,
		    .qos = 1};
	char err[1024];
	rules_set *one = rules_load_text("typical.json", typical, strlen(typical), NULL, err, sizeof err);
	rules_set *s10 = build_set(1, 9), *s1000 = build_set(1, 999);
	rules_set *n10 = build_set(0, 10), *n1000 = build_set(0, 1000);
	if (!one || !s10 || !s1000 || !n10 || !n1000) {
		fprintf(stderr, "bench_rules: cannot build the rule sets\n");
		return 1;
	}
	long outputs = 0;
	double r_hot = rate(one, &m, secs, &outputs);
	if (outputs == 0) {
		fprintf(stderr, "bench_rules: the typical rule did not fire\n");
		return 1;
	}
	m.json = jc;
	m.payload = cold;
	double r_cold = rate(one, &m, secs, &outputs);
	m.json = jh;
	m.payload = hot;
	double r10 = rate(s10, &m, secs, &outputs), r1000 = rate(s1000, &m, secs, &outputs);
	double q10 = rate(n10, &m, secs, &outputs), q1000 = rate(n1000, &m, secs, &outputs);
	printf("rules: typical rule, WHERE true (output + action): %.0f evaluations/s (CPU) (%.0f ns each)\n", r_hot,
	       1e9 / r_hot);
	printf("rules: typical rule, WHERE false:                  %.0f evaluations/s (CPU) (%.0f ns each)\n", r_cold,
	       1e9 / r_cold);
	printf("rules: trie, typical + 9 non-matching rules:       %.0f msg/s (%.0f ns/msg)\n", r10, 1e9 / r10);
	printf("rules: trie, typical + 999 non-matching rules:     %.0f msg/s (%.0f ns/msg), cost ratio %.2fx\n", r1000,
	       1e9 / r1000, r10 / r1000);
	printf("rules: trie, no rule matches, 10 vs 1000 rules:    %.0f ns vs %.0f ns per msg, cost ratio %.2fx\n",
	       1e9 / q10, 1e9 / q1000, q10 / q1000);
	rules_set_free(one);
	rules_set_free(s10);
	rules_set_free(s1000);
	rules_set_free(n10);
	rules_set_free(n1000);
	json_decref(jh);
	json_decref(jc);
	return 0;
}
