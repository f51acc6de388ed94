"""Cluster-wide rate limits (issue 8): a limit of N with scope = "cluster" holds across
the nodes, whichever node a client's checks reach.

These tests drive the milters with an independent milter client (harness.MilterClient);
the Postfix-fronted tests live in test_cluster_limits_postfix.py."""

import threading
import unittest

from cluster_harness import ClusterTestCase
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


class ExactLimitTest(ClusterTestCase):
    def start_three(self, rules: list[dict], fail_mode: str = "local"):
        ids = ["n1", "n2", "n3"]
        for i in ids:
            self.endpoint(i)
        nodes = [self.node(i, seeds=[ids[0]] if i != ids[0] else [], extra=policy(*rules, fail_mode=fail_mode))
                 for i in ids]
        self.wait_full_view(nodes)
        return nodes

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

    def test_node_scope_counts_per_node(self):
        nodes = self.start_three([rule("per_ip", 10, "1h", scope="node")])
        codes = [mail_once(nodes[i % 3], "192.0.2.9") for i in range(30)]
        self.assertEqual(codes.count(b"c"), 30)


if __name__ == "__main__":
    unittest.main()
