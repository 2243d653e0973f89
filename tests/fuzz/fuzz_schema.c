/*
 * fuzz_schema.c — fuzz target for the payload path (raw checks + schema apply) and the schema
 * loader. The first input byte picks the mode: odd = the rest is an MQTT payload run through
 * schema_parse_payload and schema_apply against a schema set exercising every feature
 * (renames, units, patterns, enums, timestamps, unknown-field policies); even = the rest is a
 * schema file compiled with schema_load_buffer and, if it loads, applied to a fixed payload.
 * Either way the invariants checked are: no crash, no leak, a rejection always names a valid
 * reason, and an accepted telemetry object carries an integer ts and a 24-char ts_iso.
 * The payload mode is also a differential test of schema.c's own fast JSON parser against
 * jansson: whatever schema_parse_payload accepts, jansson must accept as an equal value, and
 * what it rejects as bad JSON (or a duplicate key, or bad UTF-8) jansson must reject too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "edge/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SCHEMA_A[] =
	"{\"topic\":\"devices/+/telemetry\",\"unknownFields\":\"keep\","
	"\"timestamp\":{\"field\":\"ts\",\"maxSkewSeconds\":86400},"
	"\"fields\":{\"sensor_id\":{\"type\":\"string\",\"required\":true,"
	"\"pattern\":\"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$\"},"
	"\"temperature\":{\"type\":\"number\",\"required\":true,\"min\":-60,\"max\":100,"
	"\"unit\":{\"field\":\"unit\",\"to\":\"C\"}},"
	"\"humidity\":{\"type\":\"number\",\"min\":0,\"max\":100},"
	"\"seq\":{\"type\":\"integer\",\"min\":0},"
	"\"status\":{\"enum\":[\"ok\",\"fault\"],\"default\":\"ok\"},"
	"\"tags\":{\"type\":[\"array\",\"null\"]},"
	"\"note\":{\"type\":\"string\",\"maxLength\":16,\"pattern\":\"^(a|aa)+$\"}}}";
static const char SCHEMA_B[] =
	"{\"topics\":[\"legacy/#\",\"x/+/y\"],\"unknownFields\":\"drop\",\"matchLimit\":200,"
	"\"renames\":{\"DeviceID\":\"sensor_id\",\"Temp\":\"temperature\",\"Unit\":\"unit\"},"
	"\"timestamp\":{\"field\":\"Time\",\"format\":\"rfc3339\",\"required\":false,"
	"\"isoOutput\":\"time_iso\"},"
	"\"fields\":{\"temperature\":{\"type\":\"number\",\"round\":2,"
	"\"unit\":{\"field\":\"unit\",\"to\":\"C\",\"default\":\"F\"}},"
	"\"p\":{\"type\":\"number\",\"unit\":{\"from\":\"inHg\",\"to\":\"hPa\"}}}}";
static const char *const TOPICS[] = {"devices/dev-0001/telemetry", "legacy/a/weather", "x/1/y",
				     "other"};

static void check_after(const schema_set *set, const char *topic, json_t *o)
{
	schema_reject why;
	schema_stats st = {0};
	int rc = schema_apply(set, topic, o, 1764088209123LL, &why, &st);
	if (rc == TG_EINVAL) {
		if (why.reason <= SCHEMA_R_NONE || why.reason >= SCHEMA_R__COUNT)
			abort();
		if (st.rejected[why.reason] != 1)
			abort();
	} else if (rc == SCHEMA_APPLIED && strcmp(topic, TOPICS[0]) == 0) {
		json_t *ts = json_object_get(o, "ts"), *iso = json_object_get(o, "ts_iso");
		if (!json_is_integer(ts) || !json_is_string(iso) || json_string_length(iso) != 24)
			abort();
	} else if (rc != SCHEMA_APPLIED && rc != SCHEMA_NO_MATCH && rc != TG_ENOMEM) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	if (size < 1)
		return 0;
	if (data[0] & 1) {
		schema_set *a = schema_load_buffer("a.json", SCHEMA_A, strlen(SCHEMA_A), err, sizeof err);
		schema_set *b = schema_load_buffer("b.json", SCHEMA_B, strlen(SCHEMA_B), err, sizeof err);
		if (!a || !b)
			abort(); /* the built-in schemas must always load */
		schema_reject why;
		schema_limits lim = {.max_bytes = 4096, .max_depth = 8};
		json_t *o = schema_parse_payload(data + 1, size - 1, &lim, &why, NULL);
		json_t *ref = json_loadb((const char *)data + 1, size - 1,
					 JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
		if (o && (!ref || !json_equal(o, ref)))
			abort(); /* accepted something jansson rejects, or built another value */
		if (!o && (why.reason == SCHEMA_R_BAD_JSON || why.reason == SCHEMA_R_DUPLICATE_KEY ||
			   why.reason == SCHEMA_R_INVALID_UTF8) && ref)
			abort();
		if (!o && why.reason == SCHEMA_R_NOT_OBJECT && (!ref || json_is_object(ref)))
			abort();
		json_decref(ref);
		if (!o) {
			if (why.reason <= SCHEMA_R_NONE || why.reason >= SCHEMA_R__COUNT)
				abort();
		} else {
			const char *topic = TOPICS[(data[0] >> 1) % 4];
			check_after(schema_match(a, topic) ? a : b, topic, o);
			json_decref(o);
		}
		schema_set_free(a);
		schema_set_free(b);
		return 0;
	}
	schema_set *s = schema_load_buffer("f.json", (const char *)data + 1, size - 1, err, sizeof err);
	if (!s) {
		if (!strstr(err, "f.json:"))
			abort(); /* every load error names the file and a position */
		return 0;
	}
	static const char payload[] = "{\"sensor_id\":\"dev-0001\",\"ts\":1764088209123,"
				      "\"temperature\":21.5,\"humidity\":48.2,\"pressure\":1013.2,\"seq\":7}";
	json_t *o = json_loads(payload, 0, NULL);
	for (int i = 0; i < 4 && o; i++) {
		schema_reject why;
		(void)schema_apply(s, TOPICS[i], o, 1764088209123LL, &why, NULL);
	}
	json_decref(o);
	schema_set_free(s);
	return 0;
}
