/*
 * mqtt_io.c — see mqtt_io.h.
 *
 * Holding libmosquitto's writes above TLS. libmosquitto (2.0) writes every packet with its
 * own SSL_write() on the SSL object it owns, and offers no hook between the packet and the
 * TLS layer. This file defines SSL_write: the dynamic linker binds libmosquitto's calls
 * (and anybody else's in the process) to it, and it hands every call on to libssl's
 * SSL_write (found with dlsym(RTLD_NEXT)) unless the SSL object carries an mqtt_io in its
 * ex_data slot — only the daemon's broker connection, between mqtt_io_connected() and
 * mqtt_io_forget()/mqtt_io_unbuffer(). Those writes are appended to the connection's
 * plaintext hold and reported as written, so libmosquitto's queue is always empty and it
 * never waits for the socket; mqtt_io_flush() encrypts the hold in one SSL_write. TLS
 * sequence numbers are assigned when the bytes are encrypted, so holding plaintext keeps
 * the stream valid whatever libssl writes on its own meanwhile (alerts, nothing else in
 * TLS 1.2 without renegotiation).
 *
 * Why the daemon keeps its own bound on unacknowledged messages: Mosquitto 2.0.11's
 * db__message_delete_outgoing() (src/database.c), on every PUBACK, moves queued messages
 * into flight while the acknowledged message's *position* in the in-flight list is below
 * the receive maximum — 0 when acknowledgements come in order — so each in-order PUBACK
 * lets up to receive-maximum more messages go, and the client's receive maximum stops
 * bounding anything once messages queue. 2.0.12 fixed it (upstream "Various fixes around
 * inflight quota management"); Debian 12 ships 2.0.11.
 *
 * The process-wide state here is set once (pthread_once) and only read afterwards: libssl's
 * SSL_write and the ex_data index.
 */
#include "mqtt/mqtt_io.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"

typedef int (*ssl_write_fn)(SSL *, const void *, int);

static pthread_once_t io_once = PTHREAD_ONCE_INIT;
static ssl_write_fn io_real_write; /* set once */
static int io_exidx = -1;          /* set once */

static void io_init_once(void)
{
	void *sym = dlsym(RTLD_NEXT, "SSL_write");
	memcpy(&io_real_write, &sym, sizeof io_real_write);
	io_exidx = SSL_get_ex_new_index(0, "tidegate mqtt_io", NULL, NULL, NULL);
	if (!io_real_write) { /* cannot happen with a dynamically linked libssl */
		fprintf(stderr, "tidegate: libssl's SSL_write not found: %s\n", dlerror());
		abort();
	}
}

static int real_write(SSL *ssl, const void *buf, int num)
{
	pthread_once(&io_once, io_init_once);
	return io_real_write(ssl, buf, num);
}

int SSL_write(SSL *ssl, const void *buf, int num)
{
	pthread_once(&io_once, io_init_once);
	mqtt_io *io = ssl && io_exidx >= 0 ? SSL_get_ex_data(ssl, io_exidx) : NULL;
	if (!io || io->ssl != ssl || num <= 0)
		return io_real_write(ssl, buf, num);
	if (tg_buf_put(&io->acc, buf, (size_t)num))
		return -1; /* out of memory: libmosquitto drops the connection, the broker resends */
	return num;
}

void mqtt_io_init(mqtt_io *io, struct mosquitto *mosq, int max_unacked)
{
	*io = (mqtt_io){.mosq = mosq, .max_unacked = max_unacked > 0 ? max_unacked : 1000};
	pthread_once(&io_once, io_init_once);
}

void mqtt_io_free(mqtt_io *io)
{
	if (!io)
		return;
	mqtt_io_forget(io);
	tg_buf_free(&io->acc);
	tg_buf_free(&io->out);
}

static void publish_oldest(mqtt_io *io)
{
	int64_t oldest = 0;
	if (io->out_pending && io->out_mark > atomic_load(&io->acked))
		oldest = io->out_first_ms;
	else if (atomic_load(&io->received) > (io->out_pending ? io->out_mark : atomic_load(&io->acked)))
		oldest = io->acc_first_ms;
	atomic_store(&io->oldest_unacked_ms, oldest);
}

void mqtt_io_forget(mqtt_io *io)
{
	if (io->ssl && io_exidx >= 0 && mosquitto_ssl_get(io->mosq) == io->ssl)
		SSL_set_ex_data(io->ssl, io_exidx, NULL);
	io->ssl = NULL;
	io->acc.len = io->out.len = 0;
	io->out_pending = 0;
	/* what the hold acknowledged is gone with the connection: the broker delivers those
	 * messages again, so they are no longer ours to acknowledge */
	io->out_mark = atomic_load(&io->received);
	atomic_store(&io->acked, io->out_mark);
	atomic_store(&io->oldest_unacked_ms, 0);
}

void mqtt_io_connected(mqtt_io *io)
{
	mqtt_io_forget(io);
	SSL *ssl = mosquitto_ssl_get(io->mosq);
	if (!ssl)
		return; /* plain TCP: writes go straight to the socket */
	SSL_set_read_ahead(ssl, 1);
	if (io_exidx < 0 || !SSL_set_ex_data(ssl, io_exidx, io))
		return;
	io->ssl = ssl;
}

/* The hold, if it still belongs to the live connection. */
static SSL *live_ssl(mqtt_io *io)
{
	if (io->ssl && mosquitto_ssl_get(io->mosq) != io->ssl)
		mqtt_io_forget(io); /* cannot happen while the callers forget on every disconnect */
	return io->ssl;
}

