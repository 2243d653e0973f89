/*
 * fuzz_ingest.c — fuzz target for the MQTT-facing payload path: a topic and a payload as the
 * daemon receives them from the broker, through ingest_message() (identity from the topic,
 * raw checks, JSON parse, the repository's schemas, dedupe, windowed aggregates, the record
 * appended to a real SQLite outbox) and the group commit after it.
 *
 * Input: if a NUL byte appears within the first 128 bytes, what precedes it is the topic and
 * the rest the payload; otherwise the first byte picks one of a few real topics and the rest
 * is the payload. The virtual clock advances 250 ms per input (windows close, dedupe ages).
 * Invariants: no crash, no leak, no sanitizer report; ingest_message returns 0 or a TG_E*
 * code; a message it takes (0) is either accepted or quarantined — never dropped silently
 * (nothing accepted is ever lost, bad input goes to quarantine); the group commits.
 *
 * The gateway is built once per process (a config file, a broker object that is never
 * connected, an outbox capped at 8 MiB with drop_oldest so a long run stays bounded) in a
 * temporary folder; an atexit handler frees it all and removes the folder.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>

#include "mqtt/broker.h"
#include "core/config.h"
#include "core/err.h"
#include "core/fsutil.h"
#include "ingest.h"
#include "sinks/registry.h"
#include "store/outbox.h"
#include "edge/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const TOPICS[] = {"devices/dev-0001/telemetry", "devices/dev-0002/telemetry",
				     "legacy/dev-0003/weather",    "devices/dev-0001/state",
				     "devices//telemetry",         "aggregates/dev-0001"};

/* the one gateway of this process (fuzz harness state, not product code) */
static struct {
	char dir[64];
	tg_config *cfg;
	outbox *ob;
	broker *br;
	ingest *ig;
	schema_set *schemas;
	int64_t now;
} G;

static void teardown(void)
{
	ingest_free(G.ig);
	broker_free(G.br);
	outbox_close(G.ob);
	schema_set_free(G.schemas);
	config_free(G.cfg);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", G.dir);
	if (G.dir[0] && system(cmd) != 0)
		fprintf(stderr, "fuzz_ingest: could not remove %s\n", G.dir);
	mosquitto_lib_cleanup();
}

static void setup(void)
{
	char err[4096], path[256];
	snprintf(G.dir, sizeof G.dir, "/tmp/tg-fuzz-ingest-XXXXXX");
	if (!mkdtemp(G.dir))
		abort();
	snprintf(path, sizeof path, "%s/tidegate.conf", G.dir);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	/* the repository's schemas and aggregates: the fuzzer runs from the repository root */
	fprintf(f,
		"gateway_id = gw-fuzz\ndata_dir = %s/data\nlog_level = error\n"
		"[broker]\nhost = 127.0.0.1\nport = 1\ntls = false\n"
		"[ingest]\nschemas_dir = rules/schemas\naggregates_file = rules/aggregates/aggregates.json\n"
		"[outbox]\nmax_bytes = 8M\nfull_policy = drop_oldest\n"
		"[sink lake]\ntype = file\npath = %s/lake\n",
		G.dir, G.dir);
	fclose(f);
	mosquitto_lib_init();
	if (!(G.cfg = config_load(path, sink_types_all(), err, sizeof err))) {
		fprintf(stderr, "fuzz_ingest: config: %s\n", err);
		abort();
	}
	snprintf(path, sizeof path, "%s/data", G.dir);
	if (tg_mkdirs(path, 0700))
		abort();
	outbox_opts oo = {.commit_interval_ms = G.cfg->commit_interval_ms,
			  .commit_max_records = G.cfg->commit_max_records,
			  .max_bytes = G.cfg->outbox_max_bytes,
			  .wal_max_bytes = G.cfg->outbox_wal_max_bytes,
			  .max_rows = G.cfg->outbox_max_rows,
			  .full_policy = G.cfg->outbox_full_policy,
			  .gateway_id = G.cfg->gateway_id};
	if (!(G.ob = outbox_open(G.cfg->outbox_path, &oo, err, sizeof err)) ||
	    !(G.br = broker_new(G.cfg, NULL, NULL, err, sizeof err)) ||
	    !(G.ig = ingest_new(G.cfg, G.ob, G.br, err, sizeof err)) ||
	    !(G.schemas = schema_load_dir(G.cfg->schemas_dir, err, sizeof err))) {
		fprintf(stderr, "fuzz_ingest: setup: %s\n", err);
		abort();
	}
	ingest_set_schemas(G.ig, G.schemas);
	G.now = 1764088209123LL;
	atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!G.ig)
		setup();
	char topic[160];
	const uint8_t *nul = memchr(data, 0, size < 128 ? size : 128);
	const uint8_t *payload;
	size_t len;
	if (nul) {
		memcpy(topic, data, (size_t)(nul - data));
		topic[nul - data] = '\0';
		payload = nul + 1;
		len = size - (size_t)(nul - data) - 1;
	} else {
		snprintf(topic, sizeof topic, "%s", TOPICS[size ? data[0] % (sizeof TOPICS / sizeof *TOPICS) : 0]);
		payload = size ? data + 1 : data;
		len = size ? size - 1 : 0;
	}
	ingest_stats *st = ingest_stats_of(G.ig);
	uint64_t acc = atomic_load(&st->accepted), q = atomic_load(&st->quarantined);
	G.now += 250;
	int rc = ingest_message(G.ig, topic, payload, len, 1, NULL, G.now);
	if (rc > 0 || rc < -100)
		abort();
	if (rc == 0 && atomic_load(&st->accepted) == acc && atomic_load(&st->quarantined) == q)
		abort(); /* taken, yet neither accepted nor quarantined: silently dropped */
	ingest_tick(G.ig, G.now);
	if (outbox_commit(G.ob) < 0)
		abort();
	return 0;
}
