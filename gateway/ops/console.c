/*
 * console.c — see console.h. This file holds the console's state and its plumbing: the
 * per-thing table the ingest observer feeds, the ticker thread that turns counters into
 * rates and a "stats" event every second, the job queue that runs rule reloads and
 * dead-letter requeues on the daemon's thread, the router with its bearer-token check,
 * the SSE stream, the static page and the console's own /metrics lines. The endpoints
 * live in api_rules.c, api_data.c and api_shadows.c.
 */
#include "ops/console_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/jsonout.h"
#include "core/log.h"
#include "shadow/shadow_store.h"

#define SUB "console"
#define QUARANTINE_EVENTS_PER_S 20
#define JOB_WAIT_MS 10000
#define SSE_WAIT_MS 1000

int64_t ops_now_ms(void) { return tg_wall_ms(); }

int ops_json(http_resp *r, int status, json_t *j)
{
	if (!j)
		return http_resp_error(r, 500, "internal", "out of memory");
	char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(j);
	if (!s)
		return http_resp_error(r, 500, "internal", "cannot serialise the response");
	free(r->body);
	r->body = s;
	r->len = strlen(s);
	r->status = status;
	r->content_type = "application/json";
	return 0;
}

int ops_error(http_resp *r, int status, const char *code, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	return http_resp_error(r, status, code, detail);
}

json_t *ops_body_object(const http_req *req, http_resp *r)
{
	size_t len;
	const char *body = http_req_body(req, &len);
	json_error_t je;
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		ops_error(r, 400, "bad_json", "request body %d:%d: %s", je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		ops_error(r, 400, "bad_json", "request body: expected a JSON object");
		return NULL;
	}
	return j;
}

/* ---- the per-thing table (under mu) ------------------------------------------------ */

static size_t slot_in(ops_thing *const *things, size_t cap, const char *name)
{
	size_t mask = cap - 1, i = (size_t)tg_hash_str(TG_HASH_SEED, name) & mask;
	while (things[i] && strcmp(things[i]->name, name) != 0)
		i = (i + 1) & mask;
	return i;
}

static size_t thing_slot(ops_console *c, const char *name) { return slot_in(c->things, c->things_cap, name); }

ops_thing *ops_thing_find(ops_console *c, const char *name)
{
	return c->things_cap ? c->things[thing_slot(c, name)] : NULL;
}

static int things_grow(ops_console *c)
{
	size_t cap = c->things_cap ? c->things_cap * 2 : 256;
	ops_thing **old = c->things, **nt = calloc(cap, sizeof *nt);
	if (!nt)
		return TG_ENOMEM;
	size_t oldcap = c->things_cap;
	c->things = nt;
	c->things_cap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i])
			c->things[thing_slot(c, old[i]->name)] = old[i];
	free(old);
	return 0;
}

static ops_thing *thing_get(ops_console *c, const char *name)
{
	if (c->nthings * 2 >= c->things_cap && (c->nthings >= OPS_MAX_THINGS || things_grow(c)))
		return c->things_cap ? c->things[thing_slot(c, name)] : NULL; /* full: only known things */
	size_t i = thing_slot(c, name);
	if (c->things[i])
		return c->things[i];
	ops_thing *t = calloc(1, sizeof *t);
	if (!t || !(t->name = strdup(name))) {
		free(t);
		return NULL;
	}
	c->things[i] = t;
	c->nthings++;
	return t;
}

void ops_thing_free(ops_thing *t)
{
	if (!t)
		return;
	free(t->name);
	free(t->latest);
	free(t->latest_topic);
	free(t);
}

static ops_thing *thing_copy(const ops_thing *t)
{
	ops_thing *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	*n = *t;
	n->name = strdup(t->name);
	n->latest = t->latest ? malloc(t->latest_len + 1) : NULL;
	n->latest_topic = t->latest_topic ? strdup(t->latest_topic) : NULL;
	if (!n->name || (t->latest && !n->latest) || (t->latest_topic && !n->latest_topic)) {
		ops_thing_free(n);
		return NULL;
	}
	if (n->latest)
		memcpy(n->latest, t->latest, t->latest_len + 1);
	n->latest_cap = t->latest ? t->latest_len + 1 : 0;
	return n;
}

