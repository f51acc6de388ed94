"""Cluster-wide rate limits end to end (issue 8): SMTP client -> three real Postfix
instances -> three zetian-milter nodes in one cluster -> one smtp-sink.

One Postfix trio and one sink serve the whole class: Postfix i's smtpd_milters points
at a milter port reserved for node i, and every test starts its own three nodes on
those ports (fresh buckets, fresh metrics, a test hook where a test needs one). The
client sends from loopback addresses other than 127.0.0.1 (Postfix sees each as a
distinct client IP), nothing is exempt, and each test uses client IPs, senders and a
message tag of its own, so that nothing one test sent is counted by another.

Messages are counted twice: by the SMTP replies, and by their tokens at the sink once
all three Postfix queues are empty (so a message that Postfix accepted but did not
deliver yet cannot hide)."""

import unittest
import uuid

from cluster_harness import (FAILURE_TIMEOUT_S, ClusterTestCase, Node, hrw_score, limits_remaining, owner_of,
                             store_key)
from harness import MessageResult, SmtpSession, metric_samples, rule, wait_until
from postfix_trio import PostfixTrio

LIMIT = 10
IDS = ["n1", "n2", "n3"]
# Zetian's reply when fail_mode = "closed" refuses a check (plugin/check.cpp).
CLOSED_TEXT = "Rate limiter unavailable"


def policy(*rules: dict, fail_mode: str = "local") -> dict:
    return {"ratelimit": {"rule": list(rules), "fail_mode": fail_mode}}


def first_ip_owned_by(node_id: str, rule_name: str, start: int = 10) -> str:
    """The first 127.0.0.x (x >= start) whose key under `rule_name` `node_id` owns
    among IDS."""
    for last in range(start, 255):
        ip = f"127.0.0.{last}"
        if owner_of(store_key(rule_name, ip), IDS) == node_id:
            return ip
    raise AssertionError(f"no 127.0.0.x owned by {node_id} for rule {rule_name}")


class OwnerOfMatchesThePlacementCode(unittest.TestCase):
    """cluster_harness.owner_of against the golden values of
    tests/unit/cluster/placement_test.cpp (GoldenScoresAndOwners)."""

    def test_golden_scores(self):
        self.assertEqual(hrw_score("node-1", "sender:alice@example.com"), 0x2806A9D5AF5FE29B)
        self.assertEqual(hrw_score("node-2", "sender:alice@example.com"), 0xE6AFCAED25A84663)
        self.assertEqual(hrw_score("", ""), 0x813F0174A2367C13)
        self.assertEqual(hrw_score("10.0.0.7:7946", "client_ip:192.0.2.1"), 0xB8BBF35C5C94A742)

    def test_golden_owners(self):
        three = [f"node-{i}" for i in range(1, 4)]
        five = [f"node-{i}" for i in range(1, 6)]
        self.assertEqual(owner_of("sender:alice@example.com", three), "node-2")
        self.assertEqual(owner_of("client_ip:192.0.2.1", three), "node-1")
        self.assertEqual(owner_of("global", five), "node-3")
        # placement(.., five, 3) is node-5, node-4, node-1: the owner, and without it the next.
        self.assertEqual(owner_of("recipient:bob@example.org", five), "node-5")
        self.assertEqual(owner_of("recipient:bob@example.org", five[:4]), "node-4")

    def test_member_order_does_not_matter_and_ties_go_to_the_smaller_id(self):
        self.assertEqual(owner_of("k", ["b", "a", "c"]), owner_of("k", ["c", "b", "a"]))
        self.assertEqual(owner_of("k", ["same", "same"]), "same")
        with self.assertRaises(ValueError):
            owner_of("k", [])


