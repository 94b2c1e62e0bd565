// Doctor checks against fixture trees: every OK / WARN / FAIL branch.
#include "doctor/doctor.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "daemon/protect.h"
#include "profile/profile_ops.h"
#include "support/fixture.h"
#include "support/run_spark_tune.h"
#include "tune/actuator.h"
#include "tune/tuner.h"

using spark::state::sysctl_target;

using spark::tune::ApplyOptions, spark::tune::HostActuator, spark::tune::Tuner;

using spark::telemetry::BpfFeatures, spark::telemetry::ProbeSupport;

using spark::profile::k_profile_owner;

namespace spark::doctor {
namespace {

constexpr uint64_t k_gib_kb = 1024 * 1024;

class Doctor : public ::testing::Test {
 protected:
  Doctor() {
    env_.paths = root_.paths();
    root_.meminfo(24 * k_gib_kb, 20 * k_gib_kb);  // 24 GiB: 384 MiB recommended
    sysctl("vm/min_free_kbytes", "393216");
    sysctl("vm/overcommit_memory", "0");
  }
  void sysctl(const std::string& rel, const std::string& v) { root_.write("proc/sys/" + rel, v + "\n"); }
  // The single finding of a check (most checks here give one), failing the test otherwise.
  std::vector<Finding> run(std::vector<Finding> (*check)(const Env&)) { return check(env_); }
  static bool has(const std::vector<Finding>& v, Status s, const std::string& text) {
    for (const auto& f : v)
      if (f.status == s && (f.message + " " + f.fix).find(text) != std::string::npos) return true;
    return false;
  }
  static std::string dump(const std::vector<Finding>& v) {
    std::string s;
    for (const auto& f : v) s += std::string(status_name(f.status)) + " " + f.message + " | " + f.fix + "\n";
    return s;
  }
  test::FixtureRoot root_;
  Env env_;
};

TEST(DoctorRecommendation, ScalesWithRamWithinBounds) {
  EXPECT_EQ(recommended_min_free_kbytes(4ull << 30), 128u * 1024);     // floor
  EXPECT_EQ(recommended_min_free_kbytes(24ull << 30), 384u * 1024);    // RAM / 64
  EXPECT_EQ(recommended_min_free_kbytes(128ull << 30), 1024u * 1024);  // GB10: 1 GiB
  EXPECT_EQ(recommended_min_free_kbytes(1ull << 40), 1024u * 1024);    // cap
}

TEST_F(Doctor, SysctlReserveBranches) {
  auto ok = run(check_sysctl);
  EXPECT_TRUE(has(ok, Status::ok, "meets")) << dump(ok);
  sysctl("vm/min_free_kbytes", "67584");
  auto low = run(check_sysctl);
  EXPECT_TRUE(has(low, Status::fail, "echo 393216 > /proc/sys/vm/min_free_kbytes")) << dump(low);
  sysctl("vm/min_free_kbytes", "4194304");  // 4 GiB of 24
  EXPECT_TRUE(has(run(check_sysctl), Status::warn, "over 5%"));
  sysctl("vm/overcommit_memory", "2");
  EXPECT_TRUE(has(run(check_sysctl), Status::warn, "strict"));
  root_.write("proc/meminfo", "");
  EXPECT_TRUE(has(run(check_sysctl), Status::warn, "cannot read the reserve"));
}

TEST_F(Doctor, SysctlNamesTunedAndALaterFile) {
  root_.write("etc/sysctl.d/90-spark-tune.conf", "vm.min_free_kbytes = 393216\nvm.dirty_ratio=5\n");
  root_.write("etc/sysctl.d/99-vendor.conf", "# vendor\nvm.dirty_ratio = 40\n");
  root_.write("usr/lib/sysctl.d/99-vendor.conf", "vm.dirty_ratio = 1\n");  // shadowed by /etc's file of that name
  root_.write("etc/tuned/active_profile", "throughput-performance\n");
  root_.write("usr/lib/tuned/throughput-performance/tuned.conf",
              "[main]\ninclude=base\n[sysctl]\nvm.dirty_ratio = 40\n");
  root_.write("usr/lib/tuned/base/tuned.conf", "[sysctl]\nvm.swappiness=10\n");
  auto f = run(check_sysctl);
  EXPECT_TRUE(has(f, Status::warn, "99-vendor.conf:2 (40) overrides")) << dump(f);
  EXPECT_TRUE(
      has(f, Status::warn, "remove vm.dirty_ratio from " + (root_.root() / "etc/sysctl.d/99-vendor.conf").string()));
  EXPECT_FALSE(has(f, Status::warn, "usr/lib/sysctl.d")) << dump(f);
  EXPECT_TRUE(has(f, Status::warn, "tuned profile 'throughput-performance'"));
  EXPECT_TRUE(has(f, Status::warn, "vm.swappiness = 10 is set by tuned profile 'base'"));
}

TEST_F(Doctor, SysctlComparesTheProfileAppliedInTheJournal) {
  sysctl("vm/dirty_ratio", "20");
  sysctl("vm/dirty_bytes", "0");
  sysctl("vm/vfs_cache_pressure", "100");
  auto none = read_active_profile(root_.paths());
  ASSERT_TRUE(none.ok()) << none.error().what();
  EXPECT_FALSE(none->has_value());  // nothing applied: nothing to compare

  HostActuator act(root_.paths());
  Tuner tuner(root_.paths(), act);
  ApplyOptions opts;
  opts.owner_state = {{"name", "dgx-spark"}};
  ASSERT_TRUE(
      tuner
          .apply(k_profile_owner,
                 {{sysctl_target("vm.dirty_ratio"), "5", ""}, {sysctl_target("vm.vfs_cache_pressure"), "200", ""}},
                 opts)
          .ok());
  auto load = [&] {
    auto a = read_active_profile(root_.paths());
    EXPECT_TRUE(a.ok()) << a.error().what();
    env_.active_profile = a ? *a : std::nullopt;
  };
  sysctl("vm/min_free_kbytes", "67584");  // below the recommendation, but the profile holds: WARN, not FAIL
  load();
  ASSERT_TRUE(env_.active_profile.has_value());
  EXPECT_EQ(env_.active_profile->name, "dgx-spark");
  auto match = run(check_sysctl);
  EXPECT_TRUE(has(match, Status::ok, "applied profile 'dgx-spark' matches the running kernel (2 key(s))"))
      << dump(match);
  EXPECT_TRUE(has(match, Status::warn, "vm.min_free_kbytes is 67584")) << dump(match);
  EXPECT_FALSE(any_fail(match)) << dump(match);

  // A load window holds a key for now: not drift.
  ASSERT_TRUE(tuner.apply("window:w1", {{sysctl_target("vm.vfs_cache_pressure"), "300", ""}}).ok());
  load();
  auto held = run(check_sysctl);
  EXPECT_TRUE(has(held, Status::ok, "vm.vfs_cache_pressure = 300 is held by window:w1")) << dump(held);
  EXPECT_FALSE(any_fail(held)) << dump(held);
  ASSERT_TRUE(tuner.release("window:w1").ok());

  // Changed by hand, and a sysctl.d file sets the same value at boot: FAIL naming the file and the fix.
  sysctl("vm/dirty_ratio", "20");
  root_.write("etc/sysctl.d/99-x.conf", "vm.dirty_ratio=20\n");
  load();
  auto drift = run(check_sysctl);
  EXPECT_TRUE(has(drift, Status::fail, "vm.dirty_ratio is 20, profile 'dgx-spark' wants 5")) << dump(drift);
  EXPECT_TRUE(has(drift, Status::fail, "99-x.conf:1 sets 20")) << dump(drift);
  EXPECT_TRUE(has(drift, Status::fail, "then spark-tune apply dgx-spark")) << dump(drift);
  EXPECT_FALSE(has(drift, Status::ok, "matches the running kernel")) << dump(drift);

  // The CLI fills the hook from the journal: exit 1 on drift.
  std::string r = "--root=" + root_.root().string();
  auto cli = test::run_spark_tune({r, "doctor", "sysctl", "--json"});
  EXPECT_EQ(cli.exit_code, 1) << cli.out;
  EXPECT_NE(cli.out.find("profile 'dgx-spark' wants 5"), std::string::npos) << cli.out;
  sysctl("vm/dirty_ratio", "5");
  EXPECT_EQ(test::run_spark_tune({r, "doctor", "sysctl"}).exit_code, 0);

  // A journal that cannot be read: WARN, and the CLI says so too.
  root_.write("var/lib/spark-tune/journal.json", "{not json");
  auto bad = read_active_profile(root_.paths());
  ASSERT_FALSE(bad.ok());
  env_.active_profile.reset();
  env_.journal_error = bad.error().what();
  EXPECT_TRUE(has(run(check_sysctl), Status::warn, "cannot compare the applied profile"));
  auto cli_bad = test::run_spark_tune({r, "doctor", "sysctl"});
  EXPECT_NE(cli_bad.out.find("cannot compare the applied profile"), std::string::npos) << cli_bad.out;
}

TEST_F(Doctor, PersistBranches) {
  root_.write("etc/sysctl.d/90-spark-tune.conf", "vm.min_free_kbytes = 393216\n");
  EXPECT_TRUE(has(run(check_persist), Status::ok, "match what boot sets"));
  sysctl("vm/min_free_kbytes", "524288");
  EXPECT_TRUE(has(run(check_persist), Status::warn, "lost at reboot"));
  root_.write("etc/sysctl.d/90-spark-tune.conf", "");
  EXPECT_TRUE(has(run(check_persist), Status::warn, "set only at run time"));
}

TEST_F(Doctor, SwapBranches) {
  root_.write("proc/swaps", "Filename Type Size Used Priority\n");
  EXPECT_TRUE(has(run(check_swap), Status::warn, "no swap or zram"));
  root_.write("proc/swaps", "Filename Type Size Used Priority\n/dev/zram0 partition 6291452 0 100\n");
  EXPECT_TRUE(has(run(check_swap), Status::ok, "zram 6.0 GiB"));
  root_.write("proc/meminfo", "MemTotal: 25165824 kB\nMemAvailable: 1000 kB\nUnevictable: 8388608 kB\n");
  EXPECT_TRUE(has(run(check_swap), Status::warn, "pinned (Unevictable)"));
  root_.write("proc/meminfo", "");
  std::filesystem::remove(root_.root() / "proc/swaps");
  EXPECT_TRUE(has(run(check_swap), Status::warn, "cannot read"));
}

TEST_F(Doctor, ThpBranches) {
  EXPECT_TRUE(has(run(check_thp), Status::warn, "no transparent hugepage"));
  root_.write("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n");
  root_.write("sys/kernel/mm/transparent_hugepage/defrag", "[always] defer defer+madvise madvise never\n");
  EXPECT_TRUE(has(run(check_thp), Status::warn, "echo defer+madvise"));
  root_.write("sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never\n");
  EXPECT_TRUE(has(run(check_thp), Status::ok, "enabled=always defrag=madvise"));
  root_.write("sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n");
  EXPECT_TRUE(has(run(check_thp), Status::ok, "fall back"));
}

TEST_F(Doctor, CgroupBranches) {
  EXPECT_TRUE(has(run(check_cgroup), Status::fail, "no memory cgroup controller"));
  root_.write("sys/fs/cgroup/memory/memory.usage_in_bytes", "1\n");
  root_.write("sys/fs/cgroup/unified/cgroup.controllers", "\n");
  EXPECT_TRUE(has(run(check_cgroup), Status::warn, "hybrid"));
  root_.write("sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
  EXPECT_TRUE(has(run(check_cgroup), Status::fail, "without the memory controller"));
  root_.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
  EXPECT_TRUE(has(run(check_cgroup), Status::warn, "without memory.reclaim"));
  root_.write("sys/fs/cgroup/system.slice/memory.reclaim", "");
  EXPECT_TRUE(has(run(check_cgroup), Status::ok, "memory.reclaim"));
}

struct FakeBpf : BpfFeatures {
  ProbeSupport s;
  ProbeSupport probe() override { return s; }
};

TEST_F(Doctor, BpfBranches) {
  FakeBpf fake;
  env_.bpf = &fake;
  fake.s.tp_btf_error = fake.s.raw_tp_error = fake.s.tp_error = "EPERM";
  auto none = run(check_bpf);
  EXPECT_TRUE(has(none, Status::warn, "no BTF")) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "no probe type loads"));
  root_.write("sys/kernel/btf/vmlinux", "btf");
  fake.s.tp = true;
  auto tp_only = run(check_bpf);
  EXPECT_FALSE(has(tp_only, Status::warn, "no BTF"));
  EXPECT_TRUE(has(tp_only, Status::warn, "only classic tracepoints"));
  fake.s.tp_btf = fake.s.raw_tp = true;
  EXPECT_TRUE(has(run(check_bpf), Status::ok, "tp_btf raw_tp tp"));
}

TEST_F(Doctor, GpuBranches) {
  env_.nvml_library = (root_.root() / "absent.so").string();
  EXPECT_TRUE(has(run(check_gpu), Status::ok, "no NVIDIA driver"));
  env_.nvml_library = FAKE_NVML_LIB;
  auto two = run(check_gpu);
  EXPECT_TRUE(has(two, Status::ok, "GPU 0 Fake GPU 0: 20.0 GiB free of 24.0 GiB")) << dump(two);
  EXPECT_TRUE(has(two, Status::ok, "GPU 1 Fake GPU 1: 4.0 GiB free"));
  ::setenv("FAKE_NVML_MODE", "fail_init", 1);
  EXPECT_TRUE(has(run(check_gpu), Status::fail, "Driver Not Loaded"));
  ::setenv("FAKE_NVML_MODE", "unified", 1);
  EXPECT_TRUE(has(run(check_gpu), Status::ok, "unified memory"));
  ::setenv("FAKE_NVML_MODE", "hang_init", 1);
  ::setenv("FAKE_NVML_HANG_MS", "1500", 1);
  env_.gpu_timeout = std::chrono::milliseconds(200);
  EXPECT_TRUE(has(run(check_gpu), Status::fail, "did not answer"));
  ::unsetenv("FAKE_NVML_MODE");
  ::unsetenv("FAKE_NVML_HANG_MS");
}

TEST_F(Doctor, GpuNamesServersWithPinnedMemory) {
  env_.nvml_library = FAKE_NVML_LIB;  // on a CPU-only host the variable does not matter: not scanned
  root_.write("proc/41/comm", "llama-server\n");
  root_.write("proc/41/cmdline", std::string("/opt/llama/llama-server\0-m\0x.gguf\0", 34));
  root_.write("proc/41/environ", std::string("PATH=/bin\0HOME=/\0", 17));
  root_.write("proc/41/cgroup", "0::/system.slice/llama.service\n");
  root_.write("proc/42/comm", "llama-server\n");
  root_.write("proc/42/environ", std::string("GGML_CUDA_NO_PINNED=1\0", 22));
  root_.write("proc/43/comm", "bash\n");
  root_.write("proc/43/environ", "");
  std::filesystem::create_directories(root_.root() / "proc/44/environ");  // unreadable as a file
  root_.write("proc/44/comm", "ollama\n");
  auto f = run(check_gpu);
  EXPECT_TRUE(has(f, Status::warn, "pid 41 (llama-server) runs without GGML_CUDA_NO_PINNED=1")) << dump(f);
  EXPECT_TRUE(has(f, Status::warn, "systemctl edit llama.service"));
  EXPECT_FALSE(has(f, Status::warn, "pid 42"));
  EXPECT_FALSE(has(f, Status::warn, "pid 43"));
  EXPECT_TRUE(has(f, Status::warn, "cannot read the environment of pid 44"));
}

TEST_F(Doctor, ProtectionBranches) {
  root_.write("sys/fs/cgroup/cgroup.controllers", "memory\n");
  // No default unit exists: nothing to protect.
  EXPECT_TRUE(has(run(check_protection), Status::ok, "none of the units"));
  // ssh running, unprotected.
  root_.write("lib/systemd/system/ssh.service", "[Service]\n");
  std::filesystem::create_directories(root_.root() / "etc/systemd/system");
  std::filesystem::create_symlink(root_.root() / "lib/systemd/system/ssh.service",
                                  root_.root() / "etc/systemd/system/sshd.service");
  root_.write("sys/fs/cgroup/system.slice/ssh.service/memory.min", "0\n");
  root_.write("sys/fs/cgroup/system.slice/ssh.service/cgroup.procs", "50\n");
  root_.write("proc/50/oom_score_adj", "0\n");
  auto bare = run(check_protection);
  EXPECT_TRUE(has(bare, Status::fail, "spark-tune protect ssh.service")) << dump(bare);
  EXPECT_EQ(bare.size(), 1u) << "ssh and its alias sshd count once:\n" << dump(bare);
  // Drop-in written, not yet applied.
  root_.write("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf", k_protect_marker);
  EXPECT_TRUE(has(run(check_protection), Status::warn, "systemctl daemon-reload && systemctl restart ssh.service"));
  // In effect.
  root_.write("sys/fs/cgroup/system.slice/ssh.service/memory.min", "268435456\n");
  root_.write("proc/50/oom_score_adj", "-900\n");
  EXPECT_TRUE(has(run(check_protection), Status::ok, "memory.min 268435456, oom_score_adj -900"));
  // A named unit that is installed but not running, and one that does not exist.
  root_.write("lib/systemd/system/spark-tune.service", "[Service]\n");
  env_.protected_units = {"spark-tune", "nothere.service"};
  auto named = run(check_protection);
  EXPECT_TRUE(has(named, Status::warn, "spark-tune.service is not protected (not running now)")) << dump(named);
  EXPECT_TRUE(has(named, Status::warn, "nothere.service: no such unit"));
  root_.write("etc/systemd/system/spark-tune.service.d/50-spark-tune-protect.conf", k_protect_marker);
  EXPECT_TRUE(has(run(check_protection), Status::ok, "spark-tune.service: protected by"));
}

TEST_F(Doctor, ProtectionChecksTheUnitsProtectJournaled) {
  if (!std::filesystem::exists("/usr/bin/systemd-analyze") && !std::filesystem::exists("/bin/systemd-analyze"))
    GTEST_SKIP() << "systemd-analyze is not installed (protect verifies its drop-ins with it)";
  root_.write("sys/fs/cgroup/cgroup.controllers", "memory\n");
  root_.write("lib/systemd/system/llama.service", "[Service]\n");
  root_.write("sys/fs/cgroup/system.slice/llama.service/memory.min", "0\n");
  root_.write("sys/fs/cgroup/system.slice/llama.service/cgroup.procs", "70\n");
  root_.write("proc/70/oom_score_adj", "0\n");
  std::filesystem::create_directories(root_.paths().systemd_d);
  HostActuator act(root_.paths());
  ASSERT_TRUE(protect_units(root_.paths(), act, {"llama", "gone"}, ProtectSpec{}).ok());
  // Not in the default list, but protect wrote its drop-in: checked, and not yet in effect.
  auto f = run(check_protection);
  EXPECT_TRUE(has(f, Status::warn, "llama.service: drop-in written but not in effect")) << dump(f);
  EXPECT_TRUE(has(f, Status::warn, "gone.service: no such unit here (spark-tune protect wrote a drop-in)")) << dump(f);
  // The drop-in removed by hand behind the journal's back: said, with both ways out.
  std::filesystem::remove(protect_dropin_path(root_.paths(), "llama.service"));
  auto removed = run(check_protection);
  EXPECT_TRUE(has(removed, Status::warn, "is gone")) << dump(removed);
  EXPECT_TRUE(has(removed, Status::warn, "spark-tune protect --undo llama.service")) << dump(removed);
}

TEST_F(Doctor, ProtectionOnCgroupV1UsesOomScore) {
  root_.write("lib/systemd/system/ssh.service", "[Service]\n");
  root_.write("sys/fs/cgroup/systemd/system.slice/ssh.service/cgroup.procs", "50\n");
  root_.write("proc/50/oom_score_adj", "-900\n");
  root_.write("etc/systemd/system/ssh.service.d/50-spark-tune-protect.conf", k_protect_marker);
  auto f = run(check_protection);
  EXPECT_TRUE(has(f, Status::ok, "MemoryMin needs cgroup v2")) << dump(f);
}

TEST_F(Doctor, SystemdBranches) {
  // A container or chroot: no /run/systemd/system.
  auto none = run(check_systemd);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_TRUE(has(none, Status::warn, "systemd is not PID 1")) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "no socket activation")) << dump(none);
  // systemd runs, the unit is not installed.
  std::filesystem::create_directories(root_.root() / "run/systemd/system");
  EXPECT_TRUE(has(run(check_systemd), Status::warn, "spark-tune.socket is not installed"));
  // Installed where the package puts it, not enabled.
  root_.write("usr/lib/systemd/system/spark-tune.socket", "[Socket]\n");
  EXPECT_TRUE(has(run(check_systemd), Status::warn, "systemctl enable --now spark-tune.socket"));
  // Enabled: the symlink deb-systemd-helper (systemctl enable) makes.
  std::filesystem::create_directories(root_.root() / "etc/systemd/system/sockets.target.wants");
  std::filesystem::create_symlink("/usr/lib/systemd/system/spark-tune.socket",
                                  root_.root() / "etc/systemd/system/sockets.target.wants/spark-tune.socket");
  auto ok = run(check_systemd);
  EXPECT_TRUE(has(ok, Status::ok, "socket activation")) << dump(ok);
}

