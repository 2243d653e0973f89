/*
 * registry.c — see registry.h. The database is opened, migrated forwards (registry_sql.h)
 * and every statement prepared once in registry_open(); each call then binds, steps and
 * resets the statements it needs, checking every SQLite return code, COMMIT included.
 * Multi-statement changes run inside BEGIN IMMEDIATE so a concurrent writer waits on the
 * busy timeout instead of failing half-way. Certificates are parsed with OpenSSL here,
 * so the CLI (PEM files) and the plugin (the peer's X509) compute the same fingerprint.
 * This file is also compiled into the broker plugin, which does not link err.c, hence the
 * local reg_err() in place of tg_seterr().
 */
#include "registry/registry.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "core/err.h"
#include "registry/registry_sql.h"

struct registry {
	sqlite3 *db;
	unsigned flags;
	sqlite3_stmt *st[RS__COUNT];
};

static int reg_err(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int reg_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A SQLite failure as TG_EDB (or TG_ERETRY for a lock held past the busy timeout, which the
 * plugin treats as "deny this time" rather than as a broken registry). */
static int db_err(registry *reg, char *err, size_t errlen, int rc, const char *what)
{
	int code = (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? TG_ERETRY : TG_EDB;
	return reg_err(err, errlen, code, "registry: %s: %s", what, sqlite3_errmsg(reg->db));
}

static sqlite3_stmt *stmt(registry *reg, enum registry_stmt which)
{
	sqlite3_stmt *s = reg->st[which];
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Step a statement that returns no rows; reset it either way. */
static int exec_stmt(registry *reg, enum registry_stmt which, sqlite3_stmt *s, char *err,
		     size_t errlen)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return db_err(reg, err, errlen, rc, REGISTRY_SQL[which]);
	return 0;
}

static int tx_begin(registry *reg, char *err, size_t errlen)
{
	return exec_stmt(reg, RS_BEGIN, stmt(reg, RS_BEGIN), err, errlen);
}

static int tx_commit(registry *reg, char *err, size_t errlen)
{
	return exec_stmt(reg, RS_COMMIT, stmt(reg, RS_COMMIT), err, errlen);
}

static void tx_rollback(registry *reg)
{
	if (!sqlite3_get_autocommit(reg->db)) {
		sqlite3_stmt *s = stmt(reg, RS_ROLLBACK);
		sqlite3_step(s);
		sqlite3_reset(s);
	}
}

/* ---- open / migrate ------------------------------------------------------------------ */

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int(s, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(s);
	return rc;
}

/* Apply the missing migrations in one transaction; user_version moves with them. */
static int migrate(sqlite3 *db, int from, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, REGISTRY_SQL_TX_BEGIN, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		goto fail;
	/* Re-read under the lock: another process may have migrated meanwhile. */
	rc = pragma_int(db, REGISTRY_SQL_GET_VERSION, &from);
	if (rc != SQLITE_OK)
		goto fail;
	for (int v = from; v < REGISTRY_SCHEMA_VERSION; v++) {
		rc = sqlite3_exec(db, REGISTRY_MIGRATIONS[v], NULL, NULL, &msg);
		if (rc != SQLITE_OK)
			goto fail;
		char sql[48];
		snprintf(sql, sizeof sql, REGISTRY_SQL_SET_VERSION, v + 1);
		rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
		if (rc != SQLITE_OK)
			goto fail;
	}
	rc = sqlite3_exec(db, REGISTRY_SQL_TX_COMMIT, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		goto fail;
	return 0;
fail:
	reg_err(err, errlen, TG_EDB, "registry: migrating schema from version %d: %s", from,
		msg ? msg : sqlite3_errmsg(db));
	sqlite3_free(msg);
	sqlite3_exec(db, REGISTRY_SQL_TX_ROLLBACK, NULL, NULL, NULL);
	return TG_EDB;
}

registry *registry_open(const char *path, unsigned flags, int busy_ms, char *err, size_t errlen)
{
	registry *reg = calloc(1, sizeof *reg);
	if (!reg) {
		reg_err(err, errlen, TG_ENOMEM, "registry: out of memory");
		return NULL;
	}
	reg->flags = flags;
	int oflags = SQLITE_OPEN_NOMUTEX;
	if (flags & REGISTRY_RDONLY)
		oflags |= SQLITE_OPEN_READONLY;
	else
		oflags |= SQLITE_OPEN_READWRITE | ((flags & REGISTRY_NOCREATE) ? 0 : SQLITE_OPEN_CREATE);

	int rc = sqlite3_open_v2(path, &reg->db, oflags, NULL);
	if (rc != SQLITE_OK) {
		reg_err(err, errlen, rc == SQLITE_CANTOPEN ? TG_EIO : TG_EDB,
			"registry: cannot open %s: %s", path,
			reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(reg->db, 0);
	sqlite3_busy_timeout(reg->db, busy_ms > 0 ? busy_ms : 0);

	int version = 0;
	rc = pragma_int(reg->db, REGISTRY_SQL_GET_VERSION, &version);
	if (rc != SQLITE_OK) {
		reg_err(err, errlen, TG_EDB, "registry: cannot read %s: %s", path,
			sqlite3_errmsg(reg->db));
		goto fail;
	}
	if (version > REGISTRY_SCHEMA_VERSION) {
		reg_err(err, errlen, TG_EUNSUPPORTED,
			"registry: %s has schema version %d, newer than this build's %d", path,
			version, REGISTRY_SCHEMA_VERSION);
		goto fail;
	}
	if (flags & REGISTRY_RDONLY) {
		if (version < REGISTRY_SCHEMA_VERSION) {
			reg_err(err, errlen, TG_EUNSUPPORTED,
				"registry: %s has schema version %d, this build needs %d (run "
				"`tidegate device list` once to create or migrate it)",
				path, version, REGISTRY_SCHEMA_VERSION);
			goto fail;
		}
	} else {
		char *msg = NULL;
		rc = sqlite3_exec(reg->db, REGISTRY_SQL_RW_SETUP, NULL, NULL, &msg);
		if (rc != SQLITE_OK) {
			reg_err(err, errlen, TG_EDB, "registry: %s: %s", path,
				msg ? msg : sqlite3_errmsg(reg->db));
			sqlite3_free(msg);
			goto fail;
		}
		if (version < REGISTRY_SCHEMA_VERSION && migrate(reg->db, version, err, errlen))
			goto fail;
	}
	for (int i = 0; i < RS__COUNT; i++) {
		rc = sqlite3_prepare_v3(reg->db, REGISTRY_SQL[i], -1, SQLITE_PREPARE_PERSISTENT,
					&reg->st[i], NULL);
		if (rc != SQLITE_OK) {
			reg_err(err, errlen, TG_EDB, "registry: preparing \"%s\": %s",
				REGISTRY_SQL[i], sqlite3_errmsg(reg->db));
			goto fail;
		}
	}
	return reg;
fail:
	registry_close(reg);
	return NULL;
}

void registry_close(registry *reg)
{
	if (!reg)
		return;
	for (int i = 0; i < RS__COUNT; i++)
		sqlite3_finalize(reg->st[i]);
	sqlite3_close(reg->db);
	free(reg);
}

/* ---- names and values ---------------------------------------------------------------- */

static const char *const status_names[] = {"ACTIVE", "INACTIVE", "REVOKED"};

const char *registry_status_name(registry_status st)
{
	return (unsigned)st < 3 ? status_names[st] : "UNKNOWN";
}

int registry_status_parse(const char *s, registry_status *out)
{
	for (int i = 0; i < 3; i++) {
		if (s && strcasecmp(s, status_names[i]) == 0) {
			*out = (registry_status)i;
			return 0;
		}
	}
	return TG_EINVAL;
}

int registry_name_check(const char *name, char *err, size_t errlen)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > REGISTRY_NAME_MAX)
		return reg_err(err, errlen, TG_EINVAL, "thing name must be 1..%d characters",
			       REGISTRY_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '_' && c != '-' && c != ':')
			return reg_err(err, errlen, TG_EINVAL,
				       "thing name \"%s\": character '%c' not allowed (use "
				       "A-Z a-z 0-9 _ - :)",
				       name, isprint(c) ? c : '?');
	}
	return 0;
}

int registry_attr_check(const char *key, const char *value, char *err, size_t errlen)
{
	size_t n = key ? strlen(key) : 0;
	if (n == 0 || n > REGISTRY_ATTR_KEY_MAX)
		return reg_err(err, errlen, TG_EINVAL, "attribute name must be 1..%d characters",
			       REGISTRY_ATTR_KEY_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];
		if (!isalnum(c) && !strchr("_.:@-", c))
			return reg_err(err, errlen, TG_EINVAL,
				       "attribute name \"%s\": character '%c' not allowed", key,
				       isprint(c) ? c : '?');
	}
	if (!value)
		return 0;
	if (strlen(value) > REGISTRY_ATTR_VALUE_MAX)
		return reg_err(err, errlen, TG_EINVAL, "attribute %s: value longer than %d bytes",
			       key, REGISTRY_ATTR_VALUE_MAX);
	for (const char *p = value; *p; p++) {
		/* Values are substituted into policy topic filters: a wildcard or a level
		 * separator there would widen what the thing may touch. */
		if (!isprint((unsigned char)*p) || *p == '+' || *p == '#' || *p == '/')
			return reg_err(err, errlen, TG_EINVAL,
				       "attribute %s: value may not contain '+', '#', '/' or "
				       "control characters",
				       key);
	}
	return 0;
}

/* ---- certificates -------------------------------------------------------------------- */

static void hex(const unsigned char *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int registry_fingerprint_x509(const void *x509, char out[REGISTRY_FP_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (!x509 || !X509_digest((const X509 *)x509, EVP_sha256(), md, &n) || n != 32)
		return TG_EINVAL;
	hex(md, n, out);
	return 0;
}

int registry_fingerprint_normalise(const char *in, char out[REGISTRY_FP_HEX + 1])
{
	size_t k = 0;
	for (const char *p = in ? in : ""; *p; p++) {
		if (*p == ':')
			continue;
		if (!isxdigit((unsigned char)*p) || k == REGISTRY_FP_HEX)
			return TG_EINVAL;
		out[k++] = (char)tolower((unsigned char)*p);
	}
	out[k] = '\0';
	return k == REGISTRY_FP_HEX ? 0 : TG_EINVAL;
}

void registry_cert_info_clear(registry_cert_info *ci)
{
	if (!ci)
		return;
	free(ci->pem);
	memset(ci, 0, sizeof *ci);
}

int registry_cert_from_x509(const void *x509, registry_cert_info *out, char *err, size_t errlen)
{
	X509 *x = (X509 *)x509;
	BIO *bio = NULL;
	int ret = TG_EINVAL;

	memset(out, 0, sizeof *out);
	if (registry_fingerprint_x509(x, out->fingerprint)) {
		reg_err(err, errlen, TG_EINVAL, "cannot compute the certificate's fingerprint");
		goto done;
	}
	X509_NAME *subj = X509_get_subject_name(x);
	if (subj && X509_NAME_get_text_by_NID(subj, NID_commonName, out->subject_cn,
					      (int)sizeof out->subject_cn) < 0)
		out->subject_cn[0] = '\0';

	struct tm tm;
	const ASN1_TIME *na = X509_get0_notAfter(x);
	if (na && ASN1_TIME_to_tm(na, &tm) == 1)
		out->not_after_ms = (int64_t)timegm(&tm) * 1000;

	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_X509(bio, x)) {
		ret = reg_err(err, errlen, TG_ENOMEM, "cannot encode the certificate as PEM");
		goto done;
	}
	char *data = NULL;
	long n = BIO_get_mem_data(bio, &data);
	out->pem = malloc((size_t)n + 1);
	if (!out->pem) {
		ret = reg_err(err, errlen, TG_ENOMEM, "out of memory");
		goto done;
	}
	memcpy(out->pem, data, (size_t)n);
	out->pem[n] = '\0';
	ret = 0;
done:
	BIO_free(bio);
	if (ret)
		registry_cert_info_clear(out);
	return ret;
}

int registry_cert_parse_pem(const char *pem, size_t len, registry_cert_info *out, char *err,
			    size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (!pem || len == 0 || len > 1 << 20)
		return reg_err(err, errlen, TG_EPARSE, "not a PEM certificate (empty or over 1 MiB)");
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio)
		return reg_err(err, errlen, TG_ENOMEM, "out of memory");
	ERR_clear_error();
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!x) {
		char why[160] = "no \"BEGIN CERTIFICATE\" block";
		unsigned long e = ERR_peek_last_error();
		if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
			ERR_error_string_n(e, why, sizeof why);
		ERR_clear_error();
		return reg_err(err, errlen, TG_EPARSE, "not a PEM certificate: %s", why);
	}
	int rc = registry_cert_from_x509(x, out, err, errlen);
	X509_free(x);
	return rc;
}

