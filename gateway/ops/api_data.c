/*
 * api_data.c — the console's read endpoints (devices, alerts, quarantine, sinks, recent
 * data, SQL over the retention store) and the dead-letter requeue.
 *
 * The outbox and alert databases are read through read-only connections of the console's
 * own, opened on first use and shared under db_mu; every statement there runs under a
 * time limit (progress handler), so a query over a large backlog gives up rather than keep
 * a read snapshot open under the outbox's writer. Sink backlogs are cached for two seconds.
 */
#include "ops/console_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"

#define DB_TIMEOUT_MS 500
#define BACKLOG_CACHE_MS 2000
#define QUERY_MAX_ROWS 10000
#define QUERY_TIMEOUT_MS 2000

static int db_progress(void *ud)
{
	const int64_t *deadline = ud;
	return tg_mono_ms() > *deadline;
}

/* db_mu held. The read-only handle, opened on first use; NULL when the file is not there. */
static sqlite3 *db_get(ops_console *c, sqlite3 **h, const char *path)
{
	if (*h)
		return *h;
	if (access(path, F_OK) != 0)
		return NULL;
	if (sqlite3_open_v2(path, h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		sqlite3_close(*h);
		*h = NULL;
		return NULL;
	}
	sqlite3_busy_timeout(*h, 100);
	sqlite3_progress_handler(*h, 1000, db_progress, &c->db_deadline_ms);
	return *h;
}

static json_t *text_or_hex(const void *p, int n)
{
	json_t *s = p ? json_stringn(p, (size_t)n) : json_string("");
	if (s)
		return s;
	char *hex = malloc(2 * (size_t)n + 1);
	if (!hex)
		return json_null();
	for (int i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)p)[i]);
	hex[2 * n] = '\0';
	json_t *h = json_pack("{s:s}", "hex", hex);
	free(hex);
	return h;
}

/* ---- devices ------------------------------------------------------------------------ */

static registry *reg_get(ops_console *c)
{
	if (!c->reg && access(c->cfg->registry_path, F_OK) == 0) {
		char err[256];
		c->reg = registry_open(c->cfg->registry_path, REGISTRY_RDONLY, 50, err, sizeof err);
	}
	return c->reg;
}

static int add_attr(void *ud, const char *key, const char *value)
{
	return json_object_set_new(ud, key, json_string(value)) ? TG_ENOMEM : 0;
}

static json_t *registry_row(ops_console *c, const registry_thing_row *row)
{
	json_t *attrs = json_object();
	registry_attrs_foreach(c->reg, row->name, add_attr, attrs, NULL, 0);
	return json_pack("{s:s, s:b, s:I, s:I, s:s, s:i, s:o}", "thing", row->name, "registered", 1, "created_ms",
			 (json_int_t)row->created_ms, "updated_ms", (json_int_t)row->updated_ms, "certificates",
			 registry_thing_summary(row), "certificate_count", row->certs, "attributes", attrs);
}

typedef struct dev_walk {
	ops_console *c;
	json_t *list;
} dev_walk;

static int on_thing(void *ud, const registry_thing_row *row)
{
	dev_walk *w = ud;
	if (json_array_size(w->list) >= 10000)
		return 1;
	json_array_append_new(w->list, registry_row(w->c, row));
	return 0;
}

static void merge_stats(const ops_things_snap *snap, json_t *dev, int64_t now, int with_latest)
{
	const ops_thing *t = ops_snap_find(snap, json_string_value(json_object_get(dev, "thing")));
	json_t *st = t ? ops_thing_json(t, now, with_latest) : NULL;
	if (st) {
		json_object_del(st, "thing");
		json_object_update(dev, st);
		json_decref(st);
	} else {
		json_object_set_new(dev, "last_seen_ms", json_integer(0));
		json_object_set_new(dev, "messages_today", json_integer(0));
		json_object_set_new(dev, "quarantined_today", json_integer(0));
		json_object_set_new(dev, "online", json_false());
	}
}

static const char ONLINE_BASIS[] =
	"the daemon's own counters: a message (accepted or quarantined) in the last 60 s; the broker's connection table is not visible to the daemon";

/* The per-thing figures come from a snapshot of the table (ops_things_snapshot): parsing
 * every thing's latest record under the table's lock stalled the ingest thread, which takes
 * that lock for every message, for as long as the page's poll took. */
