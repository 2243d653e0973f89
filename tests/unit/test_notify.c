/*
 * test_notify.c — the systemd notification module (gateway/ops/notify.c) against a real
 * AF_UNIX datagram socket standing in for systemd's: what READY=1, STATUS= and STOPPING=1
 * carry, when WATCHDOG=1 goes out (every half period of WATCHDOG_USEC, driven by an
 * injected clock, from the loop or from a wait outside it), that a stalled worker
 * withholds it and that it resumes after, and that
 * nothing is sent (nor fails) without NOTIFY_SOCKET or with another process's WATCHDOG_PID.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "ops/notify.h"
#include "test_util.h"

typedef struct fixture {
	char *dir;
	int fd;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	f->dir = tu_tmpdir();
	assert_non_null(f->dir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify.sock", f->dir);
	f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	setenv("WATCHDOG_USEC", "2000000", 1);
	unsetenv("WATCHDOG_PID");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	close(f->fd);
	tu_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* The next datagram, or "" if none is queued. */
static const char *next_msg(fixture *f, char *buf, size_t cap)
{
	ssize_t n = recv(f->fd, buf, cap - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* Count the WATCHDOG=1 datagrams queued (and drop every other one). */
static int count_pings(fixture *f)
{
	char buf[1024];
	int n = 0;
	for (;;) {
		const char *m = next_msg(f, buf, sizeof buf);
		if (!*m)
			return n;
		if (strcmp(m, "WATCHDOG=1") == 0)
			n++;
	}
}

static void test_ready_status_stopping(void **state)
{
	fixture *f = *state;
	char buf[1024];
	tg_notify *n = notify_new();
	assert_non_null(n);
	assert_true(notify_enabled(n));
	assert_int_equal(notify_watchdog_ms(n), 2000);
	assert_true(notify_ready(n, "ready: outbox open", 1000) > 0);
	assert_string_equal(next_msg(f, buf, sizeof buf), "READY=1\nSTATUS=ready: outbox open");

	/* the first tick reports the broker state at once, with the rate and the backlog */
	notify_sample s = {.accepted = 0, .backlog = 7, .broker_connected = 0, .broker = "127.0.0.1:8883"};
	assert_int_equal(notify_tick(n, 1100, &s), 0);
	assert_string_equal(next_msg(f, buf, sizeof buf),
			    "STATUS=waiting for the broker 127.0.0.1:8883; accepted 0.0 msg/s; outbox backlog 7 rows");
	assert_string_equal(next_msg(f, buf, sizeof buf), "");
	/* a change of broker state is reported at once; the rate is over the time since the last line */
	s.broker_connected = 1;
	s.accepted = 500;
	s.backlog = 3;
	notify_tick(n, 1600, &s);
	assert_string_equal(next_msg(f, buf, sizeof buf),
			    "STATUS=broker connected 127.0.0.1:8883; accepted 1000.0 msg/s; outbox backlog 3 rows");
	/* nothing new within the status period but the keep-alive */
	s.accepted = 600;
	assert_int_equal(notify_tick(n, 1900, &s), 0);
	assert_int_equal(notify_tick(n, 2000, &s), 1);
	assert_string_equal(next_msg(f, buf, sizeof buf), "WATCHDOG=1");
	assert_string_equal(next_msg(f, buf, sizeof buf), "");
	/* the periodic status line, 5 s after the last one */
	s.accepted = 1100;
	notify_tick(n, 6600, &s);
	assert_string_equal(next_msg(f, buf, sizeof buf),
			    "STATUS=broker connected 127.0.0.1:8883; accepted 120.0 msg/s; outbox backlog 3 rows");
	assert_true(notify_stopping(n, "stopping") > 0);
	while (strcmp(next_msg(f, buf, sizeof buf), "WATCHDOG=1") == 0)
		;
	assert_string_equal(buf, "STOPPING=1\nSTATUS=stopping");
	notify_free(n);
}

static void test_watchdog_withheld_while_stalled(void **state)
{
	fixture *f = *state;
	char buf[1024];
	tg_notify *n = notify_new();
	notify_ready(n, "ready", 0);
	notify_sample s = {.broker_connected = 1, .broker = "b:1", .stalled_what = "forwarder lake"};
	/* a turn every 100 ms for 10 s: a keep-alive every half period (1 s). The socket's
	 * queue is short (like systemd's, a sender blocks when it is full): read as we go. */
	int pings = 0;
	for (int64_t t = 100; t <= 10000; t += 100) {
		notify_tick(n, t, &s);
		pings += count_pings(f);
	}
	assert_int_equal(pings, 10);
	/* a forwarder silent for less than the period still counts as alive ... */
	s.stalled_ms = 1999;
	pings = 0;
	for (int64_t t = 10100; t <= 12000; t += 100) {
		notify_tick(n, t, &s);
		pings += count_pings(f);
	}
	assert_int_equal(pings, 2);
	/* ... from one period on, no keep-alive; the first turn of the stall says so (-1) */
	s.stalled_ms = 2000;
	assert_int_equal(notify_tick(n, 12100, &s), -1);
	const char *m = next_msg(f, buf, sizeof buf);
	assert_non_null(strstr(m, "STATUS=forwarder lake silent for 2.0 s, watchdog keep-alives withheld"));
	for (int64_t t = 12200; t <= 20000; t += 100) {
		s.stalled_ms += 100;
		assert_int_equal(notify_tick(n, t, &s), 0);
		assert_int_equal(count_pings(f), 0);
	}
	/* it recovers: keep-alives resume at once (the last one is overdue) */
	s.stalled_ms = 0;
	assert_int_equal(notify_tick(n, 20100, &s), 1);
	notify_free(n);
}

/* notify_ping: a bounded wait outside the loop (the start-up probe) keeps the watchdog fed */
static void test_ping_outside_the_loop(void **state)
{
	fixture *f = *state;
	char buf[256];
	tg_notify *n = notify_new();
	notify_ready(n, "ready", 0);
	next_msg(f, buf, sizeof buf);
	assert_int_equal(notify_ping(n, 500), 0);
	assert_int_equal(notify_ping(n, 1000), 1);
	assert_string_equal(next_msg(f, buf, sizeof buf), "WATCHDOG=1");
	assert_int_equal(notify_ping(n, 1999), 0);
	assert_int_equal(notify_ping(n, 2000), 1);
	assert_int_equal(count_pings(f), 1);
	notify_free(n);
	assert_int_equal(notify_ping(NULL, 5000), 0);
}

static void test_silent_without_systemd(void **state)
{
	fixture *f = *state;
	/* WATCHDOG_PID of another process: the watchdog is not ours */
	setenv("WATCHDOG_PID", "1", 1);
	tg_notify *n = notify_new();
	assert_true(notify_enabled(n));
	assert_int_equal(notify_watchdog_ms(n), 0);
	notify_sample s = {.broker = "b:1"};
	for (int64_t t = 0; t < 10000; t += 500) {
		assert_true(notify_tick(n, t, &s) <= 0);
		assert_int_equal(count_pings(f), 0);
	}
	notify_free(n);
	/* no NOTIFY_SOCKET: every call is a no-op */
	unsetenv("NOTIFY_SOCKET");
	n = notify_new();
	assert_false(notify_enabled(n));
	assert_int_equal(notify_ready(n, "x", 0), 0);
	assert_int_equal(notify_tick(n, 5000, &s), 0);
	assert_int_equal(notify_stopping(n, "x"), 0);
	notify_free(n);
	notify_free(NULL);
	char buf[64];
	assert_string_equal(next_msg(f, buf, sizeof buf), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ready_status_stopping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watchdog_withheld_while_stalled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_outside_the_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_silent_without_systemd, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
