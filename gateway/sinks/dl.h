/*
 * dl.h — a shared library's entry points loaded into a table, for the libraries sinks load
 * on first use instead of linking them into the daemon (libcurl: curl_dl.h, libnats:
 * nats_dl.h), so a daemon that does not use them neither maps them nor needs them
 * installed.
 *
 * The slots are function pointers written through void ** (dlsym returns object pointers;
 * POSIX guarantees they convert to function pointers).
 */
#ifndef TG_SINKS_DL_H
#define TG_SINKS_DL_H

#include <stddef.h>

typedef struct dl_entry {
	const char *name;
	void **slot;
} dl_entry;

/* dlopen soname and resolve every entry into its slot. Returns the handle, which stays open
 * for the life of the process, or NULL with the reason (library missing, or the first
 * symbol missing) in why; then nothing stays loaded. */
void *dl_load_table(const char *soname, const dl_entry *entries, size_t n, char *why, size_t whylen);

#endif
