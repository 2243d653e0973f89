/*
 * test_registry.c — the device registry and its CLI against real SQLite files in a
 * temporary folder, with certificates made here by OpenSSL (self-signed EC P-256), so the
 * fingerprints the registry computes are checked against an independent X509_digest.
 * Covers: schema creation and forward migration from version 1, refusal of newer schemas,
 * read-only opening, registration, duplicate fingerprints, status changes (REVOKED final),
 * attributes and their validation, bad PEM, data_version change detection, JIT
 * registration, and the CLI's exit codes and effects.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "core/err.h"
#include "registry/registry.h"
#include "registry/registry_cli.h"
#include "registry/registry_sql.h"

typedef struct fixture {
	char dir[64];
	char db[128];
	char err[512];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/tg_registry_XXXXXX");
	if (!f || !mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof f->db, "%s/registry.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	int rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

/* A fresh self-signed certificate with the given CN, as PEM (heap) and as X509 (caller frees). */
static X509 *make_cert(const char *cn, char **pem_out)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(key);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(random() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	EVP_PKEY_free(key);
	if (pem_out) {
		BIO *b = BIO_new(BIO_s_mem());
		PEM_write_bio_X509(b, x);
		char *data;
		long n = BIO_get_mem_data(b, &data);
		*pem_out = strndup(data, (size_t)n);
		BIO_free(b);
	}
	return x;
}

