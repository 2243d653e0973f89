/*
 * alerts.c — per-(rule, alert, thing) alert state machine with SQLite persistence.
 *
 * Design: keys live in a chained hash table in memory (the hot path is one FNV hash and a
 * lookup; a RAISE report for an already raised alert or a NONE report for an idle key
 * touches nothing else). The database is a write-behind mirror read only at open: each
 * change of a key's state or pending count is one INSERT OR REPLACE through a statement
 * prepared at open, in autocommit under WAL with synchronous=NORMAL (a transition is rare, so
 * a transaction per change costs nothing that matters and keeps the mirror exact). The row
 * also keeps the last notification time, so the rate limit holds across restarts. Action
 * parameters are read from the action's params object per report (a handful of hash
 * lookups), so a rule reload takes effect immediately without any cache to invalidate.
 */
#include "alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "err.h"
#include "schema.h"

#define ALERTS_SCHEMA_VERSION 1
#define ALERTS_DEFAULT_MAX_KEYS 100000

static const char SQL_CREATE[] =
	"CREATE TABLE IF NOT EXISTS alert_state("
	" rule TEXT NOT NULL, alert TEXT NOT NULL, thing TEXT NOT NULL,"
	" state INTEGER NOT NULL,"          /* 0 ok, 1 pending, 2 raised */
	" matches INTEGER NOT NULL,"        /* consecutive raise reports so far */
	" first_trigger_ms INTEGER, last_trigger_ms INTEGER, raised_at_ms INTEGER,"
	" notified INTEGER NOT NULL,"       /* the current raise was notified */
	" last_notify_ms INTEGER,"          /* last raise notification, for the rate limit */
	" severity TEXT, updated_ms INTEGER NOT NULL,"
	" PRIMARY KEY(rule, alert, thing)) WITHOUT ROWID";
static const char SQL_UPSERT[] =
	"INSERT OR REPLACE INTO alert_state(rule, alert, thing, state, matches, first_trigger_ms,"
	" last_trigger_ms, raised_at_ms, notified, last_notify_ms, severity, updated_ms)"
	" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
static const char SQL_LOAD[] =
	"SELECT rule, alert, thing, state, matches, first_trigger_ms, last_trigger_ms,"
	" raised_at_ms, notified, last_notify_ms, severity FROM alert_state";

struct akey {
	struct akey *hnext, *next;
	uint64_t hash;
	const char *rule, *alert, *thing; /* point into name[] */
	alerts_state state;
	int notified, has_notify;
	int64_t matches, first_ts, last_ts, raised_at, last_notify;
	char severity[32];
	char name[]; /* rule\0alert\0thing\0 */
};

struct alerts {
	alerts_conf c;
	char *db_path;
	sqlite3 *db;
	sqlite3_stmt *upsert;
	struct akey **buckets;
	size_t mask, nkeys;
	struct akey *keys;
	alerts_stats st;
};

struct aparams {
	int64_t for_n, for_ms, rate_ms;
	const char *severity;
	int has_clear;
};

static uint64_t hash3(const char *a, const char *b, const char *c)
{
	uint64_t h = 1469598103934665603ULL;
	const char *parts[3] = {a, b, c};
	for (int i = 0; i < 3; i++) {
		for (const char *p = parts[i]; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ 0x1f) * 1099511628211ULL;
	}
	return h;
}

static struct akey *find(const alerts *a, const char *rule, const char *alert, const char *thing,
			 uint64_t h)
{
	for (struct akey *k = a->buckets[h & a->mask]; k; k = k->hnext)
		if (k->hash == h && strcmp(k->thing, thing) == 0 && strcmp(k->alert, alert) == 0 &&
		    strcmp(k->rule, rule) == 0)
			return k;
	return NULL;
}

