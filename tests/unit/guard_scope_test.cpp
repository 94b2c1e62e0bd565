// The sd-bus path of the guard (a transient scope asked of systemd) as far as it runs without
// systemd as PID 1: a private dbus-daemon and a fake org.freedesktop.systemd1 Manager object (sd-bus
// too) that records what StartTransientUnit received. What systemd itself would do with it (create
// the scope, move the pids) cannot run here.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <thread>

#include "guard/process.h"
#include "guard/systemd_scope.h"
#include "support/fake_systemd_bus.h"
#include "support/fixture.h"

namespace spark::guard {
namespace {

using namespace std::chrono_literals;

struct Recorded {
  std::string name, mode;
  std::vector<uint32_t> pids;
  std::map<std::string, std::string> props;
  int calls = 0;
};

int on_start_transient_unit(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* rec = static_cast<Recorded*>(userdata);
  const char *name = nullptr, *mode = nullptr;
  if (sd_bus_message_read(m, "ss", &name, &mode) < 0) return -EINVAL;
  rec->name = name;
  rec->mode = mode;
  if (sd_bus_message_enter_container(m, 'a', "(sv)") < 0) return -EINVAL;
  while (sd_bus_message_enter_container(m, 'r', "sv") > 0) {
    const char* key = nullptr;
    sd_bus_message_read(m, "s", &key);
    char type = 0;
    const char* contents = nullptr;
    sd_bus_message_peek_type(m, &type, &contents);
    sd_bus_message_enter_container(m, 'v', contents);
    std::string k = key, v;
    if (std::string(contents) == "au") {
      sd_bus_message_enter_container(m, 'a', "u");
      uint32_t p;
      while (sd_bus_message_read(m, "u", &p) > 0) rec->pids.push_back(p);
      sd_bus_message_exit_container(m);
      v = "au";
    } else if (std::string(contents) == "s") {
      const char* s = nullptr;
      sd_bus_message_read(m, "s", &s);
      v = s;
    } else if (std::string(contents) == "b") {
      int b = 0;
      sd_bus_message_read(m, "b", &b);
      v = b ? "yes" : "no";
    } else if (std::string(contents) == "t") {
      uint64_t t = 0;
      sd_bus_message_read(m, "t", &t);
      v = std::to_string(t);
    }
    sd_bus_message_exit_container(m);  // v
    sd_bus_message_exit_container(m);  // r
    rec->props[k] = v;
  }
  sd_bus_message_exit_container(m);
  ++rec->calls;
  return sd_bus_reply_method_return(m, "o", "/org/freedesktop/systemd1/job/42");
}

const sd_bus_vtable k_manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("StartTransientUnit", "ssa(sv)a(sa(sv))", "o", on_start_transient_unit, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END};

TEST(GuardScope, NamesAndSystemdDetectionGoThroughHostPaths) {
  EXPECT_EQ(*scope_unit_name("spark-guard-g1"), "spark-guard-g1.scope");
  EXPECT_FALSE(scope_unit_name("a/b").ok());
  test::FixtureRoot root;
  EXPECT_FALSE(systemd_booted(root.paths()));
  root.write("run/systemd/system/.keep", "");
  EXPECT_TRUE(systemd_booted(root.paths()));
}

TEST(GuardScope, StartTransientUnitCarriesPidsSliceAndLimits) {
  test::FixtureRoot root;
  Recorded rec;
  test::FakeSystemdBus bus(root.root(), k_manager_vtable, &rec);
  if (!bus.skip_reason().empty()) GTEST_SKIP() << bus.skip_reason();
  sd_bus* cli = nullptr;
  ASSERT_GE(bus.connect(&cli), 0);
  ScopeRequest req;
  req.name = "spark-guard-g7.scope";
  req.pids = {static_cast<pid_t>(::getpid())};
  req.description = "spark-tune guard g7";
  req.memory_high = 900ull << 20;
  req.memory_max = 1ull << 30;
  auto job = start_transient_scope(cli, req);
  sd_bus_flush_close_unref(cli);
  ASSERT_TRUE(job.ok()) << job.error().what();
  EXPECT_EQ(*job, "/org/freedesktop/systemd1/job/42");
  EXPECT_EQ(rec.calls, 1);
  EXPECT_EQ(rec.name, "spark-guard-g7.scope");
  EXPECT_EQ(rec.mode, "fail");
  EXPECT_EQ(rec.pids, std::vector<uint32_t>{static_cast<uint32_t>(::getpid())});
  EXPECT_EQ(rec.props["Slice"], "system.slice");
  EXPECT_EQ(rec.props["MemoryAccounting"], "yes");
  EXPECT_EQ(rec.props["MemoryHigh"], std::to_string(900ull << 20));
  EXPECT_EQ(rec.props["MemoryMax"], std::to_string(1ull << 30));
  EXPECT_EQ(rec.props["CollectMode"], "inactive-or-failed");
  EXPECT_EQ(rec.props["Description"], "spark-tune guard g7");
}

TEST(GuardScope, WithoutSystemdTheSystemBusCallFailsClearly) {
  if (systemd_booted(HostPaths::system())) GTEST_SKIP() << "systemd runs here: the real call would create a scope";
  ScopeRequest req;
  req.name = "spark-guard-gx.scope";
  req.pids = {::getpid()};
  auto r = start_transient_scope(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.error().what()).find("system bus"), std::string::npos) << r.error().what();
}

}  // namespace
}  // namespace spark::guard
