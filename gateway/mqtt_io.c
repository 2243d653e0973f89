/*
 * mqtt_io.c — see mqtt_io.h.
 */
#include "mqtt_io.h"

#include <errno.h>
#include <poll.h>

#include "clock.h"

void mqtt_io_init(mqtt_io *io, struct mosquitto *mosq, long wbuf_size)
{
	*io = (mqtt_io){.mosq = mosq, .wbuf_size = wbuf_size};
}

void mqtt_io_forget(mqtt_io *io)
{
	io->wbuf = NULL;
	io->wbuf_ssl = NULL;
	io->flush_pending = 0;
}

void mqtt_io_connected(mqtt_io *io)
{
	mqtt_io_forget(io);
	SSL *ssl = mosquitto_ssl_get(io->mosq);
	if (!ssl)
		return;
	SSL_set_read_ahead(ssl, 1);
	BIO *sock = SSL_get_wbio(ssl);
	BIO *buf = sock ? BIO_new(BIO_f_buffer()) : NULL;
	if (!buf)
		return; /* unbuffered: writes go straight to the socket */
	if (BIO_set_write_buffer_size(buf, io->wbuf_size) <= 0 || !BIO_up_ref(sock)) {
		BIO_free(buf);
		return;
	}
	BIO_push(buf, sock);
	SSL_set0_wbio(ssl, buf); /* drops the reference SSL held on sock; buf holds ours */
	io->wbuf = buf;
	io->wbuf_ssl = ssl;
}

/* The buffer, if it still belongs to the live connection. */
static BIO *live_wbuf(mqtt_io *io)
{
	if (io->wbuf && mosquitto_ssl_get(io->mosq) != io->wbuf_ssl)
		mqtt_io_forget(io); /* cannot happen while the callers forget on every disconnect */
	return io->wbuf;
}

int mqtt_io_flush(mqtt_io *io)
{
	BIO *w = live_wbuf(io);
	int rc = 0;
	if (w && BIO_wpending(w) > 0 && BIO_flush(w) <= 0)
		rc = BIO_should_retry(w) ? 1 : -1;
	io->flush_pending = rc == 1;
	return rc;
}

void mqtt_io_unbuffer(mqtt_io *io, int timeout_ms)
{
	BIO *w = live_wbuf(io);
	if (!w)
		return;
	int64_t until = tg_mono_ms() + timeout_ms;
	while (mqtt_io_flush(io) == 1 && tg_mono_ms() < until) {
		struct pollfd pfd = {.fd = mosquitto_socket(io->mosq), .events = POLLOUT};
		if (pfd.fd < 0 || poll(&pfd, 1, 10) < 0)
			break;
	}
	BIO *sock = BIO_next(w);
	if (sock && BIO_up_ref(sock))
		SSL_set0_wbio(io->wbuf_ssl, sock); /* frees the buffer, and its reference on sock */
	mqtt_io_forget(io);
}

int mqtt_io_step(mqtt_io *io, int timeout_ms, int max_packets)
{
	int sock = mosquitto_socket(io->mosq);
	if (sock < 0)
		return MOSQ_ERR_NO_CONN;
	live_wbuf(io);
	SSL *ssl = mosquitto_ssl_get(io->mosq);
	struct pollfd pfd = {.fd = sock,
			     .events = POLLIN | (io->flush_pending || mosquitto_want_write(io->mosq) ? POLLOUT : 0)};
	if (!(ssl && SSL_has_pending(ssl))) {
		if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
			return MOSQ_ERR_ERRNO;
	} else {
		pfd.revents = POLLIN;
	}
	int rc = MOSQ_ERR_SUCCESS;
	if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
		for (int i = 0; i < max_packets && rc == MOSQ_ERR_SUCCESS; i++) {
			rc = mosquitto_loop_read(io->mosq, 1);
			/* a packet published from the message callback (an alert) is only queued
			 * there: end the round so it is written and the caller can send it at once */
			if (mosquitto_want_write(io->mosq))
				break;
			ssl = mosquitto_ssl_get(io->mosq); /* NULL once the connection is gone */
			if (!(ssl && SSL_has_pending(ssl)))
				break;
		}
		if (rc != MOSQ_ERR_SUCCESS)
			return rc;
	}
	if (mosquitto_socket(io->mosq) < 0)
		return MOSQ_ERR_NO_CONN;
	if (mosquitto_want_write(io->mosq) && (rc = mosquitto_loop_write(io->mosq, 1)) != MOSQ_ERR_SUCCESS)
		return rc;
	if ((rc = mosquitto_loop_misc(io->mosq)) != MOSQ_ERR_SUCCESS)
		return rc;
	if (io->flush_pending && (pfd.revents & POLLOUT))
		mqtt_io_flush(io);
	return MOSQ_ERR_SUCCESS;
}
