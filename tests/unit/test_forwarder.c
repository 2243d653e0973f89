/*
 * test_forwarder.c — backoff maths, and the forwarder against a scripted sink: partial
 * failures retry only the failed records, poison records are dead-lettered without
 * blocking the rest, every good record is delivered exactly once, priorities go first;
 * a probed sink ends its backoff when its endpoint returns (and only then); the probe
 * itself against a real loopback listener.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "store/forwarder.h"
#include "sinks/probe.h"
#include "test_util.h"

#define N 300

/* the scripted sink: records whose "i" is divisible by 7 fail once, "poison" ones are
 * refused for good; it counts how often each record was offered and accepted */
struct sink {
	pthread_mutex_t mu;
	int offered[N + 1], accepted[N + 1];
	int first_prio_seen; /* i of the first record ever offered */
	int calls;
	int64_t max_age_ms;     /* the sink's batch age threshold (0: none) */
	size_t max_records;     /* per batch (0: 50) */
	int64_t first_send_ms;  /* wall clock of the first send() */
	int down;               /* probe test: sends fail and the probe is refused while set */
	int probe_up_always;    /* probe test: the probe always accepts (an endpoint up but failing) */
	int probes_down;        /* probes answered "refused" */
	int64_t up_ms;          /* monotonic: when the endpoint came back */
	int64_t resumed_ms;     /* monotonic: the first successful send after up_ms */
	int warmup_fails;       /* probe test: sends still failing after the endpoint returned */
	int return_in_send;     /* probe test: the endpoint returns during send number N (which
				 * fails anyway, as a request hung on a dead connection does) */
	int hang;               /* sends hang until the forwarder abandons them (a black hole) */
	const _Atomic int *abandon; /* sink_env's, kept by t_open */
	int abandoned;          /* sends that ended because of it */
};
static struct sink script;

static sink *t_open(const void *opts, const sink_env *env, sink_limits *lim, char *err, size_t errlen)
{
	lim->max_records = script.max_records ? script.max_records : 50;
	lim->max_bytes = 1 << 20;
	lim->max_age_ms = script.max_age_ms;
	script.abandon = env->abandon;
	return &script;
}

/* A send into a black hole: returns only when the forwarder abandons it. */
static int hang_until_abandoned(sink *s, char *err, size_t errlen)
{
	while (!atomic_load(s->abandon))
		usleep(1000);
	pthread_mutex_lock(&s->mu);
	s->abandoned++;
	pthread_mutex_unlock(&s->mu);
	snprintf(err, errlen, "abandoned");
	return TG_ENET;
}

