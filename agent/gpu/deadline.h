// Runs a call on a worker thread and waits for it only until a deadline, so a call that hangs (an
// NVML probe on a wedged driver) cannot hold its caller past the bound. A late worker is left to
// finish on its own (detached); whatever it uses must be owned by the closure (shared_ptr).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/result.h"

namespace spark::gpu {

using SteadyTime = std::chrono::steady_clock::time_point;

template <typename T>
Result<T> call_with_deadline(std::function<Result<T>()> fn, SteadyTime deadline, const std::string& what) {
  struct Slot {
    std::mutex m;
    std::condition_variable cv;
    std::optional<Result<T>> result;
  };
  auto slot = std::make_shared<Slot>();
  if (std::chrono::steady_clock::now() >= deadline) return sys_error(ETIMEDOUT, what + ": no time left");
  std::thread([slot, fn = std::move(fn)] {
    auto r = fn();
    std::lock_guard lock(slot->m);
    slot->result.emplace(std::move(r));
    slot->cv.notify_all();
  }).detach();
  std::unique_lock lock(slot->m);
  if (!slot->cv.wait_until(lock, deadline, [&] { return slot->result.has_value(); }))
    return sys_error(ETIMEDOUT, what + " did not answer in time");
  return std::move(*slot->result);
}

}  // namespace spark::gpu
