/*
 * curl_dl.c — see curl_dl.h.
 */
#include "sinks/curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

#define CURL_SONAME "libcurl.so.4"

struct loaded {
	curl_dl_api api;
	int ok;
	char why[256];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct loaded lib; /* written once, under `once`; read-only after */

static void *sym(void *h, const char *name)
{
	void *p = dlsym(h, name);
	if (!p && !lib.why[0])
		snprintf(lib.why, sizeof lib.why, "%s: no symbol %s", CURL_SONAME, name);
	return p;
}

static void load(void)
{
	void *h = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(lib.why, sizeof lib.why, "%s", dlerror());
		return;
	}
	CURLcode (*global_init)(long) = (CURLcode(*)(long))sym(h, "curl_global_init");
	/* dlsym returns object pointers; POSIX guarantees they convert to function pointers */
	*(void **)&lib.api.easy_init = sym(h, "curl_easy_init");
	*(void **)&lib.api.easy_cleanup = sym(h, "curl_easy_cleanup");
	*(void **)&lib.api.easy_reset = sym(h, "curl_easy_reset");
	*(void **)&lib.api.easy_setopt = sym(h, "curl_easy_setopt");
	*(void **)&lib.api.easy_getinfo = sym(h, "curl_easy_getinfo");
	*(void **)&lib.api.easy_perform = sym(h, "curl_easy_perform");
	*(void **)&lib.api.easy_strerror = sym(h, "curl_easy_strerror");
	*(void **)&lib.api.slist_append = sym(h, "curl_slist_append");
	*(void **)&lib.api.slist_free_all = sym(h, "curl_slist_free_all");
	if (lib.why[0] || !global_init) {
		dlclose(h);
		return;
	}
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
