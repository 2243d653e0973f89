/*
 * sim_opts.c — see sim_opts.h. getopt_long does the splitting; every value goes through a
 * strict number parser (whole string, range-checked) so "--rate 10x" is an error, not 10.
 */
#include "sim_opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

static const char usage[] =
	"usage: device_sim --cafile CA --certs-dir DIR --things N [options]\n"
	"       device_sim --cafile CA --cert CRT --key KEY --connections K --things N [options]\n"
	"Connection:\n"
	"  --host H              broker address (default 127.0.0.1)\n"
	"  --port P              broker port (default 8883)\n"
	"  --cafile F            CA certificate that signed the broker's cert (required)\n"
	"  --certs-dir D         per-thing mode: D/<thing>.crt and D/<thing>.key\n"
	"  --connections K       load mode: K shared connections using --cert/--key\n"
	"  --cert F --key F      client cert for load mode (e.g. loadgen.crt)\n"
	"  --threads T           worker threads sharing the connections (default 1)\n"
	"  --inflight M          unacknowledged messages per connection (default 64)\n"
	"Load:\n"
	"  --things N            number of things (default 1)\n"
	"  --prefix S            thing name prefix (default dev-); names are S%04d (S0000, S0001, …)\n"
	"  --first N             number of the first thing (default 1)\n"
	"  --rate R              messages per second per thing (default 1)\n"
	"  --max-rate            as fast as acknowledgements allow\n"
	"  --count C             messages per thing (default 10 unless --duration)\n"
	"  --duration S          stop sending after S seconds\n"
	"  --qos 0|1             (default 1)\n"
	"  --topic-template T    (default devices/%%s/telemetry)\n"
	"  --seed S              (default 1)\n"
	"  --start-ts MS         virtual clock: ts = MS + seq * interval (default: wall clock)\n"
	"  --interval-ms I       virtual clock step (default 1000/rate)\n"
	"Injection:\n"
	"  --spike THING:AT_S:DUR_S:VALUE   temperature = VALUE during [AT_S, AT_S+DUR_S)\n"
	"  --anomaly-rate p      random +-10..25 C spikes\n"
	"  --stuck-rate p        sensor freezes for 10..50 messages\n"
	"  --hostile-rate p      replace messages by hostile ones\n"
	"  --hostile-only K      send K hostile messages per thing, kinds round-robin\n"
	"  --hostile-kinds LIST  comma-separated kinds (default all): malformed_json,\n"
	"                        wrong_type, bad_id, missing_field, out_of_range, oversized,\n"
	"                        duplicate, clock_skew, non_object, invalid_utf8, too_deep, empty\n"
	"  --hostile-log FILE    one JSON line per hostile message sent\n"
	"Shadow mode (docs/device_sim.md): each thing follows its Device Shadow\n"
	"  --shadow              subscribe to the shadow's delta, apply it, report back\n"
	"  --shadow-name NAME    a named shadow instead of the classic one\n"
	"  --apply-delay-ms A:B  wait a random A..B ms before applying a delta (default 200:1000)\n"
	"  (runs for --duration S, or until SIGINT/SIGTERM; needs --certs-dir)\n"
	"Output:\n"
	"  --summary-json FILE   the summary as JSON\n"
	"  --drain-timeout S     wait at most S for outstanding PUBACKs (default 30)\n"
	"  --connect-timeout S   (default 10)\n"
	"  --quiet               no progress logging\n";

enum {
	O_HOST = 256, O_PORT, O_CAFILE, O_CERTS_DIR, O_CERT, O_KEY, O_THINGS, O_FIRST, O_PREFIX,
	O_RATE, O_MAX_RATE, O_COUNT, O_DURATION, O_QOS, O_SEED, O_TOPIC, O_CONNS, O_THREADS,
	O_INFLIGHT, O_ANOMALY, O_SPIKE, O_STUCK, O_HOSTILE_RATE, O_HOSTILE_ONLY, O_HOSTILE_KINDS,
	O_HOSTILE_LOG, O_SUMMARY, O_DRAIN, O_CONNECT_TO, O_START_TS, O_INTERVAL, O_QUIET, O_SHADOW,
	O_SHADOW_NAME, O_APPLY_DELAY, O_HELP
};

