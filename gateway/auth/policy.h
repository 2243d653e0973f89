/*
 * policy.h — IoT Core-style policy documents for the broker plugin, on MQTT topic filters.
 *
 * A document is JSON in the shape of an AWS IoT policy:
 *
 *   {"Version": "2012-10-17",
 *    "Statement": [
 *      {"Effect": "Allow", "Action": ["iot:Publish"],
 *       "Resource": ["topic/devices/${iot:Connection.Thing.ThingName}/#"]},
 *      {"Effect": "Deny", "Action": "iot:Subscribe", "Resource": "topicfilter/commands/x/#"}]}
 *
 * Actions are iot:Publish, iot:Subscribe, iot:Receive (iot:* = all three). A resource is an
 * MQTT topic filter (+ and #), optionally written with IoT Core's "topic/", "topicfilter/"
 * or a full "arn:…:topic/" prefix; IAM's '*' is refused rather than silently misread.
 * Variables: ${iot:ClientId}, ${iot:Connection.Thing.ThingName},
 * ${iot:Connection.Thing.Attributes[NAME]}, ${iot:Certificate.Subject.CommonName}.
 *
 * Two stages keep the broker's hot path cheap: policy_parse() checks and keeps the document
 * once; policy_resolve() substitutes one client's variables when it connects (or when the
 * registry changes) into a policy_resolved list of concrete filters; policy_check() then
 * only matches strings. Evaluation is IoT Core's: an explicit Deny wins, then an Allow,
 * otherwise deny. Publish and Receive match the concrete topic against the filter;
 * Subscribe is allowed when the requested filter is covered by an Allow filter (every topic
 * it can match is allowed) and denied when it overlaps a Deny filter at all. A variable that
 * cannot be resolved (missing attribute, value with '/', '+', '#', or empty) drops that
 * resource from an Allow and turns it into "everything" in a Deny: fail closed.
 * "$share/GROUP/" is stripped from subscription filters before checking.
 *
 * No dependency on the broker or on tidegate's logging, so the unit test links it alone.
 */
#ifndef TG_AUTH_POLICY_H
#define TG_AUTH_POLICY_H

#include <stddef.h>

enum { POLICY_PUBLISH = 1, POLICY_SUBSCRIBE = 2, POLICY_RECEIVE = 4 };

typedef struct policy policy;
typedef struct policy_resolved policy_resolved;

/* The connection facts variables resolve to. thing may be NULL (the gateway identity is not
 * a thing: ThingName and Attributes then do not resolve). attr returns the value of
 * attribute name or NULL; the returned string is borrowed until policy_resolve returns. */
typedef struct policy_vars {
	const char *client_id;
	const char *thing;
	const char *common_name;
	const char *(*attr)(void *ud, const char *name);
	void *attr_ud;
} policy_vars;

/* Parse a document. origin names it in errors ("policy.json"). NULL + message on error.
 * Caller owns the result. */
policy *policy_parse(const char *json, size_t len, const char *origin, char *err, size_t errlen);
/* Read and parse a file (at most 256 KiB). */
policy *policy_load_file(const char *path, char *err, size_t errlen);
void policy_free(policy *p); /* NULL-safe */

/* The built-in documents: a thing publishes under devices/<thing>/# and its own shadow
 * requests ($aws/things/<thing>/shadow/{update,get,delete} and .../name/+/...), and
 * subscribes to and receives commands/<thing>/# and $aws/things/<thing>/shadow/#; the gateway
 * may do anything, its shadow topics included. */
extern const char POLICY_DEFAULT_THING[];
extern const char POLICY_DEFAULT_GATEWAY[];

/* Substitute v into p. Caller owns the result; NULL only when out of memory. */
policy_resolved *policy_resolve(const policy *p, const policy_vars *v);
void policy_resolved_free(policy_resolved *r); /* NULL-safe */

/* 1 when action (one POLICY_* bit) on topic (a topic for publish/receive, a filter for
 * subscribe) is allowed, else 0. r NULL denies. */
int policy_check(const policy_resolved *r, int action, const char *topic);

/* MQTT topic-filter algebra, exposed for tests. Filters must be valid (policy_filter_valid). */
int policy_filter_valid(const char *filter);
int policy_topic_matches(const char *filter, const char *topic);
int policy_filter_covers(const char *outer, const char *inner);
int policy_filter_overlaps(const char *a, const char *b);

#endif
