/*
 * test_identity.c — which thing a message speaks for (gateway/mqtt/identity.c): the topic level
 * whatever properties a device adds in `topic` mode, the stamped property in `stamped`
 * mode (the topic level when there is none), and topics without a thing level. The probe
 * against a real broker is covered by tests/integration/test_identity.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "core/err.h"
#include "mqtt/identity.h"

static mosquitto_property *props_with(const char *const *kv)
{
	mosquitto_property *p = NULL;
	for (; kv[0]; kv += 2)
		assert_int_equal(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, kv[0], kv[1]), 0);
	/* a property of another kind in between must not confuse the search */
	assert_int_equal(mosquitto_property_add_string(&p, MQTT_PROP_CONTENT_TYPE, "application/json"), 0);
	return p;
}

static void test_topic_mode_ignores_the_property(void **state)
{
	(void)state;
	static const char *const kv[] = {"site", "north", IDENTITY_PROPERTY, "dev-0001", NULL};
	mosquitto_property *p = props_with(kv);
	char out[64];
	assert_int_equal(identity_thing(IDENTITY_TOPIC, "devices/dev-0042/telemetry", (void *)p, out, sizeof out), 0);
	assert_string_equal(out, "dev-0042");
	mosquitto_property_free_all(&p);
}

static void test_stamped_mode_takes_the_property(void **state)
{
	(void)state;
	static const char *const kv[] = {"site", "north", IDENTITY_PROPERTY, "dev-0001", NULL};
	mosquitto_property *p = props_with(kv);
	char out[64];
	assert_int_equal(identity_thing(IDENTITY_STAMPED, "devices/dev-0042/telemetry", (void *)p, out, sizeof out), 0);
	assert_string_equal(out, "dev-0001");
	mosquitto_property_free_all(&p);
	/* no stamp (a service identity): the topic level */
	static const char *const none[] = {"site", "north", NULL};
	p = props_with(none);
	assert_int_equal(identity_thing(IDENTITY_STAMPED, "devices/dev-0042/telemetry", (void *)p, out, sizeof out), 0);
	assert_string_equal(out, "dev-0042");
	mosquitto_property_free_all(&p);
	assert_int_equal(identity_thing(IDENTITY_STAMPED, "aggregates/dev-7", NULL, out, sizeof out), 0);
	assert_string_equal(out, "dev-7");
}

static void test_no_thing_level(void **state)
{
	(void)state;
	char out[8];
	assert_int_equal(identity_thing(IDENTITY_TOPIC, "telemetry", NULL, out, sizeof out), TG_EINVAL);
	assert_int_equal(identity_thing(IDENTITY_TOPIC, "devices//telemetry", NULL, out, sizeof out), TG_EINVAL);
	assert_int_equal(identity_thing(IDENTITY_TOPIC, "devices/a-much-too-long-name/x", NULL, out, sizeof out),
			 TG_EINVAL);
	assert_int_equal(identity_thing(IDENTITY_TOPIC, "devices/dev-1", NULL, out, sizeof out), 0);
	assert_string_equal(out, "dev-1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topic_mode_ignores_the_property),
		cmocka_unit_test(test_stamped_mode_takes_the_property),
		cmocka_unit_test(test_no_thing_level),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
