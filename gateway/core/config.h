/*
 * config.h — the daemon's configuration, read from one INI-style file.
 *
 *   # comment (also ; comment)
 *   gateway_id = gw-01
 *   [broker]
 *   host = 127.0.0.1          # a comment after a value: '#' or ';' after a blank
 *   [sink lake]
 *   type = file
 *   path = "/srv/lake #2"     # quoted: blanks and '#' kept; \" and \\ inside quotes
 *
 * Every option is declared once in a table of config_option {name, type, default, bounds,
 * offset, flags, help}: the same table sets defaults, parses and bounds-checks values,
 * rejects unknown keys with file:line:col, redacts secrets when printing and backs
 * `tidegate check-config` / `tidegate config-reference`. Sinks declare their own tables
 * (store/sink.h), handed to config_load() as a list of config_sink_type, which the
 * loader applies to `[sink NAME]` sections.
 *
 * config_load() reports every error of a file, one "file:line:col: message" line each:
 * syntax, unknown sections and keys, bad values, a key given twice (with both positions),
 * missing required options, and the checks across options that need nothing but the file
 * (default_sinks names, TLS files named, subscribe filters, ports, lake paths). The checks
 * that read other files (rules, schemas, TLS files, sink credentials) are preflight.h's,
 * which `run` and `check-config` both call.
 *
 * Ownership: config_load() returns a tg_config the caller owns; config_free() frees it
 * with every string and sink option struct inside.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
	CFG_STRING,   /* char *, strdup'ed */
	CFG_INT,      /* int64_t, bounds min..max */
	CFG_BOOL,     /* int, true/false/yes/no/on/off/1/0 */
	CFG_DOUBLE,   /* double */
	CFG_SIZE,     /* int64_t bytes: 512, 64k, 16M, 1G (binary units) */
	CFG_DURATION, /* int64_t milliseconds: 250ms, 5s, 2m, 1h; a bare number is ms */
	CFG_ENUM,     /* int index into enum_values */
} config_type;

enum { CFG_SECRET = 1 << 0, CFG_REQUIRED = 1 << 1 };

typedef struct config_option {
	const char *name;
	config_type type;
	const char *def;          /* default as text, NULL = none (0 / NULL) */
	int64_t min, max;         /* for INT/SIZE/DURATION; min == max == 0: unbounded */
	size_t offset;            /* offsetof(struct, field) */
	unsigned flags;
	const char *help;
	const char *const *enum_values; /* CFG_ENUM: NULL-terminated */
} config_option;

/* Apply every default of table to base. */
int config_table_defaults(const config_option *table, void *base, char *err, size_t errlen);
/* Parse one key=value against table into base. TG_ENOTFOUND for an unknown key. An enum
 * error lists the allowed values. */
int config_table_set(const config_option *table, void *base, const char *key, const char *value,
		     char *err, size_t errlen);
/* Check CFG_REQUIRED options are set. */
int config_table_check(const config_option *table, const void *base, char *err, size_t errlen);
/* Free every CFG_STRING of base (not base itself). */
void config_table_free(const config_option *table, void *base);
/* Print "key = value" lines, secrets redacted. */
void config_table_print(const config_option *table, const void *base, FILE *out);
/* Print a markdown reference of the table. */
void config_table_reference(const char *section, const config_option *table, FILE *out);

/* Copy s into out with the password (or the whole user part) of a URL's user info replaced
 * by <redacted>: http://user:pw@host/ -> http://user:<redacted>@host/. Other text unchanged. */
void config_redact_url(const char *s, char *out, size_t outlen);

/* Parse "64k" style sizes and "5s" style durations; 0 or TG_EINVAL. */
int config_parse_size(const char *s, int64_t *out);
int config_parse_duration_ms(const char *s, int64_t *out);

/* A kind of [sink NAME] section, told apart by its `type = NAME` line. The sink layer
 * describes each of its types with one (the first member of its sink_ops, store/sink.h) and
 * the caller hands config_load() the list, so this module knows no sink. */
typedef struct config_sink_type {
	const char *type;                 /* "file", "kinesis", "s3", … */
	const config_option *options;     /* NULL-name-terminated table */
	size_t options_size;              /* sizeof the options struct */
	void (*options_free)(void *opts); /* frees strings inside opts (not opts itself); may be NULL */
} config_sink_type;

