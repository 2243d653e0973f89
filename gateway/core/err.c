/*
 * err.c — names for the error enum and the error-buffer helper shared by every module.
 */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *tg_strerror(int err)
{
	switch (err) {
	case TG_OK: return "ok";
	case TG_ENOMEM: return "out of memory";
	case TG_EINVAL: return "invalid argument";
	case TG_EIO: return "i/o error";
	case TG_EDB: return "database error";
	case TG_EPARSE: return "parse error";
	case TG_ENOTFOUND: return "not found";
	case TG_EFULL: return "full";
	case TG_ERETRY: return "transient failure";
	case TG_EPERM: return "permanent failure";
	case TG_EUNSUPPORTED: return "not supported";
	case TG_ENET: return "network error";
	default: return "unknown error";
	}
}

int tg_seterr(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

int tg_adderr(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (!err || !errlen)
		return code;
	size_t len = strnlen(err, errlen);
	if (len + 2 >= errlen)
		return code;
	if (len)
		err[len++] = '\n';
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + len, errlen - len, fmt, ap);
	va_end(ap);
	return code;
}
