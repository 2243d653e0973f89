/*
 * broker.c — see broker.h.
 */
#include "mqtt/broker.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "mqtt/mqtt_io.h"

#define SESSION_EXPIRY_S (7 * 24 * 3600)
#define READ_BATCH 128 /* packets read per broker_loop call before the caller's own work */
/* how long an attempt waits for its CONNACK before it connects again (see broker_loop) */
#define CONNACK_TIMEOUT_MS 5000
/* The receive maximum we announce, and the bound mqtt_io keeps itself (the broker does
 * not, see mqtt_io.c): messages received and not yet acknowledged. It must hold a full
 * commit group plus a read round, or reading would wait for a commit that waits for
 * reading. */
#define RECEIVE_MAX_MIN 1000
/* The broker's counters of what it dropped and holds (retained, refreshed every
 * sys_interval): surfaced in /metrics, because a message the broker acknowledged to a device
 * and then dropped for want of queue room is lost, and only the broker knows. */
static const char *const SYS_TOPICS[] = {"$SYS/broker/publish/messages/dropped", "$SYS/broker/store/messages/count",
					 "$SYS/broker/store/messages/bytes"};
#define NSYS (sizeof SYS_TOPICS / sizeof SYS_TOPICS[0])
/* The request topics of AWS IoT's Device Shadow service (classic and named shadows), served
 * by the daemon when [shadow] enabled is on (gateway/shadow/shadow.h). */
static const char *const SHADOW_FILTERS[] = {
	"$aws/things/+/shadow/update",        "$aws/things/+/shadow/get",        "$aws/things/+/shadow/delete",
	"$aws/things/+/shadow/name/+/update", "$aws/things/+/shadow/name/+/get", "$aws/things/+/shadow/name/+/delete"};