int ops_api_devices(ops_console *c, const http_req *req, http_resp *r, const char *rest)
{
	int64_t now = ops_now_ms();
	ops_things_snap snap;
	if (*rest && *rest != '/')
		return 1;
	if (ops_things_snapshot(c, &snap))
		return ops_error(r, 500, "internal", "out of memory");
	if (*rest == '/') {
		const char *thing = rest + 1;
		json_t *dev = NULL;
		pthread_mutex_lock(&c->db_mu);
		registry_thing_row row;
		if (reg_get(c) && registry_thing_get(c->reg, thing, &row, NULL, 0) == 0)
			dev = registry_row(c, &row);
		pthread_mutex_unlock(&c->db_mu);
		if (!dev && ops_snap_find(&snap, thing))
			dev = json_pack("{s:s, s:b}", "thing", thing, "registered", 0);
		if (dev)
			merge_stats(&snap, dev, now, 1);
		ops_things_snap_free(&snap);
		if (!dev)
			return ops_error(r, 404, "unknown_thing", "'%s' is neither registered nor seen since the daemon started", thing);
		json_object_set_new(dev, "online_basis", json_string(ONLINE_BASIS));
		return ops_json(r, 200, dev);
	}
	dev_walk w = {c, json_array()};
	json_t *known = json_object(); /* registered names, for the unregistered things seen */
	if (!w.list || !known) {
		json_decref(w.list);
		json_decref(known);
		ops_things_snap_free(&snap);
		return ops_error(r, 500, "internal", "out of memory");
	}
	pthread_mutex_lock(&c->db_mu);
	int registered = reg_get(c) != NULL;
	if (registered)
		registry_things_foreach(c->reg, on_thing, &w, NULL, 0);
	pthread_mutex_unlock(&c->db_mu);
	size_t nreg = json_array_size(w.list);
	for (size_t i = 0; i < nreg; i++) {
		json_t *dev = json_array_get(w.list, i);
		json_object_set(known, json_string_value(json_object_get(dev, "thing")), json_true());
		merge_stats(&snap, dev, now, 1);
	}
	for (size_t i = 0; i < snap.cap && json_array_size(w.list) < 20000; i++) {
		const ops_thing *t = snap.things[i];
		if (!t || json_object_get(known, t->name))
			continue;
		json_t *dev = ops_thing_json(t, now, 1);
		if (dev) {
			json_object_set_new(dev, "registered", json_false());
			json_array_append_new(w.list, dev);
		}
	}
	json_decref(known);
	ops_things_snap_free(&snap);
	return ops_json(r, 200, json_pack("{s:o, s:b, s:s}", "devices", w.list, "registry", registered, "online_basis",
					  ONLINE_BASIS));
}

/* ---- alerts ------------------------------------------------------------------------- */

int ops_api_alerts(ops_console *c, const http_req *req, http_resp *r)
{
	json_t *active = json_array();
	pthread_mutex_lock(&c->db_mu);
	sqlite3 *db = db_get(c, &c->aldb, c->alerts_db);
	sqlite3_stmt *st = NULL;
	int rc = SQLITE_DONE;
	if (db && sqlite3_prepare_v2(db,
				     "SELECT rule, alert, thing, severity, raised_at_ms, matches, first_trigger_ms, last_trigger_ms"
				     " FROM alert_state WHERE state = 2 ORDER BY raised_at_ms DESC LIMIT 1000",
				     -1, &st, NULL) == SQLITE_OK) {
		c->db_deadline_ms = tg_mono_ms() + DB_TIMEOUT_MS;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			json_array_append_new(
				active, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "rule", sqlite3_column_text(st, 0) ?: (const unsigned char *)"",
						  "alert", sqlite3_column_text(st, 1) ?: (const unsigned char *)"", "thing",
						  sqlite3_column_text(st, 2) ?: (const unsigned char *)"", "severity",
						  sqlite3_column_text(st, 3) ?: (const unsigned char *)"major", "raised_at_ms",
						  (json_int_t)sqlite3_column_int64(st, 4), "matches", (json_int_t)sqlite3_column_int64(st, 5),
						  "first_trigger_ts", (json_int_t)sqlite3_column_int64(st, 6), "last_trigger_ts",
						  (json_int_t)sqlite3_column_int64(st, 7)));
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&c->db_mu);
	if (rc != SQLITE_DONE) {
		json_decref(active);
		return ops_error(r, 503, "unavailable", "cannot read the alert state: %s", db ? sqlite3_errstr(rc) : "no database");
	}
	json_t *hist = json_array();
	pthread_mutex_lock(&c->mu);
	for (size_t i = json_array_size(c->alert_hist); i-- > 0;)
		json_array_append(hist, json_array_get(c->alert_hist, i));
	pthread_mutex_unlock(&c->mu);
	return ops_json(r, 200, json_pack("{s:o, s:o}", "active", active, "history", hist));
}