/* ---- writes -------------------------------------------------------------------------- */

/* Thing id by name: 0 and *id, TG_ENOTFOUND, or TG_EDB. */
static int thing_id(registry *reg, const char *thing, int64_t *id, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_THING_GET);
	sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	if (rc == SQLITE_DONE)
		return reg_err(err, errlen, TG_ENOTFOUND, "no thing named \"%s\"", thing);
	return db_err(reg, err, errlen, rc, "looking a thing up");
}

static int thing_touch(registry *reg, int64_t id, int64_t now_ms, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_THING_TOUCH);
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, now_ms);
	return exec_stmt(reg, RS_THING_TOUCH, s, err, errlen);
}

/* The name of the thing a fingerprint belongs to, into owner; TG_ENOTFOUND when free. */
static int cert_owner(registry *reg, const char *fp, char *owner, size_t ownerlen, char *err,
		      size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_CERT_OWNER);
	sqlite3_bind_text(s, 1, fp, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		snprintf(owner, ownerlen, "%s", (const char *)sqlite3_column_text(s, 0));
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? TG_ENOTFOUND : db_err(reg, err, errlen, rc, "checking a fingerprint");
}

static int cert_insert(registry *reg, int64_t tid, const registry_cert_info *c, registry_status st,
		       const char *source, int64_t now_ms, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_CERT_INSERT);
	sqlite3_bind_int64(s, 1, tid);
	sqlite3_bind_text(s, 2, c->fingerprint, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, c->subject_cn, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, registry_status_name(st), -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, c->not_after_ms);
	if (c->pem)
		sqlite3_bind_text(s, 6, c->pem, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, source ? source : "cli", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, now_ms);
	return exec_stmt(reg, RS_CERT_INSERT, s, err, errlen);
}

