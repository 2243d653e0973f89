/*
 * rules.c — rule files, actions, substitution templates and per-message evaluation.
 *
 * Loading: each *.json file of a folder is one rule in the IoT topic-rule shape. The file
 * is parsed with jansson; the SQL, every `${expr}` template in action parameters and the
 * alert `clear` condition are compiled once, and every error is reported as
 * file:line:col, the offset inside a JSON string mapped back to the file (jsonpos.c).
 * Loading keeps going after an error so `rules check` lists them all, but a set with any
 * error is refused as a whole. Topic filters go into a trie (topic_index.c).
 *
 * Evaluation: candidates from the trie are visited in rule-name order; each rule is
 * independent (its own SET variables, its own failures, its own errorAction), so a rule
 * that fails never blocks the others. A per-set scratch context (arena, pcre2 match data)
 * is reused between messages; if two threads ever evaluate the same set at once the
 * second one builds a private context instead of sharing it.
 *
 * A site with many rules has many on the same topic, most of them with a WHERE that does
 * not hold, and in the daemon each message arrives with the caches full of other work: a
 * rule's tree (statement, query, WHERE nodes, names) is a handful of cache misses to find
 * out that `temperature > 80` is false. So rules with the same FROM filter form a group,
 * which is what the trie indexes, and a group keeps its enabled rules' hot record side by
 * side: the rule's index and, when the WHERE's first conjunct compares a payload field with
 * a literal (and the rule has no SET and no alert action, so a false WHERE is the end of
 * it), that comparison. A message looks each such field up once, however many rules read
 * it, and a rule whose comparison is not true is done with there, as the full evaluation
 * would be (AND stops at its first operand that is not true; reading a field and comparing
 * cannot fail). A group counts the messages that reached it, which are its enabled rules'
 * `evaluated`, so that counter costs one atomic add per group rather than one per rule.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "core/err.h"
#include "core/hash.h"
#include "core/log.h"
#include "edge/schema.h"
#include "rules/rules_int.h"

#define RULE_FILE_MAX (256 * 1024)
#define SUB "rules"
#define TMPL_MAX_PARTS 30 /* ${...} per template string; tmpl_expand() sizes its table on it */

typedef struct tmpl_part {
	char *lit;
	size_t litlen;
	rules_node *e; /* NULL: literal only */
} tmpl_part;

typedef struct tmpl {
	tmpl_part *parts;
	int nparts;
} tmpl;

typedef struct tparam {
	char **path; /* key path inside the action's params */
	int npath;
	tmpl t;
} tparam;

typedef struct raction {
	rules_action_kind kind;
	json_t *params;
	tparam *tp;
	int ntp;
	tmpl topic; /* republish topic, alert topic, webhook url */
	tmpl pkey;  /* sink partitionKey */
	int has_pkey;
	int qos;
	char *sink, *table, *alert_name;
	uint64_t alert_key; /* tg_hash_str(tg_hash_str(TG_HASH_SEED, rule name), alert_name) */
	rules_node *clear;
	struct rhdr {
		rules_header_kind kind;
		tmpl key, val; /* key: user properties only */
	} *hdrs; /* republish headers */
	int nhdrs;
} raction;

typedef struct rule {
	char *name;
	int disabled;
	uint32_t group; /* index in rules_set.groups: the rules with this FROM filter */
	rules_sql_version ver; /* awsIotSqlVersion: compiles the rule's SQL and evaluates it */
	rules_stmt *st;
	raction *acts;
	int nacts;
	raction *erract;
	int has_alert;
	char *source; /* the rule file's text, for the console (rules_rule_get) */
} rule;

/* Per-rule counters the console reads from another thread while the ingest thread
 * evaluates: relaxed atomics, and the last error text under the set's err_mu (errors are
 * rare, so the lock is off the usual path). `evaluated` holds only what a reload carried
 * over: the messages since are the group's hits (rule_evaluated). */
typedef struct rule_ctr {
	_Atomic uint64_t evaluated, matched, actions, action_errors, eval_errors;
	_Atomic int64_t last_error_ms;
	char last_error[256];
} rule_ctr;

typedef struct scratch {
	atomic_flag busy;
	rules_ctx ctx;
} scratch;

/* A guard is the WHERE's first conjunct `field op literal`; the fields guards read are
 * numbered per set so a message's lookups fit a bit mask. */
#define GUARD_FIELDS 64

/* What evaluation reads of a rule for every message its FROM matches (see the top). */
typedef struct rule_hot {
	rules_val glit;    /* the guard's literal (strings borrowed from the rule's tree) */
	uint32_t id;       /* index in rules_set.rules */
	uint8_t gop;       /* 0: no guard; else the comparison, TK_EQ .. TK_GE */
	uint8_t glit_left; /* the literal is the left operand */
	uint8_t ver;       /* the rule's rules_sql_version: the field is read as the rule reads it */
	uint8_t gfield;    /* index in rules_set.gfields */
} rule_hot;

typedef struct rgroup {
	rule_hot *hot; /* the group's enabled rules, in file-name order */
	size_t n;
	_Atomic uint64_t hits; /* messages that reached the group: each enabled rule's `evaluated` */
} rgroup;

struct rules_set {
	rule *rules;
	size_t n, cap;
	rules_trie *trie;
	rules_env env;
	scratch *scr;
	_Atomic int refs; /* rules_set_ref / rules_set_free */
	rule_ctr *ctr;    /* one per rule */
	pthread_mutex_t err_mu;
	rgroup *groups;   /* one per distinct FROM filter; the trie's ids are group indices */
	size_t ngroups;
	const char *gfields[GUARD_FIELDS]; /* borrowed from the rules' trees */
	int ngfields;
};

/* ---- error reporting --------------------------------------------------------------------- */
typedef struct loader {
	const char *file, *text;
	size_t len;
	char *errbuf;
	size_t errlen, used;
	int nerr;
	const rules_env *env;
} loader;