int ops_things_snapshot(ops_console *c, ops_things_snap *s)
{
	*s = (ops_things_snap){0};
	pthread_mutex_lock(&c->mu);
	size_t cap = c->things_cap;
	ops_thing **things = cap ? calloc(cap, sizeof *things) : NULL;
	int rc = cap && !things ? TG_ENOMEM : 0;
	for (size_t i = 0; things && i < cap && !rc; i++)
		if (c->things[i] && !(things[i] = thing_copy(c->things[i])))
			rc = TG_ENOMEM;
	pthread_mutex_unlock(&c->mu);
	s->things = things;
	s->cap = cap;
	if (rc)
		ops_things_snap_free(s);
	return rc;
}

const ops_thing *ops_snap_find(const ops_things_snap *s, const char *name)
{
	return s->cap ? s->things[slot_in(s->things, s->cap, name)] : NULL;
}

void ops_things_snap_free(ops_things_snap *s)
{
	for (size_t i = 0; s->things && i < s->cap; i++)
		ops_thing_free(s->things[i]);
	free(s->things);
	*s = (ops_things_snap){0};
}

static void thing_day(ops_thing *t, int64_t now_ms)
{
	int64_t day = now_ms / 86400000;
	if (day != t->day) {
		t->day = day;
		t->msgs_today = t->quarantined_today = 0;
	}
}

json_t *ops_thing_json(const ops_thing *t, int64_t now_ms, int with_latest)
{
	int64_t day = now_ms / 86400000;
	int64_t last = t->last_seen_ms > t->last_quarantined_ms ? t->last_seen_ms : t->last_quarantined_ms;
	json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:b}", "thing", t->name, "last_seen_ms", (json_int_t)t->last_seen_ms,
			      "messages_today", (json_int_t)(t->day == day ? t->msgs_today : 0), "quarantined_today",
			      (json_int_t)(t->day == day ? t->quarantined_today : 0), "messages_total", (json_int_t)t->msgs_total,
			      "online", last && now_ms - last <= OPS_ONLINE_WINDOW_MS);
	if (j && t->last_quarantined_ms)
		json_object_set_new(j, "last_quarantined_ms", json_integer(t->last_quarantined_ms));
	if (j && with_latest && t->latest) {
		json_t *rec = json_loadb(t->latest, t->latest_len, 0, NULL);
		if (rec)
			json_object_set_new(j, "latest", rec);
		json_object_set_new(j, "latest_topic", json_string(t->latest_topic ? t->latest_topic : ""));
	}
	return j;
}

/* ---- the ingest observer and the outbox hook (ingest thread) ------------------------- */

