/*
 * device_sim — simulated devices publishing JSON telemetry over mutual-TLS MQTT v5.
 *
 * Two shapes: one connection and one certificate per thing (what real devices do, and what
 * the ACL tests need), or a few shared connections that publish for many things (load
 * mode, for benchmarks). Each worker thread owns a disjoint set of connections and drives
 * them with its own poll loop over libmosquitto's non-threaded API (mosquitto_loop_read /
 * _write / _misc): no locks on the hot path. A connection's publishes of one loop turn
 * leave in one write() (sim_io.h: a buffer under the TLS layer, flushed after each turn),
 * and the PUBACKs coming back are read many records per read() (TLS read-ahead):
 * a load generator should spend as little of the machine as it can, and a write() per
 * message cost device_sim more CPU than the gateway it loads.
 *
 * Flow control is ours, not libmosquitto's: a connection has at most --inflight messages
 * that are published but not yet acknowledged (PUBACK at QoS 1, written to the socket at
 * QoS 0), and nothing new is published while the socket's output queue is non-empty. So
 * max-rate mode neither grows an unbounded client-side queue nor drops anything, and at
 * the end every worker waits for the last PUBACK (bounded by --drain-timeout) before it
 * sends DISCONNECT; what is still unacknowledged then is counted as failed, never
 * silently lost. A PUBACK with an MQTT v5 reason code >= 0x80 (e.g. 0x87 not authorized)
 * also counts as failed.
 *
 * All counters are per worker and merged after the threads are joined. The only
 * process-wide mutable state is the signal flag.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "sim_gen.h"
#include "sim_io.h"
#include "sim_opts.h"
#include "sim_shadow.h"

#define SUB "sim"
#define BATCH_PER_CONN 256 /* publishes per connection per loop turn, for fairness */
#define WBUF_BYTES (64 * 1024) /* a turn's publishes are flushed in one write() */
#define READS_PER_TURN 1024 /* packets read per connection per turn at most */

/* Set by SIGINT/SIGTERM: 1 = stop sending and drain, 2+ = stop draining too. A lock-free
 * atomic is async-signal-safe to write and safe to read from the worker threads. */
static atomic_int g_stop;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_stop, 1);
}

struct counters {
	uint64_t sent, acked, failed, hostile, normal, bytes;
	uint64_t acked_no_subscribers;
	uint64_t failed_reason_code, failed_publish, failed_unacked;
	uint64_t kinds[SIM_KIND_COUNT];
	uint64_t spike, anomaly, stuck;
	uint64_t reconnects;
	uint64_t not_sent; /* count mode: slots never published (a connection given up) */
};

struct conn;

struct thing {
	struct sim_gen gen;
	char topic[256];
	struct conn *conn;
	uint64_t slots;     /* slots generated so far */
	uint64_t sent, hostile, spike;
	int64_t next_due_ns; /* rate mode schedule (monotonic) */
	int64_t last_ts;     /* previous device timestamp: ts strictly increases per thing */
	int finished;
};

struct worker;

struct conn {
	struct mosquitto *mosq;
	sim_io io;     /* write buffer + read-ahead (reset on every (re)connect) */
	struct worker *w;
	int index;
	struct thing **things; /* borrowed pointers into run->things */
	int nthings;
	int rr;          /* round-robin position among things */
	int connected;   /* CONNACK success seen and not since disconnected */
	int refused;     /* CONNACK failure: do not retry */
	int closing;     /* we sent DISCONNECT */
	int unfinished;  /* things on this connection that still have slots to send */
	uint64_t outstanding; /* published, not yet acknowledged */
	int64_t retry_at_ns;
	int64_t down_since_ns; /* when the connection was lost (0 while up) */
};

struct run;

struct worker {
	struct run *run;
	pthread_t th;
	struct conn **conns;
	int nconns;
	char *buf; /* SIM_PAYLOAD_CAP bytes */
	struct counters c;
	int rc;
};

