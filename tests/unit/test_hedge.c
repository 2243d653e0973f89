/*
 * test_hedge.c — hedge.h through the webhook sink against a scripted loopback peer: a POST
 * hung on a connection that a black hole swallowed is sent again on a new connection once
 * the endpoint answers probes again (instead of waiting out its 30 s timeout), a slow but
 * answering endpoint is never cut short, and a stop's abandon flag ends a hung POST at once.
 * The AWS sinks share the same code; their end-to-end test is
 * tests/integration/test_blackhole.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/err.h"
#include "sinks/registry.h"
#include "store/sink.h"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the peer ---------------------------------------------------------------------------- */

enum peer_mode {
	PEER_HOLE_THEN_ANSWER, /* silent until answer_at_ms; then new connections are answered */
	PEER_SLOW,	       /* every connection answered, POSTs after slow_ms */
	PEER_HOLE,	       /* every connection held, never answered */
};

typedef struct peer {
	int lfd, port;
	enum peer_mode mode;
	int64_t answer_at_ms, slow_ms;
	atomic_int stop;
	atomic_int posts_answered; /* POSTs that got a 200 */
	atomic_int connections;
	atomic_int handlers; /* connections being answered, each on its own thread */
	int held[64];
	int nheld;
	pthread_t th;
} peer;

/* Read what the client sends until the headers' end (the small body comes with them). */
static int read_request(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 2000) <= 0)
			return -1;
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			return 0;
	}
	return 0;
}

typedef struct conn {
	peer *p;
	int fd;
} conn;

/* One answered connection (its own thread, so a slow POST does not hold the probes up). */
static void *conn_main(void *ud)
{
	conn *c = ud;
	char req[8192];
	if (read_request(c->fd, req, sizeof req) == 0) {
		int post = strncmp(req, "POST ", 5) == 0;
		if (post && c->p->mode == PEER_SLOW)
			usleep((useconds_t)c->p->slow_ms * 1000);
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		if (post) /* counted before the client can see the answer */
			atomic_fetch_add(&c->p->posts_answered, 1);
		if (write(c->fd, ok, sizeof ok - 1) != (ssize_t)(sizeof ok - 1) && post)
			atomic_fetch_sub(&c->p->posts_answered, 1);
	}
	peer *p = c->p;
	close(c->fd);
	free(c);
	atomic_fetch_sub(&p->handlers, 1);
	return NULL;
}

