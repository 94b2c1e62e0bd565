#include <gtest/gtest.h>

#include "daemon/agent.h"
#include "daemon/privileges.h"
#include "daemon/protocol.h"
#include "daemon/service.h"

namespace spark {
namespace {

TEST(AuthorizePeer, RootGroupMembersOnly) {
  using daemon::authorize_peer;
  EXPECT_TRUE(authorize_peer({1, 0, 0}, {}, std::nullopt).ok());
  EXPECT_TRUE(authorize_peer({1, 1000, 990}, {}, gid_t{990}).ok());         // primary group
  EXPECT_TRUE(authorize_peer({1, 1000, 1000}, {4, 990}, gid_t{990}).ok());  // supplementary
  auto refused = authorize_peer({1, 1000, 1000}, {4, 27}, gid_t{990});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code().value(), EACCES);
  EXPECT_FALSE(authorize_peer({1, 65534, 65534}, {}, std::nullopt).ok());  // no group on this host
}

TEST(Protocol, ErrorsSurviveTheWire) {
  Error e = sys_error(ENOENT, "no window 'w9'");
  Error back = daemon::error_from_json(daemon::error_to_json(e));
  EXPECT_EQ(back.code().value(), ENOENT);
  EXPECT_STREQ(back.what(), e.what());
}

}  // namespace
}  // namespace spark
