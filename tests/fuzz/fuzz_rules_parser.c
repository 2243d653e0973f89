/*
 * fuzz_rules_parser.c — libFuzzer target for the rules engine's front end.
 *
 * The input is used twice: as raw SQL text through rules_parse_stmt() (in both SQL versions,
 * whose lexers differ on whole-number literals), and as a whole rule
 * file through rules_load_text() (JSON parsing, position mapping, templates, alert
 * conditions). When a rule loads, it is evaluated once against a fixed message so the
 * evaluator also sees whatever tree the fuzzer managed to build. Nothing may crash, leak
 * or trip a sanitizer; errors are the expected outcome for most inputs.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"
#include "rules/rules_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int noop(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	(void)ud;
	(void)a;
	(void)err;
	(void)errlen;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	size_t pos = 0;
	if (size > 64 * 1024)
		return 0;
	rules_stmt *st = rules_parse_stmt((const char *)data, size, RULES_SQL_2016_03_23, &pos, err, sizeof err);
	rules_stmt_free(st);
	st = rules_parse_stmt((const char *)data, size, RULES_SQL_2015_10_08, &pos, err, sizeof err);
	rules_stmt_free(st);
	rules_set *rs = rules_load_text("fuzz.json", (const char *)data, size, NULL, err, sizeof err);
	if (rs) {
		json_t *j = json_loads("{\"temperature\":31.5,\"sensor_id\":\"dev-0001\",\"e\":[{\"n\":\"a\",\"v\":1}]}", 0, NULL);
		tg_msg m = {.topic = "devices/dev-0001/telemetry",
			    .thing = "dev-0001",
			    .client_id = "dev-0001",
			    .principal = "dev-0001",
			    .payload = "{}",
			    .payloadlen = 2,
			    .json = j,
			    .received_ms = 1700000000000LL};
		rules_eval(rs, &m, noop, NULL, NULL);
		m.topic = "other";
		rules_eval(rs, &m, noop, NULL, NULL);
		json_decref(j);
		rules_set_free(rs);
	}
	return 0;
}
