/*
 * daemon.c — see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "mqtt/identity.h"
#include "ops/console.h"
#include "preflight.h"
#include "registry/registry.h"
#include "sinks/registry.h"

#define SHUTDOWN_DRAIN_MS 10000
#define CONFIG_ERRBUF (64 * 1024)

static void on_message(void *ud, const char *topic, const void *payload, size_t len, int qos,
		       const struct mqtt5__property *props)
{
	tg_daemon *d = ud;
	int64_t now = tg_wall_ms();
	int rc = d->sh && shadow_topic_is_ours(topic) ? shadow_handle(d->sh, topic, payload, len, props, now)
						      : ingest_message(d->ig, topic, payload, len, qos, props, now);
	if (rc) {
		/* not stored: its PUBACK must not leave. Drop what is held and the connection,
		 * so the broker delivers it (and the rest of the group) again. */
		LOG_ERROR("ingest", "msg=\"message not accepted, reconnecting so the broker delivers it again\" topic=%s err=\"%s\"",
			  topic, tg_strerror(rc));
		broker_drop(d->br);
		return;
	}
	int c = outbox_tick(d->ob, now);
	if (c > 0) {
		forwarder_notify(d->fw);
		/* acknowledge the group now, not when the read round ends: under saturation a
		 * round ends with the next group open, and PUBACKs would wait for a quiet moment */
		broker_flush(d->br);
	} else if (c < 0) {
		LOG_ERROR("daemon", "msg=\"outbox commit failed, reconnecting so the broker delivers the group again\"");
		broker_drop(d->br);
	}
}

/* shadow_conf.publish and .rules: the service's responses go out through the broker client
 * and through the rules, like any message */
static int shadow_publish(void *ud, const char *topic, const void *payload, size_t len, int qos)
{
	const tg_daemon *d = ud;
	return broker_publish(d->br, topic, payload, len, qos, 0);
}

static void shadow_rules(void *ud, const tg_msg *m)
{
	const tg_daemon *d = ud;
	ingest_rules(d->ig, m);
}

static int add_attr(void *ud, const char *key, const char *value)
{
	return json_object_set_new(ud, key, json_string(value)) ? TG_ENOMEM : 0;
}

/* Attributes of a registered thing for enrichment and get_registry_data(), cached until
 * the registry's data_version changes (checked at most twice a second). Runs on the
 * ingest thread only. Returns a new reference or NULL. */
/* rules_env.alert_idle: the engine skips an alert action that would change nothing */
static int alert_idle(void *ud, const char *rule, const char *alert, uint64_t alert_key, const char *thing)
{
	const tg_daemon *d = ud;
	return ingest_alert_idle(d->ig, rule, alert, alert_key, thing);
}

static json_t *registry_attrs(void *ud, const char *thing)
{
	tg_daemon *d = ud;
	if (!d->reg)
		return NULL;
	int64_t now = tg_wall_ms();
	if (now - d->reg_checked_ms >= 500) {
		d->reg_checked_ms = now;
		int64_t v = 0;
		if (registry_data_version(d->reg, &v, NULL, 0) == 0 && v != d->reg_version) {
			d->reg_version = v;
			json_object_clear(d->reg_cache);
		}
	}
	json_t *hit = json_object_get(d->reg_cache, thing);
	if (hit)
		return json_is_object(hit) ? json_incref(hit) : NULL;
	registry_thing_row row;
	json_t *attrs = NULL;
	if (registry_thing_get(d->reg, thing, &row, NULL, 0) == 0) {
		attrs = json_object();
		if (attrs && registry_attrs_foreach(d->reg, thing, add_attr, attrs, NULL, 0) < 0) {
			json_decref(attrs);
			attrs = NULL;
		}
	}
	if (json_object_size(d->reg_cache) < 100000)
		json_object_set_new(d->reg_cache, thing, attrs ? json_incref(attrs) : json_null());
	return attrs;
}

