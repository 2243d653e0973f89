/*
 * token.h — the console API's bearer token: one line of text in a file the config names
 * ([http] token_file), made by `tidegate token new FILE` (64 hex digits from the kernel's
 * random source, mode 0600, written to a temporary file and renamed over the old one).
 *
 * The daemon reads the file at start and again whenever its modification time changes
 * (checked at most once a second), so a rotated token takes effect without a restart.
 * Comparison is constant-time.
 *
 * Ownership: ops_token owns a copy of the token; ops_token_free wipes it.
 */
#ifndef TG_OPS_TOKEN_H
#define TG_OPS_TOKEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct ops_token ops_token;

/* Load the token file (refused if missing, empty, shorter than 16 characters or readable
 * by group/others). NULL with err. */
ops_token *ops_token_load(const char *path, char *err, size_t errlen);
void ops_token_free(ops_token *t); /* NULL-safe */
/* 1 when the Authorization header value is "Bearer <token>"; now_ms paces the re-read. */
int ops_token_check(ops_token *t, const char *authorization, int64_t now_ms);
/* Write a new random token to path (mode 0600, atomically). 0 or TG_E* with err. */
int ops_token_new(const char *path, char *err, size_t errlen);
/* `tidegate token new FILE`; argv[0] is "new". Returns the exit code. */
int ops_token_cli_main(int argc, char **argv);

#endif
