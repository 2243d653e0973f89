/*
 * test_auth_policy.c — the broker plugin's policy engine (gateway/auth/policy.c), which is
 * built into the plugin .so rather than libtidegate.a, so this test compiles the source in
 * directly. Tables of (filter, topic, expected) drive the topic algebra; documents with
 * each policy variable drive resolution and evaluation; bad documents must fail with a
 * message that names the problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/policy.c"

typedef struct { const char *a, *b; int want; } case3;

static void test_topic_matches(void **state)
{
	(void)state;
	static const case3 cases[] = {
		{"devices/d1/#", "devices/d1/telemetry", 1},
		{"devices/d1/#", "devices/d1", 1}, /* # covers the parent level */
		{"devices/d1/#", "devices/d2/telemetry", 0},
		{"devices/d1/#", "devices/d10/x", 0},
		{"devices/+/t", "devices/d1/t", 1},
		{"devices/+/t", "devices//t", 1},
		{"devices/+/t", "devices/d1/t/x", 0},
		{"devices/+", "devices", 0},
		{"#", "anything/at/all", 1},
		{"#", "$SYS/broker/uptime", 0},
		{"+/broker/uptime", "$SYS/broker/uptime", 0},
		{"$SYS/#", "$SYS/broker/uptime", 1},
		{"a/b", "a/b", 1},
		{"a/b", "a/b/c", 0},
		{"a/b/c", "a/b", 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int got = policy_topic_matches(cases[i].a, cases[i].b);
		if (got != cases[i].want)
			fail_msg("matches(%s, %s) = %d, want %d", cases[i].a, cases[i].b, got, cases[i].want);
	}
}

static void test_filter_covers_and_overlaps(void **state)
{
	(void)state;
	static const case3 covers[] = {
		{"commands/d1/#", "commands/d1/#", 1},
		{"commands/d1/#", "commands/d1/+", 1},
		{"commands/d1/#", "commands/d1", 1},
		{"commands/d1/#", "commands/+/x", 0},
		{"commands/d1/#", "commands/#", 0},
		{"commands/d1/#", "#", 0},
		{"commands/+/x", "commands/d1/x", 1},
		{"commands/+/x", "commands/+/x", 1},
		{"commands/+/x", "commands/#", 0},
		{"#", "devices/#", 1},
		{"#", "$SYS/#", 0},
		{"+/#", "$SYS/broker", 0},
		{"$SYS/#", "$SYS/broker/#", 1},
		{"a/b", "a/+", 0},
	};
	for (size_t i = 0; i < sizeof covers / sizeof covers[0]; i++) {
		int got = policy_filter_covers(covers[i].a, covers[i].b);
		if (got != covers[i].want)
			fail_msg("covers(%s, %s) = %d, want %d", covers[i].a, covers[i].b, got, covers[i].want);
	}
	static const case3 overlaps[] = {
		{"devices/secret/#", "devices/#", 1},
		{"devices/secret/#", "devices/+/x", 1},
		{"devices/secret/#", "devices/public/#", 0},
		{"devices/secret", "devices/secret/#", 1},
		{"a/+", "a", 0},
		{"#", "$SYS/x", 0},
		{"$SYS/#", "$SYS/x", 1},
		{"a/b/c", "a/b/c", 1},
		{"a/b/c", "a/b/d", 0},
	};
	for (size_t i = 0; i < sizeof overlaps / sizeof overlaps[0]; i++) {
		int got = policy_filter_overlaps(overlaps[i].a, overlaps[i].b);
		int rev = policy_filter_overlaps(overlaps[i].b, overlaps[i].a);
		if (got != overlaps[i].want || rev != got)
			fail_msg("overlaps(%s, %s) = %d/%d, want %d", overlaps[i].a, overlaps[i].b, got,
				 rev, overlaps[i].want);
	}
	assert_false(policy_filter_valid("a/#/b"));
	assert_false(policy_filter_valid("a/b#"));
	assert_false(policy_filter_valid("a+/b"));
	assert_false(policy_filter_valid(""));
	assert_true(policy_filter_valid("+/+/#"));
}

static const char *attr_lookup(void *ud, const char *name)
{
	const char *const *kv = ud;
	for (; kv[0]; kv += 2)
		if (!strcmp(kv[0], name))
			return kv[1];
	return NULL;
}

static policy_resolved *resolve(const char *doc, const char *client_id, const char *thing,
				const char *cn, const char *const *attrs)
{
	char err[300];
	policy *p = policy_parse(doc, strlen(doc), "test", err, sizeof err);
	if (!p)
		fail_msg("parse: %s", err);
	policy_vars v = {client_id, thing, cn, attr_lookup, (void *)attrs};
	policy_resolved *r = policy_resolve(p, &v);
	policy_free(p);
	assert_non_null(r);
	return r;
}

