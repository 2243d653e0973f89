/*
 * identity.c — see identity.h. The probe is a short, blocking libmosquitto session of its
 * own (clean start, client id <client_id>-idprobe), run before the daemon's own connection
 * exists, so nothing it does can touch the persistent session or its queued messages.
 */
#include "mqtt/identity.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"

#define PROBE_FORGED_VALUE "tidegate-identity-probe-forged"

int identity_thing(identity_mode mode, const char *topic, const struct mqtt5__property *props, char *out,
		   size_t outlen)
{
	if (mode == IDENTITY_STAMPED) {
		for (const mosquitto_property *p = (const mosquitto_property *)props; p; p = mosquitto_property_next(p)) {
			if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY)
				continue;
			char *name = NULL, *value = NULL;
			int hit = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false) &&
				  name && strcmp(name, IDENTITY_PROPERTY) == 0 && value && *value && strlen(value) < outlen;
			if (hit)
				snprintf(out, outlen, "%s", value);
			free(name);
			free(value);
			if (hit)
				return 0;
		}
	}
	/* The topic level the broker ACL (or the plugin's policy) ties to the publisher. */
	const char *slash = strchr(topic, '/');
	if (!slash)
		return TG_EINVAL;
	const char *start = slash + 1, *end = strchr(start, '/');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	if (n == 0 || n >= outlen)
		return TG_EINVAL;
	memcpy(out, start, n);
	out[n] = '\0';
	return 0;
}

/* ---- the start-up probe ------------------------------------------------------------- */

enum { PROBE_WAITING = 0, PROBE_STRIPPED, PROBE_PASSED };

typedef struct probe {
	const char *nonce;
	int connack;  /* -1 until the CONNACK */
	int suback;   /* -1 until the SUBACK, else granted QoS or reason code */
	int puback;   /* -1 until the PUBACK, else its reason code */
	int outcome;  /* PROBE_* */
	int disconnected;
} probe;

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
	((probe *)obj)->connack = rc;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	((probe *)obj)->disconnected = 1;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
			 const mosquitto_property *props)
{
	((probe *)obj)->suback = n > 0 ? granted[0] : MQTT_RC_UNSPECIFIED;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
	((probe *)obj)->puback = reason;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m,
		       const mosquitto_property *props)
{
	probe *p = obj;
	size_t n = strlen(p->nonce);
	if ((size_t)m->payloadlen != n || memcmp(m->payload, p->nonce, n) != 0)
		return;
	int found = 0;
	for (const mosquitto_property *q = props; q && !found; q = mosquitto_property_next(q)) {
		char *name = NULL, *value = NULL;
		if (mosquitto_property_identifier(q) == MQTT_PROP_USER_PROPERTY &&
		    mosquitto_property_read_string_pair(q, MQTT_PROP_USER_PROPERTY, &name, &value, false) && name &&
		    strcmp(name, IDENTITY_PROPERTY) == 0)
			found = 1;
		free(name);
		free(value);
	}
	p->outcome = found ? PROBE_PASSED : PROBE_STRIPPED;
}

static int got_connack(const probe *p) { return p->connack >= 0; }
static int got_suback(const probe *p) { return p->suback >= 0; }
/* the probe itself came back, or the broker refused it (a PUBACK reason code) */
static int got_answer(const probe *p) { return p->outcome != PROBE_WAITING || p->puback >= 0x80; }

