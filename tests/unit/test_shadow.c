/*
 * test_shadow.c — the shadow store (gateway/shadow/shadow_store.c) and the service
 * (gateway/shadow/shadow.c) on a real outbox database in a temp dir, without a broker: the
 * service's publish hook records what it would send. Covers the schema and its version,
 * tombstones and their retention, responses held until the group commits and dropped when
 * it rolls back (with the shadow change), the "shadows" records, 429, 503 (shadow cap and a
 * full outbox), the identity stamped by the broker plugin, and the rules hook.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <sqlite3.h>

#include "core/err.h"
#include "shadow/shadow.h"
#include "shadow/shadow_sql.h"
#include "shadow/shadow_store.h"
#include "store/outbox.h"
#include "test_util.h"

#define T0 1800000000000LL /* ms */

static char *dir;
static char path[4096];

typedef struct sent {
	char topic[256];
	json_t *doc;
} sent;

typedef struct world {
	outbox *ob;
	shadow_svc *sh;
	sent out[64];
	int nout;
	char rules_topics[16][256];
	int nrules;
	int fail_publish;
	int abort_in_rules; /* a rule action's outbox append fails and rolls the group back */
} world;

static int capture(void *ud, const char *topic, const void *payload, size_t len, int qos)
{
	world *w = ud;
	/* the world's settings: answers at QoS 1, the change feed at QoS 0 (the shipped defaults) */
	size_t tl = strlen(topic);
	int feed = tl > 10 && strcmp(topic + tl - 10, "/documents") == 0;
	assert_int_equal(qos, feed ? 0 : 1);
	if (w->fail_publish)
		return TG_ENET;
	assert_true(w->nout < 64);
	snprintf(w->out[w->nout].topic, sizeof w->out[0].topic, "%s", topic);
	w->out[w->nout].doc = json_loadb(payload, len, 0, NULL);
	assert_non_null(w->out[w->nout].doc);
	w->nout++;
	return 0;
}

static void on_rules(void *ud, const tg_msg *m)
{
	world *w = ud;
	if (w->nrules < 16)
		snprintf(w->rules_topics[w->nrules++], sizeof w->rules_topics[0], "%s", m->topic);
	assert_true(strncmp(m->thing, "dev-", 4) == 0);
	assert_true(json_is_object(m->json));
	if (w->abort_in_rules)
		outbox_abort(w->ob);
}

static void clear_out(world *w)
{
	for (int i = 0; i < w->nout; i++)
		json_decref(w->out[i].doc);
	w->nout = 0;
}

static const char *const SINKS[] = {"lake"};

static void world_open(world *w, const shadow_conf *over, const outbox_opts *oo)
{
	memset(w, 0, sizeof *w);
	outbox_opts o = oo ? *oo : (outbox_opts){.commit_interval_ms = 5, .commit_max_records = 100, .gateway_id = "gw"};
	char err[512];
	w->ob = outbox_open(path, &o, err, sizeof err);
	if (!w->ob)
		fail_msg("outbox: %s", err);
	shadow_conf c = {.max_shadows = 100, .max_state_bytes = 8192, .max_payload_bytes = 131072, .max_inflight = 10,
			 .tombstone_ms = 48LL * 3600 * 1000, .response_qos = 1, .documents_qos = 0, .sinks = SINKS, .nsinks = 1,
			 .publish = capture, .rules = on_rules, .ud = w};
	if (over) {
		c.max_shadows = over->max_shadows ? over->max_shadows : c.max_shadows;
		c.max_inflight = over->max_inflight ? over->max_inflight : c.max_inflight;
		c.tombstone_ms = over->tombstone_ms ? over->tombstone_ms : c.tombstone_ms;
	}
	w->sh = shadow_new(&c, w->ob, err, sizeof err);
	if (!w->sh)
		fail_msg("shadow_new: %s", err);
}

static void world_close(world *w)
{
	clear_out(w);
	shadow_free(w->sh);
	outbox_close(w->ob);
}

static int req(world *w, const char *topic, const char *payload, int64_t now)
{
	return shadow_handle(w->sh, topic, payload, strlen(payload), NULL, now);
}

