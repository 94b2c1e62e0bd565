#include "telemetry/bpf_object.h"

#include <bpf/bpf.h>

namespace spark::telemetry {

namespace {

// libbpf's own messages stay quiet: failures come back as errors with context.
int quiet_print(enum libbpf_print_level, const char*, va_list) { return 0; }

}  // namespace

void quiet_libbpf() {
  static const bool quiet = (libbpf_set_print(quiet_print), true);
  (void)quiet;
}

// The kernel ids of an object's loaded programs.
std::vector<uint32_t> loaded_program_ids(bpf_object* obj) {
  std::vector<uint32_t> ids;
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, obj) {
    int fd = bpf_program__fd(p);
    if (fd < 0) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) ids.push_back(info.id);
  }
  return ids;
}

}  // namespace spark::telemetry