static const struct option longopts[] = {
	{"host", required_argument, NULL, O_HOST},
	{"port", required_argument, NULL, O_PORT},
	{"cafile", required_argument, NULL, O_CAFILE},
	{"certs-dir", required_argument, NULL, O_CERTS_DIR},
	{"cert", required_argument, NULL, O_CERT},
	{"key", required_argument, NULL, O_KEY},
	{"things", required_argument, NULL, O_THINGS},
	{"first", required_argument, NULL, O_FIRST},
	{"prefix", required_argument, NULL, O_PREFIX},
	{"rate", required_argument, NULL, O_RATE},
	{"max-rate", no_argument, NULL, O_MAX_RATE},
	{"count", required_argument, NULL, O_COUNT},
	{"duration", required_argument, NULL, O_DURATION},
	{"qos", required_argument, NULL, O_QOS},
	{"seed", required_argument, NULL, O_SEED},
	{"topic-template", required_argument, NULL, O_TOPIC},
	{"connections", required_argument, NULL, O_CONNS},
	{"threads", required_argument, NULL, O_THREADS},
	{"inflight", required_argument, NULL, O_INFLIGHT},
	{"anomaly-rate", required_argument, NULL, O_ANOMALY},
	{"spike", required_argument, NULL, O_SPIKE},
	{"stuck-rate", required_argument, NULL, O_STUCK},
	{"hostile-rate", required_argument, NULL, O_HOSTILE_RATE},
	{"hostile-only", required_argument, NULL, O_HOSTILE_ONLY},
	{"hostile-kinds", required_argument, NULL, O_HOSTILE_KINDS},
	{"hostile-log", required_argument, NULL, O_HOSTILE_LOG},
	{"summary-json", required_argument, NULL, O_SUMMARY},
	{"drain-timeout", required_argument, NULL, O_DRAIN},
	{"connect-timeout", required_argument, NULL, O_CONNECT_TO},
	{"start-ts", required_argument, NULL, O_START_TS},
	{"interval-ms", required_argument, NULL, O_INTERVAL},
	{"quiet", no_argument, NULL, O_QUIET},
	{"shadow", no_argument, NULL, O_SHADOW},
	{"shadow-name", required_argument, NULL, O_SHADOW_NAME},
	{"apply-delay-ms", required_argument, NULL, O_APPLY_DELAY},
	{"help", no_argument, NULL, O_HELP},
	{NULL, 0, NULL, 0},
};

static int num_d(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		return TG_EINVAL;
	*out = v;
	return 0;
}

static int num_u(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return TG_EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return TG_EINVAL;
	*out = v;
	return 0;
}

static int num_i(const char *s, int lo, int hi, int *out)
{
	uint64_t v;
	if (lo < 0 || num_u(s, (uint64_t)lo, (uint64_t)hi, &v) < 0)
		return TG_EINVAL;
	*out = (int)v;
	return 0;
}

/* Same rule as certs/lib.sh: a thing name is a topic segment and a CN. */
static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 (i > 0 && (c == '_' || c == '.' || c == ':' || c == '-'));
		if (!ok)
			return 0;
	}
	return 1;
}

static int template_ok(const char *t)
{
	const char *p = strchr(t, '%');
	if (!p || p[1] != 's' || strchr(p + 2, '%'))
		return 0;
	return strchr(t, '+') == NULL && strchr(t, '#') == NULL && strlen(t) < 200;
}

static int add_spike(struct sim_opts *o, const char *spec, char *err, size_t errlen)
{
	char name[64], rest[128];
	const char *c = strchr(spec, ':');
	if (!c || (size_t)(c - spec) >= sizeof name || strlen(c + 1) >= sizeof rest)
		goto bad;
	memcpy(name, spec, (size_t)(c - spec));
	name[c - spec] = '\0';
	snprintf(rest, sizeof rest, "%s", c + 1);
	char *f[3];
	char *save = NULL;
	f[0] = strtok_r(rest, ":", &save);
	f[1] = strtok_r(NULL, ":", &save);
	f[2] = strtok_r(NULL, ":", &save);
	if (!f[0] || !f[1] || !f[2] || strtok_r(NULL, ":", &save))
		goto bad;
	struct sim_spike s = {.thing = -1};
	if (num_d(f[0], 0, 1e9, &s.at_s) < 0 || num_d(f[1], 0, 1e9, &s.dur_s) < 0 ||
	    num_d(f[2], -1e9, 1e9, &s.value) < 0 || !name_ok(name))
		goto bad;
	struct sim_spike *ns = realloc(o->spikes, (o->nspikes + 1) * sizeof *ns);
	if (!ns)
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	o->spikes = ns;
	char **nn = realloc(o->spike_names, (o->nspikes + 1) * sizeof *nn);
	if (!nn)
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	o->spike_names = nn;
	nn[o->nspikes] = strdup(name);
	if (!nn[o->nspikes])
		return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
	ns[o->nspikes++] = s;
	return 0;
bad:
	return tg_seterr(err, errlen, TG_EINVAL, "bad --spike '%s' (want THING:AT_S:DUR_S:VALUE)",
			 spec);
}

