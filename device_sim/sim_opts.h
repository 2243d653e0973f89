/*
 * sim_opts.h — device_sim's command line, parsed into one struct (pure, testable).
 *
 * Parsing validates everything up front (numbers and their ranges, the topic template's
 * single %s, thing names that are safe as topic segments, spike specs naming real things)
 * so the run itself never meets a bad setting halfway through.
 */
#ifndef SIM_OPTS_H
#define SIM_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include "sim_gen.h"

struct sim_opts {
	const char *host; /* borrowed from argv */
	int port;
	const char *cafile;
	const char *certs_dir;  /* per-thing mode: <dir>/<thing>.crt/.key */
	const char *cert, *key; /* shared-connection (load) mode */
	int things;
	int first;          /* number of the first thing (default 1: dev-0001) */
	const char *prefix; /* thing name prefix (default "dev-") */
	double rate;        /* msgs/s per thing; 0 with max_rate */
	int max_rate;
	uint64_t count;    /* messages (slots) per thing; 0 = unbounded (duration decides) */
	double duration_s; /* 0 = unbounded (count decides) */
	int qos;
	uint64_t seed;
	const char *topic_template; /* exactly one %s */
	int connections;            /* 0 = one connection per thing with its own cert */
	int threads;
	int inflight;
	double drain_timeout_s;
	double connect_timeout_s;
	int64_t start_ts_ms; /* >= 0: virtual clock (ts = start + slot * interval) */
	double interval_ms;
	const char *summary_json;
	const char *hostile_log;
	const char *acked_log; /* one line per acknowledged message: thing seq ack_wall_ms */
	int quiet;
	/* shadow mode (sim_shadow.h): things follow their Device Shadow's delta */
	int shadow;
	const char *shadow_name; /* NULL: the classic shadow */
	int apply_min_ms, apply_max_ms;
	struct sim_gen_cfg gen;   /* gen.spikes points into `spikes` below */
	struct sim_spike *spikes; /* owned (free with sim_opts_free) */
	size_t nspikes;
	char **spike_names; /* thing names of spikes until resolved; owned */
};

/* Fill *o from argv (argv strings are borrowed, so they must outlive *o). Returns 0,
 * 1 when --help was printed (the caller exits 0), or TG_EINVAL with a message in err. */
int sim_opts_parse(struct sim_opts *o, int argc, char **argv, char *err, size_t errlen);

/* Name of thing i (0-based) into buf: prefix + zero-padded (first + i). */
void sim_opts_thing_name(const struct sim_opts *o, int i, char *buf, size_t len);

/* Release what sim_opts_parse allocated; NULL-safe and safe on a half-parsed struct. */
void sim_opts_free(struct sim_opts *o);

#endif
