/*
 * config.c — table-driven INI-style configuration (see config.h for the format).
 *
 * The daemon's options live in tables below, one per section. A [sink NAME] section is
 * parsed with the core sink keys (type, batch and retry tuning) and then the sink type's
 * own table, found through sink_ops_find(); since `type` decides which table applies,
 * it must come first in the section. Errors carry file:line:col of the offending token.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sinks/sink.h"

#define OFF(f) offsetof(tg_config, f)

static const char *const full_policies[] = {"drop_oldest", "reject_new", NULL};

static const config_option top_options[] = {
	{"gateway_id", CFG_STRING, "gw-01", 0, 0, OFF(gateway_id), 0,
	 "Identity of this gateway; prefixes every msg_id and lake/S3 object name.", NULL},
	{"data_dir", CFG_STRING, "/var/lib/tidegate", 0, 0, OFF(data_dir), 0,
	 "Folder for the outbox, quarantine and registry databases unless given explicitly.", NULL},
	{"log_level", CFG_STRING, "info", 0, 0, OFF(log_level), 0, "debug, info, warn or error.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option broker_options[] = {
	{"host", CFG_STRING, "127.0.0.1", 0, 0, OFF(broker_host), 0, "Broker host.", NULL},
	{"port", CFG_INT, "8883", 1, 65535, OFF(broker_port), 0, "Broker port.", NULL},
	{"client_id", CFG_STRING, "tidegate-gateway", 0, 0, OFF(client_id), 0,
	 "MQTT client id; with clean_start off the broker keeps our session and queued QoS 1 messages.", NULL},
	{"tls", CFG_BOOL, "true", 0, 0, OFF(broker_tls), 0, "Use TLS (mutual TLS with cert_file/key_file).", NULL},
	{"ca_file", CFG_STRING, NULL, 0, 0, OFF(ca_file), 0, "CA bundle that signed the broker's certificate.", NULL},
	{"cert_file", CFG_STRING, NULL, 0, 0, OFF(cert_file), 0, "The gateway's client certificate (PEM).", NULL},
	{"key_file", CFG_STRING, NULL, 0, 0, OFF(key_file), CFG_SECRET, "The gateway's private key (PEM).", NULL},
	{"keepalive", CFG_DURATION, "30s", 5000, 3600000, OFF(keepalive_s), 0, "MQTT keepalive.", NULL},
	{"subscribe", CFG_STRING, "devices/+/telemetry", 0, 0, OFF(subscribe), 0,
	 "Comma-separated topic filters to subscribe to.", NULL},
	{"qos", CFG_INT, "1", 0, 1, OFF(sub_qos), 0, "Subscription QoS.", NULL},
	{"clean_start", CFG_BOOL, "false", 0, 0, OFF(clean_start), 0,
	 "Start a fresh session (false keeps a persistent session across reconnects).", NULL},
	{"reconnect_min", CFG_DURATION, "250ms", 10, 600000, OFF(reconnect_min_ms), 0, "First reconnect delay.", NULL},
	{"reconnect_max", CFG_DURATION, "10s", 100, 3600000, OFF(reconnect_max_ms), 0, "Reconnect delay cap.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option ingest_options[] = {
	{"max_payload", CFG_SIZE, "128k", 16, 16 << 20, OFF(max_payload), 0,
	 "Payloads larger than this are quarantined (reason too_large); IoT Core's limit is 128 KiB.", NULL},
	{"max_depth", CFG_INT, "32", 1, 1024, OFF(max_depth), 0, "Maximum JSON nesting depth.", NULL},
	{"rules_dir", CFG_STRING, "", 0, 0, OFF(rules_dir), 0, "Folder of rule files (*.json); empty: no rules.", NULL},
	{"schemas_dir", CFG_STRING, "", 0, 0, OFF(schemas_dir), 0, "Folder of schema files; empty: no schemas.", NULL},
	{"aggregates_file", CFG_STRING, "", 0, 0, OFF(aggregates_file), 0,
	 "Windowed aggregates configuration (JSON, see docs/schemas.md); empty: no aggregates.", NULL},
	{"dedupe_window", CFG_DURATION, "10m", 0, 86400000, OFF(dedupe_window_ms), 0,
	 "A second (thing, ts) within this window is a duplicate: counted and quarantined. 0 = off.", NULL},
	{"dedupe_per_thing", CFG_INT, "256", 1, 65536, OFF(dedupe_per_thing), 0,
	 "Timestamps remembered per thing for dedupe.", NULL},
	{"dedupe_max_things", CFG_INT, "100000", 1, 10000000, OFF(dedupe_max_things), 0,
	 "Things tracked for dedupe (least recently seen forgotten first).", NULL},
	{"enrich", CFG_BOOL, "false", 0, 0, OFF(enrich), 0,
	 "Add the thing's registry attributes to each record as \"attributes\".", NULL},
	{"watch_rules", CFG_BOOL, "true", 0, 0, OFF(rules_watch), 0, "Reload rules when files in rules_dir change (inotify); SIGHUP always reloads.", NULL},
	{"quarantine_topic", CFG_STRING, "errors", 0, 0, OFF(quarantine_topic), 0,
	 "Rejected messages are also republished to <quarantine_topic>/<thing>; empty: off.", NULL},
	{"default_sinks", CFG_STRING, "lake", 0, 0, OFF(default_sinks), 0,
	 "Comma-separated sinks that receive every accepted record, raw archive style (empty: only rule sink actions route).",
	 NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option outbox_options[] = {
	{"path", CFG_STRING, "", 0, 0, OFF(outbox_path), 0, "Outbox database; default <data_dir>/outbox.db.", NULL},
	{"commit_interval", CFG_DURATION, "5ms", 1, 10000, OFF(commit_interval_ms), 0,
	 "Group commit: commit at the latest this long after the first uncommitted record.", NULL},
	{"commit_max_records", CFG_INT, "500", 1, 100000, OFF(commit_max_records), 0,
	 "Group commit: commit after this many records.", NULL},
	{"max_bytes", CFG_SIZE, "1G", 0, INT64_MAX, OFF(outbox_max_bytes), 0,
	 "Cap on the outbox's files on disk: database + WAL + WAL index (0 = none). full_policy acts on it.", NULL},
	{"wal_max_bytes", CFG_SIZE, "64M", 1048576, INT64_MAX, OFF(outbox_wal_max_bytes), 0,
	 "Bound on the write-ahead log (at most a quarter of max_bytes is used); part of max_bytes.", NULL},
	{"max_rows", CFG_INT, "0", 0, INT64_MAX, OFF(outbox_max_rows), 0, "Cap on queued records (0 = none).", NULL},
	{"full_policy", CFG_ENUM, "drop_oldest", 0, 0, OFF(outbox_full_policy), 0,
	 "When a cap is reached: drop_oldest (lowest priority first) or reject_new.", full_policies},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option http_options[] = {
	{"bind", CFG_STRING, "127.0.0.1", 0, 0, OFF(http_bind), 0, "Ops HTTP address (loopback by default).", NULL},
	{"port", CFG_INT, "0", 0, 65535, OFF(http_port), 0, "Ops HTTP port for /metrics /healthz /readyz /api and the console page; 0 = off.", NULL},
	{"token_file", CFG_STRING, "", 0, 0, OFF(http_token_file), 0,
	 "File holding the API's bearer token (`tidegate token new FILE`, mode 0600). Set: the console (API under /api/, "
	 "event stream, page at /, recent-data retention) is on and every path but /healthz, /readyz and the page's files "
	 "needs `Authorization: Bearer <token>`, /metrics too. Empty: only /metrics /healthz /readyz /api/status, open.",
	 NULL},
	{"tls_cert_file", CFG_STRING, "", 0, 0, OFF(http_tls_cert_file), 0,
	 "Serve HTTPS with this certificate (PEM, e.g. from the site PKI); with tls_key_file. Use it when bind is not loopback.",
	 NULL},
	{"tls_key_file", CFG_STRING, "", 0, 0, OFF(http_tls_key_file), CFG_SECRET, "Private key (PEM) of tls_cert_file.", NULL},
	{"www_dir", CFG_STRING, "", 0, 0, OFF(http_www_dir), 0,
	 "Folder of the console page's files; empty: <prefix>/share/tidegate/www beside the installed binary.", NULL},
	{"max_body", CFG_SIZE, "256k", 1024, 16 << 20, OFF(http_max_body), 0,
	 "Largest request body; a larger one is refused with 413.", NULL},
	{"max_connections", CFG_INT, "32", 2, 1024, OFF(http_max_connections), 0,
	 "Concurrent HTTP connections (one thread each; an open event stream holds one).", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option retention_options[] = {
	{"period", CFG_DURATION, "24h", 0, 31LL * 86400000, OFF(retention_period_ms), 0,
	 "Keep accepted device records this long for the console's latest/series/query views (0 = off). Needs [http] token_file.",
	 NULL},
	{"max_bytes", CFG_SIZE, "256M", 1048576, INT64_MAX, OFF(retention_max_bytes), 0,
	 "Cap on the record text kept; the oldest records go first.", NULL},
	{"path", CFG_STRING, "", 0, 0, OFF(retention_path), 0, "Retention database; default <data_dir>/retention.db.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

static const config_option registry_options[] = {
	{"path", CFG_STRING, "", 0, 0, OFF(registry_path), 0, "Device registry database; default <data_dir>/registry.db.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

#undef OFF
#define SOFF(f) offsetof(tg_sink_conf, f)
static const config_option sink_core_options[] = {
	{"batch_max_records", CFG_INT, "0", 0, 100000, SOFF(batch_max_records), 0,
	 "Records per send (0 = the sink type's own limit).", NULL},
	{"retry_base", CFG_DURATION, "200ms", 1, 3600000, SOFF(retry_base_ms), 0, "Backoff base (full jitter).", NULL},
	{"retry_cap", CFG_DURATION, "30s", 1, 86400000, SOFF(retry_cap_ms), 0, "Backoff cap.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
#undef SOFF

static const struct {
	const char *name;
	const config_option *table;
} sections[] = {
	{"", top_options},           {"broker", broker_options}, {"ingest", ingest_options},
	{"outbox", outbox_options},  {"http", http_options},     {"registry", registry_options},
	{"retention", retention_options},
};

/* ---- value parsing ---------------------------------------------------------------- */

