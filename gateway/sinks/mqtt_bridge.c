/*
 * mqtt_bridge.c — the `mqtt` sink: each outbox record becomes one QoS 1 PUBLISH to a
 * remote broker (AWS IoT Core or any MQTT 5 / 3.1.1 broker) on a topic expanded from a
 * template, over mutual TLS, and is delivered — SINK_OK, deleted from the outbox — only
 * when its PUBACK arrives.
 *
 * One libmosquitto client per sink, created, driven and destroyed by the sink's forwarder
 * thread alone (no libmosquitto thread: mosquitto_loop() runs inside send() and idle()).
 * send() pipelines a batch through a window: up to max_inflight publishes are
 * unacknowledged at any time, the next record goes out as a PUBACK frees a slot, and at
 * most max_rate publishes leave in any second. When every record has its answer, send()
 * returns; the window never outlives the call, so the forwarder settles exactly what the
 * remote acknowledged.
 *
 * Failures keep the forwarder in charge of retrying: a connection that cannot be made,
 * drops, or stops acknowledging for ack_timeout is closed and destroyed, and the records
 * without a PUBACK stay SINK_RETRY; the forwarder backs off and a later send() connects
 * afresh (clean session) and publishes them again with the same msg_id. A fresh client
 * rather than mosquitto_reconnect(), because libmosquitto would resend its own queued
 * copies on reconnect and each record would then go out twice. A record the remote could
 * never take (payload over max_payload, an impossible topic, a PUBACK that blames the
 * record) is SINK_POISON, dead-lettered with the reason, and does not hold the rest back.
 *
 * Connecting: libmosquitto's blocking connect would wait for the kernel's SYN retries
 * (about two minutes) on a black-holed address, so a non-blocking TCP probe with
 * connect_timeout runs first; TLS handshake and CONNACK are then awaited in the loop
 * under the same deadline. TLS errors that libmosquitto only logs are captured from its
 * log callback so the forwarder's log line and /healthz say why (e.g. the remote refused
 * the client certificate).
 */
#include "sinks/mqtt_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "sinks/msgsink.h"

static const char *const protocols[] = {"5", "3.1.1", NULL};
static const char *const tls_versions[] = {"tlsv1.2", "tlsv1.3", "tlsv1.2+", NULL};

