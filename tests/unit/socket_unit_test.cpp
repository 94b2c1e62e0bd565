// Issue 11, defect 3 on fake roots: where systemd runs and spark-tune.socket is installed for the
// CLI's socket path, ensure_agent goes through the unit only (starts it when it is not listening,
// over D-Bus by default, or says the systemctl command) and never starts an agent beside it.
// StartUnit itself is exercised against a private dbus-daemon and a fake systemd Manager.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "core/fs.h"
#include "daemon/protocol.h"
#include "daemon/socket_unit.h"
#include "guard/process.h"
#include "support/fake_systemd_bus.h"
#include "support/fixture.h"

namespace spark::daemon {
namespace {

using namespace std::chrono_literals;

constexpr const char* k_unit = "[Unit]\nDescription=x\n\n[Socket]\nListenStream=/run/spark-tune/agent.sock\n";

void install_unit(const test::FixtureRoot& root, const std::string& dir = "usr/lib/systemd/system",
                  const std::string& text = k_unit) {
  root.write(dir + "/spark-tune.socket", text);
}

TEST(SocketUnit, ManagesOnlyWhereSystemdRunsAndTheUnitListensOnTheCliSocket) {
  test::FixtureRoot root;
  install_unit(root);
  EXPECT_TRUE(installed_socket_unit(root.paths()).has_value());
  EXPECT_FALSE(socket_unit_manages(root.paths())) << "systemd is not PID 1 in this tree";
  root.write("run/systemd/system/.keep", "");
  EXPECT_TRUE(socket_unit_manages(root.paths()));
  // An agent of another run directory (tests, SPARK_TUNE_RUN_DIR) is not the unit's.
  HostPaths other = root.paths();
  other.run = root.root() / "tmp/run";
  EXPECT_FALSE(socket_unit_manages(other));
  // /etc overrides /usr/lib: a unit listening elsewhere, or masked, does not manage this socket.
  install_unit(root, "etc/systemd/system", "[Socket]\nListenStream=/run/other.sock\n");
  EXPECT_FALSE(socket_unit_manages(root.paths()));
  fs::remove(root.root() / "etc/systemd/system/spark-tune.socket");
  fs::create_symlink("/dev/null", root.root() / "etc/systemd/system/spark-tune.socket");
  EXPECT_FALSE(socket_unit_manages(root.paths()));
  fs::remove(root.root() / "etc/systemd/system/spark-tune.socket");
  // A later empty ListenStream= resets the list.
  install_unit(root, "usr/lib/systemd/system", std::string(k_unit) + "ListenStream=\n");
  EXPECT_FALSE(socket_unit_manages(root.paths()));
}

TEST(SocketUnit, AStoppedUnitIsStartedNeverRacedByADetachedAgentAndAFailureSaysTheCommand) {
  test::FixtureRoot root;
  root.write("run/systemd/system/.keep", "");
  install_unit(root);
  // Were an agent started, it would be <proc>/self/exe: point it at something that says so.
  fs::create_directories(root.root() / "proc/self");
  fs::create_symlink("/bin/true", root.root() / "proc/self/exe");
  int calls = 0;
  std::string asked;
  auto failing = [&](const std::string& unit) -> Result<void> {
    ++calls;
    asked = unit;
    return sys_error(EACCES, "systemd did not start " + unit + " (access denied)");
  };
  auto r = ensure_agent(root.paths(), {}, 2s, 2s, failing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(asked, "spark-tune.socket");
  EXPECT_NE(std::string(r.error().what()).find("systemctl start spark-tune.socket"), std::string::npos)
      << r.error().what();
  EXPECT_FALSE(fs::exists(socket_path(root.paths())));

  // The starter brings the socket up (as systemd would); the agent behind it answers the ping.
  std::atomic<int> listener{-1};
  std::thread server;
  auto starting = [&](const std::string& unit) -> Result<void> {
    ++calls;
    asked = unit;
    fs::create_directories(root.paths().run);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path(root.paths()).c_str(), sizeof(addr.sun_path) - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4) != 0)
      return errno_error("binding the fake unit's socket");
    listener = fd;
    server = std::thread([fd] {
      int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) return;
      char buf[512];
      (void)!::recv(c, buf, sizeof buf, 0);
      std::string answer = "{\"id\":1,\"result\":{\"pid\":4242}}\n";
      (void)!::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
    });
    return {};
  };
  calls = 0;
  auto ok = ensure_agent(root.paths(), {}, 2s, 5s, starting);
  if (server.joinable()) server.join();
  if (listener >= 0) ::close(listener);
  ASSERT_TRUE(ok.ok()) << ok.error().what();
  EXPECT_EQ(calls, 1);
}

TEST(SocketUnit, WithoutTheUnitTheStarterIsNotAsked) {
  test::FixtureRoot root;
  root.write("run/systemd/system/.keep", "");  // systemd runs, but spark-tune.socket is not installed
  int calls = 0;
  auto r = ensure_agent(root.paths(), {}, 200ms, 200ms, [&](const std::string&) -> Result<void> {
    ++calls;
    return {};
  });
  ASSERT_FALSE(r.ok());  // it went on to start a detached agent: <proc>/self/exe is missing here
  EXPECT_EQ(calls, 0);
  EXPECT_NE(std::string(r.error().what()).find("spark-tune executable"), std::string::npos) << r.error().what();
}

struct StartRecord {
  std::string unit, mode;
  int calls = 0;
};

int on_start_unit(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* rec = static_cast<StartRecord*>(userdata);
  const char *unit = nullptr, *mode = nullptr;
  if (sd_bus_message_read(m, "ss", &unit, &mode) < 0) return -EINVAL;
  rec->unit = unit;
  rec->mode = mode;
  ++rec->calls;
  return sd_bus_reply_method_return(m, "o", "/org/freedesktop/systemd1/job/7");
}

const sd_bus_vtable k_vtable[] = {SD_BUS_VTABLE_START(0),
                                  SD_BUS_METHOD("StartUnit", "ss", "o", on_start_unit, SD_BUS_VTABLE_UNPRIVILEGED),
                                  SD_BUS_VTABLE_END};

TEST(SocketUnit, StartUnitAsksSystemdOverDBus) {
  test::FixtureRoot root;
  StartRecord rec;
  test::FakeSystemdBus bus(root.root(), k_vtable, &rec);
  if (!bus.skip_reason().empty()) GTEST_SKIP() << bus.skip_reason();
  sd_bus* cli = nullptr;
  ASSERT_GE(bus.connect(&cli), 0);
  auto job = start_unit(cli, "spark-tune.socket");
  sd_bus_flush_close_unref(cli);
  ASSERT_TRUE(job.ok()) << job.error().what();
  EXPECT_EQ(*job, "/org/freedesktop/systemd1/job/7");
  EXPECT_EQ(rec.calls, 1);
  EXPECT_EQ(rec.unit, "spark-tune.socket");
  EXPECT_EQ(rec.mode, "replace");
}

}  // namespace
}  // namespace spark::daemon
