/*
 * policy.c — see policy.h. Parsing keeps each resource as a template split into literal
 * and variable parts, validated once (known variable names, a well-formed filter once
 * variables are replaced by a plain level), so resolving is a concatenation and checking
 * is a walk over '/'-separated levels without allocation.
 */
#include "auth/policy.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_MAX_FILE (256 * 1024)
#define POLICY_MAX_RESOURCE 1024

/* clang-format off */
/* A thing's shadow requests (classic and named) and every answer about its shadows; a "#"
 * in the first level never covers $aws topics, so the gateway's "everything" names them. */
#define SHADOW_REQUESTS(T)                                                                      \
	"\"topic/$aws/things/" T "/shadow/update\",\"topic/$aws/things/" T "/shadow/get\","        \
	"\"topic/$aws/things/" T "/shadow/delete\",\"topic/$aws/things/" T "/shadow/name/+/update\"," \
	"\"topic/$aws/things/" T "/shadow/name/+/get\",\"topic/$aws/things/" T "/shadow/name/+/delete\""
const char POLICY_DEFAULT_THING[] =
	"{\"Version\":\"2012-10-17\",\"Statement\":["
	"{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\","
	" \"Resource\":[\"topic/devices/${iot:Connection.Thing.ThingName}/#\","
	SHADOW_REQUESTS("${iot:Connection.Thing.ThingName}") "]},"
	"{\"Effect\":\"Allow\",\"Action\":[\"iot:Subscribe\",\"iot:Receive\"],"
	" \"Resource\":[\"topicfilter/commands/${iot:Connection.Thing.ThingName}/#\","
	"\"topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/#\"]}]}";
const char POLICY_DEFAULT_GATEWAY[] =
	"{\"Version\":\"2012-10-17\",\"Statement\":["
	"{\"Effect\":\"Allow\",\"Action\":\"iot:*\",\"Resource\":[\"#\",\"$aws/things/+/shadow/#\"]}]}";
/* clang-format on */

enum var_kind { VAR_NONE, VAR_CLIENT_ID, VAR_THING, VAR_ATTR, VAR_CN };

/* A resource template: literal text interleaved with variables. */
typedef struct part {
	enum var_kind kind;
	char *text; /* literal text (VAR_NONE) or attribute name (VAR_ATTR) */
} part;

typedef struct resource {
	part *parts;
	size_t nparts;
} resource;

typedef struct statement {
	int deny;
	int actions;
	resource *res;
	size_t nres;
} statement;

struct policy {
	statement *st;
	size_t nst;
};

typedef struct rule {
	int deny, actions, match_all;
	char *filter;
} rule;

struct policy_resolved {
	rule *rules;
	size_t n;
};

