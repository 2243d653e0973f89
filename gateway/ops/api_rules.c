/*
 * api_rules.c — /api/rules: list, read, write, delete and dry-run rules.
 *
 * A write is checked the way `tidegate rules check` checks a folder — rules_load_dir over
 * the folder as it would be after the write (the other rule files linked into a scratch
 * folder, the new text beside them), with the daemon's sink names — so a rule that passes
 * here loads in the daemon, and the errors carry file:line:col of the text sent. Only then
 * is the file written: a temporary file in rules_dir, fsynced, the previous version
 * hard-linked into rules_dir/.backup/, then renamed over the old one (the loader ignores
 * dot-files, so neither the temporary nor the backup is ever loaded). The daemon's own
 * reload then runs on its thread; if it refuses the folder after all (another file changed
 * meanwhile), the previous version is put back. One change at a time (rules_mu).
 */
#include "ops/console_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

#define ERRBUF (64 * 1024)
#define RULE_NAME_MAX 128

static int name_ok(const char *n)
{
	size_t len = strlen(n);
	return len > 0 && len <= RULE_NAME_MAX && n[0] != '.' &&
	       strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* "file:line:col: message" lines into [{file, line, col, message}], with the scratch
 * folder's path replaced by rules_dir's so the operator sees where the file will live. */
static json_t *parse_errors(const char *text, const char *scratch, const char *rules_dir)
{
	json_t *arr = json_array();
	char *copy = strdup(text ? text : ""), *save = NULL;
	size_t sl = scratch ? strlen(scratch) : 0;
	for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line && arr; line = strtok_r(NULL, "\n", &save)) {
		char file[PATH_MAX];
		const char *l = line;
		if (sl && strncmp(l, scratch, sl) == 0 && l[sl] == '/')
			snprintf(file, sizeof file, "%s%s", rules_dir, l + sl);
		else
			snprintf(file, sizeof file, "%s", l);
		/* split at the ":line:col: " that follows the path */
		int ln = 0, col = 0;
		char *msg = NULL;
		for (char *p = strchr(file, ':'); p; p = strchr(p + 1, ':')) {
			int a, b, used = 0;
			if (sscanf(p, ":%d:%d: %n", &a, &b, &used) == 2 && used > 0) {
				ln = a;
				col = b;
				msg = p + used;
				*p = '\0';
				break;
			}
		}
		json_array_append_new(arr, json_pack("{s:s, s:i, s:i, s:s}", "file", file, "line", ln, "col", col, "message",
						     msg ? msg : file));
	}
	free(copy);
	return arr;
}

static json_t *rule_json(const rules_rule_info *in, int with_source)
{
	json_t *src = json_loads(in->source, 0, NULL);
	json_t *j = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "name", in->name, "enabled", !in->disabled, "matches",
			      (json_int_t)in->matched, "evaluated", (json_int_t)in->evaluated, "actions_run",
			      (json_int_t)in->actions, "action_errors", (json_int_t)in->action_errors, "eval_errors",
			      (json_int_t)in->eval_errors);
	if (!j) {
		json_decref(src);
		return NULL;
	}
	json_object_set_new(j, "sql", json_incref(json_object_get(src, "sql")) ?: json_null());
	json_object_set_new(j, "description", json_incref(json_object_get(src, "description")) ?: json_string(""));
	json_object_set_new(j, "actions", json_incref(json_object_get(src, "actions")) ?: json_array());
	if (json_object_get(src, "errorAction"))
		json_object_set_new(j, "errorAction", json_incref(json_object_get(src, "errorAction")));
	json_object_set_new(j, "last_error", in->last_error_ms ? json_string(in->last_error) : json_null());
	if (in->last_error_ms)
		json_object_set_new(j, "last_error_ms", json_integer(in->last_error_ms));
	if (with_source)
		json_object_set_new(j, "source", json_string(in->source));
	json_decref(src);
	return j;
}

static rules_set *current_rules(ops_console *c)
{
	pthread_mutex_lock(&c->mu);
	rules_set *rs = rules_set_ref(c->rules);
	pthread_mutex_unlock(&c->mu);
	return rs;
}