/* Body of register/jit-register, inside the caller's transaction. jit selects the
 * "existing thing => INACTIVE" rule. */
static int register_locked(registry *reg, const char *thing, const registry_cert_info *cert,
			   registry_status st, const char *source, int jit, int64_t now_ms,
			   registry_status *applied, char *err, size_t errlen)
{
	int64_t tid = 0;
	int rc;
	if (cert) {
		char owner[REGISTRY_NAME_MAX + 1], fp[REGISTRY_FP_HEX + 1];
		if (registry_fingerprint_normalise(cert->fingerprint, fp) ||
		    strcmp(fp, cert->fingerprint) != 0)
			return reg_err(err, errlen, TG_EINVAL,
				       "bad certificate fingerprint (want 64 lowercase hex digits)");
		rc = cert_owner(reg, cert->fingerprint, owner, sizeof owner, err, errlen);
		if (rc == 0)
			return reg_err(err, errlen, TG_EPERM,
				       "certificate %.16s... is already registered to thing \"%s\"",
				       cert->fingerprint, owner);
		if (rc != TG_ENOTFOUND)
			return rc;
	}
	rc = thing_id(reg, thing, &tid, err, errlen);
	if (rc == 0) {
		if (!cert)
			return reg_err(err, errlen, TG_EINVAL, "thing \"%s\" is already registered",
				       thing);
		if (jit)
			st = REGISTRY_INACTIVE;
		if ((rc = thing_touch(reg, tid, now_ms, err, errlen)))
			return rc;
	} else if (rc == TG_ENOTFOUND) {
		sqlite3_stmt *s = stmt(reg, RS_THING_INSERT);
		sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, now_ms);
		if ((rc = exec_stmt(reg, RS_THING_INSERT, s, err, errlen)))
			return rc;
		tid = sqlite3_last_insert_rowid(reg->db);
	} else {
		return rc;
	}
	if (applied)
		*applied = st;
	return cert ? cert_insert(reg, tid, cert, st, source, now_ms, err, errlen) : 0;
}