static int perr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int perr(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---- topic algebra ------------------------------------------------------------------- */

/* One level of a filter or topic: [s, s+len); *next is where the following level starts or
 * NULL when this was the last one. */
static size_t level(const char *s, const char **next)
{
	const char *slash = strchr(s, '/');
	if (slash) {
		*next = slash + 1;
		return (size_t)(slash - s);
	}
	*next = NULL;
	return strlen(s);
}

static int is(const char *s, size_t n, char c)
{
	return n == 1 && s[0] == c;
}

int policy_filter_valid(const char *f)
{
	if (!f || !*f || strlen(f) > 65535)
		return 0;
	const char *next = f;
	while (next) {
		const char *cur = next;
		size_t n = level(cur, &next);
		for (size_t i = 0; i < n; i++) {
			if ((cur[i] == '+' || cur[i] == '#') && n != 1)
				return 0;
		}
		if (is(cur, n, '#') && next)
			return 0;
	}
	return 1;
}

/* Is the remainder (a suffix of a filter, NULL = none) exactly "#"? "a/#" matches "a". */
static int rest_is_hash(const char *rest)
{
	return rest && strcmp(rest, "#") == 0;
}

int policy_topic_matches(const char *filter, const char *topic)
{
	if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
		return 0;
	const char *f = filter, *t = topic;
	for (;;) {
		const char *fn, *tn;
		size_t fl = level(f, &fn), tl = level(t, &tn);
		if (is(f, fl, '#'))
			return 1;
		if (!is(f, fl, '+') && (fl != tl || memcmp(f, t, fl) != 0))
			return 0;
		if (!fn && !tn)
			return 1;
		if (!tn)
			return rest_is_hash(fn);
		if (!fn)
			return 0;
		f = fn;
		t = tn;
	}
}

int policy_filter_covers(const char *outer, const char *inner)
{
	const char *o = outer, *i = inner;
	for (int depth = 0;; depth++) {
		const char *on, *in;
		size_t ol = level(o, &on), il = level(i, &in);
		int o_wild = is(o, ol, '+') || is(o, ol, '#');
		/* wildcards in the first level never match $-topics */
		if (depth == 0 && o_wild && il > 0 && i[0] == '$')
			return 0;
		if (is(o, ol, '#'))
			return 1;
		if (is(i, il, '#'))
			return 0;
		if (is(i, il, '+')) {
			if (!is(o, ol, '+'))
				return 0;
		} else if (!is(o, ol, '+') && (ol != il || memcmp(o, i, ol) != 0)) {
			return 0;
		}
		if (!on && !in)
			return 1;
		if (!in)
			return rest_is_hash(on);
		if (!on)
			return 0;
		o = on;
		i = in;
	}
}

int policy_filter_overlaps(const char *a, const char *b)
{
	for (int depth = 0;; depth++) {
		const char *an, *bn;
		size_t al = level(a, &an), bl = level(b, &bn);
		int a_wild = is(a, al, '+') || is(a, al, '#');
		int b_wild = is(b, bl, '+') || is(b, bl, '#');
		if (depth == 0 && ((a_wild && !b_wild && bl && b[0] == '$') ||
				   (b_wild && !a_wild && al && a[0] == '$')))
			return 0;
		if (is(a, al, '#') || is(b, bl, '#'))
			return 1;
		if (!is(a, al, '+') && !is(b, bl, '+') && (al != bl || memcmp(a, b, al) != 0))
			return 0;
		if (!an && !bn)
			return 1;
		if (!an)
			return rest_is_hash(bn);
		if (!bn)
			return rest_is_hash(an);
		a = an;
		b = bn;
	}
}

/* ---- parsing ------------------------------------------------------------------------- */

static void resource_clear(resource *r)
{
	for (size_t i = 0; i < r->nparts; i++)
		free(r->parts[i].text);
	free(r->parts);
}

void policy_free(policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nst; i++) {
		for (size_t j = 0; j < p->st[i].nres; j++)
			resource_clear(&p->st[i].res[j]);
		free(p->st[i].res);
	}
	free(p->st);
	free(p);
}

static int add_part(resource *r, enum var_kind kind, const char *text, size_t len)
{
	part *np = realloc(r->parts, (r->nparts + 1) * sizeof *np);
	if (!np)
		return -1;
	r->parts = np;
	np[r->nparts].kind = kind;
	np[r->nparts].text = text ? strndup(text, len) : NULL;
	if (text && !np[r->nparts].text)
		return -1;
	r->nparts++;
	return 0;
}

static const char *strip_resource_prefix(const char *s)
{
	if (strncmp(s, "arn:", 4) == 0) {
		/* arn:PARTITION:iot:REGION:ACCOUNT:topic/... — keep what follows the 5th ':' */
		const char *p = s;
		for (int i = 0; i < 5 && p; i++) {
			p = strchr(p, ':');
			if (p)
				p++;
		}
		s = p ? p : s;
	}
	if (strncmp(s, "topicfilter/", 12) == 0)
		return s + 12;
	if (strncmp(s, "topic/", 6) == 0)
		return s + 6;
	return s;
}

