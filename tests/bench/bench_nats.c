/*
 * bench_nats.c — nats-server's own JetStream ceiling on this machine, for the ratio of the
 * `nats` sink's drain rate (tests/bench/bench.py, scenario "upstream"). C publishers,
 * each on its own connection and thread, publish N messages in all with
 * js_PublishMsgAsync — ~200-byte JSON like a telemetry record, each with its own
 * Nats-Msg-Id as the sink sends them, so the server pays for duplicate tracking too — keep
 * up to W unacknowledged, and the count stops when the last JetStream acknowledgement
 * arrived. libnats is reached through the daemon's loader (gateway/sinks/nats_dl.h).
 *
 *   bench_nats --url nats://127.0.0.1:4222 [--subject tidegate.bench] [--count N]
 *              [--conns C] [--window W] [--stream NAME]
 *
 * Prints one JSON object: count, acked, errors, seconds, per_s, and the CLOCK_MONOTONIC
 * times of start and end (the driver's clock, like bench_sub's). Exit status 0 when every
 * message was acknowledged.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sinks/nats_dl.h"

typedef struct pub {
	const char *url, *subject, *stream;
	int64_t count, window, first_id;
	int idx;
	_Atomic int64_t *acked, *errors;
	int failed;
	pthread_t tid;
} pub;

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	pub *p = closure;
	if (pa)
		atomic_fetch_add(p->acked, 1);
	else
		atomic_fetch_add(p->errors, 1);
	natsMsg_Destroy(msg);
}

static void *run(void *arg)
{
	pub *p = arg;
	natsOptions *o = NULL;
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	const char *servers[] = {p->url};
	char subj[256], id[64], data[256];
	p->failed = 1;
	if (natsOptions_Create(&o) != NATS_OK || natsOptions_SetServers(o, servers, 1) != NATS_OK ||
	    natsConnection_Connect(&nc, o) != NATS_OK) {
		fprintf(stderr, "bench_nats: connect %s failed\n", p->url);
		goto out;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = p->window;
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = p;
	jo.PublishAsync.StallWait = 10000;
	if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
		goto out;
	for (int64_t i = 0; i < p->count; i++) {
		int64_t n = p->first_id + i;
		snprintf(subj, sizeof subj, "%s.dev-%04d", p->subject, (int)(n % 100));
		snprintf(id, sizeof id, "bench-%" PRId64, n);
		int len = snprintf(data, sizeof data,
				   "{\"msg_id\":\"%s\",\"thing\":\"dev-%04d\",\"topic\":\"devices/dev-%04d/telemetry\","
				   "\"ts\":%" PRId64 ",\"seq\":%" PRId64 ",\"temperature\":21.5,\"humidity\":40.25,"
				   "\"received_at\":\"2026-01-01T00:00:00.000Z\"}",
				   id, (int)(n % 100), (int)(n % 100), n, n);
		natsMsg *m = NULL;
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MsgId = id;
		po.ExpectStream = p->stream;
		if (natsMsg_Create(&m, subj, NULL, data, len) != NATS_OK || js_PublishMsgAsync(js, &m, &po) != NATS_OK) {
			natsMsg_Destroy(m);
			atomic_fetch_add(p->errors, 1);
		}
	}
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = 60000;
	p->failed = js_PublishAsyncComplete(js, &po) != NATS_OK;
out:
	if (js)
		jsCtx_Destroy(js);
	if (nc)
		natsConnection_Destroy(nc);
	if (o)
		natsOptions_Destroy(o);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *url = NULL, *subject = "tidegate.bench", *stream = NULL;
	int64_t count = 100000, conns = 4, window = 256;
	char err[256];
	static const struct option lo[] = {
		{"url", required_argument, NULL, 'u'},   {"subject", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'n'}, {"conns", required_argument, NULL, 'c'},
		{"window", required_argument, NULL, 'w'}, {"stream", required_argument, NULL, 'S'},
		{NULL, 0, NULL, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'u': url = optarg; break;
		case 's': subject = optarg; break;
		case 'n': count = strtoll(optarg, NULL, 10); break;
		case 'c': conns = strtoll(optarg, NULL, 10); break;
		case 'w': window = strtoll(optarg, NULL, 10); break;
		case 'S': stream = optarg; break;
		default: return 2;
		}
	}
	if (!url || count < 1 || conns < 1 || conns > 64 || window < 1) {
		fprintf(stderr, "usage: bench_nats --url URL [--subject S] [--count N] [--conns C] [--window W] [--stream S]\n");
		return 2;
	}
	if (nats_dl_load(err, sizeof err)) {
		fprintf(stderr, "bench_nats: %s\n", err);
		return 1;
	}
	_Atomic int64_t acked = 0, errors = 0;
	pub *p = calloc((size_t)conns, sizeof *p);
	if (!p)
		return 1;
	double t0 = mono_s();
	for (int i = 0; i < conns; i++) {
		p[i] = (pub){.url = url, .subject = subject, .stream = stream, .window = window, .idx = i,
			     .count = count / conns + (i < count % conns), .acked = &acked, .errors = &errors};
		p[i].first_id = i ? p[i - 1].first_id + p[i - 1].count : 1;
		if (pthread_create(&p[i].tid, NULL, run, &p[i])) {
			conns = i;
			break;
		}
	}
	int failed = 0;
	for (int i = 0; i < conns; i++) {
		pthread_join(p[i].tid, NULL);
		failed |= p[i].failed;
	}
	double t1 = mono_s();
	int64_t a = atomic_load(&acked), e = atomic_load(&errors);
	printf("{\"name\":\"bench_nats\",\"count\":%" PRId64 ",\"acked\":%" PRId64 ",\"errors\":%" PRId64
	       ",\"seconds\":%.4f,\"per_s\":%.1f,\"start_mono_s\":%.6f,\"end_mono_s\":%.6f}\n",
	       count, a, e, t1 - t0, (double)a / (t1 - t0), t0, t1);
	free(p);
	return a == count && !failed ? 0 : 1;
}