/* Commit the open group and publish what was held. */
static void commit(world *w)
{
	assert_true(outbox_commit(w->ob) >= 0);
	shadow_release(w->sh);
}

static const json_t *find(world *w, const char *topic)
{
	for (int i = 0; i < w->nout; i++)
		if (strcmp(w->out[i].topic, topic) == 0)
			return w->out[i].doc;
	return NULL;
}

static int64_t ival(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static int64_t count_rows(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t n = -1;
	sqlite3_open(path, &db);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static int each(void **state)
{
	(void)state;
	if (dir) {
		tu_rmtree(dir);
		free(dir);
	}
	dir = tu_tmpdir();
	snprintf(path, sizeof path, "%s/outbox.db", dir);
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	if (dir) {
		tu_rmtree(dir);
		free(dir);
		dir = NULL;
	}
	return 0;
}

/* ---- the store ----------------------------------------------------------------------- */

static int list_cb(void *ud, const shadow_list_item *it)
{
	char *acc = ud;
	char line[200];
	snprintf(line, sizeof line, "%s/%s@%lld ", it->thing, it->name, (long long)it->version);
	strcat(acc, line);
	return 0;
}

static void test_store(void **state)
{
	(void)state;
	sqlite3 *db;
	char err[512];
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	shadow_store *st = shadow_store_attach(db, err, sizeof err);
	assert_non_null(st);
	assert_int_equal(count_rows(SHADOW_SQL_GET_VERSION), SHADOW_SCHEMA_VERSION);
	shadow_row row;
	shadow_doc d;
	assert_int_equal(shadow_store_load(st, "t1", "", &row, &d), TG_ENOTFOUND);
	assert_int_equal(d.version, 0);
	shadow_doc_free(&d);
	/* live rows, classic and named apart */
	assert_int_equal(shadow_doc_load(&d, "{\"reported\":{\"a\":1}}", 20, "{\"reported\":{\"a\":{\"timestamp\":1}}}", 34, 3), 0);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(shadow_store_put(st, "t1", "", &d, 1000), 0);
	d.version = 7;
	assert_int_equal(shadow_store_put(st, "t1", "cfg", &d, 1000), 0);
	assert_int_equal(shadow_store_put(st, "t2", "", &d, 1000), 0);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	shadow_doc_free(&d);
	assert_int_equal(shadow_store_count(st), 3);
	assert_int_equal(shadow_store_load(st, "t1", "", &row, &d), 0);
	assert_int_equal(row.version, 3);
	assert_int_equal(row.deleted_ms, 0);
	assert_int_equal(row.created_ms, 1000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(d.state, "reported"), "a")), 1);
	shadow_doc_free(&d);
	char acc[1024] = "";
	assert_int_equal(shadow_store_list(st, NULL, list_cb, acc), 0);
	assert_string_equal(acc, "t1/@3 t1/cfg@7 t2/@7 ");
	acc[0] = '\0';
	assert_int_equal(shadow_store_list(st, "t1", list_cb, acc), 0);
	assert_string_equal(acc, "t1/@3 t1/cfg@7 ");
	/* a delete leaves a tombstone with the version; a write revives it with a new creation time */
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(shadow_store_delete(st, "t1", "cfg", 2000), 0);
	assert_int_equal(shadow_store_delete(st, "t1", "cfg", 2001), TG_ENOTFOUND);
	assert_int_equal(shadow_store_delete(st, "nope", "", 2001), TG_ENOTFOUND);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(shadow_store_load(st, "t1", "cfg", &row, &d), 0);
	assert_int_equal(row.deleted_ms, 2000);
	assert_int_equal(d.version, 7);
	assert_int_equal(json_object_size(d.state), 0);
	shadow_doc_free(&d);
	assert_int_equal(shadow_store_count(st), 2);
	assert_int_equal(shadow_store_has_expired(st, 2000), 0);
	assert_int_equal(shadow_store_has_expired(st, 2001), 1);
	/* the read-only store sees the same */
	shadow_store *ro = shadow_store_open_ro(path, err, sizeof err);
	assert_non_null(ro);
	acc[0] = '\0';
	assert_int_equal(shadow_store_list(ro, NULL, list_cb, acc), 0);
	assert_string_equal(acc, "t1/@3 t2/@7 ");
	shadow_store_close(ro);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(shadow_store_purge(st, 2001), 1);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(shadow_store_load(st, "t1", "cfg", &row, &d), TG_ENOTFOUND);
	shadow_doc_free(&d);
	shadow_store_close(st);
	/* attaching again keeps the data; a newer schema is refused */
	assert_non_null(st = shadow_store_attach(db, err, sizeof err));
	assert_int_equal(shadow_store_count(st), 2);
	shadow_store_close(st);
	assert_int_equal(sqlite3_exec(db, "UPDATE shadow_meta SET value = 99", NULL, NULL, NULL), SQLITE_OK);
	assert_null(shadow_store_attach(db, err, sizeof err));
	assert_non_null(strstr(err, "newer than this build"));
	assert_null(shadow_store_open_ro(path, err, sizeof err));
	sqlite3_close(db);
	/* a database without the tables: the message says so */
	char other[4200];
	snprintf(other, sizeof other, "%s/empty.db", dir);
	assert_int_equal(sqlite3_open(other, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE x(a)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_null(shadow_store_open_ro(other, err, sizeof err));
	assert_non_null(strstr(err, "holds no shadows yet"));
}

/* ---- the service --------------------------------------------------------------------- */

static void test_held_until_commit(void **state)
{
	(void)state;
	world w;
	world_open(&w, NULL, NULL);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"desired\":{\"on\":true}},\"clientToken\":\"a\"}", T0), 0);
	assert_true(shadow_waiting(w.sh));
	assert_int_equal(shadow_release(w.sh), 0); /* nothing leaves before the commit */
	assert_int_equal(w.nout, 0);
	commit(&w);
	assert_false(shadow_waiting(w.sh));
	assert_int_equal(w.nout, 3); /* accepted, delta, documents — in that order */
	assert_string_equal(w.out[0].topic, "$aws/things/dev-1/shadow/update/accepted");
	assert_string_equal(w.out[1].topic, "$aws/things/dev-1/shadow/update/delta");
	assert_string_equal(w.out[2].topic, "$aws/things/dev-1/shadow/update/documents");
	assert_int_equal(ival(w.out[0].doc, "version"), 1);
	assert_int_equal(ival(w.out[0].doc, "timestamp"), T0 / 1000);
	assert_string_equal(json_string_value(json_object_get(w.out[1].doc, "clientToken")), "a");
	/* the rules saw every response */
	assert_int_equal(w.nrules, 3);
	assert_string_equal(w.rules_topics[2], "$aws/things/dev-1/shadow/update/documents");
	/* the change is stored and its record is queued for the sink */
	assert_int_equal(count_rows("SELECT count(*) FROM shadow WHERE thing = 'dev-1' AND version = 1"), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE tbl = 'shadows'"), 1);
	assert_int_equal(shadow_stats_of(w.sh)->live, 1);
	clear_out(&w);
	/* a get while nothing is open is answered at once; a response topic is not a request */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/get", "", T0 + 1000), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update/accepted", "{}", T0 + 1000), 0);
	assert_false(shadow_waiting(w.sh));
	assert_int_equal(shadow_release(w.sh), 1);
	assert_string_equal(w.out[0].topic, "$aws/things/dev-1/shadow/get/accepted");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(w.out[0].doc, "state"), "delta"), "on")), 0);
	assert_true(json_is_true(json_object_get(json_object_get(json_object_get(w.out[0].doc, "state"), "delta"), "on")));
	assert_int_equal(shadow_stats_of(w.sh)->requests, 2);
	world_close(&w);
}