struct broker {
	struct mosquitto *mosq;
	const tg_config *cfg;
	broker_message_fn on_message;
	void *ud;
	char **filters;
	size_t nfilters;
	char **subs; /* filters then the shadow filters: what one SUBSCRIBE asks for (borrowed strings) */
	broker_stats st;
	int want_connect;
	int was_up; /* a CONNACK came since the last loss: the next reconnect goes at once */
	int64_t connecting_ms; /* when the CONNECT of the attempt under way went out (0: none) */
	int64_t next_attempt_ms;
	int64_t delay_ms;
	/* The network loop and its hold (mqtt_io.h). Everything libmosquitto writes — the
	 * PUBACK of every message above all — waits in the hold until broker_flush(), which the
	 * daemon calls once the outbox has committed the records those PUBACKs acknowledge: a
	 * message is acknowledged only when it is durable, and the PUBACKs of a commit group
	 * leave in one TLS record. */
	mqtt_io io;
	int urgent; /* a PUBLISH is waiting in the buffer */
	int sys_mid; /* the $SYS subscription's packet id (its refusal is not an error) */
	broker_puback_fn on_puback;
	void *puback_ud;
};

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
	broker *b = obj;
	b->connecting_ms = 0;
	if (rc != 0) {
		LOG_WARN("broker", "msg=\"connect refused\" reason=\"%s\"", mosquitto_reason_string(rc));
		return;
	}
	b->st.connected = 1;
	b->st.connects++;
	mqtt_io_connected(&b->io); /* read-ahead and the write buffer, for this connection */
	b->was_up = 1;
	b->delay_ms = b->cfg->reconnect_min_ms;
	LOG_INFO("broker", "msg=connected host=%s port=%lld session_present=%d", b->cfg->broker_host,
		 (long long)b->cfg->broker_port, flags & 1);
	/* Always, session present or not (a broker restarted from an old autosave may hold a
	 * session without them), and all in one SUBSCRIBE: the broker takes a packet's filters
	 * in together, and the auth plugin's wait_for_gateway lets devices in at the first. */
	int nsub = (int)b->nfilters + (b->cfg->shadow_enabled ? (int)(sizeof SHADOW_FILTERS / sizeof SHADOW_FILTERS[0]) : 0);
	if (nsub > 0) {
		int src = mosquitto_subscribe_multiple(mosq, NULL, nsub, b->subs, (int)b->cfg->sub_qos, 0, NULL);
		if (src != MOSQ_ERR_SUCCESS)
			LOG_ERROR("broker", "msg=\"subscribe failed\" filters=%d err=\"%s\"", nsub, mosquitto_strerror(src));
	}
	/* QoS 0, retained: the current values arrive at once */
	mosquitto_subscribe_multiple(mosq, &b->sys_mid, (int)NSYS, (char *const *)SYS_TOPICS, 0, 0, NULL);
	mqtt_io_flush(&b->io); /* nothing is acknowledged yet on this connection */
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	broker *b = obj;
	mqtt_io_forget(&b->io); /* the buffer went with the connection's SSL */
	if (b->st.connected)
		b->st.disconnects++;
	b->st.connected = 0;
	if (b->want_connect)
		LOG_WARN("broker", "msg=disconnected reason=\"%s\"", rc ? mosquitto_strerror(rc) : "clean");
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m,
		       const mosquitto_property *props)
{
	broker *b = obj;
	if (m->topic[0] == '$' && strncmp(m->topic, "$SYS/", 5) == 0) {
		_Atomic int64_t *dst[NSYS] = {&b->st.sys_dropped, &b->st.sys_stored_messages, &b->st.sys_stored_bytes};
		for (size_t i = 0; i < NSYS; i++)
			if (strcmp(m->topic, SYS_TOPICS[i]) == 0 && m->payloadlen > 0 && m->payloadlen < 32) {
				char num[32];
				memcpy(num, m->payload, (size_t)m->payloadlen);
				num[m->payloadlen] = '\0';
				atomic_store(dst[i], strtoll(num, NULL, 10));
			}
		return; /* the broker's, not telemetry */
	}
	b->st.received++;
	if (m->qos > 0) /* its PUBACK is in the hold now */
		mqtt_io_received(&b->io, tg_wall_ms());
	b->on_message(b->ud, m->topic, m->payload, (size_t)m->payloadlen, m->qos, props);
}

/* libmosquitto calls this for a QoS 1 PUBACK, whatever its reason code, and for a QoS 0
 * publish once it is written (reason 0). */
static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
	broker *b = obj;
	if (reason >= 0x80)
		b->st.publish_refused++;
	else
		b->st.published++;
	if (b->on_puback)
		b->on_puback(b->puback_ud, mid, reason);
}

void broker_set_puback_fn(broker *b, broker_puback_fn fn, void *ud)
{
	b->on_puback = fn;
	b->puback_ud = ud;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
			 const mosquitto_property *props)
{
	broker *b = obj;
	for (int i = 0; i < n; i++) {
		if (granted[i] < 0x80)
			continue;
		if (mid == b->sys_mid) /* an ACL without $SYS for us: the figures stay unknown */
			LOG_INFO("broker", "msg=\"broker refused its $SYS figures; tidegate_broker_dropped_messages stays -1\" topic=%s",
				 i < (int)NSYS ? SYS_TOPICS[i] : "?");
		else
			LOG_ERROR("broker", "msg=\"subscription refused by broker\" reason=%d", granted[i]);
	}
}

