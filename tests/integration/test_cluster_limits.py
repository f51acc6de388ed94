"""Cluster-wide rate limits (issue 8): a limit of N with scope = "cluster" holds across
the nodes, whichever node a client's checks reach.

These tests drive the milters with an independent milter client (harness.MilterClient);
the Postfix-fronted tests live in test_cluster_limits_postfix.py."""

import threading
import unittest

from cluster_harness import ClusterTestCase, limits_remaining, owner_of, store_key
from harness import MilterClient, rule, wait_until


def policy(*rules: dict, fail_mode: str = "local") -> dict:
    return {"ratelimit": {"rule": list(rules), "fail_mode": fail_mode}}


def mail_once(node, client_ip: str, sender: str = "<s@example.org>") -> bytes:
    """One SMTP transaction's MAIL FROM through `node`'s milter: the reply code."""
    c = MilterClient(node.milter.socket_spec)
    try:
        c.negotiate()
        c.connect_stage(client_ip)
        c.helo()
        return c.mail(sender)
    finally:
        c.quit()


class ThreeNodes(ClusterTestCase):
    def start_three(self, rules: list[dict], fail_mode: str = "local", env: dict | None = None,
                    regions: dict | None = None):
        """n1..n3; `env`: per node id, variables for its process (test hooks);
        `regions`: per node id, its cluster.region."""
        ids = ["n1", "n2", "n3"]
        for i in ids:
            self.endpoint(i)
        nodes = [self.node(i, seeds=[ids[0]] if i != ids[0] else [], extra=policy(*rules, fail_mode=fail_mode),
                           env=(env or {}).get(i),
                           cluster={"region": regions[i]} if regions else None)
                 for i in ids]
        self.wait_full_view(nodes)
        return nodes


class ExactLimitTest(ThreeNodes):
    def test_one_by_one_round_robin_admits_exactly_the_limit(self):
        nodes = self.start_three([rule("per_ip", 10, "1h")])
        codes = [mail_once(nodes[i % 3], "192.0.2.7") for i in range(30)]
        self.assertEqual(codes.count(b"c"), 10, self.diagnostics(nodes))
        self.assertEqual(codes.count(b"y") + codes.count(b"t"), 20, codes)

    def test_all_at_once_admits_exactly_the_limit(self):
        nodes = self.start_three([rule("per_ip", 10, "1h")])
        codes: list[bytes] = []
        lock = threading.Lock()

        def one(i: int):
            code = mail_once(nodes[i % 3], "192.0.2.8")
            with lock:
                codes.append(code)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(codes), 30)
        self.assertEqual(codes.count(b"c"), 10, self.diagnostics(nodes))

    def test_the_owner_reports_the_keys_it_owns_to_everyone(self):
        nodes = self.start_three([rule("per_ip", 10, "1h")])
        ip = "192.0.2.13"
        owner = owner_of(store_key("per_ip", ip), [n.id for n in nodes])
        mail_once(nodes[0], ip)

        def owned_as_seen_by(node) -> dict:
            health = node.health() or {}
            return {m["id"]: m.get("keys_owned") for m in health.get("members", [])}
        # Counted by the owner over the keys it holds, then sent in its heartbeats.
        wait_until(lambda: all(owned_as_seen_by(n).get(owner) == 1 for n in nodes), 15,
                   what=f"every node to see {owner} owning one key")
        for n in nodes:
            others = {k: v for k, v in owned_as_seen_by(n).items() if k != owner}
            self.assertTrue(all(v == 0 for v in others.values()), others)

    def test_region_scope_counts_once_per_region(self):
        nodes = self.start_three([rule("per_ip", 10, "1h", scope="region")],
                                 regions={"n1": "eu", "n2": "eu", "n3": "us"})
        eu = [mail_once(nodes[i % 2], "192.0.2.14") for i in range(20)]
        us = [mail_once(nodes[2], "192.0.2.14") for _ in range(15)]
        self.assertEqual(eu.count(b"c"), 10, self.diagnostics(nodes))
        self.assertEqual(us.count(b"c"), 10, self.diagnostics(nodes))

    def test_node_scope_counts_per_node(self):
        nodes = self.start_three([rule("per_ip", 10, "1h", scope="node")])
        codes = [mail_once(nodes[i % 3], "192.0.2.9") for i in range(30)]
        self.assertEqual(codes.count(b"c"), 30)


class ClockOffsetTest(ThreeNodes):
    """Nodes whose clocks differ by minutes (ZETIAN_TEST_CLOCK_OFFSET_MS shifts a node's
    limiter clock): bucket state travels as ages, so replication and failover keep the
    count exactly."""

    def test_failover_between_nodes_minutes_apart_keeps_the_count(self):
        minutes = 60 * 1000
        env = {"n1": {"ZETIAN_TEST_CLOCK_OFFSET_MS": str(-7 * minutes)},
               "n2": {"ZETIAN_TEST_CLOCK_OFFSET_MS": str(11 * minutes)}}
        nodes = self.start_three([rule("per_ip", 10, "1h")], env=env)
        by_id = {n.id: n for n in nodes}
        ip = "192.0.2.12"
        key = store_key("per_ip", ip)
        owner = by_id[owner_of(key, list(by_id))]
        replica = by_id[owner_of(key, [i for i in by_id if i != owner.id])]
        codes = [mail_once(nodes[i % 3], ip) for i in range(5)]
        self.assertEqual(codes.count(b"c"), 5)
        wait_until(lambda: limits_remaining(replica.milter, "per_ip", ip, 10) == 5, 10,
                   what="the replica to hold the five charges")
        owner.kill9()
        survivors = [n for n in nodes if n is not owner]
        codes += [mail_once(survivors[i % 2], ip) for i in range(25)]
        self.assertEqual(codes.count(b"c"), 10, self.diagnostics(survivors))


class FastModeTest(ThreeNodes):
    """consistency = "fast": nodes decide from leases of tokens the owner charged up
    front; with no owner failure it never admits more than exact mode would
    (docs/limiter.md, "Fast mode (leases)")."""

    def test_fast_never_admits_more_than_the_limit_and_decides_from_leases(self):
        nodes = self.start_three([rule("per_ip", 60, "1h", consistency="fast")])
        codes = [mail_once(nodes[i % 3], "192.0.2.10") for i in range(90)]
        admitted = codes.count(b"c")
        self.assertLessEqual(admitted, 60, self.diagnostics(nodes))
        # Tokens idle in the other nodes' leases may deny a little early: at most the
        # leases outstanding, each at most max(1, 60 / (2 x 3)) = 10 tokens.
        self.assertGreaterEqual(admitted, 60 - 2 * 10, codes)
        consumed = sum(n.metric("zetian_lease_tokens_consumed_total") for n in nodes)
        print(f"fast: admitted {admitted} of 90 (limit 60), {consumed:.0f} decided from leases")
        self.assertGreater(consumed, 0, "no check was decided from a lease")

    def test_fast_one_by_one_with_a_small_limit(self):
        nodes = self.start_three([rule("per_ip", 10, "1h", consistency="fast")])
        codes = [mail_once(nodes[i % 3], "192.0.2.11") for i in range(30)]
        self.assertLessEqual(codes.count(b"c"), 10, self.diagnostics(nodes))
        self.assertGreaterEqual(codes.count(b"c"), 10 - 2, codes)


if __name__ == "__main__":
    unittest.main()
