/*
 * bench_sub.c — the far end of the benchmarks: a minimal libmosquitto subscriber that only
 * counts. It connects with mutual TLS (MQTT v5, QoS as asked), subscribes to one or more
 * filters, then for every message bumps a counter and, when the payload carries a numeric
 * "ts" (epoch ms, as device_sim writes it with a wall clock), puts now - ts into a
 * histogram of 0.1 ms buckets. No JSON parser and no allocation on the message path, so the
 * subscriber is never the bottleneck it is meant to expose. It writes a ready file once the
 * broker granted the subscription (the driver starts the load only then) and a JSON summary
 * when it has seen --count messages, when no message came for --idle seconds after the
 * first, or at --timeout, whichever first. Rates use CLOCK_MONOTONIC; latencies need
 * CLOCK_REALTIME because the sender's clock is the wall clock (same host, so no skew).
 * first_mono_s/last_mono_s are raw CLOCK_MONOTONIC readings, which every process on the
 * host shares, so the driver can time "load started -> last message arrived" exactly.
 *
 * --loop mqtt_io runs the network with the daemon's own loop (gateway/mqtt/mqtt_io.h: one poll
 * per batch of packets, TLS read-ahead, the round's PUBACKs in one TLS record) instead of
 * mosquitto_loop(), still acknowledging every message as soon as its round is read: the
 * ceiling of a subscriber as frugal with the network as tidegate, for comparison.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "mqtt/mqtt_io.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TOPICS 8
#define HIST_BUCKETS 600000 /* 0.1 ms each: up to 60 s */