#define MOFF(f) offsetof(mqtt_bridge_opts, f)
static const config_option mqtt_options[] = {
	{"host", CFG_STRING, NULL, 0, 0, MOFF(host), CFG_REQUIRED,
	 "Remote broker host; AWS IoT Core: your account's data endpoint (xxxxxxxx-ats.iot.REGION.amazonaws.com).", NULL},
	{"port", CFG_INT, "8883", 1, 65535, MOFF(port), 0,
	 "Remote broker port (AWS IoT Core: 8883, or 443 with alpn = x-amzn-mqtt-ca).", NULL},
	{"client_id", CFG_STRING, "", 0, 0, MOFF(client_id), 0,
	 "MQTT client id; empty: the gateway_id (AWS IoT Core: the gateway's thing name).", NULL},
	{"protocol", CFG_ENUM, "5", 0, 0, MOFF(protocol), 0, "MQTT protocol version.", protocols},
	{"tls", CFG_BOOL, "true", 0, 0, MOFF(tls), 0, "Use TLS (mutual TLS when cert_file/key_file are set).", NULL},
	{"ca_file", CFG_STRING, "", 0, 0, MOFF(ca_file), 0,
	 "CA bundle that signed the remote's certificate; empty: the system's CA folder /etc/ssl/certs (package "
	 "ca-certificates, which has Amazon Root CA 1).",
	 NULL},
	{"cert_file", CFG_STRING, "", 0, 0, MOFF(cert_file), 0,
	 "The gateway's client certificate for the remote (PEM; AWS IoT Core: the thing's certificate).", NULL},
	{"key_file", CFG_STRING, "", 0, 0, MOFF(key_file), CFG_SECRET, "Its private key (PEM).", NULL},
	{"tls_version", CFG_ENUM, "tlsv1.2", 0, 0, MOFF(tls_version), 0,
	 "tlsv1.2: TLS 1.2 only (AWS IoT Core's requirement; a refused client certificate is reported in the handshake); "
	 "tlsv1.3: 1.3 only; tlsv1.2+: 1.2 or newer.",
	 tls_versions},
	{"alpn", CFG_STRING, "", 0, 0, MOFF(alpn), 0,
	 "TLS ALPN protocol; AWS IoT Core on port 443 needs x-amzn-mqtt-ca. Empty: none.", NULL},
	{"username", CFG_STRING, "", 0, 0, MOFF(username), 0, "MQTT username (brokers that want one; AWS IoT Core does not).", NULL},
	{"password", CFG_STRING, "", 0, 0, MOFF(password), CFG_SECRET, "MQTT password.", NULL},
	{"topic", CFG_STRING, "<prefix>/<table>/<thing>", 0, 0, MOFF(topic), 0,
	 "Topic template per record (default `<prefix>/<table>/<thing>`): `<prefix>`, `<table>`, `<thing>` (the record's "
	 "partition key, normally the thing) and `<gateway>`.",
	 NULL},
	{"prefix", CFG_STRING, "tidegate", 0, 0, MOFF(prefix), 0, "What `<prefix>` expands to.", NULL},
	{"keepalive", CFG_DURATION, "30s", 5000, 1200000, MOFF(keepalive_ms), 0,
	 "MQTT keepalive (AWS IoT Core accepts 30 s to 1200 s).", NULL},
	{"max_inflight", CFG_INT, "100", 1, 65000, MOFF(max_inflight), 0,
	 "Publishes waiting for their PUBACK at any time (AWS IoT Core allows 100 in flight).", NULL},
	{"max_payload", CFG_SIZE, "128k", 1, 256 << 20, MOFF(max_payload), 0,
	 "A record over this many bytes is dead-lettered with the reason (AWS IoT Core's message limit: 128 KiB).", NULL},
	{"max_rate", CFG_INT, "100", 0, 1000000, MOFF(max_rate), 0,
	 "Publishes per second on the connection, in any one-second window (AWS IoT Core: 100); 0 = unlimited.", NULL},
	{"max_topic_bytes", CFG_INT, "256", 0, 65535, MOFF(max_topic_bytes), 0,
	 "A record whose topic is longer is dead-lettered (AWS IoT Core: 256 bytes); 0 = MQTT's own 65535.", NULL},
	{"max_topic_levels", CFG_INT, "8", 0, 65535, MOFF(max_topic_levels), 0,
	 "A record whose topic has more levels is dead-lettered (AWS IoT Core: 8, i.e. 7 slashes); 0 = unchecked.", NULL},
	{"connect_timeout", CFG_DURATION, "10s", 100, 600000, MOFF(connect_timeout_ms), 0,
	 "TCP connect, TLS handshake and CONNACK together.", NULL},
	{"ack_timeout", CFG_DURATION, "10s", 100, 600000, MOFF(ack_timeout_ms), 0,
	 "No PUBACK for this long while publishes are in flight: the connection is dropped and they are retried.", NULL},
	{"max_records", CFG_INT, "1000", 1, 100000, MOFF(max_records), 0,
	 "Records handed to one send (the window slides through them).", NULL},
	{"properties", CFG_BOOL, "true", 0, 0, MOFF(properties), 0,
	 "MQTT 5: give each PUBLISH a msg_id user property and content type application/json.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
#undef MOFF

enum { ST_DOWN = 0, ST_CONNECTING, ST_UP };

typedef struct slot {
	int32_t idx; /* record index in the current batch, -1 = free */
	uint16_t mid;
} slot;

struct sink {
	const mqtt_bridge_opts *o;
	char *gateway_id;
	char *client_id;
	msgsink_tmpl topic;
	struct mosquitto *mosq; /* NULL while disconnected */
	int state;
	int connack_rc;
	char lib_err[384];      /* libmosquitto's error log lines since the last connect */
	sink_mqtt_rate rate;
	/* the batch in flight (valid inside send() only) */
	slot *ring;
	size_t ring_mask;
	const sink_record *recs;
	sink_status *results;
	size_t inflight, answered;
	int64_t last_progress_ms;
	char puback_poison[128], puback_retry[128]; /* the first refusal of each kind */
	msgsink_names topics; /* of the batch */
};

/* ---- pure parts ------------------------------------------------------------------------ */

int sink_mqtt_rate_init(sink_mqtt_rate *r, size_t per_second)
{
	*r = (sink_mqtt_rate){0};
	if (!per_second)
		return 0;
	if (!(r->t = calloc(per_second, sizeof *r->t)))
		return TG_ENOMEM;
	r->cap = per_second;
	return 0;
}

void sink_mqtt_rate_free(sink_mqtt_rate *r)
{
	if (!r)
		return;
	free(r->t);
	*r = (sink_mqtt_rate){0};
}

int64_t sink_mqtt_rate_delay(const sink_mqtt_rate *r, int64_t now_ms)
{
	if (!r->cap || r->count < r->cap)
		return 0;
	int64_t age = now_ms - r->t[r->pos]; /* when full, pos is the oldest of the last cap */
	return age >= 1000 ? 0 : 1000 - age;
}

void sink_mqtt_rate_note(sink_mqtt_rate *r, int64_t now_ms)
{
	if (!r->cap)
		return;
	r->t[r->pos] = now_ms;
	r->pos = (r->pos + 1) % r->cap;
	if (r->count < r->cap)
		r->count++;
}

sink_status sink_mqtt_puback_status(int rc)
{
	if (rc < 0x80)
		return SINK_OK;
	if (rc == MQTT_RC_TOPIC_NAME_INVALID || rc == MQTT_RC_PACKET_TOO_LARGE || rc == MQTT_RC_PAYLOAD_FORMAT_INVALID)
		return SINK_POISON;
	return SINK_RETRY;
}

sink_status sink_mqtt_check(const sink_record *r, const char *topic, size_t topic_len, size_t max_payload,
			    size_t max_topic_bytes, size_t max_topic_levels, char *why, size_t whylen)
{
	if (r->len > max_payload) {
		tg_seterr(why, whylen, TG_EPERM, "record %s: payload %zu bytes over max_payload %zu", r->msg_id, r->len,
			  max_payload);
		return SINK_POISON;
	}
	if (!topic_len || topic_len > 65535 || (max_topic_bytes && topic_len > max_topic_bytes)) {
		tg_seterr(why, whylen, TG_EPERM, "record %s: topic of %zu bytes (allowed 1..%zu)", r->msg_id, topic_len,
			  max_topic_bytes ? max_topic_bytes : 65535);
		return SINK_POISON;
	}
	size_t levels = 1;
	for (size_t i = 0; i < topic_len; i++) {
		if (topic[i] == '+' || topic[i] == '#' || topic[i] == '\0') {
			tg_seterr(why, whylen, TG_EPERM, "record %s: topic \"%.*s\" has a wildcard or NUL", r->msg_id,
				  (int)(topic_len < 200 ? topic_len : 200), topic);
			return SINK_POISON;
		}
		levels += topic[i] == '/';
	}
	if (max_topic_levels && levels > max_topic_levels) {
		tg_seterr(why, whylen, TG_EPERM, "record %s: topic \"%.*s\" has %zu levels, over max_topic_levels %zu",
			  r->msg_id, (int)(topic_len < 200 ? topic_len : 200), topic, levels, max_topic_levels);
		return SINK_POISON;
	}
	if (mosquitto_validate_utf8(topic, (int)topic_len) != MOSQ_ERR_SUCCESS) {
		tg_seterr(why, whylen, TG_EPERM, "record %s: topic is not valid UTF-8", r->msg_id);
		return SINK_POISON;
	}
	return SINK_OK;
}

/* ---- libmosquitto callbacks (run inside mosquitto_loop, on the forwarder thread) ----- */

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
	sink *b = ud;
	b->connack_rc = rc;
	b->state = rc == 0 ? ST_UP : ST_DOWN;
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc, const mosquitto_property *props)
{
	sink *b = ud;
	b->state = ST_DOWN;
}

static void on_publish(struct mosquitto *m, void *ud, int mid, int reason, const mosquitto_property *props)
{
	sink *b = ud;
	if (!b->ring || mid < 0 || mid > 65535)
		return;
	slot *sl = &b->ring[(size_t)mid & b->ring_mask];
	if (sl->idx < 0 || sl->mid != (uint16_t)mid)
		return; /* not one of this batch's (cannot happen: a new batch starts with a new window) */
	sink_status st = sink_mqtt_puback_status(reason);
	char *e = st == SINK_POISON ? b->puback_poison : b->puback_retry;
	b->results[sl->idx] = st;
	if (st != SINK_OK && !e[0])
		snprintf(e, sizeof b->puback_retry, "record %s: PUBACK 0x%02x (%s)", b->recs[sl->idx].msg_id, reason,
			 mosquitto_reason_string(reason));
	sl->idx = -1;
	b->inflight--;
	b->answered++;
	b->last_progress_ms = tg_mono_ms();
}

static void on_log(struct mosquitto *m, void *ud, int level, const char *text)
{
	sink *b = ud;
	if (!(level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)))
		return;
	size_t n = strlen(b->lib_err);
	if (n + 3 < sizeof b->lib_err)
		snprintf(b->lib_err + n, sizeof b->lib_err - n, "%s%s", n ? "; " : "", text);
}