/* ---- quarantine --------------------------------------------------------------------- */

static int64_t int_param(const http_req *req, const char *key, int64_t def, int64_t lo, int64_t hi, int *bad)
{
	const char *v = http_req_query(req, key);
	if (!v || !*v)
		return def;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (*end || errno || n < lo || n > hi) {
		*bad = 1;
		return def;
	}
	return n;
}

int ops_api_quarantine(ops_console *c, const http_req *req, http_resp *r)
{
	int bad = 0;
	int64_t limit = int_param(req, "limit", 100, 1, 1000, &bad);
	if (bad)
		return ops_error(r, 400, "bad_request", "limit: an integer 1..1000");
	const char *thing = http_req_query(req, "thing"), *reason = http_req_query(req, "reason");
	json_t *items = json_array();
	pthread_mutex_lock(&c->db_mu);
	sqlite3 *db = db_get(c, &c->obdb, c->cfg->outbox_path);
	sqlite3_stmt *st = NULL;
	int rc = SQLITE_ERROR;
	if (db && sqlite3_prepare_v2(db,
				     "SELECT seq, received_ms, thing, topic, reason, field, detail, substr(payload, 1, 1024),"
				     " length(payload) FROM quarantine WHERE (?1 IS NULL OR thing = ?1)"
				     " AND (?2 IS NULL OR reason = ?2) ORDER BY seq DESC LIMIT ?3",
				     -1, &st, NULL) == SQLITE_OK) {
		c->db_deadline_ms = tg_mono_ms() + DB_TIMEOUT_MS;
		if (thing && *thing)
			sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
		if (reason && *reason)
			sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, limit);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			json_t *o = json_pack("{s:I, s:I}", "seq", (json_int_t)sqlite3_column_int64(st, 0), "received_ms",
					      (json_int_t)sqlite3_column_int64(st, 1));
			static const char *const names[] = {"thing", "topic", "reason", "field", "detail"};
			for (int k = 0; o && k < 5; k++) {
				const unsigned char *v = sqlite3_column_text(st, 2 + k);
				json_object_set_new(o, names[k], v ? text_or_hex(v, sqlite3_column_bytes(st, 2 + k)) : json_null());
			}
			if (o) {
				json_object_set_new(o, "payload", text_or_hex(sqlite3_column_blob(st, 7), sqlite3_column_bytes(st, 7)));
				json_object_set_new(o, "payload_bytes", json_integer(sqlite3_column_int64(st, 8)));
				json_array_append_new(items, o);
			}
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&c->db_mu);
	if (!db)
		return ops_json(r, 200, json_pack("{s:o}", "items", items));
	if (rc != SQLITE_DONE) {
		json_decref(items);
		return ops_error(r, 503, "unavailable", "cannot read the quarantine table: %s", sqlite3_errstr(rc));
	}
	return ops_json(r, 200, json_pack("{s:o}", "items", items));
}

/* ---- sinks -------------------------------------------------------------------------- */

/* db_mu held: {name: {rows, bytes, oldest_ms, dead, dead_bytes, exact}}. Rows and bytes come
 * from the counters the outbox keeps as rows come and go (no query), the oldest row from one
 * index seek per priority: counting the backlog here (count and sum(length(payload)) over
 * every row of the sink) read the whole backlog every two seconds while the page was open,
 * and held a read snapshot under the outbox's writer for as long. */