static void open_registry(tg_daemon *d)
{
	char err[512];
	if (access(d->cfg->registry_path, F_OK) != 0) {
		LOG_INFO("registry", "msg=\"no device registry; enrichment and get_registry_data() are off\" path=%s",
			 d->cfg->registry_path);
		return;
	}
	if (!(d->reg = registry_open(d->cfg->registry_path, REGISTRY_RDONLY, 50, err, sizeof err))) {
		LOG_WARN("registry", "msg=\"cannot open the device registry\" path=%s err=\"%s\"", d->cfg->registry_path, err);
		return;
	}
	d->reg_cache = json_object();
	registry_data_version(d->reg, &d->reg_version, NULL, 0);
	LOG_INFO("registry", "msg=\"device registry open\" path=%s", d->cfg->registry_path);
}

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static rules_env rules_env_of(tg_daemon *d)
{
	return (rules_env){.sink_names = d->sink_names, .registry_lookup = registry_attrs, .registry_ud = d,
			   .alert_idle = alert_idle, .alert_ud = d};
}

static void note_reload_time(tg_daemon *d, int64_t us)
{
	atomic_store(&d->reload_us_last, us);
	if (us > atomic_load(&d->reload_us_max))
		atomic_store(&d->reload_us_max, us);
}

/* Swap a compiled set in (rs non-NULL), or keep the running one and log every error with
 * file:line:col from errbuf. Returns 0 or the error code. */
static int adopt_rules(tg_daemon *d, rules_set *rs, char *errbuf, int initial)
{
	if (!rs) {
		if (!initial)
			atomic_fetch_add(&d->reload_failures, 1);
		if (d->con)
			ops_console_rules_failed(d->con, errbuf);
		for (char *save = NULL, *line = strtok_r(errbuf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			LOG_ERROR("rules", "msg=\"%s\" error=\"%s\"",
				  initial ? "invalid rule set, not starting" : "invalid rule set, keeping the previous one", line);
		return TG_EPARSE;
	}
	rules_set_adopt_counters(rs, d->rules);
	if (d->ig)
		ingest_set_rules(d->ig, rs);
	rules_set_free(d->rules);
	d->rules = rs;
	d->rules_gen++;
	if (d->con)
		ops_console_set_rules(d->con, rs);
	if (!initial)
		atomic_fetch_add(&d->reloads, 1);
	LOG_INFO("rules", "msg=\"rules %s\" dir=%s rules=%zu compile_ms=%.1f", initial ? "loaded" : "reloaded",
		 d->cfg->rules_dir, rules_count(rs), (double)atomic_load(&d->reload_us_last) / 1000.0);
	return 0;
}

/* Compile the rules folder here and swap it in: at start, and for the console's API (whose
 * caller waits for the verdict). Returns 0 or the error code. */
static int load_rules(tg_daemon *d, int initial)
{
	if (!d->cfg->rules_dir || !*d->cfg->rules_dir)
		return 0;
	rules_env env = rules_env_of(d);
	char errbuf[8192] = "";
	int64_t t0 = mono_us();
	rules_set *rs = rules_load_dir(d->cfg->rules_dir, &env, errbuf, sizeof errbuf);
	note_reload_time(d, mono_us() - t0);
	return adopt_rules(d, rs, errbuf, initial);
}

/* A reload asked for by SIGHUP or a change in the folder compiles on a thread of its own,
 * and the ingest loop swaps the result in when it is done (reload_poll): 1,000 rules take
 * about 100 ms to compile, and a loop stopped that long would hold every message (and its
 * PUBACK) for far more than one commit interval. The job reads only the folder and the
 * sink names (fixed while the daemon runs); the running set is not touched until the swap. */
typedef struct rules_job {
	pthread_t th;
	const char *dir;
	rules_env env;
	rules_set *rs; /* the result, or NULL with errbuf */
	char errbuf[8192];
	int64_t us, cpu_us;
	uint64_t gen; /* d->rules_gen when it started: a set adopted meanwhile is newer */
	atomic_int done;
} rules_job;

static void *reload_main(void *arg)
{
	rules_job *j = arg;
	/* On a small box every core may be busy: the compile gives way to the ingest thread
	 * (a thread's nice value is its own on Linux); a reload may take longer, a message not. */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) != 0)
		LOG_DEBUG("rules", "msg=\"reload thread keeps its priority\" err=\"%s\"", strerror(errno));
	struct timespec c0, c1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	int64_t t0 = mono_us();
	j->rs = rules_load_dir(j->dir, &j->env, j->errbuf, sizeof j->errbuf);
	j->us = mono_us() - t0;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	j->cpu_us = (int64_t)(c1.tv_sec - c0.tv_sec) * 1000000 + (c1.tv_nsec - c0.tv_nsec) / 1000;
	atomic_store(&j->done, 1);
	return NULL;
}