void ops_console_on_accepted(void *ud, const char *thing, const char *topic, int prio, int64_t received_ms,
			     const json_t *record, const char *text, size_t len)
{
	ops_console *c = ud;
	if (prio != OUTBOX_PRIO_BULK)
		return; /* aggregates and alerts are the gateway's own records, not a device's */
	tg_buf own = {0};
	if (!text) { /* no default sink took the record: serialise it here */
		if (jsonout_write(&own, record))
			return;
		text = own.p;
		len = own.len;
	}
	pthread_mutex_lock(&c->mu);
	ops_thing *t = thing_get(c, thing);
	if (t) {
		thing_day(t, received_ms);
		t->last_seen_ms = received_ms;
		t->msgs_today++;
		t->msgs_total++;
		if (t->latest_cap < len + 1) {
			size_t cap = len + 1 < 256 ? 256 : len + 1;
			char *nl = realloc(t->latest, cap);
			if (nl) {
				t->latest = nl;
				t->latest_cap = cap;
			}
		}
		if (t->latest_cap >= len + 1) {
			memcpy(t->latest, text, len);
			t->latest[len] = '\0';
			t->latest_len = len;
			t->latest_ms = received_ms;
		}
		if (!t->latest_topic || strcmp(t->latest_topic, topic) != 0) {
			free(t->latest_topic);
			t->latest_topic = strdup(topic);
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (c->ret)
		ops_retention_add(c->ret, thing, received_ms, text, len);
	tg_buf_free(&own);
}

static json_t *short_string(const char *s, size_t max)
{
	if (!s)
		return json_null();
	size_t n = strlen(s);
	if (n <= max)
		return json_string(s);
	while (n > max)
		n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--; /* whole UTF-8 characters only */
	return json_stringn(s, n);
}

static void publish(ops_console *c, const char *type, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
	json_decref(j);
	if (s)
		ops_events_publish(c->ev, type, s);
	free(s);
}

void ops_console_on_quarantined(void *ud, const char *thing, const char *topic, const char *reason, const char *field,
				const char *detail, int64_t received_ms)
{
	ops_console *c = ud;
	pthread_mutex_lock(&c->mu);
	ops_thing *t = thing_get(c, thing);
	if (t) {
		thing_day(t, received_ms);
		t->quarantined_today++;
		t->quarantined_total++;
		t->last_quarantined_ms = received_ms;
	}
	pthread_mutex_unlock(&c->mu);
	/* a hostile device can send thousands a second: stream a few, count the rest (the
	 * quarantine table has them all) */
	int64_t sec = received_ms / 1000;
	if (sec != c->qev_second) {
		c->qev_second = sec;
		c->qev_count = 0;
	}
	if (++c->qev_count > QUARANTINE_EVENTS_PER_S) {
		atomic_fetch_add(&c->quarantine_events_dropped, 1);
		return;
	}
	json_t *j = json_object();
	if (!j)
		return;
	json_object_set_new(j, "thing", short_string(thing, 128));
	json_object_set_new(j, "topic", short_string(topic, 256));
	json_object_set_new(j, "reason", short_string(reason, 64));
	json_object_set_new(j, "field", short_string(field, 128));
	json_object_set_new(j, "detail", short_string(detail, 300));
	json_object_set_new(j, "received_ms", json_integer(received_ms));
	publish(c, "quarantine", j);
}

void ops_console_on_alert(void *ud, const alerts_event *ev, int64_t now_ms)
{
	ops_console *c = ud;
	json_t *j = json_copy(ev->json);
	if (!j)
		return;
	json_object_set_new(j, "state", json_string(ev->state == ALERTS_STATE_RAISED ? "raised" : "cleared"));
	json_object_set_new(j, "event_ms", json_integer(now_ms));
	char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
	if (s && strlen(s) > OPS_EVENT_MAX - 200) { /* a huge SELECT output: the event keeps the rest */
		json_object_del(j, "value");
		free(s);
		s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
	}
	if (s)
		ops_events_publish(c->ev, "alert", s);
	free(s);
	pthread_mutex_lock(&c->mu);
	if (json_array_size(c->alert_hist) >= OPS_ALERT_HISTORY)
		json_array_remove(c->alert_hist, 0);
	json_array_append(c->alert_hist, j);
	pthread_mutex_unlock(&c->mu);
	json_decref(j);
}

int ops_console_on_group(void *ud, outbox_group_event ev, int64_t now_ms)
{
	ops_console *c = ud;
	if (c->ret && ev != OUTBOX_GROUP_COMMITTING)
		ops_retention_group(c->ret, ev == OUTBOX_GROUP_COMMITTED, now_ms);
	return 0;
}

/* ---- rules --------------------------------------------------------------------------- */

void ops_console_set_rules(ops_console *c, rules_set *rs)
{
	rules_set *ref = rules_set_ref(rs);
	pthread_mutex_lock(&c->mu);
	rules_set *old = c->rules;
	c->rules = ref;
	c->rules_loaded_ms = ops_now_ms();
	free(c->rules_error);
	c->rules_error = NULL;
	pthread_mutex_unlock(&c->mu);
	rules_set_free(old);
	publish(c, "rules", json_pack("{s:b, s:I}", "ok", 1, "rules", (json_int_t)rules_count(rs)));
}

void ops_console_rules_failed(ops_console *c, const char *errors)
{
	pthread_mutex_lock(&c->mu);
	free(c->rules_error);
	c->rules_error = strdup(errors ? errors : "");
	pthread_mutex_unlock(&c->mu);
	publish(c, "rules", json_pack("{s:b, s:o}", "ok", 0, "errors", short_string(errors, 1500)));
}

/* ---- jobs for the daemon's thread -------------------------------------------------- */

int ops_run_job(ops_console *c, ops_job *j, int timeout_ms)
{
	struct timespec dl = tg_deadline_in(timeout_ms);
	pthread_mutex_lock(&c->job_mu);
	if (c->stopping) {
		pthread_mutex_unlock(&c->job_mu);
		return TG_EIO;
	}
	j->state = 0;
	j->next = NULL;
	ops_job **tail = &c->jobs;
	while (*tail)
		tail = &(*tail)->next;
	*tail = j;
	atomic_fetch_add(&c->njobs, 1);
	while (j->state == 0 && !c->stopping)
		if (pthread_cond_timedwait(&c->job_cv, &c->job_mu, &dl) == ETIMEDOUT)
			break;
	if (j->state == 0) { /* never started: take it back */
		for (ops_job **p = &c->jobs; *p; p = &(*p)->next)
			if (*p == j) {
				*p = j->next;
				atomic_fetch_sub(&c->njobs, 1);
				break;
			}
		pthread_mutex_unlock(&c->job_mu);
		return TG_ERETRY;
	}
	while (j->state != 2) /* started: it lives on this stack until it is done */
		pthread_cond_wait(&c->job_cv, &c->job_mu);
	pthread_mutex_unlock(&c->job_mu);
	return 0;
}

void ops_console_service(ops_console *c, int outbox_idle)
{
	if (!c)
		return;
	if (c->ret && outbox_idle)
		ops_retention_tick(c->ret, tg_wall_ms()); /* the daemon's thread is the writer's */
	if (atomic_load(&c->njobs) == 0)
		return;
	for (;;) {
		pthread_mutex_lock(&c->job_mu);
		ops_job **p = &c->jobs;
		while (*p && (*p)->kind == OPS_JOB_REQUEUE && !outbox_idle)
			p = &(*p)->next;
		ops_job *j = *p;
		if (j) {
			*p = j->next;
			atomic_fetch_sub(&c->njobs, 1);
			j->state = 1;
		}
		pthread_mutex_unlock(&c->job_mu);
		if (!j)
			return;
		if (j->kind == OPS_JOB_RELOAD)
			j->rc = c->host.reload_rules(c->host.ud);
		else
			j->rc = c->host.requeue_dead(c->host.ud, j->sink, &j->moved);
		pthread_mutex_lock(&c->job_mu);
		j->state = 2;
		pthread_cond_broadcast(&c->job_cv);
		pthread_mutex_unlock(&c->job_mu);
	}
}

/* ---- the ticker: rates and the "stats" event --------------------------------------- */

static void *ticker(void *arg)
{
	ops_console *c = arg;
	ops_counters prev = {0}, cur;
	uint64_t prev_ok[OPS_MAX_SINKS] = {0};
	int64_t prev_ms = 0;
	size_t ns = forwarder_nsinks(c->fw);
	if (ns > OPS_MAX_SINKS)
		ns = OPS_MAX_SINKS;
	pthread_mutex_lock(&c->tick_mu);
	while (!c->tick_stop) {
		pthread_mutex_unlock(&c->tick_mu);
		int64_t now = tg_mono_ms();
		c->host.counters(c->host.ud, &cur);
		double dt = prev_ms ? (double)(now - prev_ms) / 1000.0 : 0;
		json_t *sinks = json_array();
		double rates[OPS_MAX_SINKS] = {0};
		for (size_t i = 0; i < ns; i++) {
			forwarder_sink_stats *s = forwarder_stats(c->fw, i);
			uint64_t ok = atomic_load(&s->records_ok);
			rates[i] = dt > 0 ? (double)(ok - prev_ok[i]) / dt : 0;
			prev_ok[i] = ok;
			json_array_append_new(sinks, json_pack("{s:s, s:I, s:f, s:I, s:I, s:b}", "name", s->name, "pending",
								(json_int_t)atomic_load(&s->pending), "ok_per_s", rates[i],
								"retry_total", (json_int_t)atomic_load(&s->records_retry), "dead_total",
								(json_int_t)atomic_load(&s->records_dead), "up", atomic_load(&s->up)));
		}
		if (dt > 0) {
			pthread_mutex_lock(&c->mu);
			c->received_per_s = (double)(cur.received - prev.received) / dt;
			c->accepted_per_s = (double)(cur.accepted - prev.accepted) / dt;
			c->quarantined_per_s = (double)(cur.quarantined - prev.quarantined) / dt;
			memcpy(c->sink_ok_per_s, rates, sizeof rates);
			json_t *j = json_pack("{s:I, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:o, s:I}", "ts",
					      (json_int_t)tg_wall_ms(), "received_per_s", c->received_per_s, "accepted_per_s",
					      c->accepted_per_s, "quarantined_per_s", c->quarantined_per_s, "received_total",
					      (json_int_t)cur.received, "accepted_total", (json_int_t)cur.accepted,
					      "quarantined_total", (json_int_t)cur.quarantined, "alerts_raised_total",
					      (json_int_t)cur.alerts_raised, "broker_connected", cur.broker_connected, "outbox_rows",
					      (json_int_t)atomic_load(&outbox_counters_of(c->ob)->rows), "outbox_bytes",
					      (json_int_t)atomic_load(&outbox_counters_of(c->ob)->bytes), "sinks", sinks,
					      "quarantine_events_dropped", (json_int_t)atomic_load(&c->quarantine_events_dropped));
			pthread_mutex_unlock(&c->mu);
			publish(c, "stats", j);
		} else {
			json_decref(sinks);
		}
		prev = cur;
		prev_ms = now;
		pthread_mutex_lock(&c->tick_mu);
		if (c->tick_stop)
			break;
		struct timespec ts = tg_deadline_in(1000);
		pthread_cond_timedwait(&c->tick_cv, &c->tick_mu, &ts);
	}
	pthread_mutex_unlock(&c->tick_mu);
	return NULL;
}

/* ---- the event stream -------------------------------------------------------------- */

typedef struct sse_state {
	ops_console *c;
	uint64_t next;
	int hello;
} sse_state;

static ssize_t sse_read(void *ud, char *buf, size_t max)
{
	sse_state *s = ud;
	if (!s->hello) {
		s->hello = 1;
		int n = snprintf(buf, max, "retry: 2000\n: tidegate events\n\n");
		return n > 0 && (size_t)n < max ? n : -1;
	}
	ssize_t n = ops_events_read(s->c->ev, &s->next, buf, max, SSE_WAIT_MS);
	if (n < 0)
		return -1;
	if (n == 0) { /* a comment keeps proxies and the client's reader awake */
		static const char ping[] = ": ping\n\n";
		if (max < sizeof ping)
			return -1;
		memcpy(buf, ping, sizeof ping - 1);
		return (ssize_t)(sizeof ping - 1);
	}
	return n;
}

static void sse_free(void *ud)
{
	sse_state *s = ud;
	atomic_fetch_sub(&s->c->sse_clients, 1);
	free(s);
}

static int api_events(ops_console *c, http_resp *r)
{
	sse_state *s = calloc(1, sizeof *s);
	if (!s)
		return http_resp_error(r, 500, "internal", "out of memory");
	s->c = c;
	s->next = ops_events_head(c->ev);
	atomic_fetch_add(&c->sse_clients, 1);
	r->stream = sse_read;
	r->stream_ud = s;
	r->stream_free = sse_free;
	r->content_type = "text/event-stream";
	r->cache_control = "no-cache";
	return 0;
}

/* ---- the page ---------------------------------------------------------------------- */

static const char *content_type_of(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {{".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
		     {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
		     {".png", "image/png"},                 {".ico", "image/x-icon"},
		     {".json", "application/json"}};
	const char *dot = strrchr(name, '.');
	for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
		if (strcmp(dot, types[i].ext) == 0)
			return types[i].type;
	return NULL;
}

/* One file straight from www_dir: a plain name (no folder, no leading dot), a known
 * extension, a regular file that is not a symlink. Public: it holds no data. */
static int serve_static(ops_console *c, const char *path, http_resp *r)
{
	const char *name = strcmp(path, "/") == 0 ? "index.html" : path + 1;
	size_t n = strlen(name);
	if (n == 0 || n > 64 || name[0] == '.' || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
		return 1;
	const char *ctype = content_type_of(name);
	if (!ctype)
		return 1;
	if (!c->www_dir)
		return ops_error(r, 404, "not_installed", "the console page is not installed ([http] www_dir)");
	char full[PATH_MAX];
	snprintf(full, sizeof full, "%s/%s", c->www_dir, name);
	int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		if (fd >= 0)
			close(fd);
		return 1;
	}
	r->fd = fd;
	r->len = (size_t)sb.st_size;
	r->status = 200;
	r->content_type = ctype;
	r->cache_control = "no-cache";
	r->csp = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'";
	return 0;
}

/* ---- routing ----------------------------------------------------------------------- */

static int render_host(ops_console *c, const char *path, http_resp *r)
{
	int status = 200;
	const char *ctype = "text/plain; charset=utf-8";
	char *body = c->host.render(c->host.ud, path, &status, &ctype);
	if (!body)
		return 1;
	r->body = body;
	r->len = strlen(body);
	r->status = status;
	r->content_type = ctype;
	r->cache_control = "no-store";
	return 0;
}

static int method_is(const http_req *req, const char *m) { return strcmp(http_req_method(req), m) == 0; }

static int route(ops_console *c, const http_req *req, http_resp *r)
{
	const char *path = http_req_path(req);
	int get = method_is(req, "GET") || method_is(req, "HEAD");
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0)
		return get ? render_host(c, path, r) : ops_error(r, 405, "method_not_allowed", "%s takes GET", path);
	int api = strncmp(path, "/api/", 5) == 0 || strcmp(path, "/api") == 0;
	if (!api && strcmp(path, "/metrics") != 0) {
		if (!get)
			return ops_error(r, 405, "method_not_allowed", "%s takes GET", path);
		return serve_static(c, path, r);
	}
	if (!ops_token_check(c->token, http_req_header(req, "Authorization"), ops_now_ms())) {
		atomic_fetch_add(&c->unauthorized, 1);
		return ops_error(r, 401, "unauthorized",
				 http_req_header(req, "Authorization") ? "wrong bearer token" : "missing bearer token (Authorization: Bearer <token>)");
	}
	if (strcmp(path, "/metrics") == 0 || strcmp(path, "/api/status") == 0)
		return get ? render_host(c, path, r) : ops_error(r, 405, "method_not_allowed", "%s takes GET", path);
	const char *rest = path + 5;
	if (strcmp(rest, "rules") == 0 || strncmp(rest, "rules/", 6) == 0)
		return ops_api_rules(c, req, r, rest + 5);
	if (strcmp(rest, "devices") == 0 || strncmp(rest, "devices/", 8) == 0)
		return get ? ops_api_devices(c, req, r, rest + 7) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "alerts") == 0)
		return get ? ops_api_alerts(c, req, r) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "quarantine") == 0)
		return get ? ops_api_quarantine(c, req, r) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "sinks") == 0 || strncmp(rest, "sinks/", 6) == 0)
		return ops_api_sinks(c, req, r, rest + 5);
	if (strncmp(rest, "things/", 7) == 0)
		return get ? ops_api_things(c, req, r, rest + 6) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "shadows") == 0 || strncmp(rest, "shadows/", 8) == 0)
		return get ? ops_api_shadows(c, req, r, rest + 7) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "series") == 0)
		return get ? ops_api_series(c, req, r) : ops_error(r, 405, "method_not_allowed", "takes GET");
	if (strcmp(rest, "query") == 0)
		return method_is(req, "POST") ? ops_api_query(c, req, r) : ops_error(r, 405, "method_not_allowed", "takes POST");
	if (strcmp(rest, "events") == 0)
		return get ? api_events(c, r) : ops_error(r, 405, "method_not_allowed", "takes GET");
	return 1;
}

