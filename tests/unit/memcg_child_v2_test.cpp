// Issue 11, defect 4: the integration tests' memory cgroup helper on cgroup v2, on fixture trees
// (the kernel's rules are not enforced there: what is checked is which files are written).
#include <gtest/gtest.h>

#include "integration/memcg_child.h"
#include "support/fixture.h"

namespace spark::test {
namespace {

TEST(MemcgChildV2, MovesTheTestsIntoALeafThenEnablesMemoryForChildren) {
  FixtureRoot root;
  root.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.controllers", "memory pids\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.subtree_control", "\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.procs", "4242\n");
  root.write("sys/fs/cgroup/t.scope/spark-tune-tests/cgroup.procs", "");
  root.write("proc/self/cgroup", "0::/t.scope\n");
  EXPECT_TRUE(memory_is_v2(root.paths()));
  EXPECT_EQ(own_v2_cgroup(root.paths()), "/t.scope");
  auto d = v2_delegation_at(root.paths(), "/t.scope");
  ASSERT_TRUE(d.why.empty()) << d.why;
  EXPECT_EQ(d.base, "/t.scope");
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/t.scope/spark-tune-tests/cgroup.procs")), "4242");
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/t.scope/cgroup.subtree_control")), "+memory");

  // A process already in the leaf (a sibling test binary moved it) shares the same base.
  auto again = v2_delegation_at(root.paths(), "/t.scope/spark-tune-tests");
  EXPECT_TRUE(again.why.empty()) << again.why;
  EXPECT_EQ(again.base, "/t.scope");
}

TEST(MemcgChildV2, SaysWhyWhenTheControllerDoesNotReachTheTests) {
  FixtureRoot root;
  root.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.controllers", "pids\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.subtree_control", "\n");
  root.write("sys/fs/cgroup/t.scope/cgroup.procs", "4242\n");
  auto d = v2_delegation_at(root.paths(), "/t.scope");
  EXPECT_NE(d.why.find("Delegate=yes"), std::string::npos) << d.why;
  EXPECT_EQ(trim(root.read("sys/fs/cgroup/t.scope/cgroup.procs")), "4242") << "nothing may move then";
  EXPECT_FALSE(fs::exists(root.root() / "sys/fs/cgroup/t.scope/spark-tune-tests"));
}

TEST(MemcgChildV2, AV1MemoryHierarchyIsNotV2) {
  FixtureRoot root;
  // A hybrid host: the v1 memory hierarchy, cgroup2 (with memory listed) at unified/.
  root.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  root.write("sys/fs/cgroup/unified/cgroup.controllers", "cpu memory\n");
  root.write("proc/self/cgroup", "4:memory:/process_api/abc\n0::/\n");
  EXPECT_FALSE(memory_is_v2(root.paths()));
  EXPECT_EQ(own_memory_cgroup(root.paths()), "/process_api/abc");
}

}  // namespace
}  // namespace spark::test