static void reload_start(tg_daemon *d)
{
	if (!d->cfg->rules_dir || !*d->cfg->rules_dir)
		return;
	if (d->reload_job) { /* compile again once this one is in: it may predate the change */
		d->reload_again = 1;
		return;
	}
	rules_job *j = calloc(1, sizeof *j);
	if (j) {
		j->dir = d->cfg->rules_dir;
		j->env = rules_env_of(d);
		j->gen = d->rules_gen;
		if (pthread_create(&j->th, NULL, reload_main, j) == 0) {
			d->reload_job = j;
			return;
		}
		free(j);
	}
	LOG_WARN("rules", "msg=\"cannot start a reload thread; compiling in the ingest loop\"");
	load_rules(d, 0);
}

/* Swap in a finished reload (and start the one asked for meanwhile). */
static void reload_poll(tg_daemon *d)
{
	rules_job *j = d->reload_job;
	if (!j || !atomic_load(&j->done))
		return;
	pthread_join(j->th, NULL);
	d->reload_job = NULL;
	note_reload_time(d, j->us);
	atomic_store(&d->reload_cpu_us_last, j->cpu_us);
	if (j->gen != d->rules_gen) {
		/* the console's API reloaded synchronously while this compiled: its set read the
		 * folder later; this one may predate that write. Drop it and compile once more. */
		rules_set_free(j->rs);
		d->reload_again = 1;
	} else {
		int64_t t0 = mono_us();
		adopt_rules(d, j->rs, j->errbuf, 0); /* frees the old set: the only part the loop waits for */
		int64_t swap = mono_us() - t0;
		if (swap > atomic_load(&d->reload_swap_us_max))
			atomic_store(&d->reload_swap_us_max, swap);
	}
	free(j);
	if (d->reload_again) {
		d->reload_again = 0;
		reload_start(d);
	}
}

/* At shutdown: wait for a reload still compiling and drop its result. */
static void reload_abandon(tg_daemon *d)
{
	rules_job *j = d->reload_job;
	if (!j)
		return;
	pthread_join(j->th, NULL);
	rules_set_free(j->rs);
	free(j);
	d->reload_job = NULL;
}

