/*
 * registry_cli.c — see registry_cli.h. One function per subcommand; each parses its own
 * options, opens the registry read-write (which creates and migrates it), does one registry
 * call and prints. Errors name the thing or fingerprint involved and say what to do. Key
 * material is never made here: `register --issue` runs the certs/ scripts
 * (issue-device.sh) and then registers the certificate they wrote, and `revoke` runs
 * revoke.sh after the registry change so the CRL follows; the scripts are started with
 * posix_spawn (no shell), and thing names are validated before they reach them.
 */
#include "registry/registry_cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "registry/registry.h"

extern char **environ;

#define CLI_DEFAULT_DB "/var/lib/tidegate/registry.db"
#define CLI_MAX_PEM (1 << 20)

typedef struct cli {
	const char *db_path;
	const char *pki;   /* certs output folder (CA, things/) */
	const char *certs; /* folder holding issue-device.sh / revoke.sh */
	int json;
	registry *reg;
	char err[512];
} cli;

static void rfc3339(int64_t ms, char *buf, size_t len)
{
	if (ms <= 0) {
		snprintf(buf, len, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void usage(FILE *out)
{
	fputs("usage: tidegate device [--db FILE] COMMAND [ARGS]\n"
	      "  register THING [--cert FILE | --issue] [--inactive] [--attr KEY=VALUE]...\n"
	      "  activate THING [--cert FINGERPRINT|FILE]\n"
	      "  deactivate THING [--cert FINGERPRINT|FILE]\n"
	      "  revoke THING [--cert FINGERPRINT|FILE]      (also updates the CRL with --pki)\n"
	      "  list [--json] [--limit N [--after THING]]    (one page, in name order)\n"
	      "  show THING [--json] [--pem]\n"
	      "  set-attr THING KEY=VALUE...                  (KEY= removes the attribute)\n"
	      "options: --db FILE (env TIDEGATE_REGISTRY, default " CLI_DEFAULT_DB ")\n"
	      "         --pki DIR (env TIDEGATE_PKI: the certs/ output folder, for --issue and CRL)\n"
	      "         --certs-dir DIR (env TIDEGATE_CERTS: where issue-device.sh, revoke.sh are)\n",
	      out);
}

static int fail(cli *c, int code)
{
	(void)code;
	fprintf(stderr, "tidegate device: %s\n", c->err);
	return 1;
}

static int open_reg(cli *c)
{
	c->reg = registry_open(c->db_path, 0, 5000, c->err, sizeof c->err);
	return c->reg ? 0 : fail(c, TG_EDB);
}

/* Read a whole (small) file into a NUL-terminated heap buffer. */
static char *slurp(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	if (!f) {
		tg_seterr(err, errlen, TG_EIO, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(CLI_MAX_PEM + 1);
	if (!buf) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		goto done;
	}
	*len = fread(buf, 1, CLI_MAX_PEM + 1, f);
	if (ferror(f) || *len > CLI_MAX_PEM) {
		tg_seterr(err, errlen, TG_EIO, "%s: %s", path,
			  ferror(f) ? strerror(errno) : "larger than 1 MiB, not a certificate");
		free(buf);
		buf = NULL;
		goto done;
	}
	buf[*len] = '\0';
done:
	fclose(f);
	return buf;
}

static int load_cert_file(cli *c, const char *path, registry_cert_info *ci)
{
	size_t len = 0;
	char *pem = slurp(path, &len, c->err, sizeof c->err);
	if (!pem)
		return TG_EIO;
	char why[300];
	int rc = registry_cert_parse_pem(pem, len, ci, why, sizeof why);
	free(pem);
	if (rc)
		tg_seterr(c->err, sizeof c->err, rc, "%s: %s", path, why);
	return rc;
}

/* --cert takes a fingerprint or a certificate file; either way out gets the fingerprint. */
static int resolve_fp(cli *c, const char *arg, char out[REGISTRY_FP_HEX + 1])
{
	if (registry_fingerprint_normalise(arg, out) == 0)
		return 0;
	struct stat sb;
	if (stat(arg, &sb) != 0)
		return tg_seterr(c->err, sizeof c->err, TG_EINVAL,
				 "--cert %s: neither a SHA-256 fingerprint (64 hex digits) nor a "
				 "readable file",
				 arg);
	registry_cert_info ci;
	int rc = load_cert_file(c, arg, &ci);
	if (rc == 0)
		memcpy(out, ci.fingerprint, sizeof ci.fingerprint);
	registry_cert_info_clear(&ci);
	return rc;
}

/* Run a certs/ script with arguments, no shell. 0 when it exited 0. */
static int run_script(cli *c, const char *name, char *const args[])
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", c->certs, name);
	if (access(path, X_OK) != 0)
		return tg_seterr(c->err, sizeof c->err, TG_ENOTFOUND,
				 "%s not found or not executable (set --certs-dir or TIDEGATE_CERTS)",
				 path);
	char *argv[8] = {path};
	for (int i = 0; args[i] && i < 6; i++)
		argv[i + 1] = args[i];
	pid_t pid;
	int rc = posix_spawn(&pid, path, NULL, NULL, argv, environ);
	if (rc != 0)
		return tg_seterr(c->err, sizeof c->err, TG_EIO, "cannot start %s: %s", path,
				 strerror(rc));
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return tg_seterr(c->err, sizeof c->err, TG_EIO, "%s failed (status %d)", path,
				 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}

/* ---- register ------------------------------------------------------------------------ */

static int cmd_register(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"cert", required_argument, NULL, 'c'}, {"issue", no_argument, NULL, 'i'},
		{"inactive", no_argument, NULL, 'n'},   {"attr", required_argument, NULL, 'a'},
		{NULL, 0, NULL, 0},
	};
	const char *cert_path = NULL;
	int issue = 0, inactive = 0, ret = 1;
	char **attrs = calloc((size_t)argc + 1, sizeof *attrs);
	int nattrs = 0, opt;
	registry_cert_info ci;
	memset(&ci, 0, sizeof ci);
	if (!attrs)
		return 1;
	optind = 0; /* glibc: 0 re-initialises getopt fully */
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': cert_path = optarg; break;
		case 'i': issue = 1; break;
		case 'n': inactive = 1; break;
		case 'a': attrs[nattrs++] = optarg; break;
		default: ret = 2; goto done;
		}
	}
	if (optind != argc - 1 || (cert_path && issue)) {
		fprintf(stderr, "usage: tidegate device register THING [--cert FILE | --issue] "
				"[--inactive] [--attr KEY=VALUE]...\n");
		ret = 2;
		goto done;
	}
	const char *thing = argv[optind];
	if (registry_name_check(thing, c->err, sizeof c->err)) {
		fail(c, TG_EINVAL);
		goto done;
	}
	for (int i = 0; i < nattrs; i++) {
		char *eq = strchr(attrs[i], '=');
		if (!eq) {
			tg_seterr(c->err, sizeof c->err, TG_EINVAL, "--attr %s: want KEY=VALUE", attrs[i]);
			fail(c, TG_EINVAL);
			goto done;
		}
		*eq = '\0';
		if (registry_attr_check(attrs[i], eq + 1, c->err, sizeof c->err)) {
			fail(c, TG_EINVAL);
			goto done;
		}
		*eq = '=';
	}
	char issued[1024];
	if (issue) {
		if (!c->pki) {
			tg_seterr(c->err, sizeof c->err, TG_EINVAL,
				  "--issue needs the certificate folder: --pki DIR or TIDEGATE_PKI");
			fail(c, TG_EINVAL);
			goto done;
		}
		char *args[] = {(char *)c->pki, (char *)thing, NULL};
		if (run_script(c, "issue-device.sh", args)) {
			fail(c, TG_EIO);
			goto done;
		}
		snprintf(issued, sizeof issued, "%s/things/%s.crt", c->pki, thing);
		cert_path = issued;
	}
	if (cert_path && load_cert_file(c, cert_path, &ci)) {
		fail(c, TG_EPARSE);
		goto done;
	}
	if (open_reg(c))
		goto done;
	int64_t now = tg_wall_ms();
	if (registry_register(c->reg, thing, cert_path ? &ci : NULL,
			      inactive ? REGISTRY_INACTIVE : REGISTRY_ACTIVE, "cli", now, c->err,
			      sizeof c->err)) {
		fail(c, TG_EDB);
		goto done;
	}
	for (int i = 0; i < nattrs; i++) {
		char *eq = strchr(attrs[i], '=');
		*eq = '\0';
		if (registry_attr_set(c->reg, thing, attrs[i], eq[1] ? eq + 1 : NULL, now, c->err,
				      sizeof c->err)) {
			fail(c, TG_EDB);
			goto done;
		}
	}
	if (cert_path) {
		printf("registered %s with certificate %s (%s)%s\n", thing, ci.fingerprint,
		       inactive ? "INACTIVE" : "ACTIVE", issue ? ", issued by certs/" : "");
		if (ci.subject_cn[0] && strcmp(ci.subject_cn, thing) != 0)
			fprintf(stderr,
				"tidegate device: note: the certificate's CN is \"%s\", not \"%s\"; "
				"the device must still connect with client id \"%s\"\n",
				ci.subject_cn, thing, thing);
	} else {
		printf("registered %s (no certificate yet: it cannot connect)\n", thing);
	}
	ret = 0;
done:
	registry_cert_info_clear(&ci);
	free(attrs);
	return ret;
}