static int t_send(sink *s, const sink_record *recs, size_t n, sink_status *res, int64_t now, char *err, size_t errlen)
{
	if (s->hang)
		return hang_until_abandoned(s, err, errlen);
	pthread_mutex_lock(&s->mu);
	if (s->calls++ == 0)
		s->first_send_ms = tg_wall_ms();
	for (size_t k = 0; k < n; k++) {
		json_t *o = json_loadb(recs[k].data, recs[k].len, 0, NULL);
		int i = (int)json_integer_value(json_object_get(o, "i"));
		int poison = json_is_true(json_object_get(o, "poison"));
		json_decref(o);
		if (s->first_prio_seen < 0)
			s->first_prio_seen = i;
		s->offered[i]++;
		if (poison) {
			res[k] = SINK_POISON;
			snprintf(err, errlen, "400 ValidationException");
		} else if (i % 7 == 0 && s->offered[i] == 1) {
			res[k] = SINK_RETRY;
		} else {
			res[k] = SINK_OK;
			s->accepted[i]++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void t_close(sink *s) {}

/* the endpoint of the probe tests: every send fails while down; one that goes through after
 * the endpoint's return stamps resumed_ms */
static int p_send(sink *s, const sink_record *recs, size_t n, sink_status *res, int64_t now, char *err, size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	s->calls++;
	int down = s->down;
	if (down && s->return_in_send && s->calls >= s->return_in_send && s->probes_down > 0) {
		s->return_in_send = 0;
		s->down = 0;
		s->up_ms = tg_mono_ms();
	}
	if (!down && s->warmup_fails > 0) { /* accepting again, not serving yet */
		s->warmup_fails--;
		down = 1;
	}
	if (!down && !s->resumed_ms)
		s->resumed_ms = tg_mono_ms();
	for (size_t k = 0; k < n; k++)
		res[k] = down ? SINK_RETRY : SINK_OK;
	pthread_mutex_unlock(&s->mu);
	if (down)
		snprintf(err, errlen, "connection refused");
	return down ? TG_ENET : 0;
}

static int p_probe(sink *s, int timeout_ms)
{
	pthread_mutex_lock(&s->mu);
	int up = s->probe_up_always || !s->down;
	if (!up)
		s->probes_down++;
	pthread_mutex_unlock(&s->mu);
	return up ? 0 : TG_ENET;
}

static const config_option no_options[] = {{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL}};
static const sink_ops test_ops = {
	.conf = {.type = "script", .options = no_options, .options_size = 0}, .open = t_open, .send = t_send, .close = t_close};

static const sink_ops probed_ops = {.conf = {.type = "probed", .options = no_options, .options_size = 0},
				    .open = t_open, .send = p_send, .close = t_close, .probe = p_probe};

static void test_backoff(void **state)
{
	assert_int_equal(forwarder_backoff_ms(0, 100, 10000, 0.0), 0);
	assert_int_equal(forwarder_backoff_ms(0, 100, 10000, 0.999999), 99);
	assert_int_equal(forwarder_backoff_ms(3, 100, 10000, 0.5), 400);
	assert_int_equal(forwarder_backoff_ms(20, 100, 10000, 0.5), 5000); /* capped */
	assert_int_equal(forwarder_backoff_ms(100, 100, 10000, 0.999), 9990);
	for (int a = 0; a < 40; a++) {
		int64_t v = forwarder_backoff_ms(a, 250, 30000, 0.999999);
		assert_true(v >= 0 && v <= 30000);
	}
}

/* A fresh script and an outbox in a new temporary folder (*dir, freed by fixture_end). */
static outbox *fixture_start(char **dir)
{
	char path[4096];
	*dir = tu_tmpdir();
	snprintf(path, sizeof path, "%s/ob.db", *dir);
	memset(&script, 0, sizeof script);
	pthread_mutex_init(&script.mu, NULL);
	script.first_prio_seen = -1;
	outbox_opts oo = {.commit_interval_ms = 1, .commit_max_records = 1000, .gateway_id = "gw"};
	outbox *ob = outbox_open(path, &oo, NULL, 0);
	assert_non_null(ob);
	return ob;
}

static void fixture_end(outbox *ob, char *dir)
{
	outbox_close(ob);
	tu_rmtree(dir);
	free(dir);
	pthread_mutex_destroy(&script.mu);
}

static void test_partial_failure_and_poison(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	const char *sinks[] = {"t"};
	for (int i = 1; i <= N; i++) {
		json_t *o = json_pack("{s:i, s:b}", "i", i, "poison", i == 50 || i == 51);
		/* the last record is an alert: it must be offered first */
		assert_int_equal(outbox_append(ob, sinks, 1, i == N ? OUTBOX_PRIO_ALERT : OUTBOX_PRIO_BULK, "telemetry",
					       "k", 1000 + i, o, NULL),
				 0);
		json_decref(o);
	}
	assert_int_equal(outbox_commit(ob), 0);

	tg_sink_conf sc = {.name = "t", .type = &test_ops.conf, .retry_base_ms = 1, .retry_cap_ms = 5, .priority_first = 1};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	forwarder_notify(fw);
	outbox_counters *c = outbox_counters_of(ob);
	/* this thread plays the ingest thread: its ticks delete what the forwarder delivered */
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < 10000; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_dead), 2);
	assert_int_equal(atomic_load(&st->records_ok), N - 2);
	forwarder_stop(fw, 0);

	assert_int_equal(atomic_load(&c->rows), 0);
	assert_int_equal(script.first_prio_seen, N);
	for (int i = 1; i <= N; i++) {
		if (i == 50 || i == 51) {
			assert_int_equal(script.accepted[i], 0);
			assert_int_equal(script.offered[i], 1); /* dead-lettered at once, never retried */
		} else {
			assert_int_equal(script.accepted[i], 1); /* exactly once */
			/* only the failed ones were offered again */
			assert_int_equal(script.offered[i], i % 7 == 0 ? 2 : 1);
		}
	}
	assert_int_equal(atomic_load(&c->dead), 2);
	fixture_end(ob, dir);
}

/* A sink that waits for its batch to age is not woken into reading the whole pending batch
 * on every commit: with commits every 5 ms for 1.2 s and a 1 s age, the forwarder reads the
 * outbox a few dozen times, not hundreds, sends the first batch when it is due, and
 * delivers everything. */
static void test_linger_reads(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.max_age_ms = 1000;
	script.max_records = 1000;
	tg_sink_conf sc = {.name = "t", .type = &test_ops.conf, .retry_base_ms = 1, .retry_cap_ms = 5, .priority_first = 1,
			   .batch_max_records = 1000};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	const char *sinks[] = {"t"};
	int64_t t0 = tg_wall_ms();
	for (int i = 1; i <= 240; i++) { /* i % 7 == 0 fails once, and is sent again */
		json_t *o = json_pack("{s:i}", "i", i);
		assert_int_equal(outbox_append(ob, sinks, 1, OUTBOX_PRIO_BULK, "telemetry", "k", tg_wall_ms(), o, NULL), 0);
		json_decref(o);
		assert_int_equal(outbox_commit(ob), 0);
		forwarder_notify(fw);
		usleep(5000);
	}
	outbox_counters *c = outbox_counters_of(ob);
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < 10000; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_ok) + atomic_load(&st->records_retry), 240 + 240 / 7);
	assert_int_equal(atomic_load(&c->rows), 0);
	uint64_t reads = atomic_load(&st->reads);
	forwarder_stop(fw, 0);
	assert_true(script.first_send_ms - t0 >= 950);
	if (reads > 60)
		fail_msg("%llu outbox reads for a 1 s linger with a commit every 5 ms", (unsigned long long)reads);
	fixture_end(ob, dir);
}