broker *broker_new(const tg_config *cfg, broker_message_fn cb, void *ud, char *err, size_t errlen)
{
	broker *b = calloc(1, sizeof *b);
	char *list = NULL;
	if (!b)
		goto oom;
	b->cfg = cfg;
	atomic_store(&b->st.sys_dropped, -1);
	atomic_store(&b->st.sys_stored_messages, -1);
	atomic_store(&b->st.sys_stored_bytes, -1);
	b->on_message = cb;
	b->ud = ud;
	b->delay_ms = cfg->reconnect_min_ms;
	if (!(list = strdup(cfg->subscribe)))
		goto oom;
	for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		size_t n = strlen(tok);
		while (n && tok[n - 1] == ' ')
			tok[--n] = '\0';
		if (!n)
			continue;
		if (mosquitto_sub_topic_check(tok) != MOSQ_ERR_SUCCESS) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [broker] subscribe: '%s' is not a valid topic filter", cfg->path, tok);
			goto fail;
		}
		char **nf = realloc(b->filters, (b->nfilters + 1) * sizeof *nf);
		if (!nf)
			goto oom;
		b->filters = nf;
		if (!(b->filters[b->nfilters] = strdup(tok)))
			goto oom;
		b->nfilters++;
	}
	free(list);
	list = NULL;
	if (!(b->subs = calloc(b->nfilters + sizeof SHADOW_FILTERS / sizeof SHADOW_FILTERS[0] + 1, sizeof *b->subs)))
		goto oom;
	for (size_t i = 0; i < b->nfilters; i++)
		b->subs[i] = b->filters[i];
	for (size_t i = 0; i < sizeof SHADOW_FILTERS / sizeof SHADOW_FILTERS[0]; i++)
		b->subs[b->nfilters + i] = (char *)SHADOW_FILTERS[i];
	b->mosq = mosquitto_new(cfg->client_id, cfg->clean_start ? true : false, b);
	if (!b->mosq)
		goto oom;
	int64_t group = cfg->commit_max_records > 0 ? cfg->commit_max_records : 500;
	int rmax = group + 2 * READ_BATCH > RECEIVE_MAX_MIN ? (int)(group + 2 * READ_BATCH) : RECEIVE_MAX_MIN;
	if (rmax > 65535)
		rmax = 65535;
	mqtt_io_init(&b->io, b->mosq, rmax);
	mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	/* we process one message at a time; let the broker keep the rest queued for us */
	mosquitto_int_option(b->mosq, MOSQ_OPT_RECEIVE_MAXIMUM, rmax);
	/* No Nagle on our socket: mqtt_io already coalesces everything a commit releases into
	 * one write, and Nagle held the next write (PUBACKs, shadow answers) until the broker
	 * acknowledged the previous one — up to its delayed-ACK timer (40 ms) when the broker had
	 * nothing to send back. Costs the broker nothing (its own socket keeps its setting). */
	mosquitto_int_option(b->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_v5_callback_set(b->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(b->mosq, on_disconnect);
	mosquitto_message_v5_callback_set(b->mosq, on_message);
	mosquitto_subscribe_v5_callback_set(b->mosq, on_subscribe);
	mosquitto_publish_v5_callback_set(b->mosq, on_publish);
	if (cfg->broker_tls) {
		int rc = mosquitto_tls_set(b->mosq, cfg->ca_file, NULL, cfg->cert_file, cfg->key_file, NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [broker] TLS files: %s (ca_file=%s cert_file=%s)", cfg->path,
				  mosquitto_strerror(rc), cfg->ca_file, cfg->cert_file);
			goto fail;
		}
		mosquitto_tls_opts_set(b->mosq, 1, "tlsv1.2", NULL);
	}
	return b;
oom:
	tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
fail:
	free(list);
	broker_free(b);
	return NULL;
}

void broker_free(broker *b)
{
	if (!b)
		return;
	mqtt_io_free(&b->io);
	if (b->mosq)
		mosquitto_destroy(b->mosq);
	for (size_t i = 0; i < b->nfilters; i++)
		free(b->filters[i]);
	free(b->filters);
	free(b->subs);
	free(b);
}