struct run {
	struct sim_opts o;
	struct thing *things;
	struct conn *conns;
	int nconns;
	struct worker *workers;
	int nworkers;
	int64_t start_ns;  /* monotonic, when sending began */
	int64_t period_ns; /* rate mode */
	FILE *hostile_log;
	pthread_mutex_t log_lock;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- libmosquitto callbacks (run in the thread that drives the connection) ---- */

static void cb_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
		       const mosquitto_property *props)
{
	struct conn *c = obj;
	if (rc == 0) {
		c->connected = 1;
		c->down_since_ns = 0;
		sim_io_connected(&c->io);
	} else {
		c->refused = 1;
		LOG_ERROR(SUB, "msg=\"connection refused\" conn=%d reason=\"%s\"", c->index,
			  mosquitto_reason_string(rc));
	}
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc,
			  const mosquitto_property *props)
{
	struct conn *c = obj;
	sim_io_forget(&c->io); /* libmosquitto frees the SSL object and the buffer with it */
	if (c->connected)
		c->down_since_ns = mono_ns();
	c->connected = 0;
	if (!c->closing && c->w)
		LOG_WARN(SUB, "msg=\"connection lost\" conn=%d rc=%d", c->index, rc);
}

static void cb_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
		       const mosquitto_property *props)
{
	struct conn *c = obj;
	struct counters *k = &c->w->c;
	if (c->outstanding > 0)
		c->outstanding--;
	if (reason >= 0x80) {
		k->failed++;
		k->failed_reason_code++;
		LOG_DEBUG(SUB, "msg=\"publish refused\" conn=%d reason=0x%02x", c->index, reason);
	} else {
		k->acked++;
		if (reason == MQTT_RC_NO_MATCHING_SUBSCRIBERS)
			k->acked_no_subscribers++;
	}
}

/* ---- setup ---- */

static struct mosquitto *conn_new(struct run *r, struct conn *c, const char *client_id,
				  const char *cert, const char *key)
{
	struct mosquitto *m = mosquitto_new(client_id, true, c);
	if (!m)
		return NULL;
	int ok = mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5) ==
			 MOSQ_ERR_SUCCESS &&
		 mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1) == MOSQ_ERR_SUCCESS &&
		 mosquitto_tls_set(m, r->o.cafile, NULL, cert, key, NULL) == MOSQ_ERR_SUCCESS &&
		 mosquitto_tls_opts_set(m, 1, "tlsv1.2", NULL) == MOSQ_ERR_SUCCESS;
	if (!ok) {
		LOG_ERROR(SUB, "msg=\"TLS setup failed\" cert=%s key=%s", cert, key);
		mosquitto_destroy(m);
		return NULL;
	}
	mosquitto_connect_v5_callback_set(m, cb_connect);
	mosquitto_disconnect_v5_callback_set(m, cb_disconnect);
	mosquitto_publish_v5_callback_set(m, cb_publish);
	return m;
}

/* Start the connection (TCP connect, TLS ClientHello, CONNECT); CONNACK comes later. */
static int conn_start(struct run *r, struct conn *c)
{
	char cert[4096], key[4096], id[128];
	if (r->o.connections) {
		snprintf(id, sizeof id, "device_sim-%ld-%d", (long)getpid(), c->index);
		c->mosq = conn_new(r, c, id, r->o.cert, r->o.key);
	} else {
		const char *name = c->things[0]->gen.name;
		snprintf(cert, sizeof cert, "%s/%s.crt", r->o.certs_dir, name);
		snprintf(key, sizeof key, "%s/%s.key", r->o.certs_dir, name);
		if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
			LOG_ERROR(SUB, "msg=\"cannot read cert or key\" thing=%s cert=%s", name, cert);
			return TG_EIO;
		}
		c->mosq = conn_new(r, c, name, cert, key);
	}
	if (!c->mosq)
		return TG_EINVAL;
	sim_io_init(&c->io, c->mosq, WBUF_BYTES);
	int rc = mosquitto_connect_bind_v5(c->mosq, r->o.host, r->o.port, 60, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		LOG_ERROR(SUB, "msg=\"connect failed\" conn=%d host=%s port=%d err=\"%s\"", c->index,
			  r->o.host, r->o.port, mosquitto_strerror(rc));
		return TG_ENET;
	}
	return 0;
}

/* Let libmosquitto read, write and keep alive one connection after poll() said `revents`.
 * Our own poll instead of mosquitto_loop(), which uses select() and so refuses every
 * descriptor above 1023. */
