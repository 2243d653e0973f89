/*
 * plugin.c — the tidegate Mosquitto auth plugin (plugin API v5, Mosquitto 2.0).
 *
 * Identity comes from the TLS client certificate, never from the username: on
 * MOSQ_EVT_BASIC_AUTH the plugin takes the peer certificate (mosquitto_client_certificate),
 * computes its SHA-256 fingerprint and looks it up in the device registry (read-only, WAL).
 * A client connects only when the certificate belongs to a registered thing, its status is
 * ACTIVE and the MQTT client id equals the thing name; a certificate whose CN is the
 * configured gateway CN (or another configured service CN) is a service identity instead,
 * with its own policy and no registry entry. Each accepted
 * client gets an entry (keyed by its struct mosquitto *) holding its identity and its policy
 * resolved for its variables, so MOSQ_EVT_ACL_CHECK is a table lookup plus string matching.
 * MOSQ_EVT_MESSAGE stamps every message a thing publishes with the user property
 * "tidegate-thing" = thing name, after removing any property of that name the client sent.
 *
 * Changes to the registry take effect without a restart: on MOSQ_EVT_TICK (every main-loop
 * turn, at least every 100 ms in 2.0.11) the plugin reads SQLite's data_version every
 * poll_ms (default 250 ms); when it moved, every connected thing is re-checked and one that
 * is no longer ACTIVE is denied at once and kicked (kicks happen only in the tick, never
 * inside another callback). The re-check runs in slices of at most revalidate_slice_ms
 * (default 10 ms) of work, one per tick and each followed by as long for everything else,
 * so 10,000 connected things (15-30 microseconds a check) never stop the broker's only
 * thread for a quarter of a second; a change during a pass starts the pass again, so the
 * last change is always checked in full. If the registry is missing, replaced or unreadable, things are
 * denied (the gateway is not: it does not depend on the registry) and one log line says why;
 * the handle is reopened when the file is back.
 *
 * With `wait_for_gateway on` no client but the gateway is let in until the gateway's own
 * client has subscribed since the broker started (seen as its first SUBSCRIBE that passes
 * the ACL check). Why: a broker restarted after a crash may not have the gateway's
 * persistent session (its last autosave came before it), and it would acknowledge device
 * messages that nobody is subscribed to; refused devices keep theirs and try again. Mosquitto
 * 2.0.11 lets a plugin answer a CONNECT only with 0x87 "not authorized" (which clients take
 * as final), so the wait is a connection closed without CONNACK, which every client treats
 * like a broker that is not up yet. Clients connected before the gateway left are not
 * touched: the gateway's session stays in the broker's memory and queues for it.
 *
 * With `use_identity_as_username true` Mosquitto 2.0 skips BASIC_AUTH; the plugin then
 * authenticates a client on its first ACL check and kicks it if that fails, so the listener
 * should rather leave use_identity_as_username off (see docs/registry.md).
 *
 * All state lives in the struct tg_auth handed to Mosquitto as userdata; the broker is
 * single-threaded, so nothing here locks. Nothing is allowed to crash the broker: every
 * failure path denies.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>
#include <openssl/x509.h>

#include "auth/policy.h"
#include "core/err.h"
#include "registry/registry.h"

#define LOGP "tidegate_auth: "

typedef struct attr_kv {
	char *key, *value;
} attr_kv;

typedef struct client_entry {
	struct client_entry *next; /* hash chain */
	const struct mosquitto *client;
	char *client_id;
	char fp[REGISTRY_FP_HEX + 1];
	char cn[REGISTRY_CN_MAX + 1];
	char thing[REGISTRY_NAME_MAX + 1];
	int svc; /* index into tg_auth.svcs for a service identity, -1 for a thing */
	int allowed;
	int offline; /* a service's persistent session after its connection closed (on_disconnect) */
	uint64_t checked_pass; /* the re-check pass (tg_auth.pass) that saw this entry last */
	attr_kv *attrs;
	size_t nattrs;
	policy_resolved *pol;
} client_entry;

enum jitr_mode { JITR_OFF, JITR_INACTIVE, JITR_ACTIVE };

/* A service identity: a certificate CN that is not a thing but a part of the system (the
 * gateway daemon, an operator's observer, a load generator) with its own policy. Its
 * messages carry no thing identity. svcs[0] is the gateway (gateway_cn, built-in policy
 * unless gateway_policy_file); more come from plugin_opt_identity_<CN> <policy file>. */
typedef struct service {
	char *cn;
	char *policy_path; /* NULL: the built-in gateway policy */
	policy *pol;
} service;

