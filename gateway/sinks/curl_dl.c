/*
 * curl_dl.c — see curl_dl.h.
 */
#include "sinks/curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "sinks/dl.h"

#define CURL_SONAME "libcurl.so.4"

struct loaded {
	curl_dl_api api;
	int ok;
	char why[256];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct loaded lib; /* written once, under `once`; read-only after */

static void load(void)
{
	CURLcode (*global_init)(long) = NULL;
	const dl_entry e[] = {
		{"curl_global_init", (void **)&global_init},
		{"curl_easy_init", (void **)&lib.api.easy_init},
		{"curl_easy_cleanup", (void **)&lib.api.easy_cleanup},
		{"curl_easy_reset", (void **)&lib.api.easy_reset},
		{"curl_easy_setopt", (void **)&lib.api.easy_setopt},
		{"curl_easy_getinfo", (void **)&lib.api.easy_getinfo},
		{"curl_easy_perform", (void **)&lib.api.easy_perform},
		{"curl_easy_strerror", (void **)&lib.api.easy_strerror},
		{"curl_slist_append", (void **)&lib.api.slist_append},
		{"curl_slist_free_all", (void **)&lib.api.slist_free_all},
	};
	void *h = dl_load_table(CURL_SONAME, e, sizeof e / sizeof e[0], lib.why, sizeof lib.why);
	if (!h)
		return;
	CURLcode rc = global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(lib.why, sizeof lib.why, "curl_global_init failed (%d)", (int)rc);
		dlclose(h);
		return;
	}
	lib.ok = 1; /* the handle stays open for the life of the process */
}

int curl_dl_load(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (lib.ok)
		return 0;
	return tg_seterr(err, errlen, TG_EUNSUPPORTED, "cannot load libcurl (needed by HTTP sinks): %s", lib.why);
}

const curl_dl_api *curl_dl(void) { return &lib.api; }
