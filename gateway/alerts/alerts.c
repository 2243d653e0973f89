/*
 * alerts.c — per-(rule, alert, thing) alert state machine with SQLite persistence.
 *
 * Design: keys live in a chained hash table in memory (the hot path is one hash.h hash and a
 * lookup; a RAISE report for an already raised alert or a NONE report for an idle key
 * touches nothing else). The database is a write-behind mirror read only at open: each
 * change of a key's state (or of its pending count while that count still matters) is one
 * INSERT OR REPLACE through a statement
 * prepared at open, in autocommit under WAL with synchronous=NORMAL (a transition is rare, so
 * a transaction per change costs nothing that matters and keeps the mirror exact). The row
 * also keeps the last notification time, so the rate limit holds across restarts. Action
 * parameters are read from the action's params object per report (a handful of hash
 * lookups), so a rule reload takes effect immediately without any cache to invalidate.
 */
#include "alerts/alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "core/err.h"
#include "core/hash.h"
#include "core/timefmt.h"

#define ALERTS_SCHEMA_VERSION 1
#define ALERTS_DEFAULT_MAX_KEYS 100000
#define ALERTS_MIN_BUCKETS 64
#define ALERTS_ACTIVE_CELLS 4096 /* power of two */

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
	/* How many keys not in state OK hash to each cell (hash & (ALERTS_ACTIVE_CELLS-1)): a
	 * report that does not raise, for a key whose cell is 0, is known to change nothing
	 * without walking to the key (the common case, and a cache miss saved per message). */
	uint32_t active[ALERTS_ACTIVE_CELLS];
};

struct aparams {
	int64_t for_n, for_ms, rate_ms;
	const char *severity;
	int has_clear;
};

static uint64_t hash3(const char *a, const char *b, const char *c)
{
	return tg_hash_final(tg_hash_str(tg_hash_str(tg_hash_str(TG_HASH_SEED, a), b), c));
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

/* Double the bucket array once keys outnumber buckets; on allocation failure the chains just
 * get longer. */
static void grow_buckets(alerts *a)
{
	size_t nb = (a->mask + 1) * 2;
	if (a->nkeys < a->mask + 1 || nb > (1u << 20))
		return;
	struct akey **b = calloc(nb, sizeof *b);
	if (!b)
		return;
	for (struct akey *k = a->keys; k; k = k->next) {
		k->hnext = b[k->hash & (nb - 1)];
		b[k->hash & (nb - 1)] = k;
	}
	free(a->buckets);
	a->buckets = b;
	a->mask = nb - 1;
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
	grow_buckets(a);
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
		if (k->state != ALERTS_STATE_OK)
			a->active[h & (ALERTS_ACTIVE_CELLS - 1)]++;
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
	/* starts small and doubles with the keys (add_key), so a few things' keys share a few
	 * cache lines of buckets instead of one page each */
	if (!(a->buckets = calloc(ALERTS_MIN_BUCKETS, sizeof *a->buckets)))
		goto nomem;
	a->mask = ALERTS_MIN_BUCKETS - 1;
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
	/* a small table written a row at a time: a 256 KiB page cache is plenty (default 2 MiB) */
	if (exec(a->db, "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-256", err, errlen) ||
	    db_schema(a, err, errlen) ||
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
		if (json_is_number(v) && json_number_value(v) >= 1 && json_number_value(v) <= 1e9)
			o->for_n = (int64_t)json_number_value(v);
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
	if (timefmt_format_rfc3339(k->raised_at, iso, sizeof iso) > 0)
		json_object_set_new(o, "raised_at_iso", json_string(iso));
	if (cleared) {
		json_object_set_new(o, "cleared_at", json_integer(now));
		if (timefmt_format_rfc3339(now, iso, sizeof iso) > 0)
			json_object_set_new(o, "cleared_at_iso", json_string(iso));
	}
	json_object_set_new(o, "ts", json_integer(now));
	if (timefmt_format_rfc3339(now, iso, sizeof iso) > 0)
		json_object_set_new(o, "ts_iso", json_string(iso));
	return o;
}

static int emit(alerts *a, const struct akey *k, const json_t *payload, const char *topic,
		int64_t now)
{
	json_t *o = build_message(k, payload, now);
	if (!o)
		return TG_ENOMEM;
	alerts_event ev = {.rule = k->rule, .alert = k->alert, .thing = k->thing,
			   .severity = k->severity, .state = k->state, .topic = topic, .json = o};
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
	if (k->state != ALERTS_STATE_OK)
		a->active[k->hash & (ALERTS_ACTIVE_CELLS - 1)]--;
	k->state = s;
	if (s == ALERTS_STATE_RAISED)
		a->st.active++;
	else if (s == ALERTS_STATE_PENDING)
		a->st.pending++;
	if (s != ALERTS_STATE_OK)
		a->active[k->hash & (ALERTS_ACTIVE_CELLS - 1)]++;
}

int alerts_report(alerts *a, const alerts_input *in, int64_t now_ms)
{
	struct aparams p;
	if (!a || !in || !in->rule || !in->alert || !in->thing)
		return TG_EINVAL;
	uint64_t h = in->key_prefix ? tg_hash_final(tg_hash_str(in->key_prefix, in->thing))
				    : hash3(in->rule, in->alert, in->thing);
	if (in->cond != RULES_ALERT_RAISE && a->active[h & (ALERTS_ACTIVE_CELLS - 1)] == 0) {
		a->st.reports++; /* no key in this cell is pending or raised: nothing to change */
		return ALERTS_NOCHANGE;
	}
	struct akey *k = find(a, in->rule, in->alert, in->thing, h);
	alerts_state cur = k ? k->state : ALERTS_STATE_OK;
	/* The steady state — idle and not raising, or raised and still raising — changes
	 * nothing and needs no parameters: return before parsing them. */
	if ((cur == ALERTS_STATE_OK && in->cond != RULES_ALERT_RAISE) ||
	    (cur == ALERTS_STATE_RAISED && in->cond == RULES_ALERT_RAISE)) {
		if (k && cur == ALERTS_STATE_RAISED) {
			k->last_ts = in->ts_ms; /* in memory only: not a state change */
			k->matches++;
		}
		a->st.reports++;
		return ALERTS_NOCHANGE;
	}
	if (parse_params(in->params, &p))
		return TG_EINVAL;
	a->st.reports++;
	if (!k) {
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
			dirty = 1;
		}
		k->matches++;
		k->last_ts = in->ts_ms;
		/* The count is worth persisting only while it still decides anything; a pending
		 * alert waiting out forSeconds at one report a second would otherwise write a row
		 * per message. */
		if (k->matches <= p.for_n)
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
	case ALERTS_STATE_RAISED: /* RAISE was handled above */
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
		int rc = emit(a, k, in->payload, in->topic, now_ms);
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
			   .topic = act->topic, .key_prefix = act->alert_key, .ts_ms = json_is_integer(ts) ? json_integer_value(ts) : m->received_ms};
	return alerts_report(a, &in, now_ms);
}

int alerts_idle(const alerts *a, const char *rule, const char *alert, uint64_t key_prefix,
		const char *thing)
{
	if (!a || !rule || !alert || !thing)
		return 0;
	uint64_t h = key_prefix ? tg_hash_final(tg_hash_str(key_prefix, thing)) : hash3(rule, alert, thing);
	if (a->active[h & (ALERTS_ACTIVE_CELLS - 1)] == 0)
		return 1;
	const struct akey *k = find(a, rule, alert, thing, h);
	return !k || k->state == ALERTS_STATE_OK;
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