int config_parse_size(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return TG_EINVAL;
	while (*end == ' ')
		end++;
	double mul = 1;
	switch (tolower((unsigned char)*end)) {
	case '\0': break;
	case 'k': mul = 1024.0; end++; break;
	case 'm': mul = 1024.0 * 1024; end++; break;
	case 'g': mul = 1024.0 * 1024 * 1024; end++; break;
	default: return TG_EINVAL;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return TG_EINVAL;
	if (v * mul > 9.2e18)
		return TG_EINVAL;
	*out = (int64_t)(v * mul);
	return 0;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return TG_EINVAL;
	double mul;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mul = 60000;
	else if (strcmp(end, "h") == 0)
		mul = 3600000;
	else if (strcmp(end, "d") == 0)
		mul = 86400000;
	else
		return TG_EINVAL;
	*out = (int64_t)(v * mul + 0.5);
	return 0;
}

static int parse_bool(const char *v, int *out)
{
	static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return *out = 1, 0;
		if (strcasecmp(v, no[i]) == 0)
			return *out = 0, 0;
	}
	return TG_EINVAL;
}

static const config_option *find_opt(const config_option *t, const char *key)
{
	for (; t && t->name; t++)
		if (strcmp(t->name, key) == 0)
			return t;
	return NULL;
}

