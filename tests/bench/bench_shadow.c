/*
 * bench_shadow.c — the load generator of the shadow benchmark: shadow updates for many
 * things through the broker (mutual TLS, QoS 1) to the daemon, and the round trip from the
 * update to its /accepted.
 *
 * K connections with one identity allowed to update any thing's shadow (the benchmark's
 * tidegate-loadgen, render-broker-conf.sh --loadgen); connection k owns things k, k+K, …
 * and subscribes to exactly their update/accepted and update/rejected topics (so no answer
 * is delivered twice). Every update carries clientToken "b<seq>"; the answer's token finds
 * the send time (CLOCK_MONOTONIC, one process: no clock skew). Either open loop at --rate
 * updates/s in all (a fixed schedule, so a slow answer does not slow the offered load), or
 * --max-rate with at most --inflight unanswered updates per connection. Things are taken
 * round-robin, so each has at most a few requests in flight (under the service's 10).
 * After --warmup seconds, --duration seconds are measured; then it waits up to 10 s for
 * the answers of what was sent and prints one JSON line:
 *   {"name": "shadow_updates", "things", "rate_offered", "sent", "accepted", "rejected",
 *    "updates_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "unanswered", ...}
 * Not run by `make bench` on its own (it needs a broker and a daemon): bench.py's shadow
 * row starts them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING (1u << 20) /* send times by seq; far more than can be outstanding */
#define SUB_BATCH 100

struct run;

struct bconn {
	struct run *r;
	struct mosquitto *m;
	int idx, connected, subs_left, *things, nthings, rr;
	int64_t outstanding;
};

struct run {
	const char *host, *cafile, *cert, *key;
	int port, things, nconns, inflight, max_rate;
	double rate, duration_s, warmup_s;
	struct bconn *c;
	int64_t *sent_ns;
	uint64_t seq;
	int64_t t_measure, t_end;
	uint64_t sent_m, accepted_m, rejected_m, rejected_all, answered;
	double *rtt;
	size_t nrtt, caprtt;
};

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *p)
{
	struct bconn *c = ud;
	if (rc) {
		fprintf(stderr, "bench_shadow: connection %d refused: %s\n", c->idx, mosquitto_reason_string(rc));
		exit(3);
	}
	c->connected = 1;
	/* per-thing answer topics, in batches */
	for (int i = 0; i < c->nthings; i += SUB_BATCH / 2) {
		char *subs[SUB_BATCH], buf[SUB_BATCH][96];
		int n = 0;
		for (int j = i; j < c->nthings && j < i + SUB_BATCH / 2; j++) {
			snprintf(buf[n], sizeof buf[n], "$aws/things/bench-%05d/shadow/update/accepted", c->things[j]);
			subs[n] = buf[n];
			n++;
			snprintf(buf[n], sizeof buf[n], "$aws/things/bench-%05d/shadow/update/rejected", c->things[j]);
			subs[n] = buf[n];
			n++;
		}
		c->subs_left++;
		mosquitto_subscribe_multiple(m, NULL, n, subs, 1, 0, NULL);
	}
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted, const mosquitto_property *p)
{
	struct bconn *c = ud;
	for (int i = 0; i < n; i++)
		if (granted[i] >= 0x80) {
			fprintf(stderr, "bench_shadow: subscription refused (%d): the loadgen identity needs "
					"$aws/things/+/shadow/# (render-broker-conf.sh --loadgen)\n",
				granted[i]);
			exit(3);
		}
	c->subs_left--;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg, const mosquitto_property *p)
{
	struct bconn *c = ud;
	struct run *r = c->r;
	const char *pl = msg->payload;
	const char *tok = memmem(pl, (size_t)msg->payloadlen, "\"clientToken\":\"b", 16);
	if (!tok)
		return;
	uint64_t seq = strtoull(tok + 16, NULL, 10);
	int64_t t = now_ns(), sent = r->sent_ns[seq & (RING - 1)];
	int rejected = strstr(msg->topic, "/rejected") != NULL;
	c->outstanding--;
	r->answered++;
	if (rejected)
		r->rejected_all++;
	if (sent < r->t_measure || sent >= r->t_end)
		return; /* warm-up or drain */
	if (rejected) {
		r->rejected_m++;
		return;
	}
	r->accepted_m++;
	if (r->nrtt == r->caprtt) {
		r->caprtt = r->caprtt ? r->caprtt * 2 : 65536;
		r->rtt = realloc(r->rtt, r->caprtt * sizeof *r->rtt);
		if (!r->rtt)
			exit(1);
	}
	r->rtt[r->nrtt++] = (double)(t - sent) / 1e6;
}