/* Split one resource string into parts and check it. */
static int parse_resource(const char *origin, const char *raw, resource *r, char *err,
			  size_t errlen)
{
	const char *s = strip_resource_prefix(raw);
	char shape[POLICY_MAX_RESOURCE + 1];
	size_t sl = 0;
	if (strlen(s) > POLICY_MAX_RESOURCE)
		return perr(err, errlen, "%s: resource longer than %d bytes", origin, POLICY_MAX_RESOURCE);
	if (strchr(s, '*'))
		return perr(err, errlen,
			    "%s: resource \"%s\": '*' is not supported, use the MQTT wildcards + and #",
			    origin, raw);
	while (*s) {
		const char *v = strstr(s, "${");
		size_t lit = v ? (size_t)(v - s) : strlen(s);
		if (lit) {
			if (add_part(r, VAR_NONE, s, lit))
				return perr(err, errlen, "out of memory");
			memcpy(shape + sl, s, lit);
			sl += lit;
			s += lit;
		}
		if (!v)
			break;
		const char *end = strchr(v, '}');
		if (!end)
			return perr(err, errlen, "%s: resource \"%s\": unterminated ${", origin, raw);
		const char *name = v + 2;
		size_t nl = (size_t)(end - name);
		enum var_kind kind = VAR_NONE;
		const char *attr = NULL;
		size_t al = 0;
		static const char attrs_prefix[] = "iot:Connection.Thing.Attributes[";
		if (nl == 12 && !memcmp(name, "iot:ClientId", 12))
			kind = VAR_CLIENT_ID;
		else if (nl == 30 && !memcmp(name, "iot:Connection.Thing.ThingName", 30))
			kind = VAR_THING;
		else if (nl == 34 && !memcmp(name, "iot:Certificate.Subject.CommonName", 34))
			kind = VAR_CN;
		else if (nl > sizeof attrs_prefix && !memcmp(name, attrs_prefix, sizeof attrs_prefix - 1) &&
			 name[nl - 1] == ']') {
			kind = VAR_ATTR;
			attr = name + sizeof attrs_prefix - 1;
			al = nl - (sizeof attrs_prefix - 1) - 1;
		}
		if (kind == VAR_NONE)
			return perr(err, errlen, "%s: resource \"%s\": unknown policy variable ${%.*s}",
				    origin, raw, (int)nl, name);
		if (add_part(r, kind, attr, al))
			return perr(err, errlen, "out of memory");
		shape[sl++] = 'v'; /* a variable stands for one plain, non-empty string */
		s = end + 1;
	}
	shape[sl] = '\0';
	if (!policy_filter_valid(shape))
		return perr(err, errlen, "%s: resource \"%s\" is not a valid MQTT topic filter", origin, raw);
	return 0;
}

static int parse_actions(const char *origin, json_t *a, int *out, char *err, size_t errlen)
{
	json_t *one;
	size_t i;
	json_t *list = json_is_array(a) ? json_incref(a) : json_pack("[O]", a);
	int ret = 0;
	*out = 0;
	if (!list)
		return perr(err, errlen, "out of memory");
	if (json_array_size(list) == 0)
		ret = perr(err, errlen, "%s: a statement needs an Action", origin);
	json_array_foreach(list, i, one)
	{
		const char *s = json_string_value(one);
		if (!s) {
			ret = perr(err, errlen, "%s: Action must be a string or a list of strings", origin);
			break;
		}
		if (!strcmp(s, "iot:Publish"))
			*out |= POLICY_PUBLISH;
		else if (!strcmp(s, "iot:Subscribe"))
			*out |= POLICY_SUBSCRIBE;
		else if (!strcmp(s, "iot:Receive"))
			*out |= POLICY_RECEIVE;
		else if (!strcmp(s, "iot:*"))
			*out |= POLICY_PUBLISH | POLICY_SUBSCRIBE | POLICY_RECEIVE;
		else {
			ret = perr(err, errlen,
				   "%s: unsupported Action \"%s\" (iot:Publish, iot:Subscribe, "
				   "iot:Receive, iot:*)",
				   origin, s);
			break;
		}
	}
	json_decref(list);
	return ret;
}