int config_table_set(const config_option *table, void *base, const char *key, const char *value,
		     char *err, size_t errlen)
{
	const config_option *o = find_opt(table, key);
	if (!o)
		return tg_seterr(err, errlen, TG_ENOTFOUND, "unknown option '%s'", key);
	char *p = (char *)base + o->offset;
	int64_t iv = 0;
	int rc = 0;
	switch (o->type) {
	case CFG_STRING: {
		char *dup = strdup(value);
		if (!dup)
			return TG_ENOMEM;
		free(*(char **)p);
		*(char **)p = dup;
		return 0;
	}
	case CFG_BOOL:
		if (parse_bool(value, (int *)p))
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s': expected true or false, got '%s'", key, value);
		return 0;
	case CFG_DOUBLE: {
		char *end;
		double d = strtod(value, &end);
		if (end == value || *end)
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s': expected a number, got '%s'", key, value);
		*(double *)p = d;
		return 0;
	}
	case CFG_ENUM:
		for (int i = 0; o->enum_values[i]; i++)
			if (strcmp(o->enum_values[i], value) == 0)
				return *(int *)p = i, 0;
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': '%s' is not one of the allowed values", key, value);
	case CFG_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(value, &end, 10);
		if (end == value || *end || errno)
			rc = TG_EINVAL;
		iv = v;
		break;
	}
	case CFG_SIZE: rc = config_parse_size(value, &iv); break;
	case CFG_DURATION: rc = config_parse_duration_ms(value, &iv); break;
	}
	if (rc)
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': cannot parse '%s' as %s", key, value,
				 o->type == CFG_INT ? "an integer" : o->type == CFG_SIZE ? "a size (e.g. 64k, 16M)"
											: "a duration (e.g. 250ms, 5s, 2m)");
	if ((o->min || o->max) && (iv < o->min || iv > o->max))
		return tg_seterr(err, errlen, TG_EINVAL, "option '%s': %" PRId64 " is outside %" PRId64 "..%" PRId64,
				 key, iv, o->min, o->max);
	*(int64_t *)p = iv;
	return 0;
}