struct sub {
	const char *host, *cafile, *cert, *key, *out, *ready, *client_id;
	const char *topics[MAX_TOPICS];
	int ntopics, port, qos, subscribed, suback_seen;
	uint64_t want, count, with_ts, over_hist;
	double timeout_s, idle_s;
	int64_t first_ns, last_ns, start_ns;
	uint32_t *hist;
	double lat_min_ms, lat_max_ms, lat_sum_ms;
	int use_io;  /* --loop mqtt_io */
	mqtt_io io;
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static int64_t clock_ns(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The value of the first top-level-looking "ts": number, or -1. device_sim writes it as an
 * integer of epoch ms; the daemon's alerts carry the device's ts the same way. */
static int64_t payload_ts(const char *p, int len)
{
	static const char key[] = "\"ts\":";
	for (int i = 0; i + (int)sizeof key - 1 < len; i++) {
		if (p[i] != '"' || memcmp(p + i, key, sizeof key - 1) != 0)
			continue;
		int j = i + (int)sizeof key - 1;
		while (j < len && p[j] == ' ')
			j++;
		int64_t v = 0;
		int digits = 0;
		while (j < len && p[j] >= '0' && p[j] <= '9' && digits < 18) {
			v = v * 10 + (p[j] - '0');
			j++;
			digits++;
		}
		return digits ? v : -1;
	}
	return -1;
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
	struct sub *s = ud;
	(void)flags;
	(void)props;
	if (rc != 0) {
		fprintf(stderr, "bench_sub: connect refused: %s\n", mosquitto_reason_string(rc));
		stop_flag = 1;
		return;
	}
	if (s->use_io)
		mqtt_io_connected(&s->io);
	for (int i = 0; i < s->ntopics; i++)
		mosquitto_subscribe_v5(m, NULL, s->topics[i], s->qos, 0, NULL);
	if (s->use_io)
		mqtt_io_flush(&s->io); /* the SUBSCRIBEs wait in the hold like everything else */
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
			 const mosquitto_property *props)
{
	struct sub *s = ud;
	(void)m;
	(void)mid;
	(void)props;
	for (int i = 0; i < n; i++) {
		if (granted[i] >= 0x80) {
			fprintf(stderr, "bench_sub: subscription refused (reason %d)\n", granted[i]);
			stop_flag = 1;
			return;
		}
	}
	if (++s->suback_seen == s->ntopics && !s->subscribed) {
		s->subscribed = 1;
		if (s->ready) {
			FILE *f = fopen(s->ready, "w");
			if (f)
				fclose(f);
		}
	}
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	struct sub *s = ud;
	(void)m;
	(void)props;
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	if (s->use_io && msg->qos > 0)
		mqtt_io_received(&s->io, now / 1000000);
	if (s->count == 0)
		s->first_ns = now;
	s->last_ns = now;
	s->count++;
	int64_t ts = payload_ts(msg->payload, msg->payloadlen);
	if (ts > 0) {
		double lat_ms = (double)clock_ns(CLOCK_REALTIME) / 1e6 - (double)ts;
		if (lat_ms < 0)
			lat_ms = 0; /* ts has ms resolution: a message within the same ms */
		long b = (long)(lat_ms * 10.0);
		if (b >= HIST_BUCKETS) {
			s->over_hist++;
			b = HIST_BUCKETS - 1;
		}
		s->hist[b]++;
		if (s->with_ts == 0 || lat_ms < s->lat_min_ms)
			s->lat_min_ms = lat_ms;
		if (lat_ms > s->lat_max_ms)
			s->lat_max_ms = lat_ms;
		s->lat_sum_ms += lat_ms;
		s->with_ts++;
	}
}

static double percentile(const struct sub *s, double p)
{
	if (s->with_ts == 0)
		return -1;
	uint64_t rank = (uint64_t)(p * (double)s->with_ts);
	if (rank >= s->with_ts)
		rank = s->with_ts - 1;
	uint64_t seen = 0;
	for (long b = 0; b < HIST_BUCKETS; b++) {
		seen += s->hist[b];
		if (seen > rank)
			return ((double)b + 0.5) / 10.0;
	}
	return s->lat_max_ms;
}

static int write_summary(const struct sub *s, const char *why)
{
	FILE *f = s->out ? fopen(s->out, "w") : stdout;
	if (!f) {
		fprintf(stderr, "bench_sub: cannot write %s: %s\n", s->out, strerror(errno));
		return -1;
	}
	double span = s->count > 1 ? (double)(s->last_ns - s->first_ns) / 1e9 : 0;
	double since_start = s->count ? (double)(s->last_ns - s->start_ns) / 1e9 : 0;
	fprintf(f,
		"{\"count\":%" PRIu64 ",\"wanted\":%" PRIu64 ",\"stop\":\"%s\",\"first_to_last_s\":%.6f,"
		"\"start_to_last_s\":%.6f,\"rate_first_last\":%.1f,\"with_ts\":%" PRIu64 ","
		"\"lat_ms\":{\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f},"
		"\"lat_over_60s\":%" PRIu64 ",\"first_mono_s\":%.6f,\"last_mono_s\":%.6f}\n",
		s->count, s->want, why, span, since_start, span > 0 ? (double)(s->count - 1) / span : 0.0,
		s->with_ts, s->with_ts ? s->lat_min_ms : -1.0, percentile(s, 0.50), percentile(s, 0.90),
		percentile(s, 0.99), s->with_ts ? s->lat_max_ms : -1.0,
		s->with_ts ? s->lat_sum_ms / (double)s->with_ts : -1.0, s->over_hist, (double)s->first_ns / 1e9,
		(double)s->last_ns / 1e9);
	if (f != stdout && fclose(f) != 0)
		return -1;
	return 0;
}

static const char usage[] =
	"usage: bench_sub --port P --cafile CA --cert CRT --key KEY -t FILTER [-t FILTER...]\n"
	"                 [--host H] [--qos 0|1] [--count N] [--timeout S] [--idle S]\n"
	"                 [--ready FILE] [--out FILE] [--client-id ID] [--loop mosquitto|mqtt_io]\n";

int main(int argc, char **argv)
{
	struct sub s = {.host = "127.0.0.1", .qos = 1, .timeout_s = 600, .idle_s = 10,
			.client_id = "tidegate-bench-sub"};
	static const struct option lo[] = {
		{"host", required_argument, NULL, 'h'}, {"port", required_argument, NULL, 'p'},
		{"cafile", required_argument, NULL, 'A'}, {"cert", required_argument, NULL, 'C'},
		{"key", required_argument, NULL, 'K'}, {"topic", required_argument, NULL, 't'},
		{"qos", required_argument, NULL, 'q'}, {"count", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, 'T'}, {"idle", required_argument, NULL, 'I'},
		{"ready", required_argument, NULL, 'r'}, {"out", required_argument, NULL, 'o'},
		{"client-id", required_argument, NULL, 'i'}, {"loop", required_argument, NULL, 'L'},
		{NULL, 0, NULL, 0},
	};
	int c, rc = 1;
	struct mosquitto *m = NULL;
	while ((c = getopt_long(argc, argv, "t:", lo, NULL)) != -1) {
		switch (c) {
		case 'h': s.host = optarg; break;
		case 'p': s.port = atoi(optarg); break;
		case 'A': s.cafile = optarg; break;
		case 'C': s.cert = optarg; break;
		case 'K': s.key = optarg; break;
		case 't':
			if (s.ntopics == MAX_TOPICS) {
				fputs("bench_sub: too many topics\n", stderr);
				return 2;
			}
			s.topics[s.ntopics++] = optarg;
			break;
		case 'q': s.qos = atoi(optarg); break;
		case 'n': s.want = strtoull(optarg, NULL, 10); break;
		case 'T': s.timeout_s = atof(optarg); break;
		case 'I': s.idle_s = atof(optarg); break;
		case 'r': s.ready = optarg; break;
		case 'o': s.out = optarg; break;
		case 'i': s.client_id = optarg; break;
		case 'L':
			if (strcmp(optarg, "mqtt_io") != 0 && strcmp(optarg, "mosquitto") != 0) {
				fputs(usage, stderr);
				return 2;
			}
			s.use_io = strcmp(optarg, "mqtt_io") == 0;
			break;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (!s.port || !s.cafile || !s.cert || !s.key || !s.ntopics || s.qos < 0 || s.qos > 1) {
		fputs(usage, stderr);
		return 2;
	}
	s.hist = calloc(HIST_BUCKETS, sizeof *s.hist);
	if (!s.hist)
		return 1;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	mosquitto_lib_init();
	m = mosquitto_new(s.client_id, true, &s);
	if (!m)
		goto done;
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mqtt_io_init(&s.io, m, 1000);
	mosquitto_connect_v5_callback_set(m, on_connect);
	mosquitto_subscribe_v5_callback_set(m, on_subscribe);
	mosquitto_message_v5_callback_set(m, on_message);
	if (mosquitto_tls_set(m, s.cafile, NULL, s.cert, s.key, NULL) != MOSQ_ERR_SUCCESS) {
		fputs("bench_sub: TLS setup failed\n", stderr);
		goto done;
	}
	s.start_ns = clock_ns(CLOCK_MONOTONIC);
	if (mosquitto_connect_bind_v5(m, s.host, s.port, 60, NULL, NULL) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bench_sub: cannot connect to %s:%d\n", s.host, s.port);
		goto done;
	}
	const char *why = "timeout";
	for (;;) {
		int lrc;
		if (s.use_io) {
			lrc = mqtt_io_step(&s.io, 50, 128);
			mqtt_io_flush(&s.io); /* acknowledge the round at once */
		} else {
			lrc = mosquitto_loop(m, 50, 1);
		}
		int64_t now = clock_ns(CLOCK_MONOTONIC);
		if (lrc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "bench_sub: connection lost: %s\n", mosquitto_strerror(lrc));
			why = "disconnected";
			break;
		}
		if (stop_flag) {
			why = "signal";
			break;
		}
		if (s.want && s.count >= s.want) {
			why = "count";
			break;
		}
		if (s.count && (double)(now - s.last_ns) / 1e9 > s.idle_s) {
			why = "idle";
			break;
		}
		if ((double)(now - s.start_ns) / 1e9 > s.timeout_s)
			break;
	}
	/* Finish the QoS 1 handshakes of what we counted before leaving. */
	mosquitto_disconnect_v5(m, 0, NULL);
	rc = write_summary(&s, why) == 0 && s.subscribed ? 0 : 1;
done:
	mqtt_io_free(&s.io);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	free(s.hist);
	return rc;
}
