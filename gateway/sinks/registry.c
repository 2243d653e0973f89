/*
 * registry.c — the static list of sink types, found by name (config `type = ...`).
 */
#include <string.h>

#include "sinks/sink.h"

extern const sink_ops sink_file_ops;

static const sink_ops *const all_sinks[] = {
	&sink_file_ops,
	NULL,
};

const sink_ops *sink_ops_find(const char *type)
{
	for (size_t i = 0; all_sinks[i]; i++)
		if (strcmp(all_sinks[i]->type, type) == 0)
			return all_sinks[i];
	return NULL;
}

const sink_ops *const *sink_ops_all(void) { return all_sinks; }
