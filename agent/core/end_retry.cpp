#include "core/end_retry.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace spark {

void EndReserve::take() {
  while (fds_.size() < k_fds) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;  // taken again after the next end
    fds_.push_back(fd);
  }
  while (blocks_.size() < k_blocks) {
    void* b = std::malloc(32 << 10);
    if (!b) break;
    std::memset(b, 0, 32 << 10);  // committed now, not at the end
    blocks_.push_back(b);
  }
}

void EndReserve::give_back() {
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  for (void* b : blocks_) std::free(b);
  blocks_.clear();
}

std::chrono::milliseconds EndRetry::failed(Clock::time_point now) {
  std::chrono::milliseconds wait = at ? std::min(backoff * 2, k_end_retry_max) : k_end_retry_first;
  backoff = wait;
  at = now + wait;
  ++failures;
  return wait;
}

}  // namespace spark
