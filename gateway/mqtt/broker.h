/*
 * broker.h — the daemon's MQTT v5 client of the local broker (libmosquitto).
 *
 * Mutual TLS with the gateway's certificate, a persistent session (clean_start off plus a
 * session-expiry interval) so QoS 1 messages queued while we were away are delivered when
 * we come back, subscriptions renewed on every (re)connect, reconnects with exponential
 * backoff. The caller drives the network from its own thread with broker_loop(), so
 * messages are handed to the ingest callback on that thread, one at a time, and decides
 * when what the client wrote leaves (broker_flush).
 *
 * Ownership: broker_new() copies what it needs from cfg; the callback's arguments are
 * borrowed for the duration of the call.
 */
#ifndef TG_BROKER_H
#define TG_BROKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

typedef struct broker broker;
struct mqtt5__property;

typedef void (*broker_message_fn)(void *ud, const char *topic, const void *payload, size_t len, int qos,
				  const struct mqtt5__property *props);

/* PUBACK of a publish of ours (QoS 1), or the moment a QoS 0 publish was written: mid as
 * broker_publish_v5 returned it, reason the MQTT v5 reason code (>= 0x80: the broker refused
 * it, e.g. 135 Not authorized by its ACL). Runs on the network thread, inside broker_loop. */
typedef void (*broker_puback_fn)(void *ud, int mid, int reason);

typedef struct broker_stats {
	/* published: acknowledged by the broker (QoS 1) or written (QoS 0); refused: PUBACK
	 * reason >= 0x80; publish_errors: not even queued (not connected) */
	uint64_t connects, disconnects, received, published, publish_errors, publish_refused;
	int connected;
	/* The broker's own $SYS figures (broker-wide, since the broker started; -1 until the
	 * broker has sent them, and they stay -1 when its ACL does not let us read them):
	 * messages it dropped because a client's queue was full, and what it holds. */
	_Atomic int64_t sys_dropped, sys_stored_messages, sys_stored_bytes;
} broker_stats;

broker *broker_new(const tg_config *cfg, broker_message_fn on_message, void *ud, char *err, size_t errlen);
void broker_free(broker *b); /* disconnects; NULL-safe */
/* Start connecting (non-blocking). */
int broker_start(broker *b, char *err, size_t errlen);
/* Run the network for at most timeout_ms; reconnects as needed. */
int broker_loop(broker *b, int timeout_ms, int64_t now_ms);
/* Publish (QoS 0/1). Returns 0 or TG_ENET when not connected (callers keep the outbox copy).
 * The packet waits in the write buffer like everything else and marks it urgent. */
int broker_publish(broker *b, const char *topic, const void *payload, size_t len, int qos, int retain);
/* The same with MQTT v5 properties (borrowed; may be NULL); *mid (may be NULL) gets the
 * message id the PUBACK callback will report. */
int broker_publish_v5(broker *b, const char *topic, const void *payload, size_t len, int qos, int retain,
		      const struct mqtt5__property *props, int *mid);
/* Who hears of PUBACKs (one listener; fn NULL removes it). */
void broker_set_puback_fn(broker *b, broker_puback_fn fn, void *ud);
/* Outgoing bytes — the PUBACKs of received messages above all — wait in a write buffer until
 * broker_flush(), so the caller acknowledges messages only once what it made of them is
 * durable: call it whenever nothing received is left uncommitted, and right after a commit
 * when broker_urgent() says a publish is waiting. Returns 0 (written), 1 (the socket was
 * full; broker_loop finishes when it is writable) or -1 (connection broken). */
int broker_flush(broker *b);
int broker_urgent(const broker *b);
/* Drop the held PUBACKs instead of sending them: the messages they acknowledge could not
 * be stored, so the broker must deliver them again (the connection is then dropped). */
void broker_discard(broker *b);
/* Drop the connection without sending what is held (a message could not be stored): the
 * persistent session keeps the unacknowledged messages and delivers them again after the
 * reconnect, which follows the usual backoff. */
void broker_drop(broker *b);
/* Messages received and not yet acknowledged to the broker, the receipt time (epoch ms) of
 * the oldest of them (0: none) and the loop rounds that did not read because the bound was
 * reached. Any thread. */
uint64_t broker_unacked(const broker *b, int64_t *oldest_ms, uint64_t *throttled);
/* The bound on unacknowledged messages (also the receive maximum announced). */
int broker_receive_max(const broker *b);
/* Disconnect cleanly and flush outgoing QoS 1 publishes for up to timeout_ms. */
void broker_disconnect(broker *b, int timeout_ms);
const broker_stats *broker_stats_get(const broker *b);

#endif
