// Helpers over a libbpf object that the BPF wrappers share (bpf_skeleton.h owns the objects):
// libbpf's own log kept quiet, per-CPU map reads, the ids of the loaded programs.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"

namespace spark::telemetry {

// libbpf's own messages stay quiet from the first call on, for the whole process: its failures
// come back as errors with context (BpfSkeleton calls it before it opens anything).
void quiet_libbpf();

// The values of one key of a per-CPU map, one per possible CPU.
template <typename T>
Result<std::vector<T>> read_percpu(bpf_map* map, uint32_t key) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return sys_error(-ncpu, "counting possible CPUs");
  static_assert(sizeof(T) % 8 == 0, "per-CPU values are 8-byte aligned");
  std::vector<T> values(static_cast<size_t>(ncpu));
  if (bpf_map__lookup_elem(map, &key, sizeof key, values.data(), values.size() * sizeof(T), 0) != 0)
    return errno_error(std::string("reading BPF map ") + bpf_map__name(map));
  return values;
}

// The kernel ids of an object's loaded programs.
std::vector<uint32_t> loaded_program_ids(bpf_object* obj);

}  // namespace spark::telemetry