static int conn_drive(struct conn *c, short revents)
{
	int rc = MOSQ_ERR_SUCCESS;
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		/* with read-ahead one read() may hold many PUBACKs: take them all now, as poll()
		 * does not report what already sits in the TLS layer */
		for (int i = 0; i < READS_PER_TURN && rc == MOSQ_ERR_SUCCESS; i++) {
			rc = mosquitto_loop_read(c->mosq, 1);
			SSL *ssl = mosquitto_ssl_get(c->mosq);
			if (!(ssl && SSL_has_pending(ssl)))
				break;
		}
	}
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(c->mosq) >= 0 && mosquitto_want_write(c->mosq))
		rc = mosquitto_loop_write(c->mosq, 1);
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(c->mosq) >= 0)
		rc = mosquitto_loop_misc(c->mosq);
	if (rc == MOSQ_ERR_SUCCESS && c->io.flush_pending && (revents & POLLOUT))
		sim_io_flush(&c->io);
	return rc;
}

/* True while data we owe the socket waits (libmosquitto's queue or our buffer). */
static int conn_blocked(struct conn *c)
{
	return mosquitto_want_write(c->mosq) || c->io.flush_pending;
}

/* Connect every connection and wait for every CONNACK. Up to CONNECT_WINDOW handshakes
 * run at once: the broker spends tens of milliseconds per TLS 1.3 handshake (session
 * tickets), so doing them one after another would make 100 things take seconds. */
#define CONNECT_WINDOW 32
static int connect_all(struct run *r)
{
	struct conn *pending[CONNECT_WINDOW];
	struct pollfd pfd[CONNECT_WINDOW];
	int npending = 0, started = 0, done = 0;
	int64_t deadline = mono_ns() + (int64_t)(r->o.connect_timeout_s * 1e9);
	while (done < r->nconns) {
		while (started < r->nconns && npending < CONNECT_WINDOW) {
			int rc = conn_start(r, &r->conns[started]);
			if (rc < 0)
				return rc;
			pending[npending++] = &r->conns[started++];
		}
		for (int i = 0; i < npending; i++) {
			pfd[i].fd = mosquitto_socket(pending[i]->mosq);
			pfd[i].events = POLLIN | (conn_blocked(pending[i]) ? POLLOUT : 0);
			pfd[i].revents = 0;
		}
		if (poll(pfd, (nfds_t)npending, 5) < 0 && errno != EINTR)
			return TG_EIO;
		for (int i = 0; i < npending;) {
			struct conn *c = pending[i];
			int rc = pfd[i].fd >= 0 ? conn_drive(c, pfd[i].revents) : MOSQ_ERR_NO_CONN;
			if (c->refused)
				return TG_EPERM; /* cb_connect logged the reason */
			if (rc != MOSQ_ERR_SUCCESS) {
				LOG_ERROR(SUB, "msg=\"no CONNACK\" conn=%d thing=%s err=\"%s\"", c->index,
					  c->things[0]->gen.name, mosquitto_strerror(rc));
				return TG_ENET;
			}
			if (c->connected) { /* swap-remove; pfd follows so the indexes stay paired */
				pending[i] = pending[--npending];
				pfd[i] = pfd[npending];
				done++;
				continue;
			}
			i++;
		}
		if (done < r->nconns && (mono_ns() > deadline || atomic_load(&g_stop))) {
			LOG_ERROR(SUB, "msg=\"timed out waiting for CONNACKs\" connected=%d of=%d", done,
				  r->nconns);
			return TG_ENET;
		}
	}
	return 0;
}

/* ---- sending ---- */

static void log_hostile(struct worker *w, const struct thing *t, const struct sim_msg *m)
{
	struct run *r = w->run;
	if (!r->hostile_log)
		return;
	pthread_mutex_lock(&r->log_lock);
	fprintf(r->hostile_log,
		"{\"thing\":\"%s\",\"topic\":\"%s\",\"seq\":%" PRIu64
		",\"kind\":\"%s\",\"variant\":\"%s\",\"bytes\":%zu}\n",
		t->gen.name, t->topic, m->seq, sim_kind_name(m->kind), m->variant, m->len);
	pthread_mutex_unlock(&r->log_lock);
}