/* ---- activate / deactivate / revoke -------------------------------------------------- */

/* After a revocation: the registry change alone stops the device within a second (the
 * broker plugin polls); the CRL makes it hold for anything else that trusts the CA, once the
 * broker reloads it. revoke.sh revokes the certificate file certs/ keeps for the thing, so
 * run it only when that file is a certificate this registry has revoked for this thing. */
static int update_crl(cli *c, const char *thing)
{
	if (!c->pki) {
		fprintf(stderr, "tidegate device: note: CRL not updated (no --pki / TIDEGATE_PKI given)\n");
		return 0;
	}
	char path[1024];
	snprintf(path, sizeof path, "%s/things/%s.crt", c->pki, thing);
	registry_cert_info ci;
	registry_ident id;
	if (access(path, R_OK) != 0) {
		fprintf(stderr, "tidegate device: note: CRL not updated (%s does not exist)\n", path);
		return 0;
	}
	if (load_cert_file(c, path, &ci))
		return fail(c, TG_EPARSE);
	int rc = registry_lookup(c->reg, ci.fingerprint, &id, c->err, sizeof c->err);
	registry_cert_info_clear(&ci);
	if (rc && rc != TG_ENOTFOUND)
		return fail(c, rc);
	if (rc == TG_ENOTFOUND || strcmp(id.thing, thing) != 0 || id.status != REGISTRY_REVOKED) {
		fprintf(stderr, "tidegate device: note: CRL not updated (%s is not a certificate "
				"revoked here)\n", path);
		return 0;
	}
	char *args[] = {(char *)c->pki, (char *)thing, NULL};
	if (run_script(c, "revoke.sh", args))
		return fail(c, TG_EIO);
	printf("%s: certificate revoked in the CRL of %s\n", thing, c->pki);
	return 0;
}

