/*
 * metrics.c — see metrics.h. Renders the gateway's counters for the ops HTTP endpoint: Prometheus text
 * on /metrics, a JSON health verdict on /healthz and a JSON status on /api/status. Reads
 * only atomics and plain counters; never blocks the ingest thread.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "ops/console.h"
#include "ops/metrics.h"

typedef struct sbuf {
	char *p;
	size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np)
			return;
		b->p = np;
		b->cap = cap;
	}
}

static void counter(sbuf *b, const char *name, const char *help, uint64_t v)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void gauge(sbuf *b, const char *name, const char *help, int64_t v)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %" PRId64 "\n", name, help, name, name, v);
}

/* Per sink, from counters kept as rows come and go (no query per scrape): backlog, the
 * oldest undelivered record's age, how long sends have failed, and the /healthz verdict. */
static void sink_health_gauges(sbuf *b, const metrics_src *d)
{
	static const struct {
		const char *name, *help;
	} fam[] = {
		{"tidegate_sink_backlog_rows", "Records queued in the outbox for the sink."},
		{"tidegate_sink_backlog_bytes", "Payload bytes queued in the outbox for the sink."},
		{"tidegate_sink_oldest_undelivered_seconds", "Age of the oldest record not yet delivered to the sink (0: none)."},
		{"tidegate_sink_failing_seconds", "How long sends to the sink have been failing (0: not failing)."},
		{"tidegate_sink_healthy", "1 unless /healthz reports the sink degraded (see health_failing_after, health_max_age)."},
	};
	size_t n = forwarder_nsinks(d->fw);
	forwarder_health *h = calloc(n ? n : 1, sizeof *h);
	if (!h)
		return;
	int64_t now = tg_wall_ms();
	for (size_t i = 0; i < n; i++)
		forwarder_health_of(d->fw, i, now, &h[i]);
	for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
		sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", fam[f].name, fam[f].help, fam[f].name);
		for (size_t i = 0; i < n; i++) {
			int64_t v = f == 0 ? h[i].backlog_rows : f == 1 ? h[i].backlog_bytes : f == 4 ? h[i].healthy : 0;
			if (f == 2 || f == 3)
				sb_printf(b, "%s{sink=\"%s\"} %.3f\n", fam[f].name, forwarder_stats(d->fw, i)->name,
					  (double)(f == 2 ? h[i].oldest_age_ms : h[i].failing_ms) / 1000.0);
			else
				sb_printf(b, "%s{sink=\"%s\"} %" PRId64 "\n", fam[f].name, forwarder_stats(d->fw, i)->name, v);
		}
	}
	free(h);
}

