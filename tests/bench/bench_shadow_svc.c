/*
 * bench_shadow_svc.c — the Device Shadow service without a network: what one update costs
 * the daemon's ingest thread, and what the store design choice costs.
 *
 *   shadow_svc_updates:  shadow_handle() on 1,000 things round-robin (a reported update of a
 *                        few fields, as bench_shadow sends), the outbox's group committed every
 *                        64 requests as the daemon does under load, answers released to a
 *                        publish hook that only counts: the service's own cost (parse, load,
 *                        merge, metadata, store, the "shadows" record, three answers).
 *   shadow_store_joined: the store write alone (per CPU second, like the others), inside the outbox's group transaction (the
 *                        design: one commit per group for the shadows, their records and the
 *                        PUBACKs).
 *   shadow_store_own_txn: the same write in a transaction of its own per update, on a database
 *                        of its own (the alternative: a commit per update, and no atomicity
 *                        with the outbox record).
 *
 * Usage: bench_shadow_svc [SECONDS per figure, default 2]. Prints one JSON line per figure
 * ({"name", "per_s", "unit"}), as bench.py's micro benchmarks expect. Uses a temp dir.
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "shadow/shadow.h"
#include "shadow/shadow_store.h"
#include "store/outbox.h"

#define THINGS 1000

static int64_t cpu_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int count_publish(void *ud, const char *topic, const void *payload, size_t len, int qos)
{
	*(uint64_t *)ud += len;
	return 0;
}

static double bench_service(const char *dir, double seconds)
{
	char path[4096], err[512], topic[128], body[256];
	snprintf(path, sizeof path, "%s/svc.db", dir);
	outbox_opts oo = {.commit_interval_ms = 5, .commit_max_records = 500, .gateway_id = "gw"};
	outbox *ob = outbox_open(path, &oo, err, sizeof err);
	const char *const sinks[] = {"lake"};
	uint64_t bytes = 0;
	shadow_conf c = {.max_shadows = 100000, .max_state_bytes = 8192, .max_payload_bytes = 131072, .max_inflight = 10,
			 .tombstone_ms = 1000, .response_qos = 1, .sinks = sinks, .nsinks = 1, .publish = count_publish,
			 .ud = &bytes};
	shadow_svc *s = ob ? shadow_new(&c, ob, err, sizeof err) : NULL;
	if (!s) {
		fprintf(stderr, "bench_shadow_svc: %s\n", err);
		exit(1);
	}
	uint64_t n = 0;
	int64_t t0 = cpu_ns(), end = t0 + (int64_t)(seconds * 1e9);
	while (cpu_ns() < end) {
		for (int k = 0; k < 64; k++, n++) {
			snprintf(topic, sizeof topic, "$aws/things/bench-%05d/shadow/update", (int)(n % THINGS));
			int len = snprintf(body, sizeof body,
					   "{\"state\":{\"reported\":{\"seq\":%" PRIu64 ",\"temp\":%d.5,\"ok\":true}},\"clientToken\":\"b%" PRIu64 "\"}",
					   n, 18 + (int)(n % 9), n);
			if (shadow_handle(s, topic, body, (size_t)len, NULL, tg_wall_ms()) != 0) {
				fprintf(stderr, "bench_shadow_svc: update failed\n");
				exit(1);
			}
		}
		outbox_commit(ob);
		shadow_release(s);
		/* the sink would have taken the records: keep the outbox from growing */
	}
	double per_s = (double)n / ((double)(cpu_ns() - t0) / 1e9);
	shadow_free(s);
	outbox_close(ob);
	return per_s;
}

/* The store write alone: joined = inside a group of 64 on the outbox connection; own = a
 * BEGIN/COMMIT per write on a WAL database of its own (synchronous=NORMAL, as the outbox). */
static double bench_store(const char *dir, int own, double seconds)
{
	char path[4096], err[512], thing[32];
	snprintf(path, sizeof path, "%s/%s.db", dir, own ? "own" : "joined");
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA page_size=16384", NULL, NULL, NULL)) {
		fprintf(stderr, "bench_shadow_svc: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	shadow_store *st = shadow_store_attach(db, err, sizeof err);
	shadow_doc d;
	const char *state = "{\"reported\":{\"seq\":12345,\"temp\":21.5,\"ok\":true}}";
	const char *meta = "{\"reported\":{\"seq\":{\"timestamp\":1800000000},\"temp\":{\"timestamp\":1800000000},"
			   "\"ok\":{\"timestamp\":1800000000}}}";
	if (!st || shadow_doc_load(&d, state, strlen(state), meta, strlen(meta), 1)) {
		fprintf(stderr, "bench_shadow_svc: %s\n", err);
		exit(1);
	}
	uint64_t n = 0;
	int64_t t0 = cpu_ns(), w0 = tg_mono_ms(), end = t0 + (int64_t)(seconds * 1e9);
	while (cpu_ns() < end) {
		if (!own)
			sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (int k = 0; k < 64; k++, n++) {
			snprintf(thing, sizeof thing, "bench-%05d", (int)(n % THINGS));
			d.version = (int64_t)n;
			if (own)
				sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
			if (shadow_store_put(st, thing, "", &d, 1800000000000LL)) {
				fprintf(stderr, "bench_shadow_svc: put failed: %s\n", sqlite3_errmsg(db));
				exit(1);
			}
			if (own)
				sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		}
		if (!own)
			sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	}
	double cpu_s = (double)(cpu_ns() - t0) / 1e9, wall_s = (double)(tg_mono_ms() - w0) / 1e3;
	fprintf(stderr, "store %s: %" PRIu64 " writes, %.2f s CPU, %.2f s wall\n", own ? "own txn" : "joined", n, cpu_s, wall_s);
	shadow_doc_free(&d);
	shadow_store_close(st);
	sqlite3_close(db);
	return (double)n / cpu_s; /* per CPU second: the box is shared, wall time is other people's too */
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2;
	if (seconds <= 0)
		seconds = 2;
	char dir[] = "/tmp/tg-bench-shadow-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	double svc = bench_service(dir, seconds);
	printf("{\"name\":\"shadow_svc_updates\",\"per_s\":%.0f,\"unit\":\"updates per CPU second\"}\n", svc);
	double joined = bench_store(dir, 0, seconds), own = bench_store(dir, 1, seconds);
	printf("{\"name\":\"shadow_store_joined\",\"per_s\":%.0f,\"unit\":\"writes per CPU second (in the outbox group of 64)\"}\n", joined);
	printf("{\"name\":\"shadow_store_own_txn\",\"per_s\":%.0f,\"unit\":\"writes per CPU second (a commit each)\"}\n", own);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}
