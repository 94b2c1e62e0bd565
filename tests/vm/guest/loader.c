/* The window checks' loader for guests without a build tree of their architecture (arm64):
 * `loader --loader read|mmap-hold FILE...`, the same two loaders as bench/load_window's.
 * read: read(2) of 16 MiB per call, file after file. mmap-hold: every file mapped, copied out
 * front to back 16 MiB at a time, then kept mapped and untouched for 8 s (a server that keeps its
 * weights mapped: the keeper pages the idle mapping out), then unmapped. tests/vm/run compiles it
 * statically with the guest's cross compiler. Exit 0 when it read something. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (16u << 20)

int main(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[1], "--loader") != 0) {
		fprintf(stderr, "usage: %s --loader read|mmap-hold FILE...\n", argv[0]);
		return 2;
	}
	const char *kind = argv[2];
	int hold = strcmp(kind, "mmap-hold") == 0;
	if (!hold && strcmp(kind, "read") != 0) {
		fprintf(stderr, "unknown loader %s\n", kind);
		return 2;
	}
	char *sink = malloc(CHUNK);
	if (!sink)
		return 4;
	unsigned long long total = 0;
	int n = argc - 3;
	void **maps = calloc(n, sizeof(void *));
	size_t *lens = calloc(n, sizeof(size_t));
	for (int i = 0; i < n; i++) {
		int fd = open(argv[3 + i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			perror(argv[3 + i]);
			return 3;
		}
		if (!hold) {
			ssize_t r;
			while ((r = read(fd, sink, CHUNK)) > 0)
				total += (unsigned long long)r;
		} else {
			struct stat st;
			if (fstat(fd, &st) != 0 || st.st_size == 0)
				return 3;
			lens[i] = (size_t)st.st_size;
			maps[i] = mmap(NULL, lens[i], PROT_READ, MAP_SHARED, fd, 0);
			if (maps[i] == MAP_FAILED)
				return 3;
		}
		close(fd);
	}
	if (hold) {
		for (int i = 0; i < n; i++)
			for (size_t off = 0; off < lens[i]; off += CHUNK) {
				size_t len = lens[i] - off < CHUNK ? lens[i] - off : CHUNK;
				memcpy(sink, (char *)maps[i] + off, len);
				total += len;
			}
		sleep(8);
		for (int i = 0; i < n; i++)
			munmap(maps[i], lens[i]);
	}
	volatile char keep = sink[123];
	(void)keep;
	return total > 0 ? 0 : 5;
}
