/*
 * preflight.c — see preflight.h. Each check reads what the daemon's start-up would read,
 * through the same functions (rules_load_dir, schema_load_dir, aggregate_load_file, each
 * sink type's check op), so the two cannot drift apart; nothing is created or opened for
 * writing.
 */
#include "preflight.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "edge/aggregate.h"
#include "edge/schema.h"
#include "rules/rules.h"
#include "store/sink.h"

#define LOAD_ERRBUF (64 * 1024)

typedef struct pf {
	const tg_config *c;
	char *err;
	size_t errlen;
	int n;
} pf;

static void add(pf *p, const char *section, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(pf *p, const char *section, const char *key, const char *fmt, ...)
{
	char where[4200], msg[2048];
	config_where(p->c, section, key, where, sizeof where);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	tg_adderr(p->err, p->errlen, TG_EINVAL, "%s: %s", where, msg);
	p->n++;
}

/* Error lines of a loader (one "file:line:col: message" each) joined to ours. */
static void add_lines(pf *p, char *lines)
{
	for (char *save = NULL, *l = strtok_r(lines, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		tg_adderr(p->err, p->errlen, TG_EINVAL, "%s", l);
		p->n++;
	}
}

const char **preflight_sink_names(const tg_config *c)
{
	const char **names = calloc(c->nsinks + 1, sizeof *names);
	for (size_t i = 0; names && i < c->nsinks; i++)
		names[i] = c->sinks[i].name;
	return names;
}

static void check_sinks(pf *p)
{
	for (size_t i = 0; i < p->c->nsinks; i++) {
		const tg_sink_conf *sc = &p->c->sinks[i];
		const char *key = NULL;
		char why[1024], section[300];
		if (!sink_conf_ops(sc)->check || sink_conf_ops(sc)->check(sc->opts, &key, why, sizeof why) == 0)
			continue;
		snprintf(section, sizeof section, "sink %s", sc->name);
		add(p, section, key, "[sink %s] %s", sc->name, why);
	}
}

static void check_tls(pf *p)
{
	if (!p->c->broker_tls)
		return;
	const struct {
		const char *key, *path;
	} files[] = {{"ca_file", p->c->ca_file}, {"cert_file", p->c->cert_file}, {"key_file", p->c->key_file}};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		if (!files[i].path || !*files[i].path)
			continue; /* config_load said so */
		FILE *f = fopen(files[i].path, "r");
		if (f) {
			fclose(f);
			continue;
		}
		char what[4200];
		snprintf(what, sizeof what, "%s: %s", files[i].path, strerror(errno));
		add(p, "broker", files[i].key, "[broker] %s: cannot read %s", files[i].key, what);
	}
}

/* data_dir exists as a writable folder, or its nearest existing parent is one (the daemon
 * creates the rest). */
static void check_data_dir(pf *p)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s", p->c->data_dir);
	for (;;) {
		struct stat st;
		if (stat(path, &st) == 0) {
			if (!S_ISDIR(st.st_mode))
				add(p, "", "data_dir", "data_dir: %s is not a folder", path);
			else if (access(path, W_OK | X_OK) != 0)
				add(p, "", "data_dir", "data_dir: cannot write in %s: %s", path, strerror(errno));
			return;
		}
		char *slash = strrchr(path, '/');
		if (!slash || slash == path)
			return; /* relative or up to "/": nothing more to learn */
		*slash = '\0';
	}
}

static int is_dir(pf *p, const char *key, const char *path, int want_dir)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		char what[4200];
		snprintf(what, sizeof what, "%s: %s", path, strerror(errno));
		add(p, "ingest", key, "[ingest] %s: cannot read %s", key, what);
		return 0;
	}
	if ((S_ISDIR(st.st_mode) ? 1 : 0) != want_dir) {
		add(p, "ingest", key, "[ingest] %s: %s %s", key, path, want_dir ? "is not a folder" : "is a folder, not a file");
		return 0;
	}
	return 1;
}

static int emit_nothing(void *ud, const aggregate_window *w) { return 0; }

static void check_loaders(pf *p)
{
	const tg_config *c = p->c;
	char *buf = malloc(LOAD_ERRBUF);
	const char **names = preflight_sink_names(c);
	if (!buf || !names) {
		tg_adderr(p->err, p->errlen, TG_ENOMEM, "%s: out of memory", c->path);
		p->n++;
		goto out;
	}
	if (c->rules_dir && *c->rules_dir && is_dir(p, "rules_dir", c->rules_dir, 1)) {
		rules_env env = {.sink_names = names};
		buf[0] = '\0';
		rules_set *rs = rules_load_dir(c->rules_dir, &env, buf, LOAD_ERRBUF);
		if (!rs)
			add_lines(p, buf);
		rules_set_free(rs);
	}
	if (c->schemas_dir && *c->schemas_dir && is_dir(p, "schemas_dir", c->schemas_dir, 1)) {
		buf[0] = '\0';
		schema_set *ss = schema_load_dir(c->schemas_dir, buf, LOAD_ERRBUF);
		if (!ss)
			add_lines(p, buf);
		schema_set_free(ss);
	}
	if (c->aggregates_file && *c->aggregates_file && is_dir(p, "aggregates_file", c->aggregates_file, 0)) {
		buf[0] = '\0';
		aggregate_set *as = aggregate_load_file(c->aggregates_file, emit_nothing, NULL, buf, LOAD_ERRBUF);
		if (!as)
			add_lines(p, buf);
		aggregate_free(as);
	}
out:
	free(names);
	free(buf);
}

int preflight_check(const tg_config *c, char *err, size_t errlen)
{
	pf p = {c, err, errlen, 0};
	if (err && errlen)
		err[0] = '\0';
	check_sinks(&p);
	check_tls(&p);
	if (c->http_port > 0) {
		struct in_addr a;
		if (inet_pton(AF_INET, c->http_bind, &a) != 1)
			add(&p, "http", "bind", "[http] bind: '%s' is not an IPv4 address", c->http_bind);
	}
	check_data_dir(&p);
	check_loaders(&p);
	return p.n ? TG_EINVAL : 0;
}