static void test_default_thing_policy(void **state)
{
	(void)state;
	static const char *const none[] = {NULL};
	policy_resolved *r = resolve(POLICY_DEFAULT_THING, "dev-1", "dev-1", "dev-1", none);
	assert_true(policy_check(r, POLICY_PUBLISH, "devices/dev-1/telemetry"));
	assert_false(policy_check(r, POLICY_PUBLISH, "devices/dev-2/telemetry"));
	assert_false(policy_check(r, POLICY_PUBLISH, "commands/dev-1/x"));
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "commands/dev-1/#"));
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "$share/g/commands/dev-1/reboot"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "commands/+/#"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "commands/#"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "devices/dev-1/#"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "$share//x"));
	assert_true(policy_check(r, POLICY_RECEIVE, "commands/dev-1/reboot"));
	assert_false(policy_check(r, POLICY_RECEIVE, "commands/dev-2/reboot"));
	policy_resolved_free(r);
	assert_false(policy_check(NULL, POLICY_PUBLISH, "devices/dev-1/x"));
}

/* Device Shadows ($aws/things/...): a thing asks about its own shadows and hears every
 * answer about them, never another thing's, and never speaks on an answer topic; the
 * gateway serves them all (its "#" alone would not cover a $ topic). */
static void test_default_policies_shadows(void **state)
{
	(void)state;
	static const char *const none[] = {NULL};
	policy_resolved *r = resolve(POLICY_DEFAULT_THING, "dev-1", "dev-1", "dev-1", none);
	static const char *const ops[] = {"update", "get", "delete", "name/cfg/update", "name/cfg/get", "name/cfg/delete"};
	char t[256];
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		snprintf(t, sizeof t, "$aws/things/dev-1/shadow/%s", ops[i]);
		assert_true(policy_check(r, POLICY_PUBLISH, t));
		snprintf(t, sizeof t, "$aws/things/dev-2/shadow/%s", ops[i]);
		assert_false(policy_check(r, POLICY_PUBLISH, t));
		snprintf(t, sizeof t, "$aws/things/dev-1/shadow/%s/accepted", ops[i]);
		assert_false(policy_check(r, POLICY_PUBLISH, t));
		assert_true(policy_check(r, POLICY_RECEIVE, t));
		snprintf(t, sizeof t, "$aws/things/dev-2/shadow/%s/accepted", ops[i]);
		assert_false(policy_check(r, POLICY_RECEIVE, t));
	}
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/dev-1/shadow/#"));
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/dev-1/shadow/name/+/update/delta"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/+/shadow/update/delta"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/dev-2/shadow/#"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "$aws/#"));
	assert_false(policy_check(r, POLICY_PUBLISH, "$aws/things/dev-1/jobs/get"));
	policy_resolved_free(r);
	r = resolve(POLICY_DEFAULT_GATEWAY, "tidegate-gateway", NULL, "tidegate-gateway", none);
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/+/shadow/update"));
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "$aws/things/+/shadow/name/+/delete"));
	assert_true(policy_check(r, POLICY_RECEIVE, "$aws/things/dev-7/shadow/get"));
	assert_true(policy_check(r, POLICY_PUBLISH, "$aws/things/dev-7/shadow/get/accepted"));
	assert_true(policy_check(r, POLICY_PUBLISH, "devices/x/y"));
	assert_false(policy_check(r, POLICY_PUBLISH, "$aws/things/dev-7/jobs/x"));
	policy_resolved_free(r);
}