int config_table_defaults(const config_option *table, void *base, char *err, size_t errlen)
{
	for (const config_option *o = table; o && o->name; o++) {
		if (!o->def)
			continue;
		int rc = config_table_set(table, base, o->name, o->def, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int config_table_check(const config_option *table, const void *base, char *err, size_t errlen)
{
	for (const config_option *o = table; o && o->name; o++) {
		if (!(o->flags & CFG_REQUIRED))
			continue;
		const char *p = (const char *)base + o->offset;
		if (o->type == CFG_STRING && (!*(char *const *)p || !**(char *const *)p))
			return tg_seterr(err, errlen, TG_EINVAL, "option '%s' is required", o->name);
	}
	return 0;
}

void config_table_free(const config_option *table, void *base)
{
	if (!base)
		return;
	for (const config_option *o = table; o && o->name; o++)
		if (o->type == CFG_STRING) {
			char **p = (char **)((char *)base + o->offset);
			free(*p);
			*p = NULL;
		}
}

static void value_text(const config_option *o, const void *base, char *buf, size_t len)
{
	const char *p = (const char *)base + o->offset;
	switch (o->type) {
	case CFG_STRING: {
		const char *s = *(char *const *)p;
		snprintf(buf, len, "%s", (o->flags & CFG_SECRET) && s && *s ? "<redacted>" : s ? s : "");
		break;
	}
	case CFG_BOOL: snprintf(buf, len, "%s", *(const int *)p ? "true" : "false"); break;
	case CFG_DOUBLE: snprintf(buf, len, "%g", *(const double *)p); break;
	case CFG_ENUM: snprintf(buf, len, "%s", o->enum_values[*(const int *)p]); break;
	case CFG_DURATION: snprintf(buf, len, "%" PRId64 "ms", *(const int64_t *)p); break;
	default: snprintf(buf, len, "%" PRId64, *(const int64_t *)p); break;
	}
}

void config_table_print(const config_option *table, const void *base, FILE *out)
{
	char buf[1024];
	for (const config_option *o = table; o && o->name; o++) {
		value_text(o, base, buf, sizeof buf);
		fprintf(out, "%s = %s\n", o->name, buf);
	}
}

void config_table_reference(const char *section, const config_option *table, FILE *out)
{
	static const char *tn[] = {"string", "integer", "bool", "number", "size", "duration", "enum"};
	fprintf(out, "\n### %s\n\n| key | type | default | help |\n|---|---|---|---|\n", section);
	for (const config_option *o = table; o && o->name; o++) {
		fprintf(out, "| `%s` | %s%s | %s | %s", o->name, tn[o->type],
			o->flags & CFG_REQUIRED ? ", required" : "", o->def && *o->def ? o->def : "—", o->help);
		if (o->type == CFG_ENUM) {
			fprintf(out, " One of:");
			for (int i = 0; o->enum_values[i]; i++)
				fprintf(out, " `%s`", o->enum_values[i]);
			fprintf(out, ".");
		}
		if (o->flags & CFG_SECRET)
			fprintf(out, " (secret: redacted when printed)");
		fprintf(out, " |\n");
	}
}

/* ---- file parsing ----------------------------------------------------------------- */

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static void sink_conf_free(tg_sink_conf *sc)
{
	if (!sc)
		return;
	if (sc->ops && sc->opts) {
		if (sc->ops->options_free)
			sc->ops->options_free(sc->opts);
		config_table_free(sc->ops->options, sc->opts);
	}
	free(sc->opts);
	free(sc->name);
}

void config_free(tg_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		config_table_free(sections[i].table, c);
	for (size_t i = 0; i < c->nsinks; i++)
		sink_conf_free(&c->sinks[i]);
	free(c->sinks);
	for (size_t i = 0; i < c->ndefault_sinks; i++)
		free(c->default_sink_list[i]);
	free(c->default_sink_list);
	free(c->path);
	free(c);
}

static char *join_path(const char *dir, const char *file)
{
	size_t n = strlen(dir) + strlen(file) + 2;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, file);
	return p;
}

/* Fill derived defaults that depend on other options. */
static int finish(tg_config *c, char *err, size_t errlen)
{
	if (!*c->outbox_path) {
		free(c->outbox_path);
		if (!(c->outbox_path = join_path(c->data_dir, "outbox.db")))
			return TG_ENOMEM;
	}
	if (!*c->retention_path) {
		free(c->retention_path);
		if (!(c->retention_path = join_path(c->data_dir, "retention.db")))
			return TG_ENOMEM;
	}
	if (!!*c->http_tls_cert_file != !!*c->http_tls_key_file)
		return tg_seterr(err, errlen, TG_EINVAL, "%s: [http] tls_cert_file and tls_key_file go together", c->path);
	if (!*c->registry_path) {
		free(c->registry_path);
		if (!(c->registry_path = join_path(c->data_dir, "registry.db")))
			return TG_ENOMEM;
	}
	if (tg_log_level_parse(c->log_level) < 0)
		return tg_seterr(err, errlen, TG_EINVAL, "%s: option 'log_level': '%s' is not debug, info, warn or error",
				 c->path, c->log_level);
	if (c->broker_tls && (!c->ca_file || !c->cert_file || !c->key_file))
		return tg_seterr(err, errlen, TG_EINVAL,
				 "%s: [broker] tls is on: ca_file, cert_file and key_file are required", c->path);
	char *list = strdup(c->default_sinks), *save = NULL;
	if (!list)
		return TG_ENOMEM;
	for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (!config_sink(c, tok)) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [ingest] default_sinks: '%s' is not a configured [sink %s] section",
				  c->path, tok, tok);
			free(list);
			return TG_EINVAL;
		}
		char **nl = realloc(c->default_sink_list, (c->ndefault_sinks + 2) * sizeof *nl);
		if (!nl || !(nl[c->ndefault_sinks] = strdup(tok))) {
			if (nl)
				c->default_sink_list = nl;
			free(list);
			return TG_ENOMEM;
		}
		c->default_sink_list = nl;
		nl[++c->ndefault_sinks] = NULL;
	}
	free(list);
	if (c->reconnect_max_ms < c->reconnect_min_ms)
		c->reconnect_max_ms = c->reconnect_min_ms;
	return 0;
}

