/*
 * daemon.c — see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "err.h"
#include "log.h"

#define SHUTDOWN_DRAIN_MS 10000

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int mkdir_p(const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0750) && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(tmp, 0750) && errno != EEXIST ? -1 : 0;
}

static void on_message(void *ud, const char *topic, const void *payload, size_t len, int qos,
		       const struct mqtt5__property *props)
{
	tg_daemon *d = ud;
	int64_t now = wall_ms();
	int rc = ingest_message(d->ig, topic, payload, len, qos, props, now);
	if (rc)
		LOG_ERROR("ingest", "msg=\"message not accepted\" topic=%s err=\"%s\"", topic, tg_strerror(rc));
	if (outbox_tick(d->ob, now) > 0)
		forwarder_notify(d->fw);
}

static void teardown(tg_daemon *d)
{
	if (d->br)
		broker_disconnect(d->br, 1000);
	if (d->ob && outbox_commit(d->ob) < 0)
		LOG_ERROR("daemon", "msg=\"final outbox commit failed\"");
	if (d->fw) {
		forwarder_notify(d->fw);
		forwarder_stop(d->fw, SHUTDOWN_DRAIN_MS);
	}
	http_stop(d->http);
	ingest_free(d->ig);
	broker_free(d->br);
	outbox_close(d->ob);
	config_free(d->cfg);
}

int daemon_run(const char *config_path, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload)
{
	tg_daemon d = {0};
	char err[1024];
	int code = 1;
	d.started_ms = wall_ms();
	if (!(d.cfg = config_load(config_path, err, sizeof err))) {
		fprintf(stderr, "tidegate: %s\n", err);
		return 2;
	}
	tg_log_init((enum tg_log_level)tg_log_level_parse(d.cfg->log_level));
	if (mkdir_p(d.cfg->data_dir)) {
		LOG_ERROR("daemon", "msg=\"cannot create data_dir\" path=%s err=\"%s\"", d.cfg->data_dir, strerror(errno));
		goto out;
	}
	outbox_opts oo = {
		.commit_interval_ms = d.cfg->commit_interval_ms,
		.commit_max_records = d.cfg->commit_max_records,
		.max_bytes = d.cfg->outbox_max_bytes,
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
	if (d.cfg->http_port > 0 &&
	    !(d.http = http_start(d.cfg->http_bind, (int)d.cfg->http_port, metrics_render, &d, err, sizeof err))) {
		LOG_ERROR("daemon", "msg=\"ops http\" err=\"%s\"", err);
		goto out;
	}
	broker_start(d.br, err, sizeof err);
	LOG_INFO("daemon", "msg=started gateway_id=%s config=%s outbox=%s sinks=%zu http_port=%d", d.cfg->gateway_id,
		 config_path, d.cfg->outbox_path, d.cfg->nsinks, d.http ? http_port(d.http) : 0);

	while (!*stop) {
		if (*reload) {
			*reload = 0;
			d.reloads++;
			LOG_INFO("daemon", "msg=\"reload requested\"");
		}
		int64_t now = wall_ms();
		int64_t wait = outbox_next_deadline(d.ob, now);
		if (wait > 100)
			wait = 100;
		broker_loop(d.br, (int)wait, now);
		now = wall_ms();
		int c = outbox_tick(d.ob, now);
		if (c > 0)
			forwarder_notify(d.fw);
		else if (c < 0)
			LOG_ERROR("daemon", "msg=\"outbox commit failed\"");
	}
	LOG_INFO("daemon", "msg=stopping");
	code = 0;
out:
	teardown(&d);
	if (code == 0)
		LOG_INFO("daemon", "msg=stopped");
	return code;
}
