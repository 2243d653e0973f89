/*
 * shadow/shadow_cli.c — see shadow_cli.h. The MQTT exchange runs on libmosquitto's own
 * blocking loop with a deadline; the request is published only after the SUBACK, so the
 * answer cannot pass before the subscription exists, and it is matched by clientToken.
 */
#include "shadow/shadow_cli.h"

#include <getopt.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/timefmt.h"
#include "edge/schema.h"
#include "shadow/shadow_doc.h"
#include "shadow/shadow_store.h"
#include "sinks/registry.h"

#define DEFAULT_CONFIG "/etc/tidegate/tidegate.conf"

typedef struct exchange {
	const char *token;
	char accepted[512], rejected[512];
	int connected, conn_rc, sub_mid, subscribed, sub_refused, outcome; /* 1 accepted, 2 rejected */
	char *answer;
} exchange;

static void usage(FILE *out)
{
	fputs("usage: tidegate shadow [-c FILE] COMMAND ...\n"
	      "  get THING [--name SHADOW]\n"
	      "  update THING [--name SHADOW] (--desired JSON | --reported JSON | --document JSON) [--version N]\n"
	      "  delete THING [--name SHADOW] [--version N]\n"
	      "  list [THING] [--json] [--db FILE]\n"
	      "get/update/delete ask the running daemon over MQTT (the broker and the gateway's\n"
	      "certificate from the config's [broker] section); list reads the outbox database\n"
	      "(<data_dir>/outbox.db, or --db) read-only. Options: -c/--config FILE (default " DEFAULT_CONFIG
	      "), --timeout SECONDS (default 10).\n",
	      out);
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
	exchange *x = ud;
	x->conn_rc = rc;
	x->connected = rc == 0 ? 1 : -1;
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
			 const mosquitto_property *props)
{
	exchange *x = ud;
	if (mid != x->sub_mid)
		return;
	for (int i = 0; i < n; i++)
		if (granted[i] >= 0x80)
			x->sub_refused = 1;
	x->subscribed = 1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	exchange *x = ud;
	int acc = strcmp(msg->topic, x->accepted) == 0, rej = strcmp(msg->topic, x->rejected) == 0;
	if ((!acc && !rej) || x->outcome)
		return;
	json_t *doc = json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL);
	const char *tok = json_string_value(json_object_get(doc, "clientToken"));
	if (tok && strcmp(tok, x->token) == 0) {
		x->outcome = acc ? 1 : 2;
		x->answer = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	}
	json_decref(doc);
}

/* Loop until *flag is set (non-zero) or the deadline passes. 0 or TG_ENET / TG_ERETRY. */
static int wait_for(struct mosquitto *m, const int *flag, int64_t deadline)
{
	while (!*flag) {
		if (tg_mono_ms() > deadline)
			return TG_ERETRY;
		int rc = mosquitto_loop(m, 50, 1);
		if (rc != MOSQ_ERR_SUCCESS && !*flag)
			return TG_ENET;
	}
	return 0;
}