typedef struct tg_auth {
	mosquitto_plugin_id_t *pid;
	/* options */
	char *db_path, *policy_path, *prop_name;
	enum jitr_mode jitr;
	int64_t poll_ms;
	/* registry */
	registry *ro, *rw;
	dev_t db_dev;
	ino_t db_ino;
	int64_t version;
	int db_ok;
	char db_why[256];
	int64_t last_poll_ms;
	/* the re-check after a registry change, a slice per tick: the pass's number (entries of
	 * it are done), whether one is under way, the bucket it goes on at, its figures */
	uint64_t pass;
	int pass_active;
	size_t pass_cursor;
	size_t pass_checked, pass_kicked, pass_slices;
	int64_t pass_started_ms, pass_work_us;
	int64_t slice_end_us; /* when the last slice ended: the next waits as long as it worked */
	int64_t slice_ms;    /* option revalidate_slice_ms */
	size_t slice_batch;  /* option revalidate_batch: at most this many checks a slice (0: no limit) */
	/* policies */
	policy *thing_policy;
	service *svcs;
	size_t nsvcs;
	/* clients */
	client_entry **buckets;
	size_t nbuckets, nclients;
	char **kick;
	size_t nkick, capkick;
	/* wait_for_gateway: on, and whether the gateway has subscribed since the start */
	int wait_gateway, gateway_seen;
	uint64_t held; /* connections closed while waiting */
} tg_auth;

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void) { return mono_us() / 1000; }

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- client table -------------------------------------------------------------------- */

static size_t bucket_of(const tg_auth *a, const struct mosquitto *c)
{
	uint64_t h = (uint64_t)(uintptr_t)c;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h & (a->nbuckets - 1);
}

static void entry_free_contents(client_entry *e)
{
	for (size_t i = 0; i < e->nattrs; i++) {
		free(e->attrs[i].key);
		free(e->attrs[i].value);
	}
	free(e->attrs);
	e->attrs = NULL;
	e->nattrs = 0;
	policy_resolved_free(e->pol);
	e->pol = NULL;
}

static void entry_free(client_entry *e)
{
	if (!e)
		return;
	entry_free_contents(e);
	free(e->client_id);
	free(e);
}

static client_entry *table_find(const tg_auth *a, const struct mosquitto *c)
{
	for (client_entry *e = a->buckets[bucket_of(a, c)]; e; e = e->next)
		if (e->client == c)
			return e;
	return NULL;
}

static void table_remove(tg_auth *a, const struct mosquitto *c)
{
	client_entry **pp = &a->buckets[bucket_of(a, c)];
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->client == c) {
			client_entry *e = *pp;
			*pp = e->next;
			entry_free(e);
			a->nclients--;
			return;
		}
	}
}

/* Insert e, replacing an entry of the same client; grows the table past load 1. */
static void table_put(tg_auth *a, client_entry *e)
{
	table_remove(a, e->client);
	if (a->nclients >= a->nbuckets) {
		size_t nb = a->nbuckets * 2;
		client_entry **nbk = calloc(nb, sizeof *nbk);
		if (nbk) {
			client_entry **old = a->buckets;
			size_t onb = a->nbuckets;
			a->buckets = nbk;
			a->nbuckets = nb;
			for (size_t i = 0; i < onb; i++) {
				while (old[i]) {
					client_entry *x = old[i];
					old[i] = x->next;
					size_t b = bucket_of(a, x->client);
					x->next = nbk[b];
					nbk[b] = x;
				}
			}
			free(old);
			a->pass_cursor = 0; /* entries moved: go over the table again (done ones are skipped) */
		}
	}
	e->checked_pass = a->pass; /* authenticated just now, against the registry as it is */
	size_t b = bucket_of(a, e->client);
	e->next = a->buckets[b];
	a->buckets[b] = e;
	a->nclients++;
}

static void kick_later(tg_auth *a, const char *client_id)
{
	if (!client_id)
		return;
	for (size_t i = 0; i < a->nkick; i++)
		if (strcmp(a->kick[i], client_id) == 0)
			return;
	if (a->nkick == a->capkick) {
		size_t cap = a->capkick ? a->capkick * 2 : 16;
		char **n = realloc(a->kick, cap * sizeof *n);
		if (!n)
			return;
		a->kick = n;
		a->capkick = cap;
	}
	char *id = strdup(client_id);
	if (id)
		a->kick[a->nkick++] = id;
}

/* ---- registry state ------------------------------------------------------------------ */

static void db_close(tg_auth *a)
{
	registry_close(a->ro);
	registry_close(a->rw);
	a->ro = a->rw = NULL;
}

static void db_down(tg_auth *a, const char *why)
{
	if (a->db_ok || strcmp(a->db_why, why) != 0)
		mosquitto_log_printf(MOSQ_LOG_ERR,
				     LOGP "registry unavailable, denying things: path=%s reason=\"%s\"",
				     a->db_path, why);
	snprintf(a->db_why, sizeof a->db_why, "%s", why);
	a->db_ok = 0;
}

static void db_up(tg_auth *a)
{
	if (!a->db_ok)
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "registry available: path=%s", a->db_path);
	a->db_ok = 1;
	a->db_why[0] = '\0';
}

/* Make sure the read-only handle is open on the file currently at db_path. */
static int db_ensure(tg_auth *a)
{
	struct stat sb;
	if (stat(a->db_path, &sb) != 0) {
		char why[200];
		snprintf(why, sizeof why, "stat: %s", strerror(errno));
		db_close(a);
		db_down(a, why);
		return -1;
	}
	if (a->ro && (sb.st_dev != a->db_dev || sb.st_ino != a->db_ino))
		db_close(a); /* the file was replaced: read the new one */
	if (!a->ro) {
		char err[300];
		a->ro = registry_open(a->db_path, REGISTRY_RDONLY, 20, err, sizeof err);
		if (!a->ro) {
			db_down(a, err);
			return -1;
		}
		a->db_dev = sb.st_dev;
		a->db_ino = sb.st_ino;
		a->version = -1; /* a new connection: re-check everyone */
	}
	return 0;
}