void mqtt_io_received(mqtt_io *io, int64_t now_ms)
{
	uint64_t base = io->out_pending ? io->out_mark : atomic_load(&io->acked);
	uint64_t n = atomic_load(&io->received);
	if (n == base)
		io->acc_first_ms = now_ms; /* the first message whose PUBACK waits in acc */
	atomic_store(&io->received, n + 1);
	if (!io->ssl) /* unheld: libmosquitto wrote the PUBACK already */
		atomic_store(&io->acked, n + 1);
	publish_oldest(io);
}

uint64_t mqtt_io_unacked(const mqtt_io *io)
{
	uint64_t acked = atomic_load(&io->acked), received = atomic_load(&io->received);
	return received > acked ? received - acked : 0;
}

int mqtt_io_flush(mqtt_io *io)
{
	SSL *ssl = live_ssl(io);
	if (!ssl)
		return 0;
	int rc = 0;
	for (;;) {
		if (io->out_pending) {
			ERR_clear_error();
			/* the hold is bounded by the read-side bound, far below INT_MAX */
			int n = real_write(ssl, io->out.p, io->out.len > INT_MAX ? INT_MAX : (int)io->out.len);
			if (n <= 0) {
				int e = SSL_get_error(ssl, n);
				rc = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 1 : -1;
				break;
			}
			/* without SSL_MODE_ENABLE_PARTIAL_WRITE a success is the whole buffer */
			io->out_pending = 0;
			io->out.len = 0;
			atomic_store(&io->acked, io->out_mark);
		}
		if (io->acc.len == 0)
			break;
		tg_buf t = io->out; /* acc becomes out; out's memory is reused for acc */
		io->out = io->acc;
		io->acc = t;
		io->acc.len = 0;
		io->out_pending = 1;
		io->out_mark = atomic_load(&io->received);
		io->out_first_ms = io->acc_first_ms;
	}
	publish_oldest(io);
	return rc;
}

void mqtt_io_discard(mqtt_io *io)
{
	io->acc.len = 0;
	publish_oldest(io);
}

void mqtt_io_unbuffer(mqtt_io *io, int timeout_ms)
{
	if (!live_ssl(io))
		return;
	int64_t until = tg_mono_ms() + timeout_ms;
	while (mqtt_io_flush(io) == 1 && tg_mono_ms() < until) {
		struct pollfd pfd = {.fd = mosquitto_socket(io->mosq), .events = POLLOUT};
		if (pfd.fd < 0 || poll(&pfd, 1, 10) < 0)
			break;
	}
	mqtt_io_forget(io);
}

int mqtt_io_step(mqtt_io *io, int timeout_ms, int max_packets)
{
	int sock = mosquitto_socket(io->mosq);
	if (sock < 0)
		return MOSQ_ERR_NO_CONN;
	SSL *ssl = live_ssl(io);
	/* read no further than max_unacked ahead of what the broker has been told */
	int throttled = ssl && mqtt_io_unacked(io) + (uint64_t)max_packets > (uint64_t)io->max_unacked;
	if (throttled)
		atomic_fetch_add(&io->throttled, 1);
	struct pollfd pfd = {.fd = sock,
			     .events = (throttled ? 0 : POLLIN) |
				       (io->out_pending || mosquitto_want_write(io->mosq) ? POLLOUT : 0)};
	if (throttled || !(ssl && SSL_has_pending(ssl))) {
		if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
			return MOSQ_ERR_ERRNO;
	} else {
		pfd.revents = POLLIN;
	}
	int rc = MOSQ_ERR_SUCCESS;
	if (!throttled && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
		uint64_t received_before = atomic_load(&io->received);
		for (int i = 0; i < max_packets && rc == MOSQ_ERR_SUCCESS; i++) {
			rc = mosquitto_loop_read(io->mosq, 1);
			/* a packet published from the message callback (an alert) is only queued
			 * there: end the round so the caller can commit and send it at once */
			if (mosquitto_want_write(io->mosq))
				break;
			ssl = mosquitto_ssl_get(io->mosq); /* NULL once the connection is gone */
			if (!(ssl && SSL_has_pending(ssl)))
				break;
		}
		if (rc != MOSQ_ERR_SUCCESS)
			return rc;
		/* A round that brought nothing we answer (the broker's PUBACKs of our QoS 1
		 * publishes, a SUBACK): acknowledge it at once. Linux delays the ACK of data that
		 * gets no reply by up to 40 ms, and Mosquitto's socket keeps Nagle on, so the broker
		 * held its next message for us until then: at low rates every shadow request waited
		 * ~40 ms behind the PUBACKs of the previous answers. A round with messages needs
		 * nothing: their PUBACKs leave with the next commit and carry the ACK. */
		int one = 1;
		if (atomic_load(&io->received) == received_before && mosquitto_socket(io->mosq) >= 0)
			setsockopt(mosquitto_socket(io->mosq), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
	} else if (throttled && (pfd.revents & (POLLHUP | POLLERR))) {
		return MOSQ_ERR_CONN_LOST;
	}
	if (mosquitto_socket(io->mosq) < 0)
		return MOSQ_ERR_NO_CONN;
	if (mosquitto_want_write(io->mosq) && (rc = mosquitto_loop_write(io->mosq, 1)) != MOSQ_ERR_SUCCESS)
		return rc;
	if ((rc = mosquitto_loop_misc(io->mosq)) != MOSQ_ERR_SUCCESS)
		return rc;
	if (io->out_pending && (pfd.revents & POLLOUT))
		mqtt_io_flush(io);
	return MOSQ_ERR_SUCCESS;
}