static void try_connect(broker *b)
{
	mqtt_io_forget(&b->io); /* a reconnect frees the old SSL (and the buffer with it) */
	mosquitto_property *props = NULL;
	if (!b->cfg->clean_start)
		mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, SESSION_EXPIRY_S);
	int rc = mosquitto_connect_bind_v5(b->mosq, b->cfg->broker_host, (int)b->cfg->broker_port,
					   (int)(b->cfg->keepalive_s / 1000), NULL, props);
	mosquitto_property_free_all(&props);
	if (rc != MOSQ_ERR_SUCCESS) {
		LOG_WARN("broker", "msg=\"connect failed\" host=%s port=%lld err=\"%s\" retry_ms=%lld", b->cfg->broker_host,
			 (long long)b->cfg->broker_port, mosquitto_strerror(rc), (long long)b->delay_ms);
		b->next_attempt_ms = tg_mono_ms() + b->delay_ms;
		b->delay_ms = b->delay_ms * 2 > b->cfg->reconnect_max_ms ? b->cfg->reconnect_max_ms : b->delay_ms * 2;
	} else {
		b->next_attempt_ms = 0;
		b->connecting_ms = tg_mono_ms();
	}
}

int broker_start(broker *b, char *err, size_t errlen)
{
	b->want_connect = 1;
	try_connect(b);
	return 0;
}

int broker_loop(broker *b, int timeout_ms, int64_t now_ms)
{
	if (b->next_attempt_ms) {
		int64_t now = tg_mono_ms();
		if (now < b->next_attempt_ms) {
			int64_t left = b->next_attempt_ms - now;
			struct timespec ts = {0, (long)((left < timeout_ms ? left : timeout_ms) * 1000000L)};
			nanosleep(&ts, NULL);
			return 0;
		}
		try_connect(b);
		return 0;
	}
	/* An attempt whose CONNACK does not come: the immediate reconnect after a broker's
	 * kill -9 can reach the dying process's listen socket, and the connection then sat
	 * there until the keepalive (30 s) ran out while the restarted broker kept its devices
	 * waiting for us (test_broker_kill). Give up on it and connect again. */
	if (b->connecting_ms && !b->st.connected && tg_mono_ms() - b->connecting_ms > CONNACK_TIMEOUT_MS) {
		LOG_WARN("broker", "msg=\"no CONNACK, connecting again\" waited_ms=%d retry_ms=%lld", CONNACK_TIMEOUT_MS,
			 (long long)b->delay_ms);
		b->connecting_ms = 0;
		b->next_attempt_ms = tg_mono_ms() + b->delay_ms;
		b->delay_ms = b->delay_ms * 2 > b->cfg->reconnect_max_ms ? b->cfg->reconnect_max_ms : b->delay_ms * 2;
		return 0;
	}
	int rc = mqtt_io_step(&b->io, timeout_ms, READ_BATCH);
	if (rc == MOSQ_ERR_SUCCESS)
		return 0;
	b->connecting_ms = 0;
	if (!b->want_connect)
		return 0;
	/* lost the connection (or never had it): reconnect with backoff */
	if (b->st.connected) {
		b->st.connected = 0;
		b->st.disconnects++;
	}
	/* After a connection that was up, the first attempt goes at once: after a broker
	 * restart every moment without our subscription is a moment its devices wait
	 * (wait_for_gateway) or, without the plugin, publish to nobody. The backoff starts with
	 * the attempts after it (and a connection lost before its CONNACK waits its turn, so a
	 * broker that drops us at once is not hammered). */
	int64_t delay = b->was_up ? 0 : b->delay_ms;
	LOG_WARN("broker", "msg=\"connection lost\" err=\"%s\" retry_ms=%lld", mosquitto_strerror(rc), (long long)delay);
	b->next_attempt_ms = tg_mono_ms() + delay;
	if (b->was_up)
		b->delay_ms = b->cfg->reconnect_min_ms;
	else
		b->delay_ms = b->delay_ms * 2 > b->cfg->reconnect_max_ms ? b->cfg->reconnect_max_ms : b->delay_ms * 2;
	b->was_up = 0;
	/* the first attempt goes through mosquitto_reconnect to keep the session state */
	return 0;
}