static void test_rollback_drops_answers_and_change(void **state)
{
	(void)state;
	world w;
	world_open(&w, NULL, NULL);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"v\":1}}}", T0), 0);
	commit(&w);
	clear_out(&w);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"v\":2}}}", T0 + 1), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/name/n1/update", "{\"state\":{\"reported\":{\"v\":2}}}", T0 + 1), 0);
	assert_int_equal(shadow_stats_of(w.sh)->live, 2);
	outbox_abort(w.ob); /* the group could not be stored */
	assert_false(shadow_waiting(w.sh));
	assert_int_equal(shadow_release(w.sh), 0);
	assert_int_equal(w.nout, 0);
	assert_int_equal(shadow_stats_of(w.sh)->dropped, 4);
	/* the store is back at version 1 and the live count follows at the next request */
	assert_int_equal(count_rows("SELECT max(version) FROM shadow"), 1);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/get", "", T0 + 2), 0);
	assert_int_equal(shadow_stats_of(w.sh)->live, 1);
	assert_int_equal(shadow_release(w.sh), 1);
	assert_int_equal(ival(w.out[0].doc, "version"), 1);
	/* a rule action that rolls the group back under the request: no answer, an error for the
	 * daemon (which then does not acknowledge the request), and the thing is not left in flight */
	clear_out(&w);
	w.abort_in_rules = 1;
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"v\":5}}}", T0 + 3), TG_EDB);
	w.abort_in_rules = 0;
	assert_false(shadow_waiting(w.sh));
	assert_int_equal(shadow_release(w.sh), 0);
	assert_int_equal(count_rows("SELECT max(version) FROM shadow"), 1);
	for (int i = 0; i < 10; i++) /* max_inflight of them: none is refused with 429 */
		assert_int_equal(req(&w, "$aws/things/dev-1/shadow/get", "", T0 + 4), 0);
	assert_int_equal(shadow_release(w.sh), 10);
	assert_int_equal(shadow_stats_of(w.sh)->rejected, 0);
	world_close(&w);
	/* a restart finds what was committed */
	world_open(&w, NULL, NULL);
	assert_int_equal(shadow_stats_of(w.sh)->live, 1);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"v\":3}},\"version\":1}", T0 + 3), 0);
	commit(&w);
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/update/accepted"), "version"), 2);
	world_close(&w);
}

