/*
 * sim_io.c — see sim_io.h.
 */
#include "sim_io.h"

#include <errno.h>
#include <poll.h>

#include "core/clock.h"

void sim_io_init(sim_io *io, struct mosquitto *mosq, long wbuf_size)
{
	*io = (sim_io){.mosq = mosq, .wbuf_size = wbuf_size};
}

void sim_io_forget(sim_io *io)
{
	io->wbuf = NULL;
	io->wbuf_ssl = NULL;
	io->flush_pending = 0;
}

void sim_io_connected(sim_io *io)
{
	sim_io_forget(io);
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
static BIO *live_wbuf(sim_io *io)
{
	if (io->wbuf && mosquitto_ssl_get(io->mosq) != io->wbuf_ssl)
		sim_io_forget(io); /* cannot happen while the callers forget on every disconnect */
	return io->wbuf;
}

int sim_io_flush(sim_io *io)
{
	BIO *w = live_wbuf(io);
	int rc = 0;
	if (w && BIO_wpending(w) > 0 && BIO_flush(w) <= 0)
		rc = BIO_should_retry(w) ? 1 : -1;
	io->flush_pending = rc == 1;
	return rc;
}

void sim_io_unbuffer(sim_io *io, int timeout_ms)
{
	BIO *w = live_wbuf(io);
	if (!w)
		return;
	int64_t until = tg_mono_ms() + timeout_ms;
	while (sim_io_flush(io) == 1 && tg_mono_ms() < until) {
		struct pollfd pfd = {.fd = mosquitto_socket(io->mosq), .events = POLLOUT};
		if (pfd.fd < 0 || poll(&pfd, 1, 10) < 0)
			break;
	}
	BIO *sock = BIO_next(w);
	if (sock && BIO_up_ref(sock))
		SSL_set0_wbio(io->wbuf_ssl, sock); /* frees the buffer, and its reference on sock */
	sim_io_forget(io);
}
