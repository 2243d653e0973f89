/*
 * local_main.c — replays fuzz inputs without libFuzzer: each argument is a file whose bytes
 * are passed once to LLVMFuzzerTestOneInput. Linked with every tests/fuzz/fuzz_*.c target so
 * `make fuzz-replay` runs the committed corpus under ASan/UBSan in `make check`; with clang and
 * FUZZ=1 the targets link against libFuzzer instead and this file is not used.
 */
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
			perror(argv[i]);
			failed = 1;
			continue;
		}
		size_t cap = 1 << 16, n = 0;
		uint8_t *buf = malloc(cap);
		size_t r;
		while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
			n += r;
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
	return failed;
}