/* ---- identity ------------------------------------------------------------------------ */

static int attr_collect(void *ud, const char *key, const char *value)
{
	client_entry *e = ud;
	attr_kv *n = realloc(e->attrs, (e->nattrs + 1) * sizeof *n);
	if (!n)
		return TG_ENOMEM;
	e->attrs = n;
	n[e->nattrs].key = strdup(key);
	n[e->nattrs].value = strdup(value);
	e->nattrs++;
	if (!n[e->nattrs - 1].key || !n[e->nattrs - 1].value)
		return TG_ENOMEM;
	return 0;
}

static const char *attr_get(void *ud, const char *name)
{
	const client_entry *e = ud;
	for (size_t i = 0; i < e->nattrs; i++)
		if (strcmp(e->attrs[i].key, name) == 0)
			return e->attrs[i].value;
	return NULL;
}

/* (Re)load a thing's attributes and resolve its policy. 0 or a TG_E* code. */
static int entry_refresh_policy(tg_auth *a, client_entry *e, char *err, size_t errlen)
{
	entry_free_contents(e);
	if (e->svc < 0) {
		int rc = registry_attrs_foreach(a->ro, e->thing, attr_collect, e, err, errlen);
		if (rc)
			return rc;
	}
	policy_vars v = {
		.client_id = e->client_id,
		.thing = e->svc < 0 ? e->thing : NULL,
		.common_name = e->cn,
		.attr = attr_get,
		.attr_ud = e,
	};
	e->pol = policy_resolve(e->svc < 0 ? a->thing_policy : a->svcs[e->svc].pol, &v);
	if (!e->pol) {
		snprintf(err, errlen, "out of memory resolving the policy");
		return TG_ENOMEM;
	}
	return 0;
}

static int jit_register(tg_auth *a, X509 *cert, const char *cn, char *why, size_t whylen)
{
	char err[300];
	registry_cert_info ci;
	int rc = registry_name_check(cn, err, sizeof err);
	if (rc) {
		snprintf(why, whylen, "unregistered certificate; JITR impossible: CN %s", err);
		return rc;
	}
	if (!a->rw) {
		a->rw = registry_open(a->db_path, REGISTRY_NOCREATE, 50, err, sizeof err);
		if (!a->rw) {
			snprintf(why, whylen, "JITR: %s", err);
			return TG_EDB;
		}
	}
	if ((rc = registry_cert_from_x509(cert, &ci, err, sizeof err))) {
		snprintf(why, whylen, "JITR: %s", err);
		return rc;
	}
	registry_status applied = REGISTRY_INACTIVE;
	rc = registry_jit_register(a->rw, cn, &ci,
				   a->jitr == JITR_ACTIVE ? REGISTRY_ACTIVE : REGISTRY_INACTIVE,
				   wall_ms(), &applied, err, sizeof err);
	if (rc == 0)
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     LOGP "just-in-time registered thing=%s fp=%s status=%s", cn,
				     ci.fingerprint, registry_status_name(applied));
	else
		snprintf(why, whylen, "JITR: %s", err);
	registry_cert_info_clear(&ci);
	return rc;
}

/* Authenticate client from its certificate. Returns a new entry (not yet in the table) or
 * NULL with the reason in why. */
static client_entry *authenticate(tg_auth *a, struct mosquitto *client, char *why, size_t whylen)
{
	client_entry *e = NULL;
	X509 *cert = mosquitto_client_certificate(client);
	const char *cid = mosquitto_client_id(client);
	char err[300];

	if (!cert) {
		snprintf(why, whylen, "no client certificate (the listener must require one)");
		goto fail;
	}
	if (!cid || !*cid) {
		snprintf(why, whylen, "no client id");
		goto fail;
	}
	e = calloc(1, sizeof *e);
	if (!e || !(e->client_id = strdup(cid))) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	e->client = client;
	if (registry_fingerprint_x509(cert, e->fp)) {
		snprintf(why, whylen, "cannot fingerprint the certificate");
		goto fail;
	}
	X509_NAME *subj = X509_get_subject_name(cert);
	if (!subj || X509_NAME_get_text_by_NID(subj, NID_commonName, e->cn, (int)sizeof e->cn) < 0)
		e->cn[0] = '\0';

	e->svc = -1;
	for (size_t i = 0; i < a->nsvcs; i++)
		if (*a->svcs[i].cn && strcmp(e->cn, a->svcs[i].cn) == 0)
			e->svc = (int)i;
	if (e->svc < 0) {
		if (db_ensure(a)) {
			snprintf(why, whylen, "registry unavailable: %s", a->db_why);
			goto fail;
		}
		registry_ident id;
		int rc = registry_lookup(a->ro, e->fp, &id, err, sizeof err);
		if (rc == TG_ENOTFOUND && a->jitr != JITR_OFF) {
			if (jit_register(a, cert, e->cn, why, whylen))
				goto fail;
			rc = registry_lookup(a->ro, e->fp, &id, err, sizeof err);
		}
		if (rc == TG_ENOTFOUND) {
			snprintf(why, whylen, "unregistered certificate (CN=%s)", e->cn);
			goto fail;
		}
		if (rc) {
			db_down(a, err);
			snprintf(why, whylen, "registry error: %s", err);
			goto fail;
		}
		db_up(a); /* the lookup worked: do not wait for the next poll to say so */
		if (id.status != REGISTRY_ACTIVE) {
			snprintf(why, whylen, "certificate of thing %s is %s", id.thing,
				 registry_status_name(id.status));
			goto fail;
		}
		if (strcmp(cid, id.thing) != 0) {
			snprintf(why, whylen, "client id \"%s\" is not the certificate's thing \"%s\"",
				 cid, id.thing);
			goto fail;
		}
		memcpy(e->thing, id.thing, sizeof e->thing);
	}
	if (entry_refresh_policy(a, e, err, sizeof err)) {
		snprintf(why, whylen, "%s", err);
		goto fail;
	}
	e->allowed = 1;
	X509_free(cert);
	return e;
fail:
	X509_free(cert);
	entry_free(e);
	return NULL;
}