// Issue 14: doctor says what wakes a window's floor (PSI trigger, reclaim tracepoints and their kind).
class FakeFloorWake : public FloorWakeProbe {
 public:
  Result<std::string> psi_r = sys_error(ENOENT, "/proc/pressure/memory");
  Result<std::string> reclaim_r = sys_error(ENOTSUP, "reclaim tracepoints for the floor: tp_btf: EPERM");
  Result<std::string> psi() override { return psi_r; }
  Result<std::string> reclaim() override { return reclaim_r; }
};

TEST_F(Doctor, FloorWakeSourcesReported) {
  FakeFloorWake fake;
  env_.floor_wake = &fake;
  auto none = run(check_floor);
  ASSERT_EQ(none.size(), 2u) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "no memory PSI trigger")) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "only at its 10 ms check")) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "tp_btf: EPERM")) << dump(none);
  EXPECT_TRUE(has(none, Status::warn, "it keeps its timer")) << dump(none);
  for (const auto& f : none) EXPECT_FALSE(f.fix.empty()) << f.message;
  fake.psi_r = std::string("some 5 ms in 500 ms on /proc/pressure/memory");
  fake.reclaim_r = std::string("reclaim tracepoints (raw_tp: kswapd_wake, direct_reclaim, memcg_reclaim)");
  auto both = run(check_floor);
  EXPECT_TRUE(has(both, Status::ok, "some 5 ms in 500 ms")) << dump(both);
  EXPECT_TRUE(has(both, Status::ok, "raw_tp: kswapd_wake")) << dump(both);
  EXPECT_FALSE(has(both, Status::warn, "")) << dump(both);
  // Only one source: the other's warning names what still wakes the floor.
  fake.reclaim_r = sys_error(ENOTSUP, "no BTF");
  EXPECT_TRUE(has(run(check_floor), Status::warn, "keeps its timer and PSI trigger"));
  EXPECT_TRUE(run_checks(env_, {"floor"}).ok());
}