static int publish(struct worker *w, struct conn *c, struct thing *t, const void *p, size_t len)
{
	int mid;
	int rc = mosquitto_publish_v5(c->mosq, &mid, t->topic, (int)len, p, w->run->o.qos, false,
				      NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		w->c.failed++;
		w->c.failed_publish++;
		LOG_DEBUG(SUB, "msg=\"publish failed\" thing=%s err=\"%s\"", t->gen.name,
			  mosquitto_strerror(rc));
		return rc;
	}
	w->c.sent++;
	w->c.bytes += len;
	t->sent++;
	return 0;
}

/* Generate and publish the next message of thing t. */
static void send_one(struct worker *w, struct conn *c, struct thing *t, int64_t now)
{
	struct run *r = w->run;
	const struct sim_opts *o = &r->o;
	struct sim_msg m;
	int64_t ts;
	double t_s;
	if (o->start_ts_ms >= 0) {
		ts = o->start_ts_ms + (int64_t)((double)t->slots * o->interval_ms);
		t_s = (double)t->slots * o->interval_ms / 1000.0;
	} else {
		ts = tg_wall_ms();
		t_s = (double)(now - r->start_ns) / 1e9;
	}
	/* The gateway dedupes on (thing, ts), so two readings of one thing must never share a
	 * millisecond; above 1000 msgs/s per thing ts therefore runs ahead of the wall clock. */
	if (ts <= t->last_ts)
		ts = t->last_ts + 1;
	t->last_ts = ts;
	t->slots++;
	int n = sim_gen_next(&t->gen, &o->gen, ts, t_s, w->buf, SIM_PAYLOAD_CAP, &m);
	if (n < 0) {
		LOG_ERROR(SUB, "msg=\"generator failed\" thing=%s kind=%s", t->gen.name,
			  sim_kind_name(m.kind));
		w->c.failed++;
		return;
	}
	/* outstanding is raised before publishing: at QoS 0 the completion callback can run
	 * inside mosquitto_publish_v5 itself when the packet goes straight to the socket. */
	if (m.flags & SIM_F_PREFIX_DUP) {
		c->outstanding++;
		if (publish(w, c, t, m.prefix, m.prefix_len) == 0) {
			w->c.normal++;
			w->c.kinds[SIM_NORMAL]++;
		} else {
			c->outstanding--;
		}
	}
	c->outstanding++;
	if (publish(w, c, t, w->buf, m.len) != 0) {
		c->outstanding--;
		return;
	}
	w->c.kinds[m.kind]++;
	if (m.kind == SIM_NORMAL) {
		w->c.normal++;
	} else {
		w->c.hostile++;
		t->hostile++;
		log_hostile(w, t, &m);
	}
	if (m.flags & SIM_F_SPIKE) {
		w->c.spike++;
		t->spike++;
	}
	if (m.flags & SIM_F_ANOMALY)
		w->c.anomaly++;
	if (m.flags & SIM_F_STUCK)
		w->c.stuck++;
}

static int thing_done(const struct run *r, const struct thing *t, int64_t now)
{
	if (r->o.count && t->slots >= r->o.count)
		return 1;
	if (r->o.duration_s > 0 && now - r->start_ns >= (int64_t)(r->o.duration_s * 1e9))
		return 1;
	return 0;
}

/* Publish what is due on c; lower *wake_ns to the next time something becomes due. */
static void pump(struct worker *w, struct conn *c, int64_t now, int64_t *wake_ns)
{
	struct run *r = w->run;
	int budget = BATCH_PER_CONN;
	while (budget-- > 0 && c->unfinished > 0) {
		if (c->outstanding >= (uint64_t)r->o.inflight || conn_blocked(c))
			return; /* woken by a PUBACK or by the socket becoming writable */
		struct thing *pick = NULL;
		for (int k = 0; k < c->nthings; k++) {
			struct thing *t = c->things[(c->rr + k) % c->nthings];
			if (t->finished)
				continue;
			if (thing_done(r, t, now)) {
				t->finished = 1;
				c->unfinished--;
				continue;
			}
			if (r->o.max_rate || t->next_due_ns <= now) {
				pick = t;
				c->rr = (c->rr + k + 1) % c->nthings;
				break;
			}
			if (t->next_due_ns < *wake_ns)
				*wake_ns = t->next_due_ns;
		}
		if (!pick)
			return;
		send_one(w, c, pick, now);
		if (!r->o.max_rate)
			pick->next_due_ns += r->period_ns;
		if (!c->connected)
			return;
	}
	if (c->unfinished > 0)
		*wake_ns = now; /* budget used up: come straight back */
}