/* ---- connection ------------------------------------------------------------------------ */

/* libmosquitto's text for rc (errno's for MOSQ_ERR_ERRNO) without its closing full stop,
 * since our messages go on after it. */
static const char *mosq_text(int rc, char *buf, size_t len)
{
	snprintf(buf, len, "%s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
	size_t n = strlen(buf);
	if (n && buf[n - 1] == '.')
		buf[n - 1] = '\0';
	return buf;
}

static void drop(sink *b)
{
	if (!b->mosq)
		return;
	mosquitto_destroy(b->mosq);
	b->mosq = NULL;
	b->state = ST_DOWN;
}

/* Is host:port accepting TCP connections within timeout_ms? 0, or TG_ENET with why. */
static int probe_tcp(const char *host, int port, int64_t timeout_ms, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	char ports[16];
	snprintf(ports, sizeof ports, "%d", port);
	int rc = getaddrinfo(host, ports, &hints, &ai);
	if (rc)
		return tg_seterr(why, whylen, TG_ENET, "cannot resolve %s: %s", host, gai_strerror(rc));
	int64_t deadline = tg_mono_ms() + timeout_ms;
	int err = ETIMEDOUT;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			close(fd);
			freeaddrinfo(ai);
			return 0;
		}
		err = errno;
		if (err == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int64_t left = deadline - tg_mono_ms();
			int n = left > 0 ? poll(&p, 1, (int)left) : 0;
			socklen_t sl = sizeof err;
			if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0) {
				close(fd);
				freeaddrinfo(ai);
				return 0;
			}
			if (n == 0)
				err = ETIMEDOUT;
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return tg_seterr(why, whylen, TG_ENET, "TCP connect: %s", strerror(err));
}