static int parse_statement(const char *origin, json_t *js, statement *st, char *err, size_t errlen)
{
	const char *key;
	json_t *val;
	json_object_foreach(js, key, val)
	{
		if (strcmp(key, "Effect") && strcmp(key, "Action") && strcmp(key, "Resource") &&
		    strcmp(key, "Sid"))
			return perr(err, errlen, "%s: unknown statement key \"%s\"", origin, key);
	}
	const char *effect = json_string_value(json_object_get(js, "Effect"));
	if (!effect || (strcmp(effect, "Allow") && strcmp(effect, "Deny")))
		return perr(err, errlen, "%s: Effect must be \"Allow\" or \"Deny\"", origin);
	st->deny = effect[0] == 'D';
	json_t *action = json_object_get(js, "Action");
	if (!action)
		return perr(err, errlen, "%s: a statement needs an Action", origin);
	if (parse_actions(origin, action, &st->actions, err, errlen))
		return -1;
	json_t *res = json_object_get(js, "Resource");
	if (!res)
		return perr(err, errlen, "%s: a statement needs a Resource", origin);
	size_t n = json_is_array(res) ? json_array_size(res) : 1;
	if (n == 0)
		return perr(err, errlen, "%s: Resource list is empty", origin);
	st->res = calloc(n, sizeof *st->res);
	if (!st->res)
		return perr(err, errlen, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_is_array(res) ? json_array_get(res, i) : res);
		if (!s)
			return perr(err, errlen, "%s: Resource must be a string or a list of strings", origin);
		st->nres++;
		if (parse_resource(origin, s, &st->res[i], err, errlen))
			return -1;
	}
	return 0;
}

policy *policy_parse(const char *text, size_t len, const char *origin, char *err, size_t errlen)
{
	json_error_t je;
	policy *p = NULL;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!doc) {
		perr(err, errlen, "%s:%d:%d: %s", origin, je.line, je.column, je.text);
		return NULL;
	}
	json_t *stmts = json_object_get(doc, "Statement");
	if (!json_is_object(doc) || !json_is_array(stmts) || json_array_size(stmts) == 0) {
		perr(err, errlen, "%s: a policy is an object with a non-empty \"Statement\" list", origin);
		goto fail;
	}
	p = calloc(1, sizeof *p);
	if (!p || !(p->st = calloc(json_array_size(stmts), sizeof *p->st))) {
		perr(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < json_array_size(stmts); i++) {
		json_t *js = json_array_get(stmts, i);
		char where[300];
		snprintf(where, sizeof where, "%s: Statement[%zu]", origin, i);
		p->nst++;
		if (!json_is_object(js)) {
			perr(err, errlen, "%s is not an object", where);
			goto fail;
		}
		if (parse_statement(where, js, &p->st[i], err, errlen))
			goto fail;
	}
	json_decref(doc);
	return p;
fail:
	json_decref(doc);
	policy_free(p);
	return NULL;
}

policy *policy_load_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perr(err, errlen, "cannot read policy %s: %s", path, strerror(errno));
		return NULL;
	}
	policy *p = NULL;
	char *buf = malloc(POLICY_MAX_FILE + 1);
	if (!buf) {
		perr(err, errlen, "out of memory");
		goto done;
	}
	size_t n = fread(buf, 1, POLICY_MAX_FILE + 1, f);
	if (ferror(f) || n > POLICY_MAX_FILE) {
		perr(err, errlen, "policy %s: %s", path, ferror(f) ? strerror(errno) : "larger than 256 KiB");
		goto done;
	}
	p = policy_parse(buf, n, path, err, errlen);
done:
	free(buf);
	fclose(f);
	return p;
}

/* ---- resolving and checking ---------------------------------------------------------- */

void policy_resolved_free(policy_resolved *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		free(r->rules[i].filter);
	free(r->rules);
	free(r);
}