const tg_sink_conf *config_sink(const tg_config *c, const char *name)
{
	for (size_t i = 0; i < c->nsinks; i++)
		if (strcmp(c->sinks[i].name, name) == 0)
			return &c->sinks[i];
	return NULL;
}

static int start_sink(tg_config *c, const char *name, char *err, size_t errlen)
{
	for (size_t i = 0; i < c->nsinks; i++)
		if (strcmp(c->sinks[i].name, name) == 0)
			return tg_seterr(err, errlen, TG_EINVAL, "sink '%s' is defined twice", name);
	tg_sink_conf *n = realloc(c->sinks, (c->nsinks + 1) * sizeof *n);
	if (!n)
		return TG_ENOMEM;
	c->sinks = n;
	tg_sink_conf *sc = &c->sinks[c->nsinks++];
	memset(sc, 0, sizeof *sc);
	if (!(sc->name = strdup(name)))
		return TG_ENOMEM;
	sc->priority_first = 1;
	return config_table_defaults(sink_core_options, sc, err, errlen);
}

static int sink_set(tg_sink_conf *sc, const char *key, const char *value, char *err, size_t errlen)
{
	if (strcmp(key, "type") == 0) {
		if (sc->ops)
			return tg_seterr(err, errlen, TG_EINVAL, "sink '%s': type given twice", sc->name);
		sc->ops = sink_ops_find(value);
		if (!sc->ops) {
			char list[256] = "";
			for (const sink_ops *const *o = sink_ops_all(); *o; o++) {
				strncat(list, " ", sizeof list - strlen(list) - 1);
				strncat(list, (*o)->type, sizeof list - strlen(list) - 1);
			}
			return tg_seterr(err, errlen, TG_EINVAL, "sink '%s': unknown type '%s' (known:%s)", sc->name, value, list);
		}
		if (!(sc->opts = calloc(1, sc->ops->options_size ? sc->ops->options_size : 1)))
			return TG_ENOMEM;
		return config_table_defaults(sc->ops->options, sc->opts, err, errlen);
	}
	int rc = config_table_set(sink_core_options, sc, key, value, err, errlen);
	if (rc != TG_ENOTFOUND)
		return rc;
	if (!sc->ops)
		return tg_seterr(err, errlen, TG_EINVAL, "sink '%s': 'type' must come before '%s'", sc->name, key);
	rc = config_table_set(sc->ops->options, sc->opts, key, value, err, errlen);
	if (rc == TG_ENOTFOUND)
		return tg_seterr(err, errlen, TG_EINVAL, "unknown option '%s' for sink type %s", key, sc->ops->type);
	return rc;
}