static void log_refusal(struct mosquitto *client, const char *when, const char *why)
{
	const char *cid = mosquitto_client_id(client);
	mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "refused %s client=%s address=%s reason=\"%s\"",
			     when, cid ? cid : "-", mosquitto_client_address(client), why);
}

/* ---- re-checking after a registry change --------------------------------------------- */

/* Re-check one entry against the registry. 0, or -1 when the registry failed (db_down). */
static int revalidate_one(tg_auth *a, client_entry *e)
{
	char err[300];
	registry_ident id;
	int rc = registry_lookup(a->ro, e->fp, &id, err, sizeof err);
	const char *why = NULL;
	char whybuf[200];
	if (rc == TG_ENOTFOUND) {
		why = "certificate removed from the registry";
	} else if (rc) {
		db_down(a, err);
		return -1;
	} else if (id.status != REGISTRY_ACTIVE || strcmp(id.thing, e->thing) != 0) {
		snprintf(whybuf, sizeof whybuf, "certificate is now %s", registry_status_name(id.status));
		why = whybuf;
	} else if ((rc = entry_refresh_policy(a, e, err, sizeof err))) {
		if (rc != TG_ENOMEM) {
			db_down(a, err);
			return -1;
		}
		why = err;
	}
	if (why) {
		e->allowed = 0;
		a->pass_kicked++;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "disconnecting client=%s thing=%s reason=\"%s\"",
				     e->client_id, e->thing, why);
		kick_later(a, e->client_id);
	}
	return 0;
}

/* A registry change was seen: every connected thing is to be checked again (a new pass). */
static void revalidate_start(tg_auth *a)
{
	a->pass++;
	a->pass_active = 1;
	a->pass_cursor = 0;
	a->pass_checked = a->pass_kicked = a->pass_slices = 0;
	a->pass_started_ms = mono_ms();
	a->pass_work_us = 0;
}

/* One slice of the pass: entries not yet checked in it, from the cursor on, in one read
 * transaction, until slice_ms of work or slice_batch checks; whole buckets at a time. */
static void revalidate_slice(tg_auth *a)
{
	char err[300];
	int64_t t0 = mono_us(), budget = a->slice_ms * 1000;
	size_t n = 0;
	if (registry_read_begin(a->ro, err, sizeof err)) {
		db_down(a, err);
		a->pass_active = 0; /* the registry's return starts a new pass (poll_registry) */
		return;
	}
	a->pass_slices++;
	int failed = 0, out_of_time = 0;
	while (a->pass_cursor < a->nbuckets && !failed && !out_of_time) {
		for (client_entry *e = a->buckets[a->pass_cursor]; e; e = e->next) {
			if (e->checked_pass == a->pass)
				continue;
			e->checked_pass = a->pass;
			if (e->svc >= 0 || !e->allowed)
				continue;
			a->pass_checked++;
			n++;
			if (revalidate_one(a, e)) {
				failed = 1;
				break;
			}
		}
		a->pass_cursor++;
		if ((a->slice_batch && n >= a->slice_batch) || mono_us() - t0 >= budget)
			out_of_time = 1;
	}
	registry_read_end(a->ro);
	a->slice_end_us = mono_us();
	a->pass_work_us += a->slice_end_us - t0;
	if (failed) {
		a->pass_active = 0;
		return;
	}
	if (a->pass_cursor >= a->nbuckets) {
		a->pass_active = 0;
		if (a->pass_checked)
			mosquitto_log_printf(MOSQ_LOG_NOTICE,
					     LOGP "registry changed: re-checked %zu connected things, disconnected %zu; "
					     "%.1f ms of work in %zu slices over %lld ms",
					     a->pass_checked, a->pass_kicked, (double)a->pass_work_us / 1000.0, a->pass_slices,
					     (long long)(mono_ms() - a->pass_started_ms));
	}
}

static void poll_registry(tg_auth *a)
{
	char err[300];
	int64_t v = 0;
	if (db_ensure(a))
		return;
	if (registry_data_version(a->ro, &v, err, sizeof err)) {
		db_close(a);
		db_down(a, err);
		return;
	}
	int was_ok = a->db_ok;
	db_up(a);
	if (v != a->version || !was_ok) {
		a->version = v;
		revalidate_start(a); /* a change during a pass starts it again: the last one is seen whole */
	}
}