static void try_reconnect(struct worker *w, struct conn *c, int64_t now)
{
	if (c->refused || now < c->retry_at_ns)
		return;
	w->c.reconnects++;
	sim_io_forget(&c->io);
	int rc = mosquitto_reconnect(c->mosq);
	if (rc != MOSQ_ERR_SUCCESS) {
		c->retry_at_ns = now + 500000000;
		return;
	}
	/* CONNACK arrives through the normal loop; libmosquitto resends what was in flight. */
	c->retry_at_ns = now + 2000000000;
}

/* A connection that was refused on reconnect, or has been down for longer than the drain
 * timeout, stops sending (its unsent messages show up as not_sent); one whose --duration
 * is over stops too. What it has in flight is still awaited until the drain deadline. */
static void give_up_if_hopeless(struct worker *w, struct conn *c, int64_t now)
{
	const struct run *r = w->run;
	if (c->unfinished == 0)
		return;
	int over = r->o.duration_s > 0 && now - r->start_ns >= (int64_t)(r->o.duration_s * 1e9);
	int hopeless = c->refused ||
		       (c->down_since_ns && now - c->down_since_ns > (int64_t)(r->o.drain_timeout_s * 1e9));
	if (hopeless)
		LOG_ERROR(SUB, "msg=\"giving up on connection\" conn=%d refused=%d", c->index, c->refused);
	if (hopeless || over)
		c->unfinished = 0;
	if (c->refused) {
		/* Nothing will ever acknowledge these. */
		w->c.failed += c->outstanding;
		w->c.failed_unacked += c->outstanding;
		c->outstanding = 0;
	}
}

static int worker_busy(const struct worker *w)
{
	for (int i = 0; i < w->nconns; i++)
		if (w->conns[i]->unfinished > 0 || w->conns[i]->outstanding > 0)
			return 1;
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	struct pollfd *pfd = calloc((size_t)w->nconns, sizeof *pfd);
	int *pidx = calloc((size_t)w->nconns, sizeof *pidx);
	int64_t drain_deadline = 0;
	if (!pfd || !pidx) {
		w->rc = TG_ENOMEM;
		goto out;
	}
	for (;;) {
		int64_t now = mono_ns();
		int stop = atomic_load(&g_stop);
		if (stop) {
			for (int i = 0; i < w->nconns; i++)
				w->conns[i]->unfinished = 0;
		}
		int64_t wake = now + 100000000; /* keepalive housekeeping at least every 100 ms */
		for (int i = 0; i < w->nconns; i++) {
			struct conn *c = w->conns[i];
			if (!c->connected) {
				give_up_if_hopeless(w, c, now);
				if (c->unfinished > 0 || c->outstanding > 0)
					try_reconnect(w, c, now);
				continue;
			}
			pump(w, c, now, &wake);
			if (c->connected)
				sim_io_flush(&c->io); /* this turn's publishes, in one write() */
		}
		if (!worker_busy(w))
			break;
		int sending = 0;
		for (int i = 0; i < w->nconns; i++)
			sending |= w->conns[i]->unfinished > 0;
		if (!sending) {
			if (!drain_deadline)
				drain_deadline = now + (int64_t)(r->o.drain_timeout_s * 1e9);
			if (now >= drain_deadline || stop > 1)
				break;
		}
		int np = 0;
		for (int i = 0; i < w->nconns; i++) {
			struct conn *c = w->conns[i];
			int fd = mosquitto_socket(c->mosq);
			if (fd < 0)
				continue;
			pfd[np].fd = fd;
			pfd[np].events = POLLIN | (conn_blocked(c) ? POLLOUT : 0);
			pfd[np].revents = 0;
			pidx[np++] = i;
		}
		int64_t wait_ns = wake - now;
		int timeout = wait_ns <= 0 ? 0 : (int)((wait_ns + 999999) / 1000000);
		if (np == 0) {
			usleep(timeout > 0 ? (useconds_t)timeout * 1000 : 1000);
			continue;
		}
		int n = poll(pfd, (nfds_t)np, timeout);
		if (n < 0 && errno != EINTR) {
			LOG_ERROR(SUB, "msg=\"poll failed\" errno=%d", errno);
			w->rc = TG_EIO;
			break;
		}
		for (int p = 0; p < np; p++)
			conn_drive(w->conns[pidx[p]], pfd[p].revents); /* errors surface as disconnects */
	}
	/* Whatever is still unacknowledged now is lost to us: count it, never hide it. */
	for (int i = 0; i < w->nconns; i++) {
		struct conn *c = w->conns[i];
		w->c.failed += c->outstanding;
		w->c.failed_unacked += c->outstanding;
		c->outstanding = 0;
		c->closing = 1;
		if (c->connected) {
			/* DISCONNECT goes out at once; then read until the broker closes (at most
			 * 200 ms), so our close is not a reset of a half-read connection. */
			sim_io_unbuffer(&c->io, 1000); /* DISCONNECT must not wait in a buffer */
			mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
			for (int k = 0; k < 20 && mosquitto_socket(c->mosq) >= 0; k++) {
				struct pollfd one = {.fd = mosquitto_socket(c->mosq), .events = POLLIN};
				if (poll(&one, 1, 10) > 0 && conn_drive(c, one.revents) != MOSQ_ERR_SUCCESS)
					break;
			}
		}
	}
out:
	free(pfd);
	free(pidx);
	return NULL;
}

