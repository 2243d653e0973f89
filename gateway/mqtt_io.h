/*
 * mqtt_io.h — drive a connected libmosquitto client from our own poll(), cheaper per
 * message than mosquitto_loop():
 *
 *  - one poll() is followed by as many packets as the TLS layer already holds (up to a
 *    cap, and up to a packet after which a publish is waiting to go out), where mosquitto_loop() pays a pselect() and a read of libmosquitto's wake-up
 *    socketpair per packet (it writes a byte there for every packet it queues, a PUBACK per
 *    message here, to interrupt a select() in another thread; with everything on one
 *    thread nobody needs waking: the pair fills up and those writes fail fast);
 *  - TLS read-ahead: one read() for many records (the broker sends each PUBLISH as a
 *    record of its own), drained through SSL_has_pending before polling again;
 *  - a buffering BIO under the TLS layer: what libmosquitto writes (PUBACKs above all)
 *    waits until mqtt_io_flush(), so the caller decides when acknowledgements leave, and a
 *    batch of them leaves in one write().
 *
 * The buffer belongs to the connection's SSL object, which libmosquitto frees on every
 * disconnect: call mqtt_io_forget() from the disconnect callback and before reconnecting.
 */
#ifndef TG_MQTT_IO_H
#define TG_MQTT_IO_H

#include <mosquitto.h>
#include <openssl/ssl.h>

typedef struct mqtt_io {
	struct mosquitto *mosq;
	long wbuf_size;
	BIO *wbuf;         /* NULL: writes go straight to the socket */
	SSL *wbuf_ssl;     /* the connection the buffer belongs to */
	int flush_pending; /* a flush met a full socket: mqtt_io_step finishes it */
} mqtt_io;

void mqtt_io_init(mqtt_io *io, struct mosquitto *mosq, long wbuf_size);
/* From the CONNACK callback: read-ahead and the write buffer for this connection. */
void mqtt_io_connected(mqtt_io *io);
/* The connection (and with it the buffer) is gone or about to be. */
void mqtt_io_forget(mqtt_io *io);
/* One round: poll for up to timeout_ms, read up to max_packets packets, write what
 * libmosquitto queued (into the buffer), keepalive. Returns a MOSQ_ERR_* code; any error
 * means the connection is lost. */
int mqtt_io_step(mqtt_io *io, int timeout_ms, int max_packets);
/* Write out the buffer: 0 done, 1 the socket is full (the next step finishes when it is
 * writable), -1 the connection is broken (the next read finds out). */
int mqtt_io_flush(mqtt_io *io);
/* Flush for up to timeout_ms and put the plain socket back under the TLS layer: before a
 * DISCONNECT, after which libmosquitto closes the socket and buffered bytes would be lost. */
void mqtt_io_unbuffer(mqtt_io *io, int timeout_ms);

#endif