static json_t *backlog(ops_console *c)
{
	if (c->backlog_cache && tg_mono_ms() - c->backlog_cache_ms < BACKLOG_CACHE_MS)
		return json_incref(c->backlog_cache);
	json_t *all = json_object();
	sqlite3 *db = db_get(c, &c->obdb, c->cfg->outbox_path);
	for (size_t i = 0; i < forwarder_nsinks(c->fw); i++) {
		const char *name = forwarder_stats(c->fw, i)->name;
		int64_t rows = 0, bytes = 0, oldest = 0;
		outbox_sink_backlog(c->ob, name, &rows, &bytes); /* 0, 0 for a sink never written to */
		json_t *o = json_pack("{s:I, s:I, s:b}", "rows", (json_int_t)rows, "bytes", (json_int_t)bytes, "exact", 1);
		sqlite3_stmt *st = NULL;
		c->db_deadline_ms = tg_mono_ms() + DB_TIMEOUT_MS;
		if (rows > 0 && db &&
		    sqlite3_prepare_v2(db,
				       "SELECT min(created_ms) FROM (SELECT (SELECT created_ms FROM outbox WHERE sink = s.id AND prio = p.prio"
				       " ORDER BY seq LIMIT 1) AS created_ms FROM (SELECT id FROM sinks WHERE name = ?1) AS s,"
				       " (SELECT ?2 AS prio UNION ALL SELECT ?3 UNION ALL SELECT ?4) AS p)",
				       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
			sqlite3_bind_int(st, 2, OUTBOX_PRIO_BULK);
			sqlite3_bind_int(st, 3, OUTBOX_PRIO_AGGREGATE);
			sqlite3_bind_int(st, 4, OUTBOX_PRIO_ALERT);
			if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
				oldest = sqlite3_column_int64(st, 0);
		}
		sqlite3_finalize(st);
		st = NULL;
		json_object_set_new(o, "oldest_ms", oldest ? json_integer(oldest) : json_null());
		c->db_deadline_ms = tg_mono_ms() + DB_TIMEOUT_MS;
		if (db && sqlite3_prepare_v2(db, "SELECT count(*), coalesce(sum(length(payload)), 0) FROM dead WHERE sink = ?1", -1, &st,
					     NULL) == SQLITE_OK) {
			sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW) {
				json_object_set_new(o, "dead", json_integer(sqlite3_column_int64(st, 0)));
				json_object_set_new(o, "dead_bytes", json_integer(sqlite3_column_int64(st, 1)));
			}
		}
		sqlite3_finalize(st);
		json_object_set_new(all, name, o);
	}
	json_decref(c->backlog_cache);
	c->backlog_cache = json_incref(all);
	c->backlog_cache_ms = tg_mono_ms();
	return all;
}

static int list_sinks(ops_console *c, http_resp *r)
{
	int64_t now = ops_now_ms();
	pthread_mutex_lock(&c->db_mu);
	json_t *bl = backlog(c);
	pthread_mutex_unlock(&c->db_mu);
	json_t *arr = json_array();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < forwarder_nsinks(c->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(c->fw, i);
		json_t *b = json_object_get(bl, s->name);
		int64_t oldest = json_integer_value(json_object_get(b, "oldest_ms"));
		int64_t backoff = atomic_load(&s->backoff_until_ms);
		json_t *o = json_pack(
			"{s:s, s:s, s:b, s:O, s:O, s:o, s:f, s:I, s:I, s:I, s:I, s:I, s:O, s:O, s:I, s:O}", "name", s->name, "type",
			s->type, "up", atomic_load(&s->up), "backlog_rows", json_object_get(b, "rows") ?: json_null(), "backlog_bytes",
			json_object_get(b, "bytes") ?: json_null(), "oldest_age_s", oldest ? json_real((double)(now - oldest) / 1000.0) : json_null(),
			"delivered_per_s", i < OPS_MAX_SINKS ? c->sink_ok_per_s[i] : 0.0, "delivered_total",
			(json_int_t)atomic_load(&s->records_ok), "retries_total", (json_int_t)atomic_load(&s->records_retry),
			"send_errors_total", (json_int_t)atomic_load(&s->send_errors), "dead_total",
			(json_int_t)atomic_load(&s->records_dead), "pending", (json_int_t)atomic_load(&s->pending), "dead_letters",
			json_object_get(b, "dead") ?: json_null(), "dead_letter_bytes", json_object_get(b, "dead_bytes") ?: json_null(),
			"last_ok_ms", (json_int_t)atomic_load(&s->last_ok_ms), "backlog_exact",
			json_object_get(b, "exact") ?: json_false());
		if (o && backoff > now)
			json_object_set_new(o, "backoff_until_ms", json_integer(backoff));
		json_array_append_new(arr, o);
	}
	pthread_mutex_unlock(&c->mu);
	json_decref(bl);
	return ops_json(r, 200, json_pack("{s:o}", "sinks", arr));
}

