/*
 * mqtt_io.h — drive a connected libmosquitto client from our own poll(), hold what it
 * writes until the caller says it may leave, and read no further than a bound ahead of
 * what has been acknowledged.
 *
 *  - one poll() is followed by as many packets as the TLS layer already holds (up to a
 *    cap, and up to a packet after which a publish is waiting to go out), where
 *    mosquitto_loop() pays a pselect() and a read of libmosquitto's wake-up socketpair per
 *    packet; TLS read-ahead makes one read() serve many records.
 *
 *  - Held writes, above TLS. libmosquitto sends the PUBACK of a QoS 1 message before the
 *    message callback runs, one SSL_write() per packet. Each SSL_write is a TLS record of
 *    its own, and Mosquitto 2.0 reads one record per client per pass of its event loop
 *    (packet__read in a do/while on SSL_pending), so twenty publishing devices starve one
 *    acknowledging subscriber: the broker took in twenty publishes for every PUBACK it
 *    read, and its unacknowledged messages, and the daemon's queue of unsent PUBACKs,
 *    grew without bound. mqtt_io therefore takes libmosquitto's writes for its connection
 *    into a plaintext buffer (it interposes SSL_write, see mqtt_io.c) and mqtt_io_flush()
 *    sends the whole buffer with one SSL_write: one TLS record carries up to 16 KiB, about
 *    4,000 PUBACKs, which the broker reads in one pass. The caller decides when that is
 *    (after the outbox commit that made the acknowledged messages durable).
 *
 *  - Flow control. Mosquitto 2.0.11 does not keep to the client's receive maximum (see
 *    mqtt_io.c), so the bound is kept here: once `max_unacked` messages have been received
 *    and not yet acknowledged (their PUBACKs still held, or not yet taken by the socket),
 *    mqtt_io_step stops reading and the broker meets TCP backpressure instead of our
 *    memory growing.
 *
 * The hold belongs to the connection's SSL object, which libmosquitto frees on every
 * disconnect: call mqtt_io_forget() from the disconnect callback and before reconnecting.
 * Ownership: the mqtt_io struct is the caller's; it owns its buffers (mqtt_io_free).
 */
#ifndef TG_MQTT_IO_H
#define TG_MQTT_IO_H

#include <mosquitto.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct mqtt_io {
	struct mosquitto *mosq;
	SSL *ssl;        /* the connection whose writes are held, NULL: writes pass through */
	tg_buf acc;      /* held plaintext, not yet handed to SSL_write */
	tg_buf out;      /* handed to SSL_write, which asked to be called again (socket full) */
	int out_pending; /* out must be written again, with the same bytes */
	int max_unacked; /* stop reading at this many unacknowledged messages */
	/* Messages received (counted by the caller, mqtt_io_received) and acknowledged: a
	 * message is acknowledged once the flush that carried its PUBACK reached the socket. */
	_Atomic uint64_t received; /* written by the loop's thread only */
	uint64_t out_mark;
	int64_t acc_first_ms, out_first_ms; /* receipt time of the oldest message in each */
	/* for /metrics, read by another thread */
	_Atomic uint64_t acked;
	_Atomic int64_t oldest_unacked_ms; /* 0: none */
	_Atomic uint64_t throttled;        /* rounds that did not read because of the bound */
} mqtt_io;

void mqtt_io_init(mqtt_io *io, struct mosquitto *mosq, int max_unacked);
void mqtt_io_free(mqtt_io *io); /* frees the buffers, not io; NULL-safe */
/* From the CONNACK callback: read-ahead and held writes for this connection. */
void mqtt_io_connected(mqtt_io *io);
/* The connection (and what was held for it) is gone or about to be. */
void mqtt_io_forget(mqtt_io *io);
/* A QoS 1 message was received (its PUBACK is in the hold): call from the message callback. */
void mqtt_io_received(mqtt_io *io, int64_t now_ms);
/* Messages received and not yet acknowledged to the broker (any thread). */
uint64_t mqtt_io_unacked(const mqtt_io *io);
/* One round: poll for up to timeout_ms, read up to max_packets packets (none while the
 * unacknowledged bound is reached), let libmosquitto write (into the hold), keepalive.
 * Returns a MOSQ_ERR_* code; any error means the connection is lost. */
int mqtt_io_step(mqtt_io *io, int timeout_ms, int max_packets);
/* Send everything held, in one TLS write: 0 done, 1 the socket is full (mqtt_io_step
 * finishes when it is writable), -1 the connection is broken (the next read finds out). */
int mqtt_io_flush(mqtt_io *io);
/* Drop what is held without sending it (the messages it acknowledges were not stored:
 * the broker must deliver them again). */
void mqtt_io_discard(mqtt_io *io);
/* Flush for up to timeout_ms and stop holding: before a DISCONNECT, which libmosquitto
 * writes and then closes the socket. */
void mqtt_io_unbuffer(mqtt_io *io, int timeout_ms);

#endif