/* ---- callbacks ----------------------------------------------------------------------- */

static void drop_offline_namesakes(tg_auth *a, const char *cid, const struct mosquitto *keep);

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	struct mosquitto_evt_basic_auth *ev = event_data;
	char why[400];
	client_entry *e = authenticate(a, ev->client, why, sizeof why);
	if (!e) {
		log_refusal(ev->client, "connect", why);
		return MOSQ_ERR_AUTH;
	}
	if (a->wait_gateway && !a->gateway_seen && e->svc != 0) {
		/* not an error the client should give up on: no CONNACK (see the top) */
		if (a->held++ % 100 == 0)
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "holding client=%s until the gateway (CN %s) has subscribed; "
					     "connections held so far=%llu", e->client_id, a->svcs[0].cn, (unsigned long long)a->held);
		entry_free(e);
		return MOSQ_ERR_UNKNOWN;
	}
	/* The authenticated name becomes the MQTT username: Mosquitto 2.0.11 disconnects every
	 * client without a username on SIGHUP when allow_anonymous is false (checked; a CRL
	 * reload would otherwise drop the whole fleet), and its logs then name the identity. */
	if (mosquitto_set_username(ev->client, e->svc >= 0 ? e->cn : e->thing) != MOSQ_ERR_SUCCESS) {
		log_refusal(ev->client, "connect", "cannot set the username");
		entry_free(e);
		return MOSQ_ERR_AUTH;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, LOGP "accepted client=%s %s=%s fp=%.16s", e->client_id,
			     e->svc >= 0 ? "service_cn" : "thing", e->svc >= 0 ? e->cn : e->thing, e->fp);
	if (e->svc >= 0)
		drop_offline_namesakes(a, e->client_id, ev->client);
	table_put(a, e);
	return MOSQ_ERR_SUCCESS;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	struct mosquitto_evt_acl_check *ev = event_data;
	client_entry *e = table_find(a, ev->client);
	const char *cid = mosquitto_client_id(ev->client);

	if (e && (!cid || strcmp(cid, e->client_id) != 0)) {
		table_remove(a, ev->client); /* a stale entry for a reused context */
		e = NULL;
	}
	if (!e) {
		/* BASIC_AUTH did not run (use_identity_as_username): authenticate now. */
		char why[400];
		e = authenticate(a, ev->client, why, sizeof why);
		if (!e) {
			log_refusal(ev->client, "first access", why);
			kick_later(a, cid);
			return MOSQ_ERR_ACL_DENIED;
		}
		if (a->wait_gateway && !a->gateway_seen && e->svc != 0) {
			entry_free(e);
			kick_later(a, cid);
			return MOSQ_ERR_ACL_DENIED;
		}
		if (e->svc >= 0)
			drop_offline_namesakes(a, e->client_id, ev->client);
		table_put(a, e);
	}
	if (!e->allowed || (e->svc < 0 && !a->db_ok))
		return MOSQ_ERR_ACL_DENIED;
	int action;
	switch (ev->access) {
	case MOSQ_ACL_WRITE: action = POLICY_PUBLISH; break;
	case MOSQ_ACL_READ: action = POLICY_RECEIVE; break;
	case MOSQ_ACL_SUBSCRIBE: action = POLICY_SUBSCRIBE; break;
	case MOSQ_ACL_UNSUBSCRIBE: return MOSQ_ERR_SUCCESS;
	default: return MOSQ_ERR_ACL_DENIED;
	}
	if (policy_check(e->pol, action, ev->topic)) {
		/* the gateway subscribes all its filters in one SUBSCRIBE, which the broker handles
		 * whole before it reads another client's packet: the first one allowed means all
		 * are in place */
		if (action == POLICY_SUBSCRIBE && e->svc == 0 && a->wait_gateway && !a->gateway_seen) {
			a->gateway_seen = 1;
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "the gateway (client %s) has subscribed; letting things in "
					     "(connections held before: %llu)", e->client_id, (unsigned long long)a->held);
		}
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_log_printf(MOSQ_LOG_DEBUG, LOGP "denied client=%s action=%s topic=%s",
			     e->client_id,
			     action == POLICY_PUBLISH ? "publish"
			     : action == POLICY_RECEIVE ? "receive"
							: "subscribe",
			     ev->topic);
	return MOSQ_ERR_ACL_DENIED;
}