static int list_rules(ops_console *c, http_resp *r)
{
	rules_set *rs = current_rules(c);
	json_t *arr = json_array();
	rules_rule_info in;
	for (size_t i = 0; arr && i < rules_count(rs); i++)
		if (rules_rule_get(rs, i, &in) == 0)
			json_array_append_new(arr, rule_json(&in, 0));
	rules_set_free(rs);
	pthread_mutex_lock(&c->mu);
	json_t *j = json_pack("{s:o, s:s, s:I}", "rules", arr ? arr : json_array(), "rules_dir",
			      c->cfg->rules_dir ? c->cfg->rules_dir : "", "loaded_ms", (json_int_t)c->rules_loaded_ms);
	if (j && c->rules_error)
		json_object_set_new(j, "last_reload_errors", parse_errors(c->rules_error, NULL, NULL));
	pthread_mutex_unlock(&c->mu);
	return ops_json(r, 200, j);
}

static int get_rule(ops_console *c, const char *name, http_resp *r)
{
	rules_set *rs = current_rules(c);
	rules_rule_info in;
	json_t *j = NULL;
	for (size_t i = 0; !j && i < rules_count(rs); i++)
		if (rules_rule_get(rs, i, &in) == 0 && strcmp(in.name, name) == 0)
			j = rule_json(&in, 1);
	rules_set_free(rs);
	if (!j)
		return ops_error(r, 404, "unknown_rule", "no rule named '%s' is loaded", name);
	return ops_json(r, 200, j);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static void rm_scratch(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX];
	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

/* Compile the folder as it would be with name.json = text (text NULL: without name.json).
 * 0 when it loads; else TG_EPARSE and the errors (file paths under rules_dir) in *errors,
 * or another code with a message in err. */
static int check_folder(ops_console *c, const char *name, const char *text, size_t len, json_t **errors, char *err,
			size_t errlen)
{
	const char *dir = c->cfg->rules_dir;
	char scratch[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
	snprintf(scratch, sizeof scratch, "%s/.rules-check-XXXXXX", c->cfg->data_dir);
	if (!mkdtemp(scratch))
		return tg_seterr(err, errlen, TG_EIO, "cannot make a scratch folder in %s: %s", c->cfg->data_dir, strerror(errno));
	int rc = 0;
	DIR *d = opendir(dir);
	if (!d) {
		rc = tg_seterr(err, errlen, TG_EIO, "rules_dir %s: %s", dir, strerror(errno));
		goto out;
	}
	char mine[RULE_NAME_MAX + 8];
	snprintf(mine, sizeof mine, "%s.json", name);
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0 || de->d_name[0] == '.' || strcmp(de->d_name, mine) == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		snprintf(q, sizeof q, "%s/%s", scratch, de->d_name);
		if (symlink(p, q) != 0) {
			rc = tg_seterr(err, errlen, TG_EIO, "scratch link %s: %s", q, strerror(errno));
			break;
		}
	}
	closedir(d);
	if (rc)
		goto out;
	if (text) {
		snprintf(q, sizeof q, "%s/%s", scratch, mine);
		int fd = open(q, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write_all(fd, text, len)) {
			if (fd >= 0)
				close(fd);
			rc = tg_seterr(err, errlen, TG_EIO, "scratch file %s: %s", q, strerror(errno));
			goto out;
		}
		close(fd);
	}
	char *ebuf = malloc(ERRBUF);
	if (!ebuf) {
		rc = tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto out;
	}
	rules_env env = {.sink_names = c->sink_names};
	rules_set *rs = rules_load_dir(scratch, &env, ebuf, ERRBUF);
	if (!rs) {
		*errors = parse_errors(ebuf, scratch, dir);
		rc = TG_EPARSE;
	}
	rules_set_free(rs);
	free(ebuf);
out:
	rm_scratch(scratch);
	return rc;
}

/* Run the daemon's reload on its thread. 0 when the set it loaded is in force. */
static int reload(ops_console *c, json_t **errors)
{
	pthread_mutex_lock(&c->mu);
	int64_t before = c->rules_loaded_ms;
	pthread_mutex_unlock(&c->mu);
	ops_job j = {.kind = OPS_JOB_RELOAD};
	int rc = ops_run_job(c, &j, 10000);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->mu);
	int ok = j.rc == 0 && c->rules_loaded_ms != before;
	if (!ok && errors)
		*errors = parse_errors(c->rules_error, NULL, NULL);
	pthread_mutex_unlock(&c->mu);
	return ok ? 0 : TG_EPARSE;
}