static void send_one(struct bconn *c)
{
	struct run *r = c->r;
	int thing = c->things[c->rr++ % c->nthings];
	uint64_t seq = r->seq++;
	char topic[96], body[192];
	snprintf(topic, sizeof topic, "$aws/things/bench-%05d/shadow/update", thing);
	int n = snprintf(body, sizeof body,
			 "{\"state\":{\"reported\":{\"seq\":%" PRIu64 ",\"temp\":%d.%d,\"ok\":true}},\"clientToken\":\"b%" PRIu64 "\"}",
			 seq, 18 + (int)(seq % 9), (int)(seq % 10), seq);
	int64_t t = now_ns();
	r->sent_ns[seq & (RING - 1)] = t;
	if (mosquitto_publish_v5(c->m, NULL, topic, n, body, 1, false, NULL) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bench_shadow: publish failed\n");
		exit(1);
	}
	c->outstanding++;
	if (t >= r->t_measure && t < r->t_end)
		r->sent_m++;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const struct run *r, double p)
{
	if (!r->nrtt)
		return -1;
	size_t i = (size_t)(p * (double)r->nrtt);
	return r->rtt[i >= r->nrtt ? r->nrtt - 1 : i];
}

/* One pass over every connection: poll, then read, write and keep alive. */
static void drive(struct run *r, struct pollfd *pfd, int timeout_ms)
{
	for (int i = 0; i < r->nconns; i++)
		pfd[i] = (struct pollfd){.fd = mosquitto_socket(r->c[i].m),
					 .events = (short)(POLLIN | (mosquitto_want_write(r->c[i].m) ? POLLOUT : 0))};
	if (poll(pfd, (nfds_t)r->nconns, timeout_ms) < 0 && errno != EINTR)
		exit(1);
	for (int i = 0; i < r->nconns; i++) {
		struct mosquitto *m = r->c[i].m;
		if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
			for (int k = 0; k < 4096; k++) { /* everything TLS read ahead, too */
				if (mosquitto_loop_read(m, 1) != MOSQ_ERR_SUCCESS) {
					fprintf(stderr, "bench_shadow: connection %d lost\n", i);
					exit(1);
				}
				SSL *ssl = mosquitto_ssl_get(m);
				if (!(ssl && SSL_has_pending(ssl)))
					break;
			}
		}
		if (mosquitto_want_write(m))
			mosquitto_loop_write(m, 1);
		mosquitto_loop_misc(m);
	}
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"host", 1, NULL, 'h'},	   {"port", 1, NULL, 'p'},     {"cafile", 1, NULL, 'a'},   {"cert", 1, NULL, 'c'},
		{"key", 1, NULL, 'k'},	   {"things", 1, NULL, 'n'},   {"connections", 1, NULL, 'C'},
		{"rate", 1, NULL, 'r'},	   {"max-rate", 0, NULL, 'M'}, {"inflight", 1, NULL, 'i'},
		{"duration", 1, NULL, 'd'}, {"warmup", 1, NULL, 'w'},  {NULL, 0, NULL, 0},
	};
	struct run run = {.host = "127.0.0.1", .port = 8883, .things = 1000, .nconns = 4, .inflight = 512, .rate = 5000,
			 .duration_s = 10, .warmup_s = 2};
	struct run *r = &run;
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'h': r->host = optarg; break;
		case 'p': r->port = atoi(optarg); break;
		case 'a': r->cafile = optarg; break;
		case 'c': r->cert = optarg; break;
		case 'k': r->key = optarg; break;
		case 'n': r->things = atoi(optarg); break;
		case 'C': r->nconns = atoi(optarg); break;
		case 'r': r->rate = atof(optarg); break;
		case 'M': r->max_rate = 1; break;
		case 'i': r->inflight = atoi(optarg); break;
		case 'd': r->duration_s = atof(optarg); break;
		case 'w': r->warmup_s = atof(optarg); break;
		default:
			fprintf(stderr, "usage: bench_shadow --cafile CA --cert CRT --key KEY [--port P] [--things N]\n"
					"       [--connections K] (--rate R | --max-rate [--inflight M]) [--duration S] [--warmup S]\n");
			return 2;
		}
	}
	if (!r->cafile || !r->cert || !r->key || r->things < 1 || r->nconns < 1 || r->nconns > r->things || r->rate <= 0) {
		fprintf(stderr, "bench_shadow: --cafile, --cert and --key are required; things >= connections >= 1\n");
		return 2;
	}
	mosquitto_lib_init();
	r->sent_ns = calloc(RING, sizeof *r->sent_ns);
	r->c = calloc((size_t)r->nconns, sizeof *r->c);
	struct pollfd *pfd = calloc((size_t)r->nconns, sizeof *pfd);
	if (!r->sent_ns || !r->c || !pfd)
		return 1;
	for (int i = 0; i < r->nconns; i++) {
		struct bconn *c = &r->c[i];
		char id[64];
		c->idx = i;
		c->r = r;
		c->things = calloc((size_t)(r->things / r->nconns + 1), sizeof *c->things);
		for (int t = i; t < r->things; t += r->nconns)
			c->things[c->nthings++] = t;
		snprintf(id, sizeof id, "bench-shadow-%d", i);
		c->m = mosquitto_new(id, true, c);
		mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
		mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
		if (mosquitto_tls_set(c->m, r->cafile, NULL, r->cert, r->key, NULL) != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "bench_shadow: TLS files\n");
			return 1;
		}
		mosquitto_tls_opts_set(c->m, 1, "tlsv1.2", NULL);
		mosquitto_connect_v5_callback_set(c->m, on_connect);
		mosquitto_subscribe_v5_callback_set(c->m, on_subscribe);
		mosquitto_message_v5_callback_set(c->m, on_message);
		if (mosquitto_connect_bind_v5(c->m, r->host, r->port, 60, NULL, NULL) != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "bench_shadow: cannot connect to %s:%d\n", r->host, r->port);
			return 3;
		}
	}
	int64_t deadline = now_ns() + 20000000000LL;
	for (;;) { /* every connection up and every subscription granted */
		int ready = 1;
		for (int i = 0; i < r->nconns; i++)
			ready &= r->c[i].connected && r->c[i].subs_left == 0;
		if (ready)
			break;
		if (now_ns() > deadline) {
			fprintf(stderr, "bench_shadow: not connected and subscribed within 20 s\n");
			return 3;
		}
		drive(r, pfd, 10);
	}
	int64_t t0 = now_ns();
	r->t_measure = t0 + (int64_t)(r->warmup_s * 1e9);
	r->t_end = r->t_measure + (int64_t)(r->duration_s * 1e9);
	uint64_t budget = 0;
	int rr = 0;
	while (now_ns() < r->t_end) {
		int64_t t = now_ns();
		if (r->max_rate) {
			for (int i = 0; i < r->nconns; i++)
				while (r->c[i].outstanding < r->inflight)
					send_one(&r->c[i]);
		} else {
			uint64_t due = (uint64_t)((double)(t - t0) / 1e9 * r->rate);
			for (; budget < due; budget++) {
				send_one(&r->c[rr]);
				rr = (rr + 1) % r->nconns;
			}
		}
		drive(r, pfd, 1);
	}
	int64_t drain = now_ns() + 10000000000LL;
	while (r->answered < r->seq && now_ns() < drain)
		drive(r, pfd, 5);
	qsort(r->rtt, r->nrtt, sizeof *r->rtt, cmp);
	double rate = (double)r->accepted_m / r->duration_s;
	printf("{\"name\":\"shadow_updates\",\"things\":%d,\"connections\":%d,\"mode\":\"%s\",\"rate_offered\":%.0f,"
	       "\"sent\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"rejected\":%" PRIu64 ",\"rejected_all\":%" PRIu64
	       ",\"updates_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
	       "\"unanswered\":%" PRIu64 ",\"duration_s\":%.1f}\n",
	       r->things, r->nconns, r->max_rate ? "max" : "rate", r->max_rate ? 0 : r->rate, r->sent_m, r->accepted_m,
	       r->rejected_m, r->rejected_all, rate, pct(r, 0.5), pct(r, 0.9), pct(r, 0.99), r->nrtt ? r->rtt[r->nrtt - 1] : -1,
	       r->seq - r->answered, r->duration_s);
	for (int i = 0; i < r->nconns; i++) {
		mosquitto_disconnect_v5(r->c[i].m, 0, NULL);
		mosquitto_destroy(r->c[i].m);
		free(r->c[i].things);
	}
	free(r->c);
	free(pfd);
	free(r->sent_ns);
	free(r->rtt);
	mosquitto_lib_cleanup();
	return r->seq == r->answered ? 0 : 4;
}
