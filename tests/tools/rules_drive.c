/*
 * rules_drive.c — the rules engine alone on the fleet benchmark's message flow: load one or
 * more rules folders and evaluate the same stream of device telemetry against each, so the
 * CPU a rule set costs per message can be measured (and profiled with perf) without the
 * broker, TLS, schemas and the outbox around it. tests/bench/fleet.py's rules row measures
 * the whole daemon; this one says how much of its difference is the engine's.
 *
 *   rules_drive [--messages N] [--things K] [--reps R] [--evict KIB] DIR...
 *
 * Messages are device_sim's normal telemetry (sensor_id, ts, temperature, humidity,
 * pressure, battery, rssi, seq) on devices/<thing>/telemetry, K things (default 100), a
 * temperature of 18-27 °C with about 1 reading in 5,000 above 28 (the shipped rules' hot
 * threshold), parsed once before the clock starts: the daemon parses a payload once
 * whatever the rules. The alert hook says every alert is idle, as the daemon's alert state
 * does for a thing with nothing pending. Folders are run in turn, R times (default 3), and
 * the figure is the median CPU time of this thread per 1M messages. In the daemon the rest
 * of a message's work (TLS, schema, SQLite) runs between two evaluations and evicts the
 * engine's data from the caches: --evict KIB writes that much memory between two messages
 * to model it (its cost is the same for every folder, so compare the differences).
 *
 * Output, one line per folder: "<dir> rules=<n> evaluated=<per msg> matched=<total>
 * actions=<total> cpu_s_per_1m=<median> runs=<each>"; with two folders or more, a last line
 * "ratio <dir i>/<dir 1> = <x>" for each further folder. Exit status 0, or 1 when a folder
 * fails to load (its errors on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules/rules.h"

#define MAX_DIRS 8
#define MAX_REPS 15
#define POOL 4096 /* distinct messages cycled through: more than fit in a cache line's worth */

typedef struct drive_msg {
	char topic[64], thing[32], payload[256];
	json_t *json;
	tg_msg m;
} drive_msg;

static double thread_cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int on_action(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	(*(long *)ud) += a->payload != NULL;
	return 0;
}

static int all_idle(void *ud, const char *rule, const char *alert, uint64_t key, const char *thing)
{
	(void)ud;
	(void)rule;
	(void)alert;
	(void)key;
	(void)thing;
	return 1;
}