static int script_get(int *field)
{
	pthread_mutex_lock(&script.mu);
	int v = *field;
	pthread_mutex_unlock(&script.mu);
	return v;
}

/* One record queued for the sink "t". */
static void queue_one(outbox *ob)
{
	const char *sinks[] = {"t"};
	json_t *o = json_pack("{s:i}", "i", 1);
	assert_int_equal(outbox_append(ob, sinks, 1, OUTBOX_PRIO_BULK, "telemetry", "k", tg_wall_ms(), o, NULL), 0);
	json_decref(o);
	assert_int_equal(outbox_commit(ob), 0);
}

/* The probe tests' set-up: one record queued for the probed sink "t", and its forwarder
 * started with the given backoff (sc and cfg are the caller's: the forwarder borrows them). */
static forwarder *start_probed(outbox *ob, tg_sink_conf *sc, tg_config *cfg, int64_t retry_ms)
{
	queue_one(ob);
	*sc = (tg_sink_conf){.name = "t", .type = &probed_ops.conf, .retry_base_ms = retry_ms, .retry_cap_ms = retry_ms};
	*cfg = (tg_config){.gateway_id = "gw", .sinks = sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, cfg, err, sizeof err);
	assert_non_null(fw);
	return fw;
}

/* Wait until a probe has seen the endpoint down (so a long backoff is in progress). */
static void wait_probed_down(void)
{
	for (int waited = 0; script_get(&script.probes_down) == 0 && waited < 20000; waited += 10)
		usleep(10000);
	assert_true(script_get(&script.probes_down) > 0);
}

/* The endpoint comes back (stamping up_ms); then wait up to limit_ms for the outbox to
 * drain through the forwarder. */