tg_config *config_load(const char *path, char *err, size_t errlen)
{
	char msg[512];
	tg_config *c = calloc(1, sizeof *c);
	FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0;
	if (!c || !(c->path = strdup(path)))
		goto oom;
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		if (config_table_defaults(sections[i].table, c, msg, sizeof msg)) {
			tg_seterr(err, errlen, TG_EINVAL, "built-in default: %s", msg);
			goto fail;
		}
	if (!(f = fopen(path, "r"))) {
		tg_seterr(err, errlen, TG_EIO, "%s: cannot open: %s", path, strerror(errno));
		goto fail;
	}
	const config_option *table = top_options;
	tg_sink_conf *cur_sink = NULL;
	int lineno = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (lineno == 1 && n >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0)
			memmove(line, line + 3, (size_t)n - 2);
		char *s = trim(line);
		int col = (int)(s - line) + 1;
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			if (!close || *trim(close + 1)) {
				tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: malformed section header", path, lineno, col);
				goto fail;
			}
			*close = '\0';
			char *name = trim(s + 1);
			cur_sink = NULL;
			table = NULL;
			if (strncmp(name, "sink", 4) == 0 && isspace((unsigned char)name[4])) {
				char *sname = trim(name + 5);
				if (!*sname || strpbrk(sname, " \t/\"")) {
					tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: sink name must be one word", path, lineno, col);
					goto fail;
				}
				if (start_sink(c, sname, msg, sizeof msg)) {
					tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: %s", path, lineno, col, msg);
					goto fail;
				}
				cur_sink = &c->sinks[c->nsinks - 1];
				continue;
			}
			for (size_t i = 1; i < sizeof sections / sizeof sections[0]; i++)
				if (strcmp(name, sections[i].name) == 0)
					table = sections[i].table;
			if (!table) {
				tg_seterr(err, errlen, TG_EPARSE,
					  "%s:%d:%d: unknown section [%s] (known: broker, ingest, outbox, http, registry, retention, sink NAME)",
					  path, lineno, col, name);
				goto fail;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq) {
			tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: expected 'key = value'", path, lineno, col);
			goto fail;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		int vcol = (int)(value - line) + 1;
		/* allow "quoted values" so leading/trailing blanks and # can be expressed */
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
			value[vl - 1] = '\0';
			value++;
		}
		int rc;
		if (cur_sink) {
			rc = sink_set(cur_sink, key, value, msg, sizeof msg);
			if (rc && rc != TG_ENOMEM) {
				int kcol = strncmp(msg, "unknown option", 14) == 0 ? col : vcol;
				tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: [sink %s] %s", path, lineno, kcol, cur_sink->name, msg);
				goto fail;
			}
		} else {
			rc = config_table_set(table, c, key, value, msg, sizeof msg);
			if (rc == TG_ENOTFOUND) {
				tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: %s", path, lineno, col, msg);
				goto fail;
			}
			if (rc && rc != TG_ENOMEM) {
				tg_seterr(err, errlen, TG_EPARSE, "%s:%d:%d: %s", path, lineno, vcol, msg);
				goto fail;
			}
		}
		if (rc == TG_ENOMEM)
			goto oom;
	}
	for (size_t i = 0; i < c->nsinks; i++) {
		tg_sink_conf *sc = &c->sinks[i];
		if (!sc->ops) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [sink %s] has no 'type'", path, sc->name);
			goto fail;
		}
		if (config_table_check(sc->ops->options, sc->opts, msg, sizeof msg)) {
			tg_seterr(err, errlen, TG_EINVAL, "%s: [sink %s] %s", path, sc->name, msg);
			goto fail;
		}
	}
	if (finish(c, err, errlen))
		goto fail;
	free(line);
	fclose(f);
	return c;
