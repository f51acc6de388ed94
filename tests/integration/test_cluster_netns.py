"""Cluster membership across real network paths: every node in a network namespace of
its own, cabled to one bridge (netns.Lan), so the test can pull a cable, blackhole one
path, serve DNS from dnsmasq and let multicast beacons cross a switch.

Timings are cluster_harness.FAST_TIMING (heartbeat 200 ms, failure_detection_timeout
2 s, join_timeout 5 s); every wait is a poll with a deadline stated in those terms. A
reconnecting link backs off to at most 5 s, so recoveries get 20 s.

Runs as root; skipped when network namespaces cannot be created.
"""

from __future__ import annotations

import re
import time
import unittest
from typing import Callable, Optional

from cluster_harness import FAILURE_TIMEOUT_S, HEARTBEAT_S
from harness import free_port, wait_until
from netns import Dnsmasq, Host, NetnsClusterTestCase, NetnsNode

RECOVERY_S = 20.0
CONVERGE_S = 20.0
DOMAIN = "cluster.test"


class ClusterOverNamespaces(NetnsClusterTestCase):

    # ------------------------------------------------------------------ helpers

    def seeded_cluster(self, count: int) -> list[NetnsNode]:
        """`count` hosts on a fresh LAN, one node each, every node seeded with all the
        others, all on the same cluster port (each host has its own addresses)."""
        lan = self.make_lan(count)
        port = free_port()
        nodes = []
        for host in lan.hosts:
            seeds = [f"{h.address}:{port}" for h in lan.hosts if h is not host]
            nodes.append(self.node_on(host, f"n{host.index}",
                                      {"bind": f"{host.address}:{port}", "seeds": seeds}))
        return nodes

    def diagnostics(self, nodes=None) -> str:
        """Views, node logs and the network (netns.NetnsClusterTestCase), and dnsmasq's
        log when the test runs one."""
        text = super().diagnostics(nodes)
        dns = getattr(self, "_dnsmasq", None)
        return text + ("\n" + dns.log_tail() if dns is not None else "")

    def views_problem(self, expected: dict[NetnsNode, dict[str, str]]) -> Optional[str]:
        """None if every node sees its `expected` statuses, else the first difference."""
        for node, want in expected.items():
            view = node.view()
            for member, status in want.items():
                if view.get(member) != status:
                    return f"{node.id} sees {member} as {view.get(member)}, want {status} (view {view})"
        return None

    def wait_views_holding(self, expected: dict[NetnsNode, dict[str, str]],
                           holding: dict[NetnsNode, dict[str, str]], timeout: float,
                           what: str) -> float:
        """Wait until `expected` holds; fail at once if `holding` is broken meanwhile.
        Returns the seconds it took."""
        start = time.monotonic()

        def check():
            broken = self.views_problem(holding)
            if broken is not None:
                self.fail(f"while waiting for {what}: {broken}\n{self.diagnostics()}")
            return self.views_problem(expected) is None
        wait_until(check, timeout, what=what, diagnostics=self.diagnostics)
        return time.monotonic() - start

    def observe(self, seconds: float, check: Callable[[], Optional[str]], what: str) -> None:
        """Poll `check` (None = fine) for `seconds`; fail on the first problem."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            problem = check()
            if problem is not None:
                self.fail(f"{what}: {problem}\n{self.diagnostics()}")
            time.sleep(HEARTBEAT_S / 2)

    def assert_logged(self, node: NetnsNode, pattern: str, what: str) -> None:
        if not re.search(pattern, node.log_text()):
            self.fail(f"{node.id} did not log {what} (/{pattern}/)\n{self.diagnostics()}")

    # ------------------------------------------------------------------ partitions

    def test_an_unplugged_node_is_failed_on_both_sides_and_rejoins_when_plugged_back(self):
        nodes = self.seeded_cluster(3)
        n1, n2, n3 = nodes
        self.wait_full_view(nodes, CONVERGE_S)

        n3.host.unplug()
        self.wait_views_holding(
            {n1: {"n3": "failed"}, n2: {"n3": "failed"}, n3: {"n1": "failed", "n2": "failed"}},
            holding={n1: {"n2": "active"}, n2: {"n1": "active"}},
            timeout=FAILURE_TIMEOUT_S * 4,
            what="n3 failed in n1's and n2's views and n1, n2 failed in n3's")
        for n in (n1, n2):
            self.assert_logged(n, r"cluster_event event=node_failed node=n3\b", "n3's failure")
            self.assertEqual(n.health()["cluster"]["state"], "degraded", self.diagnostics())
        # Alone, n3 is a minority of the three.
        self.assertEqual(n3.health()["cluster"]["state"], "no_quorum", self.diagnostics())

        n3.host.plug()
        self.wait_full_view(nodes, RECOVERY_S)
        for n in (n1, n2):
            self.assert_logged(n, r"cluster_event event=node_recovered node=n3\b", "n3's recovery")
        for n in nodes:
            self.assertEqual(n.health()["cluster"]["state"], "healthy", self.diagnostics())

    def test_a_node_cut_off_from_one_peer_is_vouched_for_by_the_other_and_never_failed(self):
        nodes = self.seeded_cluster(3)
        n1, n2, n3 = nodes
        self.wait_full_view(nodes, CONVERGE_S)

        # Only the path n1 <-> n3 is gone; n2 still hears both and answers their probes.
        n1.host.blackhole(n3.host)
        n3.host.blackhole(n1.host)
        seen_by_n1: set[str] = set()
        seen_by_n3: set[str] = set()

        def check() -> Optional[str]:
            v1, v3 = n1.view(), n3.view()
            seen_by_n1.add(v1.get("n3"))
            seen_by_n3.add(v3.get("n1"))
            if v1.get("n3") == "failed":
                return "n1 marked n3 failed although n2 vouches for it"
            if v3.get("n1") == "failed":
                return "n3 marked n1 failed although n2 vouches for it"
            return self.views_problem({n2: {"n1": "active", "n3": "active"},
                                       n1: {"n2": "active"}, n3: {"n2": "active"}})
        self.observe(FAILURE_TIMEOUT_S * 3, check, "during the n1<->n3 cut")
        # The cut was real: each side lost the other's heartbeats and suspected it.
        self.assertIn("suspect", seen_by_n1, f"n1's statuses for n3: {seen_by_n1}\n{self.diagnostics()}")
        self.assertIn("suspect", seen_by_n3, f"n3's statuses for n1: {seen_by_n3}\n{self.diagnostics()}")

        n1.host.unblackhole(n3.host)
        n3.host.unblackhole(n1.host)
        self.wait_full_view(nodes, RECOVERY_S)
        for n in nodes:
            self.assertNotIn("event=node_failed", n.log_text(), self.diagnostics())

    # ------------------------------------------------------------------ DNS discovery

    def dns_lan(self, records: list[str]) -> Dnsmasq:
        """A 3-host LAN with dnsmasq on the switch (.254) serving `records`, and every
        host's /etc/resolv.conf naming it."""
        lan = self.make_lan(3, switch_address=254)
        self._dnsmasq = Dnsmasq(lan.switch, lan.switch_address, self.workdir, self.addCleanup,
                                records, DOMAIN)
        for host in lan.hosts:
            host.netns.use_nameserver(lan.switch_address)
        return self._dnsmasq

    def test_dns_srv_records_lead_every_node_to_a_full_view(self):
        ports = {i: free_port() for i in (1, 2, 3)}
        records = []
        for i, port in ports.items():
            records.append(f"--srv-host=_zetian._tcp.{DOMAIN},n{i}.{DOMAIN},{port},10,10")
            records.append(f"--host-record=n{i}.{DOMAIN},10.77.0.{i}")
        self.dns_lan(records)
        nodes = [self.node_on(h, f"n{h.index}",
                              {"bind": f"{h.address}:{ports[h.index]}", "discovery": "dns",
                               "dns_name": f"_zetian._tcp.{DOMAIN}"})
                 for h in self.lan.hosts]
        self.wait_full_view(nodes, CONVERGE_S)
        for n in nodes:
            self.assert_logged(n, rf"cluster_discovery name=_zetian\._tcp\.{DOMAIN} endpoints=3\b",
                               "the 3 SRV endpoints")
            members = {m["id"]: m["address"] for m in n.health()["members"]}
            self.assertEqual(members, {f"n{i}": f"10.77.0.{i}:{p}" for i, p in ports.items()},
                             self.diagnostics())

    def test_dns_a_records_without_srv_lead_every_node_to_a_full_view(self):
        port = free_port()
        records = [f"--host-record=nodes.{DOMAIN},10.77.0.{i}" for i in (1, 2, 3)]
        self.dns_lan(records)
        nodes = [self.node_on(h, f"n{h.index}",
                              {"bind": f"{h.address}:{port}", "discovery": "dns",
                               "dns_name": f"nodes.{DOMAIN}"})
                 for h in self.lan.hosts]
        self.wait_full_view(nodes, CONVERGE_S)
        for n in nodes:
            self.assert_logged(n, rf"cluster_discovery name=nodes\.{DOMAIN} endpoints=3\b",
                               "the 3 A records with its own port")

    # ------------------------------------------------------------------ multicast discovery

    def test_multicast_beacons_form_the_cluster_and_a_wrong_secret_is_ignored(self):
        lan = self.make_lan(4)
        for host in lan.hosts:
            host.route_multicast()
        group = f"239.255.1.1:{free_port()}"
        port = free_port()

        def settings(host: Host) -> dict:
            return {"bind": f"{host.address}:{port}", "discovery": "multicast",
                    "multicast_group": group}
        nodes = [self.node_on(h, f"n{h.index}", settings(h)) for h in lan.hosts[:3]]
        self.wait_full_view(nodes, CONVERGE_S)

        wrong = self.write_secret("wrong.secret", "not-the-cluster-secret-0123456789")
        stranger_host = lan.hosts[3]
        stranger = self.node_on(stranger_host, "intruder", settings(stranger_host),
                                secret_file=wrong)
        # Its beacons arrive and are refused, and it refuses ours.
        heard = rf'multicast_beacon_ignored group=\S+ source={re.escape(stranger_host.address)} reason="bad MAC"'
        wait_until(lambda: all(re.search(heard, n.log_text()) for n in nodes), 10,
                   what="every member to ignore the intruder's beacons", diagnostics=self.diagnostics)
        wait_until(lambda: re.search(r'multicast_beacon_ignored .*reason="bad MAC"', stranger.log_text()),
                   10, what="the intruder to ignore the members' beacons",
                   diagnostics=self.diagnostics)

        # Two more beacon intervals (1 s each at this heartbeat): nothing changes.
        def check() -> Optional[str]:
            for n in nodes:
                view = n.view()
                if view != {m.id: "active" for m in nodes}:
                    return f"{n.id}'s view is {view}"
            if set(stranger.view()) != {"intruder"}:
                return f"the intruder's view is {stranger.view()}"
            return None
        self.observe(2.0, check, "after the intruder's beacons")
        for n in nodes:
            text = n.log_text()
            for trace in ("id=intruder", "peer=intruder", "node=intruder"):
                self.assertNotIn(trace, text, f"{n.id} lists the intruder\n{self.diagnostics()}")


if __name__ == "__main__":
    unittest.main()
