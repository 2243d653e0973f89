/*
 * sim_gen.h — telemetry and hostile payload generation for device_sim (pure, no I/O).
 *
 * Every thing owns a generator with three independent PRNG streams (xoshiro256**, seeded
 * by splitmix64 from the run seed and the thing's index): one drives the sensor random
 * walk, one the anomalies (random spikes, stuck sensors), one the hostile injection. The
 * streams are separate so that switching hostile or anomaly injection on or off does not
 * change the sensor values of the other messages: for a given seed, slot n of thing i
 * always carries the same readings. The generator never reads a clock: the caller passes
 * the message timestamp (epoch ms) and the elapsed run time (seconds), so tests and the
 * --start-ts virtual clock get byte-identical output for the same seed.
 *
 * The walk: each reading is base + daily cycle (a sine over the UTC hour of `ts`, peak in
 * the afternoon) + a mean-reverting (Ornstein–Uhlenbeck) deviation, so values drift
 * realistically but never run away; humidity is clamped to 0..100.
 */
#ifndef SIM_GEN_H
#define SIM_GEN_H

#include <stddef.h>
#include <stdint.h>

struct sim_rng {
	uint64_t s[4];
};

void sim_rng_seed(struct sim_rng *r, uint64_t seed);
uint64_t sim_rng_next(struct sim_rng *r);
double sim_rng_uniform(struct sim_rng *r); /* [0, 1) */
double sim_rng_normal(struct sim_rng *r);  /* N(0, 1) */

/* What a generated message is. SIM_NORMAL is a valid reading; the rest are hostile. */
enum sim_kind {
	SIM_NORMAL = 0,
	SIM_H_MALFORMED_JSON, /* not JSON: truncated, trailing garbage, single quotes */
	SIM_H_WRONG_TYPE,     /* valid JSON object, one field of the wrong JSON type */
	SIM_H_BAD_ID,         /* sensor_id empty, too long, bad characters, or another thing's */
	SIM_H_MISSING_FIELD,  /* a required field (ts, temperature, sensor_id) absent */
	SIM_H_OUT_OF_RANGE,   /* physically impossible value (temperature 1e6, humidity 150) */
	SIM_H_OVERSIZED,      /* valid JSON object larger than 128 KiB */
	SIM_H_DUPLICATE,      /* exact copy of the thing's previous normal message (same ts) */
	SIM_H_CLOCK_SKEW,     /* valid reading whose ts is 400 days to 10 years off */
	SIM_H_NON_OBJECT,     /* valid JSON that is not an object: array, string, number, null */
	SIM_H_INVALID_UTF8,   /* object whose sensor_id string holds invalid UTF-8 bytes */
	SIM_H_TOO_DEEP,       /* valid JSON object with a field nested 256 levels deep */
	SIM_H_EMPTY,          /* zero-length payload */
	SIM_KIND_COUNT
};

#define SIM_HOSTILE_FIRST SIM_H_MALFORMED_JSON
/* Bit mask of all hostile kinds (bit k set = kind k enabled). */
#define SIM_HOSTILE_ALL (((1u << SIM_KIND_COUNT) - 1u) & ~1u)

/* Size of the payload buffer a caller must pass (the oversized kind is the largest). */
#define SIM_PAYLOAD_CAP (160u * 1024u)
/* The size above which a payload counts as oversized (AWS IoT Core's limit). */
#define SIM_OVERSIZE_LIMIT (128u * 1024u)
#define SIM_TOO_DEEP_LEVELS 256

const char *sim_kind_name(enum sim_kind k); /* "normal", "malformed_json", … (static) */
int sim_kind_parse(const char *name);      /* kind or -1 */

/* A forced temperature for one thing during [at_s, at_s + dur_s) of run time. */
struct sim_spike {
	int thing;    /* thing index (0-based) */
	double at_s;  /* start, seconds since the run started */
	double dur_s; /* duration in seconds */
	double value; /* temperature during the spike, exactly */
};

/* Run-wide generation settings (borrowed by every generator; not copied). */
struct sim_gen_cfg {
	double anomaly_rate;      /* per message: random spike of +-10..25 C */
	double stuck_rate;        /* per message: sensor freezes for 10..50 messages */
	double hostile_rate;      /* per message: replaced by a hostile one */
	unsigned hostile_mask;    /* enabled hostile kinds (bits of enum sim_kind) */
	int hostile_only;         /* nonzero: every slot is hostile, kinds round-robin */
	const struct sim_spike *spikes;
	size_t nspikes;
};

/* Per-message flags beyond the kind (a normal message can carry anomalies). */
enum sim_flag {
	SIM_F_SPIKE = 1,      /* --spike window forced the temperature */
	SIM_F_ANOMALY = 2,    /* random spike applied */
	SIM_F_STUCK = 4,      /* stuck sensor repeated its frozen values */
	SIM_F_PREFIX_DUP = 8, /* duplicate in hostile-only mode: a normal message was emitted
			       * first (in `prefix`), the payload is its exact copy */
};

/* One thing's generator. Fields are private to sim_gen.c except where noted. */
struct sim_gen {
	struct sim_rng walk, anom, host;
	char name[64]; /* thing name (sensor_id) */
	int index;
	uint64_t seq;  /* next slot number (read-only for callers) */
	double t_base, h_base, p_base;  /* per-thing base levels */
	double t_dev, h_dev, p_dev;     /* OU deviations */
	double battery;
	int stuck_left;
	double stuck_t, stuck_h, stuck_p;
	char last[256]; /* previous normal payload, for duplicates */
	size_t last_len;
	uint64_t last_seq;
	unsigned rr; /* round-robin position for hostile-only mode */
};

/* One generated message. The payload lives in the caller's buffer. */
struct sim_msg {
	enum sim_kind kind;
	unsigned flags;      /* enum sim_flag bits */
	uint64_t seq;        /* slot number carried in the payload (a duplicate: the original's) */
	size_t len;          /* payload length in bytes */
	const char *variant; /* static text naming the hostile variant ("truncated", …) or "" */
	/* Set only with SIM_F_PREFIX_DUP: the normal message to send before this one. */
	const char *prefix;
	size_t prefix_len;
};

/* Initialise a generator for thing `index` named `name` (copied, at most 63 bytes). */
void sim_gen_init(struct sim_gen *g, uint64_t seed, int index, const char *name);

/* Produce the next message of this thing into buf (cap >= SIM_PAYLOAD_CAP) for device
 * timestamp ts_ms and run time t_s. Returns the payload length (also in out->len), or a
 * negative TG_E* code if cap is too small. `out->prefix` (hostile-only duplicates) points
 * into g and stays valid until the next call. */
int sim_gen_next(struct sim_gen *g, const struct sim_gen_cfg *cfg, int64_t ts_ms, double t_s,
		 char *buf, size_t cap, struct sim_msg *out);

#endif