/* A hint for the TLS failures people meet: which side's certificate was refused. waiting:
 * the connection was made and CONNACK awaited. */
static const char *tls_hint(const char *lib_err, int waiting)
{
	if (strstr(lib_err, "alert unknown ca") || strstr(lib_err, "alert bad certificate") ||
	    strstr(lib_err, "alert certificate unknown") || strstr(lib_err, "certificate required") ||
	    strstr(lib_err, "alert handshake failure") || strstr(lib_err, "alert access denied"))
		return " (the remote refused the client certificate: is cert_file registered there / signed by a CA it trusts?)";
	if (strstr(lib_err, "certificate verify failed"))
		return " (the remote's certificate did not verify against ca_file, or its name does not match host)";
	if (!*lib_err && waiting)
		return " (closed before CONNACK: a refused client certificate or client id, or not an MQTT/TLS port)";
	return "";
}

static int bridge_connect(sink *b, char *err, size_t errlen)
{
	const mqtt_bridge_opts *o = b->o;
	int64_t deadline = tg_mono_ms() + o->connect_timeout_ms;
	char why[256];
	int rc, waiting = 0;

	drop(b);
	b->lib_err[0] = '\0';
	b->connack_rc = -1;
	if (probe_tcp(o->host, (int)o->port, o->connect_timeout_ms, why, sizeof why))
		return tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": %s", o->host, o->port, why);
	if (!(b->mosq = mosquitto_new(b->client_id, true, b)))
		return tg_seterr(err, errlen, TG_ENOMEM, "cannot create an MQTT client");
	mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, o->protocol == 0 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	/* libmosquitto's own queue limit must not be tighter than our window */
	mosquitto_int_option(b->mosq, MOSQ_OPT_SEND_MAXIMUM, (int)o->max_inflight);
	mosquitto_int_option(b->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_v5_callback_set(b->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(b->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(b->mosq, on_publish);
	mosquitto_log_callback_set(b->mosq, on_log);
	if (*o->username && (rc = mosquitto_username_pw_set(b->mosq, o->username, *o->password ? o->password : NULL)))
		goto lib_fail;
	if (o->tls) {
		/* Our own context only to bound the protocol version (libmosquitto sets just a
		 * minimum); it still loads the CA, certificate and key into it. With TLS 1.3 the
		 * remote checks the client certificate after the handshake and often just resets
		 * the connection, so a refusal would come without its reason. */
		static const int lo[] = {TLS1_2_VERSION, TLS1_3_VERSION, TLS1_2_VERSION};
		static const int hi[] = {TLS1_2_VERSION, TLS1_3_VERSION, 0};
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		if (!ctx || !SSL_CTX_set_min_proto_version(ctx, lo[o->tls_version]) ||
		    !SSL_CTX_set_max_proto_version(ctx, hi[o->tls_version])) {
			SSL_CTX_free(ctx);
			drop(b);
			return tg_seterr(err, errlen, TG_ENOMEM, "cannot create a TLS context");
		}
		rc = mosquitto_void_option(b->mosq, MOSQ_OPT_SSL_CTX, ctx);
		SSL_CTX_free(ctx); /* libmosquitto took its own reference */
		if (!rc &&
		    (rc = mosquitto_tls_set(b->mosq, *o->ca_file ? o->ca_file : NULL, *o->ca_file ? NULL : "/etc/ssl/certs",
					    *o->cert_file ? o->cert_file : NULL, *o->key_file ? o->key_file : NULL, NULL)) ==
			    MOSQ_ERR_INVAL) {
			tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": cannot read ca_file, cert_file or key_file",
				  o->host, o->port);
			drop(b);
			return TG_ENET;
		}
		if (!rc && *o->alpn)
			rc = mosquitto_string_option(b->mosq, MOSQ_OPT_TLS_ALPN, o->alpn);
		if (rc)
			goto lib_fail;
	}
	b->state = ST_CONNECTING;
	rc = mosquitto_connect_bind_v5(b->mosq, o->host, (int)o->port, (int)(o->keepalive_ms / 1000), NULL, NULL);
	if (rc)
		goto lib_fail;
	waiting = 1;
	while (b->state == ST_CONNECTING) {
		int64_t left = deadline - tg_mono_ms();
		if (left <= 0) {
			tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": no CONNACK within connect_timeout %" PRId64 " ms%s%s",
				  o->host, o->port, o->connect_timeout_ms, b->lib_err[0] ? ": " : "", b->lib_err);
			drop(b);
			return TG_ENET;
		}
		rc = mosquitto_loop(b->mosq, (int)(left < 100 ? left : 100), 1);
		if (rc)
			goto lib_fail;
	}
	if (b->connack_rc != 0) {
		tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": CONNACK refused: %s", o->host, o->port,
			  b->connack_rc < 0 ? "connection closed"
			  : o->protocol == 0 ? mosquitto_reason_string(b->connack_rc)
					     : mosquitto_connack_string(b->connack_rc));
		drop(b);
		return TG_ENET;
	}
	LOG_INFO("mqtt-bridge", "msg=connected host=%s port=%" PRId64 " client_id=%s protocol=%s", o->host, o->port,
		 b->client_id, protocols[o->protocol]);
	return 0;
