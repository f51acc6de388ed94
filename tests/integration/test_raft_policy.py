"""The Raft-replicated policy end to end (issue 10): SMTP client -> three real Postfix
instances -> three zetian-milter nodes forming one Raft cluster (bootstrap_expect = 3)
-> one smtp-sink.

The policy is changed the way an operator does (`zetianctl policy apply FILE`, or PUT
/policy on the health socket) and read back on every node (GET /policy, /health
policy_version) and in what every Postfix answers. The nodes' files all hold the same
seed policy: `per_ip`, 100 messages an hour per client IP, counted by each node on its
own (scope "node"), so that a limit lowered to 3 shows through each Postfix by itself:
three messages pass, the fourth gets the rule's 451 4.7.1.

Timings: cluster_harness.FAST_TIMING and election_timeout = 300 ms (raft_harness); every
wait is a poll with a deadline.
"""

import os
import re
import stat
import time
import uuid

from cluster_harness import ClusterTestCase, Node
from harness import MessageResult, SmtpSession, metric_samples, rule, wait_until
from postfix_trio import PostfixTrio
from raft_harness import (ELECTION_DEADLINE_S, RAFT_TIMING, PendingRequest, get_policy, health, leader_of,
                          policy_doc, policy_toml, policy_version, put_policy, raft_role_of, raft_settings,
                          request, restart, versions, wait_formed, wait_leader,
                          wait_version, write_file)

IDS = ["n1", "n2", "n3"]
SEED_LIMIT = 100
LOW_LIMIT = 3


def per_ip(limit: int) -> dict:
    return rule("per_ip", limit, "1h", scope="node")