static void test_each_variable(void **state)
{
	(void)state;
	static const char *const attrs[] = {"site", "north", "bad", "", NULL};
	static const char doc[] =
		"{\"Statement\":["
		"{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":["
		" \"topic/c/${iot:ClientId}\","
		" \"topic/t/${iot:Connection.Thing.ThingName}\","
		" \"arn:aws:iot:eu-west-1:123456789012:topic/s/${iot:Connection.Thing.Attributes[site]}/#\","
		" \"n/${iot:Certificate.Subject.CommonName}/x\","
		" \"m/${iot:Connection.Thing.Attributes[missing]}\","
		" \"e/${iot:Connection.Thing.Attributes[bad]}\"]}]}";
	policy_resolved *r = resolve(doc, "cid-1", "thing-1", "cn-1", attrs);
	assert_true(policy_check(r, POLICY_PUBLISH, "c/cid-1"));
	assert_false(policy_check(r, POLICY_PUBLISH, "c/thing-1"));
	assert_true(policy_check(r, POLICY_PUBLISH, "t/thing-1"));
	assert_false(policy_check(r, POLICY_PUBLISH, "t/cid-1"));
	assert_true(policy_check(r, POLICY_PUBLISH, "s/north/a/b"));
	assert_false(policy_check(r, POLICY_PUBLISH, "s/south/a"));
	assert_true(policy_check(r, POLICY_PUBLISH, "n/cn-1/x"));
	assert_false(policy_check(r, POLICY_PUBLISH, "n/cid-1/x"));
	/* unresolved (missing or empty) attributes grant nothing */
	assert_false(policy_check(r, POLICY_PUBLISH, "m/"));
	assert_false(policy_check(r, POLICY_PUBLISH, "e/"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "c/cid-1")); /* action not granted */
	policy_resolved_free(r);

	/* the gateway is no thing: ThingName does not resolve */
	r = resolve(doc, "gw", NULL, "tidegate-gateway", attrs);
	assert_false(policy_check(r, POLICY_PUBLISH, "t/gw"));
	assert_false(policy_check(r, POLICY_PUBLISH, "s/north/a"));
	assert_true(policy_check(r, POLICY_PUBLISH, "c/gw"));
	policy_resolved_free(r);

	/* a CN with a wildcard or a slash must not widen the grant */
	r = resolve(doc, "cid", "t", "evil/#", attrs);
	assert_false(policy_check(r, POLICY_PUBLISH, "n/evil/anything/x"));
	policy_resolved_free(r);
}

static void test_deny_wins_and_fails_closed(void **state)
{
	(void)state;
	static const char *const attrs[] = {"zone", "z1", NULL};
	static const char doc[] =
		"{\"Statement\":["
		"{\"Effect\":\"Allow\",\"Action\":\"iot:*\",\"Resource\":\"#\"},"
		"{\"Effect\":\"Deny\",\"Action\":[\"iot:Publish\",\"iot:Subscribe\"],"
		" \"Resource\":\"secret/${iot:Connection.Thing.Attributes[zone]}/#\"}]}";
	policy_resolved *r = resolve(doc, "d", "d", "d", attrs);
	assert_true(policy_check(r, POLICY_PUBLISH, "open/x"));
	assert_false(policy_check(r, POLICY_PUBLISH, "secret/z1/x"));
	assert_true(policy_check(r, POLICY_PUBLISH, "secret/z2/x"));
	assert_false(policy_check(r, POLICY_SUBSCRIBE, "secret/#")); /* overlaps the deny */
	assert_true(policy_check(r, POLICY_SUBSCRIBE, "secret/z2/#"));
	assert_true(policy_check(r, POLICY_RECEIVE, "secret/z1/x")); /* receive not denied */
	policy_resolved_free(r);

	/* the deny's attribute is missing: it denies everything it names an action for */
	static const char *const none[] = {NULL};
	r = resolve(doc, "d", "d", "d", none);
	assert_false(policy_check(r, POLICY_PUBLISH, "open/x"));
	assert_true(policy_check(r, POLICY_RECEIVE, "open/x"));
	policy_resolved_free(r);
}

static void test_bad_documents(void **state)
{
	(void)state;
	static const struct { const char *doc, *needle; } bad[] = {
		{"{", "test:1:"},
		{"{\"Statement\":[]}", "non-empty"},
		{"{\"Statement\":[{\"Effect\":\"Maybe\",\"Action\":\"iot:Publish\",\"Resource\":\"a\"}]}", "Effect"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"a\"}]}", "unsupported Action"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"a/*\"}]}", "'*' is not supported"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"a/${iot:Nope}\"}]}", "unknown policy variable ${iot:Nope}"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"a/${iot:ClientId\"}]}", "unterminated"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"a/#/b\"}]}", "not a valid MQTT topic filter"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\"}]}", "needs a Resource"},
		{"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"a\",\"Condition\":{}}]}", "unknown statement key"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char err[300] = "";
		policy *p = policy_parse(bad[i].doc, strlen(bad[i].doc), "test", err, sizeof err);
		if (p || !strstr(err, bad[i].needle))
			fail_msg("doc %zu: got %s / \"%s\", want error containing \"%s\"", i,
				 p ? "a policy" : "NULL", err, bad[i].needle);
	}
	char err[300];
	assert_null(policy_load_file("/nonexistent/policy.json", err, sizeof err));
	assert_non_null(strstr(err, "cannot read policy"));
	policy *g = policy_parse(POLICY_DEFAULT_GATEWAY, strlen(POLICY_DEFAULT_GATEWAY), "gw", err, sizeof err);
	assert_non_null(g);
	policy_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topic_matches),
		cmocka_unit_test(test_filter_covers_and_overlaps),
		cmocka_unit_test(test_default_thing_policy),
		cmocka_unit_test(test_default_policies_shadows),
		cmocka_unit_test(test_each_variable),
		cmocka_unit_test(test_deny_wins_and_fails_closed),
		cmocka_unit_test(test_bad_documents),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