/* Copy one property onto *dst, whatever its type. 0 or a MOSQ_ERR_* code. */
static int property_copy_one(mosquitto_property **dst, const mosquitto_property *p)
{
	int id = mosquitto_property_identifier(p), realid = 0, type = 0, rc = MOSQ_ERR_INVAL;
	const char *name = mosquitto_property_identifier_to_string(id);
	if (!name || mosquitto_string_to_property_info(name, &realid, &type) || realid != id)
		return MOSQ_ERR_INVAL;
	switch (type) {
	case MQTT_PROP_TYPE_BYTE: {
		uint8_t v;
		if (mosquitto_property_read_byte(p, id, &v, false))
			rc = mosquitto_property_add_byte(dst, id, v);
		break;
	}
	case MQTT_PROP_TYPE_INT16: {
		uint16_t v;
		if (mosquitto_property_read_int16(p, id, &v, false))
			rc = mosquitto_property_add_int16(dst, id, v);
		break;
	}
	case MQTT_PROP_TYPE_INT32: {
		uint32_t v;
		if (mosquitto_property_read_int32(p, id, &v, false))
			rc = mosquitto_property_add_int32(dst, id, v);
		break;
	}
	case MQTT_PROP_TYPE_VARINT: {
		uint32_t v;
		if (mosquitto_property_read_varint(p, id, &v, false))
			rc = mosquitto_property_add_varint(dst, id, v);
		break;
	}
	case MQTT_PROP_TYPE_BINARY: {
		void *v = NULL;
		uint16_t len = 0;
		if (mosquitto_property_read_binary(p, id, &v, &len, false))
			rc = mosquitto_property_add_binary(dst, id, v, len);
		free(v);
		break;
	}
	case MQTT_PROP_TYPE_STRING: {
		char *v = NULL;
		if (mosquitto_property_read_string(p, id, &v, false))
			rc = mosquitto_property_add_string(dst, id, v);
		free(v);
		break;
	}
	case MQTT_PROP_TYPE_STRING_PAIR: {
		char *k = NULL, *v = NULL;
		if (mosquitto_property_read_string_pair(p, id, &k, &v, false))
			rc = mosquitto_property_add_string_pair(dst, id, k, v);
		free(k);
		free(v);
		break;
	}
	default: break;
	}
	return rc;
}

static int is_identity_prop(const mosquitto_property *p, const char *prop_name)
{
	if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY)
		return 0;
	char *k = NULL, *v = NULL;
	int hit = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, false) &&
		  k && strcmp(k, prop_name) == 0;
	free(k);
	free(v);
	return hit;
}

static int on_message(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	struct mosquitto_evt_message *ev = event_data;
	client_entry *e = table_find(a, ev->client);
	if (!e || !e->allowed)
		return MOSQ_ERR_ACL_DENIED; /* the ACL check let nobody else through; be sure */

	int forged = 0;
	for (const mosquitto_property *p = ev->properties; p; p = mosquitto_property_next(p))
		forged |= is_identity_prop(p, a->prop_name);
	if (forged) {
		/* 2.0's API cannot unlink one property: rebuild the list without it. */
		mosquitto_property *clean = NULL;
		for (const mosquitto_property *p = ev->properties; p; p = mosquitto_property_next(p)) {
			if (is_identity_prop(p, a->prop_name))
				continue;
			if (property_copy_one(&clean, p)) {
				mosquitto_property_free_all(&clean);
				mosquitto_log_printf(MOSQ_LOG_WARNING,
						     LOGP "dropped a message of client=%s: cannot rewrite "
						     "its properties",
						     e->client_id);
				return MOSQ_ERR_ACL_DENIED;
			}
		}
		mosquitto_property_free_all(&ev->properties);
		ev->properties = clean;
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     LOGP "removed a forged %s property from client=%s topic=%s",
				     a->prop_name, e->client_id, ev->topic);
	}
	/* Service identities are not things: their messages carry no thing identity. */
	if (e->svc < 0 &&
	    mosquitto_property_add_string_pair(&ev->properties, MQTT_PROP_USER_PROPERTY,
					       a->prop_name, e->thing) != MOSQ_ERR_SUCCESS)
		return MOSQ_ERR_ACL_DENIED;
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	int64_t now = mono_ms();
	if (now - a->last_poll_ms >= a->poll_ms) {
		a->last_poll_ms = now;
		poll_registry(a);
	}
	/* at most half the broker's thread: after a slice, as long again for everything else */
	if (a->pass_active && a->ro && mono_us() - a->slice_end_us >= a->slice_ms * 1000)
		revalidate_slice(a);
	/* Kick outside any iteration: a kick calls on_disconnect, which edits the table. */
	for (size_t i = 0; i < a->nkick; i++) {
		mosquitto_kick_client_by_clientid(a->kick[i], false);
		free(a->kick[i]);
	}
	a->nkick = 0;
	return MOSQ_ERR_SUCCESS;
}

/* A service (the gateway above all) with a persistent session keeps its entry when its
 * connection closes: the broker goes on delivering to the offline session, and each
 * delivery is an ACL check (MOSQ_ACL_READ) on a context that has no certificate any more.
 * Re-authenticating there refused it, so the broker answered the devices "no matching
 * subscribers" and dropped what it should have queued for the daemon (about 150 messages
 * per daemon kill -9 in the chaos run). The identity was proven when the session was made;
 * the entry goes when a connection with the same client id comes (drop_offline_namesakes)
 * or the pointer is reused by another client (the client id check in on_acl_check). */
static int on_disconnect(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	struct mosquitto_evt_disconnect *ev = event_data;
	client_entry *e = table_find(a, ev->client);
	if (e && e->svc >= 0 && e->allowed && !mosquitto_client_clean_session(ev->client)) {
		e->offline = 1;
		return MOSQ_ERR_SUCCESS;
	}
	table_remove(a, ev->client);
	return MOSQ_ERR_SUCCESS;
}