/* ---- summary ---- */

static void merge(struct counters *a, const struct counters *b)
{
	a->sent += b->sent;
	a->acked += b->acked;
	a->failed += b->failed;
	a->hostile += b->hostile;
	a->normal += b->normal;
	a->bytes += b->bytes;
	a->acked_no_subscribers += b->acked_no_subscribers;
	a->failed_reason_code += b->failed_reason_code;
	a->failed_publish += b->failed_publish;
	a->failed_unacked += b->failed_unacked;
	for (int k = 0; k < SIM_KIND_COUNT; k++)
		a->kinds[k] += b->kinds[k];
	a->spike += b->spike;
	a->anomaly += b->anomaly;
	a->stuck += b->stuck;
	a->reconnects += b->reconnects;
	a->not_sent += b->not_sent;
}

static int write_summary_json(const struct run *r, const struct counters *k, double elapsed,
			      double rate, int exit_code)
{
	json_t *root = json_object(), *kinds = json_object(), *anom = json_object(),
	       *fail = json_object(), *per = json_object();
	int rc = TG_ENOMEM;
	if (!root || !kinds || !anom || !fail || !per)
		goto out;
	json_object_set_new(root, "sent", json_integer((json_int_t)k->sent));
	json_object_set_new(root, "acked", json_integer((json_int_t)k->acked));
	json_object_set_new(root, "failed", json_integer((json_int_t)k->failed));
	json_object_set_new(root, "hostile", json_integer((json_int_t)k->hostile));
	json_object_set_new(root, "normal", json_integer((json_int_t)k->normal));
	json_object_set_new(root, "elapsed_s", json_real(elapsed));
	json_object_set_new(root, "rate", json_real(rate));
	json_object_set_new(root, "bytes", json_integer((json_int_t)k->bytes));
	json_object_set_new(root, "qos", json_integer(r->o.qos));
	json_object_set_new(root, "things", json_integer(r->o.things));
	json_object_set_new(root, "connections", json_integer(r->nconns));
	json_object_set_new(root, "threads", json_integer(r->nworkers));
	json_object_set_new(root, "seed", json_integer((json_int_t)r->o.seed));
	json_object_set_new(root, "reconnects", json_integer((json_int_t)k->reconnects));
	json_object_set_new(root, "not_sent", json_integer((json_int_t)k->not_sent));
	json_object_set_new(root, "acked_no_subscribers",
			    json_integer((json_int_t)k->acked_no_subscribers));
	json_object_set_new(root, "exit_code", json_integer(exit_code));
	json_object_set_new(fail, "reason_code", json_integer((json_int_t)k->failed_reason_code));
	json_object_set_new(fail, "publish_error", json_integer((json_int_t)k->failed_publish));
	json_object_set_new(fail, "unacked_at_exit", json_integer((json_int_t)k->failed_unacked));
	json_object_set_new(root, "failed_by", fail);
	fail = NULL;
	for (int i = SIM_HOSTILE_FIRST; i < SIM_KIND_COUNT; i++)
		json_object_set_new(kinds, sim_kind_name((enum sim_kind)i),
				    json_integer((json_int_t)k->kinds[i]));
	json_object_set_new(root, "hostile_kinds", kinds);
	kinds = NULL;
	json_object_set_new(anom, "spike", json_integer((json_int_t)k->spike));
	json_object_set_new(anom, "random", json_integer((json_int_t)k->anomaly));
	json_object_set_new(anom, "stuck", json_integer((json_int_t)k->stuck));
	json_object_set_new(root, "anomalies", anom);
	anom = NULL;
	if (r->o.things <= 10000) {
		for (int i = 0; i < r->o.things; i++) {
			const struct thing *t = &r->things[i];
			json_t *o = json_pack("{sIsIsI}", "sent", (json_int_t)t->sent, "hostile",
					      (json_int_t)t->hostile, "spike", (json_int_t)t->spike);
			if (!o)
				goto out;
			json_object_set_new(per, t->gen.name, o);
		}
	}
	json_object_set_new(root, "per_thing", per);
	per = NULL;
	rc = json_dump_file(root, r->o.summary_json, JSON_INDENT(1) | JSON_SORT_KEYS) == 0 ? 0
											    : TG_EIO;
out:
	json_decref(root);
	json_decref(kinds);
	json_decref(anom);
	json_decref(fail);
	json_decref(per);
	return rc;
}

