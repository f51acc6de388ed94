// Scenario tests for the Raft core: one scenario per file in testdata/, in the manner of
// etcd's datadriven tests. A file is a list of blocks:
//
//   # comments and blank lines between blocks are kept as they are
//   command arg key=value
//   ----
//   expected output (never blank lines; "ok" when the command prints nothing)
//
// Each command drives a Network (network.h); its output must match the block's.
// ZETIAN_RAFT_REWRITE=1 rewrites the files with the actual output instead (then read
// the diff: the output is the specification).
//
// Commands:
//   add-nodes N [pre-vote=true] [check-quorum=true] [election=10] [heartbeat=1]
//               [max-append=64] [max-inflight=256] [seed=0]
//                               nodes 1..N, all voters
//   campaign ID                 start an election on ID now
//   propose ID DATA             a client command at ID
//   add-node ID                 a new node, empty, with the cluster's initial membership
//                               (it learns its place from the log it receives)
//   conf-change ID CHANGE NODE  propose a membership change at ID; CHANGE is add-voter,
//                               add-learner, promote or remove
//   membership ID               the voters and learners in force at ID
//   transfer-leader ID TARGET   ask leader ID to hand over to TARGET
//   read-index ID CONTEXT       a linearizable read at ID (its ReadState shows as
//                               "read CONTEXT at index N" when a Ready releases it)
//   process-ready ID...         handle each node's Ready (persist, send, apply, advance)
//   deliver-msgs ID...          step the messages waiting for each node
//   stabilize                   both, on every node, until nothing moves
//   tick ID [N]                 N ticks (default 1) on ID
//   tick-heartbeat ID...        heartbeat_ticks ticks on each
//   tick-election ID...         election_ticks ticks on each (the base timeout t)
//   tick-until-campaign         tick every live node, a round at a time, until one
//                               starts an election (at most 100 rounds)
//   partition A B / C ...       drop messages between groups; unlisted nodes are alone
//   isolate ID / heal
//   crash ID / restart ID       restart keeps only what the node's Readies wrote
//   raft-state                  one line per node
//   raft-log ID                 the node's log, commit, applied, stable
//   progress ID                 the leader's view of each voter
//   compact ID [INDEX]          the application snapshots ID at INDEX (default: its
//                               applied index); the snapshot's data is the state machine
//   state-machine ID            what ID's state machine holds (one applied entry a line)
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "tests/unit/raft/network.h"

namespace zetian::cluster::raft::testing {
namespace {

namespace fs = std::filesystem;

struct Block {
  std::vector<std::string> preamble;  // comments and blank lines before the command
  std::string command;
  int line = 0;
  std::string expected;
};

struct Script {
  std::vector<Block> blocks;
  std::vector<std::string> trailer;
};

Script parse(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  Script script;
  Block block;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') {
      block.preamble.push_back(line);
      continue;
    }
    block.command = line;
    block.line = number;
    if (!std::getline(in, line) || line != "----") {
      throw std::runtime_error(path.string() + ":" + std::to_string(number + 1) + ": expected ----");
    }
    ++number;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty()) break;
      block.expected += line + "\n";
    }
    script.blocks.push_back(std::move(block));
    block = Block{};
  }
  script.trailer = std::move(block.preamble);
  return script;
}

void write(const fs::path& path, const Script& script, const std::vector<std::string>& outputs) {
  std::ofstream out(path, std::ios::trunc);
  for (std::size_t i = 0; i < script.blocks.size(); ++i) {
    const Block& b = script.blocks[i];
    for (const auto& line : b.preamble) out << line << "\n";
    out << b.command << "\n----\n" << outputs[i] << "\n";
  }
  for (const auto& line : script.trailer) out << line << "\n";
}