static int no_rules_dir(ops_console *c, http_resp *r)
{
	if (c->cfg->rules_dir && *c->cfg->rules_dir)
		return 0;
	ops_error(r, 409, "no_rules_dir", "[ingest] rules_dir is not set: there is no folder to write rules into");
	return 1;
}

/* rules_dir/.backup/<name>.json = the current file (a hard link: the same bytes, for free).
 * Returns 1 when there was a file to back up, 0 when not, < 0 on error. */
static int backup(ops_console *c, const char *name, char *err, size_t errlen)
{
	char cur[PATH_MAX], bdir[PATH_MAX], bak[PATH_MAX];
	snprintf(cur, sizeof cur, "%s/%s.json", c->cfg->rules_dir, name);
	snprintf(bdir, sizeof bdir, "%s/.backup", c->cfg->rules_dir);
	snprintf(bak, sizeof bak, "%s/%s.json", bdir, name);
	if (access(cur, F_OK) != 0)
		return 0;
	if (mkdir(bdir, 0750) != 0 && errno != EEXIST)
		return tg_seterr(err, errlen, TG_EIO, "%s: %s", bdir, strerror(errno));
	unlink(bak);
	if (link(cur, bak) != 0)
		return tg_seterr(err, errlen, TG_EIO, "backup %s: %s", bak, strerror(errno));
	return 1;
}

/* Put the backed-up version back (or remove the new file when there was none). */
static void restore(ops_console *c, const char *name, int had_old)
{
	char cur[PATH_MAX], bak[PATH_MAX];
	snprintf(cur, sizeof cur, "%s/%s.json", c->cfg->rules_dir, name);
	snprintf(bak, sizeof bak, "%s/.backup/%s.json", c->cfg->rules_dir, name);
	if (had_old) {
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof tmp, "%s/.%s.json.restore", c->cfg->rules_dir, name);
		unlink(tmp);
		if (link(bak, tmp) == 0)
			rename(tmp, cur);
	} else {
		unlink(cur);
	}
	sync_dir(c->cfg->rules_dir);
}