static char *render_metrics(const metrics_src *d)
{
	sbuf b = {0};
	const metrics_ingest_counters *is = d->ingest;
	outbox_counters *oc = outbox_counters_of(d->ob);
	const broker_stats *bs = broker_stats_get(d->br);
	counter(&b, "tidegate_messages_received_total", "Messages received from the broker.", atomic_load(&is->received));
	counter(&b, "tidegate_messages_accepted_total", "Messages committed to the outbox.", atomic_load(&is->accepted));
	counter(&b, "tidegate_messages_quarantined_total", "Messages rejected into quarantine.", atomic_load(&is->quarantined));
	sb_printf(&b, "# HELP tidegate_quarantine_total Quarantined messages by reason.\n# TYPE tidegate_quarantine_total counter\n");
	for (int r = 1; r < SCHEMA_R__COUNT; r++)
		sb_printf(&b, "tidegate_quarantine_total{reason=\"%s\"} %" PRIu64 "\n", schema_reason_name((schema_reason)r),
			  atomic_load(&is->by_reason[r]));
	sb_printf(&b, "tidegate_quarantine_total{reason=\"bad_topic\"} %" PRIu64 "\n", atomic_load(&is->bad_topic));
	counter(&b, "tidegate_duplicates_total", "Messages dropped as duplicates of a (thing, ts) already seen.",
		atomic_load(&is->duplicates));
	counter(&b, "tidegate_aggregates_emitted_total", "Closed aggregate windows emitted as messages.",
		atomic_load(&is->aggregates_emitted));
	gauge(&b, "tidegate_dedupe_bytes", "Memory held by the dedupe memory (things, their readings).",
	      atomic_load(&is->dedupe_bytes));
	gauge(&b, "tidegate_aggregate_bytes", "Memory held by the aggregates (keys, their open windows).",
	      atomic_load(&is->aggregate_bytes));
	counter(&b, "tidegate_alerts_raised_total", "Alerts raised.", atomic_load(&is->alerts_raised));
	counter(&b, "tidegate_alerts_cleared_total", "Alerts cleared.", atomic_load(&is->alerts_cleared));
	counter(&b, "tidegate_alerts_suppressed_total", "Alert notifications suppressed by rateLimitSeconds.",
		atomic_load(&is->alerts_suppressed));
	counter(&b, "tidegate_messages_rejected_full_total", "Messages refused because the outbox was full (reject_new).",
		atomic_load(&is->rejected_full));
	gauge(&b, "tidegate_outbox_rows", "Rows queued in the outbox (all sinks).", atomic_load(&oc->rows));
	gauge(&b, "tidegate_outbox_bytes", "Payload bytes queued in the outbox.", atomic_load(&oc->bytes));
	outbox_disk dk;
	outbox_disk_usage(d->ob, &dk);
	sb_printf(&b, "# HELP tidegate_outbox_disk_bytes The outbox's files on disk (what max_bytes bounds).\n"
		      "# TYPE tidegate_outbox_disk_bytes gauge\n"
		      "tidegate_outbox_disk_bytes{file=\"db\"} %" PRId64 "\ntidegate_outbox_disk_bytes{file=\"wal\"} %" PRId64
		      "\ntidegate_outbox_disk_bytes{file=\"shm\"} %" PRId64 "\ntidegate_outbox_disk_bytes{file=\"total\"} %" PRId64 "\n",
		  dk.db, dk.wal, dk.shm, dk.total);
	gauge(&b, "tidegate_outbox_db_used_bytes", "Database pages in use (free pages are reused before the file grows).",
	      atomic_load(&oc->db_used_bytes));
	gauge(&b, "tidegate_outbox_record_cap_bytes", "max_bytes turned into queued payload bytes at the measured pages per byte.",
	      atomic_load(&oc->record_cap_bytes));
	gauge(&b, "tidegate_outbox_wal_bytes", "Frames in the write-ahead log since it last started over.",
	      atomic_load(&oc->wal_bytes));
	gauge(&b, "tidegate_outbox_wal_peak_bytes", "Largest write-ahead log seen since start.", atomic_load(&oc->wal_peak_bytes));
	gauge(&b, "tidegate_outbox_wal_max_bytes", "The write-ahead log's bound.", atomic_load(&oc->wal_limit_bytes));
	counter(&b, "tidegate_outbox_wal_restarts_total", "Checkpoints that let the write-ahead log start over.",
		atomic_load(&oc->wal_restarts));
	counter(&b, "tidegate_outbox_wal_restart_busy_total", "Restart attempts a reader held up (retried at the next commit).",
		atomic_load(&oc->wal_restart_busy));
	sb_printf(&b, "# HELP tidegate_outbox_wal_restart_max_seconds Longest restart checkpoint on the ingest thread.\n"
		      "# TYPE tidegate_outbox_wal_restart_max_seconds gauge\ntidegate_outbox_wal_restart_max_seconds %.6f\n",
		  (double)atomic_load(&oc->wal_restart_max_us) / 1e6);
	sb_printf(&b, "# HELP tidegate_outbox_wal_restart_seconds_total Time the ingest thread spent in restart checkpoints.\n"
		      "# TYPE tidegate_outbox_wal_restart_seconds_total counter\ntidegate_outbox_wal_restart_seconds_total %.6f\n",
		  (double)atomic_load(&oc->wal_restart_us) / 1e6);
	counter(&b, "tidegate_outbox_checkpoints_skipped_total",
		"Checkpoints not run because the WAL was copied back and its restart not yet done (SQLite's WAL-reset race).",
		atomic_load(&oc->ckpt_skipped));
	counter(&b, "tidegate_outbox_aborted_total", "Commit groups rolled back because they could not be stored.",
		atomic_load(&oc->aborted));
	sb_printf(&b, "# HELP tidegate_outbox_disk_full 1 while the outbox takes no records because data_dir's file system "
		      "is full or nearly so (nothing is acknowledged to the broker meanwhile); 0 again once it takes "
		      "records and commits.\n"
		      "# TYPE tidegate_outbox_disk_full gauge\ntidegate_outbox_disk_full %d\n",
		  atomic_load(&oc->disk_full));
	counter(&b, "tidegate_outbox_appended_total", "Rows committed to the outbox.", atomic_load(&oc->appended));
	counter(&b, "tidegate_outbox_commits_total", "Group commits.", atomic_load(&oc->commits));
	counter(&b, "tidegate_outbox_dropped_total", "Rows dropped by drop_oldest.", atomic_load(&oc->dropped));
	counter(&b, "tidegate_outbox_dropped_alerts_total", "Alert rows dropped by drop_oldest.", atomic_load(&oc->dropped_alerts));
	counter(&b, "tidegate_outbox_delivered_total", "Rows delivered and deleted.", atomic_load(&oc->delivered));
	counter(&b, "tidegate_outbox_dead_total", "Rows moved to dead letters.", atomic_load(&oc->dead));
	gauge(&b, "tidegate_broker_connected", "1 while connected to the broker.", bs->connected);
	counter(&b, "tidegate_broker_connects_total", "Successful broker connects.", bs->connects);
	counter(&b, "tidegate_republished_total",
		"Messages published to the broker and acknowledged by it (QoS 1) or written (QoS 0).", bs->published);
	counter(&b, "tidegate_publish_refused_total",
		"Publishes the broker refused (PUBACK reason code >= 0x80, e.g. 135 Not authorized by its ACL).",
		bs->publish_refused);
	int64_t oldest_unacked = 0;
	uint64_t throttled = 0;
	uint64_t unacked = broker_unacked(d->br, &oldest_unacked, &throttled);
	gauge(&b, "tidegate_broker_unacked", "Messages received from the broker and not yet acknowledged to it.",
	      (int64_t)unacked);
	sb_printf(&b, "# HELP tidegate_broker_unacked_oldest_seconds Age of the oldest message not yet acknowledged to the broker.\n"
		      "# TYPE tidegate_broker_unacked_oldest_seconds gauge\ntidegate_broker_unacked_oldest_seconds %.3f\n",
		  oldest_unacked ? (double)(tg_wall_ms() - oldest_unacked) / 1000.0 : 0.0);
	gauge(&b, "tidegate_broker_dropped_messages",
	      "Messages the broker dropped because a client's queue was full, broker-wide since it started ($SYS; -1 unknown).",
	      atomic_load(&bs->sys_dropped));
	gauge(&b, "tidegate_broker_stored_messages", "Messages the broker holds ($SYS; -1 unknown).",
	      atomic_load(&bs->sys_stored_messages));
	gauge(&b, "tidegate_broker_stored_bytes", "Payload bytes the broker holds ($SYS; -1 unknown).",
	      atomic_load(&bs->sys_stored_bytes));
	gauge(&b, "tidegate_broker_unacked_max", "The bound on unacknowledged messages (also the receive maximum announced).",
	      broker_receive_max(d->br));
	counter(&b, "tidegate_broker_read_throttled_total",
		"Loop rounds that did not read from the broker because the unacknowledged bound was reached.", throttled);
	sb_printf(&b, "# HELP tidegate_sink_records_total Records per sink and outcome.\n# TYPE tidegate_sink_records_total counter\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_records_total{sink=\"%s\",outcome=\"ok\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->records_ok));
		sb_printf(&b, "tidegate_sink_records_total{sink=\"%s\",outcome=\"retry\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->records_retry));
		sb_printf(&b, "tidegate_sink_records_total{sink=\"%s\",outcome=\"dead\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->records_dead));
	}
	sb_printf(&b, "# HELP tidegate_sink_reads_total Outbox batch reads per sink (a sink waiting to fill a batch reads it again now and then).\n# TYPE tidegate_sink_reads_total counter\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_reads_total{sink=\"%s\"} %" PRIu64 "\n", s->name, atomic_load(&s->reads));
	}
	sb_printf(&b, "# HELP tidegate_sink_settle_errors_total Delivered batches whose outbox bookkeeping failed and was retried.\n# TYPE tidegate_sink_settle_errors_total counter\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_settle_errors_total{sink=\"%s\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->settle_errors));
	}
	sb_printf(&b, "# HELP tidegate_sink_send_errors_total Sends that failed as a whole (upstream down, refused connection or credentials); the reason is last_error in /healthz and in the log.\n# TYPE tidegate_sink_send_errors_total counter\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_send_errors_total{sink=\"%s\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->send_errors));
	}
	sb_printf(&b, "# HELP tidegate_sink_probe_recoveries_total Backoffs ended early because the probe saw the sink's endpoint refuse and then accept connections again (the uplink came back).\n# TYPE tidegate_sink_probe_recoveries_total counter\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_probe_recoveries_total{sink=\"%s\"} %" PRIu64 "\n", s->name,
			  atomic_load(&s->probe_recoveries));
	}
	sb_printf(&b, "# HELP tidegate_sink_up 0 while sends to the sink fail, 1 otherwise (also before the first send).\n# TYPE tidegate_sink_up gauge\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_up{sink=\"%s\",type=\"%s\"} %d\n", s->name, s->type, atomic_load(&s->up));
	}
	sink_health_gauges(&b, d);
	const metrics_rule_counters *rs = d->rules;
	counter(&b, "tidegate_rules_evaluated_total", "Rules whose FROM matched a message.", atomic_load(&rs->evaluated));
	counter(&b, "tidegate_rules_matched_total", "Rules whose WHERE held.", atomic_load(&rs->matched));
	counter(&b, "tidegate_rules_actions_total", "Rule actions run.", atomic_load(&rs->actions));
	counter(&b, "tidegate_rules_action_errors_total",
		"Rule actions that failed, including republishes the broker refused (the rule's errorAction ran).",
		atomic_load(&rs->action_errors));
	counter(&b, "tidegate_rules_eval_errors_total", "Runtime errors evaluating rule SQL.", atomic_load(&rs->eval_errors));
	counter(&b, "tidegate_republished_rule_total",
		"Rule republishes and alert notifications the broker accepted (QoS 1: acknowledged; QoS 0: sent).",
		atomic_load(&rs->republished));
	if (d->sh) {
		const shadow_stats *ss = shadow_stats_of(d->sh);
		counter(&b, "tidegate_shadow_requests_total", "Shadow requests received (update, get, delete).",
			atomic_load(&ss->requests));
		counter(&b, "tidegate_shadow_accepted_total", "Shadow requests answered on .../accepted.",
			atomic_load(&ss->accepted));
		sb_printf(&b, "# HELP tidegate_shadow_rejected_total Shadow requests answered on .../rejected, by code.\n"
			      "# TYPE tidegate_shadow_rejected_total counter\n");
		for (int i = 0; i < SHADOW_CODE__COUNT; i++)
			sb_printf(&b, "tidegate_shadow_rejected_total{code=\"%d\"} %" PRIu64 "\n", SHADOW_CODES[i],
				  atomic_load(&ss->rejected_by[i]));
		counter(&b, "tidegate_shadow_deltas_total", "/delta messages published.", atomic_load(&ss->deltas));
		counter(&b, "tidegate_shadow_records_total", "Shadow changes recorded for the sinks (table shadows).",
			atomic_load(&ss->records));
		counter(&b, "tidegate_shadow_responses_published_total", "Shadow responses published.",
			atomic_load(&ss->published));
		counter(&b, "tidegate_shadow_publish_errors_total", "Shadow responses that could not be published.",
			atomic_load(&ss->publish_errors));
		counter(&b, "tidegate_shadow_responses_dropped_total", "Shadow responses dropped with a rolled-back group.",
			atomic_load(&ss->dropped));
		gauge(&b, "tidegate_shadows", "Shadows stored (classic and named).", atomic_load(&ss->live));
		gauge(&b, "tidegate_shadow_responses_waiting", "Shadow responses held until their group commits.",
		      atomic_load(&ss->waiting));
	}
	counter(&b, "tidegate_rules_reloads_total", "Successful rule reloads.", atomic_load(d->reloads));
	counter(&b, "tidegate_rules_reload_failures_total", "Reloads refused because the new set was invalid.",
		atomic_load(d->reload_failures));
	sb_printf(&b,
		  "# HELP tidegate_rules_reload_seconds Compile time of the rules folder at the last (re)load.\n"
		  "# TYPE tidegate_rules_reload_seconds gauge\ntidegate_rules_reload_seconds %.6f\n"
		  "# HELP tidegate_rules_reload_max_seconds Longest compile of the rules folder since start; a reload "
		  "compiles beside the ingest loop, which only swaps the result in.\n"
		  "# TYPE tidegate_rules_reload_max_seconds gauge\ntidegate_rules_reload_max_seconds %.6f\n"
		  "# HELP tidegate_rules_reload_cpu_seconds CPU time of the last reload's compile (its thread).\n"
		  "# TYPE tidegate_rules_reload_cpu_seconds gauge\ntidegate_rules_reload_cpu_seconds %.6f\n"
		  "# HELP tidegate_rules_reload_swap_max_seconds Longest stop of the ingest loop to swap a reloaded set in.\n"
		  "# TYPE tidegate_rules_reload_swap_max_seconds gauge\ntidegate_rules_reload_swap_max_seconds %.6f\n",
		  (double)atomic_load(d->reload_us_last) / 1e6, (double)atomic_load(d->reload_us_max) / 1e6,
		  (double)atomic_load(d->reload_cpu_us_last) / 1e6, (double)atomic_load(d->reload_swap_us_max) / 1e6);
	if (d->con) {
		char *more = ops_console_metrics(d->con);
		if (more)
			sb_printf(&b, "%s", more);
		free(more);
	}
	return b.p;
}