static int parse_kinds(const char *list, unsigned *mask, char *err, size_t errlen)
{
	char buf[512];
	if (strlen(list) >= sizeof buf)
		return tg_seterr(err, errlen, TG_EINVAL, "--hostile-kinds too long");
	snprintf(buf, sizeof buf, "%s", list);
	*mask = 0;
	char *save = NULL;
	for (char *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
		int kind = sim_kind_parse(k);
		if (kind <= SIM_NORMAL)
			return tg_seterr(err, errlen, TG_EINVAL, "unknown hostile kind '%s'", k);
		*mask |= 1u << kind;
	}
	if (!*mask)
		return tg_seterr(err, errlen, TG_EINVAL, "--hostile-kinds is empty");
	return 0;
}

void sim_opts_thing_name(const struct sim_opts *o, int i, char *buf, size_t len)
{
	snprintf(buf, len, "%s%04d", o->prefix, o->first + i);
}

int sim_opts_parse(struct sim_opts *o, int argc, char **argv, char *err, size_t errlen)
{
	memset(o, 0, sizeof *o);
	o->host = "127.0.0.1";
	o->port = 8883;
	o->things = 1;
	o->first = 1;
	o->prefix = "dev-";
	o->qos = 1;
	o->seed = 1;
	o->topic_template = "devices/%s/telemetry";
	o->threads = 1;
	o->inflight = 64;
	o->drain_timeout_s = 30;
	o->connect_timeout_s = 10;
	o->start_ts_ms = -1;
	o->gen.hostile_mask = SIM_HOSTILE_ALL;
	o->apply_min_ms = 200;
	o->apply_max_ms = 1000;
	double rate = -1;
	int have_count = 0, hostile_only = 0;
	uint64_t u;
	int c, rc = 0;

	optind = 0; /* GNU: full re-initialisation, so parse can run more than once */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		const char *a = optarg;
		int bad = 0;
		switch (c) {
		case O_HOST: o->host = a; break;
		case O_PORT: bad = num_i(a, 1, 65535, &o->port); break;
		case O_CAFILE: o->cafile = a; break;
		case O_CERTS_DIR: o->certs_dir = a; break;
		case O_CERT: o->cert = a; break;
		case O_KEY: o->key = a; break;
		case O_THINGS: bad = num_i(a, 1, 1000000, &o->things); break;
		case O_FIRST: bad = num_i(a, 0, 99999999, &o->first); break;
		case O_PREFIX: o->prefix = a; break;
		case O_RATE: bad = num_d(a, 1e-6, 1e7, &rate); break;
		case O_MAX_RATE: o->max_rate = 1; break;
		case O_COUNT:
			bad = num_u(a, 0, UINT64_MAX / 2, &o->count);
			have_count = 1;
			break;
		case O_DURATION: bad = num_d(a, 1e-3, 1e7, &o->duration_s); break;
		case O_QOS: bad = num_i(a, 0, 1, &o->qos); break;
		case O_SEED: bad = num_u(a, 0, UINT64_MAX, &o->seed); break;
		case O_TOPIC: o->topic_template = a; break;
		case O_CONNS: bad = num_i(a, 1, 10000, &o->connections); break;
		case O_THREADS: bad = num_i(a, 1, 64, &o->threads); break;
		case O_INFLIGHT: bad = num_i(a, 1, 65535, &o->inflight); break;
		case O_ANOMALY: bad = num_d(a, 0, 1, &o->gen.anomaly_rate); break;
		case O_SPIKE:
			if ((rc = add_spike(o, a, err, errlen)) < 0)
				return rc;
			break;
		case O_STUCK: bad = num_d(a, 0, 1, &o->gen.stuck_rate); break;
		case O_HOSTILE_RATE: bad = num_d(a, 0, 1, &o->gen.hostile_rate); break;
		case O_HOSTILE_ONLY:
			bad = num_u(a, 1, UINT64_MAX / 2, &u);
			o->count = u;
			hostile_only = 1;
			break;
		case O_HOSTILE_KINDS:
			if ((rc = parse_kinds(a, &o->gen.hostile_mask, err, errlen)) < 0)
				return rc;
			break;
		case O_HOSTILE_LOG: o->hostile_log = a; break;
		case O_SUMMARY: o->summary_json = a; break;
		case O_DRAIN: bad = num_d(a, 0, 86400, &o->drain_timeout_s); break;
		case O_CONNECT_TO: bad = num_d(a, 0.1, 3600, &o->connect_timeout_s); break;
		case O_START_TS:
			bad = num_u(a, 0, 4102444800000ull, &u);
			o->start_ts_ms = (int64_t)u;
			break;
		case O_INTERVAL: bad = num_d(a, 1e-3, 86400000, &o->interval_ms); break;
		case O_QUIET: o->quiet = 1; break;
		case O_SHADOW: o->shadow = 1; break;
		case O_SHADOW_NAME:
			o->shadow_name = a;
			bad = !name_ok(a);
			break;
		case O_APPLY_DELAY: {
			const char *colon = strchr(a, ':');
			char lo[32];
			bad = !colon || (size_t)(colon - a) >= sizeof lo;
			if (!bad) {
				memcpy(lo, a, (size_t)(colon - a));
				lo[colon - a] = '\0';
				bad = num_i(lo, 0, 3600000, &o->apply_min_ms) || num_i(colon + 1, 0, 3600000, &o->apply_max_ms) ||
				      o->apply_max_ms < o->apply_min_ms;
			}
			break;
		}
		case O_HELP: fputs(usage, stdout); return 1;
		default:
			return tg_seterr(err, errlen, TG_EINVAL, "unknown or incomplete option '%s' (see --help)",
					 argv[optind - 1]);
		}
		if (bad)
			return tg_seterr(err, errlen, TG_EINVAL, "bad value '%s' for --%s", a,
					 longopts[c - O_HOST].name);
	}
	if (optind < argc)
		return tg_seterr(err, errlen, TG_EINVAL, "unexpected argument '%s'", argv[optind]);

	if (!o->cafile)
		return tg_seterr(err, errlen, TG_EINVAL, "--cafile is required");
	if (o->shadow && (o->connections || !o->certs_dir))
		return tg_seterr(err, errlen, TG_EINVAL,
				 "--shadow needs --certs-dir: each thing connects as itself (it may only reach its own shadow)");
	if (o->connections) {
		if (!o->cert || !o->key)
			return tg_seterr(err, errlen, TG_EINVAL, "--connections needs --cert and --key");
		if (o->connections > o->things)
			o->connections = o->things;
	} else if (!o->certs_dir) {
		return tg_seterr(err, errlen, TG_EINVAL,
				 "give --certs-dir (one cert per thing) or --connections with --cert/--key");
	}
	if (o->max_rate && rate > 0)
		return tg_seterr(err, errlen, TG_EINVAL, "--rate and --max-rate exclude each other");
	o->rate = o->max_rate ? 0 : (rate > 0 ? rate : 1.0);
	if (hostile_only) {
		if (have_count)
			return tg_seterr(err, errlen, TG_EINVAL, "--hostile-only K sets the count; drop --count");
		if (o->gen.hostile_rate > 0)
			return tg_seterr(err, errlen, TG_EINVAL, "--hostile-only and --hostile-rate exclude each other");
		o->gen.hostile_only = 1;
	} else if (!have_count && o->duration_s <= 0) {
		o->count = 10;
	}
	if (have_count && o->count == 0 && o->duration_s <= 0)
		return tg_seterr(err, errlen, TG_EINVAL, "--count 0 needs --duration");
	if (!template_ok(o->topic_template))
		return tg_seterr(err, errlen, TG_EINVAL,
				 "--topic-template needs exactly one %%s and no other %%, + or #");
	char name[96];
	sim_opts_thing_name(o, o->things - 1, name, sizeof name);
	if (!name_ok(o->prefix) || !name_ok(name))
		return tg_seterr(err, errlen, TG_EINVAL, "bad --prefix '%s' (letters, digits, _ . : -)",
				 o->prefix);
	if (o->interval_ms <= 0)
		o->interval_ms = o->rate > 0 ? 1000.0 / o->rate : 1000.0;
	if (o->threads > (o->connections ? o->connections : o->things))
		o->threads = o->connections ? o->connections : o->things;

	/* Resolve spike thing names to indexes now that prefix/first/things are known. */
	for (size_t i = 0; i < o->nspikes; i++) {
		for (int t = 0; t < o->things; t++) {
			sim_opts_thing_name(o, t, name, sizeof name);
			if (strcmp(name, o->spike_names[i]) == 0) {
				o->spikes[i].thing = t;
				break;
			}
		}
		if (o->spikes[i].thing < 0)
			return tg_seterr(err, errlen, TG_EINVAL, "--spike names unknown thing '%s'",
					 o->spike_names[i]);
	}
	o->gen.spikes = o->spikes;
	o->gen.nspikes = o->nspikes;
	return 0;
}

void sim_opts_free(struct sim_opts *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->nspikes; i++)
		free(o->spike_names[i]);
	free(o->spike_names);
	free(o->spikes);
	o->spike_names = NULL;
	o->spikes = NULL;
	o->nspikes = 0;
}