class ClusterLimitsBehindPostfix(PostfixTrio, ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_postfix_trio("cl-postfix", IDS)

    def setUp(self):
        super().setUp()
        self.watch_postfix()

    # -- fixture

    def start_trio(self, *rules: dict, fail_mode: str = "local",
                   env: dict[str, dict] | None = None) -> list[Node]:
        """n1, n2, n3 on the class's milter ports, all with the same policy; `env`: test
        hooks per node id. Returns once every node sees all three active."""
        for i in IDS:
            self.endpoint(i)
        nodes = [self.node(i, seeds=[IDS[0]] if i != IDS[0] else [],
                           extra=policy(*rules, fail_mode=fail_mode),
                           env=(env or {}).get(i), milter_port=port)
                 for i, port in zip(IDS, self.milter_ports)]
        self.wait_full_view(nodes)
        return nodes

    def everything(self, nodes: list[Node], lines: int = 25) -> str:
        parts = [self.diagnostics(nodes)]
        parts += [p.log_tail(lines) for p in self.postfixes]
        return "\n".join(parts)

    # -- sending

    def send_one(self, index: int, postfix: int, source: str,
                 sender: str = "sender@example.org") -> MessageResult:
        """Message number `index` of this test in a session of its own, from `source`
        through Postfix number `postfix` (0..2)."""
        with SmtpSession(self.postfixes[postfix].port(), source=source) as s:
            return s.send(sender=sender, token=f"{self.tag}-{index:02d}-{uuid.uuid4().hex[:8]}")

    def send_round_robin(self, count: int, source: str, postfixes=(0, 1, 2), first: int = 0,
                         sender: str = "sender@example.org") -> list[MessageResult]:
        return [self.send_one(first + i, postfixes[i % len(postfixes)], source, sender)
                for i in range(count)]

    # -- checking

    def assertRateLimited(self, result: MessageResult, rule_name: str, nodes: list[Node]):
        self.assertZetianTempfail(result, rule_name, lambda: self.everything(nodes))

    def assertSinkCount(self, passed: list[MessageResult], nodes: list[Node]):
        self.assertAtTheSink(passed, lambda: self.everything(nodes))

    def assertPassed(self, results: list[MessageResult], count: int, rule_name: str,
                     nodes: list[Node]):
        passed = [r for r in results if r.accepted]
        refused = [r for r in results if not r.accepted]
        self.assertEqual(len(passed), count,
                         f"{len(passed)} of {len(results)} passed, want {count}:\n"
                         + "\n".join(map(str, results)) + "\n" + self.everything(nodes))
        for r in refused:
            self.assertRateLimited(r, rule_name, nodes)
        self.assertSinkCount(passed, nodes)

    def fallbacks(self, node: Node, reason: str, rule_name: str) -> int:
        status, body, _ = node.milter.http("GET", "/metrics")
        self.assertEqual(status, 200)
        return int(sum(v for labels, v in metric_samples(body, "zetian_fallbacks_total")
                       if labels.get("reason") == reason and labels.get("rule") == rule_name))

    @staticmethod
    def links_closed(nodes: list[Node]) -> list[int]:
        return [int(n.metric("zetian_cluster_links_closed_total")) for n in nodes]

    def assertAllUp(self, nodes: list[Node], links_closed: list[int]):
        """Every node still runs and sees all three active, and no node closed a link
        since `links_closed` (links_closed(nodes) taken earlier) was read."""
        for n in nodes:
            self.assertTrue(n.running(), f"{n.id} exited\n{n.log_tail()}")
        self.wait_views(nodes, {n.id: "active" for n in nodes}, timeout=10,
                        what="every node still to see all three active")
        self.assertEqual(self.links_closed(nodes), links_closed, self.everything(nodes))

    # -- tests

    def test_exact_one_by_one_round_robin_passes_exactly_the_limit(self):
        nodes = self.start_trio(rule("per_ip", LIMIT, "1h", consistency="exact"))
        results = self.send_round_robin(30, "127.0.0.21")
        self.assertPassed(results, LIMIT, "per_ip", nodes)
        self.assertEqual(sum(r.mail.code == 451 for r in results), 30 - LIMIT)
        # The first ten are the ones that pass: nothing refused while budget was left.
        self.assertTrue(all(r.accepted for r in results[:LIMIT]), "\n".join(map(str, results)))

    def test_exact_thirty_at_once_passes_exactly_the_limit(self):
        nodes = self.start_trio(rule("per_ip", LIMIT, "1h", consistency="exact"))
        results = self.send_all_at_once(30, "127.0.0.22")
        self.assertEqual(len(results), 30)
        self.assertPassed(results, LIMIT, "per_ip", nodes)

    def test_node_scope_passes_the_limit_on_each_node(self):
        nodes = self.start_trio(rule("per_ip", LIMIT, "1h", scope="node"))
        results = self.send_round_robin(30, "127.0.0.23")
        self.assertPassed(results, 3 * LIMIT, "per_ip", nodes)

    def test_per_sender_rule_holds_across_client_ips_and_nodes(self):
        nodes = self.start_trio(rule("per_sender", LIMIT, "1h", key="sender"))
        sender = f"bulk-{self.tag.lower()}@example.org"
        ips = ["127.0.0.24", "127.0.0.25", "127.0.0.26"]
        # Message i goes through Postfix i % 3 from IP (i // 3) % 3: all nine pairings.
        results = [self.send_one(i, i % 3, ips[(i // 3) % 3], sender) for i in range(30)]
        self.assertPassed(results, LIMIT, "per_sender", nodes)

    def start_with_capless_n3(self, fail_mode: str) -> list[Node]:
        return self.start_trio(rule("per_ip", LIMIT, "1h"), fail_mode=fail_mode,
                               env={"n3": {"ZETIAN_TEST_CAPABILITIES": "0"}})

    def test_owner_without_limiter_capability_fail_mode_closed(self):
        nodes = self.start_with_capless_n3("closed")
        closed_before = self.links_closed(nodes)
        ip = first_ip_owned_by("n3", "per_ip", start=30)
        # Through n1 and n2 the owner cannot be asked: every check is refused at once.
        results = self.send_round_robin(10, ip, postfixes=(0, 1))
        for r in results:
            ok = (r.mail.code == 451 and r.mail.text.startswith("4.7.1")
                  and CLOSED_TEXT in r.mail.text)
            self.assertTrue(ok, f"want 451 4.7.1 {CLOSED_TEXT}, got {r}\n{self.everything(nodes)}")
        for n in nodes[:2]:
            self.assertEqual(self.fallbacks(n, "unsupported", "per_ip"), 5, n.log_tail())
            # Logged once for the episode, not once per message.
            episodes = n.log_text().count("cluster_limits_fallback owner=n3 reason=unsupported")
            self.assertEqual(episodes, 1, n.log_tail())
        # The owner itself decides with its own bucket: the limit holds there.
        own = self.send_round_robin(LIMIT + 2, ip, postfixes=(2,), first=10)
        self.assertEqual([r.accepted for r in own], [True] * LIMIT + [False] * 2,
                         "\n".join(map(str, own)))
        self.assertRateLimited(own[-1], "per_ip", nodes)
        # A key a capable node owns is still checked cluster-wide, through n1 and n2.
        other = first_ip_owned_by("n1", "per_ip", start=30)
        elsewhere = self.send_round_robin(4, other, postfixes=(0, 1), first=30)
        for r in elsewhere:
            self.assertTrue(r.accepted, f"{r}\n{self.everything(nodes)}")
        self.assertSinkCount(own[:LIMIT] + elsewhere, nodes)
        self.assertAllUp(nodes, closed_before)

    def test_owner_without_limiter_capability_fail_mode_local(self):
        nodes = self.start_with_capless_n3("local")
        closed_before = self.links_closed(nodes)
        ip = first_ip_owned_by("n3", "per_ip", start=30)
        # 15 through each node: n1 and n2 fall back to their own buckets, n3 owns the
        # key: 10 pass on each.
        results = self.send_round_robin(45, ip)
        self.assertPassed(results, 3 * LIMIT, "per_ip", nodes)
        for i, n in enumerate(nodes[:2]):
            self.assertEqual(sum(r.accepted for r in results[i::3]), LIMIT)
            self.assertEqual(self.fallbacks(n, "unsupported", "per_ip"), 15, n.log_tail())
        self.assertEqual(self.fallbacks(nodes[2], "unsupported", "per_ip"), 0)
        self.assertAllUp(nodes, closed_before)

    def test_kill_9_of_the_owner_mid_run_fail_mode_closed(self):
        nodes = self.start_trio(rule("per_ip", LIMIT, "1h"), fail_mode="closed")
        ip = "127.0.0.40"
        owner = nodes[IDS.index(owner_of(store_key("per_ip", ip), IDS))]
        survivors = [i for i, n in enumerate(nodes) if n is not owner]
        before = self.send_round_robin(5, ip)
        self.assertTrue(all(r.accepted for r in before), "\n".join(map(str, before)))
        owner.kill9()
        # (a) The survivors keep serving: a client whose key a survivor owns passes at once.
        bystander = first_ip_owned_by(nodes[survivors[0]].id, "per_ip", start=41)
        flowing = [self.send_one(100 + k, i, bystander) for k, i in enumerate(survivors)]
        for r in flowing:
            self.assertTrue(r.accepted, f"{r}\n{self.everything(nodes)}")
        # Until the survivors see the owner fail, the key's checks are refused (closed);
        # then one of them owns the key and mail from the client flows again.
        after: list[MessageResult] = []

        def next_passes() -> bool:
            after.append(self.send_one(5 + len(after), survivors[len(after) % 2], ip))
            return after[-1].accepted
        wait_until(next_passes, 10 * FAILURE_TIMEOUT_S,
                   what="a message from the client after the kill",
                   diagnostics=lambda: self.everything(nodes))
        # Then 25 more, enough to use up whatever budget the new owner has.
        after += self.send_round_robin(25, ip, postfixes=survivors, first=5 + len(after))
        for r in after:
            if not r.accepted and CLOSED_TEXT not in r.mail.text:
                self.assertRateLimited(r, "per_ip", nodes)
        passed = [r for r in before + after if r.accepted]
        # Loose until replication lands: the new owner starts the key afresh, so the 5
        # granted before the kill come on top of the limit (measured: exactly 15). The
        # bound to tighten this to is the failover bound docs/limiter.md is to state
        # (issue 8: with replication_factor = 2, kill -9 of an owner admits at most what
        # it granted since its last replication), i.e. LIMIT + that.
        self.assertLessEqual(len(passed), LIMIT + 5, "\n".join(map(str, before + after)))
        self.assertSinkCount(passed + flowing, nodes)
        self.wait_views([nodes[i] for i in survivors], {nodes[i].id: "active" for i in survivors})

    def test_kill_9_of_the_owner_mid_run_fail_mode_local(self):
        nodes = self.start_trio(rule("per_ip", LIMIT, "1h"))
        ip = "127.0.0.60"
        owner = nodes[IDS.index(owner_of(store_key("per_ip", ip), IDS))]
        survivors = [i for i, n in enumerate(nodes) if n is not owner]
        replica = nodes[IDS.index(owner_of(store_key("per_ip", ip), [i for i in IDS if i != owner.id]))]
        before = self.send_round_robin(5, ip)
        self.assertTrue(all(r.accepted for r in before), "\n".join(map(str, before)))
        # The owner replicates every replication_interval (250 ms): once the first
        # replica holds the state, the owner has granted nothing since its last round.
        wait_until(lambda: limits_remaining(replica.milter, "per_ip", ip, LIMIT) == LIMIT - 5, 10,
                   what="the first replica to hold the five charges")
        owner.kill9()
        after = self.send_round_robin(25, ip, postfixes=survivors, first=5)
        # (a) Mail keeps flowing through the survivors.
        self.assertTrue(any(r.accepted for r in after), "\n".join(map(str, after)))
        passed = [r for r in before + after if r.accepted]
        for r in before + after:
            if not r.accepted:
                self.assertRateLimited(r, "per_ip", nodes)
        # (b) The survivors' links to the dead owner close at once (the kernel resets
        # them), so its key goes to the first replica, which holds the replicated count:
        # the failover bound of docs/limiter.md (limit + what the owner granted since its
        # last replication, here nothing) is the limit itself.
        self.assertEqual(len(passed), LIMIT, "\n".join(map(str, before + after)))
        self.assertSinkCount(passed, nodes)


if __name__ == "__main__":
    unittest.main()