static void endpoint_returns_and_drains(outbox *ob, int limit_ms)
{
	pthread_mutex_lock(&script.mu);
	script.down = 0;
	script.up_ms = tg_mono_ms();
	pthread_mutex_unlock(&script.mu);
	outbox_counters *c = outbox_counters_of(ob);
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < limit_ms; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	assert_int_equal(atomic_load(&c->rows), 0);
}

/* Issue 20 gap 2: a sink backed off with a 60 s retry_cap resumes within a few probe
 * intervals of its endpoint's return, not when the backoff runs out. The endpoint stays
 * down until a probe has seen it down (so the backoff in progress is a long one), then
 * comes back. */
static void test_probe_ends_backoff_when_endpoint_returns(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.down = 1;
	tg_sink_conf sc;
	tg_config cfg;
	forwarder *fw = start_probed(ob, &sc, &cfg, 60000);
	wait_probed_down();
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	int64_t backoff_left = atomic_load(&st->backoff_until_ms) - tg_wall_ms();
	endpoint_returns_and_drains(ob, 20000);
	assert_int_equal(atomic_load(&st->probe_recoveries), 1);
	assert_int_equal(atomic_load(&st->records_ok), 1);
	forwarder_stop(fw, 0);
	int64_t took = script.resumed_ms - script.up_ms;
	print_message("backoff left at the return: %lld ms; resumed after %lld ms\n", (long long)backoff_left,
		      (long long)took);
	/* a few probe intervals, on a loaded machine; the backoff in progress was up to 60 s */
	assert_true(took >= 0 && took < 5000);
	fixture_end(ob, dir);
}

/* An endpoint that comes back still warming up (kinesalite loading its streams after a
 * restart): the probe ends the 60 s backoff, the next three sends fail anyway, and the sink
 * still resumes within seconds, since the failures right after a return back off at most
 * FORWARDER_RECOVER_MAX_MS instead of going back to the backoff reached during the outage. */
static void test_endpoint_back_but_warming_up(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.down = 1;
	script.warmup_fails = 3;
	tg_sink_conf sc;
	tg_config cfg;
	forwarder *fw = start_probed(ob, &sc, &cfg, 60000);
	wait_probed_down();
	endpoint_returns_and_drains(ob, 30000);
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_ok), 1);
	assert_int_equal(script_get(&script.warmup_fails), 0);
	forwarder_stop(fw, 0);
	int64_t took = script.resumed_ms - script.up_ms;
	print_message("resumed %lld ms after the endpoint returned, three failed sends in between\n", (long long)took);
	/* three sends at most a second apart after the return; the backoff without the
	 * recovery window was up to 60 s per failure */
	assert_true(took >= 0 && took < 10000);
	fixture_end(ob, dir);
}

/* The endpoint returns while a send is under way, and that send fails anyway (a request
 * hung on a black-holed connection times out after the black hole ended): the down the
 * probe saw in an earlier backoff still counts, so the next backoff (up to 60 s by then)
 * ends on the first probe that gets an answer. */
static void test_endpoint_returns_during_a_send(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.down = 1;
	script.return_in_send = 10; /* the backoff after the 10th send: full jitter up to 51 s */
	queue_one(ob);
	tg_sink_conf sc = {.name = "t", .type = &probed_ops.conf, .retry_base_ms = 50, .retry_cap_ms = 60000};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	outbox_counters *c = outbox_counters_of(ob);
	for (int waited = 0; atomic_load(&c->rows) > 0 && waited < 120000; waited += 5) {
		usleep(5000);
		assert_true(outbox_tick(ob, tg_wall_ms()) >= 0);
	}
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	assert_int_equal(atomic_load(&st->records_ok), 1);
	/* the probe ended the backoff, or the backoff (full jitter) drew less than a probe
	 * interval and ended first */
	unsigned long long recoveries = atomic_load(&st->probe_recoveries);
	assert_true(recoveries <= 1);
	forwarder_stop(fw, 0);
	int64_t took = script.resumed_ms - script.up_ms;
	print_message("returned during send %d; resumed %lld ms later (probe recoveries %llu)\n", script.calls - 1,
		      (long long)took, recoveries);
	/* a probe interval and its answer; without the kept down, the rest of a backoff drawn
	 * from up to 51 s */
	assert_true(took >= 0 && took < 3000);
	fixture_end(ob, dir);
}