/* Ready to take traffic: the outbox is open, the rules are loaded (when there is a rules
 * folder) and the broker session is up. */
static char *render_ready(const metrics_src *d, int *status)
{
	sbuf b = {0};
	int outbox_open = d->ob != NULL;
	int rules_loaded = d->rules_loaded ? d->rules_loaded(d->ud) : 1;
	int connected = d->br && broker_stats_get(d->br)->connected;
	int ready = outbox_open && rules_loaded && connected;
	*status = ready ? 200 : 503;
	sb_printf(&b, "{\"ready\":%s,\"outbox_open\":%s,\"rules_loaded\":%s,\"broker_connected\":%s}\n",
		  ready ? "true" : "false", outbox_open ? "true" : "false", rules_loaded ? "true" : "false",
		  connected ? "true" : "false");
	return b.p;
}

/* /healthz: "ok" (200) when connected to the broker and no sink is degraded, else
 * "degraded" (503) with the reasons; /api/status: the same body, always 200. The thresholds
 * and what degraded means: forwarder_health, docs/config-reference.md. */
/* s as a JSON string literal (sink errors carry upstream text: quotes, backslashes). */
static void json_str(sbuf *b, const char *s)
{
	sb_printf(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c < 0x20)
			sb_printf(b, "\\u%04x", c);
		else
			sb_printf(b, "%c", c);
	}
	sb_printf(b, "\"");
}