lib_fail:
	if (b->connack_rc > 0) { /* 3.1.1: the loop reports a refused CONNACK as a lost connection */
		tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": CONNACK refused: %s", o->host, o->port,
			  o->protocol == 0 ? mosquitto_reason_string(b->connack_rc) : mosquitto_connack_string(b->connack_rc));
		drop(b);
		return TG_ENET;
	}
	tg_seterr(err, errlen, TG_ENET, "connect to %s:%" PRId64 ": %s%s%s%s", o->host, o->port,
		  mosq_text(rc, why, sizeof why), b->lib_err[0] ? ": " : "", b->lib_err, tls_hint(b->lib_err, waiting));
	drop(b);
	return TG_ENET;
}

/* ---- the sink ------------------------------------------------------------------------- */

static void mqtt_close(sink *b)
{
	if (!b)
		return;
	if (b->mosq && b->state == ST_UP && mosquitto_disconnect_v5(b->mosq, 0, NULL) == MOSQ_ERR_SUCCESS) {
		/* let the DISCONNECT leave; the remote forgets our clean session */
		int64_t until = tg_mono_ms() + 500;
		while (b->state == ST_UP && tg_mono_ms() < until && mosquitto_loop(b->mosq, 50, 1) == MOSQ_ERR_SUCCESS)
			;
	}
	drop(b);
	msgsink_tmpl_free(&b->topic);
	sink_mqtt_rate_free(&b->rate);
	msgsink_names_free(&b->topics);
	free(b->ring);
	free(b->client_id);
	free(b->gateway_id);
	free(b);
}