static void add_err(loader *ld, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_err(loader *ld, size_t off, const char *fmt, ...)
{
	int line = 1, col = 1;
	ld->nerr++;
	if (!ld->errbuf || ld->used + 1 >= ld->errlen)
		return;
	if (off != (size_t)-1 && ld->text)
		rules_jpos_linecol(ld->text, ld->len, off, &line, &col);
	int k = snprintf(ld->errbuf + ld->used, ld->errlen - ld->used, "%s:%d:%d: ", ld->file, line, col);
	if (k < 0 || (size_t)k >= ld->errlen - ld->used) {
		ld->used = ld->errlen - 1;
		return;
	}
	ld->used += (size_t)k;
	va_list ap;
	va_start(ap, fmt);
	k = vsnprintf(ld->errbuf + ld->used, ld->errlen - ld->used, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= ld->errlen - ld->used - 1) {
		ld->used = ld->errlen - 1;
		ld->errbuf[ld->used] = '\0';
		return;
	}
	ld->used += (size_t)k;
	ld->errbuf[ld->used++] = '\n';
	ld->errbuf[ld->used] = '\0';
}

/* raw offset of the value at path; with idx != -1, of byte idx inside that string */
static size_t pos_of(loader *ld, const char *const *path, int npath, size_t idx)
{
	size_t off;
	if (!ld->text || rules_jpos_find(ld->text, ld->len, path, npath, &off) < 0)
		return (size_t)-1;
	if (idx != (size_t)-1 && ld->text[off] == '"')
		return rules_jpos_map(ld->text, ld->len, off, idx);
	return off;
}

/* ---- templates ---------------------------------------------------------------------------- */
static void tmpl_free(tmpl *t)
{
	for (int i = 0; i < t->nparts; i++) {
		free(t->parts[i].lit);
		rules_node_free(t->parts[i].e);
	}
	free(t->parts);
	t->parts = NULL;
	t->nparts = 0;
}

static int tmpl_add(tmpl *t, const char *lit, size_t n, rules_node *e)
{
	tmpl_part *p = realloc(t->parts, sizeof *p * (size_t)(t->nparts + 1));
	if (!p)
		return TG_ENOMEM;
	t->parts = p;
	p[t->nparts].lit = strndup(lit, n);
	p[t->nparts].litlen = n;
	p[t->nparts].e = e;
	if (!p[t->nparts].lit)
		return TG_ENOMEM;
	t->nparts++;
	return 0;
}

/* Compile "text ${expr} text"; errors are positioned at path (a JSON string). */
static int tmpl_compile(loader *ld, const rule *r, const char *s, const char *const *path, int npath, tmpl *t)
{
	size_t n = strlen(s), i = 0;
	char **vars = r->st ? r->st->var_names : NULL;
	int nvars = r->st ? r->st->nvars : 0;
	while (i <= n) {
		const char *d = strstr(s + i, "${");
		size_t lit_end = d ? (size_t)(d - s) : n;
		rules_node *e = NULL;
		size_t next = n + 1;
		if (d && t->nparts >= TMPL_MAX_PARTS) {
			const char *dp = d;
			add_err(ld, pos_of(ld, path, npath, (size_t)(dp - s)),
				"in substitution template: more than %d ${...} in one string", TMPL_MAX_PARTS);
			return TG_EPARSE;
		}
		if (d) {
			char msg[200];
			size_t ep = 0, end = 0;
			e = rules_parse_expr(s, n, lit_end + 2, TK_RBRACE, r->ver, vars, nvars, &end, &ep, msg, sizeof msg);
			if (!e) {
				add_err(ld, pos_of(ld, path, npath, ep), "in substitution template: %s", msg);
				return TG_EPARSE;
			}
			next = end;
		}
		if (tmpl_add(t, s + i, lit_end - i, e) < 0) {
			rules_node_free(e);
			add_err(ld, (size_t)-1, "out of memory");
			return TG_ENOMEM;
		}
		i = next;
	}
	return 0;
}

/* Expand into the arena; Undefined expressions expand to the empty string. */
static const char *tmpl_expand(rules_ctx *c, const tmpl *t)
{
	const char *ps[2 * TMPL_MAX_PARTS + 2];
	size_t ns[2 * TMPL_MAX_PARTS + 2], total = 0;
	int k = 0;
	for (int i = 0; i < t->nparts; i++) {
		ps[k] = t->parts[i].lit;
		ns[k] = t->parts[i].litlen;
		total += ns[k++];
		if (t->parts[i].e) {
			rules_val v;
			rules_eval_node(c, t->parts[i].e, &v);
			if (rules_to_str(c, &v, &ps[k], &ns[k]) < 0) {
				ps[k] = "";
				ns[k] = 0;
			}
			total += ns[k++];
		}
	}
	char *out = rules_ctx_alloc(c, total + 1), *w = out;
	if (!out)
		return "";
	for (int i = 0; i < k; i++) {
		memcpy(w, ps[i], ns[i]);
		w += ns[i];
	}
	*w = '\0';
	return out;
}

/* ---- actions ------------------------------------------------------------------------------ */
static void action_clear(raction *a)
{
	json_decref(a->params);
	for (int i = 0; i < a->ntp; i++) {
		for (int k = 0; k < a->tp[i].npath; k++)
			free(a->tp[i].path[k]);
		free(a->tp[i].path);
		tmpl_free(&a->tp[i].t);
	}
	free(a->tp);
	tmpl_free(&a->topic);
	tmpl_free(&a->pkey);
	free(a->sink);
	free(a->table);
	free(a->alert_name);
	rules_node_free(a->clear);
	for (int i = 0; i < a->nhdrs; i++) {
		tmpl_free(&a->hdrs[i].key);
		tmpl_free(&a->hdrs[i].val);
	}
	free(a->hdrs);
	memset(a, 0, sizeof *a);
}

static void rule_clear(rule *r)
{
	free(r->name);
	free(r->source);
	rules_stmt_free(r->st);
	for (int i = 0; i < r->nacts; i++)
		action_clear(&r->acts[i]);
	free(r->acts);
	if (r->erract) {
		action_clear(r->erract);
		free(r->erract);
	}
	memset(r, 0, sizeof *r);
}

const char *rules_action_kind_name(rules_action_kind k)
{
	switch (k) {
	case RULES_ACT_REPUBLISH: return "republish";
	case RULES_ACT_SINK: return "sink";
	case RULES_ACT_ALERT: return "alert";
	case RULES_ACT_WEBHOOK: return "webhook";
	}
	return "?";
}

static const char *failed_action_name(rules_action_kind k)
{
	switch (k) {
	case RULES_ACT_REPUBLISH: return "RepublishAction";
	case RULES_ACT_SINK: return "SinkAction";
	case RULES_ACT_ALERT: return "AlertAction";
	case RULES_ACT_WEBHOOK: return "WebhookAction";
	}
	return "Action";
}

/* Collect templates in every string param (recursively) so act->params can be handed
 * out expanded. fpath[0..base-1] is the file path of the params object. */
static int collect_templates(loader *ld, const rule *r, raction *a, json_t *obj, const char **fpath, int base,
			     int depth)
{
	const char *key;
	json_t *v;
	int rc = 0;
	if (depth >= 6)
		return 0;
	json_object_foreach(obj, key, v)
	{
		fpath[base + depth] = key;
		if (a->kind == RULES_ACT_REPUBLISH && depth == 0 && strcmp(key, "headers") == 0)
			continue; /* compiled into a->hdrs (headers_compile) */
		if (json_is_object(v)) {
			if (collect_templates(ld, r, a, v, fpath, base, depth + 1) < 0)
				rc = TG_EPARSE;
			continue;
		}
		if (!json_is_string(v) || !strstr(json_string_value(v), "${"))
			continue;
		if (a->kind == RULES_ACT_ALERT && depth == 0 && strcmp(key, "clear") == 0)
			continue; /* an SQL condition, not a template */
		tparam *tp = realloc(a->tp, sizeof *tp * (size_t)(a->ntp + 1));
		if (!tp)
			return TG_ENOMEM;
		a->tp = tp;
		tparam *p = &a->tp[a->ntp];
		memset(p, 0, sizeof *p);
		p->path = calloc((size_t)depth + 1, sizeof *p->path);
		if (!p->path)
			return TG_ENOMEM;
		p->npath = depth + 1;
		a->ntp++;
		for (int k = 0; k <= depth; k++)
			if (!(p->path[k] = strdup(fpath[base + k])))
				return TG_ENOMEM;
		if (tmpl_compile(ld, r, json_string_value(v), fpath, base + depth + 1, &p->t) < 0)
			rc = TG_EPARSE;
	}
	return rc;
}

static const char *str_param(json_t *params, const char *key)
{
	json_t *v = json_object_get(params, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int check_keys(loader *ld, json_t *params, const char *const *allowed, const char **path, int npath)
{
	const char *key;
	json_t *v;
	int rc = 0;
	json_object_foreach(params, key, v)
	{
		int ok = strcmp(key, "roleArn") == 0; /* AWS-only field: accepted, ignored */
		for (int i = 0; allowed[i] && !ok; i++)
			ok = strcmp(key, allowed[i]) == 0;
		if (!ok) {
			path[npath] = key;
			add_err(ld, pos_of(ld, path, npath + 1, (size_t)-1), "unknown %s parameter '%s'", path[npath - 1],
				key);
			rc = TG_EPARSE;
		}
	}
	return rc;
}

/* ---- republish headers (MQTT v5 properties) ----------------------------------------------- */
static const struct {
	const char *name;
	rules_header_kind kind;
} hdr_names[] = {
	{"payloadFormatIndicator", RULES_HDR_PAYLOAD_FORMAT},
	{"contentType", RULES_HDR_CONTENT_TYPE},
	{"responseTopic", RULES_HDR_RESPONSE_TOPIC},
	{"correlationData", RULES_HDR_CORRELATION_DATA},
	{"messageExpiry", RULES_HDR_MESSAGE_EXPIRY},
	{"userProperties", RULES_HDR_USER_PROPERTY},
};

const char *rules_header_name(rules_header_kind k)
{
	for (size_t i = 0; i < sizeof hdr_names / sizeof hdr_names[0]; i++)
		if (hdr_names[i].kind == k)
			return hdr_names[i].name;
	return "?";
}

int rules_header_decode(const rules_header *h, rules_header_val *v, char *err, size_t errlen)
{
	const char *s = h->value ? h->value : "";
	size_t n = strlen(s);
	memset(v, 0, sizeof *v);
	switch (h->kind) {
	case RULES_HDR_PAYLOAD_FORMAT:
		if (strcmp(s, "UTF8_DATA") == 0 || strcmp(s, "UNSPECIFIED_BYTES") == 0) {
			v->num = s[0] == 'U' && s[1] == 'T';
			return 0;
		}
		return tg_seterr(err, errlen, TG_EINVAL,
				 "headers.payloadFormatIndicator: '%s' is neither UTF8_DATA nor UNSPECIFIED_BYTES", s);
	case RULES_HDR_MESSAGE_EXPIRY: {
		uint64_t x = 0;
		for (size_t i = 0; i < n && x <= UINT32_MAX; i++)
			x = s[i] >= '0' && s[i] <= '9' ? x * 10 + (uint64_t)(s[i] - '0') : UINT64_MAX;
		if (n == 0 || n > 10 || x > UINT32_MAX)
			return tg_seterr(err, errlen, TG_EINVAL,
					 "headers.messageExpiry: '%s' is not a number of seconds (0 to 4294967295)", s);
		v->num = (uint32_t)x;
		return 0;
	}
	case RULES_HDR_CORRELATION_DATA: {
		/* standard base64 with padding, as AWS expects it */
		int ok = n % 4 == 0 && n <= 65532;
		for (size_t i = 0; i < n && ok; i++) {
			unsigned char c = (unsigned char)s[i];
			ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
			     c == '/' || (c == '=' && (i + 1 == n || (i + 2 == n && s[n - 1] == '=')));
		}
		if (!ok)
			return tg_seterr(err, errlen, TG_EINVAL, "headers.correlationData: '%.40s' is not base64", s);
		if (!(v->bin = malloc(n / 4 * 3 + 1)))
			return tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		int k = n ? EVP_DecodeBlock(v->bin, (const unsigned char *)s, (int)n) : 0;
		if (k < 0) {
			free(v->bin);
			v->bin = NULL;
			return tg_seterr(err, errlen, TG_EINVAL, "headers.correlationData: '%.40s' is not base64", s);
		}
		v->binlen = (size_t)k - (n && s[n - 1] == '=') - (n > 1 && s[n - 2] == '=');
		return 0;
	}
	case RULES_HDR_RESPONSE_TOPIC:
		if (n == 0 || strpbrk(s, "+#") || n > 65535)
			return tg_seterr(err, errlen, TG_EINVAL,
					 "headers.responseTopic: '%.80s' is not a topic name (not empty, no + or #)", s);
		return 0;
	case RULES_HDR_CONTENT_TYPE:
	case RULES_HDR_USER_PROPERTY:
		if (n > 65535 || (h->key && strlen(h->key) > 65535))
			return tg_seterr(err, errlen, TG_EINVAL, "headers.%s: longer than 65535 bytes",
					 rules_header_name(h->kind));
		return 0;
	}
	return tg_seterr(err, errlen, TG_EINVAL, "unknown header");
}

/* One header value: compile its template; a value without one is checked now, so a
 * misspelt enum or a bad number is a load error at its position. */
static int header_add(loader *ld, const rule *r, raction *a, rules_header_kind kind, const char *key,
		      const char *const *kpath, const char *val, const char *const *vpath, int npath)
{
	struct rhdr *h = realloc(a->hdrs, sizeof *h * (size_t)(a->nhdrs + 1));
	if (!h)
		return TG_ENOMEM;
	a->hdrs = h;
	h = &a->hdrs[a->nhdrs++];
	memset(h, 0, sizeof *h);
	h->kind = kind;
	if ((key && tmpl_compile(ld, r, key, kpath, npath, &h->key) < 0) ||
	    tmpl_compile(ld, r, val, vpath, npath, &h->val) < 0)
		return TG_EPARSE;
	if (!strstr(val, "${") && !(key && strstr(key, "${"))) {
		rules_header lit = {kind, key, val};
		rules_header_val hv;
		char why[200];
		if (rules_header_decode(&lit, &hv, why, sizeof why) < 0) {
			add_err(ld, pos_of(ld, vpath, npath, (size_t)-1), "%s", why);
			return TG_EPARSE;
		}
		free(hv.bin);
	}
	return 0;
}

/* path[0..npath-1] is the path of the headers object. */
static int headers_compile(loader *ld, const rule *r, raction *a, json_t *hdrs, const char **path, int npath)
{
	if (!json_is_object(hdrs)) {
		add_err(ld, pos_of(ld, path, npath, (size_t)-1), "republish \"headers\" must be an object");
		return TG_EPARSE;
	}
	const char *name;
	json_t *v;
	int rc = 0;
	json_object_foreach(hdrs, name, v)
	{
		rules_header_kind kind = 0;
		for (size_t i = 0; i < sizeof hdr_names / sizeof hdr_names[0] && !kind; i++)
			if (strcmp(hdr_names[i].name, name) == 0)
				kind = hdr_names[i].kind;
		path[npath] = name;
		size_t vpos = pos_of(ld, path, npath + 1, (size_t)-1);
		if (!kind) {
			add_err(ld, vpos,
				"unknown republish header '%s' (payloadFormatIndicator, contentType, responseTopic, "
				"correlationData, messageExpiry or userProperties)",
				name);
			rc = TG_EPARSE;
			continue;
		}
		if (kind == RULES_HDR_USER_PROPERTY) {
			size_t i;
			json_t *up;
			if (!json_is_array(v)) {
				add_err(ld, vpos, "headers.userProperties must be an array of {\"key\": ..., \"value\": ...}");
				rc = TG_EPARSE;
				continue;
			}
			json_array_foreach(v, i, up)
			{
				char idx[24];
				snprintf(idx, sizeof idx, "%zu", i);
				path[npath + 1] = idx;
				json_t *k = json_object_get(up, "key"), *val = json_object_get(up, "value");
				if (!json_is_object(up) || json_object_size(up) != 2 || !json_is_string(k) || !json_is_string(val)) {
					add_err(ld, pos_of(ld, path, npath + 2, (size_t)-1),
						"a user property is {\"key\": \"...\", \"value\": \"...\"} (strings)");
					rc = TG_EPARSE;
					continue;
				}
				const char *kp[16], *vp[16];
				for (int j = 0; j < npath + 2; j++)
					kp[j] = vp[j] = path[j];
				kp[npath + 2] = "key";
				vp[npath + 2] = "value";
				int hrc = header_add(ld, r, a, kind, json_string_value(k), kp, json_string_value(val), vp,
						     npath + 3);
				if (hrc == TG_ENOMEM)
					return hrc;
				if (hrc)
					rc = TG_EPARSE;
			}
			continue;
		}
		char num[24];
		const char *text = json_string_value(v);
		if (kind == RULES_HDR_MESSAGE_EXPIRY && json_is_integer(v) && json_integer_value(v) >= 0) {
			snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
			text = num;
		}
		if (!text) {
			add_err(ld, vpos, "headers.%s must be a string", name);
			rc = TG_EPARSE;
			continue;
		}
		int hrc = header_add(ld, r, a, kind, NULL, NULL, text, path, npath + 1);
		if (hrc == TG_ENOMEM)
			return hrc;
		if (hrc)
			rc = TG_EPARSE;
	}
	return rc;
}

/* path: e.g. {"actions", "0"} or {"errorAction"}; the action object lives there. */
static int action_compile(loader *ld, rule *r, json_t *obj, const char **path, int npath, raction *a)
{
	const char *kind = NULL;
	json_t *params = NULL;
	size_t opos = pos_of(ld, path, npath, (size_t)-1);
	if (!json_is_object(obj) || json_object_size(obj) != 1) {
		add_err(ld, opos, "an action is an object with exactly one key (republish, sink, alert or webhook)");
		return TG_EPARSE;
	}
	json_object_foreach(obj, kind, params) break;
	path[npath] = kind;
	size_t kpos = pos_of(ld, path, npath + 1, (size_t)-1);
	if (strcmp(kind, "republish") == 0)
		a->kind = RULES_ACT_REPUBLISH;
	else if (strcmp(kind, "sink") == 0)
		a->kind = RULES_ACT_SINK;
	else if (strcmp(kind, "alert") == 0)
		a->kind = RULES_ACT_ALERT;
	else if (strcmp(kind, "webhook") == 0)
		a->kind = RULES_ACT_WEBHOOK;
	else {
		add_err(ld, opos, "action '%s' is not supported at the edge (use republish, sink, alert or webhook)", kind);
		return TG_EUNSUPPORTED;
	}
	if (!json_is_object(params)) {
		add_err(ld, kpos, "%s parameters must be an object", kind);
		return TG_EPARSE;
	}
	a->params = json_incref(params);
	int rc = 0;
	const char *pp[12];
	for (int i = 0; i <= npath; i++)
		pp[i] = path[i];
	switch (a->kind) {
	case RULES_ACT_REPUBLISH: {
		static const char *const allowed[] = {"topic", "qos", "headers", NULL};
		rc |= check_keys(ld, params, allowed, pp, npath + 1);
		const char *topic = str_param(params, "topic");
		json_t *q = json_object_get(params, "qos");
		if (!topic || !*topic) {
			add_err(ld, kpos, "republish needs a non-empty \"topic\"");
			return TG_EPARSE;
		}
		if (q && (!json_is_integer(q) || json_integer_value(q) < 0 || json_integer_value(q) > 1)) {
			pp[npath + 1] = "qos";
			add_err(ld, pos_of(ld, pp, npath + 2, (size_t)-1), "republish \"qos\" must be 0 or 1");
			return TG_EPARSE;
		}
		a->qos = q ? (int)json_integer_value(q) : 0;
		pp[npath + 1] = "topic";
		if (tmpl_compile(ld, r, topic, pp, npath + 2, &a->topic) < 0)
			return TG_EPARSE;
		json_t *hdrs = json_object_get(params, "headers");
		if (hdrs) {
			pp[npath + 1] = "headers";
			int hrc = headers_compile(ld, r, a, hdrs, pp, npath + 2);
			if (hrc)
				return hrc;
		}
		break;
	}
	case RULES_ACT_SINK: {
		static const char *const allowed[] = {"name", "partitionKey", "table", NULL};
		rc |= check_keys(ld, params, allowed, pp, npath + 1);
		const char *name = str_param(params, "name");
		const char *pk = str_param(params, "partitionKey");
		const char *table = str_param(params, "table");
		if (!name || !*name) {
			add_err(ld, kpos, "sink needs a \"name\" (a configured sink)");
			return TG_EPARSE;
		}
		if (ld->env && ld->env->sink_names) {
			int found = 0;
			for (const char *const *s = ld->env->sink_names; *s && !found; s++)
				found = strcmp(*s, name) == 0;
			if (!found) {
				pp[npath + 1] = "name";
				add_err(ld, pos_of(ld, pp, npath + 2, (size_t)-1), "no sink named '%s' is configured", name);
				return TG_EPARSE;
			}
		}
		a->sink = strdup(name);
		a->table = strdup(table ? table : "telemetry");
		if (!a->sink || !a->table)
			return TG_ENOMEM;
		if (pk) {
			pp[npath + 1] = "partitionKey";
			if (tmpl_compile(ld, r, pk, pp, npath + 2, &a->pkey) < 0)
				return TG_EPARSE;
			a->has_pkey = 1;
		}
		break;
	}
	case RULES_ACT_ALERT: {
		static const char *const allowed[] = {"name",    "severity", "clear", "for", "forSeconds",
						      "rateLimitSeconds", "topic", "webhook", NULL};
		rc |= check_keys(ld, params, allowed, pp, npath + 1);
		json_t *hook = json_object_get(params, "webhook");
		if (hook && (!json_is_string(hook) || (strncmp(json_string_value(hook), "http://", 7) &&
						       strncmp(json_string_value(hook), "https://", 8)))) {
			add_err(ld, kpos, "alert \"webhook\" must be an http:// or https:// URL");
			return TG_EPARSE;
		}
		const char *name = str_param(params, "name");
		if (!name || !*name) {
			add_err(ld, kpos, "alert needs a \"name\"");
			return TG_EPARSE;
		}
		a->alert_name = strdup(name);
		if (!a->alert_name)
			return TG_ENOMEM;
		a->alert_key = tg_hash_str(tg_hash_str(TG_HASH_SEED, r->name), a->alert_name);
		json_t *sev = json_object_get(params, "severity");
		if (sev) {
			const char *s = json_string_value(sev);
			if (!s || (strcmp(s, "info") && strcmp(s, "minor") && strcmp(s, "major") && strcmp(s, "critical"))) {
				pp[npath + 1] = "severity";
				add_err(ld, pos_of(ld, pp, npath + 2, (size_t)-1),
					"alert \"severity\" must be info, minor, major or critical");
				rc = TG_EPARSE;
			}
		}
		static const char *const nums[] = {"for", "forSeconds", "rateLimitSeconds"};
		for (int i = 0; i < 3; i++) {
			json_t *v = json_object_get(params, nums[i]);
			if (v && (!json_is_number(v) || json_number_value(v) < (i == 0 ? 1 : 0))) {
				pp[npath + 1] = nums[i];
				add_err(ld, pos_of(ld, pp, npath + 2, (size_t)-1), "alert \"%s\" must be a number >= %d",
					nums[i], i == 0 ? 1 : 0);
				rc = TG_EPARSE;
			}
		}
		json_t *clear = json_object_get(params, "clear");
		if (clear) {
			pp[npath + 1] = "clear";
			const char *cs = json_string_value(clear);
			if (!cs) {
				add_err(ld, pos_of(ld, pp, npath + 2, (size_t)-1),
					"alert \"clear\" must be an SQL condition in a string");
				rc = TG_EPARSE;
			} else {
				char msg[200];
				size_t ep = 0;
				a->clear = rules_parse_expr(cs, strlen(cs), 0, TK_EOF, r->ver, r->st->var_names, r->st->nvars,
							    NULL, &ep, msg, sizeof msg);
				if (!a->clear) {
					add_err(ld, pos_of(ld, pp, npath + 2, ep), "in alert clear condition: %s", msg);
					rc = TG_EPARSE;
				}
			}
		}
		const char *topic = str_param(params, "topic");
		char deftopic[300];
		pp[npath + 1] = "topic";
		if (!topic) {
			snprintf(deftopic, sizeof deftopic, "alerts/${clientid()}/%s", name);
			topic = deftopic;
		}
		if (tmpl_compile(ld, r, topic, pp, npath + 2, &a->topic) < 0)
			rc = TG_EPARSE;
		r->has_alert = 1;
		break;
	}
	case RULES_ACT_WEBHOOK: {
		static const char *const allowed[] = {"url", "headers", NULL};
		rc |= check_keys(ld, params, allowed, pp, npath + 1);
		const char *url = str_param(params, "url");
		if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
			add_err(ld, kpos, "webhook needs an http:// or https:// \"url\"");
			return TG_EPARSE;
		}
		pp[npath + 1] = "url";
		if (tmpl_compile(ld, r, url, pp, npath + 2, &a->topic) < 0)
			return TG_EPARSE;
		break;
	}
	}
	if (rc)
		return rc;
	/* every templated string param, expanded into act->params per message */
	const char *fp[16];
	for (int i = 0; i <= npath; i++)
		fp[i] = path[i];
	return collect_templates(ld, r, a, params, fp, npath + 1, 0);
}

/* ---- loading ------------------------------------------------------------------------------ */
static int set_add_rule(rules_set *rs, rule *r)
{
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 16;
		rule *nr = realloc(rs->rules, sizeof *nr * cap);
		if (!nr)
			return TG_ENOMEM;
		rs->rules = nr;
		rs->cap = cap;
	}
	rs->rules[rs->n++] = *r;
	return 0;
}

static char *rule_name_of(const char *file)
{
	const char *b = strrchr(file, '/');
	b = b ? b + 1 : file;
	size_t n = strlen(b);
	if (n > 5 && strcmp(b + n - 5, ".json") == 0)
		n -= 5;
	return strndup(b, n);
}

/* awsIotSqlVersion: absent means 2016-03-23, as in AWS's CreateTopicRule. "beta" is AWS's
 * moving target ("could introduce breaking changes"), so there is nothing fixed to follow.
 * A bad value is an error; the SQL is still compiled (as 2016-03-23) to report its errors. */
static int sql_version_of(loader *ld, json_t *v, rules_sql_version *ver)
{
	static const char *const path[1] = {"awsIotSqlVersion"};
	const char *s = json_string_value(v);
	*ver = RULES_SQL_2016_03_23;
	if (!v || (s && strcmp(s, "2016-03-23") == 0))
		return 0;
	if (s && strcmp(s, "2015-10-08") == 0) {
		*ver = RULES_SQL_2015_10_08;
		return 0;
	}
	if (s && strcmp(s, "beta") == 0)
		add_err(ld, pos_of(ld, path, 1, (size_t)-1),
			"awsIotSqlVersion \"beta\" is not supported at the edge (AWS's beta dialect may change at any "
			"time): use \"2016-03-23\" (the default) or \"2015-10-08\"");
	else if (s) {
		char shown[41]; /* quoted in a one-line message: no control characters or quotes */
		size_t k = 0;
		for (; s[k] && k < sizeof shown - 1; k++)
			shown[k] = (unsigned char)s[k] < 0x20 || s[k] == '"' || s[k] == 0x7f ? '?' : s[k];
		shown[k] = '\0';
		add_err(ld, pos_of(ld, path, 1, (size_t)-1),
			"unknown awsIotSqlVersion \"%s%s\": use \"2016-03-23\" (the default) or \"2015-10-08\"", shown,
			s[k] ? "..." : "");
	} else
		add_err(ld, pos_of(ld, path, 1, (size_t)-1),
			"awsIotSqlVersion must be a string: \"2016-03-23\" (the default) or \"2015-10-08\"");
	return TG_EPARSE;
}

static int compile_rule(loader *ld, rule *r)
{
	json_error_t je;
	json_t *root = json_loadb(ld->text, ld->len, JSON_REJECT_DUPLICATES, &je);
	int rc = 0;
	if (!root) {
		ld->nerr++;
		if (ld->errbuf && ld->used + 1 < ld->errlen) {
			int k = snprintf(ld->errbuf + ld->used, ld->errlen - ld->used, "%s:%d:%d: invalid JSON: %s\n",
					 ld->file, je.line > 0 ? je.line : 1, je.column > 0 ? je.column : 1, schema_json_error_text(&je));
			if (k > 0)
				ld->used = (size_t)k >= ld->errlen - ld->used ? ld->errlen - 1 : ld->used + (size_t)k;
		}
		return TG_EPARSE;
	}
	if (!json_is_object(root)) {
		add_err(ld, 0, "a rule file holds one JSON object");
		rc = TG_EPARSE;
		goto out;
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		static const char *const known[] = {"sql", "description", "ruleDisabled", "awsIotSqlVersion", "actions",
						    "errorAction", NULL};
		int ok = 0;
		for (int i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], key) == 0;
		if (!ok) {
			const char *p[1] = {key};
			add_err(ld, pos_of(ld, p, 1, (size_t)-1), "unknown key '%s' in rule", key);
			rc = TG_EPARSE;
		}
	}
	json_t *sql = json_object_get(root, "sql");
	static const char *const sqlpath[] = {"sql"};
	if (!json_is_string(sql)) {
		add_err(ld, sql ? pos_of(ld, sqlpath, 1, (size_t)-1) : 0, "rule needs \"sql\": a string");
		rc = TG_EPARSE;
		goto out;
	}
	if (sql_version_of(ld, json_object_get(root, "awsIotSqlVersion"), &r->ver) < 0)
		rc = TG_EPARSE;
	json_t *dis = json_object_get(root, "ruleDisabled");
	if (dis && !json_is_boolean(dis)) {
		const char *p[1] = {"ruleDisabled"};
		add_err(ld, pos_of(ld, p, 1, (size_t)-1), "\"ruleDisabled\" must be true or false");
		rc = TG_EPARSE;
	}
	r->disabled = json_is_true(dis);
	char msg[200];
	size_t ep = 0;
	r->st = rules_parse_stmt(json_string_value(sql), json_string_length(sql), r->ver, &ep, msg, sizeof msg);
	if (!r->st) {
		add_err(ld, pos_of(ld, sqlpath, 1, ep), "%s", msg);
		rc = TG_EPARSE;
		goto out; /* templates need the statement's variables */
	}
	json_t *acts = json_object_get(root, "actions");
	if (!json_is_array(acts)) {
		const char *p[1] = {"actions"};
		add_err(ld, acts ? pos_of(ld, p, 1, (size_t)-1) : 0, "rule needs \"actions\": an array");
		rc = TG_EPARSE;
	} else {
		r->acts = calloc(json_array_size(acts) + 1, sizeof *r->acts);
		if (!r->acts) {
			rc = TG_ENOMEM;
			goto out;
		}
		size_t i;
		json_t *a;
		json_array_foreach(acts, i, a)
		{
			char idx[24];
			snprintf(idx, sizeof idx, "%zu", i);
			const char *p[12] = {"actions", idx};
			if (action_compile(ld, r, a, p, 2, &r->acts[r->nacts]) < 0)
				rc = TG_EPARSE;
			r->nacts++;
		}
	}
	json_t *ea = json_object_get(root, "errorAction");
	if (ea) {
		r->erract = calloc(1, sizeof *r->erract);
		if (!r->erract) {
			rc = TG_ENOMEM;
			goto out;
		}
		const char *p[12] = {"errorAction"};
		if (action_compile(ld, r, ea, p, 1, r->erract) < 0)
			rc = TG_EPARSE;
	}
out:
	json_decref(root);
	return rc;
}

