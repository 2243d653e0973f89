/*
 * rules_cli.c — `tidegate rules check DIR|FILE...` and `tidegate rules test FILE ...`.
 *
 * check compiles a folder (or files) exactly as the daemon would and prints every error
 * as file:line:col: message, exiting 1 if there is any. test compiles one rule file and
 * evaluates it against one message given on the command line (or stdin), printing the
 * SELECT output and what each action would do, with no side effect: the action callback
 * only prints. Both are thin wrappers over the public API so what they say is what the
 * daemon does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "rules/rules.h"
#include "rules/rules_int.h"

#define ERRBUF (64 * 1024)

static void usage(FILE *f)
{
	fprintf(f, "usage: tidegate rules check DIR|FILE...\n"
		   "       tidegate rules test FILE --topic TOPIC [--payload JSON] [--client-id ID]\n"
		   "                              [--thing NAME] [--principal P] [--timestamp MS]\n"
		   "       (without --payload the payload is read from stdin)\n");
}

static int cli_check(int argc, char **argv)
{
	int bad = 0;
	size_t total = 0;
	char *err = malloc(ERRBUF);
	if (!err)
		return 1;
	if (argc < 2) {
		usage(stderr);
		free(err);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat sb;
		rules_set *rs;
		if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode))
			rs = rules_load_dir(argv[i], NULL, err, ERRBUF);
		else
			rs = rules_load_file(argv[i], NULL, err, ERRBUF);
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
	char *p = a->payload ? json_dumps(a->payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	fprintf(out, "%s%s %s:", a->rule, a->is_error_action ? " errorAction" : "", rules_action_kind_name(a->kind));
	switch (a->kind) {
	case RULES_ACT_REPUBLISH: fprintf(out, " topic=%s qos=%d", a->topic, a->qos); break;
	case RULES_ACT_SINK: fprintf(out, " sink=%s table=%s partitionKey=%s", a->sink, a->table, a->pkey); break;
	case RULES_ACT_ALERT:
		fprintf(out, " name=%s condition=%s topic=%s", a->alert_name, cond_name(a->alert_cond), a->topic);
		break;
	case RULES_ACT_WEBHOOK: fprintf(out, " url=%s", a->url); break;
	}
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

static int cli_test(int argc, char **argv)
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
	rs = rules_load_file(file, NULL, err, ERRBUF);
	if (!rs) {
		fputs(err, stderr);
		rc = 1;
		goto out;
	}
	j = json_loadb(payload, plen, 0, NULL);
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
		printf("no match: topic '%s' does not match the rule's FROM filter\n", topic);
	else if (st.eval_errors)
		printf("evaluation error (see log)\n");
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

int rules_cli_main(int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[0], "check") == 0)
		return cli_check(argc, argv);
	if (strcmp(argv[0], "test") == 0)
		return cli_test(argc, argv);
	usage(stderr);
	return 2;
}