oom:
	tg_seterr(err, errlen, TG_ENOMEM, "%s: out of memory", path);
fail:
	free(line);
	if (f)
		fclose(f);
	config_free(c);
	return NULL;
}

void config_print(const tg_config *c, FILE *out)
{
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
		if (*sections[i].name)
			fprintf(out, "\n[%s]\n", sections[i].name);
		config_table_print(sections[i].table, c, out);
	}
	for (size_t i = 0; i < c->nsinks; i++) {
		const tg_sink_conf *sc = &c->sinks[i];
		fprintf(out, "\n[sink %s]\ntype = %s\n", sc->name, sc->ops->type);
		config_table_print(sink_core_options, sc, out);
		config_table_print(sc->ops->options, sc->opts, out);
	}
}

void config_reference(FILE *out)
{
	fprintf(out, "# tidegate configuration reference\n\n"
		     "Generated by `tidegate config-reference` from the option tables in the code.\n"
		     "Sizes take k/M/G suffixes (binary); durations take ms/s/m/h/d (a bare number is ms).\n");
	for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
		config_table_reference(*sections[i].name ? sections[i].name : "top level (before any section)",
				       sections[i].table, out);
	config_table_reference("sink NAME (every type)", sink_core_options, out);
	for (const sink_ops *const *o = sink_ops_all(); *o; o++) {
		char title[64];
		snprintf(title, sizeof title, "sink NAME, type = %s", (*o)->type);
		config_table_reference(title, (*o)->options, out);
	}
}
