/*
 * mqtt_bridge.h — the `mqtt` sink: an MQTT bridge from the outbox to a remote broker (AWS
 * IoT Core, EMQX, HiveMQ, another Mosquitto), and its pure parts.
 *
 * The sink is reached through sink_mqtt_ops (sink.h); this header exists so the unit tests
 * can pin down the parts that need no network: the publish-rate limiter (at most max_rate
 * publishes in any one-second window, AWS IoT Core's per-connection limit), the reading of
 * a PUBACK reason code, and the checks that make a record poison before it is sent
 * (payload over max_payload, a topic the remote could never accept).
 */
#ifndef TG_SINKS_MQTT_BRIDGE_H
#define TG_SINKS_MQTT_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "store/sink.h"

/* AWS IoT Core's limits, the defaults (the options' help text says where they come from). */
#define MQTT_BRIDGE_AWS_MAX_PAYLOAD (128 * 1024)
#define MQTT_BRIDGE_AWS_MAX_RATE 100
#define MQTT_BRIDGE_AWS_MAX_TOPIC 256
#define MQTT_BRIDGE_AWS_MAX_LEVELS 8

typedef struct mqtt_bridge_opts {
	char *host;
	int64_t port;
	char *client_id;          /* "" = gateway_id (AWS IoT Core: the gateway's thing name) */
	int protocol;             /* index into "5", "3.1.1" */
	int tls;
	char *ca_file;            /* "" = the system's CA store */
	char *cert_file, *key_file;
	int tls_version;          /* index into "tlsv1.2", "tlsv1.3": the minimum */
	char *alpn;
	char *username, *password;
	char *topic, *prefix;
	int64_t keepalive_ms;
	int64_t max_inflight;
	int64_t max_payload;
	int64_t max_rate;         /* publishes per second per connection, 0 = unlimited */
	int64_t max_topic_bytes, max_topic_levels;
	int64_t connect_timeout_ms, ack_timeout_ms;
	int64_t max_records;
	int properties;           /* MQTT 5: msg_id user property and content type */
} mqtt_bridge_opts;

extern const sink_ops sink_mqtt_ops;

/* ---- publish-rate limiter --------------------------------------------------------------
 * A ring of the last `cap` publish times: the next publish may go when fewer than cap
 * happened in the last second, i.e. when the oldest of the last cap is >= 1000 ms old.
 * Exact for any one-second window (a token bucket lets up to twice the rate through one). */
typedef struct sink_mqtt_rate {
	int64_t *t;
	size_t cap, pos, count;
} sink_mqtt_rate;

int sink_mqtt_rate_init(sink_mqtt_rate *r, size_t per_second); /* 0 or TG_ENOMEM; 0/s = off */
void sink_mqtt_rate_free(sink_mqtt_rate *r);                   /* NULL-safe */
/* ms to wait before the next publish may go (0: now). */
int64_t sink_mqtt_rate_delay(const sink_mqtt_rate *r, int64_t now_ms);
/* Record a publish at now_ms. */
void sink_mqtt_rate_note(sink_mqtt_rate *r, int64_t now_ms);

/* ---- classification -------------------------------------------------------------------- */

/* A PUBACK reason code (MQTT 5; 3.1.1 PUBACKs count as 0): below 0x80 delivered (0x10 "no
 * matching subscribers" too: the broker has it); topic name invalid, packet too large and
 * payload format invalid are about the record (SINK_POISON); anything else — not
 * authorized, quota exceeded, unspecified — is the remote's or its policy's state, which
 * an operator can fix without losing data (SINK_RETRY). */
sink_status sink_mqtt_puback_status(int reason_code);

/* SINK_OK when r can be published on topic, else SINK_POISON with the reason in why:
 * payload over max_payload, topic empty, over max_topic_bytes or max_topic_levels (0 =
 * unchecked), with a wildcard (+ #) or a NUL, or not valid UTF-8. */
sink_status sink_mqtt_check(const sink_record *r, const char *topic, size_t topic_len, size_t max_payload,
			    size_t max_topic_bytes, size_t max_topic_levels, char *why, size_t whylen);

#endif