static void test_inflight_and_caps(void **state)
{
	(void)state;
	world w;
	shadow_conf over = {.max_inflight = 2, .max_shadows = 2};
	world_open(&w, &over, NULL);
	const char *u = "{\"state\":{\"reported\":{\"x\":1}},\"clientToken\":\"c\"}";
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", u, T0), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/name/a/update", u, T0), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/get", "{\"clientToken\":\"third\"}", T0), 0); /* 429 */
	assert_int_equal(req(&w, "$aws/things/dev-2/shadow/get", "", T0), 0); /* another thing: 404 */
	commit(&w);
	const json_t *r = find(&w, "$aws/things/dev-1/shadow/get/rejected");
	assert_non_null(r);
	assert_int_equal(ival(r, "code"), 429);
	assert_string_equal(json_string_value(json_object_get(r, "clientToken")), "third");
	assert_int_equal(ival(find(&w, "$aws/things/dev-2/shadow/get/rejected"), "code"), 404);
	clear_out(&w);
	/* answered: the thing may send again; a third shadow is over max_shadows */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", u, T0 + 1), 0);
	assert_int_equal(req(&w, "$aws/things/dev-3/shadow/update", u, T0 + 1), 0);
	commit(&w);
	assert_non_null(find(&w, "$aws/things/dev-1/shadow/update/accepted"));
	r = find(&w, "$aws/things/dev-3/shadow/update/rejected");
	assert_int_equal(ival(r, "code"), 503);
	assert_non_null(strstr(json_string_value(json_object_get(r, "message")), "max_shadows"));
	assert_int_equal(count_rows("SELECT count(*) FROM shadow WHERE thing = 'dev-3'"), 0);
	const shadow_stats *st = shadow_stats_of(w.sh);
	assert_int_equal(st->rejected_by[SHADOW_CODE_429], 1);
	assert_int_equal(st->rejected_by[SHADOW_CODE_503], 1);
	assert_int_equal(st->rejected_by[SHADOW_CODE_404], 1);
	clear_out(&w);
	/* deleting one makes room */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/name/a/delete", "", T0 + 2), 0);
	assert_int_equal(req(&w, "$aws/things/dev-3/shadow/update", u, T0 + 2), 0);
	commit(&w);
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/name/a/delete/accepted"), "version"), 1);
	assert_non_null(find(&w, "$aws/things/dev-3/shadow/update/accepted"));
	/* a response that cannot be published is counted, not kept */
	clear_out(&w);
	w.fail_publish = 1;
	assert_int_equal(req(&w, "$aws/things/dev-3/shadow/get", "", T0 + 3), 0);
	assert_int_equal(shadow_release(w.sh), 1);
	assert_int_equal(st->publish_errors, 1);
	world_close(&w);
}

