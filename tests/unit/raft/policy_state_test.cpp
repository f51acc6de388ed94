// The replicated policy's state machine (cluster/raft/policy_state.h): what each kind of
// committed entry does to the state, and the snapshot bytes, which restore only as
// encode() writes them.
#include "cluster/raft/policy_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "conf/policy.h"

namespace zetian::cluster::raft {
namespace {

std::string policyText(int limit) {
  return "[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = " + std::to_string(limit) +
         "\nperiod = \"1m\"\n";
}

conf::PolicyDocument doc(std::uint64_t version, std::string text, std::string proposer = "mx1") {
  return conf::PolicyDocument{version, std::move(proposer), 1'764'528'000'000ull + version, std::move(text)};
}

Entry normal(Index index, std::string data) { return Entry{3, index, EntryType::normal, std::move(data)}; }
Entry policyEntry(Index index, const conf::PolicyDocument& d) { return normal(index, conf::encodePolicyDocument(d)); }
Entry nameEntry(Index index, NodeId id, std::string name) {
  return normal(index, encodeMemberName(MemberName{id, std::move(name)}));
}

// Everything the state exposes, compared as a whole.
void expectSameState(const PolicyState& a, const PolicyState& b) {
  EXPECT_EQ(a.appliedIndex(), b.appliedIndex());
  EXPECT_EQ(a.current(), b.current());
  EXPECT_EQ(a.version(), b.version());
  ASSERT_EQ(a.history().size(), b.history().size());
  for (std::size_t i = 0; i < a.history().size(); ++i) {
    const PolicyHistoryItem& x = a.history()[i];
    const PolicyHistoryItem& y = b.history()[i];
    EXPECT_EQ(x.version, y.version);
    EXPECT_EQ(x.proposer, y.proposer);
    EXPECT_EQ(x.time_unix_ms, y.time_unix_ms);
    EXPECT_EQ(x.index, y.index);
    EXPECT_EQ(x.text_bytes, y.text_bytes);
  }
  EXPECT_EQ(a.names(), b.names());
  for (const auto& [id, name] : a.names()) EXPECT_EQ(a.idOf(name), b.idOf(name)) << name;
  EXPECT_EQ(a.encode(), b.encode());
}

// A state with two policies, three names (one name under two ids) and an entry of each
// other kind, applied up to index 9.
PolicyState richState() {
  PolicyState s;
  EXPECT_EQ(s.apply(Entry{1, 1, EntryType::no_op, ""}).kind, ApplyKind::none);
  EXPECT_EQ(s.apply(nameEntry(2, 7, "mx1")).kind, ApplyKind::member_named);
  EXPECT_EQ(s.apply(policyEntry(3, doc(1, policyText(10)))).kind, ApplyKind::policy_applied);
  EXPECT_EQ(s.apply(nameEntry(4, 9, "mx2.example")).kind, ApplyKind::member_named);
  EXPECT_EQ(s.apply(Entry{1, 5, EntryType::config, "add-learner 12"}).kind, ApplyKind::none);
  EXPECT_EQ(s.apply(policyEntry(6, doc(2, policyText(20), "mx2.example"))).kind, ApplyKind::policy_applied);
  EXPECT_EQ(s.apply(nameEntry(7, 12, "mx1")).kind, ApplyKind::member_named);
  EXPECT_EQ(s.apply(policyEntry(8, doc(5, policyText(30)))).kind, ApplyKind::policy_conflict);
  EXPECT_EQ(s.apply(normal(9, "junk")).kind, ApplyKind::malformed);
  return s;
}

// ZPST written field by field, independently of encode(), for the layout test and for
// crafting states encode() would never write.
struct RawItem {
  std::uint64_t version, time, index, text_bytes;
  std::string proposer;
};
struct RawName {
  std::uint64_t id, index;
  std::string name;
};
void le(std::string& out, std::uint64_t v, int width) {
  for (int i = 0; i < width; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
std::string rawState(const std::string& document, const std::vector<RawItem>& items, const std::vector<RawName>& names) {
  std::string out = std::string("ZPST\x01", 5);
  le(out, document.size(), 4);
  out += document;
  le(out, items.size(), 4);
  for (const RawItem& i : items) {
    le(out, i.version, 8);
    le(out, i.time, 8);
    le(out, i.index, 8);
    le(out, i.text_bytes, 8);
    le(out, i.proposer.size(), 1);
    out += i.proposer;
  }
  le(out, names.size(), 4);
  for (const RawName& n : names) {
    le(out, n.id, 8);
    le(out, n.index, 8);
    le(out, n.name.size(), 1);
    out += n.name;
  }
  return out;
}

std::string refusal(std::string_view bytes, Index applied) {
  std::string error;
  const std::optional<PolicyState> s = PolicyState::restore(bytes, applied, &error);
  EXPECT_FALSE(s.has_value());
  EXPECT_NE(error.find("not a policy state"), std::string::npos) << error;
  return error;
}

TEST(MemberName, RoundTripsWithTheDocumentedLayout) {
  const std::string bytes = encodeMemberName(MemberName{0x0102, "mx1.example"});
  EXPECT_EQ(bytes, std::string("ZMEM\x01", 5) + std::string("\x02\x01\0\0\0\0\0\0", 8) + "\x0bmx1.example");
  EXPECT_EQ(decodeMemberName(bytes), (MemberName{0x0102, "mx1.example"}));
  const MemberName longest{~0ull, std::string(64, '-')};
  EXPECT_EQ(decodeMemberName(encodeMemberName(longest)), longest);
}

TEST(MemberName, EncodeRefusesWhatDecodeWouldRefuse) {
  EXPECT_THROW(encodeMemberName(MemberName{0, "mx1"}), std::invalid_argument);
  EXPECT_THROW(encodeMemberName(MemberName{1, ""}), std::invalid_argument);
  EXPECT_THROW(encodeMemberName(MemberName{1, std::string(65, 'a')}), std::invalid_argument);
  EXPECT_THROW(encodeMemberName(MemberName{1, "mx 1"}), std::invalid_argument);
  EXPECT_THROW(encodeMemberName(MemberName{1, "mx1/"}), std::invalid_argument);
}

TEST(MemberName, DecodeRefusesEveryCutAndEveryOtherByte) {
  const std::string good = encodeMemberName(MemberName{5, "mx1"});
  for (std::size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(decodeMemberName(good.substr(0, n))) << n;
  EXPECT_FALSE(decodeMemberName(good + "x"));
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_FALSE(decodeMemberName(bad));
  bad = good;
  bad[4] = 2;  // format
  EXPECT_FALSE(decodeMemberName(bad));
  bad = good;
  bad[5] = 0;  // raft id 5 -> 0
  EXPECT_FALSE(decodeMemberName(bad));
  bad = good;
  bad[13] = 2;  // the name's length, one short of its bytes
  EXPECT_FALSE(decodeMemberName(bad));
  bad = good;
  bad[15] = ' ';
  EXPECT_FALSE(decodeMemberName(bad));
  EXPECT_FALSE(decodeMemberName(std::string("ZMEM\x01", 5) + std::string("\x05\0\0\0\0\0\0\0", 8) + std::string(1, '\0')));
}

TEST(PolicyState, PoliciesApplyInVersionOrderAndAreRecorded) {
  PolicyState s;
  EXPECT_EQ(s.version(), 0u);
  EXPECT_FALSE(s.current().has_value());
  EXPECT_TRUE(s.history().empty());

  const ApplyResult first = s.apply(policyEntry(3, doc(1, policyText(10))));
  EXPECT_EQ(first, (ApplyResult{ApplyKind::policy_applied, 1, ""}));
  const ApplyResult second = s.apply(policyEntry(4, doc(2, policyText(20), "mx2")));
  EXPECT_EQ(second, (ApplyResult{ApplyKind::policy_applied, 2, ""}));

  EXPECT_EQ(s.version(), 2u);
  EXPECT_EQ(s.appliedIndex(), 4u);
  ASSERT_TRUE(s.current().has_value());
  EXPECT_EQ(*s.current(), doc(2, policyText(20), "mx2"));
  ASSERT_EQ(s.history().size(), 2u);
  EXPECT_EQ(s.history()[0].version, 1u);
  EXPECT_EQ(s.history()[0].proposer, "mx1");
  EXPECT_EQ(s.history()[0].time_unix_ms, 1'764'528'000'001ull);
  EXPECT_EQ(s.history()[0].index, 3u);
  EXPECT_EQ(s.history()[0].text_bytes, policyText(10).size());
  EXPECT_EQ(s.history()[1].version, 2u);
  EXPECT_EQ(s.history()[1].proposer, "mx2");
  EXPECT_EQ(s.history()[1].index, 4u);
}

TEST(PolicyState, AVersionOtherThanCurrentPlusOneIsAConflictAndChangesNothing) {
  PolicyState s;
  s.apply(policyEntry(1, doc(1, policyText(10))));
  const std::string before = s.encode();

  EXPECT_EQ(s.apply(policyEntry(2, doc(3, policyText(30)))),
            (ApplyResult{ApplyKind::policy_conflict, 3, "version 3 proposed, 1 is current"}));
  // Two proposals made against version 1: the second to commit loses.
  EXPECT_EQ(s.apply(policyEntry(3, doc(2, policyText(20)))).kind, ApplyKind::policy_applied);
  EXPECT_EQ(s.apply(policyEntry(4, doc(2, policyText(21)))),
            (ApplyResult{ApplyKind::policy_conflict, 2, "version 2 proposed, 2 is current"}));
  EXPECT_EQ(s.current()->text, policyText(20));
  EXPECT_EQ(s.appliedIndex(), 4u);
  EXPECT_EQ(s.history().size(), 2u);

  PolicyState empty;
  EXPECT_EQ(empty.apply(policyEntry(1, doc(2, policyText(20)))).error, "version 2 proposed, 0 is current");
  EXPECT_EQ(empty.version(), 0u);
  EXPECT_NE(before, s.encode());
}

TEST(PolicyState, AnInvalidPolicyIsSkippedWithTheLoadersErrors) {
  PolicyState s;
  s.apply(policyEntry(1, doc(1, policyText(10))));
  const std::string bad_text = "[ratelimit]\nmax_keys = \"many\"\n\n[node]\nid = \"x\"\n";
  const ApplyResult r = s.apply(policyEntry(2, doc(2, bad_text)));
  EXPECT_EQ(r.kind, ApplyKind::policy_invalid);
  EXPECT_EQ(r.version, 2u);
  EXPECT_EQ(r.error.rfind("<policy version 2>:2:", 0), 0u) << r.error;
  EXPECT_NE(r.error.find("\n<policy version 2>:4:"), std::string::npos) << r.error;
  EXPECT_EQ(s.version(), 1u);
  EXPECT_EQ(s.current()->text, policyText(10));
  EXPECT_EQ(s.history().size(), 1u);
  EXPECT_EQ(s.appliedIndex(), 2u);
  // The version is still free for a valid document.
  EXPECT_EQ(s.apply(policyEntry(3, doc(2, policyText(20)))).kind, ApplyKind::policy_applied);
}

TEST(PolicyState, APolicyIsJudgedByItsTextAloneNotByTheNodesSettings) {
  // store = "redis" needs a [redis] section on the node that enforces it: the entry
  // applies everywhere, and the engine decides whether this node can use it.
  const std::string text = policyText(10) + "store = \"redis\"\n";
  ASSERT_FALSE(conf::loadPolicy(text, "p", conf::PolicyLoadOptions{.node_has_redis = false}).ok());
  PolicyState s;
  EXPECT_EQ(s.apply(policyEntry(1, doc(1, text))).kind, ApplyKind::policy_applied);
}

TEST(PolicyState, ManyErrorsAreCutToTheFirstLines) {
  std::string text;
  for (int i = 0; i < 15; ++i) text += "[t" + std::to_string(i) + "]\n";
  const ApplyResult r = PolicyState().apply(policyEntry(1, doc(1, text)));
  ASSERT_EQ(r.kind, ApplyKind::policy_invalid);
  EXPECT_EQ(std::count(r.error.begin(), r.error.end(), '\n'), 10) << r.error;
  EXPECT_NE(r.error.find("(and 5 more errors)"), std::string::npos) << r.error;
}

TEST(PolicyState, OtherEntriesDoNothingButAdvanceTheAppliedIndex) {
  PolicyState s;
  s.apply(policyEntry(1, doc(1, policyText(10))));
  const std::string before = s.encode();
  EXPECT_EQ(s.apply(Entry{2, 2, EntryType::no_op, ""}), ApplyResult{});
  EXPECT_EQ(s.apply(Entry{2, 3, EntryType::config, "add-voter 4"}), ApplyResult{});
  // A config entry's data is the core's: never read as a policy even when it looks like one.
  EXPECT_EQ(s.apply(Entry{2, 4, EntryType::config, conf::encodePolicyDocument(doc(2, policyText(2)))}), ApplyResult{});
  EXPECT_EQ(s.apply(normal(5, "")), ApplyResult{});
  EXPECT_EQ(s.appliedIndex(), 5u);
  EXPECT_EQ(s.encode(), before);
}

TEST(PolicyState, MalformedEntriesAreSkippedWithAReason) {
  PolicyState s;
  s.apply(policyEntry(1, doc(1, policyText(10))));
  s.apply(nameEntry(2, 4, "mx1"));
  const std::string before = s.encode();

  const ApplyResult junk = s.apply(normal(3, "hello"));
  EXPECT_EQ(junk.kind, ApplyKind::malformed);
  EXPECT_NE(junk.error.find("neither a policy document"), std::string::npos) << junk.error;
  const std::string document = conf::encodePolicyDocument(doc(2, policyText(20)));
  const ApplyResult cut = s.apply(normal(4, document.substr(0, document.size() - 1)));
  EXPECT_EQ(cut.kind, ApplyKind::malformed);
  EXPECT_NE(cut.error.find("not a policy document"), std::string::npos) << cut.error;
  const std::string name = encodeMemberName(MemberName{5, "mx2"});
  const ApplyResult bad_name = s.apply(normal(5, name + "!"));
  EXPECT_EQ(bad_name.kind, ApplyKind::malformed);
  EXPECT_NE(bad_name.error.find("1 bytes after the name"), std::string::npos) << bad_name.error;
  EXPECT_EQ(s.apply(normal(6, "ZMEM")).kind, ApplyKind::malformed);
  EXPECT_EQ(s.apply(normal(7, "ZPOL")).kind, ApplyKind::malformed);

  EXPECT_EQ(s.appliedIndex(), 7u);
  EXPECT_EQ(s.encode(), before);
  EXPECT_EQ(s.version(), 1u);
  EXPECT_FALSE(s.nameOf(5).has_value());
}

TEST(PolicyState, AnIndexAtOrBelowTheAppliedOneIsACallerBug) {
  PolicyState s;
  EXPECT_THROW(s.apply(normal(0, "")), std::logic_error);
  s.apply(policyEntry(3, doc(1, policyText(10))));
  const std::string before = s.encode();
  EXPECT_THROW(s.apply(policyEntry(3, doc(2, policyText(20)))), std::logic_error);
  EXPECT_THROW(s.apply(nameEntry(2, 1, "mx1")), std::logic_error);
  EXPECT_EQ(s.appliedIndex(), 3u);
  EXPECT_EQ(s.encode(), before);
}

TEST(PolicyState, NamesMapBothWaysAndTheNewestRecordWins) {
  PolicyState s;
  EXPECT_FALSE(s.nameOf(7).has_value());
  EXPECT_FALSE(s.idOf("mx1").has_value());
  EXPECT_EQ(s.apply(nameEntry(1, 7, "mx1")), (ApplyResult{ApplyKind::member_named, 0, ""}));
  s.apply(nameEntry(2, 3, "mx2"));
  EXPECT_EQ(s.nameOf(7), "mx1");
  EXPECT_EQ(s.idOf("mx1"), NodeId{7});
  EXPECT_EQ(s.idOf("mx2"), NodeId{3});

  // mx1 removed and rejoined under a lower id: the newer record wins, not the larger id.
  s.apply(nameEntry(3, 2, "mx1"));
  EXPECT_EQ(s.idOf("mx1"), NodeId{2});
  EXPECT_EQ(s.nameOf(7), "mx1");
  EXPECT_EQ(s.nameOf(2), "mx1");
  // Recording an id again makes it the newest for its name.
  s.apply(nameEntry(4, 7, "mx1"));
  EXPECT_EQ(s.idOf("mx1"), NodeId{7});
  // A later record for an id replaces its name.
  s.apply(nameEntry(5, 3, "mx3"));
  EXPECT_EQ(s.nameOf(3), "mx3");
  EXPECT_FALSE(s.idOf("mx2").has_value());
  EXPECT_EQ(s.names(), (std::map<NodeId, std::string>{{2, "mx1"}, {3, "mx3"}, {7, "mx1"}}));
  EXPECT_FALSE(s.idOf("mx").has_value());
}

TEST(PolicyState, HistoryKeepsTheNewestVersions) {
  PolicyState s;
  const std::size_t total = kMaxHistory + 5;
  for (std::size_t v = 1; v <= total; ++v) {
    ASSERT_EQ(s.apply(policyEntry(10 + v, doc(v, policyText(static_cast<int>(v))))).kind, ApplyKind::policy_applied);
  }
  EXPECT_EQ(s.version(), total);
  ASSERT_EQ(s.history().size(), kMaxHistory);
  EXPECT_EQ(s.history().front().version, 6u);
  EXPECT_EQ(s.history().front().index, 16u);
  EXPECT_EQ(s.history().back().version, total);
  EXPECT_EQ(s.history().back().index, 10 + total);

  std::string error;
  const auto back = PolicyState::restore(s.encode(), s.appliedIndex(), &error);
  ASSERT_TRUE(back.has_value()) << error;
  expectSameState(*back, s);
}

TEST(PolicyState, EncodeFollowsTheDocumentedLayout) {
  PolicyState s;
  s.apply(nameEntry(1, 7, "mx1"));
  const conf::PolicyDocument d = doc(1, policyText(10));
  s.apply(policyEntry(2, d));
  const std::string document = conf::encodePolicyDocument(d);
  EXPECT_EQ(s.encode(), rawState(document, {{1, d.time_unix_ms, 2, d.text.size(), "mx1"}}, {{7, 1, "mx1"}}));
  EXPECT_EQ(PolicyState().encode(), rawState("", {}, {}));
}

TEST(PolicyState, RestoreGivesBackTheSameStateWhichAppliesAlike) {
  PolicyState empty;
  std::string error;
  auto restored = PolicyState::restore(empty.encode(), 0, &error);
  ASSERT_TRUE(restored.has_value()) << error;
  expectSameState(*restored, empty);
  // A snapshot of an empty state may stand for applied no-ops and config entries.
  restored = PolicyState::restore(empty.encode(), 42, &error);
  ASSERT_TRUE(restored.has_value()) << error;
  EXPECT_EQ(restored->appliedIndex(), 42u);

  PolicyState s = richState();
  restored = PolicyState::restore(s.encode(), s.appliedIndex(), &error);
  ASSERT_TRUE(restored.has_value()) << error;
  expectSameState(*restored, s);
  EXPECT_EQ(restored->idOf("mx1"), NodeId{12});
  // Restored at a later index (entries after the last record that changed nothing).
  auto later = PolicyState::restore(s.encode(), s.appliedIndex() + 5, &error);
  ASSERT_TRUE(later.has_value()) << error;
  EXPECT_EQ(later->appliedIndex(), s.appliedIndex() + 5);

  const std::vector<Entry> next = {policyEntry(10, doc(3, policyText(40))), nameEntry(11, 7, "mx1"),
                                   policyEntry(12, doc(3, policyText(41)))};
  for (const Entry& e : next) EXPECT_EQ(s.apply(e), restored->apply(e));
  expectSameState(*restored, s);
  EXPECT_EQ(restored->idOf("mx1"), NodeId{7});
}

TEST(PolicyState, RestoreRefusesEveryCutAndTrailingBytes) {
  const PolicyState s = richState();
  const std::string bytes = s.encode();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    // A copy of exactly n bytes, so a read past the end is a sanitizer error.
    const std::string cut = bytes.substr(0, n);
    refusal(cut, s.appliedIndex());
  }
  EXPECT_NE(refusal(bytes + '\0', s.appliedIndex()).find("1 bytes after the names"), std::string::npos);
  // The error pointer is optional.
  EXPECT_FALSE(PolicyState::restore(bytes.substr(1), s.appliedIndex(), nullptr).has_value());
}

// Whatever byte is damaged, restore either refuses or reads a state that encodes to
// exactly the damaged bytes (a changed time or name character): never a state whose
// snapshot would differ from the bytes it came from.
TEST(PolicyState, RestoreAcceptsOnlyCanonicalBytes) {
  const PolicyState s = richState();
  const std::string bytes = s.encode();
  std::size_t accepted = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    for (unsigned mask : {0x01u, 0x20u, 0x80u, 0xFFu}) {
      std::string damaged = bytes;
      damaged[at] = static_cast<char>(static_cast<unsigned char>(damaged[at]) ^ mask);
      const auto back = PolicyState::restore(damaged, s.appliedIndex(), nullptr);
      if (!back) continue;
      ++accepted;
      EXPECT_EQ(back->encode(), damaged) << "byte " << at << " ^ " << mask;
    }
  }
  // Times, characters of names and of the policy text can change; counts, lengths,
  // versions and indexes cannot.
  EXPECT_GT(accepted, 0u);
  EXPECT_LT(accepted, 4 * bytes.size());
}

TEST(PolicyState, RestoreRefusesAnAppliedIndexBeforeTheRecords) {
  const PolicyState s = richState();  // the last record is at index 7
  EXPECT_TRUE(PolicyState::restore(s.encode(), 7, nullptr).has_value());
  EXPECT_NE(refusal(s.encode(), 6).find("past the applied index"), std::string::npos);
}

TEST(PolicyState, RestoreRefusesStatesApplyCouldNotReach) {
  const conf::PolicyDocument d1 = doc(1, policyText(10));
  const conf::PolicyDocument d2 = doc(2, policyText(20), "mx2");
  const std::string doc2 = conf::encodePolicyDocument(d2);
  const RawItem i1{1, d1.time_unix_ms, 3, d1.text.size(), "mx1"};
  const RawItem i2{2, d2.time_unix_ms, 5, d2.text.size(), "mx2"};
  const std::vector<RawName> names = {{4, 1, "mx1"}, {9, 6, "mx2"}};
  ASSERT_TRUE(PolicyState::restore(rawState(doc2, {i1, i2}, names), 6, nullptr).has_value());

  auto refused = [](const std::string& bytes, std::string_view why) {
    const std::string error = refusal(bytes, 6);
    EXPECT_NE(error.find(why), std::string::npos) << error;
  };
  std::string bad = rawState(doc2, {i1, i2}, names);
  bad[0] = 'z';
  refused(bad, "does not start with \"ZPST\"");
  bad = rawState(doc2, {i1, i2}, names);
  bad[4] = 2;
  refused(bad, "format 2");
  refused(rawState(doc2.substr(0, doc2.size() - 1), {i1, i2}, names), "its current policy is not a policy document");

  // The history must be exactly the versions up to the current one.
  refused(rawState(doc2, {i2}, names), "1 history items for policy version 2 (expected 2)");
  refused(rawState("", {i1}, names), "1 history items for policy version 0 (expected 0)");
  refused(rawState(doc2, {i2, i1}, names), "version 2 out of sequence");
  refused(rawState(doc2, {i1, {2, d2.time_unix_ms, 3, d2.text.size(), "mx2"}}, names), "log index 3 out of order");
  refused(rawState(doc2, {{1, 0, 0, 10, "mx1"}, i2}, names), "log index 0");
  refused(rawState(doc2, {i1, {2, d2.time_unix_ms, 7, d2.text.size(), "mx2"}}, names), "past the applied index 6");
  refused(rawState(doc2, {{1, 0, 3, 10, "mx 1"}, i2}, names), "a proposer that is not a node id");
  refused(rawState(doc2, {{1, 0, 3, (1u << 20) + 1, "mx1"}, i2}, names), "larger than the loader's limit");
  refused(rawState(doc2, {i1, {2, d2.time_unix_ms, 5, d2.text.size(), "mx1"}}, names), "not the current policy");
  refused(rawState(doc2, {i1, {2, 0, 5, d2.text.size(), "mx2"}}, names), "not the current policy");
  refused(rawState(doc2, {i1, {2, d2.time_unix_ms, 5, 1, "mx2"}}, names), "not the current policy");

  // Names: ids ascending and not 0, each at an index of its own, no later than applied.
  refused(rawState(doc2, {i1, i2}, {{9, 6, "mx2"}, {4, 1, "mx1"}}), "raft id 4 is 0 or out of order");
  refused(rawState(doc2, {i1, i2}, {{4, 1, "mx1"}, {4, 6, "mx2"}}), "raft id 4 is 0 or out of order");
  refused(rawState(doc2, {i1, i2}, {{0, 1, "mx1"}}), "raft id 0");
  refused(rawState(doc2, {i1, i2}, {{4, 3, "mx1"}}), "holds another record");
  refused(rawState(doc2, {i1, i2}, {{4, 1, "mx1"}, {9, 1, "mx2"}}), "holds another record");
  refused(rawState(doc2, {i1, i2}, {{4, 0, "mx1"}}), "log index 0");
  refused(rawState(doc2, {i1, i2}, {{4, 7, "mx1"}}), "past the applied index");
  refused(rawState(doc2, {i1, i2}, {{4, 1, std::string(65, 'a')}}), "not a node id");
  refused(rawState(doc2, {i1, i2}, {{4, 1, "mx1\n"}}), "not a node id");

  // A count that the bytes left cannot hold is refused before anything is reserved.
  bad = rawState("", {}, {});
  bad[bad.size() - 1] = '\xff';
  refused(bad, "the names are cut short");
}

// The seeds of fuzz_policy_state named snapshot_* start from a snapshot restore()
// accepts ([u8 applied][u32 LE length][bytes], see the target), so the fuzzer begins
// from real states.
TEST(PolicyState, EveryFuzzSeedSnapshotRestores) {
  const std::filesystem::path dir = std::filesystem::path(ZETIAN_SOURCE_DIR) / "tests/fuzz/corpus/policy_state";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.path().filename().string().starts_with("snapshot_")) continue;
    SCOPED_TRACE(entry.path().string());
    ++files;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    ASSERT_GE(bytes.size(), 5u);
    std::size_t length = 0;
    for (int i = 4; i >= 1; --i) length = (length << 8) | static_cast<unsigned char>(bytes[i]);
    ASSERT_LE(5 + length, bytes.size());
    std::string error;
    EXPECT_TRUE(PolicyState::restore(bytes.substr(5, length), static_cast<unsigned char>(bytes[0]), &error)) << error;
  }
  EXPECT_GE(files, 2u);
}

TEST(PolicyState, ApplyKindsHaveNames) {
  EXPECT_EQ(applyKindName(ApplyKind::none), "none");
  EXPECT_EQ(applyKindName(ApplyKind::policy_applied), "policy_applied");
  EXPECT_EQ(applyKindName(ApplyKind::policy_conflict), "policy_conflict");
  EXPECT_EQ(applyKindName(ApplyKind::policy_invalid), "policy_invalid");
  EXPECT_EQ(applyKindName(ApplyKind::member_named), "member_named");
  EXPECT_EQ(applyKindName(ApplyKind::malformed), "malformed");
}

}  // namespace
}  // namespace zetian::cluster::raft
