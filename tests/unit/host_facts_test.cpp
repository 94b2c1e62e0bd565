// The single modules for host facts: /proc/PID/stat liveness, the memory cgroup detector, unit
// names, HOST:PORT, meminfo, the owning descriptor.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/meminfo.h"
#include "core/memory_cgroup.h"
#include "core/port.h"
#include "core/proc_stat.h"
#include "core/systemd_unit.h"
#include "support/fixture.h"

namespace spark {
namespace {

// A full stat line: pid (comm) state ppid pgrp session tty tpgid flags ... starttime(22) ...
std::string stat_line(const std::string& pid_comm, char state, uint64_t flags, uint64_t start) {
  return pid_comm + " " + state + " 1 55 55 0 -1 " + std::to_string(flags) + " 100 0 0 0 1 2 0 0 20 0 1 0 " +
         std::to_string(start) + " 1000 10 18446744073709551615\n";
}

TEST(ProcStat, ParsesCommWithBlanksAndClosingParens) {
  auto st = parse_proc_stat(stat_line("55 (my (odd)) proc) )", 'S', 4194560, 987654));
  ASSERT_TRUE(st.ok()) << describe(st.error());
  EXPECT_EQ(st->pid, 55);
  EXPECT_EQ(st->comm, "my (odd)) proc) ");
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->flags, 4194560u);
  EXPECT_EQ(st->start_time, 987654u);
  EXPECT_FALSE(st->finished());
}

TEST(ProcStat, OneRuleZombieDeadOrExitingHasFinished) {
  EXPECT_TRUE(parse_proc_stat(stat_line("1 (a)", 'Z', 0, 5))->finished());
  EXPECT_TRUE(parse_proc_stat(stat_line("1 (a)", 'X', 0, 5))->finished());
  EXPECT_TRUE(parse_proc_stat(stat_line("1 (a)", 'R', 4194628, 5))->finished());  // PF_EXITING (0x4)
  EXPECT_FALSE(parse_proc_stat(stat_line("1 (a)", 'D', 4194624, 5))->finished());
  EXPECT_FALSE(parse_proc_stat(stat_line("1 (a)", 'R', 0, 5))->finished());
}

TEST(ProcStat, RefusesWhatIsNotAStatLine) {
  EXPECT_FALSE(parse_proc_stat("").ok());
  EXPECT_FALSE(parse_proc_stat("55 comm S 1").ok());
  EXPECT_FALSE(parse_proc_stat("55 (comm)").ok());
  EXPECT_FALSE(parse_proc_stat("55 (comm) SS 1").ok());
  EXPECT_FALSE(parse_proc_stat("x (comm) S 1").ok());
}

TEST(ProcStat, AliveMeansPresentUnfinishedAndTheSameProcess) {
  test::FixtureRoot root;
  root.write("proc/55/stat", stat_line("55 (server: main)", 'S', 0, 987654));
  root.write("proc/56/stat", stat_line("56 (zombie)", 'Z', 0, 1000));
  root.write("proc/57/stat", stat_line("57 (exiting)", 'R', 0x4, 1000));
  EXPECT_TRUE(process_alive(root.paths(), 55));
  EXPECT_TRUE(process_alive(root.paths(), 55, 987654));
  EXPECT_FALSE(process_alive(root.paths(), 55, 1));  // the pid was reused
  EXPECT_FALSE(process_alive(root.paths(), 56));
  EXPECT_FALSE(process_alive(root.paths(), 57));
  EXPECT_FALSE(process_alive(root.paths(), 58));
  auto gone = read_proc_stat(root.paths(), 58);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code().value(), ESRCH);
  // The real kernel: this process lives, and a reaped child does not.
  EXPECT_TRUE(process_alive(HostPaths::system(), ::getpid()));
  auto self = read_proc_stat(HostPaths::system(), ::getpid());
  ASSERT_TRUE(self.ok());
  EXPECT_GT(self->start_time, 0u);
}

// Mount layouts as real hosts have them.
void v2_with_memory(const test::FixtureRoot& r) {
  r.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
}
void v1_memory(const test::FixtureRoot& r) {
  r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
}
void unified_beside(const test::FixtureRoot& r, const std::string& controllers) {
  r.write("sys/fs/cgroup/unified/cgroup.controllers", controllers);
}

TEST(MemoryCgroup, UnifiedWithTheMemoryControllerComesFirst) {
  test::FixtureRoot r;
  v2_with_memory(r);
  v1_memory(r);  // a directory named memory below a cgroup2 root is not a v1 hierarchy
  auto h = find_memory_hierarchy(r.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, CgroupVersion::v2);
  EXPECT_EQ(h->prefix, "");
  EXPECT_EQ(h->root, r.paths().cgroup);
  EXPECT_FALSE(h->hybrid);
}

TEST(MemoryCgroup, V1MemoryHierarchyThenHybrid) {
  test::FixtureRoot legacy;
  v1_memory(legacy);
  auto h = find_memory_hierarchy(legacy.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, CgroupVersion::v1);
  EXPECT_EQ(h->prefix, "memory");
  EXPECT_FALSE(h->hybrid);

  // This build machine: v1 memory, cgroup2 at unified/ without controllers.
  test::FixtureRoot hybrid;
  v1_memory(hybrid);
  unified_beside(hybrid, "\n");
  h = find_memory_hierarchy(hybrid.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, CgroupVersion::v1);
  EXPECT_TRUE(h->hybrid);

  // Hybrid with the memory controller on the cgroup2 side.
  test::FixtureRoot hybrid_v2;
  unified_beside(hybrid_v2, "memory pids\n");
  h = find_memory_hierarchy(hybrid_v2.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, CgroupVersion::v2);
  EXPECT_EQ(h->prefix, "unified");
  EXPECT_EQ(h->root, hybrid_v2.paths().cgroup / "unified");
  EXPECT_TRUE(h->hybrid);
}

