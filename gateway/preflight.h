/*
 * preflight.h — every check `tidegate run` makes before it starts, without starting
 * anything: the one validation path behind `run` and `check-config` (systemd's
 * ExecStartPre), so a file check-config accepts is one run accepts.
 *
 * config_load() has already checked the file itself (syntax, values, duplicates, the
 * checks across options). preflight_check() adds what needs other files or the
 * environment: each sink type's own checks (stream names, endpoints, credentials), the
 * TLS files readable, the ops HTTP address, data_dir usable, and the rules, schemas and
 * aggregates compiled exactly as the daemon compiles them (sink names included). Only
 * the broker's identity stamping is left to start-up, as it needs the broker (identity.h).
 *
 * Ownership: c is borrowed; nothing is kept.
 */
#ifndef TG_PREFLIGHT_H
#define TG_PREFLIGHT_H

#include <stddef.h>

#include "core/config.h"

/* 0, or TG_EINVAL with every problem found, one "where: message" line each (where is
 * file:line:col of the config option, or of the rule/schema file), in err. */
int preflight_check(const tg_config *c, char *err, size_t errlen);

/* Sink names of c, NULL-terminated, for rules_env.sink_names (borrowed from c; free the
 * array only). NULL when out of memory. */
const char **preflight_sink_names(const tg_config *c);

#endif