std::vector<std::string> split(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

NodeId parseId(const std::string& word) {
  std::size_t used = 0;
  unsigned long long v = std::stoull(word, &used);
  if (used != word.size() || v == 0) throw std::invalid_argument("not a node id: " + word);
  return v;
}

bool parseBool(const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  throw std::invalid_argument("not a boolean: " + value);
}

class Interpreter {
 public:
  std::string run(const std::string& command) {
    std::vector<std::string> words = split(command);
    const std::string verb = words.front();
    std::vector<std::string> args(words.begin() + 1, words.end());
    std::string out;
    if (verb == "add-nodes") {
      addNodes(args);
    } else if (verb == "campaign") {
      withChanges(ids(args), out, [&](NodeId id) { net_.core(id).campaign(); });
    } else if (verb == "propose") {
      propose(args, out);
    } else if (verb == "add-node") {
      const NodeId id = parseId(args.at(0));
      if (net_.has(id)) throw std::invalid_argument("node " + args[0] + " exists");
      net_.addNode(id, net_.baseConfig(), Storage{});
    } else if (verb == "conf-change") {
      confChange(args, out);
    } else if (verb == "transfer-leader") {
      const NodeId target = parseId(args.at(1));
      withChanges(ids({args.at(0)}), out, [&](NodeId node) {
        TransferResult r = net_.core(node).transferLeader(target);
        out += r.started ? "transferring to " + std::to_string(target) + "\n"
                         : "refused: " + r.refusal + " (leader=" + std::to_string(r.leader) + ")\n";
      });
    } else if (verb == "read-index") {
      const NodeId id = ids({args.at(0)}).front();
      ReadIndexResult r = net_.core(id).readIndex(args.at(1));
      out = r.accepted ? "reading\n" : "refused: " + r.refusal + "\n";
    } else if (verb == "membership") {
      out = describeMembership(parseId(args.at(0)));
    } else if (verb == "process-ready") {
      for (NodeId id : ids(args)) net_.processReady(id, &out);
    } else if (verb == "deliver-msgs") {
      for (NodeId id : ids(args)) net_.deliver(id, &out);
    } else if (verb == "stabilize") {
      net_.stabilize(&out);
    } else if (verb == "tick") {
      const NodeId id = parseId(args.at(0));
      const int n = args.size() > 1 ? std::stoi(args[1]) : 1;
      withChanges({id}, out, [&](NodeId node) { tickTimes(node, n); });
    } else if (verb == "tick-heartbeat") {
      withChanges(ids(args), out, [&](NodeId id) { tickTimes(id, net_.core(id).config().heartbeat_ticks); });
    } else if (verb == "tick-election") {
      withChanges(ids(args), out, [&](NodeId id) { tickTimes(id, net_.core(id).config().election_ticks); });
    } else if (verb == "tick-until-campaign") {
      tickUntilCampaign(out);
    } else if (verb == "partition") {
      partition(args);
    } else if (verb == "isolate") {
      net_.isolate(parseId(args.at(0)));
    } else if (verb == "heal") {
      net_.heal();
    } else if (verb == "crash") {
      for (NodeId id : ids(args)) net_.crash(id);
    } else if (verb == "restart") {
      for (NodeId id : ids(args)) {
        net_.restart(id);
        out += describeRestart(id);
      }
    } else if (verb == "compact") {
      const NodeId id = ids({args.at(0)}).front();
      const Index index = args.size() > 1 ? std::stoull(args[1]) : 0;
      out = "compacted: " + describe(net_.compact(id, index)) + "\n";
    } else if (verb == "state-machine") {
      const NodeId id = ids({args.at(0)}).front();
      for (const std::string& line : net_.node(id).applied_text) out += line + "\n";
      if (out.empty()) out = "(empty)\n";
    } else if (verb == "raft-state") {
      out = net_.describeState();
    } else if (verb == "raft-log") {
      out = net_.describeLog(parseId(args.at(0)));
    } else if (verb == "progress") {
      out = describeProgress(parseId(args.at(0)));
    } else {
      throw std::invalid_argument("unknown command: " + verb);
    }
    return out.empty() ? "ok\n" : out;
  }

 private:
  std::vector<NodeId> ids(const std::vector<std::string>& args) {
    std::vector<NodeId> out;
    for (const auto& a : args) {
      NodeId id = parseId(a);
      if (!net_.has(id)) throw std::invalid_argument("no node " + a);
      out.push_back(id);
    }
    if (out.empty()) throw std::invalid_argument("no node given");
    return out;
  }

  template <typename F>
  void withChanges(const std::vector<NodeId>& nodes, std::string& out, F action) {
    for (NodeId id : nodes) {
      if (!net_.isUp(id)) throw std::invalid_argument("node " + std::to_string(id) + " is down");
      RoleSnapshot before = snapshotOf(net_.core(id));
      action(id);
      out += describeChange(id, before, net_.core(id));
    }
  }

  void tickTimes(NodeId id, int n) {
    for (int i = 0; i < n; ++i) net_.core(id).tick();
  }

  void addNodes(const std::vector<std::string>& args) {
    Config c;
    const int count = std::stoi(args.at(0));
    for (std::size_t i = 1; i < args.size(); ++i) {
      const auto eq = args[i].find('=');
      if (eq == std::string::npos) throw std::invalid_argument("expected key=value: " + args[i]);
      const std::string key = args[i].substr(0, eq);
      const std::string value = args[i].substr(eq + 1);
      if (key == "pre-vote") {
        c.pre_vote = parseBool(value);
      } else if (key == "check-quorum") {
        c.check_quorum = parseBool(value);
      } else if (key == "election") {
        c.election_ticks = std::stoi(value);
      } else if (key == "heartbeat") {
        c.heartbeat_ticks = std::stoi(value);
      } else if (key == "max-append") {
        c.max_entries_per_append = std::stoul(value);
      } else if (key == "max-inflight") {
        c.max_inflight_appends = std::stoul(value);
      } else if (key == "seed") {
        c.seed = std::stoull(value);
      } else {
        throw std::invalid_argument("unknown option: " + key);
      }
    }
    net_.addNodes(count, c);
  }

  void propose(const std::vector<std::string>& args, std::string& out) {
    const NodeId id = ids({args.at(0)}).front();
    describePropose(net_.core(id).propose(args.at(1)), out);
  }

  static void describePropose(const ProposeResult& r, std::string& out) {
    if (r.accepted) {
      out = "proposed at " + std::to_string(r.term) + "/" + std::to_string(r.index) + "\n";
    } else {
      out = "refused: " + r.refusal + " (leader=" + std::to_string(r.leader) + ")\n";
    }
  }

  void confChange(const std::vector<std::string>& args, std::string& out) {
    const NodeId id = ids({args.at(0)}).front();
    auto change = decodeConfChange(args.at(1) + " " + args.at(2));
    if (!change) throw std::invalid_argument("not a membership change: " + args[1] + " " + args[2]);
    withChanges({id}, out, [&](NodeId node) {
      std::string result;
      describePropose(net_.core(node).proposeConfChange(*change), result);
      out += result;
    });
  }

  std::string describeMembership(NodeId id) {
    const Membership& m = net_.core(id).membership();
    std::string out = "voters=";
    for (NodeId v : m.voters) out += (out.back() == '=' ? "" : ",") + std::to_string(v);
    out += " learners=";
    for (NodeId l : m.learners) out += (out.back() == '=' ? "" : ",") + std::to_string(l);
    return out + "\n";
  }

  void tickUntilCampaign(std::string& out) {
    for (int round = 1; round <= 100; ++round) {
      std::string changes;
      for (NodeId id : net_.ids()) {
        if (!net_.isUp(id)) continue;
        RoleSnapshot before = snapshotOf(net_.core(id));
        net_.core(id).tick();
        changes += describeChange(id, before, net_.core(id));
      }
      if (!changes.empty()) {
        out = "after " + std::to_string(round) + " ticks:\n" + changes;
        return;
      }
    }
    out = "no election within 100 ticks\n";
  }

  void partition(const std::vector<std::string>& args) {
    std::vector<std::vector<NodeId>> groups(1);
    for (const auto& a : args) {
      if (a == "/") {
        groups.emplace_back();
      } else {
        groups.back().push_back(ids({a}).front());
      }
    }
    net_.partition(groups);
  }

  std::string describeRestart(NodeId id) {
    const RaftCore& c = net_.core(id);
    return std::to_string(id) + " restarted: term=" + std::to_string(c.term()) + " vote=" +
           std::to_string(c.vote()) + " last=" + std::to_string(c.log().lastTerm()) + "/" +
           std::to_string(c.log().lastIndex()) + " commit=" + std::to_string(c.log().committed()) + "\n";
  }

  std::string describeProgress(NodeId id) {
    const RaftCore& c = net_.core(id);
    if (c.role() != Role::leader) return std::to_string(id) + " is not the leader\n";
    std::string out;
    for (const auto& [peer, pr] : c.progress()) {
      out += std::to_string(peer) + ": match=" + std::to_string(pr.match);
      if (peer == id) {
        out += " (self: what is durable)\n";
        continue;
      }
      out += " next=" + std::to_string(pr.next);
      switch (pr.state) {
        case Progress::State::probe: out += " probe\n"; break;
        case Progress::State::replicate: out += " replicate\n"; break;
        case Progress::State::snapshot: out += " snapshot=" + std::to_string(pr.pending_snapshot) + "\n"; break;
      }
    }
    return out;
  }

  Network net_;
};

std::vector<std::string> scenarioFiles() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(RAFT_TESTDATA_DIR)) {
    if (entry.path().extension() == ".txt") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class RaftScenario : public ::testing::TestWithParam<std::string> {};

TEST_P(RaftScenario, MatchesItsExpectedOutput) {
  const fs::path path = fs::path(RAFT_TESTDATA_DIR) / (GetParam() + ".txt");
  Script script = parse(path);
  ASSERT_FALSE(script.blocks.empty()) << path << " has no commands";
  Interpreter interpreter;
  std::vector<std::string> outputs;
  for (const Block& block : script.blocks) {
    std::string actual;
    try {
      actual = interpreter.run(block.command);
    } catch (const std::exception& e) {
      FAIL() << path.string() << ":" << block.line << ": " << block.command << ": " << e.what();
    }
    outputs.push_back(actual);
  }
  const char* rewrite = std::getenv("ZETIAN_RAFT_REWRITE");
  if (rewrite && std::string(rewrite) == "1") {
    write(path, script, outputs);
    return;
  }
  for (std::size_t i = 0; i < script.blocks.size(); ++i) {
    EXPECT_EQ(script.blocks[i].expected, outputs[i])
        << path.string() << ":" << script.blocks[i].line << ": " << script.blocks[i].command;
  }
}

INSTANTIATE_TEST_SUITE_P(Testdata, RaftScenario, ::testing::ValuesIn(scenarioFiles()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace zetian::cluster::raft::testing
