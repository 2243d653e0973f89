/*
 * local_main.c — replays fuzz corpus files without libFuzzer.
 *
 * Each argument is a file whose bytes are handed to LLVMFuzzerTestOneInput once, so the
 * corpus of every fuzz target runs under the ASan/UBSan build in `make check` (the
 * fuzz-replay step). Built unless FUZZ is defined, in which case libFuzzer provides main.
 */
#ifndef FUZZ
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	int failed = 0;
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			fprintf(stderr, "cannot open %s\n", argv[i]);
			failed = 1;
			continue;
		}
		size_t cap = 1 << 16, n = 0;
		uint8_t *buf = malloc(cap);
		size_t k;
		while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
			n += k;
			if (n == cap) {
				uint8_t *nb = realloc(buf, cap * 2);
				if (!nb)
					break;
				buf = nb;
				cap *= 2;
			}
		}
		fclose(f);
		if (!buf) {
			failed = 1;
			continue;
		}
		LLVMFuzzerTestOneInput(buf, n);
		free(buf);
	}
	printf("replayed %d file(s)\n", argc - 1);
	return failed;
}
#endif
