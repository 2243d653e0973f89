/*
 * registry.h — the device registry: things, their certificates and attributes, in SQLite.
 *
 * This is the edge analogue of IoT Core's thing registry. A thing has a name, created and
 * updated times, key/value attributes and any number of X.509 certificates, each known by
 * the SHA-256 fingerprint of its DER encoding and carrying its own status ACTIVE, INACTIVE
 * or REVOKED (REVOKED is terminal). One database file is shared by the CLI/daemon, which
 * open it read-write (they create it, migrate it forwards and keep it in WAL mode), and by
 * the Mosquitto auth plugin, which opens it read-only and only looks fingerprints up; WAL
 * lets it read while the CLI writes. The plugin notices changes cheaply through
 * registry_data_version().
 *
 * This module is linked into both libtidegate.a and the broker plugin .so, so it depends on
 * nothing of tidegate but the err.h codes (no log.h, no tg_seterr): it reports, the caller
 * logs. A registry handle is not thread-safe; use one per thread.
 */
#ifndef TG_REGISTRY_H
#define TG_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef struct registry registry;

typedef enum {
	REGISTRY_ACTIVE = 0,
	REGISTRY_INACTIVE = 1,
	REGISTRY_REVOKED = 2,
} registry_status;

enum {
	REGISTRY_RDONLY = 1 << 0,   /* read-only connection (the broker plugin); implies NOCREATE */
	REGISTRY_NOCREATE = 1 << 1, /* the file must exist already */
};

#define REGISTRY_NAME_MAX 128 /* thing name, as IoT Core */
#define REGISTRY_FP_HEX 64    /* SHA-256 in lowercase hex, without separators */
#define REGISTRY_CN_MAX 255
#define REGISTRY_ATTR_KEY_MAX 128
#define REGISTRY_ATTR_VALUE_MAX 800

/* Open (read-write: create and migrate) the registry at path. busy_ms bounds how long a
 * call waits for another writer's lock (the plugin uses a few ms: it runs in the broker's
 * only thread). Returns NULL with a message in err on failure. The caller owns the handle. */
registry *registry_open(const char *path, unsigned flags, int busy_ms, char *err, size_t errlen);
/* Finalize every statement and close. NULL-safe. */
void registry_close(registry *reg);

const char *registry_status_name(registry_status st); /* "ACTIVE", static string */
/* "active"/"ACTIVE" -> status; TG_EINVAL otherwise. */
int registry_status_parse(const char *s, registry_status *out);

/* Thing names: 1..128 of [A-Za-z0-9_:-] (IoT Core's set; no MQTT wildcard or '/').
 * Returns 0 or TG_EINVAL with a message. */
int registry_name_check(const char *name, char *err, size_t errlen);
/* Attribute keys [A-Za-z0-9_.:@-]{1,128}; values up to 800 bytes of printable ASCII except
 * '+', '#' and '/' (they are substituted into topic filters). 0 or TG_EINVAL. */
int registry_attr_check(const char *key, const char *value, char *err, size_t errlen);

/* What the registry keeps of a certificate. registry_cert_parse_pem() and
 * registry_cert_from_x509() fill it; pem is heap-allocated and freed by
 * registry_cert_info_clear() (NULL-safe, idempotent). */
typedef struct registry_cert_info {
	char fingerprint[REGISTRY_FP_HEX + 1];
	char subject_cn[REGISTRY_CN_MAX + 1]; /* "" when the subject has no CN */
	int64_t not_after_ms;
	char *pem;
} registry_cert_info;

/* Parse the first certificate of a PEM text. TG_EPARSE "not a PEM certificate" on bad
 * input. len may include or exclude a final NUL. */
int registry_cert_parse_pem(const char *pem, size_t len, registry_cert_info *out, char *err,
			    size_t errlen);
/* Same from an OpenSSL X509 * (borrowed, passed as void * to keep OpenSSL out of this header). */
int registry_cert_from_x509(const void *x509, registry_cert_info *out, char *err, size_t errlen);
/* Only the fingerprint (lowercase hex, NUL-terminated) of an X509 *; 0 or TG_EINVAL. */
int registry_fingerprint_x509(const void *x509, char out[REGISTRY_FP_HEX + 1]);
/* Normalise a user-typed fingerprint ("AB:CD:..." or "abcd...") into out; TG_EINVAL if it is
 * not 32 bytes of hex. */
int registry_fingerprint_normalise(const char *in, char out[REGISTRY_FP_HEX + 1]);
void registry_cert_info_clear(registry_cert_info *ci);