static int retry_dead(ops_console *c, http_resp *r, const char *name)
{
	const forwarder_sink_stats *found = NULL;
	for (size_t i = 0; i < forwarder_nsinks(c->fw) && !found; i++)
		if (strcmp(forwarder_stats(c->fw, i)->name, name) == 0)
			found = forwarder_stats(c->fw, i);
	if (!found)
		return ops_error(r, 404, "unknown_sink", "no sink named '%s' is configured", name);
	ops_job j = {.kind = OPS_JOB_REQUEUE, .sink = name};
	int rc = ops_run_job(c, &j, 10000);
	if (rc)
		return ops_error(r, 503, "daemon_busy", "the daemon did not take the request in time; nothing was changed");
	if (j.rc)
		return ops_error(r, 500, "requeue_failed", "the outbox refused the requeue (%s); nothing was changed",
				 tg_strerror(j.rc));
	atomic_fetch_add(&c->dead_requeued, (uint64_t)j.moved);
	pthread_mutex_lock(&c->db_mu);
	json_decref(c->backlog_cache); /* the next read shows the move */
	c->backlog_cache = NULL;
	pthread_mutex_unlock(&c->db_mu);
	return ops_json(r, 200, json_pack("{s:s, s:I}", "sink", name, "requeued", (json_int_t)j.moved));
}

int ops_api_sinks(ops_console *c, const http_req *req, http_resp *r, const char *rest)
{
	const char *m = http_req_method(req);
	if (*rest == '\0')
		return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ? list_sinks(c, r)
									 : ops_error(r, 405, "method_not_allowed", "takes GET");
	const char *name = rest + 1, *slash = strchr(name, '/');
	if (!slash || strcmp(slash, "/retry-dead") != 0)
		return 1;
	if (strcmp(m, "POST") != 0)
		return ops_error(r, 405, "method_not_allowed", "/api/sinks/NAME/retry-dead takes POST");
	char sname[128];
	size_t n = (size_t)(slash - name);
	if (n == 0 || n >= sizeof sname)
		return ops_error(r, 404, "unknown_sink", "no such sink");
	memcpy(sname, name, n);
	sname[n] = '\0';
	return retry_dead(c, r, sname);
}

/* ---- recent data -------------------------------------------------------------------- */

int ops_api_things(ops_console *c, const http_req *req, http_resp *r, const char *rest)
{
	const char *thing = rest + 1, *slash = strchr(thing, '/');
	if (!slash || strcmp(slash, "/latest") != 0 || slash == thing)
		return 1;
	char name[256];
	size_t n = (size_t)(slash - thing);
	if (n >= sizeof name)
		return ops_error(r, 404, "unknown_thing", "thing name too long");
	memcpy(name, thing, n);
	name[n] = '\0';
	json_t *rec = NULL;
	int64_t at = 0;
	const char *topic = NULL;
	pthread_mutex_lock(&c->mu);
	ops_thing *t = ops_thing_find(c, name);
	if (t && t->latest) {
		rec = json_loadb(t->latest, t->latest_len, 0, NULL);
		at = t->latest_ms;
	}
	json_t *tj = t && t->latest_topic ? json_string(t->latest_topic) : NULL;
	pthread_mutex_unlock(&c->mu);
	if (!rec && c->ret) { /* from before this start */
		char err[256];
		rec = ops_retention_latest(c->ret, name, err, sizeof err);
		if (!rec && err[0]) {
			json_decref(tj);
			return ops_error(r, 503, "unavailable", "retention: %s", err);
		}
	}
	if (!rec) {
		json_decref(tj);
		return ops_error(r, 404, "unknown_thing", "no accepted record of '%s' is known", name);
	}
	(void)topic;
	json_t *out = json_pack("{s:s, s:o}", "thing", name, "record", rec);
	if (out && at)
		json_object_set_new(out, "received_ms", json_integer(at));
	if (out && tj)
		json_object_set_new(out, "topic", tj);
	else
		json_decref(tj);
	return ops_json(r, 200, out);
}

/* A time parameter: epoch ms, or "-<duration>" relative to now ("-15m"). */
static int time_param(const http_req *req, const char *key, int64_t now, int64_t def, int64_t *out)
{
	const char *v = http_req_query(req, key);
	if (!v || !*v) {
		*out = def;
		return 0;
	}
	int64_t d;
	if (v[0] == '-' && config_parse_duration_ms(v + 1, &d) == 0) {
		*out = now - d;
		return 0;
	}
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (*end || errno || n < 0)
		return TG_EINVAL;
	*out = n;
	return 0;
}

