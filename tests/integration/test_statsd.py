"""[metrics.statsd]: a real zetian-milter pushing to a UDP socket the test reads as the
StatsD agent. Checks the lines an agent gets: names with the prefix in place of
`zetian_`, gauges as values, counters as changes whose sum is the /metrics total,
labels as DogStatsD tags or folded into the name, a reload that switches prefix and tag
style without sending old counts again, a reload that stops the push, and an agent
that is down costing counted, rate-limited errors and nothing else.

Traffic comes from harness.MilterClient (the milter protocol without Postfix), so the
whole file runs in seconds; the push interval is 1s, the shortest the config allows."""

import os
import socket
import time
import unittest

from harness import Milter, MilterClient, make_workdir, rule, to_toml, wait_until


class StatsdAgent:
    """A UDP socket standing in for the StatsD agent; every datagram's lines, in order."""

    def __init__(self, cleanup):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        cleanup(self.sock.close)
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self.lines: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drain(self) -> list[str]:
        """Read what has arrived; the new lines."""
        new: list[str] = []
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return new
            self.datagrams.append(data)
            lines = data.decode().split("\n")
            new.extend(lines)
            self.lines.extend(lines)

    def parsed(self, name: str, since: int = 0) -> list[tuple[float, str, dict[str, str]]]:
        """(value, type, tags) of every line for `name`, from line index `since`."""
        out = []
        for line in self.lines[since:]:
            head, _, rest = line.partition(":")
            if head != name:
                continue
            parts = rest.split("|")
            tags = {}
            for part in parts[2:]:
                if part.startswith("#"):
                    tags = dict(t.split(":", 1) for t in part[1:].split(","))
            out.append((float(parts[0]), parts[1], tags))
        return out

    def total(self, name: str, since: int = 0, **tags: str) -> float:
        """The sum of a counter's changes (lines whose tags include `tags`)."""
        return sum(v for v, kind, t in self.parsed(name, since)
                   if kind == "c" and all(t.get(k) == want for k, want in tags.items()))

    def wait_for(self, predicate, what: str, diagnostics, timeout: float = 15.0):
        return wait_until(lambda: (self.drain(), predicate())[1], timeout, what=what,
                          diagnostics=diagnostics)


def send_mail(milter: Milter, count: int, client_ip: str = "192.0.2.7") -> list[bytes]:
    """`count` MAIL FROM in one milter session; the reply codes."""
    c = MilterClient(milter.socket_spec)
    try:
        assert c.negotiate() == b"O"
        assert c.connect_stage(client_ip) == b"c"
        assert c.helo() == b"c"
        codes = []
        for _ in range(count):
            codes.append(c.mail())
            c.abort()
        return codes
    finally:
        c.quit()