static int cmd_status(cli *c, int argc, char **argv, registry_status st)
{
	static const struct option opts[] = {
		{"cert", required_argument, NULL, 'c'},
		{NULL, 0, NULL, 0},
	};
	const char *cert = NULL;
	char fp[REGISTRY_FP_HEX + 1];
	int opt;
	optind = 0; /* glibc: 0 re-initialises getopt fully */
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt != 'c')
			return 2;
		cert = optarg;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: tidegate device %s THING [--cert FINGERPRINT|FILE]\n", argv[0]);
		return 2;
	}
	const char *thing = argv[optind];
	if (cert && resolve_fp(c, cert, fp))
		return fail(c, TG_EINVAL);
	if (open_reg(c))
		return 1;
	int changed = 0;
	if (registry_set_status(c->reg, thing, cert ? fp : NULL, st, tg_wall_ms(), &changed, c->err,
				sizeof c->err))
		return fail(c, TG_EDB);
	printf("%s: %d certificate%s set %s\n", thing, changed, changed == 1 ? "" : "s",
	       registry_status_name(st));
	if (st == REGISTRY_REVOKED)
		return update_crl(c, thing);
	return 0;
}

/* ---- list / show --------------------------------------------------------------------- */

static int list_row_text(void *ud, const registry_thing_row *r)
{
	(void)ud;
	char upd[32];
	rfc3339(r->updated_ms, upd, sizeof upd);
	printf("%-32s %-8s %5d %6d  %s\n", r->name, registry_thing_summary(r), r->certs,
	       r->active_certs, upd);
	return 0;
}

static int list_row_json(void *ud, const registry_thing_row *r)
{
	char cre[32], upd[32];
	rfc3339(r->created_ms, cre, sizeof cre);
	rfc3339(r->updated_ms, upd, sizeof upd);
	json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:s,s:s}", "thing", r->name, "status",
			      registry_thing_summary(r), "certificates", r->certs,
			      "active_certificates", r->active_certs, "created", cre, "updated", upd);
	if (!o || json_array_append_new((json_t *)ud, o))
		return TG_ENOMEM;
	return 0;
}

static int print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!s)
		return 1;
	puts(s);
	free(s);
	return 0;
}

/* A page's rows go to the usual printer; the last name is kept for the next page's hint. */
typedef struct page_ctx {
	registry_thing_cb row;
	void *ud;
	char last[REGISTRY_NAME_MAX + 1];
} page_ctx;