static sink *mqtt_open(const void *opts, const sink_env *env, sink_limits *limits, char *err, size_t errlen)
{
	const mqtt_bridge_opts *o = opts;
	char why[256];
	sink *b = calloc(1, sizeof *b);
	if (!b) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	/* no mosquitto_lib_init(): on Linux it only seeds rand(), and its cleanup would unload
	 * OpenSSL configuration under the daemon's own broker connection */
	b->o = o;
	if (msgsink_tmpl_compile(&b->topic, o->topic, why, sizeof why)) {
		tg_seterr(err, errlen, TG_EINVAL, "mqtt: topic \"%s\": %s", o->topic, why);
		goto fail;
	}
	if (o->tls && (!*o->cert_file) != (!*o->key_file)) {
		tg_seterr(err, errlen, TG_EINVAL, "mqtt: cert_file and key_file go together");
		goto fail;
	}
	if (!o->tls && *o->cert_file) {
		tg_seterr(err, errlen, TG_EINVAL, "mqtt: cert_file is set but tls = false");
		goto fail;
	}
	if (*o->password && !*o->username) {
		tg_seterr(err, errlen, TG_EINVAL, "mqtt: password without username");
		goto fail;
	}
	const char *gw = env && env->gateway_id ? env->gateway_id : "";
	size_t ring = 16;
	while (ring < 2 * (size_t)o->max_inflight + 16)
		ring *= 2;
	if (!(b->gateway_id = strdup(gw)) || !(b->client_id = strdup(*o->client_id ? o->client_id : gw)) ||
	    !(b->ring = malloc(ring * sizeof *b->ring)) || sink_mqtt_rate_init(&b->rate, (size_t)o->max_rate)) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	if (!*b->client_id) {
		tg_seterr(err, errlen, TG_EINVAL, "mqtt: client_id is empty and so is gateway_id");
		goto fail;
	}
	b->ring_mask = ring - 1;
	for (size_t i = 0; i < ring; i++)
		b->ring[i].idx = -1;
	limits->max_records = (size_t)o->max_records;
	limits->max_bytes = 8u << 20;
	limits->max_age_ms = 0;
	return b;
fail:
	mqtt_close(b);
	return NULL;
}

