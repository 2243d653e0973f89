/*
 * rules_cli.c — `tidegate rules check [-c CONFIG] [DIR|FILE...]` and
 * `tidegate rules test [-c CONFIG] FILE|DIR ...`.
 *
 * check compiles a folder (or files) exactly as the daemon would and prints every error
 * as file:line:col: message, exiting 1 if there is any. With a configuration it checks
 * the sink names of sink actions against it, as the daemon does at start and reload (and,
 * with no folder named, checks the configuration's rules_dir); without one it says that
 * sink names went unchecked. test compiles one rule file (or every rule of a folder) and
 * evaluates it against one message given on the command line (or stdin), printing the
 * SELECT output and what each action would do, with no side effect: the action callback
 * only prints. A payload the daemon would quarantine before the rules (not JSON, not an
 * object, too deep, too large) is reported as such, with the reader's position. JSON is
 * written by jsonout, the daemon's writer, so numbers print as the daemon publishes them.
 * Both are thin wrappers over the public API so what they say is what the daemon does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/jsonout.h"
#include "edge/schema.h"
#include "rules/rules.h"
#include "rules/rules_int.h"

#define ERRBUF (64 * 1024)

static void usage(FILE *f)
{
	fprintf(f, "usage: tidegate rules check [-c CONFIG] [DIR|FILE...]\n"
		   "       tidegate rules test [-c CONFIG] FILE|DIR --topic TOPIC [--payload JSON] [--client-id ID]\n"
		   "                              [--thing NAME] [--principal P] [--timestamp MS]\n"
		   "       (without --payload the payload is read from stdin; -c CONFIG checks sink names\n"
		   "        against the daemon's configuration, and check without DIR checks its rules_dir)\n");
}

static int is_dir(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The rules of a folder or of one file, loaded as the daemon loads them. */
static rules_set *load(const char *path, const rules_cli_conf *conf, char *err, size_t errlen)
{
	rules_env env = {.sink_names = conf ? conf->sink_names : NULL};
	return is_dir(path) ? rules_load_dir(path, &env, err, errlen) : rules_load_file(path, &env, err, errlen);
}

static int cli_check(int argc, char **argv, const rules_cli_conf *conf)
{
	int bad = 0;
	size_t total = 0;
	char *dflt[] = {argv[0], conf ? (char *)conf->rules_dir : NULL};
	if (argc < 2 && conf && conf->rules_dir && *conf->rules_dir) {
		argv = dflt;
		argc = 2;
	}
	if (argc < 2) {
		if (conf)
			fprintf(stderr, "rules check: %s has no [ingest] rules_dir; name a folder or file\n", conf->path);
		usage(stderr);
		return 2;
	}
	char *err = malloc(ERRBUF);
	if (!err)
		return 1;
	for (int i = 1; i < argc; i++) {
		err[0] = '\0';
		rules_set *rs = load(argv[i], conf, err, ERRBUF);
		if (!rs) {
			fputs(err, stderr);
			if (err[0] && err[strlen(err) - 1] != '\n')
				fputc('\n', stderr);
			bad = 1;
			continue;
		}
		total += rules_count(rs);
		rules_set_free(rs);
	}
	if (!bad)
		printf("%zu rule%s OK\n", total, total == 1 ? "" : "s");
	if (conf)
		printf("sink names checked against %s\n", conf->path);
	else
		fprintf(stderr, "rules check: warning: sink names were not checked (no -c CONFIG given); the daemon "
				"refuses a sink action naming a sink its configuration does not have\n");
	free(err);
	return bad;
}

static const char *cond_name(rules_alert_cond c)
{
	return c == RULES_ALERT_RAISE ? "raise" : c == RULES_ALERT_CLEAR ? "clear" : "none";
}

static int print_action(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	FILE *out = ud;
	char *p = a->payload ? jsonout_dumps(a->payload) : NULL;
	fprintf(out, "%s%s %s:", a->rule, a->is_error_action ? " errorAction" : "", rules_action_kind_name(a->kind));
	switch (a->kind) {
	case RULES_ACT_REPUBLISH: fprintf(out, " topic=%s qos=%d", a->topic, a->qos); break;
	case RULES_ACT_SINK: fprintf(out, " sink=%s table=%s partitionKey=%s", a->sink, a->table, a->pkey); break;
	case RULES_ACT_ALERT:
		fprintf(out, " name=%s condition=%s topic=%s", a->alert_name, cond_name(a->alert_cond), a->topic);
		break;
	case RULES_ACT_WEBHOOK: fprintf(out, " url=%s", a->url); break;
	}
	/* the headers as the action's parameters give them, templates expanded */
	const json_t *h = a->params && (a->kind == RULES_ACT_REPUBLISH || a->kind == RULES_ACT_WEBHOOK)
				  ? json_object_get(a->params, "headers")
				  : NULL;
	char *ht = h ? jsonout_dumps(h) : NULL;
	if (ht)
		fprintf(out, " headers=%s", ht);
	free(ht);
	fprintf(out, " payload=%s\n", p ? p : "(none)");
	free(p);
	return 0;
}

