/* LD_PRELOAD for the start-up test (issue 12, defect 4): counts malloc calls (operator new goes
 * through malloc) of a process and writes the count to $ALLOC_COUNT_FILE at exit. An allocation
 * count is a deterministic measure of the work a start does (building every verb's parser was
 * thousands), where a time measured on a shared CI host is not. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void* __libc_malloc(size_t n);

static unsigned long alloc_count;

void* malloc(size_t n) {
  __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
  return __libc_malloc(n);
}

__attribute__((destructor)) static void alloc_count_report(void) {
  const char* path = getenv("ALLOC_COUNT_FILE");
  if (!path) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%lu\n", alloc_count);
  if (len > 0) (void)!write(fd, buf, (size_t)len);
  close(fd);
}