/* Publish record i of the batch. 0 when it is in flight; SINK_POISON-worthy refusals set
 * results[i]; a connection failure returns TG_ENET. */
static int publish_one(sink *b, const sink_record *r, const char *topic, size_t i, sink_status *results, char *err,
		       size_t errlen)
{
	mosquitto_property *props = NULL;
	char t[128];
	int mid = 0, rc;
	if (b->o->protocol == 0 && b->o->properties &&
	    (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "msg_id", r->msg_id) ||
	     mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json"))) {
		mosquitto_property_free_all(&props);
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	}
	rc = mosquitto_publish_v5(b->mosq, &mid, topic, (int)r->len, r->data, 1, false, props);
	mosquitto_property_free_all(&props);
	switch (rc) {
	case MOSQ_ERR_SUCCESS: {
		slot *sl = &b->ring[(size_t)mid & b->ring_mask];
		sl->idx = (int32_t)i;
		sl->mid = (uint16_t)mid;
		b->inflight++;
		return 0;
	}
	case MOSQ_ERR_PAYLOAD_SIZE:
	case MOSQ_ERR_OVERSIZE_PACKET: /* over the maximum packet size the remote announced */
	case MOSQ_ERR_MALFORMED_UTF8:
	case MOSQ_ERR_INVAL:
		results[i] = SINK_POISON;
		b->answered++;
		tg_seterr(err, errlen, TG_EPERM, "record %s refused before sending: %s", r->msg_id,
			  mosq_text(rc, t, sizeof t));
		return 0;
	case MOSQ_ERR_NOMEM:
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	default:
		return tg_seterr(err, errlen, TG_ENET, "publish: %s%s%s", mosq_text(rc, t, sizeof t), b->lib_err[0] ? ": " : "",
				 b->lib_err);
	}
}

