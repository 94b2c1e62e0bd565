// One owner of a BPF skeleton's lifetime (bpftool gen skeleton: bpf/NAME.bpf.c -> NAME.skel.h).
// A BpfSkeleton is move-only and destroys its skeleton (programs, maps, links the skeleton made)
// with it. It is opened and loaded in one way only, try_load: open, configure (read-only data,
// autoload, program types), load, with libbpf's own log kept quiet (quiet_libbpf, applied once
// for the process); a failure comes back as a Result with errno and what failed.
//
//   using MmProbesSkeleton = BpfSkeleton<mm_probes, mm_probes__open, mm_probes__load, mm_probes__destroy>;
//   SPARK_TRY(auto skel, MmProbesSkeleton::try_load("mm_probes", [](mm_probes& s) { s.rodata->x = 1; }));
#pragma once

#include <cerrno>
#include <functional>
#include <string>
#include <utility>

#include "core/result.h"
#include "telemetry/bpf_object.h"

namespace spark::telemetry {

template <typename T, T* (*Open)(), int (*Load)(T*), void (*Destroy)(T*)>
class BpfSkeleton {
 public:
  BpfSkeleton() = default;
  BpfSkeleton(BpfSkeleton&& other) noexcept : skel_(std::exchange(other.skel_, nullptr)) {}
  BpfSkeleton& operator=(BpfSkeleton&& other) noexcept {
    if (this != &other) {
      reset();
      skel_ = std::exchange(other.skel_, nullptr);
    }
    return *this;
  }
  BpfSkeleton(const BpfSkeleton&) = delete;
  BpfSkeleton& operator=(const BpfSkeleton&) = delete;
  ~BpfSkeleton() { reset(); }

  // Opened, not loaded: its programs and maps can be read (nothing is in the kernel yet).
  static Result<BpfSkeleton> open(const std::string& name) {
    quiet_libbpf();
    T* skel = Open();
    if (!skel) {
      int err = errno;
      return sys_error(err, "opening the " + name + " BPF object");
    }
    return BpfSkeleton(skel);
  }
  // Opened, configured by `configure` (before the kernel sees it), loaded.
  static Result<BpfSkeleton> try_load(const std::string& name, const std::function<void(T&)>& configure = {}) {
    SPARK_TRY(BpfSkeleton skel, open(name));
    if (configure) configure(*skel.skel_);
    if (int err = Load(skel.skel_); err != 0) return sys_error(-err, "loading " + name);
    return skel;
  }

  T* get() const { return skel_; }
  T* operator->() const { return skel_; }
  explicit operator bool() const { return skel_ != nullptr; }
  void reset() {
    if (skel_) Destroy(skel_);
    skel_ = nullptr;
  }

 private:
  explicit BpfSkeleton(T* skel) : skel_(skel) {}
  T* skel_ = nullptr;
};

}  // namespace spark::telemetry
