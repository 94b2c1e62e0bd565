// BpfSkeleton owns a skeleton's lifetime: destroyed once, moved not copied, a failed load destroys
// what was opened and says why. A stand-in skeleton counts the calls (no BPF needed).
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "telemetry/bpf_skeleton.h"

using spark::telemetry::BpfSkeleton;

namespace spark {
namespace {

struct FakeSkel {
  int configured = 0;
};
int g_opened = 0, g_destroyed = 0, g_load_error = 0;
bool g_open_fails = false;

FakeSkel* fake_open() {
  if (g_open_fails) {
    errno = ENOMEM;
    return nullptr;
  }
  ++g_opened;
  return new FakeSkel;
}
int fake_load(FakeSkel*) { return g_load_error; }
void fake_destroy(FakeSkel* s) {
  ++g_destroyed;
  delete s;
}
using FakeSkeleton = BpfSkeleton<FakeSkel, fake_open, fake_load, fake_destroy>;

class BpfSkeletonTest : public ::testing::Test {
 protected:
  void SetUp() override { g_opened = g_destroyed = g_load_error = 0, g_open_fails = false; }
};

TEST_F(BpfSkeletonTest, LoadedConfiguredAndDestroyedOnceAfterMoves) {
  {
    auto r = FakeSkeleton::try_load("fake", [](FakeSkel& s) { ++s.configured; });
    ASSERT_TRUE(r.ok()) << r.error().what();
    FakeSkeleton a = std::move(r).value();
    EXPECT_EQ(a->configured, 1);
    FakeSkeleton b = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    FakeSkeleton c;
    c = std::move(b);
    EXPECT_EQ(g_destroyed, 0);
    c = FakeSkeleton();  // the held one goes now
    EXPECT_EQ(g_destroyed, 1);
    EXPECT_FALSE(c);
  }
  EXPECT_EQ(g_opened, 1);
  EXPECT_EQ(g_destroyed, 1);
}

TEST_F(BpfSkeletonTest, FailedLoadDestroysWhatWasOpenedAndSaysWhy) {
  g_load_error = -EPERM;
  auto r = FakeSkeleton::try_load("fake");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), EPERM);
  EXPECT_NE(std::string(r.error().what()).find("loading fake"), std::string::npos) << r.error().what();
  EXPECT_EQ(g_opened, 1);
  EXPECT_EQ(g_destroyed, 1);
}

TEST_F(BpfSkeletonTest, FailedOpenKeepsErrno) {
  g_open_fails = true;
  auto r = FakeSkeleton::open("fake");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code().value(), ENOMEM);
  EXPECT_NE(std::string(r.error().what()).find("opening the fake BPF object"), std::string::npos) << r.error().what();
  EXPECT_EQ(g_destroyed, 0);
}

}  // namespace
}  // namespace spark