static char *read_stdin(size_t *n)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		size_t k = fread(buf + len, 1, cap - len, stdin);
		len += k;
		if (k == 0)
			break;
		if (len == cap) {
			if (cap >= (16u << 20))
				break;
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (buf)
		*n = len;
	return buf;
}

static int cli_test(int argc, char **argv, const rules_cli_conf *conf)
{
	const char *file = NULL, *topic = NULL, *payload = NULL, *client = NULL, *thing = NULL, *principal = NULL;
	long long ts = 0;
	char *owned = NULL, *err = NULL;
	char thingbuf[256];
	int rc = 2;
	rules_set *rs = NULL;
	json_t *j = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--topic") == 0 && v)
			topic = argv[++i];
		else if (strcmp(a, "--payload") == 0 && v)
			payload = argv[++i];
		else if (strcmp(a, "--client-id") == 0 && v)
			client = argv[++i];
		else if (strcmp(a, "--thing") == 0 && v)
			thing = argv[++i];
		else if (strcmp(a, "--principal") == 0 && v)
			principal = argv[++i];
		else if (strcmp(a, "--timestamp") == 0 && v)
			ts = strtoll(argv[++i], NULL, 10);
		else if (a[0] != '-' && !file)
			file = a;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!file || !topic) {
		usage(stderr);
		return 2;
	}
	size_t plen;
	if (payload) {
		plen = strlen(payload);
	} else {
		owned = read_stdin(&plen);
		if (!owned) {
			fprintf(stderr, "rules test: cannot read the payload from stdin\n");
			return 1;
		}
		payload = owned;
	}
	err = malloc(ERRBUF);
	if (!err)
		goto out;
	err[0] = '\0';
	int folder = is_dir(file);
	rs = load(file, conf, err, ERRBUF);
	if (!rs) {
		fprintf(stderr, "%s\n", err);
		rc = 1;
		goto out;
	}
	/* the daemon's own reader and limits: what it would quarantine never reaches a rule */
	schema_limits lim = {.max_bytes = conf ? conf->max_payload : 0, .max_depth = conf ? conf->max_depth : 0};
	schema_reject why = {0};
	if (!(j = schema_parse_payload(payload, plen, &lim, &why, NULL))) {
		fprintf(stderr, "rules test: the payload would be quarantined before any rule runs (reason %s%s%s): %s\n",
			schema_reason_name(why.reason), why.field[0] ? ", field " : "", why.field, why.text);
		rc = 1;
		goto out;
	}
	if (!thing) {
		/* like the daemon before identities exist: the topic's second level */
		const char *s = strchr(topic, '/');
		thingbuf[0] = '\0';
		if (s) {
			const char *e = strchr(s + 1, '/');
			size_t n = e ? (size_t)(e - s - 1) : strlen(s + 1);
			if (n < sizeof thingbuf) {
				memcpy(thingbuf, s + 1, n);
				thingbuf[n] = '\0';
			}
		}
		thing = thingbuf;
	}
	if (!ts) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		ts = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	}
	tg_msg m = {
		.topic = topic,
		.thing = thing,
		.client_id = client ? client : thing,
		.principal = principal ? principal : thing,
		.payload = payload,
		.payloadlen = plen,
		.json = j,
		.received_ms = ts,
		.qos = 1,
	};
	rules_stats st = {0};
	int n = rules_eval(rs, &m, print_action, stdout, &st);
	if (n < 0) {
		fprintf(stderr, "rules test: evaluation failed\n");
		rc = 1;
		goto out;
	}
	if (st.evaluated == 0)
		printf("no match: topic '%s' does not match %s FROM filter\n", topic, folder ? "any rule's" : "the rule's");
	else if (st.eval_errors)
		printf("evaluation error (see log)\n");
	else if (n == 0 && folder)
		printf("no match: WHERE did not hold for the %llu rule%s whose FROM matched\n",
		       (unsigned long long)st.evaluated, st.evaluated == 1 ? "" : "s");
	else if (n == 0)
		printf("no match: WHERE did not hold\n");
	rc = 0;
out:
	json_decref(j);
	rules_set_free(rs);
	free(err);
	free(owned);
	return rc;
}

int rules_cli_main(int argc, char **argv, const rules_cli_conf *conf)
{
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[0], "check") == 0)
		return cli_check(argc, argv, conf);
	if (strcmp(argv[0], "test") == 0)
		return cli_test(argc, argv, conf);
	usage(stderr);
	return 2;
}
