/*
 * curl_dl.h — libcurl, loaded when the first HTTP sink (kinesis, s3, webhook) opens rather
 * than linked into the daemon: libcurl and what it pulls in (Kerberos, LDAP, SASL, SSH,
 * RTMP, HTTP/2, brotli, zstd, PSL, ...) are about 1.8 MiB of resident memory in a daemon
 * that only writes the local lake — the embedded default.
 *
 * Code that uses libcurl includes this header instead of <curl/curl.h> (which it includes
 * for the types), calls curl_dl_load() before its first libcurl call (the sinks' open
 * functions do), and then calls the usual names: the macros below route the functions the
 * gateway uses through the loaded library. curl_dl_load() also runs curl_global_init once.
 *
 * State: the table of entry points is process-wide, filled once under pthread_once and
 * read-only afterwards (like libcurl's own global state, which curl_global_init sets up).
 */
#ifndef TG_CURL_DL_H
#define TG_CURL_DL_H

#include <stddef.h>

#define CURL_DISABLE_TYPECHECK 1 /* the type-checking macros would shadow ours */
#include <curl/curl.h>

typedef struct curl_dl_api {
	CURL *(*easy_init)(void);
	void (*easy_cleanup)(CURL *);
	void (*easy_reset)(CURL *);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	CURLcode (*easy_perform)(CURL *);
	const char *(*easy_strerror)(CURLcode);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
} curl_dl_api;

/* Load libcurl (once). Returns 0, or TG_EUNSUPPORTED with the reason in err. */
int curl_dl_load(char *err, size_t errlen);
/* The entry points; only valid after curl_dl_load() returned 0. */
const curl_dl_api *curl_dl(void);

/* curl.h defines the two variadic ones as macros that only check the argument count */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_easy_init() (curl_dl()->easy_init())
#define curl_easy_cleanup(h) (curl_dl()->easy_cleanup(h))
#define curl_easy_reset(h) (curl_dl()->easy_reset(h))
#define curl_easy_setopt(h, ...) (curl_dl()->easy_setopt((h), __VA_ARGS__))
#define curl_easy_getinfo(h, ...) (curl_dl()->easy_getinfo((h), __VA_ARGS__))
#define curl_easy_perform(h) (curl_dl()->easy_perform(h))
#define curl_easy_strerror(c) (curl_dl()->easy_strerror(c))
#define curl_slist_append(l, s) (curl_dl()->slist_append((l), (s)))
#define curl_slist_free_all(l) (curl_dl()->slist_free_all(l))

#endif