int ops_console_handle(void *ud, const http_req *req, http_resp *r)
{
	ops_console *c = ud;
	atomic_fetch_add(&c->requests, 1);
	int rc = route(c, req, r);
	if (rc == 1)
		ops_error(r, 404, "not_found", "no such endpoint: %s %s", http_req_method(req), http_req_path(req));
	if (r->status >= 500)
		atomic_fetch_add(&c->server_errors, 1);
	else if (r->status >= 400)
		atomic_fetch_add(&c->client_errors, 1);
	return 0;
}

/* ---- metrics ----------------------------------------------------------------------- */

char *ops_console_metrics(ops_console *c)
{
	tg_buf b = {0};
	tg_buf_printf(&b,
		      "# HELP tidegate_api_requests_total Requests to the ops HTTP server's console paths.\n"
		      "# TYPE tidegate_api_requests_total counter\ntidegate_api_requests_total %" PRIu64 "\n"
		      "# HELP tidegate_api_unauthorized_total Requests refused for a missing or wrong bearer token.\n"
		      "# TYPE tidegate_api_unauthorized_total counter\ntidegate_api_unauthorized_total %" PRIu64 "\n"
		      "# HELP tidegate_api_responses_total Error responses by class.\n"
		      "# TYPE tidegate_api_responses_total counter\n"
		      "tidegate_api_responses_total{class=\"4xx\"} %" PRIu64 "\ntidegate_api_responses_total{class=\"5xx\"} %" PRIu64 "\n"
		      "# HELP tidegate_api_rule_changes_total Rule files written or deleted through the API (and reloaded).\n"
		      "# TYPE tidegate_api_rule_changes_total counter\ntidegate_api_rule_changes_total %" PRIu64 "\n"
		      "# HELP tidegate_api_rule_change_failures_total Rule changes refused (invalid) or rolled back.\n"
		      "# TYPE tidegate_api_rule_change_failures_total counter\ntidegate_api_rule_change_failures_total %" PRIu64 "\n"
		      "# HELP tidegate_api_dead_requeued_total Dead letters requeued through the API.\n"
		      "# TYPE tidegate_api_dead_requeued_total counter\ntidegate_api_dead_requeued_total %" PRIu64 "\n"
		      "# HELP tidegate_api_sse_clients Event-stream clients connected.\n"
		      "# TYPE tidegate_api_sse_clients gauge\ntidegate_api_sse_clients %d\n"
		      "# HELP tidegate_api_quarantine_events_dropped_total Quarantine events not streamed (over 20 a second).\n"
		      "# TYPE tidegate_api_quarantine_events_dropped_total counter\ntidegate_api_quarantine_events_dropped_total %" PRIu64 "\n",
		      atomic_load(&c->requests), atomic_load(&c->unauthorized), atomic_load(&c->client_errors),
		      atomic_load(&c->server_errors), atomic_load(&c->rule_changes), atomic_load(&c->rule_change_failures),
		      atomic_load(&c->dead_requeued), atomic_load(&c->sse_clients), atomic_load(&c->quarantine_events_dropped));
	if (c->ret) {
		ops_retention_stats st;
		ops_retention_stats_get(c->ret, &st);
		tg_buf_printf(&b,
			      "# HELP tidegate_retention_rows Records in the retention store.\n"
			      "# TYPE tidegate_retention_rows gauge\ntidegate_retention_rows %" PRId64 "\n"
			      "# HELP tidegate_retention_bytes Record text in the retention store (what max_bytes bounds).\n"
			      "# TYPE tidegate_retention_bytes gauge\ntidegate_retention_bytes %" PRId64 "\n"
			      "# HELP tidegate_retention_disk_bytes The retention store's files on disk (database + WAL).\n"
			      "# TYPE tidegate_retention_disk_bytes gauge\ntidegate_retention_disk_bytes %" PRId64 "\n"
			      "# HELP tidegate_retention_written_total Records written to the retention store.\n"
			      "# TYPE tidegate_retention_written_total counter\ntidegate_retention_written_total %" PRIu64 "\n"
			      "# HELP tidegate_retention_trimmed_total Records removed for age or size.\n"
			      "# TYPE tidegate_retention_trimmed_total counter\ntidegate_retention_trimmed_total %" PRIu64 "\n"
			      "# HELP tidegate_retention_write_errors_total Group writes to the retention store that failed.\n"
			      "# TYPE tidegate_retention_write_errors_total counter\ntidegate_retention_write_errors_total %" PRIu64 "\n",
			      st.rows, st.bytes, st.disk_bytes, st.written, st.trimmed, st.write_errors);
	}
	return b.p;
}