static int load_one(rules_set *rs, loader *ld)
{
	rule r;
	memset(&r, 0, sizeof r);
	r.name = rule_name_of(ld->file);
	r.source = strndup(ld->text, ld->len);
	if (!r.name || !r.source) {
		rule_clear(&r);
		return TG_ENOMEM;
	}
	int before = ld->nerr;
	int rc = compile_rule(ld, &r);
	if (rc < 0 || ld->nerr > before) {
		rule_clear(&r);
		return rc < 0 ? rc : TG_EPARSE;
	}
	if (set_add_rule(rs, &r) < 0) {
		rule_clear(&r);
		return TG_ENOMEM;
	}
	return 0;
}

static rules_set *set_new(const rules_env *env)
{
	rules_set *rs = calloc(1, sizeof *rs);
	if (!rs)
		return NULL;
	if (env)
		rs->env = *env;
	rs->scr = calloc(1, sizeof *rs->scr);
	if (!rs->scr || rules_ctx_init(&rs->scr->ctx) < 0) {
		free(rs->scr);
		free(rs);
		return NULL;
	}
	atomic_flag_clear(&rs->scr->busy);
	atomic_init(&rs->refs, 1);
	pthread_mutex_init(&rs->err_mu, NULL);
	return rs;
}

/* The guard of rule r into h, when it has one (see the top). */
static void guard_compile(rules_set *rs, const rule *r, rule_hot *h)
{
	const rules_node *w = r->st->q->where;
	if (!w || r->has_alert || r->st->nvars)
		return; /* SET may fail and alerts report a false WHERE: the full path decides */
	while (w->k == RN_AND)
		w = w->a[0]; /* rules_eval_cond evaluates the leftmost operand first */
	if (w->k != RN_BIN || w->ival < TK_EQ || w->ival > TK_GE)
		return;
	const rules_node *f = w->a[0], *lit = w->a[1];
	int lit_left = f->k == RN_LIT && lit->k == RN_FIELD;
	if (lit_left) {
		f = w->a[1];
		lit = w->a[0];
	}
	if (f->k != RN_FIELD || lit->k != RN_LIT)
		return;
	int slot = 0;
	while (slot < rs->ngfields && strcmp(rs->gfields[slot], f->name) != 0)
		slot++;
	if (slot == GUARD_FIELDS)
		return;
	if (slot == rs->ngfields)
		rs->gfields[rs->ngfields++] = f->name;
	h->glit = lit->lit;
	h->gop = (uint8_t)w->ival;
	h->glit_left = (uint8_t)lit_left;
	h->gfield = (uint8_t)slot;
}