/* ---- main ---- */

static void run_free(struct run *r)
{
	if (r->conns)
		for (int i = 0; i < r->nconns; i++) {
			if (r->conns[i].mosq)
				mosquitto_destroy(r->conns[i].mosq);
			free(r->conns[i].things);
		}
	if (r->workers)
		for (int i = 0; i < r->nworkers; i++) {
			free(r->workers[i].conns);
			free(r->workers[i].buf);
		}
	free(r->conns);
	free(r->workers);
	free(r->things);
	if (r->hostile_log)
		fclose(r->hostile_log);
	sim_opts_free(&r->o);
}

/* Each libmosquitto client holds a socket and a socket pair (3 descriptors), so a few
 * hundred per-thing connections exceed the usual soft limit of 1024: raise it to the hard
 * limit when that is needed. */
static void raise_fd_limit(int nconns)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)nconns * 3 + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		LOG_WARN(SUB, "msg=\"file descriptor limit may be too low\" limit=%llu needed=%llu",
			 (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

/* Things, connections and workers, all wired up (no network yet). */
static int build(struct run *r)
{
	const struct sim_opts *o = &r->o;
	r->things = calloc((size_t)o->things, sizeof *r->things);
	r->nconns = o->connections ? o->connections : o->things;
	r->conns = calloc((size_t)r->nconns, sizeof *r->conns);
	r->nworkers = o->threads;
	r->workers = calloc((size_t)r->nworkers, sizeof *r->workers);
	if (!r->things || !r->conns || !r->workers)
		return TG_ENOMEM;
	for (int i = 0; i < r->nconns; i++) {
		struct conn *c = &r->conns[i];
		c->index = i;
		c->nthings = o->things / r->nconns + (i < o->things % r->nconns);
		c->things = calloc((size_t)c->nthings, sizeof *c->things);
		if (!c->things)
			return TG_ENOMEM;
		c->nthings = 0;
	}
	r->period_ns = o->rate > 0 ? (int64_t)(1e9 / o->rate) : 0;
	for (int i = 0; i < o->things; i++) {
		struct thing *t = &r->things[i];
		char name[64];
		sim_opts_thing_name(o, i, name, sizeof name);
		sim_gen_init(&t->gen, o->seed, i, name);
		/* The template was checked to hold exactly one %s and no other '%'. */
		const char *p = strstr(o->topic_template, "%s");
		snprintf(t->topic, sizeof t->topic, "%.*s%s%s", (int)(p - o->topic_template),
			 o->topic_template, name, p + 2);
		struct conn *c = &r->conns[i % r->nconns];
		t->conn = c;
		c->things[c->nthings++] = t;
		c->unfinished++;
	}
	for (int i = 0; i < r->nworkers; i++) {
		struct worker *w = &r->workers[i];
		w->run = r;
		w->buf = malloc(SIM_PAYLOAD_CAP);
		w->conns = calloc((size_t)(r->nconns / r->nworkers + 1), sizeof *w->conns);
		if (!w->buf || !w->conns)
			return TG_ENOMEM;
	}
	for (int i = 0; i < r->nconns; i++) {
		struct worker *w = &r->workers[i % r->nworkers];
		r->conns[i].w = w;
		w->conns[w->nconns++] = &r->conns[i];
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct run r;
	char err[256];
	int exit_code = 1;
	memset(&r, 0, sizeof r);
	pthread_mutex_init(&r.log_lock, NULL);
	tg_log_init(TG_LOG_INFO);

	int rc = sim_opts_parse(&r.o, argc, argv, err, sizeof err);
	if (rc == 1) {
		sim_opts_free(&r.o);
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "device_sim: %s\n", err);
		sim_opts_free(&r.o);
		return 2;
	}
	if (r.o.quiet)
		tg_log_init(TG_LOG_WARN);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	mosquitto_lib_init();
	if (r.o.shadow) { /* things that follow their Device Shadow instead of sending telemetry */
		exit_code = sim_shadow_run(&r.o, &g_stop);
		goto out;
	}
	if (build(&r) < 0) {
		fprintf(stderr, "device_sim: out of memory\n");
		goto out;
	}
	raise_fd_limit(r.nconns);
	if (r.o.hostile_log && !(r.hostile_log = fopen(r.o.hostile_log, "w"))) {
		fprintf(stderr, "device_sim: cannot open %s: %s\n", r.o.hostile_log, strerror(errno));
		goto out;
	}
	rc = connect_all(&r);
	if (rc < 0) {
		fprintf(stderr, "device_sim: connecting failed (%s)\n", tg_strerror(rc));
		exit_code = 3;
		goto out;
	}
	LOG_INFO(SUB, "msg=\"connected\" connections=%d things=%d threads=%d", r.nconns, r.o.things,
		 r.nworkers);

	r.start_ns = mono_ns();
	for (int i = 0; i < r.o.things; i++) /* spread the things evenly over one period */
		r.things[i].next_due_ns = r.start_ns + r.period_ns * i / r.o.things;
	for (int i = 0; i < r.nworkers; i++)
		if (pthread_create(&r.workers[i].th, NULL, worker_main, &r.workers[i]) != 0) {
			fprintf(stderr, "device_sim: cannot start thread\n");
			atomic_store(&g_stop, 2);
			for (int j = 0; j < i; j++)
				pthread_join(r.workers[j].th, NULL);
			goto out;
		}
	struct counters total;
	memset(&total, 0, sizeof total);
	int worker_failed = 0;
	for (int i = 0; i < r.nworkers; i++) {
		pthread_join(r.workers[i].th, NULL);
		merge(&total, &r.workers[i].c);
		worker_failed |= r.workers[i].rc != 0;
	}
	if (r.o.count && r.o.duration_s <= 0 && !atomic_load(&g_stop))
		for (int i = 0; i < r.o.things; i++)
			total.not_sent += r.o.count - r.things[i].slots;
	double elapsed = (double)(mono_ns() - r.start_ns) / 1e9;
	double rate = elapsed > 0 ? (double)total.acked / elapsed : 0;
	exit_code = worker_failed ? 1 : (total.failed || total.not_sent ? 4 : 0);
	if (r.hostile_log)
		fflush(r.hostile_log);
	printf("device_sim: sent=%" PRIu64 " acked=%" PRIu64 " failed=%" PRIu64 " hostile=%" PRIu64
	       " elapsed=%.3f rate=%.1f/s\n",
	       total.sent, total.acked, total.failed, total.hostile, elapsed, rate);
	if (total.not_sent)
		fprintf(stderr, "device_sim: %" PRIu64 " messages were never sent (connection given up)\n",
			total.not_sent);
	fflush(stdout);
	if (r.o.summary_json && write_summary_json(&r, &total, elapsed, rate, exit_code) < 0) {
		fprintf(stderr, "device_sim: cannot write %s\n", r.o.summary_json);
		exit_code = 1;
	}
out:
	run_free(&r);
	mosquitto_lib_cleanup();
	pthread_mutex_destroy(&r.log_lock);
	return exit_code;
}
