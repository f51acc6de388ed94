"""Cluster links over TLS 1.3 with mutual certificates: nodes with certificates from
the cluster's CA form a cluster; a node whose certificate comes from another CA (or
has expired) is refused by everyone even though it knows the shared secret."""

import os
import time
import unittest

from cluster_harness import HEARTBEAT_S, ClusterTestCase, make_certs
from harness import wait_until


class TlsLinks(ClusterTestCase):

    def setUp(self):
        super().setUp()
        self.certs = make_certs(self.workdir)

    def tls(self, name: str, ca: str = "ca") -> dict:
        return {"tls": {"cert": os.path.join(self.certs, f"{name}.crt"),
                        "key": os.path.join(self.certs, f"{name}.key"),
                        "ca": os.path.join(self.certs, f"{ca}.crt")}}

    def tls_node(self, node_id: str, cert: str, seeds=(), ca: str = "ca"):
        return self.node(node_id, seeds=seeds, extra={"cluster": self.tls(cert, ca)})

    def test_three_tls_nodes_converge_and_log_tls_on(self):
        nodes = [self.tls_node("n1", "node1"), self.tls_node("n2", "node2", ["n1"]),
                 self.tls_node("n3", "node3", ["n1"])]
        self.wait_full_view(nodes)
        for n in nodes:
            self.assertIn("tls=on", n.log_text())

    def test_a_node_with_a_certificate_from_another_ca_is_refused(self):
        nodes = [self.tls_node("n1", "node1"), self.tls_node("n2", "node2", ["n1"])]
        self.wait_full_view(nodes)
        # The rogue trusts the cluster's CA and knows the secret; only its own
        # certificate is foreign.
        rogue = self.tls_node("rogue", "rogue", ["n1", "n2"])
        wait_until(lambda: nodes[0].metric("zetian_cluster_links_refused_total") >= 1, 10,
                   what="n1 to refuse the rogue", diagnostics=nodes[0].log_tail)
        wait_until(lambda: "cluster_link_refused" in rogue.log_text(), 10,
                   what="the rogue to log its refusal", diagnostics=rogue.log_tail)
        time.sleep(HEARTBEAT_S * 5)
        for n in nodes:
            self.assertNotIn("rogue", n.view())
        self.assertEqual(set(rogue.view()), {"rogue"})
        self.assertIn("TLS", nodes[0].log_text())

    def test_an_expired_certificate_is_refused(self):
        first = self.tls_node("n1", "node1")
        late = self.tls_node("late", "expired", ["n1"])
        wait_until(lambda: first.metric("zetian_cluster_links_refused_total") >= 1, 10,
                   what="n1 to refuse the expired certificate", diagnostics=first.log_tail)
        time.sleep(HEARTBEAT_S * 5)
        self.assertNotIn("late", first.view())
        self.assertEqual(set(late.view()), {"late"})

    def test_a_plain_node_cannot_join_a_tls_cluster(self):
        first = self.tls_node("n1", "node1")
        plain = self.node("plain", seeds=["n1"])
        wait_until(lambda: first.metric("zetian_cluster_links_refused_total") >= 1, 10,
                   what="n1 to refuse the plain-TCP node", diagnostics=first.log_tail)
        time.sleep(HEARTBEAT_S * 5)
        self.assertNotIn("plain", first.view())
        self.assertEqual(set(plain.view()), {"plain"})


if __name__ == "__main__":
    unittest.main()