TEST(MemoryCgroup, NoMemoryControllerSaysWhatToDo) {
  test::FixtureRoot r;
  r.write("sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
  unified_beside(r, "\n");
  auto h = find_memory_hierarchy(r.paths());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code().value(), ENOTSUP);
  EXPECT_NE(std::string(h.error().what()).find("memory controller"), std::string::npos);
}

TEST(MemoryCgroup, FindsTheProcessLineForEachVersion) {
  const std::string hybrid =
      "12:pids:/user.slice\n4:memory:/process_api/abc\n3:cpuset,cpu:/\n1:name=systemd:/x\n0::/x\n";
  EXPECT_EQ(*memory_cgroup_in(hybrid, CgroupVersion::v1), "/process_api/abc");
  EXPECT_EQ(*memory_cgroup_in(hybrid, CgroupVersion::v2), "/x");
  EXPECT_EQ(*memory_cgroup_in("5:cpu,memory,blkio:/a/b\n", CgroupVersion::v1), "/a/b");
  EXPECT_EQ(*memory_cgroup_in("0::/srv.slice/odd:name.service\n", CgroupVersion::v2), "/srv.slice/odd:name.service");
  EXPECT_EQ(*memory_cgroup_in("0::/\n", CgroupVersion::v2), "/");
  EXPECT_FALSE(memory_cgroup_in("0::/x\n", CgroupVersion::v1).ok());
  EXPECT_FALSE(memory_cgroup_in("4:memory:/a\n", CgroupVersion::v2).ok());
  EXPECT_FALSE(memory_cgroup_in("4:memoryx:/a\n", CgroupVersion::v1).ok());

  test::FixtureRoot r;
  v2_with_memory(r);
  r.write("proc/77/cgroup", "0::/system.slice/llama.service\n");
  r.write("proc/self/cgroup", "0::/agent.slice\n");
  auto h = find_memory_hierarchy(r.paths());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*memory_cgroup_of(r.paths(), *h, 77), "/system.slice/llama.service");
  EXPECT_EQ(*memory_cgroup_of(r.paths(), *h, 0), "/agent.slice");
  auto gone = memory_cgroup_of(r.paths(), *h, 78);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code().value(), ESRCH);
}

TEST(SystemdUnit, OneNormaliserForEveryAsker) {
  EXPECT_EQ(*normalize_unit_name("llama", {".service"}, "--unit"), "llama.service");
  EXPECT_EQ(*normalize_unit_name("llama.v2", {".service"}, "--unit"), "llama.v2.service");
  EXPECT_EQ(*normalize_unit_name("getty@tty1.service", {".service"}, "--unit"), "getty@tty1.service");
  EXPECT_EQ(*normalize_unit_name("user.slice", {".service", ".slice"}, "protect"), "user.slice");
  auto slice = normalize_unit_name("user.slice", {".service"}, "--unit");
  ASSERT_FALSE(slice.ok());
  EXPECT_NE(std::string(slice.error().what()).find("--unit"), std::string::npos);
  EXPECT_FALSE(normalize_unit_name("x.socket", {".service", ".slice"}, "protect").ok());
  EXPECT_FALSE(normalize_unit_name("a b", {".service"}, "--unit").ok());
  EXPECT_FALSE(normalize_unit_name("../etc", {".service"}, "--unit").ok());
  EXPECT_FALSE(normalize_unit_name("", {".service"}, "--unit").ok());
  EXPECT_FALSE(normalize_unit_name(std::string(300, 'a'), {".service"}, "--unit").ok());
}

TEST(PortAddress, OneParserForWindowsAndGuards) {
  auto a = parse_port_address("127.0.0.1:8080");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  auto v6 = parse_port_address("[::1]:9000");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text(), "[::1]:9000");
  for (const char* bad : {"8080", ":8080", "localhost:", "localhost:0", "localhost:70000", "localhost:80x"})
    EXPECT_FALSE(parse_port_address(bad).ok()) << bad;
}

TEST(MemInfo, OneTypeForEveryReader) {
  test::FixtureRoot root;
  root.meminfo(48 * 1024 * 1024, 20 * 1024 * 1024);
  auto m = read_meminfo(root.paths());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->total(), 48ull << 30);
  EXPECT_EQ(m->available(), 20ull << 30);
  MemInfo made = MemInfo::of(46ull << 30, 20ull << 30, 1ull << 30);
  EXPECT_EQ(made.total(), 46ull << 30);
  EXPECT_EQ(made.available(), 20ull << 30);
  EXPECT_EQ(made.free(), 1ull << 30);
}

TEST(Fd, ClosesOnceAndMoves) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    Fd a(raw);
    Fd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
    Fd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed when the last owner went
  EXPECT_EQ(errno, EBADF);
}

}  // namespace
}  // namespace spark
