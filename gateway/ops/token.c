/*
 * token.c — see token.h.
 */
#include "ops/token.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

#define TOKEN_MAX 512
#define TOKEN_MIN 16

struct ops_token {
	char *path;
	pthread_mutex_t mu;
	char tok[TOKEN_MAX + 1];
	size_t len;
	struct timespec mtime;
	int64_t checked_ms;
};

static int read_token(const char *path, char *out, size_t *len, struct timespec *mtime, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tg_seterr(err, errlen, TG_EIO, "[http] token_file %s: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return tg_seterr(err, errlen, TG_EINVAL, "[http] token_file %s: not a regular file", path);
	}
	if (sb.st_mode & 077) {
		close(fd);
		return tg_seterr(err, errlen, TG_EPERM, "[http] token_file %s: readable by group or others (mode %03o); chmod 600 it",
				 path, (unsigned)(sb.st_mode & 0777));
	}
	char buf[TOKEN_MAX + 2];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		return tg_seterr(err, errlen, TG_EIO, "[http] token_file %s: %s", path, strerror(errno));
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
	if (n > TOKEN_MAX || n < TOKEN_MIN || strpbrk(buf, " \t\r\n")) {
		explicit_bzero(buf, sizeof buf);
		return tg_seterr(err, errlen, TG_EINVAL, "[http] token_file %s: expected one token of %d..%d characters", path,
				 TOKEN_MIN, TOKEN_MAX);
	}
	memcpy(out, buf, (size_t)n + 1);
	*len = (size_t)n;
	*mtime = sb.st_mtim;
	explicit_bzero(buf, sizeof buf);
	return 0;
}

ops_token *ops_token_load(const char *path, char *err, size_t errlen)
{
	ops_token *t = calloc(1, sizeof *t);
	if (!t || !(t->path = strdup(path))) {
		free(t);
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	if (read_token(path, t->tok, &t->len, &t->mtime, err, errlen)) {
		free(t->path);
		free(t);
		return NULL;
	}
	pthread_mutex_init(&t->mu, NULL);
	return t;
}

void ops_token_free(ops_token *t)
{
	if (!t)
		return;
	explicit_bzero(t->tok, sizeof t->tok);
	pthread_mutex_destroy(&t->mu);
	free(t->path);
	free(t);
}

/* A rotated file replaces the token; a file that became unreadable or invalid keeps the
 * old one (logged), so a half-written edit does not lock the operator out. */
static void maybe_reload(ops_token *t, int64_t now_ms)
{
	if (now_ms - t->checked_ms < 1000)
		return;
	t->checked_ms = now_ms;
	struct stat sb;
	if (stat(t->path, &sb) != 0 ||
	    (sb.st_mtim.tv_sec == t->mtime.tv_sec && sb.st_mtim.tv_nsec == t->mtime.tv_nsec))
		return;
	char tok[TOKEN_MAX + 1], err[512];
	size_t len;
	struct timespec mt;
	if (read_token(t->path, tok, &len, &mt, err, sizeof err)) {
		LOG_WARN("console", "msg=\"token file changed but cannot be used; keeping the old token\" err=\"%s\"", err);
		t->mtime = sb.st_mtim;
		return;
	}
	memcpy(t->tok, tok, len + 1);
	t->len = len;
	t->mtime = mt;
	explicit_bzero(tok, sizeof tok);
	LOG_INFO("console", "msg=\"API token reloaded\" path=%s", t->path);
}

int ops_token_check(ops_token *t, const char *authorization, int64_t now_ms)
{
	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
		return 0;
	const char *given = authorization + 7;
	while (*given == ' ')
		given++;
	size_t glen = strlen(given);
	pthread_mutex_lock(&t->mu);
	maybe_reload(t, now_ms);
	int ok = glen == t->len && CRYPTO_memcmp(given, t->tok, glen) == 0;
	pthread_mutex_unlock(&t->mu);
	return ok;
}

int ops_token_new(const char *path, char *err, size_t errlen)
{
	unsigned char raw[32];
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return tg_seterr(err, errlen, TG_EIO, "getrandom: %s", strerror(errno));
	char hex[2 * sizeof raw + 2];
	for (size_t i = 0; i < sizeof raw; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof raw);
	hex[2 * sizeof raw] = '\n';
	hex[2 * sizeof raw + 1] = '\0';
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		explicit_bzero(hex, sizeof hex);
		return tg_seterr(err, errlen, TG_EIO, "%s: %s", tmp, strerror(errno));
	}
	size_t len = strlen(hex);
	int ok = fchmod(fd, 0600) == 0 && write(fd, hex, len) == (ssize_t)len && fsync(fd) == 0;
	int saved = errno;
	explicit_bzero(hex, sizeof hex);
	if (close(fd) != 0 && ok) {
		ok = 0;
		saved = errno;
	}
	if (!ok || rename(tmp, path) != 0) {
		if (ok)
			saved = errno;
		unlink(tmp);
		return tg_seterr(err, errlen, TG_EIO, "%s: %s", path, strerror(saved));
	}
	return 0;
}

int ops_token_cli_main(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[0], "new") != 0) {
		fprintf(stderr, "usage: tidegate token new FILE   (writes a random API token, mode 0600)\n");
		return 2;
	}
	char err[512];
	if (ops_token_new(argv[1], err, sizeof err)) {
		fprintf(stderr, "tidegate token: %s\n", err);
		return 1;
	}
	printf("wrote a new API token to %s (mode 0600); point [http] token_file at it\n", argv[1]);
	return 0;
}