/* ---- lifecycle --------------------------------------------------------------------- */

/* www_dir, else <prefix>/share/tidegate/www where <prefix> is the folder above the
 * binary's (so /usr/local/bin/tidegate finds /usr/local/share/tidegate/www). */
static char *find_www(const char *configured)
{
	char buf[PATH_MAX];
	if (configured && *configured) {
		snprintf(buf, sizeof buf, "%s", configured);
	} else {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0)
			return NULL;
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		snprintf(buf, sizeof buf, "%s/share/tidegate/www", exe);
	}
	char idx[PATH_MAX + 16];
	snprintf(idx, sizeof idx, "%s/index.html", buf);
	if (access(idx, R_OK) != 0) {
		LOG_WARN(SUB, "msg=\"console page not found; the API works, / answers 404\" www_dir=%s", buf);
		return NULL;
	}
	return strdup(buf);
}

ops_console *ops_console_new(const ops_console_conf *conf, const ops_host *host, char *err, size_t errlen)
{
	ops_console *c = calloc(1, sizeof *c);
	if (!c) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	c->cfg = conf->cfg;
	c->ob = conf->ob;
	c->fw = conf->fw;
	c->sink_names = conf->sink_names;
	c->host = *host;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->job_mu, NULL);
	tg_cond_init_mono(&c->job_cv);
	pthread_mutex_init(&c->rules_mu, NULL);
	pthread_mutex_init(&c->db_mu, NULL);
	pthread_mutex_init(&c->tick_mu, NULL);
	tg_cond_init_mono(&c->tick_cv);
	snprintf(c->alerts_db, sizeof c->alerts_db, "%s/alerts.db", c->cfg->data_dir);
	if (!(c->token = ops_token_load(c->cfg->http_token_file, err, errlen)))
		goto fail;
	if (!(c->ev = ops_events_new(512)) || !(c->alert_hist = json_array()) || things_grow(c)) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto fail;
	}
	if (c->cfg->retention_period_ms > 0) {
		ops_retention_conf rc = {.path = c->cfg->retention_path, .period_ms = c->cfg->retention_period_ms,
					 .max_bytes = c->cfg->retention_max_bytes};
		if (!(c->ret = ops_retention_open(&rc, err, errlen)))
			goto fail;
	}
	c->www_dir = find_www(c->cfg->http_www_dir);
	if (strncmp(c->cfg->http_bind, "127.", 4) != 0 && !*c->cfg->http_tls_cert_file)
		LOG_WARN(SUB, "msg=\"the API is bound to a non-loopback address without TLS: the token crosses the network in "
			      "clear; set [http] tls_cert_file and tls_key_file\" bind=%s",
			 c->cfg->http_bind);
	if (pthread_create(&c->tick_tid, NULL, ticker, c) != 0) {
		tg_seterr(err, errlen, TG_ENOMEM, "cannot start the console's ticker thread");
		goto fail;
	}
	c->tick_started = 1;
	return c;