typedef struct by_filter {
	const char *filter;
	uint32_t id;
} by_filter;

static int cmp_filter(const void *a, const void *b)
{
	const by_filter *x = a, *y = b;
	int c = strcmp(x->filter, y->filter);
	return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* Groups of rules by FROM filter, sorted so that building them is n log n at 1,000 rules
 * (reload time is a target); the trie gets one entry per group. */
static int groups_build(rules_set *rs)
{
	by_filter *bf = malloc(sizeof *bf * (rs->n ? rs->n : 1));
	rs->groups = calloc(rs->n ? rs->n : 1, sizeof *rs->groups);
	if (!bf || !rs->groups) {
		free(bf);
		return TG_ENOMEM;
	}
	for (size_t i = 0; i < rs->n; i++)
		bf[i] = (by_filter){rs->rules[i].st->q->from_topic, (uint32_t)i};
	qsort(bf, rs->n, sizeof *bf, cmp_filter);
	int rc = 0;
	for (size_t i = 0, j; i < rs->n && rc == 0; i = j) {
		rgroup *g = &rs->groups[rs->ngroups];
		size_t enabled = 0;
		for (j = i; j < rs->n && strcmp(bf[j].filter, bf[i].filter) == 0; j++)
			enabled += !rs->rules[bf[j].id].disabled;
		g->hot = calloc(enabled ? enabled : 1, sizeof *g->hot);
		if (!g->hot) {
			rc = TG_ENOMEM;
			break;
		}
		atomic_init(&g->hits, 0);
		for (size_t k = i; k < j; k++) {
			rule *r = &rs->rules[bf[k].id];
			r->group = (uint32_t)rs->ngroups;
			if (r->disabled)
				continue;
			rule_hot *h = &g->hot[g->n++];
			h->id = bf[k].id;
			h->ver = (uint8_t)r->ver;
			guard_compile(rs, r, h);
		}
		rs->ngroups++;
		if (rules_trie_add(rs->trie, bf[i].filter, (uint32_t)(rs->ngroups - 1)) < 0)
			rc = TG_ENOMEM;
	}
	free(bf);
	return rc;
}

static int set_finish(rules_set *rs)
{
	rs->trie = rules_trie_new();
	rs->ctr = calloc(rs->n ? rs->n : 1, sizeof *rs->ctr);
	if (!rs->trie || !rs->ctr)
		return TG_ENOMEM;
	if (groups_build(rs) < 0)
		return TG_ENOMEM;
	rs->env.sink_names = NULL; /* borrowed at load only */
	return 0;
}

rules_set *rules_set_ref(rules_set *rs)
{
	if (rs)
		atomic_fetch_add(&rs->refs, 1);
	return rs;
}

void rules_set_free(rules_set *rs)
{
	if (!rs || atomic_fetch_sub(&rs->refs, 1) > 1)
		return;
	for (size_t i = 0; i < rs->n; i++)
		rule_clear(&rs->rules[i]);
	free(rs->rules);
	rules_trie_free(rs->trie);
	for (size_t i = 0; i < rs->ngroups; i++)
		free(rs->groups[i].hot);
	free(rs->groups);
	if (rs->scr) {
		rules_ctx_free(&rs->scr->ctx);
		free(rs->scr);
		pthread_mutex_destroy(&rs->err_mu); /* set_new made both or neither */
	}
	free(rs->ctr);
	free(rs);
}

/* A disabled rule is in its group but never reached: only what it brought from a reload. */
static uint64_t rule_evaluated(const rules_set *rs, size_t i)
{
	const rule *r = &rs->rules[i];
	uint64_t n = atomic_load_explicit(&rs->ctr[i].evaluated, memory_order_relaxed);
	if (!r->disabled && rs->groups)
		n += atomic_load_explicit(&rs->groups[r->group].hits, memory_order_relaxed);
	return n;
}

int rules_rule_get(rules_set *rs, size_t i, rules_rule_info *out)
{
	if (!rs || i >= rs->n || !rs->ctr)
		return TG_ENOTFOUND;
	const rule *r = &rs->rules[i];
	rule_ctr *k = &rs->ctr[i];
	memset(out, 0, sizeof *out);
	out->name = r->name;
	out->source = r->source;
	out->disabled = r->disabled;
	out->nactions = r->nacts;
	out->evaluated = rule_evaluated(rs, i);
	out->matched = atomic_load_explicit(&k->matched, memory_order_relaxed);
	out->actions = atomic_load_explicit(&k->actions, memory_order_relaxed);
	out->action_errors = atomic_load_explicit(&k->action_errors, memory_order_relaxed);
	out->eval_errors = atomic_load_explicit(&k->eval_errors, memory_order_relaxed);
	out->last_error_ms = atomic_load(&k->last_error_ms);
	if (out->last_error_ms) {
		pthread_mutex_lock(&rs->err_mu);
		snprintf(out->last_error, sizeof out->last_error, "%s", k->last_error);
		pthread_mutex_unlock(&rs->err_mu);
	}
	return 0;
}

static int same_rule(const rule *a, const rule *b)
{
	return strcmp(a->name, b->name) == 0 && strcmp(a->source, b->source) == 0;
}

void rules_set_adopt_counters(rules_set *to, rules_set *from)
{
	if (!to || !from || !to->ctr || !from->ctr)
		return;
	/* Both sets are in file-name order, so a rule's match is almost always the one after
	 * the previous match: try that first. The reload swap runs in the ingest loop, and a
	 * scan per rule made it quadratic (tens of ms at 1,000 rules). */
	size_t hint = 0;
	for (size_t i = 0; i < to->n; i++) {
		size_t k = hint < from->n && same_rule(&to->rules[i], &from->rules[hint]) ? hint : from->n;
		for (size_t j = 0; k == from->n && j < from->n; j++)
			if (same_rule(&to->rules[i], &from->rules[j]))
				k = j;
		if (k == from->n)
			continue; /* a new rule: its counters start at zero */
		hint = k + 1;
		rule_ctr *a = &to->ctr[i], *b = &from->ctr[k];
		atomic_store(&a->evaluated, rule_evaluated(from, k));
		atomic_store(&a->matched, atomic_load(&b->matched));
		atomic_store(&a->actions, atomic_load(&b->actions));
		atomic_store(&a->action_errors, atomic_load(&b->action_errors));
		atomic_store(&a->eval_errors, atomic_load(&b->eval_errors));
		pthread_mutex_lock(&from->err_mu);
		memcpy(a->last_error, b->last_error, sizeof a->last_error);
		pthread_mutex_unlock(&from->err_mu);
		atomic_store(&a->last_error_ms, atomic_load(&b->last_error_ms));
	}
}

static void note_error(const rules_set *rs, rule_ctr *k, const tg_msg *m, const char *kind, const char *what)
{
	pthread_mutex_t *mu = (pthread_mutex_t *)&rs->err_mu; /* the set is const to evaluation, its lock is not */
	pthread_mutex_lock(mu);
	snprintf(k->last_error, sizeof k->last_error, "%s: %s", kind, what);
	pthread_mutex_unlock(mu);
	atomic_store(&k->last_error_ms, m->received_ms ? m->received_ms : 1);
}

size_t rules_count(const rules_set *rs)
{
	return rs ? rs->n : 0;
}

rules_set *rules_load_text(const char *file, const char *text, size_t len, const rules_env *env, char *errbuf,
			   size_t errlen)
{
	loader ld = {file, text, len, errbuf, errlen, 0, 0, env};
	if (errbuf && errlen)
		errbuf[0] = '\0';
	rules_set *rs = set_new(env);
	if (!rs) {
		tg_seterr(errbuf, errlen, TG_ENOMEM, "%s: out of memory", file);
		return NULL;
	}
	if (load_one(rs, &ld) < 0 || ld.nerr || set_finish(rs) < 0) {
		if (!ld.nerr)
			add_err(&ld, (size_t)-1, "out of memory");
		rules_set_free(rs);
		return NULL;
	}
	return rs;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	if (!f) {
		tg_seterr(err, errlen, TG_EIO, "%s:1:1: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(RULE_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	size_t n = fread(buf, 1, RULE_FILE_MAX + 1, f);
	fclose(f);
	if (n > RULE_FILE_MAX) {
		tg_seterr(err, errlen, TG_EFULL, "%s:1:1: rule file larger than %d bytes", path, RULE_FILE_MAX);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

rules_set *rules_load_file(const char *path, const rules_env *env, char *errbuf, size_t errlen)
{
	size_t len;
	char *text = read_file(path, &len, errbuf, errlen);
	if (!text)
		return NULL;
	rules_set *rs = rules_load_text(path, text, len, env, errbuf, errlen);
	free(text);
	return rs;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

rules_set *rules_load_dir(const char *dir, const rules_env *env, char *errbuf, size_t errlen)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	rules_set *rs = NULL;
	loader ld = {NULL, NULL, 0, errbuf, errlen, 0, 0, env};
	if (errbuf && errlen)
		errbuf[0] = '\0';
	DIR *d = opendir(dir);
	if (!d) {
		tg_seterr(errbuf, errlen, TG_EIO, "%s:1:1: cannot open rules folder: %s", dir, strerror(errno));
		return NULL;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0 || de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **nn = realloc(names, sizeof *nn * cap);
			if (!nn)
				goto fail;
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto fail;
		n++;
	}
	closedir(d);
	d = NULL;
	if (n) /* an empty folder: names is NULL, which qsort must not be given */
		qsort(names, n, sizeof *names, cmp_str);
	rs = set_new(env);
	if (!rs)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		struct stat sb;
		if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
			continue;
		size_t len;
		char one[512];
		char *text = read_file(path, &len, one, sizeof one);
		if (!text) {
			ld.nerr++;
			if (errbuf && ld.used + 1 < errlen)
				ld.used += (size_t)snprintf(errbuf + ld.used, errlen - ld.used, "%s\n", one);
			if (ld.used >= errlen)
				ld.used = errlen - 1;
			continue;
		}
		ld.file = path;
		ld.text = text;
		ld.len = len;
		load_one(rs, &ld);
		free(text);
		ld.text = NULL;
	}
	if (ld.nerr || set_finish(rs) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rs;
fail:
	if (d)
		closedir(d);
	if (!ld.nerr)
		tg_seterr(errbuf, errlen, TG_ENOMEM, "%s:1:1: out of memory", dir);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	rules_set_free(rs);
	return NULL;
}

/* ---- evaluation --------------------------------------------------------------------------- */
typedef struct cands {
	uint32_t stack[16];
	uint32_t *ids; /* group indices */
	size_t n, cap;
	int oom;
} cands;

static void cand_cb(void *ud, uint32_t id)
{
	cands *c = ud;
	if (c->n == c->cap) {
		size_t cap = c->cap * 2;
		uint32_t *ids = malloc(sizeof *ids * cap);
		if (!ids) {
			c->oom = 1;
			return;
		}
		memcpy(ids, c->ids, sizeof *ids * c->n);
		if (c->ids != c->stack)
			free(c->ids);
		c->ids = ids;
		c->cap = cap;
	}
	c->ids[c->n++] = id;
}

static json_t *expand_params(rules_ctx *c, const raction *a)
{
	if (a->ntp == 0)
		return a->params;
	/* a shallow copy; nested objects holding templates (headers) are copied once each */
	json_t *p = rules_ctx_keep(c, json_copy(a->params));
	if (!p)
		return a->params;
	for (int i = 0; i < a->ntp; i++) {
		json_t *o = p;
		if (a->tp[i].npath > 1) {
			json_t *orig = json_object_get(a->params, a->tp[i].path[0]);
			json_t *cur = json_object_get(p, a->tp[i].path[0]);
			if (cur == orig)
				json_object_set_new(p, a->tp[i].path[0], json_deep_copy(orig));
		}
		for (int k = 0; k + 1 < a->tp[i].npath && o; k++)
			o = json_object_get(o, a->tp[i].path[k]);
		if (json_is_object(o))
			json_object_set_new(o, a->tp[i].path[a->tp[i].npath - 1], json_string(tmpl_expand(c, &a->tp[i].t)));
	}
	return p;
}

static void fill_out(rules_ctx *c, const rule *r, const raction *a, rules_action_out *out)
{
	const tg_msg *m = c->m;
	memset(out, 0, sizeof *out);
	out->rule = r->name;
	out->kind = a->kind;
	out->has_error_action = r->erract != NULL;
	out->params = expand_params(c, a);
	switch (a->kind) {
	case RULES_ACT_REPUBLISH:
		out->topic = tmpl_expand(c, &a->topic);
		if (out->topic[0] == '$' && out->topic[1] == '$')
			out->topic++; /* republish-rule-action.md: "$$" writes a reserved "$" topic */
		out->qos = a->qos;
		if (a->nhdrs) {
			rules_header *h = rules_ctx_alloc(c, sizeof *h * (size_t)a->nhdrs);
			if (!h)
				break;
			for (int i = 0; i < a->nhdrs; i++) {
				h[i].kind = a->hdrs[i].kind;
				h[i].key = a->hdrs[i].kind == RULES_HDR_USER_PROPERTY ? tmpl_expand(c, &a->hdrs[i].key) : NULL;
				h[i].value = tmpl_expand(c, &a->hdrs[i].val);
			}
			out->headers = h;
			out->nheaders = a->nhdrs;
		}
		break;
	case RULES_ACT_SINK:
		out->sink = a->sink;
		out->table = a->table;
		out->pkey = a->has_pkey ? tmpl_expand(c, &a->pkey) : (m->thing ? m->thing : "");
		break;
	case RULES_ACT_ALERT:
		out->alert_name = a->alert_name;
		out->alert_key = a->alert_key;
		out->topic = tmpl_expand(c, &a->topic);
		break;
	case RULES_ACT_WEBHOOK:
		out->url = tmpl_expand(c, &a->topic);
		break;
	}
}

static const char *resource_of(const rules_action_out *o)
{
	switch (o->kind) {
	case RULES_ACT_REPUBLISH: return o->topic;
	case RULES_ACT_SINK: return o->sink;
	case RULES_ACT_ALERT: return o->alert_name;
	case RULES_ACT_WEBHOOK: return o->url;
	}
	return "";
}

static json_t *error_payload(const rule *r, const tg_msg *m, json_t *failures)
{
	json_t *e = json_object();
	if (!e)
		return NULL;
	json_object_set_new(e, "ruleName", json_string(r->name));
	json_object_set_new(e, "topic", json_string(m->topic ? m->topic : ""));
	const char *cid = m->client_id && *m->client_id ? m->client_id : m->thing ? m->thing : "n/a";
	json_object_set_new(e, "clientId", json_string(cid));
	if (m->payload && m->payloadlen < (1u << 28)) {
		char *b = malloc(4 * ((m->payloadlen + 2) / 3) + 1);
		if (b) {
			EVP_EncodeBlock((unsigned char *)b, m->payload, (int)m->payloadlen);
			json_object_set_new(e, "base64OriginalPayload", json_string(b));
			free(b);
		}
	} else {
		json_object_set_new(e, "base64OriginalPayload", json_string(""));
	}
	json_object_set(e, "failures", failures);
	return e;
}

/* The rule's errorAction with the documented error-message payload; c holds the message's
 * evaluation (SET variables) for the errorAction's templates. */
static void run_error_action(rules_ctx *c, const rule *r, const tg_msg *m, json_t *failures, rules_action_fn fn,
			     void *ud, rules_stats *st)
{
	rules_action_out out;
	json_t *ep = error_payload(r, m, failures);
	fill_out(c, r, r->erract, &out);
	out.is_error_action = 1;
	out.payload = ep;
	if (out.kind == RULES_ACT_ALERT)
		out.alert_cond = RULES_ALERT_RAISE;
	char err[256] = "";
	st->actions++;
	if (ep && fn(ud, &out, err, sizeof err) < 0) {
		st->action_errors++;
		LOG_WARN(SUB, "msg=\"errorAction failed\" rule=%s error=\"%s\"", r->name, err);
	}
	json_decref(ep);
}

/* 1 when the host says every alert action of r would change nothing for this message's
 * thing unless it raised (see rules_env.alert_idle). */
static int alert_actions_idle(const rules_set *rs, const rule *r, const tg_msg *m)
{
	if (!rs->env.alert_idle || !m->thing)
		return 0;
	for (int i = 0; i < r->nacts; i++) {
		const raction *a = &r->acts[i];
		if (a->kind == RULES_ACT_ALERT &&
		    !rs->env.alert_idle(rs->env.alert_ud, r->name, a->alert_name, a->alert_key, m->thing))
			return 0;
	}
	return 1;
}

static int eval_rule(rules_ctx *c, const rules_set *rs, const rule *r, rule_ctr *k, const tg_msg *m,
		     rules_action_fn fn, void *ud, rules_stats *st)
{
	rules_stats before = *st;
	const rules_stmt *s = r->st;
	json_t *payload = NULL, *failures = NULL;
	int matched = 0;
	rules_ctx_reset(c);
	c->m = m;
	c->env = &rs->env;
	c->ver = r->ver;
	c->row = m->json;
	st->evaluated++;
	for (int i = 0; i < s->nvars; i++) {
		rules_eval_node(c, s->var_exprs[i], &c->vars[i]);
		c->nvars = i + 1;
	}
	int where_ok = !s->q->where || rules_eval_cond(c, s->q->where);
	if (c->err || (!where_ok && !r->has_alert))
		goto out;
	if (!where_ok && alert_actions_idle(rs, r, m))
		goto out; /* the usual message: below the threshold, nothing pending or raised */
	payload = rules_eval_select(c, s->q);
	if (c->err)
		goto out;
	if (!payload)
		payload = json_string(""); /* SELECT VALUE of Undefined serialises as "" */
	if (where_ok) {
		matched = 1;
		st->matched++;
	}
	for (int i = 0; i < r->nacts; i++) {
		const raction *a = &r->acts[i];
		rules_action_out out;
		if (a->kind != RULES_ACT_ALERT && !where_ok)
			continue;
		fill_out(c, r, a, &out);
		out.payload = payload;
		if (a->kind == RULES_ACT_ALERT) {
			if (where_ok)
				out.alert_cond = RULES_ALERT_RAISE;
			else if (a->clear && rules_eval_cond(c, a->clear))
				out.alert_cond = RULES_ALERT_CLEAR;
			else
				out.alert_cond = RULES_ALERT_NONE;
		}
		char err[256] = "";
		st->actions++;
		if (fn(ud, &out, err, sizeof err) < 0) {
			st->action_errors++;
			note_error(rs, k, m, "action failed", err[0] ? err : "action failed");
			if (!failures)
				failures = json_array();
			json_array_append_new(failures, json_pack("{s:s, s:s, s:s}", "failedAction",
								  failed_action_name(a->kind), "failedResource",
								  resource_of(&out) ? resource_of(&out) : "", "errorMessage",
								  err[0] ? err : "action failed"));
		}
	}
	if (failures && r->erract) {
		run_error_action(c, r, m, failures, fn, ud, st);
	} else if (failures) {
		LOG_WARN(SUB, "msg=\"actions failed, no errorAction\" rule=%s failed=%zu", r->name,
			 json_array_size(failures));
	}
out:
	if (c->err) {
		/* a runtime error (regex match limit, memory): this rule does not fire. The line
		 * carries no per-message detail so the log's repeat folding can absorb a flood */
		st->eval_errors++;
		note_error(rs, k, m, "evaluation error", c->errmsg);
		LOG_WARN(SUB, "msg=\"evaluation error\" rule=%s error=\"%s\"", r->name, c->errmsg);
	}
	if (st->matched != before.matched)
		atomic_fetch_add_explicit(&k->matched, st->matched - before.matched, memory_order_relaxed);
	if (st->actions != before.actions)
		atomic_fetch_add_explicit(&k->actions, st->actions - before.actions, memory_order_relaxed);
	if (st->action_errors != before.action_errors)
		atomic_fetch_add_explicit(&k->action_errors, st->action_errors - before.action_errors, memory_order_relaxed);
	if (st->eval_errors != before.eval_errors)
		atomic_fetch_add_explicit(&k->eval_errors, st->eval_errors - before.eval_errors, memory_order_relaxed);
	json_decref(failures);
	json_decref(payload);
	return matched;
}

/* The set's scratch context, or a private one (priv) while another thread holds it. */
static rules_ctx *ctx_take(const rules_set *rs, rules_ctx *priv, int *own)
{
	*own = 0;
	if (!atomic_flag_test_and_set(&rs->scr->busy))
		return &rs->scr->ctx;
	if (rules_ctx_init(priv) < 0)
		return NULL;
	*own = 1;
	return priv;
}

static void ctx_give(const rules_set *rs, rules_ctx *c, int own)
{
	rules_ctx_reset(c);
	if (own)
		rules_ctx_free(c);
	else
		atomic_flag_clear(&rs->scr->busy);
}

int rules_run_error_action(const rules_set *rs, const char *rule_name, const tg_msg *m, rules_action_kind failed,
			   const char *resource, const char *errmsg, rules_action_fn fn, void *ud, rules_stats *st)
{
	const rule *r = NULL;
	if (!rs || !rule_name || !m || !fn)
		return TG_EINVAL;
	for (size_t i = 0; i < rs->n && !r; i++)
		if (strcmp(rs->rules[i].name, rule_name) == 0)
			r = &rs->rules[i];
	if (!r || !r->erract)
		return 0;
	json_t *failures = json_pack("[{s:s, s:s, s:s}]", "failedAction", failed_action_name(failed), "failedResource",
				     resource ? resource : "", "errorMessage", errmsg ? errmsg : "action failed");
	if (!failures)
		return TG_ENOMEM;
	rules_ctx priv, *c;
	int own;
	if (!(c = ctx_take(rs, &priv, &own))) {
		json_decref(failures);
		return TG_ENOMEM;
	}
	rules_stats local = {0};
	rules_ctx_reset(c);
	c->m = m;
	c->env = &rs->env;
	c->ver = r->ver;
	c->row = m->json;
	for (int i = 0; i < r->st->nvars; i++) {
		rules_eval_node(c, r->st->var_exprs[i], &c->vars[i]);
		c->nvars = i + 1;
	}
	run_error_action(c, r, m, failures, fn, ud, &local);
	ctx_give(rs, c, own);
	json_decref(failures);
	if (st) {
		st->actions += local.actions;
		st->action_errors += local.action_errors;
	}
	return 1;
}

/* The payload fields guards read, each looked up and converted at most once per message
 * (again only for a rule of the other SQL version, which may read a number differently). */
typedef struct cached_field {
	json_t *j;
	rules_val v;
	int ver; /* the version v was read in, -1: not yet */
} cached_field;

typedef struct field_cache {
	uint64_t have;
	cached_field f[GUARD_FIELDS];
} field_cache;

/* 1 when h's guard holds for m, as rules_eval_cond would find its WHERE's first conjunct. */
static int guard_holds(rules_ctx *c, const rules_set *rs, const rule_hot *h, const tg_msg *m, field_cache *fc)
{
	uint64_t bit = 1ull << h->gfield;
	cached_field *f = &fc->f[h->gfield];
	if (!(fc->have & bit)) {
		f->j = json_is_object(m->json) ? json_object_get(m->json, rs->gfields[h->gfield]) : NULL;
		f->ver = -1;
		fc->have |= bit;
	}
	if (f->ver != h->ver) {
		c->ver = (rules_sql_version)h->ver;
		rules_val_from_json(c, f->j, &f->v);
		f->ver = h->ver;
	}
	return h->glit_left ? rules_compare_holds(h->gop, &h->glit, &f->v) : rules_compare_holds(h->gop, &f->v, &h->glit);
}

static int cmp_hot(const void *a, const void *b)
{
	uint32_t x = (*(const rule_hot *const *)a)->id, y = (*(const rule_hot *const *)b)->id;
	return (x > y) - (x < y);
}

int rules_eval(const rules_set *rs, const tg_msg *m, rules_action_fn fn, void *ud, rules_stats *st)
{
	rules_stats local = {0};
	cands cs;
	rules_ctx priv, *c = NULL;
	int own = 0, matched = 0;
	if (!rs || !m || !m->topic || !fn)
		return TG_EINVAL;
	cs.ids = cs.stack;
	cs.n = 0;
	cs.cap = sizeof cs.stack / sizeof cs.stack[0];
	cs.oom = 0;
	rules_trie_match(rs->trie, m->topic, cand_cb, &cs);
	/* one group is already in file-name order; several are merged by rule index */
	const rule_hot *stack[64], **order = NULL;
	size_t n = cs.n == 1 ? rs->groups[cs.ids[0]].n : 0;
	if (cs.n > 1) {
		for (size_t i = 0; i < cs.n; i++)
			n += rs->groups[cs.ids[i]].n;
		order = n <= sizeof stack / sizeof stack[0] ? stack : malloc(sizeof *order * n);
		if (order) {
			size_t k = 0;
			for (size_t i = 0; i < cs.n; i++)
				for (size_t j = 0; j < rs->groups[cs.ids[i]].n; j++)
					order[k++] = &rs->groups[cs.ids[i]].hot[j];
			qsort(order, n, sizeof *order, cmp_hot);
		}
	}
	if (cs.oom || (cs.n > 1 && !order) || (n > 0 && !(c = ctx_take(rs, &priv, &own)))) {
		if (order != stack)
			free(order);
		if (cs.ids != cs.stack)
			free(cs.ids);
		return TG_ENOMEM;
	}
	/* the set is const to evaluation, its counters are not */
	for (size_t i = 0; i < cs.n; i++)
		atomic_fetch_add_explicit(&((rules_set *)rs)->groups[cs.ids[i]].hits, 1, memory_order_relaxed);
	field_cache fc;
	fc.have = 0;
	for (size_t i = 0; i < n; i++) {
		const rule_hot *h = order ? order[i] : &rs->groups[cs.ids[0]].hot[i];
		if (h->gop && !guard_holds(c, rs, h, m, &fc)) {
			local.evaluated++; /* the WHERE cannot hold: nothing else to do */
			continue;
		}
		matched += eval_rule(c, rs, &rs->rules[h->id], &rs->ctr[h->id], m, fn, ud, &local);
	}
	if (n > 0)
		ctx_give(rs, c, own);
	if (order != stack)
		free(order);
	if (cs.ids != cs.stack)
		free(cs.ids);
	if (st) {
		st->evaluated += local.evaluated;
		st->matched += local.matched;
		st->actions += local.actions;
		st->action_errors += local.action_errors;
		st->eval_errors += local.eval_errors;
	}
	return matched;
}