static struct akey *add_key(alerts *a, const char *rule, const char *alert, const char *thing,
			    uint64_t h)
{
	size_t lr = strlen(rule) + 1, la = strlen(alert) + 1, lt = strlen(thing) + 1;
	struct akey *k = calloc(1, sizeof *k + lr + la + lt);
	if (!k)
		return NULL;
	memcpy(k->name, rule, lr);
	memcpy(k->name + lr, alert, la);
	memcpy(k->name + lr + la, thing, lt);
	k->rule = k->name;
	k->alert = k->name + lr;
	k->thing = k->name + lr + la;
	k->hash = h;
	k->hnext = a->buckets[h & a->mask];
	a->buckets[h & a->mask] = k;
	k->next = a->keys;
	a->keys = k;
	a->nkeys++;
	return k;
}

void alerts_close(alerts *a)
{
	if (!a)
		return;
	sqlite3_finalize(a->upsert);
	if (a->db)
		sqlite3_close(a->db);
	struct akey *k = a->keys;
	while (k) {
		struct akey *n = k->next;
		free(k);
		k = n;
	}
	free(a->buckets);
	free(a->db_path);
	free(a);
}

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "alerts: %s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return TG_EDB;
	}
	return 0;
}

/* Create or migrate the table; version in PRAGMA user_version. */
static int db_schema(alerts *a, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int ver = -1;
	if (sqlite3_prepare_v2(a->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		ver = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (ver < 0)
		return tg_seterr(err, errlen, TG_EDB, "alerts: cannot read user_version: %s",
				 sqlite3_errmsg(a->db));
	if (ver > ALERTS_SCHEMA_VERSION)
		return tg_seterr(err, errlen, TG_EDB,
				 "alerts: database schema version %d is newer than this build (%d)", ver,
				 ALERTS_SCHEMA_VERSION);
	if (ver == 0) {
		int rc = exec(a->db, "BEGIN", err, errlen);
		if (!rc)
			rc = exec(a->db, SQL_CREATE, err, errlen);
		if (!rc)
			rc = exec(a->db, "PRAGMA user_version = 1", err, errlen);
		if (!rc)
			rc = exec(a->db, "COMMIT", err, errlen);
		if (rc) {
			sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
			return rc;
		}
	}
	/* future: if (ver == 1) migrate to 2, ... */
	return 0;
}

static int db_load(alerts *a, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc;
	if (sqlite3_prepare_v2(a->db, SQL_LOAD, -1, &st, NULL) != SQLITE_OK)
		return tg_seterr(err, errlen, TG_EDB, "alerts: %s", sqlite3_errmsg(a->db));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *rule = (const char *)sqlite3_column_text(st, 0);
		const char *alert = (const char *)sqlite3_column_text(st, 1);
		const char *thing = (const char *)sqlite3_column_text(st, 2);
		if (!rule || !alert || !thing)
			continue;
		uint64_t h = hash3(rule, alert, thing);
		struct akey *k = find(a, rule, alert, thing, h);
		if (!k && !(k = add_key(a, rule, alert, thing, h))) {
			sqlite3_finalize(st);
			return tg_seterr(err, errlen, TG_ENOMEM, "alerts: out of memory");
		}
		int s = sqlite3_column_int(st, 3);
		k->state = s == 1 ? ALERTS_STATE_PENDING : s == 2 ? ALERTS_STATE_RAISED : ALERTS_STATE_OK;
		k->matches = sqlite3_column_int64(st, 4);
		k->first_ts = sqlite3_column_int64(st, 5);
		k->last_ts = sqlite3_column_int64(st, 6);
		k->raised_at = sqlite3_column_int64(st, 7);
		k->notified = sqlite3_column_int(st, 8);
		k->has_notify = sqlite3_column_type(st, 9) != SQLITE_NULL;
		k->last_notify = sqlite3_column_int64(st, 9);
		const char *sev = (const char *)sqlite3_column_text(st, 10);
		snprintf(k->severity, sizeof k->severity, "%s", sev ? sev : "");
		if (k->state == ALERTS_STATE_RAISED)
			a->st.active++;
		else if (k->state == ALERTS_STATE_PENDING)
			a->st.pending++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return tg_seterr(err, errlen, TG_EDB, "alerts: load: %s", sqlite3_errmsg(a->db));
	return 0;
}

alerts *alerts_open(const alerts_conf *conf, char *err, size_t errlen)
{
	alerts *a = NULL;
	if (!conf || !conf->db_path || !conf->emit) {
		tg_seterr(err, errlen, TG_EINVAL, "alerts: db_path and emit are required");
		return NULL;
	}
	if (!(a = calloc(1, sizeof *a)) || !(a->db_path = strdup(conf->db_path)))
		goto nomem;
	a->c = *conf;
	a->c.db_path = a->db_path;
	if (!a->c.max_keys)
		a->c.max_keys = ALERTS_DEFAULT_MAX_KEYS;
	size_t nb = 64;
	while (nb < a->c.max_keys && nb < (1u << 20))
		nb <<= 1;
	if (!(a->buckets = calloc(nb, sizeof *a->buckets)))
		goto nomem;
	a->mask = nb - 1;
	if (sqlite3_open_v2(a->db_path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "alerts: open %s: %s", a->db_path,
			  a->db ? sqlite3_errmsg(a->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(a->db, 5000);
	if (strcmp(a->db_path, ":memory:") != 0 &&
	    exec(a->db, "PRAGMA journal_mode=WAL", err, errlen))
		goto fail;
	if (exec(a->db, "PRAGMA synchronous=NORMAL", err, errlen) || db_schema(a, err, errlen) ||
	    db_load(a, err, errlen))
		goto fail;
	if (sqlite3_prepare_v2(a->db, SQL_UPSERT, -1, &a->upsert, NULL) != SQLITE_OK) {
		tg_seterr(err, errlen, TG_EDB, "alerts: prepare: %s", sqlite3_errmsg(a->db));
		goto fail;
	}
	return a;
nomem:
	tg_seterr(err, errlen, TG_ENOMEM, "alerts: out of memory");
fail:
	alerts_close(a);
	return NULL;
}

static int persist(alerts *a, const struct akey *k, int64_t now)
{
	sqlite3_stmt *s = a->upsert;
	int rc = sqlite3_bind_text(s, 1, k->rule, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(s, 2, k->alert, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_text(s, 3, k->thing, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int(s, 4, (int)k->state);
	rc |= sqlite3_bind_int64(s, 5, k->matches);
	rc |= sqlite3_bind_int64(s, 6, k->first_ts);
	rc |= sqlite3_bind_int64(s, 7, k->last_ts);
	rc |= sqlite3_bind_int64(s, 8, k->raised_at);
	rc |= sqlite3_bind_int(s, 9, k->notified);
	rc |= k->has_notify ? sqlite3_bind_int64(s, 10, k->last_notify) : sqlite3_bind_null(s, 10);
	rc |= sqlite3_bind_text(s, 11, k->severity, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(s, 12, now);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_OK) {
		a->st.db_errors++;
		return TG_EDB;
	}
	return 0;
}

/* "500ms", "30s", "5m", "2h" or a bare number of seconds. */
static int parse_duration(const char *s, int64_t *ms)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || v < 0)
		return TG_EINVAL;
	double mul = strcmp(end, "ms") == 0 ? 1 : strcmp(end, "s") == 0 || !*end ? 1000
		   : strcmp(end, "m") == 0 ? 60000 : strcmp(end, "h") == 0 ? 3600000 : -1;
	if (mul < 0 || v * mul > 1e12)
		return TG_EINVAL;
	*ms = (int64_t)(v * mul);
	return 0;
}

static int parse_params(const json_t *p, struct aparams *o)
{
	static const char *const sev[] = {"critical", "major", "minor", "warning", "info", NULL};
	o->for_n = 1;
	o->for_ms = o->rate_ms = 0;
	o->severity = "major";
	o->has_clear = 0;
	if (!p)
		return 0;
	if (!json_is_object(p))
		return TG_EINVAL;
	json_t *v = json_object_get(p, "for");
	if (v) {
		if (json_is_integer(v) && json_integer_value(v) >= 1)
			o->for_n = json_integer_value(v);
		else if (!json_is_string(v) || parse_duration(json_string_value(v), &o->for_ms))
			return TG_EINVAL;
	}
	if ((v = json_object_get(p, "forSeconds"))) {
		if (!json_is_number(v) || json_number_value(v) < 0)
			return TG_EINVAL;
		o->for_ms = (int64_t)(json_number_value(v) * 1000.0);
	}
	if ((v = json_object_get(p, "rateLimitSeconds"))) {
		if (!json_is_number(v) || json_number_value(v) < 0)
			return TG_EINVAL;
		o->rate_ms = (int64_t)(json_number_value(v) * 1000.0);
	}
	if ((v = json_object_get(p, "severity"))) {
		int ok = 0;
		for (int i = 0; sev[i] && json_is_string(v); i++)
			if (strcmp(json_string_value(v), sev[i]) == 0) {
				o->severity = sev[i];
				ok = 1;
			}
		if (!ok)
			return TG_EINVAL;
	}
	v = json_object_get(p, "clear");
	o->has_clear = v && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v));
	return 0;
}

static json_t *build_message(const struct akey *k, const json_t *payload, int64_t now)
{
	char iso[32];
	json_t *o = json_object();
	if (!o)
		return NULL;
	int cleared = k->state != ALERTS_STATE_RAISED;
	json_object_set_new(o, "alert", json_string(k->alert));
	json_object_set_new(o, "rule", json_string(k->rule));
	json_object_set_new(o, "thing", json_string(k->thing));
	json_object_set_new(o, "severity", json_string(k->severity));
	json_object_set_new(o, "state", json_string(cleared ? "cleared" : "raised"));
	json_object_set_new(o, "value", payload ? json_deep_copy(payload) : json_object());
	json_object_set_new(o, "matches", json_integer(k->matches));
	json_object_set_new(o, "first_trigger_ts", json_integer(k->first_ts));
	json_object_set_new(o, "last_trigger_ts", json_integer(k->last_ts));
	json_object_set_new(o, "raised_at", json_integer(k->raised_at));
	if (schema_format_rfc3339(k->raised_at, iso, sizeof iso) > 0)
		json_object_set_new(o, "raised_at_iso", json_string(iso));
	if (cleared) {
		json_object_set_new(o, "cleared_at", json_integer(now));
		if (schema_format_rfc3339(now, iso, sizeof iso) > 0)
			json_object_set_new(o, "cleared_at_iso", json_string(iso));
	}
	json_object_set_new(o, "ts", json_integer(now));
	if (schema_format_rfc3339(now, iso, sizeof iso) > 0)
		json_object_set_new(o, "ts_iso", json_string(iso));
	return o;
}

static int emit(alerts *a, const struct akey *k, const json_t *payload, int64_t now)
{
	json_t *o = build_message(k, payload, now);
	if (!o)
		return TG_ENOMEM;
	alerts_event ev = {.rule = k->rule, .alert = k->alert, .thing = k->thing,
			   .severity = k->severity, .state = k->state, .json = o};
	int rc = a->c.emit(a->c.ud, &ev);
	json_decref(o);
	if (rc < 0) {
		a->st.emit_errors++;
		return TG_EIO;
	}
	return 0;
}

static void set_state(alerts *a, struct akey *k, alerts_state s)
{
	if (k->state == ALERTS_STATE_RAISED)
		a->st.active--;
	else if (k->state == ALERTS_STATE_PENDING)
		a->st.pending--;
	k->state = s;
	if (s == ALERTS_STATE_RAISED)
		a->st.active++;
	else if (s == ALERTS_STATE_PENDING)
		a->st.pending++;
}

int alerts_report(alerts *a, const alerts_input *in, int64_t now_ms)
{
	struct aparams p;
	if (!a || !in || !in->rule || !in->alert || !in->thing)
		return TG_EINVAL;
	if (parse_params(in->params, &p))
		return TG_EINVAL;
	a->st.reports++;
	uint64_t h = hash3(in->rule, in->alert, in->thing);
	struct akey *k = find(a, in->rule, in->alert, in->thing, h);
	if (!k) {
		if (in->cond != RULES_ALERT_RAISE)
			return ALERTS_NOCHANGE; /* nothing to remember for an idle key */
		if (a->nkeys >= a->c.max_keys) {
			a->st.keys_dropped++;
			return ALERTS_NOCHANGE;
		}
		if (!(k = add_key(a, in->rule, in->alert, in->thing, h)))
			return TG_ENOMEM;
	}
	int result = ALERTS_NOCHANGE, dirty = 0, notify = 0;
	switch (k->state) {
	case ALERTS_STATE_OK:
	case ALERTS_STATE_PENDING:
		if (in->cond != RULES_ALERT_RAISE) {
			if (k->state == ALERTS_STATE_PENDING) { /* the run of raises is broken */
				set_state(a, k, ALERTS_STATE_OK);
				k->matches = 0;
				dirty = 1;
			}
			break;
		}
		if (k->state == ALERTS_STATE_OK) {
			set_state(a, k, ALERTS_STATE_PENDING);
			k->matches = 0;
			k->first_ts = in->ts_ms;
		}
		k->matches++;
		k->last_ts = in->ts_ms;
		dirty = 1;
		if (k->matches >= p.for_n && in->ts_ms - k->first_ts >= p.for_ms) {
			set_state(a, k, ALERTS_STATE_RAISED);
			k->raised_at = now_ms;
			snprintf(k->severity, sizeof k->severity, "%s", p.severity);
			if (p.rate_ms > 0 && k->has_notify && now_ms - k->last_notify < p.rate_ms) {
				k->notified = 0;
				a->st.suppressed++;
				result = ALERTS_SUPPRESSED;
			} else {
				k->notified = 1;
				k->has_notify = 1;
				k->last_notify = now_ms;
				notify = 1;
				result = ALERTS_RAISED;
			}
		}
		break;
	case ALERTS_STATE_RAISED:
		if (in->cond == RULES_ALERT_RAISE) {
			k->last_ts = in->ts_ms; /* in memory only: not a state change */
			k->matches++;
			break;
		}
		if (in->cond == RULES_ALERT_CLEAR || !p.has_clear) {
			set_state(a, k, ALERTS_STATE_OK);
			dirty = 1;
			if (k->notified) {
				notify = 1;
				result = ALERTS_CLEARED;
			} else {
				a->st.suppressed++;
				result = ALERTS_SUPPRESSED;
			}
		}
		break;
	}
	int dbrc = dirty ? persist(a, k, now_ms) : 0;
	if (notify) {
		int rc = emit(a, k, in->payload, now_ms);
		if (result == ALERTS_RAISED)
			a->st.raised++;
		else
			a->st.cleared++;
		if (rc)
			return rc;
	}
	if (k->state == ALERTS_STATE_OK)
		k->matches = 0;
	return dbrc ? dbrc : result;
}

int alerts_on_action(alerts *a, const rules_action_out *act, const tg_msg *m, int64_t now_ms)
{
	if (!act || !m || act->kind != RULES_ACT_ALERT)
		return TG_EINVAL;
	json_t *ts = m->json ? json_object_get(m->json, "ts") : NULL;
	alerts_input in = {.rule = act->rule, .alert = act->alert_name, .thing = m->thing,
			   .cond = act->alert_cond, .payload = act->payload, .params = act->params,
			   .ts_ms = json_is_integer(ts) ? json_integer_value(ts) : m->received_ms};
	return alerts_report(a, &in, now_ms);
}

alerts_state alerts_get_state(const alerts *a, const char *rule, const char *alert,
			      const char *thing)
{
	if (!a || !rule || !alert || !thing)
		return ALERTS_STATE_OK;
	const struct akey *k = find(a, rule, alert, thing, hash3(rule, alert, thing));
	return k ? k->state : ALERTS_STATE_OK;
}

void alerts_foreach(const alerts *a, alerts_visit_fn fn, void *ud)
{
	if (!a || !fn)
		return;
	for (const struct akey *k = a->keys; k; k = k->next)
		if (k->state != ALERTS_STATE_OK)
			fn(ud, k->rule, k->alert, k->thing, k->state, k->raised_at);
}

void alerts_get_stats(const alerts *a, alerts_stats *out)
{
	if (!out)
		return;
	if (!a)
		memset(out, 0, sizeof *out);
	else
		*out = a->st;
}