static int put_rule(ops_console *c, const http_req *req, http_resp *r, const char *name)
{
	const char *dry = http_req_query(req, "dry_run");
	int dry_run = dry && (strcmp(dry, "1") == 0 || strcmp(dry, "true") == 0);
	if (no_rules_dir(c, r))
		return 0;
	size_t len;
	const char *text = http_req_body(req, &len);
	/* the body must be JSON at all before the folder check spends a scratch folder on it;
	 * the loader reports the position of any other problem */
	json_error_t je;
	json_t *probe = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!probe) {
		atomic_fetch_add(&c->rule_change_failures, 1);
		json_t *errs = json_pack("[{s:s, s:i, s:i, s:s}]", "file", name, "line", je.line, "col", je.column, "message",
					 je.text);
		return ops_json(r, 400, json_pack("{s:s, s:s, s:o}", "error", "bad_json", "detail", je.text, "errors", errs));
	}
	json_decref(probe);
	char err[1024] = "";
	json_t *errors = NULL;
	pthread_mutex_lock(&c->rules_mu);
	int rc = check_folder(c, name, text, len, &errors, err, sizeof err);
	if (rc == TG_EPARSE) {
		pthread_mutex_unlock(&c->rules_mu);
		atomic_fetch_add(&c->rule_change_failures, 1);
		json_t *first = json_array_get(errors, 0);
		char detail[1200];
		snprintf(detail, sizeof detail, "%s:%d:%d: %s", json_string_value(json_object_get(first, "file")),
			 (int)json_integer_value(json_object_get(first, "line")), (int)json_integer_value(json_object_get(first, "col")),
			 json_string_value(json_object_get(first, "message")));
		return ops_json(r, 422, json_pack("{s:s, s:s, s:o}", "error", "invalid_rule", "detail", detail, "errors", errors));
	}
	if (rc) {
		pthread_mutex_unlock(&c->rules_mu);
		return ops_error(r, 500, "internal", "%s", err);
	}
	if (dry_run) {
		pthread_mutex_unlock(&c->rules_mu);
		return ops_json(r, 200, json_pack("{s:s, s:b, s:b}", "name", name, "valid", 1, "written", 0));
	}
	char tmp[PATH_MAX], cur[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s/.%s.json.tmp-%ld", c->cfg->rules_dir, name, (long)getpid());
	snprintf(cur, sizeof cur, "%s/%s.json", c->cfg->rules_dir, name);
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, text, len) || fsync(fd) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		pthread_mutex_unlock(&c->rules_mu);
		return ops_error(r, 500, "write_failed", "%s: %s", tmp, strerror(e));
	}
	close(fd);
	int had_old = backup(c, name, err, sizeof err);
	if (had_old < 0 || rename(tmp, cur) != 0) {
		if (had_old >= 0)
			snprintf(err, sizeof err, "rename to %s: %s", cur, strerror(errno));
		unlink(tmp);
		pthread_mutex_unlock(&c->rules_mu);
		return ops_error(r, 500, "write_failed", "%s", err);
	}
	sync_dir(c->cfg->rules_dir);
	rc = reload(c, &errors);
	if (rc) {
		restore(c, name, had_old);
		json_t *again = NULL;
		reload(c, &again);
		json_decref(again);
		pthread_mutex_unlock(&c->rules_mu);
		atomic_fetch_add(&c->rule_change_failures, 1);
		return ops_json(r, rc == TG_EPARSE ? 409 : 503,
				json_pack("{s:s, s:s, s:o}", "error", rc == TG_EPARSE ? "reload_refused" : "daemon_busy", "detail",
					  rc == TG_EPARSE ? "the daemon refused the rules folder; the previous version is back"
							  : "the daemon did not run the reload in time; the previous version is back",
					  "errors", errors ? errors : json_array()));
	}
	pthread_mutex_unlock(&c->rules_mu);
	json_decref(errors);
	atomic_fetch_add(&c->rule_changes, 1);
	LOG_INFO("console", "msg=\"rule written through the API and reloaded\" rule=%s file=%s created=%s", name, cur,
		 had_old ? "false" : "true");
	return ops_json(r, had_old ? 200 : 201,
			json_pack("{s:s, s:b, s:b, s:s}", "name", name, "written", 1, "created", !had_old, "file", cur));
}