/* A stop while a send hangs (an uplink that accepts and never answers): the stop takes its
 * drain budget, then abandons the send (sink_env.abandon), instead of waiting for whatever
 * timeout the sink has. The record stays in the outbox for the next start. */
static void test_stop_abandons_a_hung_send(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.hang = 1;
	queue_one(ob);
	tg_sink_conf sc = {.name = "t", .type = &test_ops.conf, .retry_base_ms = 100, .retry_cap_ms = 100};
	tg_config cfg = {.gateway_id = "gw", .sinks = &sc, .nsinks = 1};
	char err[256];
	forwarder *fw = forwarder_start(ob, &cfg, err, sizeof err);
	assert_non_null(fw);
	usleep(100000); /* the send is under way */
	int64_t t0 = tg_mono_ms();
	forwarder_stop(fw, 300);
	int64_t took = tg_mono_ms() - t0;
	print_message("stop took %lld ms with a 300 ms drain budget\n", (long long)took);
	assert_int_equal(script.abandoned, 1);
	assert_true(took >= 300 && took < 5000);
	assert_int_equal(atomic_load(&outbox_counters_of(ob)->rows), 1);
	fixture_end(ob, dir);
}

/* An endpoint that answers but fails every request (a 500, a missing stream) is not
 * "back": the probe never ends its backoff, so it is not hammered. */
static void test_probe_keeps_backoff_when_endpoint_accepts_but_fails(void **state)
{
	char *dir;
	outbox *ob = fixture_start(&dir);
	script.down = 1;
	script.probe_up_always = 1;
	tg_sink_conf sc;
	tg_config cfg;
	forwarder *fw = start_probed(ob, &sc, &cfg, 400);
	forwarder_sink_stats *st = forwarder_stats(fw, 0);
	for (int waited = 0; atomic_load(&st->probes) < 8 && waited < 20000; waited += 10)
		usleep(10000);
	assert_true(atomic_load(&st->probes) >= 8);
	assert_int_equal(atomic_load(&st->probe_recoveries), 0);
	assert_int_equal(atomic_load(&st->records_ok), 0);
	forwarder_stop(fw, 0);
	fixture_end(ob, dir);
}

/* A loopback endpoint for the probe: answers each connection with the given bytes (none:
 * closes it at once) after reading the request, for `count` connections. */
struct answerer {
	int fd;
	int count;
	const char *reply;
};

static void *answer_loop(void *arg)
{
	struct answerer *a = arg;
	for (int i = 0; i < a->count; i++) {
		int c = accept(a->fd, NULL, NULL);
		if (c < 0)
			break;
		char buf[512];
		ssize_t got = recv(c, buf, sizeof buf, 0);
		if (got > 0 && a->reply[0])
			(void)!send(c, a->reply, strlen(a->reply), MSG_NOSIGNAL);
		close(c);
	}
	return NULL;
}

