/*
 * msg.h — one MQTT message as it travels through the ingest pipeline
 * (schema -> rules -> actions). Everything in it is borrowed from the caller for the
 * duration of one pipeline call; nothing here is owned by the struct.
 */
#ifndef TG_MSG_H
#define TG_MSG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct mqtt5__property; /* libmosquitto's mosquitto_property */

typedef struct tg_msg {
	const char *topic;         /* full topic, e.g. devices/dev-0001/telemetry */
	const char *thing;         /* authenticated thing (identity property or topic(2)) */
	const char *client_id;     /* MQTT client id of the publisher, if known, else thing */
	const char *principal;     /* certificate identity (CN) if known, else thing */
	const void *payload;       /* raw payload bytes */
	size_t payloadlen;
	json_t *json;              /* parsed payload (object) or NULL if not JSON */
	int64_t received_ms;       /* epoch ms when the gateway received it */
	int qos;
	const struct mqtt5__property *props; /* MQTT v5 properties or NULL */
} tg_msg;

#endif