/* Send one request and wait for its answer; prints it. Returns the exit status. */
static int ask(const tg_config *cfg, const char *topic, const char *op, json_t *body, int timeout_s)
{
	exchange x = {0};
	char token[64];
	snprintf(token, sizeof token, "tidegate-cli-%ld-%lld", (long)getpid(), (long long)tg_wall_ms());
	x.token = token;
	snprintf(x.accepted, sizeof x.accepted, "%s/%s/accepted", topic, op);
	snprintf(x.rejected, sizeof x.rejected, "%s/%s/rejected", topic, op);
	char req_topic[512];
	snprintf(req_topic, sizeof req_topic, "%s/%s", topic, op);
	if (json_object_set_new(body, "clientToken", json_string(token)))
		return 1;
	char *payload = json_dumps(body, JSON_COMPACT);
	char cid[64];
	snprintf(cid, sizeof cid, "tidegate-shadow-cli-%ld", (long)getpid());
	int status = 1, rc;
	int64_t deadline = tg_mono_ms() + (int64_t)timeout_s * 1000;
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new(cid, true, &x);
	if (!m || !payload) {
		fprintf(stderr, "tidegate shadow: out of memory\n");
		goto out;
	}
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_connect_v5_callback_set(m, on_connect);
	mosquitto_subscribe_v5_callback_set(m, on_subscribe);
	mosquitto_message_v5_callback_set(m, on_message);
	if (cfg->broker_tls && (rc = mosquitto_tls_set(m, cfg->ca_file, NULL, cfg->cert_file, cfg->key_file, NULL))) {
		fprintf(stderr, "tidegate shadow: TLS files (ca_file=%s cert_file=%s): %s\n", cfg->ca_file, cfg->cert_file,
			mosquitto_strerror(rc));
		goto out;
	}
	if (cfg->broker_tls)
		mosquitto_tls_opts_set(m, 1, "tlsv1.2", NULL);
	if ((rc = mosquitto_connect_bind_v5(m, cfg->broker_host, (int)cfg->broker_port, 30, NULL, NULL)) ||
	    wait_for(m, &x.connected, deadline) || x.connected < 0) {
		fprintf(stderr, "tidegate shadow: cannot connect to the broker at %s:%lld: %s\n", cfg->broker_host,
			(long long)cfg->broker_port,
			x.connected < 0 ? mosquitto_reason_string(x.conn_rc) : mosquitto_strerror(rc ? rc : MOSQ_ERR_NO_CONN));
		goto out;
	}
	char *subs[2] = {x.accepted, x.rejected};
	if (mosquitto_subscribe_multiple(m, &x.sub_mid, 2, subs, 1, 0, NULL) || wait_for(m, &x.subscribed, deadline) ||
	    x.sub_refused) {
		fprintf(stderr, "tidegate shadow: the broker refused the subscription to %s (the identity in cert_file needs "
				"$aws/things/+/shadow/# in the ACL or its policy)\n",
			x.accepted);
		goto out;
	}
	if ((rc = mosquitto_publish_v5(m, NULL, req_topic, (int)strlen(payload), payload, 1, false, NULL))) {
		fprintf(stderr, "tidegate shadow: publish to %s failed: %s\n", req_topic, mosquitto_strerror(rc));
		goto out;
	}
	if (wait_for(m, &x.outcome, deadline)) {
		fprintf(stderr, "tidegate shadow: no answer on %s within %d s (is the daemon running with [shadow] enabled?)\n",
			x.accepted, timeout_s);
		goto out;
	}
	printf("%s\n", x.answer ? x.answer : "{}");
	if (x.outcome == 2) {
		json_t *doc = json_loads(x.answer ? x.answer : "{}", 0, NULL);
		fprintf(stderr, "tidegate shadow: rejected: %lld %s\n", (long long)json_integer_value(json_object_get(doc, "code")),
			json_string_value(json_object_get(doc, "message")) ? json_string_value(json_object_get(doc, "message")) : "");
		json_decref(doc);
	}
	status = x.outcome == 1 ? 0 : 1;
	mosquitto_disconnect_v5(m, 0, NULL);
	mosquitto_loop(m, 50, 1);
out:
	free(x.answer);
	free(payload);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return status;
}

static int print_item(void *ud, const shadow_list_item *it)
{
	int json = *(int *)ud;
	char when[32];
	timefmt_format_rfc3339(it->updated_ms, when, sizeof when);
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I}", "thing", it->thing, "shadow", it->name, "version",
				      (json_int_t)it->version, "updated_at", when, "state_bytes", (json_int_t)it->state_bytes);
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("%-32s %-24s %8lld  %s  %6lld\n", it->thing, it->name[0] ? it->name : "(classic)", (long long)it->version,
		       when, (long long)it->state_bytes);
	}
	return 0;
}

static int list(const char *db, const char *thing, int json)
{
	char err[512];
	shadow_store *st = shadow_store_open_ro(db, err, sizeof err);
	if (!st) {
		fprintf(stderr, "tidegate shadow: %s\n", err);
		return 1;
	}
	if (!json)
		printf("%-32s %-24s %8s  %-24s  %6s\n", "THING", "SHADOW", "VERSION", "UPDATED", "BYTES");
	int rc = shadow_store_list(st, thing, print_item, &json);
	shadow_store_close(st);
	if (rc < 0) {
		fprintf(stderr, "tidegate shadow: reading %s failed\n", db);
		return 1;
	}
	return 0;
}

