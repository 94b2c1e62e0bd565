#include <gtest/gtest.h>

#include <filesystem>

#include "support/fixture.h"
#include "telemetry/bpf_features.h"

using spark::telemetry::BpfFeatures, spark::telemetry::KernelBpfFeatures, spark::telemetry::ProbeSupport;

namespace spark {
namespace {

TEST(BpfFeatures, LoadsAndRunsTracepointPrograms) {
  if (!test::is_root()) GTEST_SKIP() << "loading BPF programs needs root";
  if (!std::filesystem::exists("/sys/kernel/btf/vmlinux")) GTEST_SKIP() << "kernel has no BTF";
  KernelBpfFeatures features;
  ProbeSupport s = features.probe();
  // This kernel (and CI's) runs tp_btf and raw_tp; each must have really fired, not only loaded.
  EXPECT_TRUE(s.tp_btf) << s.tp_btf_error;
  EXPECT_TRUE(s.raw_tp) << s.raw_tp_error;
  if (!s.tp) {
    // Classic tracepoints need tracefs for the event id; the reason must say what failed.
    EXPECT_FALSE(s.tp_error.empty());
  }
}

}  // namespace
}  // namespace spark
