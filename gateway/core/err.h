/*
 * err.h — the one error enum of tidegate.
 *
 * Functions return 0 on success or a negative TG_E* code; functions that build an object
 * return NULL and write a human-readable message into a caller-supplied buffer. The caller
 * decides whether to log. tg_strerror() names a code for log lines.
 */
#ifndef TG_ERR_H
#define TG_ERR_H

#include <stddef.h>

enum tg_err {
	TG_OK = 0,
	TG_ENOMEM = -1,    /* allocation failed */
	TG_EINVAL = -2,    /* bad argument or bad input */
	TG_EIO = -3,       /* file or socket I/O failed */
	TG_EDB = -4,       /* SQLite said no */
	TG_EPARSE = -5,    /* syntax error in config, rules, schema or payload */
	TG_ENOTFOUND = -6, /* lookup missed */
	TG_EFULL = -7,     /* a cap was reached (outbox, payload size, …) */
	TG_ERETRY = -8,    /* transient failure: try again later */
	TG_EPERM = -9,     /* permanent refusal (poison record, auth) */
	TG_EUNSUPPORTED = -10, /* valid but not supported at the edge */
	TG_ENET = -11,     /* network / broker failure */
};

const char *tg_strerror(int err);

/* snprintf into an error buffer, NULL/0-safe; returns the code passed in so callers can
 * write `return tg_seterr(err, errlen, TG_EINVAL, "…", …);` */
int tg_seterr(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The same, appended as one more line to the lines already in err (an error list: every
 * error of a file, not just the first); what does not fit is cut. err must hold a string. */
int tg_adderr(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