/* A substituted value must stay inside one level and be literal. */
static int value_ok(const char *v)
{
	return v && *v && !strpbrk(v, "/+#");
}

/* Build one resource for v into a heap string; NULL + *unresolved when a variable fails. */
static char *resolve_resource(const resource *res, const policy_vars *v, int *unresolved)
{
	size_t cap = 64, len = 0;
	char *out = malloc(cap);
	*unresolved = 0;
	if (!out)
		return NULL;
	for (size_t i = 0; i < res->nparts; i++) {
		const part *pt = &res->parts[i];
		const char *s = NULL;
		switch (pt->kind) {
		case VAR_NONE: s = pt->text; break;
		case VAR_CLIENT_ID: s = v->client_id; break;
		case VAR_THING: s = v->thing; break;
		case VAR_CN: s = v->common_name; break;
		case VAR_ATTR: s = (v->thing && v->attr) ? v->attr(v->attr_ud, pt->text) : NULL; break;
		}
		if (pt->kind != VAR_NONE && !value_ok(s)) {
			*unresolved = 1;
			free(out);
			return NULL;
		}
		size_t sl = strlen(s);
		if (len + sl + 1 > cap) {
			while (len + sl + 1 > cap)
				cap *= 2;
			char *n = realloc(out, cap);
			if (!n) {
				free(out);
				return NULL;
			}
			out = n;
		}
		memcpy(out + len, s, sl);
		len += sl;
	}
	out[len] = '\0';
	return out;
}

policy_resolved *policy_resolve(const policy *p, const policy_vars *v)
{
	policy_resolved *r = calloc(1, sizeof *r);
	size_t total = 0;
	if (!r)
		return NULL;
	for (size_t i = 0; p && i < p->nst; i++)
		total += p->st[i].nres;
	r->rules = calloc(total ? total : 1, sizeof *r->rules);
	if (!r->rules)
		goto fail;
	for (size_t i = 0; p && i < p->nst; i++) {
		const statement *st = &p->st[i];
		for (size_t j = 0; j < st->nres; j++) {
			int unresolved = 0;
			char *f = resolve_resource(&st->res[j], v, &unresolved);
			if (!f && !unresolved)
				goto fail;
			if (!f && !st->deny)
				continue; /* an Allow that cannot be resolved grants nothing */
			rule *ru = &r->rules[r->n++];
			ru->deny = st->deny;
			ru->actions = st->actions;
			ru->filter = f;
			ru->match_all = f == NULL; /* an unresolvable Deny denies everything */
		}
	}
	return r;
fail:
	policy_resolved_free(r);
	return NULL;
}

/* "$share/GROUP/filter" -> "filter" (NULL when malformed). */
static const char *unshare(const char *filter)
{
	if (strncmp(filter, "$share/", 7) != 0)
		return filter;
	const char *slash = strchr(filter + 7, '/');
	return (slash && slash > filter + 7 && slash[1]) ? slash + 1 : NULL;
}

static int rule_hits(const rule *ru, int action, const char *topic)
{
	if (ru->match_all)
		return 1;
	if (action != POLICY_SUBSCRIBE)
		return policy_topic_matches(ru->filter, topic);
	return ru->deny ? policy_filter_overlaps(ru->filter, topic)
			: policy_filter_covers(ru->filter, topic);
}

int policy_check(const policy_resolved *r, int action, const char *topic)
{
	if (!r || !topic)
		return 0;
	if (action == POLICY_SUBSCRIBE) {
		topic = unshare(topic);
		if (!topic || !policy_filter_valid(topic))
			return 0;
	}
	int allowed = 0;
	for (size_t i = 0; i < r->n; i++) {
		const rule *ru = &r->rules[i];
		if (!(ru->actions & action) || !rule_hits(ru, action, topic))
			continue;
		if (ru->deny)
			return 0;
		allowed = 1;
	}
	return allowed;
}
