#include "core/loop.h"

#include <algorithm>
#include <cerrno>

namespace spark {

int poll_timeout_ms(std::optional<LoopClock::time_point> next, LoopClock::time_point now,
                    std::optional<std::chrono::milliseconds> cap) {
  if (!next && !cap) return -1;
  std::chrono::milliseconds wait = cap.value_or(std::chrono::milliseconds::max());
  if (next)
    wait = std::min(wait,
                    std::max(std::chrono::ceil<std::chrono::milliseconds>(*next - now), std::chrono::milliseconds(0)));
  return static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 60'000));
}

Result<void> run_loop_once(std::span<LoopPart* const> parts, std::chrono::milliseconds max_wait) {
  std::vector<pollfd> fds;
  std::vector<LoopPart*> owner;
  std::optional<LoopClock::time_point> next;
  for (LoopPart* p : parts) {
    for (pollfd f : p->poll_fds()) {
      f.revents = 0;
      fds.push_back(f);
      owner.push_back(p);
    }
    if (auto t = p->next_timer()) next = next ? std::min(*next, *t) : *t;
  }
  int rc = ::poll(fds.data(), fds.size(), poll_timeout_ms(next, LoopClock::now(), max_wait));
  if (rc < 0 && errno != EINTR) return sys_error(errno, "poll");
  auto now = LoopClock::now();
  if (rc > 0)
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents) owner[i]->on_ready(fds[i].fd, now);
  for (LoopPart* p : parts) {
    auto t = p->next_timer();
    if (t && *t <= LoopClock::now()) p->on_timer(LoopClock::now());
  }
  return {};
}

}  // namespace spark