static int listen_loopback(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* sink_probe_url against real loopback listeners: one that answers (an HTTP status line,
 * or a close as a TLS server gives a request line), one that accepts and never answers
 * (a black hole: down), a closed port (down); and the URL forms it understands. */
static void test_probe_url(void **state)
{
	char host[64], port[8];
	assert_int_equal(sink_probe_split("http://127.0.0.1:4567/x", host, sizeof host, port, sizeof port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "4567");
	assert_int_equal(sink_probe_split("https://kinesis.eu-west-1.amazonaws.com/", host, sizeof host, port,
					  sizeof port), 0);
	assert_string_equal(host, "kinesis.eu-west-1.amazonaws.com");
	assert_string_equal(port, "443");
	assert_int_equal(sink_probe_split("http://[::1]:80", host, sizeof host, port, sizeof port), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "80");
	assert_int_equal(sink_probe_split("HTTP://h", host, sizeof host, port, sizeof port), 0);
	assert_string_equal(port, "80");
	assert_true(sink_probe_split("ftp://h", host, sizeof host, port, sizeof port) < 0);
	assert_true(sink_probe_split("http://h:12x", host, sizeof host, port, sizeof port) < 0);
	assert_true(sink_probe_split("http://", host, sizeof host, port, sizeof port) < 0);
	assert_true(sink_probe_split("127.0.0.1:80", host, sizeof host, port, sizeof port) < 0);

	int lport;
	int fd = listen_loopback(&lport);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/", lport);
	struct answerer ans = {.fd = fd, .count = 2, .reply = "HTTP/1.1 403 Forbidden\r\n\r\n"};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, answer_loop, &ans), 0);
	assert_int_equal(sink_probe_url(url, 2000), 0);
	ans.reply = ""; /* the second one only closes: a live peer too */
	assert_int_equal(sink_probe_url(url, 2000), 0);
	pthread_join(th, NULL);
	/* the kernel still accepts into the backlog, nobody reads or answers: a black hole,
	 * and the probe gives up within its budget */
	int64_t t0 = tg_mono_ms();
	assert_int_equal(sink_probe_url(url, 300), TG_ENET);
	int64_t took = tg_mono_ms() - t0;
	assert_true(took >= 250 && took < 2000);
	close(fd); /* nothing listens there now: refused */
	assert_int_equal(sink_probe_url(url, 1000), TG_ENET);
	assert_int_equal(sink_probe_url("gopher://x", 1000), TG_EINVAL);
}

/* What /healthz says of a sink (issue 12 item 4): idle is not down, a short failure is a
 * retry, a long one or an old backlog is degraded, each threshold can be switched off. */
static void test_health_judgement(void **state)
{
	forwarder_sink_stats st;
	memset(&st, 0, sizeof st);
	tg_sink_conf conf = {.health_failing_ms = 60000, .health_max_age_ms = 300000};
	forwarder_health h;
	const int64_t now = 1800000000000;
	forwarder_health_judge(&st, &conf, 0, now, &h); /* fresh: nothing sent, nothing failed */
	assert_string_equal(h.state, "idle");
	assert_true(h.healthy);
	atomic_store(&st.last_ok_ms, now - 5000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_string_equal(h.state, "ok");
	assert_true(h.healthy);
	atomic_store(&st.failing_since_ms, now - 59000); /* failing, within the threshold */
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_string_equal(h.state, "failing");
	assert_true(h.healthy);
	assert_int_equal(h.failing_ms, 59000);
	atomic_store(&st.failing_since_ms, now - 61000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_false(h.healthy);
	assert_non_null(strstr(h.why, "sends failing for 61 s"));
	conf.health_failing_ms = 0; /* failures alone never degrade */
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy);
	/* the oldest undelivered record, beyond the sink's own batching age */
	atomic_store(&st.failing_since_ms, 0);
	st.batch_age_ms = 60000;
	atomic_store(&st.oldest_ms, now - 350000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy); /* 350 s < 300 s + 60 s of batching */
	assert_int_equal(h.oldest_age_ms, 350000);
	atomic_store(&st.oldest_ms, now - 361000);
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_false(h.healthy);
	assert_non_null(strstr(h.why, "oldest undelivered record waiting 361 s"));
	forwarder_health_judge(&st, &conf, 0, now, &h); /* delivered since: nothing is waiting */
	assert_true(h.healthy);
	assert_int_equal(h.oldest_age_ms, 0);
	conf.health_max_age_ms = 0;
	forwarder_health_judge(&st, &conf, 3, now, &h);
	assert_true(h.healthy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_partial_failure_and_poison),
		cmocka_unit_test(test_linger_reads),
		cmocka_unit_test(test_health_judgement),
		cmocka_unit_test(test_probe_ends_backoff_when_endpoint_returns),
		cmocka_unit_test(test_probe_keeps_backoff_when_endpoint_accepts_but_fails),
		cmocka_unit_test(test_endpoint_back_but_warming_up),
		cmocka_unit_test(test_endpoint_returns_during_a_send),
		cmocka_unit_test(test_stop_abandons_a_hung_send),
		cmocka_unit_test(test_probe_url),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
