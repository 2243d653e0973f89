/*
 * fuzz_auth_policy.c — the broker plugin's policy parser, resolver and topic algebra.
 *
 * The plugin runs inside Mosquitto, where a crash takes the broker down, so its one parser
 * of outside text (policy documents) gets a fuzz target. The input is parsed as a policy;
 * when it parses it is resolved against a fixed identity (attributes included) and checked
 * for every action against topics cut from the input itself, and the input's first two
 * lines also go through the filter algebra when they are valid filters. Compiles
 * gateway/auth/policy.c in directly: it belongs to the plugin .so, not libtidegate.a.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/policy.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *attr(void *ud, const char *name)
{
	(void)ud;
	if (!strcmp(name, "site"))
		return "north";
	if (!strcmp(name, "bad"))
		return "a/#"; /* must never resolve */
	return NULL;
}

/* Copy the n-th line of data (n = 0, 1) into out as a C string; 0 when absent. */
static int line(const uint8_t *data, size_t size, int n, char *out, size_t outlen)
{
	size_t start = 0;
	for (int i = 0; i < n; i++) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		if (!nl)
			return 0;
		start = (size_t)(nl - data) + 1;
	}
	size_t k = 0;
	while (start + k < size && data[start + k] != '\n' && data[start + k] && k + 1 < outlen) {
		out[k] = (char)data[start + k];
		k++;
	}
	out[k] = '\0';
	return k > 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], a[512], b[512];
	policy *p = policy_parse((const char *)data, size, "fuzz", err, sizeof err);
	int have_a = line(data, size, 0, a, sizeof a), have_b = line(data, size, 1, b, sizeof b);
	policy_vars v = {"dev-1", "dev-1", "cn-1", attr, NULL};
	const policy *docs[2] = {p, NULL};
	policy *builtin = policy_parse(POLICY_DEFAULT_THING, strlen(POLICY_DEFAULT_THING), "b", err, sizeof err);
	docs[1] = builtin;
	for (int d = 0; d < 2; d++) {
		if (!docs[d])
			continue;
		policy_resolved *r = policy_resolve(docs[d], &v);
		const char *topics[] = {"devices/dev-1/t", "commands/dev-1/#", "$SYS/x", have_a ? a : "x",
					have_b ? b : "y"};
		for (size_t i = 0; r && i < sizeof topics / sizeof topics[0]; i++) {
			int pub = policy_check(r, POLICY_PUBLISH, topics[i]);
			int sub = policy_check(r, POLICY_SUBSCRIBE, topics[i]);
			(void)policy_check(r, POLICY_RECEIVE, topics[i]);
			(void)pub;
			(void)sub;
		}
		policy_resolved_free(r);
	}
	if (have_a && have_b && policy_filter_valid(a) && policy_filter_valid(b)) {
		int c = policy_filter_covers(a, b), o = policy_filter_overlaps(a, b);
		/* invariants: covering implies overlapping; overlap is symmetric */
		if ((c && !o) || o != policy_filter_overlaps(b, a))
			abort();
		if (policy_topic_matches(a, b) && !strpbrk(b, "+#") && !o)
			abort();
	}
	policy_free(p);
	policy_free(builtin);
	return 0;
}
