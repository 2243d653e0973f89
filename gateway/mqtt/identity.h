/*
 * identity.h — which thing a received message speaks for, and the start-up check that makes
 * the broker-stamped identity trustworthy.
 *
 * Nothing a device sends is trusted for identity. Two sources can be:
 *  - `topic` (the default): the topic's second level (devices/<thing>/...), which the broker
 *    ACL or policy lets a device publish only under its own name. A `tidegate-thing` user
 *    property on the message is ignored, whoever set it.
 *  - `stamped`: the `tidegate-thing` user property the tidegate auth plugin puts on every
 *    message a thing publishes, after removing any property of that name the client sent.
 *    Without the plugin the same property comes straight from the device, so this mode is
 *    only safe when the broker really runs the plugin: identity_probe() checks it before
 *    the daemon takes any message. It publishes, on a connection of its own, a probe that
 *    carries a forged property and reads it back: the plugin strips it from every client,
 *    service identities included, so a probe that returns without it proves the broker
 *    rewrites the property; one that returns with it proves it does not. Messages without
 *    the property (service identities, which the plugin does not stamp) fall back to the
 *    topic level.
 *
 * Ownership: everything is borrowed; nothing here keeps state between calls.
 */
#ifndef TG_IDENTITY_H
#define TG_IDENTITY_H

#include <stddef.h>

#include "core/config.h"

#define IDENTITY_PROPERTY "tidegate-thing"
/* The probe's topic: the gateway needs publish and subscribe rights on it (shipped ACL and
 * gateway policy grant tidegate/identity-probe/#). */
#define IDENTITY_PROBE_PREFIX "tidegate/identity-probe/"

/* Index into the [broker] identity enum of the config. */
typedef enum { IDENTITY_TOPIC = 0, IDENTITY_STAMPED = 1 } identity_mode;

struct mqtt5__property;

/* The thing a message speaks for, into out. props: the message's MQTT v5 properties or
 * NULL. 0, or TG_EINVAL when the topic has no thing level (and no stamp applies). */
int identity_thing(identity_mode mode, const char *topic, const struct mqtt5__property *props, char *out,
		   size_t outlen);

/* Ask the broker of cfg whether it stamps identities (see above), waiting at most
 * timeout_ms. 0: it does. TG_EPERM: it does not, or it refused the probe (err says which;
 * the configuration is wrong, retrying will not help). TG_ENET: it could not be asked
 * (not reachable, no answer in time); err says why. */
int identity_probe(const tg_config *cfg, int timeout_ms, char *err, size_t errlen);

#endif