/* Forget the offline-session entries of client id cid (a new connection of it took the
 * session over, on another context). Only services keep such entries, so this runs on a
 * service's connect only, and the scan is over the whole table then. */
static void drop_offline_namesakes(tg_auth *a, const char *cid, const struct mosquitto *keep)
{
	for (size_t b = 0; b < a->nbuckets; b++) {
		client_entry **pp = &a->buckets[b];
		while (*pp) {
			client_entry *e = *pp;
			if (e->offline && e->client != keep && strcmp(e->client_id, cid) == 0) {
				*pp = e->next;
				entry_free(e);
				a->nclients--;
			} else {
				pp = &e->next;
			}
		}
	}
}

/* ---- options, policies, lifecycle ---------------------------------------------------- */

static int load_policy(const char *path, const char *builtin, const char *what, policy **out)
{
	char err[400];
	policy *p = path ? policy_load_file(path, err, sizeof err)
			 : policy_parse(builtin, strlen(builtin), what, err, sizeof err);
	if (!p) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "%s policy: %s", what, err);
		return -1;
	}
	policy_free(*out);
	*out = p;
	return 0;
}

/* (Re)load the thing policy and every service policy; on any error keep all the old ones. */
static int load_policies(tg_auth *a)
{
	policy *thing = NULL;
	policy **svc = calloc(a->nsvcs, sizeof *svc);
	int rc = svc ? load_policy(a->policy_path, POLICY_DEFAULT_THING, "thing", &thing) : -1;
	for (size_t i = 0; rc == 0 && i < a->nsvcs; i++) {
		char what[300];
		snprintf(what, sizeof what, "identity %s", a->svcs[i].cn);
		rc = load_policy(a->svcs[i].policy_path, POLICY_DEFAULT_GATEWAY, what, &svc[i]);
	}
	if (rc == 0) {
		policy_free(a->thing_policy);
		a->thing_policy = thing;
		thing = NULL;
		for (size_t i = 0; i < a->nsvcs; i++) {
			policy_free(a->svcs[i].pol);
			a->svcs[i].pol = svc[i];
			svc[i] = NULL;
		}
	}
	policy_free(thing);
	for (size_t i = 0; svc && i < a->nsvcs; i++)
		policy_free(svc[i]);
	free(svc);
	return rc;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	tg_auth *a = userdata;
	/* Keep the running policies when a new file is bad. */
	if (load_policies(a) == 0)
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOGP "policies reloaded");
	char err[300];
	for (size_t b = 0; b < a->nbuckets; b++)
		for (client_entry *e = a->buckets[b]; e; e = e->next)
			if (e->allowed && (e->svc >= 0 || a->ro) &&
			    entry_refresh_policy(a, e, err, sizeof err)) {
				e->allowed = 0;
				kick_later(a, e->client_id);
			}
	return MOSQ_ERR_PLUGIN_DEFER; /* let other plugins reload too */
}

/* The events the plugin handles, and their handlers, in one place for (un)registering. */
static const int plugin_events[] = {MOSQ_EVT_BASIC_AUTH, MOSQ_EVT_ACL_CHECK, MOSQ_EVT_MESSAGE,
				    MOSQ_EVT_TICK,	 MOSQ_EVT_DISCONNECT, MOSQ_EVT_RELOAD};
static const MOSQ_FUNC_generic_callback plugin_cbs[] = {on_basic_auth, on_acl_check, on_message,
							on_tick,	on_disconnect, on_reload};
#define PLUGIN_NEVENTS (sizeof plugin_events / sizeof plugin_events[0])

static void tg_auth_free(tg_auth *a)
{
	if (!a)
		return;
	for (size_t b = 0; a->buckets && b < a->nbuckets; b++) {
		while (a->buckets[b]) {
			client_entry *e = a->buckets[b];
			a->buckets[b] = e->next;
			entry_free(e);
		}
	}
	free(a->buckets);
	for (size_t i = 0; i < a->nkick; i++)
		free(a->kick[i]);
	free(a->kick);
	db_close(a);
	policy_free(a->thing_policy);
	for (size_t i = 0; i < a->nsvcs; i++) {
		free(a->svcs[i].cn);
		free(a->svcs[i].policy_path);
		policy_free(a->svcs[i].pol);
	}
	free(a->svcs);
	free(a->db_path);
	free(a->policy_path);
	free(a->prop_name);
	free(a);
}

