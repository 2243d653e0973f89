/*
 * dl.c — see dl.h.
 */
#include "sinks/dl.h"

#include <dlfcn.h>
#include <stdio.h>

void *dl_load_table(const char *soname, const dl_entry *entries, size_t n, char *why, size_t whylen)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(why, whylen, "%s", dlerror());
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!(*entries[i].slot = dlsym(h, entries[i].name))) {
			snprintf(why, whylen, "%s: no symbol %s", soname, entries[i].name);
			dlclose(h);
			return NULL;
		}
	return h;
}
