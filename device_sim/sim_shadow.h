/*
 * sim_shadow.h — device_sim's shadow mode: things that follow their Device Shadow.
 *
 * Each thing connects with its own certificate (client id = thing name), subscribes to its
 * shadow's update/delta and to the answers of its own requests, and asks for its shadow
 * (get). A shadow that does not exist yet is created with the thing's initial reported
 * state; one that does hands the thing its reported state back and, if desired differs,
 * its delta. Whenever a delta arrives, the thing waits a random delay (--apply-delay-ms),
 * "applies" it to its own state and reports the changed fields, so desired -> delta ->
 * reported converges while you watch (docs/device_sim.md).
 */
#ifndef SIM_SHADOW_H
#define SIM_SHADOW_H

#include <stdatomic.h>

#include "sim_opts.h"

/* Run until --duration has passed or *stop is set. Returns the process exit code: 0, 3 when
 * the things could not connect, 1 on another failure. Writes --summary-json if given. */
int sim_shadow_run(const struct sim_opts *o, atomic_int *stop);

#endif
