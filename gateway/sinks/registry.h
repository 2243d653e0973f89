/*
 * registry.h — the sink types this build has, by name. The interface they implement is
 * the forwarder's (store/sink.h); this list is the one place that knows every
 * implementation, so only the wiring (main, daemon, the CLIs that read a config) includes
 * it and hands config_load() the list.
 */
#ifndef TG_SINKS_REGISTRY_H
#define TG_SINKS_REGISTRY_H

#include "store/sink.h"

/* Find a sink type by name in the static registry (sinks/registry.c); NULL if unknown. */
const sink_ops *sink_ops_find(const char *type);
/* NULL-terminated list of all registered sink types. */
const sink_ops *const *sink_ops_all(void);
/* The same list as config_load() takes it: each type's conf member. */
const config_sink_type *const *sink_types_all(void);

#endif