static int set_option(tg_auth *a, const char *key, const char *value)
{
	char **slot = !strcmp(key, "registry")		  ? &a->db_path
		      : !strcmp(key, "policy_file")	  ? &a->policy_path
		      : !strcmp(key, "gateway_policy_file") ? &a->svcs[0].policy_path
		      : !strcmp(key, "gateway_cn")	  ? &a->svcs[0].cn
		      : !strcmp(key, "identity_property") ? &a->prop_name
							  : NULL;
	if (slot) {
		free(*slot);
		*slot = strdup(value);
		return *slot ? 0 : -1;
	}
	if (!strncmp(key, "identity_", 9) && key[9]) {
		if (!*value) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "plugin_opt_%s needs a policy file", key);
			return -1;
		}
		service *n = realloc(a->svcs, (a->nsvcs + 1) * sizeof *n);
		if (!n)
			return -1;
		a->svcs = n;
		memset(&n[a->nsvcs], 0, sizeof *n);
		n[a->nsvcs].cn = strdup(key + 9);
		n[a->nsvcs].policy_path = strdup(value);
		a->nsvcs++;
		return n[a->nsvcs - 1].cn && n[a->nsvcs - 1].policy_path ? 0 : -1;
	}
	if (!strcmp(key, "jitr")) {
		if (!strcmp(value, "off"))
			a->jitr = JITR_OFF;
		else if (!strcmp(value, "inactive"))
			a->jitr = JITR_INACTIVE;
		else if (!strcmp(value, "active"))
			a->jitr = JITR_ACTIVE;
		else {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "jitr must be off, inactive or active, not \"%s\"", value);
			return -1;
		}
		return 0;
	}
	if (!strcmp(key, "wait_for_gateway")) {
		if (strcmp(value, "on") && strcmp(value, "off")) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "wait_for_gateway must be on or off, not \"%s\"", value);
			return -1;
		}
		a->wait_gateway = !strcmp(value, "on");
		return 0;
	}
	if (!strcmp(key, "revalidate_slice_ms") || !strcmp(key, "revalidate_batch")) {
		char *end;
		long v = strtol(value, &end, 10);
		int slice = !strcmp(key, "revalidate_slice_ms");
		if (*end || !*value || v < (slice ? 1 : 0) || v > (slice ? 1000 : 1000000)) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "%s must be %s, not \"%s\"", key,
					     slice ? "1..1000" : "0..1000000", value);
			return -1;
		}
		if (slice)
			a->slice_ms = v;
		else
			a->slice_batch = (size_t)v;
		return 0;
	}
	if (!strcmp(key, "poll_ms")) {
		char *end;
		long v = strtol(value, &end, 10);
		if (*end || v < 20 || v > 1000) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "poll_ms must be 20..1000, not \"%s\"", value);
			return -1;
		}
		a->poll_ms = v;
		return 0;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR,
			     LOGP "unknown option plugin_opt_%s (known: registry, policy_file, "
			     "gateway_cn, gateway_policy_file, identity_<CN>, jitr, poll_ms, revalidate_slice_ms, revalidate_batch, "
			     "identity_property, wait_for_gateway)",
			     key);
	return -1;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++)
		if (supported_versions[i] == 5)
			return 5;
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
			  struct mosquitto_opt *options, int option_count)
{
	tg_auth *a = calloc(1, sizeof *a);
	if (!a)
		return MOSQ_ERR_NOMEM;
	a->pid = identifier;
	a->poll_ms = 250;
	a->slice_ms = 10;
	a->version = -1;
	a->nbuckets = 64;
	a->buckets = calloc(a->nbuckets, sizeof *a->buckets);
	a->prop_name = strdup("tidegate-thing");
	a->svcs = calloc(1, sizeof *a->svcs);
	if (!a->buckets || !a->prop_name || !a->svcs)
		goto fail;
	a->nsvcs = 1;
	if (!(a->svcs[0].cn = strdup("tidegate-gateway")))
		goto fail;
	for (int i = 0; i < option_count; i++)
		if (set_option(a, options[i].key, options[i].value ? options[i].value : ""))
			goto fail;
	if (!a->db_path || !*a->db_path) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "plugin_opt_registry (the registry database) is required");
		goto fail;
	}
	if (!*a->prop_name)
		goto fail;
	if (a->wait_gateway && !*a->svcs[0].cn) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "wait_for_gateway on needs a gateway_cn");
		goto fail;
	}
	if (load_policies(a))
		goto fail;
	/* A missing registry is not fatal: things are denied until it appears. */
	a->db_ok = 1;
	if (db_ensure(a) == 0)
		poll_registry(a);
	a->last_poll_ms = mono_ms();

	for (size_t i = 0; i < PLUGIN_NEVENTS; i++) {
		if (mosquitto_callback_register(identifier, plugin_events[i], plugin_cbs[i], NULL, a) != MOSQ_ERR_SUCCESS) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOGP "cannot register callback %d", plugin_events[i]);
			for (size_t j = 0; j < i; j++)
				mosquitto_callback_unregister(identifier, plugin_events[j], plugin_cbs[j], NULL);
			goto fail;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			     LOGP "ready: registry=%s policy=%s gateway_cn=%s services=%zu jitr=%s poll_ms=%lld wait_for_gateway=%s",
			     a->db_path, a->policy_path ? a->policy_path : "(built-in)",
			     a->svcs[0].cn, a->nsvcs - 1, a->jitr == JITR_OFF ? "off" : a->jitr == JITR_ACTIVE ? "active" : "inactive",
			     (long long)a->poll_ms, a->wait_gateway ? "on" : "off");
	*userdata = a;
	return MOSQ_ERR_SUCCESS;
fail:
	tg_auth_free(a);
	return MOSQ_ERR_INVAL;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	tg_auth *a = userdata;
	if (a) {
		for (size_t i = 0; i < PLUGIN_NEVENTS; i++)
			mosquitto_callback_unregister(a->pid, plugin_events[i], plugin_cbs[i], NULL);
	}
	tg_auth_free(a);
	return MOSQ_ERR_SUCCESS;
}