static int delete_rule(ops_console *c, http_resp *r, const char *name)
{
	if (no_rules_dir(c, r))
		return 0;
	char cur[PATH_MAX], err[512] = "";
	snprintf(cur, sizeof cur, "%s/%s.json", c->cfg->rules_dir, name);
	pthread_mutex_lock(&c->rules_mu);
	if (access(cur, F_OK) != 0) {
		pthread_mutex_unlock(&c->rules_mu);
		return ops_error(r, 404, "unknown_rule", "no rule file %s", cur);
	}
	json_t *errors = NULL;
	int rc = check_folder(c, name, NULL, 0, &errors, err, sizeof err);
	if (rc) {
		pthread_mutex_unlock(&c->rules_mu);
		atomic_fetch_add(&c->rule_change_failures, 1);
		if (rc == TG_EPARSE)
			return ops_json(r, 409, json_pack("{s:s, s:s, s:o}", "error", "invalid_rules", "detail",
							  "the folder would not load without this rule", "errors", errors));
		return ops_error(r, 500, "internal", "%s", err);
	}
	if (backup(c, name, err, sizeof err) < 0 || unlink(cur) != 0) {
		pthread_mutex_unlock(&c->rules_mu);
		return ops_error(r, 500, "write_failed", "%s", err[0] ? err : strerror(errno));
	}
	sync_dir(c->cfg->rules_dir);
	rc = reload(c, &errors);
	if (rc) {
		restore(c, name, 1);
		json_t *again = NULL;
		reload(c, &again);
		json_decref(again);
		pthread_mutex_unlock(&c->rules_mu);
		atomic_fetch_add(&c->rule_change_failures, 1);
		return ops_json(r, 409, json_pack("{s:s, s:s, s:o}", "error", "reload_refused", "detail",
						  "the daemon refused the rules folder; the rule is back", "errors",
						  errors ? errors : json_array()));
	}
	pthread_mutex_unlock(&c->rules_mu);
	json_decref(errors);
	atomic_fetch_add(&c->rule_changes, 1);
	LOG_INFO("console", "msg=\"rule deleted through the API\" rule=%s backup=%s/.backup/%s.json", name,
		 c->cfg->rules_dir, name);
	return ops_json(r, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}

/* ---- POST /api/rules/test ----------------------------------------------------------- */

typedef struct test_ctx {
	json_t *actions;
} test_ctx;

static const char *cond_name(rules_alert_cond c)
{
	return c == RULES_ALERT_RAISE ? "raise" : c == RULES_ALERT_CLEAR ? "clear" : "none";
}

/* What each action would do; nothing is done (like `tidegate rules test`). */
static int collect(void *ud, const rules_action_out *a, char *err, size_t errlen)
{
	test_ctx *t = ud;
	json_t *o = json_pack("{s:s, s:b}", "kind", rules_action_kind_name(a->kind), "error_action", a->is_error_action);
	if (!o)
		return TG_ENOMEM;
	switch (a->kind) {
	case RULES_ACT_REPUBLISH:
		json_object_set_new(o, "topic", json_string(a->topic));
		json_object_set_new(o, "qos", json_integer(a->qos));
		break;
	case RULES_ACT_SINK:
		json_object_set_new(o, "sink", json_string(a->sink ? a->sink : ""));
		json_object_set_new(o, "table", json_string(a->table ? a->table : "telemetry"));
		json_object_set_new(o, "partition_key", json_string(a->pkey ? a->pkey : ""));
		break;
	case RULES_ACT_ALERT:
		json_object_set_new(o, "alert", json_string(a->alert_name ? a->alert_name : ""));
		json_object_set_new(o, "condition", json_string(cond_name(a->alert_cond)));
		json_object_set_new(o, "topic", json_string(a->topic ? a->topic : ""));
		break;
	case RULES_ACT_WEBHOOK: json_object_set_new(o, "url", json_string(a->url ? a->url : "")); break;
	}
	json_object_set_new(o, "payload", a->payload ? json_deep_copy(a->payload) : json_null());
	json_array_append_new(t->actions, o);
	return 0;
}

static char *read_rule_file(ops_console *c, const char *name, size_t *len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s.json", c->cfg->rules_dir ? c->cfg->rules_dir : "", name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(256 * 1024 + 1);
	size_t n = buf ? fread(buf, 1, 256 * 1024, f) : 0;
	fclose(f);
	if (buf)
		buf[n] = '\0';
	*len = n;
	return buf;
}

static int test_rule(ops_console *c, const http_req *req, http_resp *r)
{
	json_t *body = ops_body_object(req, r);
	if (!body)
		return 0;
	const char *name = json_string_value(json_object_get(body, "name"));
	const char *topic = json_string_value(json_object_get(body, "topic"));
	json_t *src = json_object_get(body, "source"), *rule = json_object_get(body, "rule");
	json_t *payload = json_object_get(body, "payload");
	char *text = NULL, *ptext = NULL, *ebuf = NULL;
	size_t len = 0;
	rules_set *rs = NULL;
	int rc = 0;
	if (!name)
		name = "test";
	if (!name_ok(name)) {
		rc = ops_error(r, 400, "bad_rule_name", "rule names are 1..128 of [A-Za-z0-9_.-], not starting with '.'");
		goto out;
	}
	if (!topic || !*topic) {
		rc = ops_error(r, 400, "bad_request", "\"topic\" (a string) is required");
		goto out;
	}
	if (json_is_string(src))
		text = strdup(json_string_value(src)), len = text ? strlen(text) : 0;
	else if (json_is_object(rule))
		text = json_dumps(rule, JSON_INDENT(2)), len = text ? strlen(text) : 0;
	else if (!(text = read_rule_file(c, name, &len))) {
		rc = ops_error(r, 404, "unknown_rule", "give \"source\" (rule text), \"rule\" (object) or the \"name\" of a saved rule");
		goto out;
	}
	if (!text || !(ebuf = malloc(ERRBUF))) {
		rc = ops_error(r, 500, "internal", "out of memory");
		goto out;
	}
	char file[RULE_NAME_MAX + 8];
	snprintf(file, sizeof file, "%s.json", name);
	rules_env env = {.sink_names = c->sink_names};
	if (!(rs = rules_load_text(file, text, len, &env, ebuf, ERRBUF))) {
		json_t *errs = parse_errors(ebuf, NULL, NULL);
		char *nl = strchr(ebuf, '\n');
		if (nl)
			*nl = '\0';
		rc = ops_json(r, 422, json_pack("{s:s, s:s, s:o}", "error", "invalid_rule", "detail", ebuf, "errors", errs));
		goto out;
	}
	/* the payload as the device would send it: an object (serialised), or text as is */
	ptext = json_is_string(payload) ? strdup(json_string_value(payload))
					: json_dumps(payload ? payload : json_object(), JSON_COMPACT | JSON_ENCODE_ANY);
	json_t *pj = ptext ? json_loads(ptext, 0, NULL) : NULL;
	char thing[256] = "";
	const char *given = json_string_value(json_object_get(body, "thing"));
	if (given) {
		snprintf(thing, sizeof thing, "%s", given);
	} else {
		const char *s = strchr(topic, '/');
		if (s) {
			const char *e = strchr(s + 1, '/');
			size_t n = e ? (size_t)(e - s - 1) : strlen(s + 1);
			if (n < sizeof thing) {
				memcpy(thing, s + 1, n);
				thing[n] = '\0';
			}
		}
	}
	json_t *tsj = json_object_get(body, "timestamp");
	tg_msg m = {.topic = topic, .thing = thing, .client_id = thing, .principal = thing, .payload = ptext,
		    .payloadlen = ptext ? strlen(ptext) : 0, .json = pj,
		    .received_ms = json_is_integer(tsj) ? (int64_t)json_integer_value(tsj) : ops_now_ms(), .qos = 1};
	test_ctx t = {json_array()};
	rules_stats st = {0};
	int n = rules_eval(rs, &m, collect, &t, &st);
	const char *note = st.evaluated == 0   ? "no match: the topic does not match the rule's FROM filter"
			   : st.eval_errors    ? "evaluation error"
			   : n == 0            ? "no match: WHERE did not hold"
					       : "matched";
	rc = ops_json(r, 200, json_pack("{s:b, s:b, s:s, s:o, s:I}", "matched", n > 0, "evaluated", st.evaluated > 0, "note", note,
					 "actions", t.actions, "eval_errors", (json_int_t)st.eval_errors));
	json_decref(pj);
out:
	rules_set_free(rs);
	free(text);
	free(ptext);
	free(ebuf);
	json_decref(body);
	return rc;
}

int ops_api_rules(ops_console *c, const http_req *req, http_resp *r, const char *rest)
{
	const char *m = http_req_method(req);
	int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
	if (*rest == '\0')
		return get ? list_rules(c, r) : ops_error(r, 405, "method_not_allowed", "/api/rules takes GET");
	const char *name = rest + 1; /* after the '/' */
	if (strcmp(name, "test") == 0)
		return strcmp(m, "POST") == 0 ? test_rule(c, req, r)
					       : ops_error(r, 405, "method_not_allowed", "/api/rules/test takes POST");
	if (!name_ok(name))
		return ops_error(r, 400, "bad_rule_name",
				 "rule names are 1..128 of [A-Za-z0-9_.-], not starting with '.' (no folders)");
	if (get)
		return get_rule(c, name, r);
	if (strcmp(m, "PUT") == 0)
		return put_rule(c, req, r, name);
	if (strcmp(m, "DELETE") == 0)
		return delete_rule(c, r, name);
	return ops_error(r, 405, "method_not_allowed", "/api/rules/NAME takes GET, PUT or DELETE");
}