/* --desired/--reported/--document: the update request's body. */
static json_t *update_body(const char *desired, const char *reported, const char *document)
{
	json_error_t e;
	if (!!desired + !!reported + !!document != 1 && !(desired && reported && !document)) {
		fprintf(stderr, "tidegate shadow: update needs --desired and/or --reported, or --document\n");
		return NULL;
	}
	if (document) {
		json_t *d = json_loads(document, 0, &e);
		if (!json_is_object(d))
			fprintf(stderr, "tidegate shadow: --document: %s\n", d ? "not a JSON object" : e.text);
		return json_is_object(d) ? d : (json_decref(d), NULL);
	}
	json_t *state = json_object(), *body = json_pack("{s:o}", "state", state);
	const char *vals[2] = {desired, reported}, *keys[2] = {"desired", "reported"};
	for (int i = 0; i < 2 && body; i++) {
		if (!vals[i])
			continue;
		json_t *v = json_loads(vals[i], JSON_DECODE_ANY, &e);
		if (!v) {
			fprintf(stderr, "tidegate shadow: --%s: %s (line %d, column %d)\n", keys[i], e.text, e.line, e.column);
			json_decref(body);
			return NULL;
		}
		json_object_set_new(state, keys[i], v);
	}
	return body;
}

int shadow_cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"name", required_argument, NULL, 'n'},
		{"desired", required_argument, NULL, 'D'}, {"reported", required_argument, NULL, 'R'},
		{"document", required_argument, NULL, 'd'}, {"version", required_argument, NULL, 'v'},
		{"timeout", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
		{"db", required_argument, NULL, 'b'},      {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config = DEFAULT_CONFIG, *name = "", *desired = NULL, *reported = NULL, *document = NULL, *db = NULL;
	long long version = -1;
	int timeout_s = 10, json = 0, opt;
	optind = 0; /* glibc: 0 re-initialises getopt fully */
	while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		char *end;
		switch (opt) {
		case 'c': config = optarg; break;
		case 'n': name = optarg; break;
		case 'D': desired = optarg; break;
		case 'R': reported = optarg; break;
		case 'd': document = optarg; break;
		case 'j': json = 1; break;
		case 'b': db = optarg; break;
		case 'v':
			version = strtoll(optarg, &end, 10);
			if (*end || version < 0) {
				fprintf(stderr, "tidegate shadow: --version: not a non-negative integer: %s\n", optarg);
				return 2;
			}
			break;
		case 't':
			timeout_s = (int)strtol(optarg, &end, 10);
			if (*end || timeout_s <= 0) {
				fprintf(stderr, "tidegate shadow: --timeout: not a positive number of seconds: %s\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	const char *cmd = optind < argc ? argv[optind] : NULL;
	const char *thing = optind + 1 < argc ? argv[optind + 1] : NULL;
	if (!cmd || optind + 2 < argc || (strcmp(cmd, "list") != 0 && !thing)) {
		usage(stderr);
		return 2;
	}
	char err[1024];
	tg_config *cfg = NULL;
	if (strcmp(cmd, "list") != 0 || !db) {
		if (!(cfg = config_load(config, sink_types_all(), err, sizeof err))) {
			fprintf(stderr, "tidegate shadow: %s\n", err);
			return 1;
		}
	}
	int status = 2;
	if (strcmp(cmd, "list") == 0) {
		status = list(db ? db : cfg->outbox_path, thing, json);
		goto out;
	}
	/* the same names the service accepts, checked here so a typo is a usage error */
	char topic[512];
	snprintf(topic, sizeof topic, "$aws/things/%s/shadow%s%s/get", thing, name[0] ? "/name/" : "", name);
	shadow_topic t;
	shadow_error e;
	if (shadow_topic_parse(topic, &t, &e) != 1) {
		fprintf(stderr, "tidegate shadow: %s\n", e.message);
		goto out;
	}
	topic[strlen(topic) - 4] = '\0'; /* the prefix; ask() adds the operation */
	json_t *body = NULL;
	const char *op = cmd;
	if (strcmp(cmd, "get") == 0 || strcmp(cmd, "delete") == 0) {
		body = json_object();
	} else if (strcmp(cmd, "update") == 0) {
		if (!(body = update_body(desired, reported, document)))
			goto out;
	} else {
		fprintf(stderr, "tidegate shadow: unknown command '%s'\n", cmd);
		usage(stderr);
		goto out;
	}
	if (version >= 0 && strcmp(cmd, "get") != 0)
		json_object_set_new(body, "version", json_integer(version));
	status = body ? ask(cfg, topic, op, body, timeout_s) : 1;
	json_decref(body);
out:
	config_free(cfg);
	return status;
}