static int do_register(registry *reg, const char *thing, const registry_cert_info *cert,
		       registry_status st, const char *source, int jit, int64_t now_ms,
		       registry_status *applied, char *err, size_t errlen)
{
	int rc = registry_name_check(thing, err, errlen);
	if (rc)
		return rc;
	if ((rc = tx_begin(reg, err, errlen)))
		return rc;
	rc = register_locked(reg, thing, cert, st, source, jit, now_ms, applied, err, errlen);
	if (rc == 0)
		rc = tx_commit(reg, err, errlen);
	if (rc)
		tx_rollback(reg);
	return rc;
}

int registry_register(registry *reg, const char *thing, const registry_cert_info *cert,
		      registry_status st, const char *source, int64_t now_ms, char *err,
		      size_t errlen)
{
	return do_register(reg, thing, cert, st, source, 0, now_ms, NULL, err, errlen);
}

int registry_jit_register(registry *reg, const char *thing, const registry_cert_info *cert,
			  registry_status st, int64_t now_ms, registry_status *applied, char *err,
			  size_t errlen)
{
	if (!cert)
		return reg_err(err, errlen, TG_EINVAL, "just-in-time registration needs a certificate");
	return do_register(reg, thing, cert, st, "jitr", 1, now_ms, applied, err, errlen);
}