static char *render_health(const metrics_src *d, int *status)
{
	sbuf b = {0};
	const broker_stats *bs = broker_stats_get(d->br);
	size_t n = forwarder_nsinks(d->fw);
	forwarder_health *h = calloc(n ? n : 1, sizeof *h);
	if (!h)
		return NULL;
	int64_t now = tg_wall_ms();
	int healthy = bs->connected;
	for (size_t i = 0; i < n; i++) {
		forwarder_health_of(d->fw, i, now, &h[i]);
		healthy &= h[i].healthy;
	}
	*status = healthy ? 200 : 503;
	sb_printf(&b, "{\"status\":\"%s\",\"broker_connected\":%s,\"outbox_rows\":%" PRId64 ",\"problems\":[",
		  healthy ? "ok" : "degraded", bs->connected ? "true" : "false", atomic_load(&outbox_counters_of(d->ob)->rows));
	int np = 0;
	if (!bs->connected)
		sb_printf(&b, "\"broker: not connected\""), np++;
	for (size_t i = 0; i < n; i++)
		if (!h[i].healthy)
			sb_printf(&b, "%s\"sink %s: %s\"", np++ ? "," : "", forwarder_stats(d->fw, i)->name, h[i].why);
	sb_printf(&b, "],\"sinks\":[");
	for (size_t i = 0; i < n; i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b,
			  "%s{\"name\":\"%s\",\"type\":\"%s\",\"state\":\"%s\",\"healthy\":%s,\"up\":%s,"
			  "\"records_ok\":%" PRIu64 ",\"backlog_rows\":%" PRId64 ",\"backlog_bytes\":%" PRId64
			  ",\"oldest_undelivered_s\":%.3f,\"failing_s\":%.3f,\"last_error\":",
			  i ? "," : "", s->name, s->type, h[i].state, h[i].healthy ? "true" : "false",
			  atomic_load(&s->up) ? "true" : "false", atomic_load(&s->records_ok), h[i].backlog_rows,
			  h[i].backlog_bytes, (double)h[i].oldest_age_ms / 1000.0, (double)h[i].failing_ms / 1000.0);
		char why[256];
		int64_t at = forwarder_last_error(d->fw, i, why, sizeof why);
		json_str(&b, why);
		sb_printf(&b, ",\"last_error_ms\":%" PRId64 "}", at);
	}
	sb_printf(&b, "]}\n");
	free(h);
	return b.p;
}

char *metrics_render(const metrics_src *d, const char *path, int *status, const char **content_type)
{
	if (strcmp(path, "/metrics") == 0) {
		*content_type = "text/plain; version=0.0.4";
		return render_metrics(d);
	}
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/api/status") == 0) {
		*content_type = "application/json";
		char *body = render_health(d, status);
		if (strcmp(path, "/api/status") == 0)
			*status = 200; /* a status report, not a probe */
		return body;
	}
	if (strcmp(path, "/readyz") == 0) {
		*content_type = "application/json";
		return render_ready(d, status);
	}
	return NULL;
}

int metrics_http(void *ud, const http_req *req, http_resp *r)
{
	const metrics_src *d = ud;
	if (d->con)
		return ops_console_handle(d->con, req, r);
	const char *m = http_req_method(req);
	if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
		return http_resp_error(r, 405, "method_not_allowed", "only GET (the console API needs [http] token_file)");
	int status = 200;
	const char *ctype = "text/plain; charset=utf-8";
	char *body = metrics_render(d, http_req_path(req), &status, &ctype);
	if (!body)
		return 1;
	r->body = body;
	r->len = strlen(body);
	r->status = status;
	r->content_type = ctype;
	return 0;
}