static int page_row(void *ud, const registry_thing_row *r)
{
	page_ctx *p = ud;
	snprintf(p->last, sizeof p->last, "%s", r->name);
	return p->row(p->ud, r);
}

static int cmd_list(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"limit", required_argument, NULL, 'l'},
		{"after", required_argument, NULL, 'a'},
		{NULL, 0, NULL, 0},
	};
	long limit = 0;
	const char *after = NULL;
	int opt;
	optind = 0; /* glibc: 0 re-initialises getopt fully */
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		if (opt == 'l') {
			limit = strtol(optarg, &end, 10);
			if (!*optarg || *end || limit < 1 || limit > 1000000) {
				fprintf(stderr, "tidegate device list: --limit: not a number 1..1000000: %s\n", optarg);
				return 2;
			}
		} else if (opt == 'a') {
			after = optarg;
		} else {
			return 2;
		}
	}
	if (optind != argc || (after && !limit)) {
		fprintf(stderr, "usage: tidegate device list [--json] [--limit N [--after THING]]\n");
		return 2;
	}
	if (open_reg(c))
		return 1;
	int rc, n = 0;
	json_t *arr = NULL;
	page_ctx pg = {.row = list_row_text};
	if (c->json) {
		if (!(arr = json_array()))
			return fail(c, TG_ENOMEM);
		pg.row = list_row_json;
		pg.ud = arr;
	} else {
		printf("%-32s %-8s %5s %6s  %s\n", "THING", "STATUS", "CERTS", "ACTIVE", "UPDATED");
	}
	if (limit)
		rc = registry_things_page(c->reg, after, (int)limit, page_row, &pg, &n, c->err, sizeof c->err);
	else
		rc = registry_things_foreach(c->reg, pg.row, pg.ud, c->err, sizeof c->err);
	if (rc == 0 && arr)
		rc = print_json(arr);
	json_decref(arr);
	if (rc)
		return fail(c, rc);
	/* a full page: say how to get the next one (stderr, so stdout stays the listing) */
	if (limit && n == limit)
		fprintf(stderr, "next page: tidegate device list --limit %ld --after %s\n", limit, pg.last);
	return 0;
}

typedef struct show_ctx {
	json_t *certs, *attrs;
	int pem;
} show_ctx;

static int show_cert(void *ud, const registry_cert_row *r)
{
	show_ctx *sc = ud;
	char na[32], cre[32];
	rfc3339(r->not_after_ms, na, sizeof na);
	rfc3339(r->created_ms, cre, sizeof cre);
	if (sc->certs) {
		json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "fingerprint", r->fingerprint,
				      "status", registry_status_name(r->status), "subject_cn",
				      r->subject_cn, "not_after", na, "registered", cre, "source",
				      r->source);
		if (o && sc->pem)
			json_object_set_new(o, "pem", json_string(r->pem));
		if (!o || json_array_append_new(sc->certs, o))
			return TG_ENOMEM;
		return 0;
	}
	printf("  %s  %-8s  CN=%s  not after %s  registered %s (%s)\n", r->fingerprint,
	       registry_status_name(r->status), r->subject_cn, na, cre, r->source);
	if (sc->pem)
		fputs(r->pem, stdout);
	return 0;
}

static int show_attr(void *ud, const char *key, const char *value)
{
	show_ctx *sc = ud;
	if (sc->attrs)
		return json_object_set_new(sc->attrs, key, json_string(value)) ? TG_ENOMEM : 0;
	printf("  %s = %s\n", key, value);
	return 0;
}

static int cmd_show(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"pem", no_argument, NULL, 'p'},
		{NULL, 0, NULL, 0},
	};
	show_ctx sc = {0};
	int opt, rc = 0;
	json_t *o = NULL;
	optind = 0; /* glibc: 0 re-initialises getopt fully */
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt != 'p')
			return 2;
		sc.pem = 1;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: tidegate device show THING [--json] [--pem]\n");
		return 2;
	}
	const char *thing = argv[optind];
	if (open_reg(c))
		return 1;
	registry_thing_row t;
	if ((rc = registry_thing_get(c->reg, thing, &t, c->err, sizeof c->err)))
		return fail(c, rc);
	char cre[32], upd[32];
	rfc3339(t.created_ms, cre, sizeof cre);
	rfc3339(t.updated_ms, upd, sizeof upd);
	if (c->json) {
		sc.certs = json_array();
		sc.attrs = json_object();
		o = json_pack("{s:s,s:s,s:s}", "thing", thing, "created", cre, "updated", upd);
		if (!o || !sc.certs || !sc.attrs) {
			rc = tg_seterr(c->err, sizeof c->err, TG_ENOMEM, "out of memory");
			goto done;
		}
	} else {
		printf("thing:        %s\ncreated:      %s\nupdated:      %s\nattributes:\n", thing,
		       cre, upd);
	}
	if ((rc = registry_attrs_foreach(c->reg, thing, show_attr, &sc, c->err, sizeof c->err)))
		goto done;
	if (!c->json)
		printf("certificates:\n");
	if ((rc = registry_certs_foreach(c->reg, thing, show_cert, &sc, c->err, sizeof c->err)))
		goto done;
	if (c->json) {
		json_object_set(o, "attributes", sc.attrs);
		json_object_set(o, "certificates", sc.certs);
		print_json(o);
	}