/* A bulk activate/deactivate that changed nothing: TG_EPERM when that is because every
 * certificate of the thing is revoked (saying "0 set ACTIVE" would hide it). */
static int all_revoked(registry *reg, int64_t tid, const char *thing, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_CERT_STATUS_COUNT);
	sqlite3_bind_int64(s, 1, tid);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return db_err(reg, err, errlen, rc, "counting certificates");
	}
	int64_t total = sqlite3_column_int64(s, 0), revoked = sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	if (total == 0 || revoked < total)
		return 0;
	if (total == 1)
		return reg_err(err, errlen, TG_EPERM,
			       "the certificate of \"%s\" is revoked; revocation is final (register a new certificate)",
			       thing);
	return reg_err(err, errlen, TG_EPERM,
		       "all %lld certificates of \"%s\" are revoked; revocation is final (register a new certificate)",
		       (long long)total, thing);
}

static int set_status_locked(registry *reg, const char *thing, const char *fingerprint,
			     registry_status st, int64_t now_ms, int *changed, char *err,
			     size_t errlen)
{
	int64_t tid = 0;
	int rc = thing_id(reg, thing, &tid, err, errlen);
	if (rc)
		return rc;
	sqlite3_stmt *s;
	if (fingerprint) {
		char fp[REGISTRY_FP_HEX + 1];
		if (registry_fingerprint_normalise(fingerprint, fp))
			return reg_err(err, errlen, TG_EINVAL,
				       "\"%s\" is not a SHA-256 fingerprint (64 hex digits)",
				       fingerprint);
		s = stmt(reg, RS_CERT_STATUS_ONE_GET);
		sqlite3_bind_int64(s, 1, tid);
		sqlite3_bind_text(s, 2, fp, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(s);
		if (rc == SQLITE_DONE) {
			sqlite3_reset(s);
			return reg_err(err, errlen, TG_ENOTFOUND,
				       "thing \"%s\" has no certificate %.16s...", thing, fp);
		}
		if (rc != SQLITE_ROW) {
			sqlite3_reset(s);
			return db_err(reg, err, errlen, rc, "reading a certificate");
		}
		int revoked = strcmp((const char *)sqlite3_column_text(s, 0), "REVOKED") == 0;
		sqlite3_reset(s);
		if (revoked && st != REGISTRY_REVOKED)
			return reg_err(err, errlen, TG_EPERM,
				       "certificate %.16s... of \"%s\" is revoked; revocation is final "
				       "(register a new certificate)",
				       fp, thing);
		s = stmt(reg, RS_CERT_STATUS_ONE_SET);
		sqlite3_bind_int64(s, 1, tid);
		sqlite3_bind_text(s, 2, fp, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(s, 3, registry_status_name(st), -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, now_ms);
		if ((rc = exec_stmt(reg, RS_CERT_STATUS_ONE_SET, s, err, errlen)))
			return rc;
	} else {
		s = stmt(reg, RS_CERT_STATUS_ALL_SET);
		sqlite3_bind_int64(s, 1, tid);
		sqlite3_bind_text(s, 2, registry_status_name(st), -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, now_ms);
		if ((rc = exec_stmt(reg, RS_CERT_STATUS_ALL_SET, s, err, errlen)))
			return rc;
		if (sqlite3_changes(reg->db) == 0 && st != REGISTRY_REVOKED && (rc = all_revoked(reg, tid, thing, err, errlen)))
			return rc;
	}
	int n = sqlite3_changes(reg->db);
	if (changed)
		*changed = n;
	return n ? thing_touch(reg, tid, now_ms, err, errlen) : 0;
}

int registry_set_status(registry *reg, const char *thing, const char *fingerprint,
			registry_status st, int64_t now_ms, int *changed, char *err, size_t errlen)
{
	if ((unsigned)st > REGISTRY_REVOKED)
		return reg_err(err, errlen, TG_EINVAL, "bad status");
	int rc = tx_begin(reg, err, errlen);
	if (rc)
		return rc;
	rc = set_status_locked(reg, thing, fingerprint, st, now_ms, changed, err, errlen);
	if (rc == 0)
		rc = tx_commit(reg, err, errlen);
	if (rc)
		tx_rollback(reg);
	return rc;
}

int registry_attr_set(registry *reg, const char *thing, const char *key, const char *value,
		      int64_t now_ms, char *err, size_t errlen)
{
	int rc = registry_attr_check(key, value, err, errlen);
	if (rc)
		return rc;
	if ((rc = tx_begin(reg, err, errlen)))
		return rc;
	int64_t tid = 0;
	rc = thing_id(reg, thing, &tid, err, errlen);
	if (rc == 0) {
		enum registry_stmt which = value ? RS_ATTR_SET : RS_ATTR_DEL;
		sqlite3_stmt *s = stmt(reg, which);
		sqlite3_bind_int64(s, 1, tid);
		sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
		if (value)
			sqlite3_bind_text(s, 3, value, -1, SQLITE_STATIC);
		rc = exec_stmt(reg, which, s, err, errlen);
	}
	if (rc == 0)
		rc = thing_touch(reg, tid, now_ms, err, errlen);
	if (rc == 0)
		rc = tx_commit(reg, err, errlen);
	if (rc)
		tx_rollback(reg);
	return rc;
}

/* ---- reads --------------------------------------------------------------------------- */

int registry_lookup(registry *reg, const char *fingerprint, registry_ident *out, char *err,
		    size_t errlen)
{
	memset(out, 0, sizeof *out);
	sqlite3_stmt *s = stmt(reg, RS_CERT_LOOKUP);
	sqlite3_bind_text(s, 1, fingerprint, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		snprintf(out->thing, sizeof out->thing, "%s", (const char *)sqlite3_column_text(s, 0));
		if (registry_status_parse((const char *)sqlite3_column_text(s, 1), &out->status))
			out->status = REGISTRY_INACTIVE; /* unreadable status: fail closed */
		out->cert_id = sqlite3_column_int64(s, 2);
		snprintf(out->subject_cn, sizeof out->subject_cn, "%s",
			 (const char *)sqlite3_column_text(s, 3));
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	if (rc == SQLITE_DONE)
		return reg_err(err, errlen, TG_ENOTFOUND, "certificate %.16s... is not registered",
			       fingerprint);
	return db_err(reg, err, errlen, rc, "looking a certificate up");
}

int registry_data_version(registry *reg, int64_t *out, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_DATA_VERSION);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : db_err(reg, err, errlen, rc, "reading data_version");
}

int registry_read_begin(registry *reg, char *err, size_t errlen)
{
	sqlite3_stmt *s = stmt(reg, RS_READ_BEGIN);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : db_err(reg, err, errlen, rc, "starting a read");
}

void registry_read_end(registry *reg)
{
	if (sqlite3_get_autocommit(reg->db))
		return; /* nothing open (an error may have rolled it back) */
	sqlite3_stmt *s = stmt(reg, RS_COMMIT);
	sqlite3_step(s);
	sqlite3_reset(s);
}

static const char *col_text(sqlite3_stmt *s, int i)
{
	const char *t = (const char *)sqlite3_column_text(s, i);
	return t ? t : "";
}

/* Walk a prepared listing statement (RS_THING_LIST or a bound RS_THING_PAGE). */
static int things_walk(registry *reg, sqlite3_stmt *s, registry_thing_cb cb, void *ud, int *count, char *err,
		       size_t errlen)
{
	int rc, stop = 0, n = 0;
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		registry_thing_row row = {
			.name = col_text(s, 0),
			.created_ms = sqlite3_column_int64(s, 1),
			.updated_ms = sqlite3_column_int64(s, 2),
			.certs = sqlite3_column_int(s, 3),
			.active_certs = sqlite3_column_int(s, 4),
			.revoked_certs = sqlite3_column_int(s, 5),
		};
		n++;
		stop = cb(ud, &row);
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (count)
		*count = n;
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : db_err(reg, err, errlen, rc, "listing things");
}

int registry_things_foreach(registry *reg, registry_thing_cb cb, void *ud, char *err,
			    size_t errlen)
{
	return things_walk(reg, stmt(reg, RS_THING_LIST), cb, ud, NULL, err, errlen);
}

int registry_things_page(registry *reg, const char *after, int limit, registry_thing_cb cb, void *ud,
			 int *count, char *err, size_t errlen)
{
	if (count)
		*count = 0;
	if (limit < 1) {
		snprintf(err, errlen, "page size must be at least 1");
		return TG_EINVAL;
	}
	sqlite3_stmt *s = stmt(reg, RS_THING_PAGE);
	sqlite3_bind_text(s, 1, after ? after : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, limit);
	return things_walk(reg, s, cb, ud, count, err, errlen);
}

const char *registry_thing_summary(const registry_thing_row *row)
{
	if (row->certs == 0)
		return "NO-CERT";
	if (row->active_certs > 0)
		return "ACTIVE";
	return row->revoked_certs == row->certs ? "REVOKED" : "INACTIVE";
}

int registry_thing_get(registry *reg, const char *thing, registry_thing_row *out, char *err,
		       size_t errlen)
{
	memset(out, 0, sizeof *out);
	sqlite3_stmt *s = stmt(reg, RS_THING_GET);
	sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		out->name = thing;
		out->created_ms = sqlite3_column_int64(s, 1);
		out->updated_ms = sqlite3_column_int64(s, 2);
	}
	sqlite3_reset(s);
	if (rc == SQLITE_DONE)
		return reg_err(err, errlen, TG_ENOTFOUND, "no thing named \"%s\"", thing);
	if (rc != SQLITE_ROW)
		return db_err(reg, err, errlen, rc, "reading a thing");
	return 0;
}

int registry_certs_foreach(registry *reg, const char *thing, registry_cert_cb cb, void *ud,
			   char *err, size_t errlen)
{
	int64_t tid = 0;
	int rc = thing_id(reg, thing, &tid, err, errlen);
	if (rc)
		return rc;
	sqlite3_stmt *s = stmt(reg, RS_CERT_LIST);
	sqlite3_bind_int64(s, 1, tid);
	int stop = 0;
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		registry_cert_row row = {
			.fingerprint = col_text(s, 0),
			.subject_cn = col_text(s, 1),
			.not_after_ms = sqlite3_column_int64(s, 3),
			.created_ms = sqlite3_column_int64(s, 4),
			.updated_ms = sqlite3_column_int64(s, 5),
			.pem = col_text(s, 6),
			.source = col_text(s, 7),
		};
		if (registry_status_parse(col_text(s, 2), &row.status))
			row.status = REGISTRY_INACTIVE;
		stop = cb(ud, &row);
	}
	sqlite3_reset(s);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : db_err(reg, err, errlen, rc, "listing certificates");
}

int registry_attrs_foreach(registry *reg, const char *thing, registry_attr_cb cb, void *ud,
			   char *err, size_t errlen)
{
	int64_t tid = 0;
	int rc = thing_id(reg, thing, &tid, err, errlen);
	if (rc)
		return rc;
	sqlite3_stmt *s = stmt(reg, RS_ATTR_LIST);
	sqlite3_bind_int64(s, 1, tid);
	int stop = 0;
	while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW)
		stop = cb(ud, col_text(s, 0), col_text(s, 1));
	sqlite3_reset(s);
	if (stop)
		return stop;
	return rc == SQLITE_DONE ? 0 : db_err(reg, err, errlen, rc, "listing attributes");
}
