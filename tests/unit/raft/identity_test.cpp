// The identity file's text (identity.h) and its place in the storage folder.
#include "cluster/raft/identity.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cluster/raft/storage.h"

namespace zetian::cluster::raft {
namespace {

TEST(RaftIdentity, RoundTripsAndRefusesAnythingElse) {
  const Identity identity{"mx1", 0x3f2a0c9d11e87b45};
  const std::string text = encodeIdentity(identity);
  EXPECT_EQ(text, "zetian-raft-identity 1\nnode_id mx1\nraft_id 3f2a0c9d11e87b45\n");
  std::string error;
  auto back = decodeIdentity(text, &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->node_id, "mx1");
  EXPECT_EQ(back->raft_id, identity.raft_id);
  for (const std::string& bad : std::vector<std::string>{"", text.substr(0, text.size() - 5),
                                "zetian-raft-identity 2\nnode_id mx1\nraft_id 3f2a0c9d11e87b45\n",
                                "zetian-raft-identity 1\nnode_id mx1\nraft_id 3F2A0C9D11E87B45\n",
                                "zetian-raft-identity 1\nnode_id mx1\nraft_id 3f2a0c9d11e87b45 more\n",
                                "zetian-raft-identity 1\nnode_id mx1\nraft_id 0000000000000000\n",
                                "zetian-raft-identity 1\nnode_id mx1\nraft_id ffffffffffffffff\n"}) {
    error.clear();
    EXPECT_FALSE(decodeIdentity(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(RaftIdentity, DrawnIdsAreNeverReserved) {
  for (int i = 0; i < 1000; ++i) {
    const NodeId id = drawRaftId();
    EXPECT_NE(id, kNoNode);
    EXPECT_NE(id, kOutsideVoter);
  }
}

TEST(RaftIdentity, TheStorageKeepsTheFileBesideTheLogWithoutWarning) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("raft-identity-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    OpenedStorage opened = Storage::open(dir);
    EXPECT_FALSE(opened.storage->readIdentity());
    opened.storage->saveIdentity(encodeIdentity({"mx2", 42}));
  }
  OpenedStorage reopened = Storage::open(dir);
  EXPECT_TRUE(reopened.recovered.warnings.empty());
  ASSERT_TRUE(reopened.storage->readIdentity());
  EXPECT_EQ(*reopened.storage->readIdentity(), encodeIdentity({"mx2", 42}));
  EXPECT_FALSE(std::filesystem::exists(dir / (std::string(kIdentityFileName) + ".tmp")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace zetian::cluster::raft
