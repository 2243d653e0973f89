/*
 * sink_send.c — drive one upstream sink directly, without the daemon: open it from
 * `key=value` options, generate records, hand them over in batches sized by the sink's
 * own limits (as the forwarder would), and print one status line per record. The
 * integration tests (tests/integration/test_sinks_peers.py) use it against kinesalite and
 * s3rver and check the outcome with a real AWS client.
 *
 *   sink_send TYPE [--count N] [--start-id N] [--gateway-id ID] [--tables a,b]
 *             [--pkeys N] [--created-ms MS] [--step-ms MS] [--big ID:BYTES]
 *             [--empty-pkey ID] [--batch N] key=value...
 *
 * Output: "<id> <msg_id> <table> <pkey> OK|RETRY|POISON" per record, then
 * "summary ok=N retry=N poison=N calls=N failed_calls=N"; the sink's error text goes to
 * stderr. Exit status 0 when every call returned and nothing is left SINK_RETRY.
 *
 * Options are parsed against the sink's own config_option table with the config loader's
 * table functions, so they take the same values as a `[sink NAME]` section.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#include "core/err.h"
#include "core/log.h"
#include "sinks/registry.h"
#include "store/sink.h"

static void usage(void)
{
	fprintf(stderr, "usage: sink_send TYPE [--count N] [--start-id N] [--gateway-id ID] [--tables a,b]\n"
			"       [--pkeys N] [--created-ms MS] [--step-ms MS] [--big ID:BYTES] [--empty-pkey ID]\n"
			"       [--batch N] key=value...\n");
}

int main(int argc, char **argv)
{
	const sink_ops *ops;
	void *opts = NULL;
	sink *s = NULL;
	sink_limits lim = { 0 };
	sink_record *recs = NULL;
	sink_status *res = NULL;
	char **bufs = NULL;
	char **pkeys = NULL;
	char *tables_arg = NULL, *tables[16];
	size_t ntables = 0;
	int64_t count = 10, start = 1, npk = 4, created = 0, step = 0, big_id = -1, big_bytes = 0,
		empty_id = -1, batch = 0;
	const char *gw = "gw-test";
	int rc = 2;
	char err[1024];

	if (argc < 2) {
		usage();
		return 2;
	}
	tg_log_init(TG_LOG_WARN);
	signal(SIGPIPE, SIG_IGN); /* as the daemon: a peer closing a TLS socket is an error, not a kill */
	ops = sink_ops_find(argv[1]);
	if (!ops) {
		fprintf(stderr, "sink_send: unknown sink type %s\n", argv[1]);
		goto out;
	}
	opts = calloc(1, ops->conf.options_size);
	if (!opts)
		goto out;
	if (config_table_defaults(ops->conf.options, opts, err, sizeof err)) {
		fprintf(stderr, "sink_send: defaults: %s\n", err);
		goto out;
	}
	created = (int64_t)time(NULL) * 1000;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *nv = i + 1 < argc ? argv[i + 1] : NULL;
		const char *eq = strchr(a, '=');
		if (!strncmp(a, "--", 2) && nv) {
			i++;
			if (!strcmp(a, "--count")) count = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--start-id")) start = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--gateway-id")) gw = nv;
			else if (!strcmp(a, "--tables")) tables_arg = strdup(nv);
			else if (!strcmp(a, "--pkeys")) npk = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--created-ms")) created = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--step-ms")) step = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--big")) sscanf(nv, "%" SCNd64 ":%" SCNd64, &big_id, &big_bytes);
			else if (!strcmp(a, "--empty-pkey")) empty_id = strtoll(nv, NULL, 10);
			else if (!strcmp(a, "--batch")) batch = strtoll(nv, NULL, 10);
			else { usage(); goto out; }
		} else if (eq) {
			char key[128];
			snprintf(key, sizeof key, "%.*s", (int)(eq - a), a);
			if (config_table_set(ops->conf.options, opts, key, eq + 1, err, sizeof err)) {
				fprintf(stderr, "sink_send: option %s: %s\n", a, err);
				goto out;
			}
		} else {
			usage();
			goto out;
		}
	}
	if (count < 1 || npk < 1) {
		usage();
		goto out;
	}
	if (!tables_arg && !(tables_arg = strdup("telemetry")))
		goto out;
	for (char *t = strtok(tables_arg, ","); t && ntables < 16;
	     t = strtok(NULL, ","))
		tables[ntables++] = t;

	if (config_table_check(ops->conf.options, opts, err, sizeof err)) {
		fprintf(stderr, "sink_send: %s\n", err);
		goto out;
	}
	sink_env env = { .gateway_id = gw };
	s = ops->open(opts, &env, &lim, err, sizeof err);
	if (!s) {
		fprintf(stderr, "sink_send: open: %s\n", err);
		goto out;
	}
	recs = calloc((size_t)count, sizeof *recs);
	res = calloc((size_t)count, sizeof *res);
	bufs = calloc((size_t)count, sizeof *bufs);
	pkeys = calloc((size_t)count, sizeof *pkeys);
	if (!recs || !res || !bufs || !pkeys)
		goto out;
	for (int64_t i = 0; i < count; i++) {
		int64_t id = start + i;
		const char *table = tables[i % (int64_t)ntables];
		int64_t cms = created + i * step;
		pkeys[i] = malloc(32);
		if (!pkeys[i])
			goto out;
		snprintf(pkeys[i], 32, "dev-%04" PRId64, i % npk);
		if (id == empty_id)
			pkeys[i][0] = '\0';
#define HEAD_FMT "{\"msg_id\":\"%s-%" PRId64 "\",\"thing\":\"%s\",\"table\":\"%s\",\"ts\":%" PRId64 \
		 ",\"seq\":%" PRId64 ",\"pad\":\""
		int hn = snprintf(NULL, 0, HEAD_FMT, gw, id, pkeys[i], table, cms, i);
		if (hn < 0)
			goto out;
		size_t pad = id == big_id && big_bytes > hn + 2 ? (size_t)big_bytes - (size_t)hn - 2 : 0;
		bufs[i] = malloc((size_t)hn + pad + 3);
		if (!bufs[i])
			goto out;
		snprintf(bufs[i], (size_t)hn + 1, HEAD_FMT, gw, id, pkeys[i], table, cms, i);
#undef HEAD_FMT
		memset(bufs[i] + hn, 'x', pad);
		memcpy(bufs[i] + hn + pad, "\"}", 3);
		recs[i] = (sink_record){ .id = id, .table = table, .pkey = pkeys[i], .created_ms = cms,
					 .data = bufs[i], .len = (size_t)hn + pad + 2 };
		char *mid = malloc(64);
		if (!mid)
			goto out;
		snprintf(mid, 64, "%s-%" PRId64, gw, id);
		recs[i].msg_id = mid;
	}

	size_t maxn = batch > 0 ? (size_t)batch : lim.max_records ? lim.max_records : (size_t)count;
	size_t calls = 0, failed_calls = 0;
	for (size_t i = 0; i < (size_t)count;) {
		size_t n = 0, bytes = 0;
		while (i + n < (size_t)count && n < maxn &&
		       (n == 0 || !lim.max_bytes || bytes + recs[i + n].len <= lim.max_bytes))
			bytes += recs[i + n++].len;
		err[0] = '\0';
		int r = ops->send(s, recs + i, n, res + i, 0, err, sizeof err);
		calls++;
		if (r < 0) {
			failed_calls++;
			for (size_t j = 0; j < n; j++)
				res[i + j] = SINK_RETRY;
			fprintf(stderr, "sink_send: call %zu failed: %s: %s\n", calls, tg_strerror(r), err);
		} else if (err[0]) {
			fprintf(stderr, "sink_send: call %zu: %s\n", calls, err);
		}
		i += n;
	}
	size_t nok = 0, nretry = 0, npoison = 0;
	static const char *const names[] = { "OK", "RETRY", "POISON" };
	for (int64_t i = 0; i < count; i++) {
		nok += res[i] == SINK_OK;
		nretry += res[i] == SINK_RETRY;
		npoison += res[i] == SINK_POISON;
		printf("%" PRId64 " %s %s %s %s\n", recs[i].id, recs[i].msg_id, recs[i].table,
		       recs[i].pkey[0] ? recs[i].pkey : "-", res[i] <= SINK_POISON ? names[res[i]] : "?");
	}
	printf("summary ok=%zu retry=%zu poison=%zu calls=%zu failed_calls=%zu max_records=%zu max_bytes=%zu max_age_ms=%" PRId64 "\n",
	       nok, nretry, npoison, calls, failed_calls, lim.max_records, lim.max_bytes, lim.max_age_ms);
	rc = nretry || failed_calls ? 1 : 0;
out:
	if (ops)
		ops->close(s);
	for (int64_t i = 0; recs && i < count; i++)
		free((char *)recs[i].msg_id);
	for (int64_t i = 0; bufs && i < count; i++)
		free(bufs[i]);
	for (int64_t i = 0; pkeys && i < count; i++)
		free(pkeys[i]);
	free(recs);
	free(res);
	free(bufs);
	free(pkeys);
	free(tables_arg);
	if (opts && ops->conf.options_free)
		ops->conf.options_free(opts);
	if (opts)
		config_table_free(ops->conf.options, opts);
	free(opts);
	return rc;
}
