/*
 * bench_outbox.c — outbox append throughput with the real outbox.c, and the backlog filler
 * for the drain benchmark. It opens the outbox exactly as the daemon does (same options,
 * synchronous=NORMAL, group commits of commit_max_records or commit_interval, whichever
 * first, driven through outbox_tick with the wall clock) and appends records shaped like
 * the ones ingest builds from device_sim telemetry (device fields + thing, topic,
 * received_at; msg_id is set by the outbox). One JSON object per thing is reused and only
 * its ts/seq/received_at change, so the figure is the outbox's cost (serialise + insert +
 * commit), not a JSON parser's. Prints one JSON line:
 *   {"name":"outbox_append","records":N,"seconds":S,"per_s":R,"cpu_s":C,"per_cpu_s":R2,...}
 * plus the outbox's files as the last commit left them (open_db/wal/shm_bytes), the WAL's
 * peak and bound, and the database size after close (db_bytes).
 * The database it leaves behind is a valid daemon outbox holding N rows for the given sink
 * names, which is how tests/bench/run.sh builds the 1,000,000-record backlog.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "core/err.h"
#include "core/timefmt.h"
#include "edge/schema.h"
#include "store/outbox.h"

#define MAX_SINK_ARGS 8
#define THINGS 100

static int64_t wall_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* user + system CPU seconds of this process: on a shared machine the wall-clock rate
 * depends on the neighbours, records per CPU second much less */
static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

static json_t *make_record(int i)
{
	char thing[32], topic[64], payload[256];
	snprintf(thing, sizeof thing, "dev-%04d", i + 1);
	snprintf(topic, sizeof topic, "devices/%s/telemetry", thing);
	snprintf(payload, sizeof payload,
		 "{\"sensor_id\":\"%s\",\"ts\":0,\"temperature\":21.37,\"humidity\":48.2,"
		 "\"pressure\":1013.4,\"battery\":3.912,\"rssi\":-61,\"seq\":0}",
		 thing);
	json_t *o = json_loads(payload, 0, NULL);
	if (!o)
		return NULL;
	json_object_set_new(o, "thing", json_string(thing));
	json_object_set_new(o, "topic", json_string(topic));
	json_object_set_new(o, "received_at", json_string("1970-01-01T00:00:00.000Z"));
	return o;
}

static const char usage[] = "usage: bench_outbox --db PATH [--records N] [--sink NAME]... [--gateway-id ID]\n"
			    "                    [--commit-interval MS] [--commit-max N]\n";

int main(int argc, char **argv)
{
	const char *db = NULL, *gw = "gw-bench";
	const char *sinks[MAX_SINK_ARGS];
	size_t nsinks = 0;
	long long records = 200000, interval = 5, maxrec = 500;
	json_t *objs[THINGS] = {0};
	outbox *ob = NULL;
	int rc = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fputs(usage, stderr);
			return 2;
		}
		if (!strcmp(a, "--db"))
			db = v;
		else if (!strcmp(a, "--records"))
			records = atoll(v);
		else if (!strcmp(a, "--gateway-id"))
			gw = v;
		else if (!strcmp(a, "--commit-interval"))
			interval = atoll(v);
		else if (!strcmp(a, "--commit-max"))
			maxrec = atoll(v);
		else if (!strcmp(a, "--sink") && nsinks < MAX_SINK_ARGS)
			sinks[nsinks++] = v;
		else {
			fputs(usage, stderr);
			return 2;
		}
		i++;
	}
	if (!db || records <= 0 || interval <= 0 || maxrec <= 0) {
		fputs(usage, stderr);
		return 2;
	}
	if (nsinks == 0)
		sinks[nsinks++] = "lake";
	for (int i = 0; i < THINGS; i++)
		if (!(objs[i] = make_record(i)))
			goto out;

	char err[512];
	outbox_opts oo = {.commit_interval_ms = interval, .commit_max_records = maxrec, .gateway_id = gw,
			  .full_policy = OUTBOX_DROP_OLDEST};
	if (!(ob = outbox_open(db, &oo, err, sizeof err))) {
		fprintf(stderr, "bench_outbox: %s\n", err);
		goto out;
	}
	double t0 = mono_s(), c0 = cpu_s();
	int64_t now = wall_ms();
	char when[40];
	for (long long n = 0; n < records; n++) {
		json_t *o = objs[n % THINGS];
		if ((n & 63) == 0) {
			now = wall_ms();
			timefmt_format_rfc3339(now, when, sizeof when);
		}
		json_object_set_new(o, "ts", json_integer(now - 3));
		json_object_set_new(o, "seq", json_integer(n / THINGS));
		json_object_set_new(o, "received_at", json_string(when));
		const char *thing = json_string_value(json_object_get(o, "thing"));
		int64_t id;
		int a = outbox_append(ob, sinks, nsinks, OUTBOX_PRIO_BULK, "telemetry", thing, now, o, &id);
		if (a < 0) {
			fprintf(stderr, "bench_outbox: append: %s\n", tg_strerror(a));
			goto out;
		}
		if (outbox_tick(ob, now) < 0) {
			fprintf(stderr, "bench_outbox: commit failed\n");
			goto out;
		}
	}
	if (outbox_commit(ob) < 0) {
		fprintf(stderr, "bench_outbox: final commit failed\n");
		goto out;
	}
	double secs = mono_s() - t0, cpu = cpu_s() - c0;
	outbox_counters *ctr = outbox_counters_of(ob);
	uint64_t commits = atomic_load(&ctr->commits);
	/* the files as the last commit left them, before close checkpoints and removes the WAL:
	 * what a daemon that had just taken in this backlog would have on disk */
	outbox_disk open_disk;
	if (outbox_disk_usage(ob, &open_disk) < 0)
		open_disk = (outbox_disk){-1, -1, -1, -1};
	long long wal_peak = (long long)atomic_load(&ctr->wal_peak_bytes);
	long long wal_limit = (long long)atomic_load(&ctr->wal_limit_bytes);
	long long db_used = (long long)atomic_load(&ctr->db_used_bytes);
	unsigned long long restarts = (unsigned long long)atomic_load(&ctr->wal_restarts);
	outbox_close(ob);
	ob = NULL;
	struct stat st;
	long long bytes = stat(db, &st) == 0 ? (long long)st.st_size : -1;
	printf("{\"name\":\"outbox_append\",\"records\":%lld,\"sinks\":%zu,\"seconds\":%.3f,\"per_s\":%.0f,"
	       "\"cpu_s\":%.3f,\"per_cpu_s\":%.0f,\"commits\":%" PRIu64 ",\"db_bytes\":%lld,"
	       "\"open_db_bytes\":%lld,\"open_wal_bytes\":%lld,\"open_shm_bytes\":%lld,\"db_used_bytes\":%lld,"
	       "\"wal_peak_bytes\":%lld,\"wal_max_bytes\":%lld,\"wal_restarts\":%llu}\n",
	       records, nsinks, secs, (double)records / secs, cpu, cpu > 0 ? (double)records / cpu : 0.0, commits,
	       bytes, (long long)open_disk.db, (long long)open_disk.wal, (long long)open_disk.shm, db_used, wal_peak,
	       wal_limit, restarts);
	rc = 0;
out:
	outbox_close(ob);
	for (int i = 0; i < THINGS; i++)
		json_decref(objs[i]);
	return rc;
}
