/*
 * sim_io.h — device_sim's write buffer: a buffering BIO under a connection's TLS layer, so
 * the PUBLISH records of one loop turn leave in one write(), and TLS read-ahead so one
 * read() serves many PUBACK records. Every packet stays a TLS record of its own, as a
 * device's libmosquitto sends it (the gateway's mqtt_io holds plaintext above TLS instead,
 * which the broker reads differently: that is the daemon's business, not a device's).
 *
 * The buffer belongs to the connection's SSL object, which libmosquitto frees on every
 * disconnect: call sim_io_forget() from the disconnect callback and before reconnecting.
 */
#ifndef TG_SIM_IO_H
#define TG_SIM_IO_H

#include <mosquitto.h>
#include <openssl/ssl.h>

typedef struct sim_io {
	struct mosquitto *mosq;
	long wbuf_size;
	BIO *wbuf;         /* NULL: writes go straight to the socket */
	SSL *wbuf_ssl;     /* the connection the buffer belongs to */
	int flush_pending; /* a flush met a full socket: the loop finishes it when writable */
} sim_io;

void sim_io_init(sim_io *io, struct mosquitto *mosq, long wbuf_size);
/* From the CONNACK callback: read-ahead and the write buffer for this connection. */
void sim_io_connected(sim_io *io);
/* The connection (and with it the buffer) is gone or about to be. */
void sim_io_forget(sim_io *io);
/* Write out the buffer: 0 done, 1 the socket is full (call again when it is writable),
 * -1 the connection is broken (the next read finds out). */
int sim_io_flush(sim_io *io);
/* Flush for up to timeout_ms and put the plain socket back under the TLS layer: before a
 * DISCONNECT, after which libmosquitto closes the socket and buffered bytes would be lost. */
void sim_io_unbuffer(sim_io *io, int timeout_ms);

#endif