static void *peer_main(void *ud)
{
	peer *p = ud;
	while (!atomic_load(&p->stop)) {
		struct pollfd pl = {.fd = p->lfd, .events = POLLIN};
		if (poll(&pl, 1, 20) <= 0)
			continue;
		int fd = accept(p->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		atomic_fetch_add(&p->connections, 1);
		int answer = p->mode == PEER_SLOW || (p->mode == PEER_HOLE_THEN_ANSWER && now_ms() >= p->answer_at_ms);
		if (!answer) {
			if (p->nheld < 64)
				p->held[p->nheld++] = fd; /* swallowed: open and silent for good */
			else
				close(fd);
			continue;
		}
		conn *c = malloc(sizeof *c);
		pthread_t th;
		if (!c) {
			close(fd);
			continue;
		}
		*c = (conn){.p = p, .fd = fd};
		atomic_fetch_add(&p->handlers, 1);
		if (pthread_create(&th, NULL, conn_main, c) != 0) {
			atomic_fetch_sub(&p->handlers, 1);
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(th);
	}
	return NULL;
}

static void peer_start(peer *p, enum peer_mode mode, int64_t answer_at_ms, int64_t slow_ms)
{
	memset(p, 0, sizeof *p);
	p->mode = mode;
	p->answer_at_ms = answer_at_ms;
	p->slow_ms = slow_ms;
	p->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(p->lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t al = sizeof a;
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &al), 0);
	p->port = ntohs(a.sin_port);
	assert_int_equal(listen(p->lfd, 64), 0);
	assert_int_equal(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_stop(peer *p)
{
	atomic_store(&p->stop, 1);
	pthread_join(p->th, NULL);
	while (atomic_load(&p->handlers) > 0)
		usleep(1000);
	for (int i = 0; i < p->nheld; i++)
		close(p->held[i]);
	close(p->lfd);
}

/* ---- the sink ---------------------------------------------------------------------------- */

typedef struct hook {
	const sink_ops *ops;
	void *opts;
	sink *s;
	atomic_int abandon;
	sink_env env;
	char url[128], rec[512];
} hook;

static void hook_open(hook *h, int port, const char *timeout)
{
	char err[256];
	memset(h, 0, sizeof *h);
	h->ops = sink_ops_find("webhook");
	assert_non_null(h->ops);
	h->opts = calloc(1, h->ops->conf.options_size);
	assert_non_null(h->opts);
	assert_int_equal(config_table_defaults(h->ops->conf.options, h->opts, err, sizeof err), 0);
	assert_int_equal(config_table_set(h->ops->conf.options, h->opts, "timeout", timeout, err, sizeof err), 0);
	h->env = (sink_env){.gateway_id = "gw", .abandon = &h->abandon};
	sink_limits lim = {0};
	h->s = h->ops->open(h->opts, &h->env, &lim, err, sizeof err);
	assert_non_null(h->s);
	snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d/hook", port);
	snprintf(h->rec, sizeof h->rec, "{\"url\":\"%s\",\"headers\":{},\"body\":{\"n\":1},\"msg_id\":\"gw-1\"}", h->url);
}

static sink_status hook_send(hook *h, char *err, size_t errlen)
{
	sink_record r = {.id = 1, .msg_id = "gw-1", .table = "webhooks", .pkey = "", .data = h->rec,
			 .len = strlen(h->rec)};
	sink_status st = SINK_RETRY;
	assert_int_equal(h->ops->send(h->s, &r, 1, &st, 0, err, errlen), 0);
	return st;
}

static void hook_close(hook *h)
{
	h->ops->close(h->s);
	config_table_free(h->ops->conf.options, h->opts);
	free(h->opts);
}

/* ---- tests ------------------------------------------------------------------------------- */

/* The POST's connection is swallowed by a black hole that lasts 1.5 s; probes during it find
 * the endpoint silent, the first probe after it finds it answering, so the POST goes again on
 * a new connection and is delivered about a second after the hole ends, not after 30 s. */
static void test_hung_post_sent_again_when_the_endpoint_returns(void **state)
{
	(void)state;
	peer p;
	int64_t t0 = now_ms();
	peer_start(&p, PEER_HOLE_THEN_ANSWER, t0 + 1500, 0);
	hook h;
	hook_open(&h, p.port, "30s");
	char err[512] = "";
	sink_status st = hook_send(&h, err, sizeof err);
	int64_t took = now_ms() - t0;
	assert_int_equal(st, SINK_OK);
	assert_int_equal(atomic_load(&p.posts_answered), 1);
	assert_true(took >= 1500);
	assert_true(took < 8000); /* the timeout is 30 s */
	hook_close(&h);
	peer_stop(&p);
}

/* A slow endpoint answers every probe: its 2.5 s answer is waited for, not sent twice. */
static void test_slow_endpoint_is_not_cut_short(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, PEER_SLOW, 0, 2500);
	hook h;
	hook_open(&h, p.port, "30s");
	char err[512] = "";
	int64_t t0 = now_ms();
	assert_int_equal(hook_send(&h, err, sizeof err), SINK_OK);
	assert_true(now_ms() - t0 >= 2500);
	assert_int_equal(atomic_load(&p.posts_answered), 1);
	hook_close(&h);
	peer_stop(&p);
}

static void *set_abandon_later(void *ud)
{
	hook *h = ud;
	usleep(300 * 1000);
	atomic_store(&h->abandon, 1);
	return NULL;
}

/* The daemon stops and its drain budget is over: a POST into a black hole ends at once. */
static void test_stop_abandons_a_hung_post(void **state)
{
	(void)state;
	peer p;
	peer_start(&p, PEER_HOLE, 0, 0);
	hook h;
	hook_open(&h, p.port, "30s");
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, set_abandon_later, &h), 0);
	char err[512] = "";
	int64_t t0 = now_ms();
	sink_status st = hook_send(&h, err, sizeof err);
	int64_t took = now_ms() - t0;
	pthread_join(th, NULL);
	assert_int_equal(st, SINK_RETRY);
	assert_non_null(strstr(err, "abandoned"));
	assert_true(took < 3000);
	assert_int_equal(atomic_load(&p.posts_answered), 0);
	hook_close(&h);
	peer_stop(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hung_post_sent_again_when_the_endpoint_returns),
		cmocka_unit_test(test_slow_endpoint_is_not_cut_short),
		cmocka_unit_test(test_stop_abandons_a_hung_post),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
