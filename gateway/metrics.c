/*
 * metrics.c — renders the daemon's counters for the ops HTTP endpoint: Prometheus text
 * on /metrics, a JSON health verdict on /healthz and a JSON status on /api/status. Reads
 * only atomics and plain counters; never blocks the ingest thread.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

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

static char *render_metrics(tg_daemon *d)
{
	sbuf b = {0};
	ingest_stats *is = ingest_stats_of(d->ig);
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
	counter(&b, "tidegate_alerts_raised_total", "Alerts raised.", atomic_load(&is->alerts_raised));
	counter(&b, "tidegate_alerts_cleared_total", "Alerts cleared.", atomic_load(&is->alerts_cleared));
	counter(&b, "tidegate_alerts_suppressed_total", "Alert notifications suppressed by rateLimitSeconds.",
		atomic_load(&is->alerts_suppressed));
	counter(&b, "tidegate_messages_rejected_full_total", "Messages refused because the outbox was full (reject_new).",
		atomic_load(&is->rejected_full));
	gauge(&b, "tidegate_outbox_rows", "Rows queued in the outbox (all sinks).", atomic_load(&oc->rows));
	gauge(&b, "tidegate_outbox_bytes", "Payload bytes queued in the outbox.", atomic_load(&oc->bytes));
	counter(&b, "tidegate_outbox_appended_total", "Rows committed to the outbox.", atomic_load(&oc->appended));
	counter(&b, "tidegate_outbox_commits_total", "Group commits.", atomic_load(&oc->commits));
	counter(&b, "tidegate_outbox_dropped_total", "Rows dropped by drop_oldest.", atomic_load(&oc->dropped));
	counter(&b, "tidegate_outbox_dropped_alerts_total", "Alert rows dropped by drop_oldest.", atomic_load(&oc->dropped_alerts));
	counter(&b, "tidegate_outbox_delivered_total", "Rows delivered and deleted.", atomic_load(&oc->delivered));
	counter(&b, "tidegate_outbox_dead_total", "Rows moved to dead letters.", atomic_load(&oc->dead));
	gauge(&b, "tidegate_broker_connected", "1 while connected to the broker.", bs->connected);
	counter(&b, "tidegate_broker_connects_total", "Successful broker connects.", bs->connects);
	counter(&b, "tidegate_republished_total", "Messages published to the broker.", bs->published);
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
	sb_printf(&b, "# HELP tidegate_sink_up 1 when the last send to the sink succeeded.\n# TYPE tidegate_sink_up gauge\n");
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		sb_printf(&b, "tidegate_sink_up{sink=\"%s\",type=\"%s\"} %d\n", s->name, s->type, atomic_load(&s->up));
	}
	ingest_rule_stats *rs = ingest_rule_stats_of(d->ig);
	counter(&b, "tidegate_rules_evaluated_total", "Rules whose FROM matched a message.", atomic_load(&rs->evaluated));
	counter(&b, "tidegate_rules_matched_total", "Rules whose WHERE held.", atomic_load(&rs->matched));
	counter(&b, "tidegate_rules_actions_total", "Rule actions run.", atomic_load(&rs->actions));
	counter(&b, "tidegate_rules_action_errors_total", "Rule actions that failed (errorAction ran).",
		atomic_load(&rs->action_errors));
	counter(&b, "tidegate_rules_eval_errors_total", "Runtime errors evaluating rule SQL.", atomic_load(&rs->eval_errors));
	counter(&b, "tidegate_republished_rule_total", "Messages republished by rule actions.", atomic_load(&rs->republished));
	counter(&b, "tidegate_rules_reloads_total", "Successful rule reloads.", atomic_load(&d->reloads));
	counter(&b, "tidegate_rules_reload_failures_total", "Reloads refused because the new set was invalid.",
		atomic_load(&d->reload_failures));
	return b.p;
}

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

static char *render_health(tg_daemon *d, int *status)
{
	sbuf b = {0};
	const broker_stats *bs = broker_stats_get(d->br);
	*status = bs->connected ? 200 : 503;
	sb_printf(&b, "{\"status\":\"%s\",\"broker_connected\":%s,\"outbox_rows\":%" PRId64 ",\"sinks\":[",
		  bs->connected ? "ok" : "degraded", bs->connected ? "true" : "false",
		  atomic_load(&outbox_counters_of(d->ob)->rows));
	for (size_t i = 0; i < forwarder_nsinks(d->fw); i++) {
		forwarder_sink_stats *s = forwarder_stats(d->fw, i);
		char why[256];
		int64_t at = forwarder_last_error(d->fw, i, why, sizeof why);
		sb_printf(&b, "%s{\"name\":\"%s\",\"type\":\"%s\",\"up\":%s,\"records_ok\":%" PRIu64 ",\"last_error\":",
			  i ? "," : "", s->name, s->type, atomic_load(&s->up) ? "true" : "false", atomic_load(&s->records_ok));
		json_str(&b, why);
		sb_printf(&b, ",\"last_error_ms\":%" PRId64 "}", at);
	}
	sb_printf(&b, "]}\n");
	return b.p;
}

char *metrics_render(void *daemon, const char *path, int *status, const char **content_type)
{
	tg_daemon *d = daemon;
	if (strcmp(path, "/metrics") == 0) {
		*content_type = "text/plain; version=0.0.4";
		return render_metrics(d);
	}
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/api/status") == 0) {
		*content_type = "application/json";
		return render_health(d, status);
	}
	return NULL;
}
