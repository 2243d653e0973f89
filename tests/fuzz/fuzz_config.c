/*
 * fuzz_config.c — fuzz target for the configuration loader (gateway/core/config.c): the input is
 * a config file. Invariants: no crash, no leak; a refused file gets at least one error line
 * and every line names the file; an accepted file prints (as check-config prints it) to a
 * text that loads again and prints the same — so the printer's quoting of blanks, '#', ';'
 * and quotes round-trips through the parser's comment and quote rules.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"
#include "sinks/registry.h"
#include "store/sink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A file with these bytes, as a path (memfd: nothing on disk). */
static int as_file(const void *data, size_t size, char *path, size_t len)
{
	int fd = memfd_create("fuzz-config", 0);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

static char *print(const tg_config *c)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	if (!f)
		abort();
	config_print(c, f);
	fclose(f);
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char err[64 * 1024];
	char path[64], path2[64];
	int fd = as_file(data, size, path, sizeof path);
	if (fd < 0)
		return 0;
	tg_config *c = config_load(path, sink_types_all(), err, sizeof err);
	close(fd);
	if (!c) {
		if (!err[0] || strncmp(err, path, strlen(path)) != 0)
			abort(); /* an error always says where */
		for (const char *nl = strchr(err, '\n'); nl; nl = strchr(nl + 1, '\n'))
			if (strncmp(nl + 1, path, strlen(path)) != 0 && strcmp(nl + 1, "(more errors not shown)") != 0)
				abort();
		return 0;
	}
	char *first = print(c);
	config_free(c);
	int fd2 = as_file(first, strlen(first), path2, sizeof path2);
	if (fd2 < 0)
		abort();
	tg_config *again = config_load(path2, sink_types_all(), err, sizeof err);
	close(fd2);
	if (!again) {
		fprintf(stderr, "printed config does not load:\n%s\n---\n%s\n", first, err);
		abort();
	}
	char *second = print(again);
	config_free(again);
	/* the built-in lake is a section in the reprint: compare without comment lines */
	for (char *s = first; s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL)
		if (*s == '#')
			memset(s, ' ', strcspn(s, "\n"));
	for (char *a = first, *b = second;;) { /* equal but for blank lines and blanked comments */
		while (*a == '\n' || *a == ' ')
			a++;
		while (*b == '\n' || *b == ' ')
			b++;
		if (*a != *b) {
			fprintf(stderr, "reprint differs:\n%s\n---\n%s\n", first, second);
			abort();
		}
		if (!*a)
			break;
		a++, b++;
	}
	free(first);
	free(second);
	return 0;
}
