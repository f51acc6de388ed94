"""The Raft-replicated policy across a partition (issue 10): three nodes, each in a
network namespace of its own cabled to one bridge (netns.Lan); one cable is pulled.

The minority node refuses changes ("no quorum: 1 of 3 voters reachable", 503) and keeps
enforcing the last policy it applied; the majority still commits; once the cable is back
the minority catches up. What each node enforces is read with a milter client on its
(Unix) milter socket: a rule's 451 4.7.1 names the rule, so the text tells which policy
version refused the message.

Timings: cluster_harness.FAST_TIMING and election_timeout = 300 ms; every wait is a poll
with a deadline. Runs as root; skipped when network namespaces cannot be created.
"""

from __future__ import annotations

import unittest

from harness import free_port, rule, wait_until
from netns import Host, NetnsClusterTestCase, NetnsNode
from raft_harness import (ELECTION_DEADLINE_S, RAFT_TIMING, get_policy, health, mail_check, policy_doc, policy_toml,
                          policy_version, put_policy, raft_settings, versions, wait_formed, wait_leader,
                          wait_version, write_file)

NO_QUORUM = "no quorum: 1 of 3 voters reachable"
LIMIT = 3
# A reconnecting link backs off to at most 5 s.
RECOVERY_S = 30.0


def limited(name: str) -> dict:
    return rule(name, LIMIT, "1h", scope="node")


class RaftPolicyAcrossAPartition(NetnsClusterTestCase):
    timing = RAFT_TIMING

    def start_lan_cluster(self) -> list[NetnsNode]:
        lan = self.make_lan(3)
        port = free_port()
        nodes = []
        for host in lan.hosts:
            seeds = [f"{h.address}:{port}" for h in lan.hosts if h is not host]
            nodes.append(self.raft_node_on(host, f"n{host.index}",
                                           dict(raft_settings(3), bind=f"{host.address}:{port}", seeds=seeds)))
        self.wait_full_view(nodes, 20)
        wait_formed(nodes, diagnostics=self.diagnostics)
        wait_version(nodes, 1, diagnostics=self.diagnostics)
        return nodes

    def raft_node_on(self, host: Host, node_id: str, cluster: dict) -> NetnsNode:
        """netns.NetnsClusterTestCase.node_on with the seed policy in the node's file."""
        settings = {"enabled": True, "shared_secret_file": self.secret_file}
        settings.update(cluster)
        n = NetnsNode(self, node_id, host, settings, extra=policy_doc(rule("seed", 100, "1h", scope="node")))
        self.nodes.append(n)
        return n.start()

    def diagnostics(self, nodes=None) -> str:
        text = super().diagnostics(nodes)
        return "\n".join(f"{n.id} health: {health(n)}" for n in self.nodes) + "\n" + text

    def assertEnforces(self, node: NetnsNode, rule_name: str, ip: str) -> None:
        """Through `node`'s milter, from `ip`: LIMIT transactions pass, the next is
        refused by `rule_name`'s 451 4.7.1."""
        results = [mail_check(node, ip) for _ in range(LIMIT + 1)]
        self.assertEqual([code for code, _ in results[:LIMIT]], [b"c"] * LIMIT, f"{node.id}: {results}")
        code, text = results[-1]
        self.assertEqual(code, b"y", f"{node.id}: {results}\n{self.diagnostics()}")
        self.assertTrue(text.startswith("451 4.7.1") and rule_name in text, f"{node.id}: {results}")

    def cut_off(self, which: str) -> None:
        """Pull the cable of the leader or of a follower (`which`) and check both sides,
        then plug it back and check the healed cluster."""
        nodes = self.start_lan_cluster()
        status, body = put_policy(nodes[1], policy_toml(limited("before_cut")))
        self.assertEqual(status, 200, body)
        wait_version(nodes, 2, diagnostics=self.diagnostics)
        leader = wait_leader(nodes, diagnostics=self.diagnostics)
        cut = leader if which == "leader" else next(n for n in nodes if n is not leader)
        majority = [n for n in nodes if n is not cut]

        cut.host.unplug()
        # The cut-off node counts the voters it heard from within an election timeout:
        # itself only (a leader steps down once it has not heard from a majority).
        wait_until(lambda: ((health(cut) or {}).get("raft") or {}).get("voters_reachable") == 1,
                   ELECTION_DEADLINE_S, what=f"{cut.id} to hear from no other voter", diagnostics=self.diagnostics)
        status, body = put_policy(cut, policy_toml(limited("on_the_minority")))
        self.assertEqual(status, 503, body)
        self.assertIn(NO_QUORUM, body["error"], body)
        cp = cut.ctl("policy", "apply", write_file(self.workdir, "minority.toml", policy_toml(limited("minority"))))
        self.assertNotEqual(cp.returncode, 0, cp.stdout)
        self.assertIn(NO_QUORUM, cp.stderr)
        self.assertIn("changes need a majority of voters", cp.stderr)
        # A linearizable read cannot be served without a majority either.
        status, body = get_policy(cut)
        self.assertEqual(status, 503, body)

        # The majority (electing a leader among itself when the leader was cut off) commits.
        wait_leader(majority, diagnostics=self.diagnostics)
        status, body = put_policy(majority[0], policy_toml(limited("after_cut")))
        self.assertEqual(status, 200, f"{body}\n{self.diagnostics()}")
        self.assertEqual(body["version"], 3)
        wait_version(majority, 3, diagnostics=self.diagnostics)

        # Each side enforces what it has: the cut-off node the version before the cut,
        # the majority the new one.
        self.assertEqual(versions(cut), (2, 2), health(cut))
        self.assertEnforces(cut, "before_cut", "192.0.2.10")
        self.assertEnforces(majority[0], "after_cut", "192.0.2.11")
        self.assertEnforces(majority[1], "after_cut", "192.0.2.12")
        # Still refused after all that time, and nothing was proposed there meanwhile.
        status, body = put_policy(cut, policy_toml(limited("on_the_minority")))
        self.assertEqual(status, 503, body)
        self.assertEqual(policy_version(cut), 2)

        cut.host.plug()
        wait_version(nodes, 3, timeout=RECOVERY_S, diagnostics=self.diagnostics)
        wait_leader(nodes, diagnostics=self.diagnostics)
        docs = []
        for n in nodes:
            status, doc = get_policy(n)
            self.assertEqual(status, 200, doc)
            docs.append(doc)
        self.assertEqual({d["version"] for d in docs}, {3}, docs)
        self.assertEqual(len({d["text"] for d in docs}), 1, docs)
        self.assertIn("after_cut", docs[0]["text"])
        self.assertNotIn("on_the_minority", docs[0]["text"])
        self.assertEnforces(cut, "after_cut", "192.0.2.13")
        # And a change on the healed node commits again.
        status, body = put_policy(cut, policy_toml(limited("healed")))
        self.assertEqual(status, 200, f"{body}\n{self.diagnostics()}")
        wait_version(nodes, 4, diagnostics=self.diagnostics)

    def test_a_follower_cut_off_refuses_changes_and_enforces_its_last_policy_then_catches_up(self):
        self.cut_off("follower")

    def test_the_leader_cut_off_steps_down_refuses_changes_and_enforces_its_last_policy(self):
        self.cut_off("leader")

if __name__ == "__main__":
    unittest.main()