static void expected_fp(X509 *x, char out[65])
{
	unsigned char md[32];
	unsigned n = 0;
	assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
	assert_int_equal(n, 32);
	for (unsigned i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static void cert_info(const char *cn, registry_cert_info *ci, char fp[65])
{
	char *pem = NULL;
	X509 *x = make_cert(cn, &pem);
	char err[256];
	assert_int_equal(registry_cert_parse_pem(pem, strlen(pem), ci, err, sizeof err), 0);
	if (fp)
		expected_fp(x, fp);
	X509_free(x);
	free(pem);
}

static registry *open_rw(fixture *f)
{
	registry *reg = registry_open(f->db, 0, 1000, f->err, sizeof f->err);
	if (!reg)
		fail_msg("open: %s", f->err);
	return reg;
}

static int user_version(const char *path)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	int v = -1;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static void exec_sql(const char *path, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("sql: %s", msg);
	sqlite3_close(db);
}

/* ---- schema -------------------------------------------------------------------------- */

static void test_create_and_reopen_readonly(void **state)
{
	fixture *f = *state;
	/* read-only open of a missing file fails (the plugin must not create it) */
	assert_null(registry_open(f->db, REGISTRY_RDONLY, 0, f->err, sizeof f->err));
	assert_int_equal(access(f->db, F_OK), -1);

	registry *reg = open_rw(f);
	registry_close(reg);
	assert_int_equal(user_version(f->db), REGISTRY_SCHEMA_VERSION);
	assert_int_equal(REGISTRY_SCHEMA_VERSION, 2);

	registry *ro = registry_open(f->db, REGISTRY_RDONLY, 0, f->err, sizeof f->err);
	assert_non_null(ro);
	/* a read-only handle cannot write */
	assert_int_equal(registry_register(ro, "dev-1", NULL, REGISTRY_ACTIVE, "cli", 1, f->err,
					   sizeof f->err),
			 TG_EDB);
	registry_close(ro);
	registry_close(NULL); /* NULL-safe */
}

static void test_readonly_refuses_uninitialised(void **state)
{
	fixture *f = *state;
	exec_sql(f->db, "CREATE TABLE x(a)"); /* a SQLite file, user_version 0 */
	assert_null(registry_open(f->db, REGISTRY_RDONLY, 0, f->err, sizeof f->err));
	assert_non_null(strstr(f->err, "schema version 0"));
}

static void test_migrates_forward_from_v1(void **state)
{
	fixture *f = *state;
	/* Build a version-1 database by hand, with one thing and one certificate. */
	exec_sql(f->db, REGISTRY_MIGRATIONS[0]);
	exec_sql(f->db, "PRAGMA user_version = 1;"
			"INSERT INTO thing VALUES (1, 'old-thing', 10, 20);"
			"INSERT INTO certificate(thing_id, fingerprint, subject_cn, status, created_ms,"
			" updated_ms) VALUES (1, '"
			"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
			"', 'old-thing', 'ACTIVE', 10, 10);");
	assert_int_equal(user_version(f->db), 1);

	registry *reg = open_rw(f);
	assert_int_equal(user_version(f->db), 2);
	registry_ident id;
	assert_int_equal(registry_lookup(reg,
					 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
					 &id, f->err, sizeof f->err),
			 0);
	assert_string_equal(id.thing, "old-thing");
	assert_int_equal(id.status, REGISTRY_ACTIVE);
	/* the version-2 table works on the migrated file */
	assert_int_equal(registry_attr_set(reg, "old-thing", "site", "north", 30, f->err,
					   sizeof f->err),
			 0);
	registry_close(reg);
}

static void test_newer_schema_refused(void **state)
{
	fixture *f = *state;
	registry_close(open_rw(f));
	exec_sql(f->db, "PRAGMA user_version = 99");
	assert_null(registry_open(f->db, 0, 0, f->err, sizeof f->err));
	assert_non_null(strstr(f->err, "newer"));
	assert_null(registry_open(f->db, REGISTRY_RDONLY, 0, f->err, sizeof f->err));
	assert_int_equal(user_version(f->db), 99); /* untouched */
}

/* ---- certificates -------------------------------------------------------------------- */

static void test_pem_parse_and_fingerprint(void **state)
{
	(void)state;
	char *pem = NULL, fp[65], err[256];
	X509 *x = make_cert("dev-0001", &pem);
	expected_fp(x, fp);
	registry_cert_info ci;
	assert_int_equal(registry_cert_parse_pem(pem, strlen(pem), &ci, err, sizeof err), 0);
	assert_string_equal(ci.fingerprint, fp);
	assert_string_equal(ci.subject_cn, "dev-0001");
	assert_true(ci.not_after_ms > (int64_t)time(NULL) * 1000 + 86400000LL * 29);
	assert_non_null(strstr(ci.pem, "BEGIN CERTIFICATE"));

	char fp2[65];
	assert_int_equal(registry_fingerprint_x509(x, fp2), 0);
	assert_string_equal(fp2, fp);
	registry_cert_info_clear(&ci);
	registry_cert_info_clear(&ci); /* idempotent */

	/* user-typed forms: upper case with colons */
	char typed[100] = "", norm[65];
	for (int i = 0; i < 32; i++)
		sprintf(typed + strlen(typed), "%s%c%c", i ? ":" : "", toupper(fp[2 * i]),
			toupper(fp[2 * i + 1]));
	assert_int_equal(registry_fingerprint_normalise(typed, norm), 0);
	assert_string_equal(norm, fp);
	assert_int_equal(registry_fingerprint_normalise("abcd", norm), TG_EINVAL);
	assert_int_equal(registry_fingerprint_normalise("zz", norm), TG_EINVAL);
	X509_free(x);
	free(pem);
}

static void test_bad_pem(void **state)
{
	(void)state;
	char err[256];
	registry_cert_info ci;
	const char *junk = "hello, not a certificate\n";
	assert_int_equal(registry_cert_parse_pem(junk, strlen(junk), &ci, err, sizeof err),
			 TG_EPARSE);
	assert_non_null(strstr(err, "not a PEM certificate"));
	const char *broken = "-----BEGIN CERTIFICATE-----\nAAAAbroken!!\n-----END CERTIFICATE-----\n";
	assert_int_equal(registry_cert_parse_pem(broken, strlen(broken), &ci, err, sizeof err),
			 TG_EPARSE);
	assert_int_equal(registry_cert_parse_pem("", 0, &ci, err, sizeof err), TG_EPARSE);
	assert_null(ci.pem);
}

/* ---- registration and status --------------------------------------------------------- */

static void test_register_lookup_duplicate(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	registry_cert_info a, b;
	char fpa[65], fpb[65];
	cert_info("dev-1", &a, fpa);
	cert_info("dev-1", &b, fpb);

	assert_int_equal(registry_register(reg, "dev-1", &a, REGISTRY_ACTIVE, "cli", 1000, f->err,
					   sizeof f->err),
			 0);
	registry_ident id;
	assert_int_equal(registry_lookup(reg, fpa, &id, f->err, sizeof f->err), 0);
	assert_string_equal(id.thing, "dev-1");
	assert_string_equal(id.subject_cn, "dev-1");
	assert_int_equal(id.status, REGISTRY_ACTIVE);
	assert_int_equal(registry_lookup(reg, fpb, &id, f->err, sizeof f->err), TG_ENOTFOUND);

	/* the same certificate again, even for another thing: refused, naming the owner */
	assert_int_equal(registry_register(reg, "dev-2", &a, REGISTRY_ACTIVE, "cli", 1001, f->err,
					   sizeof f->err),
			 TG_EPERM);
	assert_non_null(strstr(f->err, "already registered to thing \"dev-1\""));
	registry_thing_row t;
	/* ... and the refused transaction left no thing dev-2 behind */
	assert_int_equal(registry_thing_get(reg, "dev-2", &t, f->err, sizeof f->err), TG_ENOTFOUND);

	/* a second certificate for the same thing is fine */
	assert_int_equal(registry_register(reg, "dev-1", &b, REGISTRY_INACTIVE, "cli", 1002, f->err,
					   sizeof f->err),
			 0);
	assert_int_equal(registry_lookup(reg, fpb, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_INACTIVE);
	assert_int_equal(registry_thing_get(reg, "dev-1", &t, f->err, sizeof f->err), 0);
	assert_int_equal(t.created_ms, 1000);
	assert_int_equal(t.updated_ms, 1002);

	/* a thing without a certificate, twice */
	assert_int_equal(registry_register(reg, "bare", NULL, REGISTRY_ACTIVE, "cli", 5, f->err,
					   sizeof f->err),
			 0);
	assert_int_equal(registry_register(reg, "bare", NULL, REGISTRY_ACTIVE, "cli", 6, f->err,
					   sizeof f->err),
			 TG_EINVAL);
	assert_non_null(strstr(f->err, "already registered"));
	registry_cert_info_clear(&a);
	registry_cert_info_clear(&b);
	registry_close(reg);
}

static void test_thing_names(void **state)
{
	fixture *f = *state;
	char name[REGISTRY_NAME_MAX + 2];
	memset(name, 'a', sizeof name);
	name[REGISTRY_NAME_MAX] = '\0';
	assert_int_equal(registry_name_check(name, f->err, sizeof f->err), 0);
	name[REGISTRY_NAME_MAX] = 'a';
	name[REGISTRY_NAME_MAX + 1] = '\0';
	assert_int_equal(registry_name_check(name, f->err, sizeof f->err), TG_EINVAL);
	const char *bad[] = {"", "dev/1", "dev+", "dev#", "dev 1", "${iot:ClientId}"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(registry_name_check(bad[i], f->err, sizeof f->err), TG_EINVAL);
	assert_int_equal(registry_name_check("dev-0001:a_b", f->err, sizeof f->err), 0);
	registry *reg = open_rw(f);
	assert_int_equal(registry_register(reg, "a/b", NULL, REGISTRY_ACTIVE, "cli", 1, f->err,
					   sizeof f->err),
			 TG_EINVAL);
	registry_close(reg);
}

static int count_status(void *ud, const registry_cert_row *r)
{
	int *counts = ud;
	counts[r->status]++;
	return 0;
}

static void test_status_changes(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	registry_cert_info a, b;
	char fpa[65], fpb[65];
	cert_info("dev-1", &a, fpa);
	cert_info("dev-1", &b, fpb);
	assert_int_equal(registry_register(reg, "dev-1", &a, REGISTRY_ACTIVE, "cli", 1, f->err,
					   sizeof f->err),
			 0);
	assert_int_equal(registry_register(reg, "dev-1", &b, REGISTRY_ACTIVE, "cli", 2, f->err,
					   sizeof f->err),
			 0);
	int changed = -1;
	assert_int_equal(registry_set_status(reg, "dev-1", NULL, REGISTRY_INACTIVE, 3, &changed,
					     f->err, sizeof f->err),
			 0);
	assert_int_equal(changed, 2);
	/* idempotent: nothing changes the second time */
	assert_int_equal(registry_set_status(reg, "dev-1", NULL, REGISTRY_INACTIVE, 4, &changed,
					     f->err, sizeof f->err),
			 0);
	assert_int_equal(changed, 0);

	/* revoke one (named in user-typed upper case), then bulk-activate: only the other */
	char upper[65];
	for (int i = 0; i < 65; i++)
		upper[i] = (char)((fpa[i] >= 'a' && fpa[i] <= 'f') ? fpa[i] - 32 : fpa[i]);
	assert_int_equal(registry_set_status(reg, "dev-1", upper, REGISTRY_REVOKED, 5, &changed,
					     f->err, sizeof f->err),
			 0);
	assert_int_equal(changed, 1);
	assert_int_equal(registry_set_status(reg, "dev-1", NULL, REGISTRY_ACTIVE, 6, &changed,
					     f->err, sizeof f->err),
			 0);
	assert_int_equal(changed, 1);
	registry_ident id;
	assert_int_equal(registry_lookup(reg, fpa, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_REVOKED);
	assert_int_equal(registry_lookup(reg, fpb, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_ACTIVE);

	/* revocation is final when named */
	assert_int_equal(registry_set_status(reg, "dev-1", fpa, REGISTRY_ACTIVE, 7, &changed,
					     f->err, sizeof f->err),
			 TG_EPERM);
	assert_non_null(strstr(f->err, "revoked"));
	int counts[3] = {0};
	assert_int_equal(registry_certs_foreach(reg, "dev-1", count_status, counts, f->err,
						sizeof f->err),
			 0);
	assert_int_equal(counts[REGISTRY_ACTIVE], 1);
	assert_int_equal(counts[REGISTRY_REVOKED], 1);

	/* unknown thing, unknown certificate, non-fingerprint */
	assert_int_equal(registry_set_status(reg, "nope", NULL, REGISTRY_ACTIVE, 8, NULL, f->err,
					     sizeof f->err),
			 TG_ENOTFOUND);
	assert_non_null(strstr(f->err, "no thing named \"nope\""));
	char other[65];
	memset(other, 'e', 64);
	other[64] = '\0';
	assert_int_equal(registry_set_status(reg, "dev-1", other, REGISTRY_ACTIVE, 8, NULL, f->err,
					     sizeof f->err),
			 TG_ENOTFOUND);
	assert_int_equal(registry_set_status(reg, "dev-1", "xyz", REGISTRY_ACTIVE, 8, NULL, f->err,
					     sizeof f->err),
			 TG_EINVAL);
	registry_cert_info_clear(&a);
	registry_cert_info_clear(&b);
	registry_close(reg);
}

static int collect_summary(void *ud, const registry_thing_row *r)
{
	char *out = ud;
	snprintf(out + strlen(out), 256 - strlen(out), "%s=%s;", r->name, registry_thing_summary(r));
	return 0;
}

/* Keyset paging (issue 19): pages in name order, each after the last name of the one
 * before, with the same certificate counts as the whole listing. */
static void test_things_page(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	registry_cert_info a, b;
	cert_info("t-c", &a, NULL);
	cert_info("t-c", &b, NULL);
	static const char *const names[] = {"t-e", "t-a", "t-d", "t-b"};
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(registry_register(reg, names[i], NULL, REGISTRY_ACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	assert_int_equal(registry_register(reg, "t-c", &a, REGISTRY_ACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	assert_int_equal(registry_register(reg, "t-c", &b, REGISTRY_INACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	char out[256] = "", all[256] = "";
	int n = -1;
	assert_int_equal(registry_things_page(reg, NULL, 2, collect_summary, out, &n, f->err, sizeof f->err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(out, "t-a=NO-CERT;t-b=NO-CERT;");
	assert_int_equal(registry_things_page(reg, "t-b", 2, collect_summary, out, &n, f->err, sizeof f->err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(registry_things_page(reg, "t-d", 2, collect_summary, out, &n, f->err, sizeof f->err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(registry_things_page(reg, "t-e", 2, collect_summary, out, &n, f->err, sizeof f->err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(registry_things_foreach(reg, collect_summary, all, f->err, sizeof f->err), 0);
	assert_string_equal(out, all); /* the pages joined are the whole listing */
	assert_string_equal(all, "t-a=NO-CERT;t-b=NO-CERT;t-c=ACTIVE;t-d=NO-CERT;t-e=NO-CERT;");
	/* a name between two others starts the page at the next one */
	out[0] = '\0';
	assert_int_equal(registry_things_page(reg, "t-bb", 1, collect_summary, out, &n, f->err, sizeof f->err), 0);
	assert_string_equal(out, "t-c=ACTIVE;");
	assert_int_equal(registry_things_page(reg, NULL, 0, collect_summary, out, &n, f->err, sizeof f->err), TG_EINVAL);
	assert_non_null(strstr(f->err, "page size"));
	registry_cert_info_clear(&a);
	registry_cert_info_clear(&b);
	registry_close(reg);
}

static void test_thing_summary(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	registry_cert_info a, b;
	cert_info("t", &a, NULL);
	cert_info("t", &b, NULL);
	assert_int_equal(registry_register(reg, "none", NULL, REGISTRY_ACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	assert_int_equal(registry_register(reg, "t", &a, REGISTRY_ACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	assert_int_equal(registry_register(reg, "t", &b, REGISTRY_INACTIVE, "cli", 1, f->err, sizeof f->err), 0);
	char out[256] = "";
	assert_int_equal(registry_things_foreach(reg, collect_summary, out, f->err, sizeof f->err), 0);
	assert_string_equal(out, "none=NO-CERT;t=ACTIVE;");
	assert_int_equal(registry_set_status(reg, "t", a.fingerprint, REGISTRY_REVOKED, 2, NULL, f->err, sizeof f->err), 0);
	out[0] = '\0';
	assert_int_equal(registry_things_foreach(reg, collect_summary, out, f->err, sizeof f->err), 0);
	assert_string_equal(out, "none=NO-CERT;t=INACTIVE;");
	assert_int_equal(registry_set_status(reg, "t", NULL, REGISTRY_REVOKED, 3, NULL, f->err, sizeof f->err), 0);
	out[0] = '\0';
	assert_int_equal(registry_things_foreach(reg, collect_summary, out, f->err, sizeof f->err), 0);
	assert_string_equal(out, "none=NO-CERT;t=REVOKED;");
	/* every certificate revoked: a bulk activate or deactivate is refused, not "0 set" */
	int changed = -1;
	assert_int_equal(registry_set_status(reg, "t", NULL, REGISTRY_ACTIVE, 4, &changed, f->err, sizeof f->err),
			 TG_EPERM);
	assert_non_null(strstr(f->err, "all 2 certificates of \"t\" are revoked"));
	assert_int_equal(registry_set_status(reg, "t", NULL, REGISTRY_INACTIVE, 4, NULL, f->err, sizeof f->err),
			 TG_EPERM);
	/* revoking again is idempotent; a thing without certificates has nothing to refuse */
	assert_int_equal(registry_set_status(reg, "t", NULL, REGISTRY_REVOKED, 5, NULL, f->err, sizeof f->err), 0);
	assert_int_equal(registry_set_status(reg, "none", NULL, REGISTRY_ACTIVE, 5, &changed, f->err, sizeof f->err), 0);
	assert_int_equal(changed, 0);
	registry_cert_info_clear(&a);
	registry_cert_info_clear(&b);
	registry_close(reg);
}

typedef struct attrs_seen {
	char text[256];
} attrs_seen;

static int collect_attr(void *ud, const char *k, const char *v)
{
	attrs_seen *s = ud;
	snprintf(s->text + strlen(s->text), sizeof s->text - strlen(s->text), "%s=%s;", k, v);
	return 0;
}

static void test_attributes(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	assert_int_equal(registry_register(reg, "dev-1", NULL, REGISTRY_ACTIVE, "cli", 1, f->err,
					   sizeof f->err),
			 0);
	assert_int_equal(registry_attr_set(reg, "dev-1", "site", "north", 2, f->err, sizeof f->err), 0);
	assert_int_equal(registry_attr_set(reg, "dev-1", "floor", "3", 3, f->err, sizeof f->err), 0);
	assert_int_equal(registry_attr_set(reg, "dev-1", "site", "south", 4, f->err, sizeof f->err), 0);
	attrs_seen s = {""};
	assert_int_equal(registry_attrs_foreach(reg, "dev-1", collect_attr, &s, f->err, sizeof f->err), 0);
	assert_string_equal(s.text, "floor=3;site=south;");
	assert_int_equal(registry_attr_set(reg, "dev-1", "floor", NULL, 5, f->err, sizeof f->err), 0);
	s.text[0] = '\0';
	assert_int_equal(registry_attrs_foreach(reg, "dev-1", collect_attr, &s, f->err, sizeof f->err), 0);
	assert_string_equal(s.text, "site=south;");

	/* values that would widen a policy topic filter, bad keys, unknown things */
	assert_int_equal(registry_attr_set(reg, "dev-1", "site", "#", 6, f->err, sizeof f->err), TG_EINVAL);
	assert_int_equal(registry_attr_set(reg, "dev-1", "site", "a/b", 6, f->err, sizeof f->err), TG_EINVAL);
	assert_int_equal(registry_attr_set(reg, "dev-1", "site", "x+", 6, f->err, sizeof f->err), TG_EINVAL);
	assert_int_equal(registry_attr_set(reg, "dev-1", "bad key", "v", 6, f->err, sizeof f->err), TG_EINVAL);
	assert_int_equal(registry_attr_set(reg, "ghost", "site", "v", 6, f->err, sizeof f->err), TG_ENOTFOUND);
	registry_thing_row t;
	assert_int_equal(registry_thing_get(reg, "dev-1", &t, f->err, sizeof f->err), 0);
	assert_int_equal(t.updated_ms, 5);
	registry_close(reg);
}

static void test_data_version_sees_other_writer(void **state)
{
	fixture *f = *state;
	registry *rw = open_rw(f);
	registry *ro = registry_open(f->db, REGISTRY_RDONLY, 0, f->err, sizeof f->err);
	assert_non_null(ro);
	int64_t v1, v2, v3;
	assert_int_equal(registry_data_version(ro, &v1, f->err, sizeof f->err), 0);
	assert_int_equal(registry_data_version(ro, &v2, f->err, sizeof f->err), 0);
	assert_true(v1 == v2);
	assert_int_equal(registry_register(rw, "dev-9", NULL, REGISTRY_ACTIVE, "cli", 1, f->err,
					   sizeof f->err),
			 0);
	assert_int_equal(registry_data_version(ro, &v3, f->err, sizeof f->err), 0);
	assert_true(v3 != v2);
	registry_thing_row t;
	assert_int_equal(registry_thing_get(ro, "dev-9", &t, f->err, sizeof f->err), 0);
	registry_close(ro);
	registry_close(rw);
}

static void test_jit_register(void **state)
{
	fixture *f = *state;
	registry *reg = open_rw(f);
	registry_cert_info a, b;
	char fpa[65], fpb[65];
	cert_info("dev-7", &a, fpa);
	cert_info("dev-7", &b, fpb);
	registry_status applied = REGISTRY_REVOKED;
	assert_int_equal(registry_jit_register(reg, "dev-7", &a, REGISTRY_ACTIVE, 1, &applied,
					       f->err, sizeof f->err),
			 0);
	assert_int_equal(applied, REGISTRY_ACTIVE);
	/* a second CA-signed cert claiming an existing thing is only ever INACTIVE */
	assert_int_equal(registry_jit_register(reg, "dev-7", &b, REGISTRY_ACTIVE, 2, &applied,
					       f->err, sizeof f->err),
			 0);
	assert_int_equal(applied, REGISTRY_INACTIVE);
	registry_ident id;
	assert_int_equal(registry_lookup(reg, fpb, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_INACTIVE);
	assert_int_equal(registry_jit_register(reg, "dev-7", &a, REGISTRY_ACTIVE, 3, &applied,
					       f->err, sizeof f->err),
			 TG_EPERM);
	registry_cert_info_clear(&a);
	registry_cert_info_clear(&b);
	registry_close(reg);
}

/* ---- CLI ----------------------------------------------------------------------------- */

static int cli(fixture *f, const char *a1, const char *a2, const char *a3, const char *a4,
	       const char *a5)
{
	const char *args[] = {"device", "--db", f->db, a1, a2, a3, a4, a5, NULL};
	char *argv[9];
	int argc = 0;
	for (int i = 0; args[i]; i++)
		argv[argc++] = strdup(args[i]);
	argv[argc] = NULL;
	fflush(stdout);
	int rc = registry_cli_main(argc, argv);
	fflush(stdout);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	return rc;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_cli(void **state)
{
	fixture *f = *state;
	char *pem = NULL, fp[65], certpath[160], junkpath[160];
	X509 *x = make_cert("dev-0001", &pem);
	expected_fp(x, fp);
	snprintf(certpath, sizeof certpath, "%s/dev.crt", f->dir);
	snprintf(junkpath, sizeof junkpath, "%s/junk.crt", f->dir);
	write_file(certpath, pem);
	write_file(junkpath, "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n");

	assert_int_equal(cli(f, "register", "dev-0001", "--cert", certpath, "--attr"), 2); /* --attr without value */
	assert_int_equal(cli(f, "register", "dev-0001", "--cert", certpath, NULL), 0);
	assert_int_equal(cli(f, "register", "dev-0002", "--cert", certpath, NULL), 1); /* duplicate */
	assert_int_equal(cli(f, "register", "dev-0003", "--cert", junkpath, NULL), 1); /* bad PEM */
	assert_int_equal(cli(f, "register", "dev/bad", NULL, NULL, NULL), 1);
	assert_int_equal(cli(f, "activate", "ghost", NULL, NULL, NULL), 1); /* unknown thing */
	assert_int_equal(cli(f, "deactivate", "dev-0001", "--cert", certpath, NULL), 0);

	registry *reg = open_rw(f);
	registry_ident id;
	assert_int_equal(registry_lookup(reg, fp, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_INACTIVE);
	registry_thing_row t;
	assert_int_equal(registry_thing_get(reg, "dev-0002", &t, f->err, sizeof f->err), TG_ENOTFOUND);
	assert_int_equal(registry_thing_get(reg, "dev-0003", &t, f->err, sizeof f->err), TG_ENOTFOUND);
	registry_close(reg);

	assert_int_equal(cli(f, "activate", "dev-0001", "--cert", fp, NULL), 0);
	assert_int_equal(cli(f, "set-attr", "dev-0001", "site=north", "floor=2", NULL), 0);
	assert_int_equal(cli(f, "set-attr", "dev-0001", "floor=", NULL, NULL), 0);
	assert_int_equal(cli(f, "set-attr", "dev-0001", "bad=#", NULL, NULL), 1);
	assert_int_equal(cli(f, "list", "--json", NULL, NULL, NULL), 0);
	assert_int_equal(cli(f, "list", "--limit", "1", "--json", NULL), 0);
	assert_int_equal(cli(f, "list", "--limit", "1", "--after", "dev-0001"), 0);
	assert_int_equal(cli(f, "list", "--limit", "0", NULL, NULL), 2);
	assert_int_equal(cli(f, "list", "--after", "dev-0001", NULL, NULL), 2); /* --after needs --limit */
	assert_int_equal(cli(f, "show", "dev-0001", NULL, NULL, NULL), 0);
	assert_int_equal(cli(f, "show", "ghost", NULL, NULL, NULL), 1);
	assert_int_equal(cli(f, "frobnicate", NULL, NULL, NULL, NULL), 2);
	/* revoke without --pki: the registry changes, the CLI says the CRL was not touched */
	unsetenv("TIDEGATE_PKI");
	assert_int_equal(cli(f, "revoke", "dev-0001", NULL, NULL, NULL), 0);
	assert_int_equal(cli(f, "activate", "dev-0001", "--cert", fp, NULL), 1); /* final */
	assert_int_equal(cli(f, "activate", "dev-0001", NULL, NULL, NULL), 1); /* every certificate is revoked */

	reg = open_rw(f);
	assert_int_equal(registry_lookup(reg, fp, &id, f->err, sizeof f->err), 0);
	assert_int_equal(id.status, REGISTRY_REVOKED);
	attrs_seen s = {""};
	assert_int_equal(registry_attrs_foreach(reg, "dev-0001", collect_attr, &s, f->err, sizeof f->err), 0);
	assert_string_equal(s.text, "site=north;");
	registry_close(reg);
	X509_free(x);
	free(pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_reopen_readonly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_refuses_uninitialised, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrates_forward_from_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pem_parse_and_fingerprint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_pem, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_lookup_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thing_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_attributes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thing_summary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_things_page, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_version_sees_other_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jit_register, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
