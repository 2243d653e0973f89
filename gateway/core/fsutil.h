/*
 * fsutil.h — file-system helpers shared by the daemon and the lake sink.
 */
#ifndef TG_FSUTIL_H
#define TG_FSUTIL_H

#include <sys/types.h>

/* mkdir -p: create path and its missing parents with mode. 0, or -1 with errno set. */
int tg_mkdirs(const char *path, mode_t mode);

#endif