int broker_flush(broker *b)
{
	/* a publish made in the message callback is still in libmosquitto's queue until the
	 * next round writes it: it stays urgent until then */
	if (!mosquitto_want_write(b->mosq))
		b->urgent = 0;
	return mqtt_io_flush(&b->io);
}

int broker_urgent(const broker *b) { return b->urgent; }

void broker_discard(broker *b) { mqtt_io_discard(&b->io); }

void broker_drop(broker *b)
{
	if (!b->st.connected)
		return;
	mqtt_io_forget(&b->io); /* the held PUBACKs never leave */
	b->was_up = 0; /* a drop of our own (a group not stored) keeps its backoff */
	mosquitto_disconnect_v5(b->mosq, MQTT_RC_UNSPECIFIED, NULL);
	b->st.connected = 0;
	b->st.disconnects++;
	b->next_attempt_ms = tg_mono_ms() + b->delay_ms;
	b->delay_ms = b->delay_ms * 2 > b->cfg->reconnect_max_ms ? b->cfg->reconnect_max_ms : b->delay_ms * 2;
}

uint64_t broker_unacked(const broker *b, int64_t *oldest_ms, uint64_t *throttled)
{
	if (oldest_ms)
		*oldest_ms = atomic_load(&b->io.oldest_unacked_ms);
	if (throttled)
		*throttled = atomic_load(&b->io.throttled);
	return mqtt_io_unacked(&b->io);
}

int broker_receive_max(const broker *b) { return b->io.max_unacked; }

int broker_publish_v5(broker *b, const char *topic, const void *payload, size_t len, int qos, int retain,
		      const struct mqtt5__property *props, int *mid)
{
	if (!b->st.connected) {
		b->st.publish_errors++;
		return TG_ENET;
	}
	int rc = mosquitto_publish_v5(b->mosq, mid, topic, (int)len, payload, qos, retain ? true : false,
				      (const mosquitto_property *)props);
	b->urgent = 1;
	if (rc != MOSQ_ERR_SUCCESS) {
		b->st.publish_errors++;
		return rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST ? TG_ENET : TG_EINVAL;
	}
	return 0; /* counted as published when acknowledged (on_publish) */
}

int broker_publish(broker *b, const char *topic, const void *payload, size_t len, int qos, int retain)
{
	return broker_publish_v5(b, topic, payload, len, qos, retain, NULL, NULL);
}

void broker_disconnect(broker *b, int timeout_ms)
{
	b->want_connect = 0;
	if (!b->st.connected)
		return;
	/* give outgoing QoS 1 publishes (alerts) a moment to be acknowledged */
	int64_t until = tg_mono_ms() + timeout_ms;
	mqtt_io_unbuffer(&b->io, timeout_ms);
	while (mosquitto_want_write(b->mosq) && tg_mono_ms() < until)
		mosquitto_loop(b->mosq, 10, 1);
	/* libmosquitto closes the socket right after writing DISCONNECT. Closing a socket
	 * with unread data sends a RST, and a RST makes the broker's kernel discard what it
	 * has not read yet — our last PUBACKs — so those messages would be delivered again
	 * after a restart. Keep a duplicate of the descriptor so the close only drops
	 * libmosquitto's reference, then read (and discard: they are unacknowledged, the
	 * broker keeps them for our session) until the broker closes its side. */
	int fd = mosquitto_socket(b->mosq) >= 0 ? dup(mosquitto_socket(b->mosq)) : -1;
	mosquitto_disconnect_v5(b->mosq, 0, NULL);
	mosquitto_loop(b->mosq, 10, 1);
	if (fd >= 0) {
		char sink_buf[16384];
		until = tg_mono_ms() + 2000;
		while (tg_mono_ms() < until) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			if (poll(&pfd, 1, 50) < 0)
				break;
			if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(fd, sink_buf, sizeof sink_buf);
				if (n <= 0)
					break;
			}
		}
		close(fd);
	}
	b->st.connected = 0;
}

const broker_stats *broker_stats_get(const broker *b) { return &b->st; }