/* Register: create the thing if it is new and attach cert (may be NULL) with status st.
 * Errors: TG_EINVAL bad name, or the thing exists and cert is NULL ("already registered");
 * TG_EPERM the fingerprint is registered already (the message names its thing). All or
 * nothing (one transaction). source is a short tag stored with the cert ("cli", "jitr"). */
int registry_register(registry *reg, const char *thing, const registry_cert_info *cert,
		      registry_status st, const char *source, int64_t now_ms, char *err,
		      size_t errlen);

/* Just-in-time registration of a certificate the broker saw but the registry does not know:
 * a new thing named thing is created with the cert in status st; when the thing exists
 * already the cert is attached INACTIVE whatever st says (a CA-signed cert must not grant
 * itself an existing identity). *applied gets the status stored. */
int registry_jit_register(registry *reg, const char *thing, const registry_cert_info *cert,
			  registry_status st, int64_t now_ms, registry_status *applied, char *err,
			  size_t errlen);

/* Set the status of one certificate of thing (fingerprint given) or of all of them
 * (fingerprint NULL). A REVOKED certificate stays revoked: asking to activate or deactivate
 * it is TG_EPERM when named, and skipped in bulk — TG_EPERM too when every certificate of
 * the thing is revoked. *changed (may be NULL) gets the number of
 * certificates whose status changed. TG_ENOTFOUND for an unknown thing or fingerprint. */
int registry_set_status(registry *reg, const char *thing, const char *fingerprint,
			registry_status st, int64_t now_ms, int *changed, char *err, size_t errlen);

/* Set (value non-NULL) or delete (value NULL) one attribute. TG_ENOTFOUND unknown thing. */
int registry_attr_set(registry *reg, const char *thing, const char *key, const char *value,
		      int64_t now_ms, char *err, size_t errlen);

/* The identity behind a certificate: what the plugin needs on every connect. */
typedef struct registry_ident {
	char thing[REGISTRY_NAME_MAX + 1];
	char subject_cn[REGISTRY_CN_MAX + 1];
	registry_status status;
	int64_t cert_id;
} registry_ident;

/* Look a fingerprint up. 0, TG_ENOTFOUND (unknown certificate) or TG_EDB. */
int registry_lookup(registry *reg, const char *fingerprint, registry_ident *out, char *err,
		    size_t errlen);

/* A counter that changes whenever another connection committed a change to the database
 * (SQLite's data_version); compare successive values to know when to re-check. */
int registry_data_version(registry *reg, int64_t *out, char *err, size_t errlen);
/* Look-ups between these two see one snapshot of the database and share one read
 * transaction (cheaper than one per statement). 0, or a TG_E* code with the reason. */
int registry_read_begin(registry *reg, char *err, size_t errlen);
void registry_read_end(registry *reg);

/* Iteration. The strings passed to callbacks are borrowed for the duration of the call.
 * A callback returning non-zero stops the walk; that value is returned. */
typedef struct registry_thing_row {
	const char *name;
	int64_t created_ms, updated_ms;
	int certs, active_certs, revoked_certs;
} registry_thing_row;
/* A one-word summary of a thing's certificates for listings: "ACTIVE" when any is active,
 * "REVOKED" when all are revoked, "INACTIVE" otherwise, "NO-CERT" without any. Static. */
const char *registry_thing_summary(const registry_thing_row *row);
typedef struct registry_cert_row {
	const char *fingerprint, *subject_cn, *pem, *source;
	registry_status status;
	int64_t not_after_ms, created_ms, updated_ms;
} registry_cert_row;
typedef int (*registry_thing_cb)(void *ud, const registry_thing_row *row);
typedef int (*registry_cert_cb)(void *ud, const registry_cert_row *row);
typedef int (*registry_attr_cb)(void *ud, const char *key, const char *value);

int registry_things_foreach(registry *reg, registry_thing_cb cb, void *ud, char *err,
			    size_t errlen);
/* One page of the listing: at most limit things whose names sort after `after` (NULL or ""
 * for the first page), in name order. *count (may be NULL) gets how many rows were passed
 * to cb; a full page means there may be more: ask again after the last name. */
int registry_things_page(registry *reg, const char *after, int limit, registry_thing_cb cb, void *ud,
			 int *count, char *err, size_t errlen);
/* TG_ENOTFOUND for an unknown thing (so `show` can tell "no such thing" from "no certs"). */
int registry_thing_get(registry *reg, const char *thing, registry_thing_row *out, char *err,
		       size_t errlen);
int registry_certs_foreach(registry *reg, const char *thing, registry_cert_cb cb, void *ud,
			   char *err, size_t errlen);
int registry_attrs_foreach(registry *reg, const char *thing, registry_attr_cb cb, void *ud,
			   char *err, size_t errlen);

#endif