class StatsdPush(unittest.TestCase):

    def start(self, statsd: dict, name: str = "milter") -> tuple[Milter, str]:
        workdir = make_workdir("statsd", self.addCleanup)
        milter = Milter(workdir, self.addCleanup, rules=[rule("per-ip", 2)],
                        extra={"metrics": {"statsd": statsd}}, name=name)
        milter.start()
        return milter, workdir

    def test_dogstatsd_lines_carry_gauges_tags_and_counter_changes(self):
        agent = StatsdAgent(self.addCleanup)
        milter, _ = self.start({"address": agent.address, "prefix": "zt", "interval": "1s"})
        # A push can take several datagrams: wait for every name looked at below.
        first_push = ["zt.build_info", "zt.limiter_max_keys", "zt.sessions_active", "zt.sessions_total",
                      "zt.decisions_total", "zt.decision_duration_seconds_count"]
        agent.wait_for(lambda: all(agent.parsed(n) for n in first_push), "a first push", milter.log_tail)

        build = agent.parsed("zt.build_info")
        self.assertTrue(build and build[0][:2] == (1.0, "g") and build[0][2].get("version"),
                        f"build_info as a gauge tagged with the version: {build}")
        self.assertEqual(agent.parsed("zt.limiter_max_keys")[0][:2], (1000000.0, "g"))
        self.assertEqual(agent.parsed("zt.sessions_active")[0][1], "g")
        self.assertTrue(agent.parsed("zt.decisions_total"), "per-rule counters are pushed before any mail")
        self.assertTrue(all(t.keys() == {"rule", "verdict"} for _, _, t in agent.parsed("zt.decisions_total")))
        self.assertFalse([l for l in agent.lines if "_bucket" in l or l.startswith("zetian")],
                         "no histogram buckets, and every name under the prefix")
        self.assertTrue(all(len(d) <= 1432 for d in agent.datagrams))

        codes = send_mail(milter, 3)
        self.assertEqual(codes[:2], [b"c", b"c"])
        self.assertNotEqual(codes[2], b"c", "the third MAIL FROM is over the limit")

        agent.wait_for(lambda: agent.total("zt.messages_total") == 3
                       and agent.total("zt.decisions_total", rule="per-ip", verdict="tempfail") == 1,
                       "the changes of 3 messages (1 tempfailed)", milter.log_tail)
        self.assertEqual(agent.total("zt.decisions_total", rule="per-ip", verdict="allow"), 2)
        self.assertEqual(agent.total("zt.sessions_total"), 1)
        # Two more pushes with no traffic: changes of 0, so the sums stay the totals.
        mark = len(agent.lines)
        agent.wait_for(lambda: len(agent.parsed("zt.messages_total", mark)) >= 2, "two more pushes",
                       milter.log_tail)
        self.assertEqual(agent.total("zt.messages_total", mark), 0, "counters are sent as changes")
        self.assertEqual(agent.total("zt.messages_total"), milter.metric("zetian_messages_total"))
        self.assertGreaterEqual(milter.metric("zetian_statsd_pushes_total"), 3)
        self.assertEqual(milter.metric("zetian_statsd_send_errors_total"), 0)

    def test_tags_none_folds_labels_and_a_reload_switches_or_stops_the_push(self):
        agent = StatsdAgent(self.addCleanup)
        statsd = {"address": agent.address, "prefix": "zt", "interval": "1s", "tags": "none"}
        milter, _ = self.start(statsd)
        agent.wait_for(lambda: agent.parsed("zt.decisions_total.per-ip.allow"), "a push without tags",
                       milter.log_tail)
        self.assertFalse([l for l in agent.lines if "|#" in l], "no DogStatsD tags with tags = \"none\"")
        send_mail(milter, 1)
        agent.wait_for(lambda: agent.total("zt.messages_total") == 1, "the first message's change",
                       milter.log_tail)

        config = milter.config_doc([rule("per-ip", 2)], [], False)
        config["metrics"]["statsd"].update({"prefix": "zr", "tags": "dogstatsd"})
        milter.write_config(text=to_toml(config))
        self.assertTrue(milter.reload_with_signal(), milter.log_tail())
        mark = len(agent.lines)
        agent.wait_for(lambda: agent.parsed("zr.messages_total", mark) and agent.parsed("zr.decisions_total"),
                       "a push under the new prefix", milter.log_tail)
        self.assertEqual(agent.total("zr.messages_total"), 0, "the message counted before is not sent again")
        self.assertTrue(agent.parsed("zr.decisions_total")[0][2] in
                        [{"rule": "per-ip", "verdict": v} for v in
                         ("allow", "tempfail", "reject", "tag", "quarantine", "dry_run")])
        send_mail(milter, 1, client_ip="192.0.2.8")
        agent.wait_for(lambda: agent.total("zr.messages_total") == 1, "the next message under the new prefix",
                       milter.log_tail)

        del config["metrics"]
        milter.write_config(text=to_toml(config))
        self.assertTrue(milter.reload_with_signal(), milter.log_tail())
        wait_until(lambda: "statsd stopped" in milter.log_text(), 10, what="the push to stop",
                   diagnostics=milter.log_tail)
        agent.drain()
        count = len(agent.datagrams)
        # The absence of a push can only be seen by waiting: three intervals.
        time.sleep(3)
        agent.drain()
        self.assertEqual(len(agent.datagrams), count, "no push after [metrics.statsd] was removed")
        self.assertIsNone(milter.metric("zetian_statsd_pushes_total"))

    def test_a_stop_pushes_the_changes_since_the_last_push(self):
        agent = StatsdAgent(self.addCleanup)
        milter, _ = self.start({"address": agent.address, "prefix": "zt", "interval": "10m"})
        self.assertEqual(send_mail(milter, 2), [b"c", b"c"])
        self.assertEqual(milter.stop(), 0)
        agent.wait_for(lambda: agent.parsed("zt.messages_total"), "the push at shutdown", milter.log_tail,
                       timeout=5)
        self.assertEqual(agent.parsed("zt.messages_total"), [(2.0, "c", {})],
                         "one push, at the stop, with everything counted since the start")

    def test_an_agent_that_is_down_costs_counted_rate_limited_errors_only(self):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there: each datagram comes back as ICMP port unreachable
        milter, _ = self.start({"address": f"127.0.0.1:{port}", "interval": "1s"})
        wait_until(lambda: (milter.metric("zetian_statsd_send_errors_total") or 0) >= 2, 15,
                   what="send errors counted", diagnostics=milter.log_tail)
        self.assertTrue(milter.running())
        self.assertEqual(send_mail(milter, 1), [b"c"], "mail is still served")
        failures = [l for l in milter.log_text().splitlines() if "statsd_send_failed" in l]
        self.assertEqual(len(failures), 1, f"one log line per minute at most: {failures}")
        self.assertIn("Connection refused", failures[0])

    def test_an_address_without_a_socket_keeps_the_old_push_and_the_same_file_is_tried_again(self):
        agent = StatsdAgent(self.addCleanup)
        milter, _ = self.start({"address": agent.address, "prefix": "zt", "interval": "1s"})
        agent.wait_for(lambda: agent.parsed("zt.messages_total"), "the first push", milter.log_tail)
        config = milter.config_doc([rule("per-ip", 2)], [], False)
        # The kernel refuses to connect a UDP socket to the broadcast address without
        # SO_BROADCAST (EACCES): a new address that gets no socket, on any machine.
        config["metrics"]["statsd"]["address"] = "255.255.255.255:8125"
        milter.write_config(text=to_toml(config))

        def refusals() -> list[str]:
            return [l for l in milter.log_text().splitlines() if "statsd not changed" in l]

        for attempt in (1, 2):
            self.assertTrue(milter.reload_with_signal(), milter.log_tail())
            wait_until(lambda: len(refusals()) == attempt, 10, what=f"refusal {attempt} in the log",
                       diagnostics=milter.log_tail)
            self.assertIn("255.255.255.255:8125: connect(): Permission denied", refusals()[-1])
            self.assertIn(f"pushing_to={agent.address}", refusals()[-1])
            mark = len(agent.lines)
            agent.wait_for(lambda: agent.parsed("zt.messages_total", mark),
                           f"a push to the old agent after refusal {attempt}", milter.log_tail)
        self.assertTrue(milter.running())
        self.assertNotIn("statsd changed", milter.log_text())


if __name__ == "__main__":
    unittest.main()