/* xorshift64*: a fixed stream, so every folder and every run sees the same messages */
static double uniform(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (double)((*s * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static int make_pool(drive_msg *pool, int things)
{
	uint64_t s = 0x9E3779B97F4A7C15ull;
	for (int i = 0; i < POOL; i++) {
		drive_msg *d = &pool[i];
		int t = i % things;
		double temp = 18.0 + 9.0 * uniform(&s);
		if (uniform(&s) < 1.0 / 5000)
			temp = 29.5;
		snprintf(d->thing, sizeof d->thing, "fleet-%05d", t);
		snprintf(d->topic, sizeof d->topic, "devices/%s/telemetry", d->thing);
		snprintf(d->payload, sizeof d->payload,
			 "{\"sensor_id\":\"%s\",\"ts\":%lld,\"temperature\":%.2f,\"humidity\":%.1f,"
			 "\"pressure\":%.1f,\"battery\":%.3f,\"rssi\":%d,\"seq\":%d}",
			 d->thing, 1700000000000LL + i, temp, 40.0 + 20.0 * uniform(&s), 1005.0 + 16.0 * uniform(&s),
			 0.5 + 0.5 * uniform(&s), -40 - (int)(50 * uniform(&s)), i);
		d->json = json_loads(d->payload, 0, NULL);
		if (!d->json)
			return -1;
		d->m = (tg_msg){.topic = d->topic, .thing = d->thing, .client_id = d->thing, .principal = d->thing,
				.payload = d->payload, .payloadlen = strlen(d->payload), .json = d->json,
				.received_ms = 1700000000000LL + i, .qos = 1};
	}
	return 0;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	long msgs = 1000000;
	int things = 100, reps = 3, ndirs = 0;
	size_t evict = 0;
	const char *dirs[MAX_DIRS];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc)
			msgs = atol(argv[++i]);
		else if (strcmp(argv[i], "--things") == 0 && i + 1 < argc)
			things = atoi(argv[++i]);
		else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (strcmp(argv[i], "--evict") == 0 && i + 1 < argc)
			evict = (size_t)atol(argv[++i]) * 1024;
		else if (argv[i][0] != '-' && ndirs < MAX_DIRS)
			dirs[ndirs++] = argv[i];
		else {
			fprintf(stderr, "usage: rules_drive [--messages N] [--things K] [--reps R] [--evict KIB] DIR...\n");
			return 2;
		}
	}
	if (ndirs == 0 || msgs <= 0 || things <= 0 || reps <= 0 || reps > MAX_REPS) {
		fprintf(stderr, "usage: rules_drive [--messages N] [--things K] [--reps R (1-%d)] [--evict KIB] DIR...\n",
			MAX_REPS);
		return 2;
	}
	drive_msg *pool = calloc(POOL, sizeof *pool);
	unsigned char *junk = evict ? malloc(evict) : NULL;
	rules_set *sets[MAX_DIRS] = {0};
	rules_env env = {.alert_idle = all_idle};
	static char err[1 << 16];
	int rc = 1;
	if (!pool || (evict && !junk) || make_pool(pool, things) < 0) {
		fprintf(stderr, "rules_drive: out of memory\n");
		goto out;
	}
	for (int d = 0; d < ndirs; d++)
		if (!(sets[d] = rules_load_dir(dirs[d], &env, err, sizeof err))) {
			fprintf(stderr, "rules_drive: %s:\n%s\n", dirs[d], err);
			goto out;
		}
	double cpu[MAX_DIRS][MAX_REPS];
	rules_stats st[MAX_DIRS] = {0};
	long actions[MAX_DIRS] = {0};
	for (int r = 0; r < reps; r++)
		for (int d = 0; d < ndirs; d++) {
			/* only the first run's counts are reported: every run evaluates the same */
			rules_stats tmp = {0}, *sp = r == 0 ? &st[d] : &tmp;
			long acts = 0;
			double t0 = thread_cpu_s();
			for (long i = 0; i < msgs; i++) {
				rules_eval(sets[d], &pool[i % POOL].m, on_action, &acts, sp);
				for (size_t b = 0; b < evict; b += 64)
					junk[b] = (unsigned char)i;
			}
			cpu[d][r] = (thread_cpu_s() - t0) / (double)msgs * 1e6;
			if (r == 0)
				actions[d] = acts;
		}
	double med[MAX_DIRS];
	for (int d = 0; d < ndirs; d++) {
		double s[MAX_REPS];
		memcpy(s, cpu[d], sizeof s[0] * (size_t)reps);
		qsort(s, (size_t)reps, sizeof s[0], cmp_dbl);
		med[d] = reps % 2 ? s[reps / 2] : (s[reps / 2 - 1] + s[reps / 2]) / 2;
		printf("%s rules=%zu evaluated=%.2f matched=%llu actions=%ld cpu_s_per_1m=%.3f runs=", dirs[d],
		       rules_count(sets[d]), (double)st[d].evaluated / (double)msgs, (unsigned long long)st[d].matched,
		       actions[d], med[d]);
		for (int r = 0; r < reps; r++)
			printf("%s%.3f", r ? "," : "", cpu[d][r]);
		printf("\n");
	}
	for (int d = 1; d < ndirs; d++)
		printf("ratio %s/%s = %.3f (difference %.3f CPU s per 1M messages)\n", dirs[d], dirs[0], med[d] / med[0],
		       med[d] - med[0]);
	rc = 0;
out:
	for (int d = 0; d < ndirs; d++)
		rules_set_free(sets[d]);
	for (int i = 0; pool && i < POOL; i++)
		json_decref(pool[i].json);
	free(pool);
	free(junk);
	return rc;
}