class RaftPolicyBehindPostfix(PostfixTrio, ClusterTestCase):
    timing = RAFT_TIMING

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_postfix_trio("raft-policy", IDS)

    def setUp(self):
        super().setUp()
        self.watch_postfix()
        self.ip_serial = 0

    # -- fixture

    def start_trio(self, hook: str | None = None, **cluster) -> list[Node]:
        """n1, n2, n3 on the class's milter ports, one Raft cluster with the files'
        policy as version 1. Returns once they agree on a leader and all apply version 1.
        `hook`: an [events] exec program for every node."""
        for i in IDS:
            self.endpoint(i)
        extra = policy_doc(per_ip(SEED_LIMIT))
        if hook:
            extra["events"] = {"exec": hook}
        nodes = [self.node(i, seeds=[s for s in IDS if s != i], cluster=raft_settings(3, **cluster),
                           extra=extra, milter_port=port)
                 for i, port in zip(IDS, self.milter_ports)]
        self.wait_full_view(nodes)
        wait_formed(nodes, diagnostics=lambda: self.everything(nodes))
        wait_version(nodes, 1, diagnostics=lambda: self.everything(nodes))
        return nodes

    def everything(self, nodes: list[Node], lines: int = 30) -> str:
        parts = [f"{n.id} health: {health(n)}" for n in nodes]
        parts += [n.log_tail(lines) for n in nodes]
        parts += [p.log_tail(15) for p in self.postfixes]
        return "\n".join(parts)

    def policy_file(self, text: str) -> str:
        return write_file(self.workdir, f"policy-{uuid.uuid4().hex[:6]}.toml", text)

    def apply(self, node: Node, text: str, nodes: list[Node]) -> int:
        """`zetianctl policy apply FILE` on `node`; returns the committed version."""
        path = self.policy_file(text)
        cp = node.ctl("policy", "apply", path)
        m = re.fullmatch(r"policy version (\d+) committed \(index (\d+)\)\n", cp.stdout)
        if cp.returncode != 0 or m is None:
            self.fail(f"zetianctl policy apply on {node.id}: exit {cp.returncode}\n"
                      f"stdout: {cp.stdout}\nstderr: {cp.stderr}\n{self.everything(nodes)}")
        return int(m.group(1))

    def put(self, node: Node, text: str, nodes: list[Node]) -> int:
        status, body = put_policy(node, text)
        if status != 200:
            self.fail(f"PUT /policy on {node.id}: {status} {body}\n{self.everything(nodes)}")
        return int(body["version"])

    def read(self, node: Node, nodes: list[Node]) -> dict:
        """GET /policy (a linearizable read) on `node`."""
        status, body = get_policy(node)
        if status != 200:
            self.fail(f"GET /policy on {node.id}: {status} {body}\n{self.everything(nodes)}")
        return body

    def assertSamePolicy(self, nodes: list[Node], version: int, text: str | None = None) -> dict:
        """Every node reads `version` (and `text`, if given) with GET /policy and shows it
        in /health; returns the document."""
        docs = {n.id: self.read(n, nodes) for n in nodes}
        for node_id, doc in docs.items():
            self.assertEqual(doc["version"], version, f"{node_id}: {doc}\n{self.everything(nodes)}")
            self.assertEqual(doc["text"], docs[nodes[0].id]["text"], f"{node_id} reads another text")
            if text is not None:
                self.assertEqual(doc["text"], text, node_id)
        for n in nodes:
            self.assertEqual(policy_version(n), version, f"{n.id}: {health(n)}")
        return docs[nodes[0].id]

    # -- mail

    def fresh_ip(self) -> str:
        """A client IP no earlier message of this test used (so no bucket holds it)."""
        self.ip_serial += 1
        return f"127.0.0.{20 + self.ip_serial}"

    def send_through(self, postfix: int, count: int, ip: str) -> list[MessageResult]:
        results = []
        for i in range(count):
            with SmtpSession(self.postfixes[postfix].port(), source=ip) as s:
                results.append(s.send(token=f"{self.tag}-{postfix}-{ip}-{i}-{uuid.uuid4().hex[:6]}"))
        return results

    def assertLimitEverywhere(self, limit: int, nodes: list[Node], postfixes=(0, 1, 2)) -> list[MessageResult]:
        """Through each of `postfixes`, from a client IP of its own: `limit` messages
        pass, the next gets per_ip's 451 4.7.1. Returns the accepted ones."""
        passed = []
        for p in postfixes:
            results = self.send_through(p, limit + 1, self.fresh_ip())
            self.assertEqual([r.accepted for r in results], [True] * limit + [False],
                             f"through Postfix {p}:\n" + "\n".join(map(str, results))
                             + "\n" + self.everything(nodes))
            self.assertZetianTempfail(results[-1], "per_ip", lambda: self.everything(nodes))
            passed += results[:limit]
        return passed

    def assertNoLimitEverywhere(self, count: int, nodes: list[Node]) -> list[MessageResult]:
        passed = []
        for p in range(3):
            results = self.send_through(p, count, self.fresh_ip())
            self.assertTrue(all(r.accepted for r in results),
                            f"through Postfix {p}:\n" + "\n".join(map(str, results)) + "\n" + self.everything(nodes))
            passed += results
        return passed

    # -- tests

    def test_a_policy_applied_on_a_follower_is_in_force_on_every_node_and_every_postfix(self):
        nodes = self.start_trio()
        leader = leader_of(nodes) or wait_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        passed = self.assertNoLimitEverywhere(LOW_LIMIT + 1, nodes)

        version = self.apply(follower, policy_toml(per_ip(LOW_LIMIT)), nodes)
        self.assertEqual(version, 2)
        # The follower answered once the change was in force there; the others follow.
        self.assertEqual(versions(follower), (2, 2))
        wait_version(nodes, 2, diagnostics=lambda: self.everything(nodes))
        doc = self.assertSamePolicy(nodes, 2)
        self.assertEqual(doc["proposer"], follower.id)
        self.assertRegex(doc["text"], r"limit = 3\b")
        for n in nodes:
            status, history = request(n, "GET", "/policy/history")
            self.assertEqual(status, 200, history)
            self.assertEqual([h["version"] for h in history], [1, 2], f"{n.id}: {history}")
            self.assertEqual(history[-1]["proposer"], follower.id)

        passed += self.assertLimitEverywhere(LOW_LIMIT, nodes)
        self.assertAtTheSink(passed, lambda: self.everything(nodes))
        self.assertRaftFields(nodes, leader)
        self.assertCtlViews(nodes[2], doc, follower.id)

    def assertRaftFields(self, nodes: list[Node], leader: Node) -> None:
        """/health and /metrics agree on one leader, one term, the same indexes."""
        wait_until(lambda: len({(health(n) or {}).get("applied_index") for n in nodes}) == 1, 10,
                   what="the same applied_index on every node", diagnostics=lambda: self.everything(nodes))
        views = [health(n) for n in nodes]
        for n, h in zip(nodes, views):
            self.assertEqual(h["leader"], leader.id, h)
            self.assertEqual(h["term"], views[0]["term"], h)
            self.assertGreaterEqual(h["commit_index"], h["applied_index"], h)
            self.assertEqual(h["raft"]["role"], "leader" if n is leader else "follower", h)
            self.assertEqual(h["raft"]["voters"], 3, h)
            self.assertEqual(sorted(m["raft_role"] for m in h["members"]), ["voter"] * 3, h)
            self.assertEqual(n.metric("zetian_raft_is_leader"), 1.0 if n is leader else 0.0)
            self.assertEqual(n.metric("zetian_policy_version"), h["policy_version"])
            self.assertEqual(n.metric("zetian_raft_applied_index"), h["applied_index"])

    def assertCtlViews(self, node: Node, doc: dict, proposer: str) -> None:
        """zetianctl policy get|diff|history on `node` show the document `doc`."""
        cp = node.ctl("policy", "get")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stdout.strip(), doc["text"].strip())
        same = self.policy_file(doc["text"])
        cp = node.ctl("policy", "diff", same)
        self.assertEqual(cp.returncode, 0, f"{cp.stdout}{cp.stderr}")
        # A node's whole file works too: only its policy tables (the seed) are compared.
        cp = node.ctl("policy", "diff", node.milter.config_path)
        self.assertEqual(cp.returncode, 1, f"{cp.stdout}{cp.stderr}")
        self.assertIn(f"version {doc['version']}", cp.stdout)
        cp = node.ctl("policy", "history")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn(proposer, cp.stdout)
        cp = node.ctl("status")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertRegex(cp.stdout, rf"policy:\s+.*{doc['version']}")

    def test_the_leadership_moves_on_request_and_a_member_gone_for_good_is_removed(self):
        out = os.path.join(self.workdir, "events.txt")
        hook = os.path.join(self.workdir, "hook.sh")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\n"
                    f'echo "$ZETIAN_SELF_ID $ZETIAN_EVENT leader=$ZETIAN_RAFT_LEADER term=$ZETIAN_RAFT_TERM '
                    f'change=$ZETIAN_RAFT_CHANGE node=$ZETIAN_RAFT_NODE" >> {out}\n')
        os.chmod(hook, stat.S_IRWXU)

        def events() -> str:
            try:
                with open(out) as f:
                    return f.read()
            except FileNotFoundError:
                return ""
        nodes = self.start_trio(hook=hook)
        leader = wait_formed(nodes)
        target, other = [n for n in nodes if n is not leader]
        cp = other.ctl("cluster", "transfer-leader", target.id)
        self.assertEqual(cp.returncode, 0, f"{cp.stdout}{cp.stderr}\n{self.everything(nodes)}")
        self.assertIn(f"leadership transferred: {target.id} leads now", cp.stdout)
        # The transfer made `target` the leader (zetianctl saw it lead, and the events below
        # show every node followed it). With a 300 ms election timeout a loaded machine may
        # already have held another election since, so the current leader is not asserted.
        wait_leader(nodes, diagnostics=lambda: self.everything(nodes))
        # The leader change is an event on every node: the hook, the log, the counter.
        wait_until(lambda: all(re.search(rf"^{n.id} raft_leader_changed leader={target.id} term=\d+ ", events(), re.M)
                               for n in nodes), 10, what="the raft_leader_changed hook on every node",
                   diagnostics=events)
        for n in nodes:
            self.assertRegex(n.log_text(), rf"raft_leader_changed leader={target.id} term=\d+")
            samples = dict((l["event"], v) for l, v in metric_samples(
                n.milter.http("GET", "/metrics")[1], "zetian_cluster_events_total"))
            self.assertGreaterEqual(samples.get("raft_leader_changed", 0), 2, n.id)

        other.stop()
        cp = leader.ctl("cluster", "remove", other.id)
        self.assertEqual(cp.returncode, 0, f"{cp.stdout}{cp.stderr}\n{self.everything(nodes)}")
        self.assertIn(f"{other.id} removed from the Raft cluster", cp.stdout)
        rest = [leader, target]
        wait_until(lambda: all(((health(n) or {}).get("raft") or {}).get("voters") == 2 for n in rest), 10,
                   what="two voters left", diagnostics=lambda: self.everything(nodes))
        for n in rest:
            self.assertIsNone(raft_role_of(n, other.id), health(n))
        wait_until(lambda: all(f"{n.id} raft_membership_changed leader= term= change=remove " in events()
                               and f"node={other.id}" in events() for n in rest), 10,
                   what="the raft_membership_changed hook", diagnostics=events)
        # Two voters of two: changes commit without the removed node.
        version = self.put(leader, policy_toml(per_ip(LOW_LIMIT)), rest)
        wait_version(rest, version, diagnostics=lambda: self.everything(nodes))
        passed = self.assertLimitEverywhere(LOW_LIMIT, rest, postfixes=[nodes.index(n) for n in rest])
        self.assertAtTheSink(passed, lambda: self.everything(nodes))
        # An unknown node is refused with 404 and changes nothing.
        status, body = request(target, "POST", "/cluster/remove?node=nobody")
        self.assertEqual(status, 404, body)

    def test_an_invalid_policy_file_is_refused_with_its_position_and_changes_nothing(self):
        nodes = self.start_trio()
        bad = policy_toml(per_ip(LOW_LIMIT)).replace(f"limit = {LOW_LIMIT}", 'limit = "three"')
        line = next(i for i, text in enumerate(bad.splitlines(), 1) if '"three"' in text)
        path = self.policy_file(bad)
        for n in nodes:
            cp = n.ctl("policy", "apply", path)
            self.assertEqual(cp.returncode, 1, f"{cp.stdout}{cp.stderr}")
            self.assertRegex(cp.stderr, rf"{re.escape(path)}:{line}:\d+: ", cp.stderr)
            self.assertNotIn("committed", cp.stdout)
        # The server refuses it the same way when it is sent without zetianctl.
        status, body = put_policy(nodes[1], bad)
        self.assertEqual(status, 400, body)
        self.assertTrue(any(re.search(rf":{line}:\d+: ", e) for e in body["errors"]), body)
        # A file that is not a policy at all (a node-local table) is refused too.
        local = policy_toml(per_ip(LOW_LIMIT)) + '\n[node]\nid = "n9"\n'
        cp = nodes[2].ctl("policy", "apply", self.policy_file(local))
        self.assertEqual(cp.returncode, 1, f"{cp.stdout}{cp.stderr}")
        self.assertRegex(cp.stderr, r":\d+:\d+: ")

        doc = self.assertSamePolicy(nodes, 1)
        self.assertEqual(doc["proposer"], "n1")  # the smallest id started the cluster
        for n in nodes:
            status, history = request(n, "GET", "/policy/history")
            self.assertEqual([h["version"] for h in history], [1], f"{n.id}: {history}")
        passed = self.assertNoLimitEverywhere(LOW_LIMIT + 1, nodes)
        self.assertAtTheSink(passed, lambda: self.everything(nodes))

    def test_kill_9_of_the_leader_keeps_a_change_made_just_before_on_all_nodes_or_on_none(self):
        nodes = self.start_trio()
        version = self.apply(nodes[0], policy_toml(per_ip(SEED_LIMIT + 1)), nodes)
        self.assertEqual(version, 2)
        outcomes = []
        # Where the change is sent, and when the leader dies: at once (the change may not
        # even have reached it), or once the leader holds it in its log (it may not have
        # reached a follower, or not been committed).
        for target, moment in (("leader", "at once"), ("follower", "at once"), ("leader", "appended")):
            leader = wait_formed(nodes, diagnostics=lambda: self.everything(nodes))
            others = [n for n in nodes if n is not leader]
            to = leader if target == "leader" else others[0]
            text = policy_toml(per_ip(SEED_LIMIT + 10 + len(outcomes)))
            last_index = self.own_last_index(leader)
            pending = PendingRequest(to, "PUT", "/policy", text)
            if moment == "appended":
                wait_until(lambda: (self.own_last_index(leader) or 0) > last_index, 10,
                           what="the change in the leader's log", diagnostics=lambda: self.everything(nodes))
            leader.kill9()
            down_at = time.monotonic()
            pending.close()

            new_leader = wait_leader(others, diagnostics=lambda: self.everything(nodes))
            elected_after = time.monotonic() - down_at
            self.assertLess(elected_after, ELECTION_DEADLINE_S)
            # Linearizable reads on both survivors: the change is on both, or on neither.
            docs = [self.read(n, nodes) for n in others]
            self.assertEqual(docs[0]["version"], docs[1]["version"], f"{docs}\n{self.everything(nodes)}")
            self.assertEqual(docs[0]["text"], docs[1]["text"])
            landed = docs[0]["version"] == version + 1
            if landed:
                self.assertEqual(docs[0]["text"], self.read(new_leader, nodes)["text"])
                self.assertRegex(docs[0]["text"], rf"limit = {SEED_LIMIT + 10 + len(outcomes)}\b")
            else:
                self.assertEqual(docs[0]["version"], version, docs)
            version = docs[0]["version"]
            outcomes.append(f"{target}/{moment}: {'on all' if landed else 'on none'}, "
                            f"new leader {new_leader.id} after {elected_after:.2f}s")

            # The cluster of two goes on; the old leader, back, catches up.
            version = self.put(others[1], policy_toml(per_ip(SEED_LIMIT + 50 + len(outcomes))), nodes)
            restart(leader)
            wait_version(nodes, version, diagnostics=lambda: self.everything(nodes))
            self.assertSamePolicy(nodes, version)
        print("\n  kill -9 of the leader with a change in flight: " + "; ".join(outcomes))

    def own_last_index(self, node: Node) -> int | None:
        """The last index of `node`'s own log, as /health's raft.members shows it on a
        leader (match_index of itself)."""
        h = health(node)
        for m in ((h or {}).get("raft") or {}).get("members", []):
            if m.get("self"):
                return m.get("match_index")
        return None

    def test_a_full_cluster_restart_keeps_the_policy(self):
        nodes = self.start_trio()
        version = self.apply(nodes[2], policy_toml(per_ip(LOW_LIMIT)), nodes)
        text = self.read(nodes[0], nodes)["text"]
        # kill -9 of every node: the change was acknowledged, so a majority made it durable.
        for n in nodes:
            n.kill9()
        for n in nodes:
            restart(n)
        wait_leader(nodes, diagnostics=lambda: self.everything(nodes))
        wait_version(nodes, version, diagnostics=lambda: self.everything(nodes))
        self.assertSamePolicy(nodes, version, text)
        passed = self.assertLimitEverywhere(LOW_LIMIT, nodes)
        self.assertAtTheSink(passed, lambda: self.everything(nodes))

    def test_a_node_restarted_with_sigterm_warns_that_its_file_differs_and_repairs_nothing(self):
        nodes = self.start_trio()
        version = self.apply(nodes[0], policy_toml(per_ip(LOW_LIMIT)), nodes)
        restarted = nodes[1]
        restarted.stop()
        before = len(restarted.log_text())
        restart(restarted)
        wait_version(nodes, version, diagnostics=lambda: self.everything(nodes))
        with self.subTest("policy_file_differs"):
            # Its file still holds the seed policy, the cluster's (in force) differs: it says so
            # at start (docs/operations.md, "The replicated policy").
            wait_until(lambda: f"policy_file_differs version={version}" in restarted.log_text()[before:], 10,
                       what=f"{restarted.id} to warn that its file differs from version {version}",
                       diagnostics=lambda: restarted.log_tail(60))
        with self.subTest("nothing repaired"):
            # After a clean stop the Raft folder holds exactly what the node wrote.
            self.assertNotIn("raft_storage_repaired", restarted.log_text()[before:], restarted.log_tail(60))

    def test_a_node_that_missed_many_changes_catches_up_by_snapshot(self):
        nodes = self.start_trio(snapshot_every=10)
        leader = wait_leader(nodes)
        behind = next(n for n in reversed(nodes) if n is not leader)
        behind.stop()
        others = [n for n in nodes if n is not behind]
        for i in range(29):
            self.put(others[i % 2], policy_toml(per_ip(SEED_LIMIT + 1 + i)), nodes)
        version = self.put(others[0], policy_toml(per_ip(LOW_LIMIT)), nodes)
        self.assertEqual(version, 31)
        wait_until(lambda: all(((health(n) or {}).get("raft") or {}).get("snapshots_taken", 0) >= 2
                               for n in others), 10,
                   what="snapshots on the two running nodes", diagnostics=lambda: self.everything(nodes))

        restart(behind)
        wait_version([behind], version, diagnostics=lambda: self.everything(nodes))
        self.assertIn("raft_snapshot_installed", behind.log_text(), behind.log_tail())
        self.assertGreaterEqual(health(behind)["raft"]["snapshots_installed"], 1, health(behind))
        self.assertSamePolicy(nodes, version)
        status, history = request(behind, "GET", "/policy/history")
        self.assertEqual([h["version"] for h in history], list(range(1, 32)), history)
        # It filters by the newest version: through its own Postfix the limit is 3.
        passed = self.assertLimitEverywhere(LOW_LIMIT, nodes, postfixes=(nodes.index(behind),))
        self.assertAtTheSink(passed, lambda: self.everything(nodes))

    def test_a_fourth_node_joins_as_a_learner_and_becomes_a_voter(self):
        nodes = self.start_trio()
        version = self.apply(nodes[1], policy_toml(per_ip(LOW_LIMIT)), nodes)
        leader = wait_leader(nodes)
        n4 = self.node("n4", seeds=["n1"], cluster=raft_settings(0), extra=policy_doc(per_ip(SEED_LIMIT)))
        everyone = nodes + [n4]
        wait_until(lambda: all(raft_role_of(n, "n4") == "voter" for n in everyone), 30,
                   what="every node to see n4 as a voter", diagnostics=lambda: self.everything(everyone))
        wait_version([n4], version, diagnostics=lambda: self.everything(everyone))
        h = health(n4)
        self.assertTrue(h["raft"]["in_cluster"], h)
        self.assertEqual(h["raft"]["voters"], 4, h)
        # It was added as a learner first, and promoted once it had caught up.
        log = leader.log_text()
        added = log.find("raft_adding_learner node=n4")
        promoted = log.find("raft_promoting node=n4")
        self.assertTrue(0 <= added < promoted, leader.log_tail(60))
        self.assertIn("raft_joined", n4.log_text(), n4.log_tail())
        # A voter like the others: a change made on it is committed and in force everywhere.
        version = self.put(n4, policy_toml(per_ip(LOW_LIMIT + 1)), everyone)
        wait_version(everyone, version, diagnostics=lambda: self.everything(everyone))
        self.assertSamePolicy(everyone, version)
        self.assertEqual(self.read(n4, everyone)["proposer"], "n4")
        passed = self.assertLimitEverywhere(LOW_LIMIT + 1, everyone)
        self.assertAtTheSink(passed, lambda: self.everything(everyone))


if __name__ == "__main__":
    import unittest
    unittest.main()