/* Run the network until done(p), the connection breaks or the deadline passes. 0 when done. */
static int pump(struct mosquitto *mosq, probe *p, int (*done)(const probe *), int64_t deadline)
{
	while (!done(p)) {
		if (p->disconnected || tg_mono_ms() >= deadline)
			return -1;
		int rc = mosquitto_loop(mosq, 50, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			return -1;
	}
	return 0;
}

int identity_probe(const tg_config *cfg, int timeout_ms, char *err, size_t errlen)
{
	unsigned char rnd[12];
	char nonce[2 * sizeof rnd + 1], topic[128], cid[256];
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		int64_t t = tg_wall_ms() ^ ((int64_t)getpid() << 20);
		for (size_t i = 0; i < sizeof rnd; i++)
			rnd[i] = (unsigned char)(t >> (8 * (i % 8)));
	}
	for (size_t i = 0; i < sizeof rnd; i++)
		snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
	snprintf(topic, sizeof topic, "%s%s", IDENTITY_PROBE_PREFIX, nonce);
	snprintf(cid, sizeof cid, "%s-idprobe", cfg->client_id);
	probe p = {.nonce = nonce, .connack = -1, .suback = -1, .puback = -1};
	int64_t deadline = tg_mono_ms() + timeout_ms;
	mosquitto_property *props = NULL;
	int rc = TG_ENET, mrc;
	struct mosquitto *mosq = mosquitto_new(cid, true, &p);
	if (!mosq)
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_connect_v5_callback_set(mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(mosq, on_disconnect);
	mosquitto_subscribe_v5_callback_set(mosq, on_subscribe);
	mosquitto_publish_v5_callback_set(mosq, on_publish);
	mosquitto_message_v5_callback_set(mosq, on_message);
	if (cfg->broker_tls) {
		mrc = mosquitto_tls_set(mosq, cfg->ca_file, NULL, cfg->cert_file, cfg->key_file, NULL);
		if (mrc != MOSQ_ERR_SUCCESS) {
			rc = tg_seterr(err, errlen, TG_EPERM, "TLS files: %s", mosquitto_strerror(mrc));
			goto out;
		}
		mosquitto_tls_opts_set(mosq, 1, "tlsv1.2", NULL);
	}
	mrc = mosquitto_connect_bind_v5(mosq, cfg->broker_host, (int)cfg->broker_port, 30, NULL, NULL);
	if (mrc != MOSQ_ERR_SUCCESS) {
		tg_seterr(err, errlen, TG_ENET, "cannot connect to %s:%lld: %s", cfg->broker_host,
			  (long long)cfg->broker_port, mosquitto_strerror(mrc));
		goto out;
	}
	if (pump(mosq, &p, got_connack, deadline) || p.connack != 0) {
		if (p.connack > 0)
			tg_seterr(err, errlen, TG_ENET, "the broker refused the probe's connection: %s",
				  mosquitto_reason_string(p.connack));
		else
			tg_seterr(err, errlen, TG_ENET, "no CONNACK from %s:%lld within %d ms", cfg->broker_host,
				  (long long)cfg->broker_port, timeout_ms);
		goto out;
	}
	mosquitto_subscribe_v5(mosq, NULL, topic, 1, 0, NULL);
	if (pump(mosq, &p, got_suback, deadline)) {
		tg_seterr(err, errlen, TG_ENET, "no SUBACK for %s within %d ms", topic, timeout_ms);
		goto out;
	}
	if (p.suback >= 0x80) {
		rc = tg_seterr(err, errlen, TG_EPERM,
			       "the broker refused the gateway's subscription to %s (%s): grant it %s# to let "
			       "the daemon check the identity stamping",
			       topic, mosquitto_reason_string(p.suback), IDENTITY_PROBE_PREFIX);
		goto out;
	}
	if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IDENTITY_PROPERTY,
					       PROBE_FORGED_VALUE) != MOSQ_ERR_SUCCESS) {
		rc = tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto out;
	}
	mrc = mosquitto_publish_v5(mosq, NULL, topic, (int)strlen(nonce), nonce, 1, false, props);
	if (mrc != MOSQ_ERR_SUCCESS) {
		tg_seterr(err, errlen, TG_ENET, "cannot publish the probe: %s", mosquitto_strerror(mrc));
		goto out;
	}
	pump(mosq, &p, got_answer, deadline);
	if (p.outcome == PROBE_STRIPPED) {
		rc = 0;
	} else if (p.outcome == PROBE_PASSED) {
		rc = tg_seterr(err, errlen, TG_EPERM,
			       "the broker passed a forged '%s' user property through unchanged: it does not run the "
			       "tidegate auth plugin, so any device could claim any identity; load the plugin "
			       "(docs/registry.md) or set [broker] identity = topic",
			       IDENTITY_PROPERTY);
	} else if (p.puback >= 0x80) {
		rc = tg_seterr(err, errlen, TG_EPERM,
			       "the broker refused the gateway's probe publish on %s (%s): grant it %s# to let the "
			       "daemon check the identity stamping",
			       topic, mosquitto_reason_string(p.puback), IDENTITY_PROBE_PREFIX);
	} else {
		tg_seterr(err, errlen, TG_ENET, "the identity probe on %s did not come back within %d ms", topic,
			  timeout_ms);
	}
out:
	mosquitto_property_free_all(&props);
	if (p.connack == 0 && !p.disconnected) {
		mosquitto_disconnect_v5(mosq, 0, NULL);
		mosquitto_loop(mosq, 10, 1);
	}
	mosquitto_destroy(mosq);
	return rc;
}