int ops_api_series(ops_console *c, const http_req *req, http_resp *r)
{
	if (!c->ret)
		return ops_error(r, 409, "retention_off", "[retention] period is 0: no recent data is kept");
	int64_t now = ops_now_ms(), until, since, step;
	if (time_param(req, "until", now, now + 1, &until) || time_param(req, "since", now, until - 3600000, &since))
		return ops_error(r, 400, "bad_request", "since/until: epoch milliseconds or -DURATION (e.g. -15m)");
	const char *sv = http_req_query(req, "step");
	if (sv && *sv) {
		if (config_parse_duration_ms(sv, &step) || step <= 0)
			return ops_error(r, 400, "bad_request", "step: a duration (e.g. 10s, 1m) or milliseconds");
	} else {
		step = (until - since) / 60 > 0 ? (until - since) / 60 : 1;
	}
	const char *field = http_req_query(req, "field"), *thing = http_req_query(req, "thing");
	if (!field || !*field)
		return ops_error(r, 400, "bad_request", "field is required (a numeric field of the records, e.g. temperature)");
	char err[512];
	if (thing && *thing) {
		json_t *pts = ops_retention_series(c->ret, thing, field, since, until, step, err, sizeof err);
		if (!pts)
			return ops_error(r, strncmp(err, "field", 5) == 0 || strncmp(err, "since", 5) == 0 ? 400 : 503,
					 strncmp(err, "field", 5) == 0 || strncmp(err, "since", 5) == 0 ? "bad_request" : "unavailable",
					 "%s", err);
		return ops_json(r, 200, json_pack("{s:s, s:s, s:I, s:I, s:I, s:o}", "thing", thing, "field", field, "since",
						  (json_int_t)since, "until", (json_int_t)until, "step", (json_int_t)step, "points", pts));
	}
	/* every thing seen since start (at most 200): the fleet view's sparklines in one call */
	json_t *names = json_array();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->things_cap && json_array_size(names) < 200; i++)
		if (c->things[i])
			json_array_append_new(names, json_string(c->things[i]->name));
	pthread_mutex_unlock(&c->mu);
	json_t *series = json_object();
	size_t i;
	json_t *nm;
	json_array_foreach(names, i, nm)
	{
		json_t *pts = ops_retention_series(c->ret, json_string_value(nm), field, since, until, step, err, sizeof err);
		if (!pts) {
			json_decref(names);
			json_decref(series);
			return ops_error(r, strncmp(err, "field", 5) == 0 || strncmp(err, "since", 5) == 0 ? 400 : 503,
					 "bad_request", "%s", err);
		}
		json_object_set_new(series, json_string_value(nm), pts);
	}
	json_decref(names);
	return ops_json(r, 200, json_pack("{s:s, s:I, s:I, s:I, s:o}", "field", field, "since", (json_int_t)since, "until",
					  (json_int_t)until, "step", (json_int_t)step, "series", series));
}

int ops_api_query(ops_console *c, const http_req *req, http_resp *r)
{
	if (!c->ret)
		return ops_error(r, 409, "retention_off", "[retention] period is 0: no recent data is kept");
	json_t *body = ops_body_object(req, r);
	if (!body)
		return 0;
	const char *sql = json_string_value(json_object_get(body, "sql"));
	json_t *mr = json_object_get(body, "max_rows");
	int64_t max_rows = json_is_integer(mr) ? (int64_t)json_integer_value(mr) : 1000;
	if (!sql || !*sql || max_rows < 1 || max_rows > QUERY_MAX_ROWS) {
		json_decref(body);
		return ops_error(r, 400, "bad_request", "\"sql\" (one SELECT over the table samples(id, ts, thing, body)) is "
						      "required; \"max_rows\" 1..%d",
				 QUERY_MAX_ROWS);
	}
	char err[1024] = "";
	json_t *res = ops_retention_query(c->ret, sql, max_rows, QUERY_TIMEOUT_MS, err, sizeof err);
	json_decref(body);
	if (!res)
		return ops_error(r, strstr(err, "time limit") ? 408 : strstr(err, "not authorized") || strstr(err, "read-only") ? 403 : 400,
				 strstr(err, "time limit") ? "query_timeout" : strstr(err, "not authorized") || strstr(err, "read-only") ? "not_allowed" : "bad_query",
				 "%s", err);
	return ops_json(r, 200, res);
}