static int mqtt_send(sink *b, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms, char *err,
		     size_t errlen)
{
	const mqtt_bridge_opts *o = b->o;
	char why[384] = "", poison_why[256] = "", t[128];
	size_t npoison = 0;
	int rc = 0;

	/* 1. screen: what the remote could never take is dead-lettered even while it is down */
	if (msgsink_names_expand(&b->topics, &b->topic, o->prefix, b->gateway_id, recs, n))
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		results[i] = SINK_RETRY;
		if (sink_mqtt_check(&recs[i], msgsink_name(&b->topics, i), b->topics.len[i], (size_t)o->max_payload,
				    (size_t)o->max_topic_bytes, (size_t)o->max_topic_levels, poison_why[0] ? why : poison_why,
				    poison_why[0] ? sizeof why : sizeof poison_why) == SINK_POISON) {
			results[i] = SINK_POISON;
			npoison++;
		}
	}
	if (npoison == n) {
		tg_seterr(err, errlen, TG_EPERM, "%s", poison_why);
		return 0;
	}

	/* 2. a connection (the forwarder's backoff paces the attempts) */
	if (!b->mosq || b->state != ST_UP) {
		rc = bridge_connect(b, why, sizeof why);
		if (rc) {
			msgsink_reason(err, errlen, rc, poison_why, "", why);
			return npoison ? 0 : rc;
		}
	}

	/* 3. the window */
	b->results = results;
	b->inflight = 0;
	b->answered = npoison;
	b->puback_poison[0] = b->puback_retry[0] = '\0';
	b->recs = recs;
	b->last_progress_ms = tg_mono_ms();
	size_t next = 0, acked = 0;
	why[0] = '\0';
	while (b->answered < n) {
		int64_t now = tg_mono_ms(), wait = 100;
		while (b->inflight < (size_t)o->max_inflight && next < n) {
			if (results[next] == SINK_POISON) {
				next++;
				continue;
			}
			int64_t d = sink_mqtt_rate_delay(&b->rate, now);
			if (d > 0) {
				wait = d;
				break;
			}
			if (!b->inflight)
				b->last_progress_ms = now; /* the ack clock starts with the first in flight */
			size_t before = b->answered;
			rc = publish_one(b, &recs[next], msgsink_name(&b->topics, next), next, results, why, sizeof why);
			if (rc)
				break;
			if (b->answered > before) { /* refused locally: poison, reason kept */
				if (!poison_why[0])
					snprintf(poison_why, sizeof poison_why, "%s", why);
				why[0] = '\0';
			}
			sink_mqtt_rate_note(&b->rate, now);
			next++;
		}
		if (rc || b->answered == n)
			break;
		if (b->inflight) {
			int64_t left = b->last_progress_ms + o->ack_timeout_ms - now;
			if (left <= 0) {
				rc = tg_seterr(why, sizeof why, TG_ENET, "no PUBACK for %" PRId64 " ms with %zu in flight",
					       o->ack_timeout_ms, b->inflight);
				break;
			}
			if (wait > left)
				wait = left;
		}
		rc = mosquitto_loop(b->mosq, (int)wait, 1);
		if (rc) {
			tg_seterr(why, sizeof why, TG_ENET, "connection lost: %s%s%s",
				  mosq_text(rc, t, sizeof t), b->lib_err[0] ? ": " : "",
				  b->lib_err);
			rc = TG_ENET;
			break;
		}
		if (b->state != ST_UP) {
			rc = tg_seterr(why, sizeof why, TG_ENET, "disconnected by the remote%s%s", b->lib_err[0] ? ": " : "",
				       b->lib_err);
			break;
		}
	}
	for (size_t i = 0; i < n; i++)
		acked += results[i] == SINK_OK;
	b->results = NULL;
	for (size_t i = 0; i <= b->ring_mask; i++)
		b->ring[i].idx = -1;
	if (rc == TG_ENOMEM) {
		drop(b);
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	}
	if (rc) {
		/* what is in flight stays RETRY; a fresh connection sends it again (same msg_id) */
		LOG_WARN("mqtt-bridge", "msg=\"dropping the connection\" host=%s acked=%zu of=%zu in_flight=%zu err=\"%s\"",
			 o->host, acked, n, b->inflight, why);
		drop(b);
		b->inflight = 0;
	}
	size_t retry = 0;
	for (size_t i = 0; i < n; i++)
		retry += results[i] == SINK_RETRY;
	msgsink_reason(err, errlen, rc ? rc : retry ? TG_ERETRY : TG_EPERM, poison_why, b->puback_poison,
		       retry ? (why[0] ? why : b->puback_retry) : "");
	b->recs = NULL;
	if (retry == n)
		return rc ? rc : TG_ERETRY;
	return 0;
}

static void mqtt_idle(sink *b, int64_t now_ms)
{
	char t[128];
	if (!b->mosq)
		return;
	int rc = mosquitto_loop(b->mosq, 0, 1); /* reads PINGRESP, sends PINGREQ when due */
	if (rc || b->state != ST_UP) {
		LOG_WARN("mqtt-bridge", "msg=\"connection lost while idle; reconnecting with the next batch\" host=%s err=\"%s%s%s\"",
			 b->o->host, rc ? mosq_text(rc, t, sizeof t) : "disconnected", b->lib_err[0] ? ": " : "", b->lib_err);
		drop(b);
	}
}

const sink_ops sink_mqtt_ops = {
	.conf = {.type = "mqtt", .options = mqtt_options, .options_size = sizeof(mqtt_bridge_opts)},
	.open = mqtt_open,
	.send = mqtt_send,
	.close = mqtt_close,
	.idle = mqtt_idle,
};