typedef struct tg_sink_conf {
	char *name;
	const config_sink_type *type; /* NULL until its `type =` line was read */
	void *opts;       /* type->options_size bytes, parsed with type->options */
	int64_t batch_max_records; /* 0 = sink's own limit */
	int64_t retry_base_ms, retry_cap_ms;
	int64_t health_failing_ms, health_max_age_ms; /* /healthz thresholds (forwarder_health) */
	int priority_first; /* forward higher priority first (default on) */
	int builtin;        /* the lake made because default_sinks names it and no section does */
	int bad;            /* its section had an error: its keys are skipped */
} tg_sink_conf;

/* Where a key (or, key NULL, a section header) was read: for error messages. */
typedef struct config_pos {
	char *section; /* "" (top level), "broker", "sink lake", ... */
	char *key;     /* NULL for the section header */
	int line, col; /* col: of the value, or of the header */
	int refused;   /* the value was refused (checks that use it are skipped) */
} config_pos;

typedef struct tg_config {
	char *path;            /* file it was read from */
	char *gateway_id;
	char *data_dir;        /* outbox, quarantine, registry live here by default */
	int log_level;         /* enum tg_log_level (log.h) */
	/* [broker] */
	char *broker_host;
	int64_t broker_port;
	char *client_id;
	char *ca_file, *cert_file, *key_file;
	int broker_tls;
	int64_t keepalive_s;
	char *subscribe;       /* comma-separated topic filters */
	int64_t sub_qos;
	int clean_start;
	int64_t reconnect_min_ms, reconnect_max_ms;
	int broker_identity;   /* identity_mode (identity.h): 0 topic, 1 stamped */
	/* [ingest] */
	int64_t max_payload;
	int64_t max_depth;
	char *rules_dir;
	char *schemas_dir;
	int rules_watch;
	char *quarantine_topic; /* republish prefix for rejects, "" = off */
	char *aggregates_file;
	int64_t dedupe_window_ms, dedupe_per_thing, dedupe_max_things;
	int persist_edge_state;
	int enrich;
	int64_t log_repeat_interval_ms; /* quarantine and refused-publish lines: one per key and interval */
	/* [outbox] */
	char *outbox_path;
	int64_t commit_interval_ms;
	int64_t commit_max_records;
	int64_t outbox_max_bytes;
	int64_t outbox_wal_max_bytes;
	int64_t outbox_max_rows;
	int outbox_full_policy; /* 0 drop_oldest, 1 reject_new */
	/* [http] */
	char *http_bind;
	int64_t http_port;     /* 0 = off */
	char *http_token_file; /* "" = no console (API, page, retention) */
	char *http_tls_cert_file, *http_tls_key_file;
	char *http_www_dir;    /* "" = <prefix>/share/tidegate/www beside the binary */
	int64_t http_max_body;
	int64_t http_max_connections;
	/* [retention] recent telemetry for the console */
	int64_t retention_period_ms; /* 0 = off */
	int64_t retention_max_bytes;
	char *retention_path;
	/* [registry] */
	char *registry_path;
	/* [shadow] */
	int shadow_enabled;
	int64_t shadow_max_shadows;
	int64_t shadow_max_state_bytes;
	int64_t shadow_max_inflight;
	int64_t shadow_response_qos;
	int64_t shadow_documents_qos;
	int64_t shadow_tombstone_ms;
	/* [default] route when no rule claims a message */
	char *default_sinks;   /* comma-separated sinks every accepted record goes to; "" = none */
	char **default_sink_list; /* parsed from default_sinks, NULL-terminated */
	size_t ndefault_sinks;
	/* sinks */
	tg_sink_conf *sinks;
	size_t nsinks;
	const config_sink_type *const *sink_types; /* borrowed from config_load()'s caller */
	/* where each section and key was read */
	config_pos *pos;
	size_t npos;
} tg_config;

/* Load and validate a config file. On error NULL and every error found, one
 * "file:line:col: message" per line (no trailing newline), in err. */
tg_config *config_load(const char *path, const config_sink_type *const *sink_types, char *err, size_t errlen);
/* "file:line:col" where section/key was set (key NULL: the section header), or "file" when
 * the file does not set it (a default). */
void config_where(const tg_config *c, const char *section, const char *key, char *buf, size_t len);
void config_free(tg_config *c); /* NULL-safe */
void config_print(const tg_config *c, FILE *out); /* secrets redacted */
void config_reference(const config_sink_type *const *sink_types, FILE *out); /* markdown, every option */
const tg_sink_conf *config_sink(const tg_config *c, const char *name);

#endif