fail:
	ops_console_free(c);
	return NULL;
}

void ops_console_stop(ops_console *c)
{
	if (!c)
		return;
	ops_events_close(c->ev);
	pthread_mutex_lock(&c->job_mu);
	c->stopping = 1;
	pthread_cond_broadcast(&c->job_cv);
	pthread_mutex_unlock(&c->job_mu);
	if (c->tick_started) {
		pthread_mutex_lock(&c->tick_mu);
		c->tick_stop = 1;
		pthread_cond_signal(&c->tick_cv);
		pthread_mutex_unlock(&c->tick_mu);
		pthread_join(c->tick_tid, NULL);
		c->tick_started = 0;
	}
}

void ops_console_free(ops_console *c)
{
	if (!c)
		return;
	ops_console_stop(c);
	ops_token_free(c->token);
	ops_events_free(c->ev);
	ops_retention_close(c->ret);
	for (size_t i = 0; i < c->things_cap; i++)
		ops_thing_free(c->things[i]);
	free(c->things);
	json_decref(c->alert_hist);
	json_decref(c->backlog_cache);
	rules_set_free(c->rules);
	free(c->rules_error);
	free(c->www_dir);
	sqlite3_close(c->obdb);
	sqlite3_close(c->aldb);
	shadow_store_close(c->shadows);
	registry_close(c->reg);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->job_mu);
	pthread_cond_destroy(&c->job_cv);
	pthread_mutex_destroy(&c->rules_mu);
	pthread_mutex_destroy(&c->db_mu);
	pthread_mutex_destroy(&c->tick_mu);
	pthread_cond_destroy(&c->tick_cv);
	free(c);
}