done:
	json_decref(o);
	json_decref(sc.certs);
	json_decref(sc.attrs);
	if (rc == TG_ENOMEM && !c->err[0])
		tg_seterr(c->err, sizeof c->err, rc, "out of memory");
	return rc ? fail(c, rc) : 0;
}

/* ---- set-attr ------------------------------------------------------------------------ */

static int cmd_set_attr(cli *c, int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tidegate device set-attr THING KEY=VALUE... (KEY= removes)\n");
		return 2;
	}
	const char *thing = argv[1];
	for (int i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			tg_seterr(c->err, sizeof c->err, TG_EINVAL, "%s: want KEY=VALUE", argv[i]);
			return fail(c, TG_EINVAL);
		}
	}
	if (open_reg(c))
		return 1;
	int64_t now = tg_wall_ms();
	for (int i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		*eq = '\0';
		int rc = registry_attr_set(c->reg, thing, argv[i], eq[1] ? eq + 1 : NULL, now, c->err,
					   sizeof c->err);
		if (rc)
			return fail(c, rc);
		if (eq[1])
			printf("%s: %s = %s\n", thing, argv[i], eq + 1);
		else
			printf("%s: %s removed\n", thing, argv[i]);
		*eq = '=';
	}
	return 0;
}

/* ---- entry --------------------------------------------------------------------------- */

static const char *default_certs_dir(void)
{
	if (access("certs/issue-device.sh", X_OK) == 0)
		return "certs";
	return "/usr/share/tidegate/certs";
}

int registry_cli_main(int argc, char **argv)
{
	cli c = {
		.db_path = getenv("TIDEGATE_REGISTRY"),
		.pki = getenv("TIDEGATE_PKI"),
		.certs = getenv("TIDEGATE_CERTS"),
	};
	int i = 1, ret;
	/* Global options come before the subcommand, or anywhere after it (they are pulled
	 * out of argv here so each subcommand's getopt sees only its own). */
	int n = 0;
	char **rest = calloc((size_t)argc + 1, sizeof *rest);
	if (!rest)
		return 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = !strcmp(a, "--db")		? &c.db_path
				    : !strcmp(a, "--pki")	? &c.pki
				    : !strcmp(a, "--certs-dir") ? &c.certs
								: NULL;
		if (slot) {
			if (i + 1 >= argc) {
				fprintf(stderr, "tidegate device: %s needs a value\n", a);
				ret = 2;
				goto done;
			}
			*slot = argv[++i];
		} else if (!strcmp(a, "--json")) {
			c.json = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			ret = 0;
			goto done;
		} else {
			rest[n++] = argv[i];
		}
	}
	if (!c.db_path || !*c.db_path)
		c.db_path = CLI_DEFAULT_DB;
	if (!c.certs || !*c.certs)
		c.certs = default_certs_dir();
	if (n == 0) {
		usage(stderr);
		ret = 2;
		goto done;
	}
	const char *cmd = rest[0];
	if (!strcmp(cmd, "register"))
		ret = cmd_register(&c, n, rest);
	else if (!strcmp(cmd, "activate"))
		ret = cmd_status(&c, n, rest, REGISTRY_ACTIVE);
	else if (!strcmp(cmd, "deactivate"))
		ret = cmd_status(&c, n, rest, REGISTRY_INACTIVE);
	else if (!strcmp(cmd, "revoke"))
		ret = cmd_status(&c, n, rest, REGISTRY_REVOKED);
	else if (!strcmp(cmd, "list"))
		ret = cmd_list(&c, n, rest);
	else if (!strcmp(cmd, "show"))
		ret = cmd_show(&c, n, rest);
	else if (!strcmp(cmd, "set-attr"))
		ret = cmd_set_attr(&c, n, rest);
	else {
		fprintf(stderr, "tidegate device: unknown command \"%s\"\n", cmd);
		usage(stderr);
		ret = 2;
	}
done:
	registry_close(c.reg);
	free(rest);
	return ret;
}
