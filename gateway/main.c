/*
 * main.c — the `tidegate` command: the daemon and its subcommands.
 *
 *   tidegate [run] -c FILE          run the gateway daemon
 *   tidegate check-config -c FILE   every check `run` makes before it starts (preflight.h);
 *                                   print the config with secrets redacted, or every error
 *   tidegate config-reference       print the configuration reference (markdown)
 *   tidegate rules check [-c FILE] [DIR]   validate a rules folder (file:line:col errors),
 *                                   sink names against the config with -c
 *   tidegate rules test [-c FILE] FILE|DIR --topic T [--payload JSON]   dry-run rules
 *   tidegate device register|activate|deactivate|revoke|list|show|set-attr ...
 *   tidegate shadow get|update|delete|list THING [--name N] ...
 *   tidegate token new FILE         write a random API bearer token (mode 0600)
 *   tidegate version
 *
 * Signal handlers only set flags; the daemon loop reads them.
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "daemon.h"
#include "ops/token.h"
#include "preflight.h"
#include "registry/registry_cli.h"
#include "rules/rules.h"
#include "shadow/shadow_cli.h"
#include "sinks/registry.h"
#include "store/sink.h"

/* ingest (the main arena), the WAL checkpointer, the forwarders, the console ticker, the HTTP
 * listener and a few HTTP connections, each with an arena of its own */
#define MALLOC_ARENAS 8

/* The version has one home, the top entry of packaging/debian/changelog; the Makefile
 * passes it in, so `tidegate version` and the package version cannot differ. */
#ifndef TIDEGATE_VERSION
#error "TIDEGATE_VERSION is not defined: build with the Makefile"
#endif

static volatile sig_atomic_t g_stop, g_reload;

static void on_stop(int sig) { g_stop = 1; }
static void on_hup(int sig) { g_reload = 1; }

static void usage(FILE *out)
{
	fprintf(out, "usage: tidegate [run] -c FILE\n"
		     "       tidegate check-config -c FILE\n"
		     "       tidegate config-reference\n"
		     "       tidegate rules check [-c FILE] [DIR|FILE...]\n"
		     "       tidegate rules test [-c FILE] FILE|DIR --topic T [--payload JSON]\n"
		     "       tidegate device COMMAND ... (tidegate device --help)\n"
		     "       tidegate shadow get|update|delete|list THING [--name N] ... (tidegate shadow --help)\n"
		     "       tidegate token new FILE\n"
		     "       tidegate version\n");
}

static const char *config_arg(int argc, char **argv)
{
	for (int i = 1; i < argc - 1; i++)
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
			return argv[i + 1];
	return "/etc/tidegate/tidegate.conf";
}

/* `tidegate rules ...`: with -c CONFIG the rules are checked against that configuration's
 * sinks (and folder, and payload limits), as the daemon checks them. */
static int rules_main(int argc, char **argv)
{
	const char *path = NULL;
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
			path = argv[++i];
		else
			argv[n++] = argv[i]; /* the rules CLI does not see -c */
	}
	if (!path)
		return rules_cli_main(n, argv, NULL);
	size_t errlen = 64 * 1024;
	char *err = malloc(errlen);
	if (!err)
		return 1;
	err[0] = '\0';
	tg_config *c = config_load(path, sink_types_all(), err, errlen);
	const char **names = c ? preflight_sink_names(c) : NULL;
	int rc = 2;
	if (!c)
		fprintf(stderr, "%s\n", err);
	if (names) {
		rules_cli_conf conf = {.path = path, .sink_names = names, .rules_dir = c->rules_dir,
				       .max_payload = (size_t)c->max_payload, .max_depth = (int)c->max_depth};
		rc = rules_cli_main(n, argv, &conf);
	}
	free(names);
	config_free(c);
	free(err);
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 && argv[1][0] != '-' ? argv[1] : "run";
	if (strcmp(cmd, "version") == 0 || (argc > 1 && strcmp(argv[1], "--version") == 0)) {
		printf("tidegate %s\n", TIDEGATE_VERSION);
		return 0;
	}
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "rules") == 0) {
		if (argc < 3) {
			usage(stderr);
			return 2;
		}
		return rules_main(argc - 2, argv + 2);
	}
	if (strcmp(cmd, "device") == 0)
		return registry_cli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "shadow") == 0)
		return shadow_cli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "token") == 0)
		return ops_token_cli_main(argc - 2, argv + 2);
	if (strcmp(cmd, "config-reference") == 0) {
		config_reference(sink_types_all(), stdout);
		return 0;
	}
	if (strcmp(cmd, "check-config") == 0 || (argc > 1 && strcmp(argv[1], "--check-config") == 0)) {
		/* exactly the checks `run` makes before it starts (preflight.h) */
		size_t errlen = 64 * 1024;
		char *err = malloc(errlen);
		if (!err)
			return 1;
		err[0] = '\0';
		tg_config *c = config_load(config_arg(argc, argv), sink_types_all(), err, errlen);
		int rc = !c || preflight_check(c, err, errlen) ? 2 : 0;
		if (rc)
			fprintf(stderr, "%s\n", err);
		else
			config_print(c, stdout);
		config_free(c);
		free(err);
		return rc;
	}
	if (strcmp(cmd, "run") != 0) {
		fprintf(stderr, "tidegate: unknown command '%s'\n", cmd);
		usage(stderr);
		return 2;
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* At most MALLOC_ARENAS malloc arenas rather than glibc's 8 per core (each with its own
	 * free space and padding: resident memory a small gateway does not need), but enough
	 * that the ingest thread keeps the main arena to itself. glibc hands a new thread a
	 * free or new arena while it may, and only past the cap shares one round-robin — with
	 * 2, the forwarder or an HTTP thread of the console landed on the main arena half the
	 * time, and every malloc of the ingest thread contended with it (futex waits in malloc
	 * on both threads; with the page open, the API threads' JSON too). */
	mallopt(M_ARENA_MAX, MALLOC_ARENAS);
	/* libcurl is loaded (and initialised) by the first HTTP sink: sinks/curl_dl.h */
	return daemon_run(config_arg(argc, argv), &g_stop, &g_reload);
}
