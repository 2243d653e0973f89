/*
 * registry.c — the static list of sink types, found by name (config `type = ...`). A sink
 * type is a `const sink_ops` defined in its own file; adding one means adding one line
 * here. Lookup is a linear scan: there are a handful of types and it runs only while
 * loading the config.
 */
#include <string.h>

#include "sinks/registry.h"

extern const sink_ops sink_file_ops;
extern const sink_ops sink_kinesis_ops;
extern const sink_ops sink_s3_ops;
extern const sink_ops sink_webhook_ops;
extern const sink_ops sink_mqtt_ops;
extern const sink_ops sink_nats_ops;

static const sink_ops *const all_sinks[] = {
	&sink_file_ops,
	&sink_kinesis_ops,
	&sink_s3_ops,
	&sink_webhook_ops,
	&sink_mqtt_ops,
	&sink_nats_ops,
	NULL,
};

/* What config_load() parses [sink NAME] sections with; in all_sinks' order. */
static const config_sink_type *const all_types[] = {
	&sink_file_ops.conf,
	&sink_kinesis_ops.conf,
	&sink_s3_ops.conf,
	&sink_webhook_ops.conf,
	&sink_mqtt_ops.conf,
	&sink_nats_ops.conf,
	NULL,
};

const sink_ops *sink_ops_find(const char *type)
{
	for (size_t i = 0; type && all_sinks[i]; i++)
		if (strcmp(all_sinks[i]->conf.type, type) == 0)
			return all_sinks[i];
	return NULL;
}

const sink_ops *const *sink_ops_all(void)
{
	return all_sinks;
}

const config_sink_type *const *sink_types_all(void)
{
	return all_types;
}