TEST_F(Doctor, AHostWithoutBpfSystemdOrCgroupV2SaysWhatWillNotWork) {
  // The odd host of the package's install: cgroup v1 memory, no BTF, no systemd. doctor runs every
  // check without an error and says what will not work and why, each with what to do.
  root_.write("sys/fs/cgroup/memory/memory.usage_in_bytes", "1\n");
  FakeBpf fake;
  fake.s.tp_btf_error = fake.s.raw_tp_error = fake.s.tp_error = "EINVAL";
  env_.bpf = &fake;
  FakeFloorWake floor;  // no real tracepoints loaded from a unit test
  env_.floor_wake = &floor;
  auto all = run_checks(env_, {});
  ASSERT_TRUE(all.ok()) << all.error().what();
  EXPECT_TRUE(has(*all, Status::warn, "no BTF")) << dump(*all);
  EXPECT_TRUE(has(*all, Status::warn, "falls back to procfs")) << dump(*all);
  EXPECT_TRUE(has(*all, Status::warn, "cgroup v1 memory controller")) << dump(*all);
  EXPECT_TRUE(has(*all, Status::warn, "systemd is not PID 1")) << dump(*all);
  // The three that say what will not work each say what to do about it.
  for (const auto& f : *all) {
    if (f.status != Status::ok && (f.check == "bpf" || f.check == "cgroup" || f.check == "systemd")) {
      EXPECT_FALSE(f.fix.empty()) << f.check << ": " << f.message;
    }
  }
}

TEST_F(Doctor, RunChecksAndCli) {
  EXPECT_EQ(run_checks(env_, {"nope"}).error().code().value(), EINVAL);
  auto some = run_checks(env_, {"thp", "swap"});
  ASSERT_TRUE(some.ok());
  for (const auto& f : *some) EXPECT_TRUE(f.check == "thp" || f.check == "swap");
  std::string r = "--root=" + root_.root().string();
  root_.write("sys/kernel/mm/transparent_hugepage/enabled", "[madvise]\n");
  root_.write("sys/kernel/mm/transparent_hugepage/defrag", "[madvise]\n");
  auto ok = test::run_spark_tune({r, "doctor", "thp", "--json"});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  auto j = nlohmann::json::parse(ok.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_EQ(j["findings"][0]["status"], "OK");
  auto fail = test::run_spark_tune({r, "doctor", "cgroup"});
  EXPECT_EQ(fail.exit_code, 1) << fail.out;
  EXPECT_NE(fail.out.find("FAIL cgroup"), std::string::npos);
  EXPECT_EQ(test::run_spark_tune({r, "doctor", "everything"}).exit_code, 2);
}

}  // namespace
}  // namespace spark::doctor