static int load_schemas(tg_daemon *d, int initial)
{
	if (!d->cfg->schemas_dir || !*d->cfg->schemas_dir)
		return 0;
	char errbuf[8192] = "";
	schema_set *ss = schema_load_dir(d->cfg->schemas_dir, errbuf, sizeof errbuf);
	if (!ss) {
		if (!initial)
			atomic_fetch_add(&d->reload_failures, 1);
		for (char *save = NULL, *line = strtok_r(errbuf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			LOG_ERROR("schema", "msg=\"%s\" error=\"%s\"",
				  initial ? "invalid schema set, not starting" : "invalid schema set, keeping the previous one",
				  line);
		return TG_EPARSE;
	}
	if (d->ig)
		ingest_set_schemas(d->ig, ss);
	schema_set_free(d->schemas);
	d->schemas = ss;
	LOG_INFO("schema", "msg=\"schemas %s\" dir=%s schemas=%zu", initial ? "loaded" : "reloaded",
		 d->cfg->schemas_dir, schema_count(ss));
	return 0;
}

static void watch_rules(tg_daemon *d)
{
	d->inotify_fd = -1;
	if (!d->cfg->rules_watch || !d->cfg->rules_dir || !*d->cfg->rules_dir)
		return;
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0 || inotify_add_watch(fd, d->cfg->rules_dir,
					IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0) {
		LOG_WARN("rules", "msg=\"cannot watch rules folder; SIGHUP still reloads\" dir=%s err=\"%s\"",
			 d->cfg->rules_dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	d->inotify_fd = fd;
}

/* Drain inotify events; schedule a reload shortly after the last change, so an editor's
 * write-rename-chmod sequence or a copied folder is compiled once, complete. */
static void check_watch(tg_daemon *d, int64_t now)
{
	if (d->inotify_fd < 0)
		return;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int changed = 0;
	while (read(d->inotify_fd, buf, sizeof buf) > 0)
		changed = 1;
	if (changed)
		d->reload_due_ms = now + 200;
	if (d->reload_due_ms && now >= d->reload_due_ms) {
		d->reload_due_ms = 0;
		LOG_INFO("rules", "msg=\"rules folder changed\"");
		reload_start(d);
	}
}

/* [broker] identity = stamped is safe only when the broker runs the auth plugin: prove it
 * before the first message is taken (identity.h). A broker that cannot be asked yet is asked
 * again with backoff; one that answers no stops the daemon. 0 verified (or not needed),
 * 1 stopped while waiting, < 0 refused. */
static int verify_stamping(const tg_config *cfg, tg_notify *nt, volatile sig_atomic_t *stop)
{
	if (cfg->broker_identity != IDENTITY_STAMPED)
		return 0;
	int64_t delay = cfg->reconnect_min_ms;
	for (;;) {
		char err[512];
		int rc = identity_probe(cfg, 5000, err, sizeof err);
		if (rc == 0) {
			LOG_INFO("identity", "msg=\"the broker stamps identities: trusting its %s property\" identity=stamped",
				 IDENTITY_PROPERTY);
			return 0;
		}
		if (rc != TG_ENET) {
			LOG_ERROR("identity", "msg=\"[broker] identity = stamped, but the broker does not stamp; not starting\" "
				  "error=\"%s\"", err);
			return rc;
		}
		LOG_WARN("identity", "msg=\"cannot check the identity stamping yet; no message is taken until it is\" "
			 "error=\"%s\" retry_ms=%lld", err, (long long)delay);
		for (int64_t until = tg_mono_ms() + delay; !*stop && tg_mono_ms() < until;) {
			struct timespec ts = {0, 50 * 1000000L};
			nanosleep(&ts, NULL);
			notify_ping(nt, tg_wall_ms()); /* waiting is not hanging: keep systemd's watchdog fed */
		}
		if (*stop)
			return 1;
		delay = delay * 2 > cfg->reconnect_max_ms ? cfg->reconnect_max_ms : delay * 2;
	}
}

/* ---- the operator's console (gateway/ops/console.h): what the daemon lends it ---------- */
static int host_reload(void *ud) { return load_rules(ud, 0); }

static int host_requeue(void *ud, const char *sink_name, int64_t *moved)
{
	tg_daemon *d = ud;
	int rc = outbox_requeue_dead(d->ob, sink_name, tg_wall_ms(), moved);
	if (rc == 0 && *moved)
		forwarder_notify(d->fw);
	return rc;
}

static void host_counters(void *ud, ops_counters *o)
{
	tg_daemon *d = ud;
	ingest_stats *is = ingest_stats_of(d->ig);
	o->received = atomic_load(&is->received);
	o->accepted = atomic_load(&is->accepted);
	o->quarantined = atomic_load(&is->quarantined);
	o->alerts_raised = atomic_load(&is->alerts_raised);
	o->alerts_cleared = atomic_load(&is->alerts_cleared);
	o->broker_connected = broker_stats_get(d->br)->connected;
}

static char *host_render(void *ud, const char *path, int *status, const char **content_type)
{
	tg_daemon *d = ud;
	return metrics_render(&d->msrc, path, status, content_type);
}

static int rules_loaded(void *ud)
{
	tg_daemon *d = ud;
	return !d->cfg->rules_dir || !*d->cfg->rules_dir || d->rules != NULL;
}

static int start_console(tg_daemon *d, char *err, size_t errlen)
{
	if (!d->cfg->http_token_file || !*d->cfg->http_token_file || d->cfg->http_port <= 0)
		return 0;
	ops_console_conf cc = {.cfg = d->cfg, .ob = d->ob, .fw = d->fw, .sink_names = d->sink_names};
	ops_host host = {.ud = d, .reload_rules = host_reload, .requeue_dead = host_requeue, .render = host_render,
			 .counters = host_counters};
	if (!(d->con = ops_console_new(&cc, &host, err, errlen)))
		return TG_EINVAL;
	if (d->rules)
		ops_console_set_rules(d->con, d->rules);
	ingest_observer obs = {.accepted = ops_console_on_accepted, .quarantined = ops_console_on_quarantined,
			       .alert = ops_console_on_alert, .ud = d->con};
	ingest_set_observer(d->ig, &obs);
	return outbox_add_group_hook(d->ob, ops_console_on_group, d->con);
}

/* systemd: status line and watchdog keep-alive, from the ingest loop so that a hung
 * ingest sends none; a forwarder thread silent for a watchdog period withholds them too. */
static void keepalive(tg_daemon *d, int64_t now)
{
	char where[300];
	snprintf(where, sizeof where, "%s:%" PRId64, d->cfg->broker_host, d->cfg->broker_port);
	notify_sample s = {.accepted = atomic_load(&ingest_stats_of(d->ig)->accepted),
			   .backlog = atomic_load(&outbox_counters_of(d->ob)->rows),
			   .broker_connected = broker_stats_get(d->br)->connected,
			   .broker = where};
	const char *quiet = NULL;
	s.stalled_ms = forwarder_silence_ms(d->fw, tg_mono_ms(), &quiet);
	char what[200];
	snprintf(what, sizeof what, "forwarder %s", quiet ? quiet : "?");
	s.stalled_what = what;
	if (notify_tick(d->nt, now, &s) < 0)
		LOG_ERROR("daemon", "msg=\"forwarder thread stuck, withholding the watchdog keep-alive\" sink=%s "
			  "silent_ms=%" PRId64, quiet ? quiet : "?", s.stalled_ms);
}

static void teardown(tg_daemon *d)
{
	reload_abandon(d);
	notify_stopping(d->nt, "stopping: committing the outbox, draining the sinks");
	ops_console_stop(d->con); /* ends the event streams, so the HTTP threads finish now */
	http_stop(d->http);
	d->http = NULL;
	/* commit before the last PUBACKs leave with the disconnect */
	if (d->ob && outbox_commit(d->ob) < 0)
		LOG_ERROR("daemon", "msg=\"outbox commit failed\"");
	shadow_release(d->sh); /* the answers to what that commit made durable */
	if (d->br)
		broker_disconnect(d->br, 1000);
	ingest_free(d->ig); /* emits open aggregate windows into the outbox */
	d->ig = NULL;
	if (d->ob && outbox_commit(d->ob) < 0)
		LOG_ERROR("daemon", "msg=\"final outbox commit failed\"");
	if (d->fw) {
		forwarder_notify(d->fw);
		forwarder_stop(d->fw, SHUTDOWN_DRAIN_MS);
	}
	shadow_free(d->sh);
	broker_free(d->br);
	outbox_close(d->ob); /* its last commits still go through the console's hook */
	ops_console_free(d->con);
	rules_set_free(d->rules);
	schema_set_free(d->schemas);
	if (d->inotify_fd >= 0)
		close(d->inotify_fd);
	free(d->sink_names);
	registry_close(d->reg);
	json_decref(d->reg_cache);
	config_free(d->cfg);
	notify_free(d->nt);
}

int daemon_run(const char *config_path, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload)
{
	tg_daemon d = {.inotify_fd = -1};
	char err[1024];
	int code = 1;
	d.started_ms = tg_wall_ms();
	/* the checks check-config runs, every one (preflight.h) */
	char *errs = malloc(CONFIG_ERRBUF);
	if (!errs)
		return 1;
	errs[0] = '\0';
	if (!(d.cfg = config_load(config_path, sink_types_all(), errs, CONFIG_ERRBUF)) || preflight_check(d.cfg, errs, CONFIG_ERRBUF)) {
		for (char *save = NULL, *line = strtok_r(errs, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			LOG_ERROR("config", "msg=\"invalid configuration, not starting\" error=\"%s\"", line);
		free(errs);
		config_free(d.cfg);
		return 2;
	}
	free(errs);
	tg_log_init((enum tg_log_level)d.cfg->log_level);
	if (!(d.sink_names = preflight_sink_names(d.cfg)) || !(d.nt = notify_new()))
		goto out;
	open_registry(&d);
	if (load_rules(&d, 1) || load_schemas(&d, 1))
		goto out;
	if (tg_mkdirs(d.cfg->data_dir, 0750)) {
		LOG_ERROR("daemon", "msg=\"cannot create data_dir\" path=%s err=\"%s\"", d.cfg->data_dir, strerror(errno));
		goto out;
	}
	outbox_opts oo = {
		.commit_interval_ms = d.cfg->commit_interval_ms,
		.commit_max_records = d.cfg->commit_max_records,
		.max_bytes = d.cfg->outbox_max_bytes,
		.wal_max_bytes = d.cfg->outbox_wal_max_bytes,
		.max_rows = d.cfg->outbox_max_rows,
		.full_policy = d.cfg->outbox_full_policy,
		.gateway_id = d.cfg->gateway_id,
	};
	if (!(d.ob = outbox_open(d.cfg->outbox_path, &oo, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"cannot open outbox\" err=\"%s\"", err);
		goto out;
	}
	if (!(d.fw = forwarder_start(d.ob, d.cfg, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"cannot start forwarder\" err=\"%s\"", err);
		goto out;
	}
	if (!(d.br = broker_new(d.cfg, on_message, &d, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"broker client\" err=\"%s\"", err);
		goto out;
	}
	if (!(d.ig = ingest_new(d.cfg, d.ob, d.br, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"ingest\" err=\"%s\"", err);
		goto out;
	}
	ingest_set_rules(d.ig, d.rules);
	ingest_set_schemas(d.ig, d.schemas);
	ingest_set_registry(d.ig, registry_attrs, &d);
	if (d.cfg->shadow_enabled) {
		shadow_conf sc = {
			.max_shadows = d.cfg->shadow_max_shadows,
			.max_state_bytes = d.cfg->shadow_max_state_bytes,
			.max_payload_bytes = d.cfg->max_payload,
			.max_inflight = d.cfg->shadow_max_inflight,
			.tombstone_ms = d.cfg->shadow_tombstone_ms,
			.response_qos = (int)d.cfg->shadow_response_qos,
			.documents_qos = (int)d.cfg->shadow_documents_qos,
			.sinks = (const char *const *)d.cfg->default_sink_list,
			.nsinks = d.cfg->ndefault_sinks,
			.publish = shadow_publish,
			.rules = shadow_rules,
			.ud = &d,
		};
		if (!(d.sh = shadow_new(&sc, d.ob, err, sizeof err))) {
			LOG_ERROR("daemon", "msg=\"shadow service\" err=\"%s\"", err);
			goto out;
		}
	}
	watch_rules(&d);
	d.msrc = (metrics_src){.br = d.br, .ob = d.ob, .fw = d.fw, .sh = d.sh, .ingest = ingest_stats_of(d.ig),
			       .rules = ingest_rule_stats_of(d.ig), .reloads = &d.reloads,
			       .reload_failures = &d.reload_failures,
			       .reload_us_last = &d.reload_us_last, .reload_us_max = &d.reload_us_max,
			       .reload_cpu_us_last = &d.reload_cpu_us_last, .reload_swap_us_max = &d.reload_swap_us_max, .rules_loaded = rules_loaded, .ud = &d};
	if (start_console(&d, err, sizeof err)) {
		LOG_ERROR("daemon", "msg=\"console\" err=\"%s\"", err);
		goto out;
	}
	d.msrc.con = d.con;
	http_opts ho = {.bind = d.cfg->http_bind, .port = (int)d.cfg->http_port, .max_body = (size_t)d.cfg->http_max_body,
			.max_conns = (unsigned)d.cfg->http_max_connections, .tls_cert_file = d.cfg->http_tls_cert_file,
			.tls_key_file = d.cfg->http_tls_key_file};
	if (d.cfg->http_port > 0 && !(d.http = http_start(&ho, metrics_http, &d.msrc, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"ops http\" err=\"%s\"", err);
		goto out;
	}
	/* ready: outbox open, rules compiled, HTTP bound; the broker may come later */
	char status[400];
	snprintf(status, sizeof status, "ready: outbox open, %zu rules, ops http port %d; waiting for the broker %s:%" PRId64,
		 d.rules ? rules_count(d.rules) : 0, d.http ? http_port(d.http) : 0, d.cfg->broker_host,
		 d.cfg->broker_port);
	notify_ready(d.nt, status, tg_wall_ms());
	int v = verify_stamping(d.cfg, d.nt, stop);
	if (v) {
		code = v > 0 ? 0 : 1;
		goto out;
	}
	broker_start(d.br, err, sizeof err);
	LOG_INFO("daemon", "msg=started gateway_id=%s config=%s outbox=%s sinks=%zu http_port=%d", d.cfg->gateway_id,
		 config_path, d.cfg->outbox_path, d.cfg->nsinks, d.http ? http_port(d.http) : 0);

	while (!*stop) {
		int64_t now = tg_wall_ms();
		if (*reload) {
			*reload = 0;
			LOG_INFO("daemon", "msg=\"SIGHUP: reloading rules and schemas\"");
			reload_start(&d);
			load_schemas(&d, 0);
		}
		check_watch(&d, now);
		reload_poll(&d);
		int64_t wait = outbox_next_deadline(d.ob, now);
		if (wait > 100)
			wait = 100;
		broker_loop(d.br, (int)wait, now);
		now = tg_wall_ms();
		ingest_tick(d.ig, now);
		shadow_tick(d.sh, now);
		/* an alert (or any publish), or a shadow response, waits behind the PUBACKs of
		 * uncommitted messages: commit now rather than at the group deadline */
		int c = (broker_urgent(d.br) || shadow_waiting(d.sh)) && outbox_in_txn(d.ob)
				? (outbox_commit(d.ob) < 0 ? -1 : 1)
				: outbox_tick(d.ob, now);
		if (c > 0) {
			forwarder_notify(d.fw);
		} else if (c < 0) {
			LOG_ERROR("daemon", "msg=\"outbox commit failed, reconnecting so the broker delivers the group again\"");
			broker_drop(d.br);
		}
		/* answer shadow requests whose changes are committed, then acknowledge to the
		 * broker only what is committed (the answers leave with the PUBACKs) */
		shadow_release(d.sh);
		if (!outbox_in_txn(d.ob))
			broker_flush(d.br);
		ops_console_service(d.con, !outbox_in_txn(d.ob)); /* API rule reloads, dead-letter requeues */
		keepalive(&d, now);
	}
	LOG_INFO("daemon", "msg=stopping");
	code = 0;
out:
	teardown(&d);
	if (code == 0)
		LOG_INFO("daemon", "msg=stopped");
	return code;
}