static void test_tombstones(void **state)
{
	(void)state;
	world w;
	shadow_conf over = {.tombstone_ms = 10000};
	world_open(&w, &over, NULL);
	const char *u = "{\"state\":{\"reported\":{\"x\":1}}}";
	for (int i = 0; i < 3; i++)
		assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", u, T0 + i), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/delete", "{\"version\":2}", T0 + 5), 0); /* 409 */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/delete", "{\"version\":3,\"clientToken\":\"d\"}", T0 + 5), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/get", "", T0 + 6), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/delete", "", T0 + 6), 0);
	commit(&w);
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/delete/rejected"), "code"), 409);
	const json_t *del = find(&w, "$aws/things/dev-1/shadow/delete/accepted");
	assert_int_equal(ival(del, "version"), 3);
	assert_string_equal(json_string_value(json_object_get(del, "clientToken")), "d");
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/get/rejected"), "code"), 404);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE tbl = 'shadows'"), 4);
	clear_out(&w);
	/* within the retention the counter continues; a version names the tombstone's */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"x\":2}},\"version\":3}", T0 + 9000), 0);
	commit(&w);
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/update/accepted"), "version"), 4);
	assert_null(json_object_get(find(&w, "$aws/things/dev-1/shadow/update/documents"), "previous"));
	clear_out(&w);
	/* past it the counter starts over, and the tick removes old tombstones */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/delete", "", T0 + 10000), 0);
	commit(&w);
	clear_out(&w);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", u, T0 + 20000), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/name/old/update", u, T0 + 20000), 0);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/name/old/delete", "", T0 + 20000), 0);
	commit(&w);
	assert_int_equal(ival(find(&w, "$aws/things/dev-1/shadow/update/accepted"), "version"), 1);
	shadow_tick(w.sh, T0 + 40000);
	commit(&w);
	assert_int_equal(count_rows("SELECT count(*) FROM shadow WHERE deleted_ms IS NOT NULL"), 0);
	world_close(&w);
}

static void test_identity_and_full_outbox(void **state)
{
	(void)state;
	world w;
	outbox_opts oo = {.commit_interval_ms = 5, .commit_max_records = 100, .gateway_id = "gw", .max_rows = 2,
			  .full_policy = OUTBOX_REJECT_NEW};
	world_open(&w, NULL, &oo);
	mosquitto_property *props = NULL;
	assert_int_equal(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "other", "x"), 0);
	assert_int_equal(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "tidegate-thing", "dev-1"), 0);
	const char *u = "{\"state\":{\"reported\":{\"x\":1}}}";
	assert_int_equal(shadow_handle(w.sh, "$aws/things/dev-1/shadow/update", u, strlen(u), props, T0), 0);
	mosquitto_property_free_all(&props);
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", u, T0), 0);
	commit(&w);
	assert_int_equal(count_rows("SELECT count(*) FROM outbox WHERE tbl = 'shadows' AND CAST(payload AS TEXT) LIKE '%\"requested_by\":\"dev-1\"%'"), 1);
	clear_out(&w);
	/* the outbox holds 2 rows and refuses more: the change is refused, not made without its record */
	assert_int_equal(req(&w, "$aws/things/dev-1/shadow/update", "{\"state\":{\"reported\":{\"x\":9}}}", T0 + 1), 0);
	commit(&w);
	const json_t *r = find(&w, "$aws/things/dev-1/shadow/update/rejected");
	assert_int_equal(ival(r, "code"), 503);
	assert_int_equal(count_rows("SELECT version FROM shadow WHERE thing = 'dev-1'"), 2);
	world_close(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_store, each),
		cmocka_unit_test_setup(test_held_until_commit, each),
		cmocka_unit_test_setup(test_rollback_drops_answers_and_change, each),
		cmocka_unit_test_setup(test_inflight_and_caps, each),
		cmocka_unit_test_setup(test_tombstones, each),
		cmocka_unit_test_setup(test_identity_and_full_outbox, each),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
