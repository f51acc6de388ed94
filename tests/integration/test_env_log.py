"""Configuration from the environment and debug logging, with real zetian-milter nodes.

Two nodes whose seeds, shared secret, log level and [log] heartbeats come from
ZETIAN_* variables (docs/configuration.md, "Configuration from the environment"); then
`zetianctl log level debug` on one of them turns the heartbeat lines on, and their
budget caps them (cluster_trace_suppressed); a SIGUSR1 reload applies the same
environment again and gives the level back to it.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import subprocess
import unittest

from cluster_harness import ClusterTestCase, Node
from harness import Milter, make_workdir, milter_binary, wait_until

# cluster/trace_log.h: kTraceLinesPerWindow lines per kTraceWindow (1 s).
TRACE_LINES_PER_SECOND = 10


class EnvironmentAndTraceTest(ClusterTestCase):
    # The shortest interval the schema allows: 2 nodes then make 20 heartbeat lines a
    # second on each (10 sent, 10 received), twice the budget.
    timing = {"heartbeat_interval": "100ms", "failure_threshold": 3, "success_threshold": 2,
              "failure_detection_timeout": "2s", "join_timeout": "5s"}

    def env_node(self, node_id: str, seeds: list[str], secret: str) -> Node:
        """A node whose file has no seeds, no secret and log level debug; the
        environment gives all three (info for the level) and its id."""
        settings = {"enabled": True, "bind": self.endpoint(node_id)}
        settings.update(self.timing)
        env = {
            "ZETIAN_NODE_ID": node_id,
            "ZETIAN_CLUSTER_SEEDS": json.dumps([self.endpoint(s) for s in seeds]),
            "ZETIAN_CLUSTER_SHARED_SECRET": secret,
            "ZETIAN_LOG_LEVEL": "info",
            "ZETIAN_LOG_HEARTBEATS": "true",
            "ZETIAN_LOG_SYNC": "true",
            # A Raft cluster of the two, whose messages are sync lines.
            "ZETIAN_CLUSTER_BOOTSTRAP_EXPECT": "2",
        }
        n = Node(self, node_id, settings, None, env)
        # The file names another id: the environment's must win.
        n.milter.node_id = f"file-{node_id}"
        n.milter.write_config()
        self.nodes.append(n)
        return n.start()

    def test_environment_config_then_heartbeat_lines_on_demand(self):
        secret = secrets.token_hex(24)
        self.endpoint("e1")
        self.endpoint("e2")
        # Started one after the other: each waits for /ready, which a lone first node
        # reaches at join_timeout at the latest.
        e1 = self.env_node("e1", [], secret)
        e2 = self.env_node("e2", ["e1"], secret)
        nodes = [e1, e2]
        self.wait_full_view(nodes)

        for n in nodes:
            health = n.health()
            self.assertEqual(health["node_id"], n.id, "ZETIAN_NODE_ID beats the file's node.id")
            self.assertEqual(health["log_level"], "info", "ZETIAN_LOG_LEVEL beats the file's level")
            log = n.log_text()
            self.assertIn("config_overrides environment=ZETIAN_CLUSTER_BOOTSTRAP_EXPECT,ZETIAN_CLUSTER_SEEDS,"
                          "ZETIAN_CLUSTER_SHARED_SECRET,"
                          "ZETIAN_LOG_HEARTBEATS,ZETIAN_LOG_LEVEL,ZETIAN_LOG_SYNC,ZETIAN_NODE_ID", log)
            # At level info the heartbeat switch alone writes nothing.
            self.assertNotIn("cluster_heartbeat_", log)
            self.assertNotIn("cluster_sync_", log)

        done = e1.ctl("log", "level", "debug")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("log level: debug (file: info; heartbeats on, sync on)", done.stdout)
        self.assertEqual(e1.health()["log_level"], "debug")
        self.assertIn("log_level level=debug previous=info source=admin", e1.log_text())

        # Both directions show up, then the budget's summary: twice as many lines are
        # offered as it lets through.
        wait_until(lambda: "cluster_heartbeat_sent to=e2" in e1.log_text()
                   and "cluster_heartbeat_received from=e2" in e1.log_text(), 10,
                   what="heartbeat lines on e1", diagnostics=e1.log_tail)
        # The Raft drivers talk on their own (status, elections, heartbeats).
        wait_until(lambda: re.search(r"cluster_sync_(sent to|received from)=e2 type=raft", e1.log_text()), 10,
                   what="Raft sync lines on e1", diagnostics=e1.log_tail)
        summary = re.compile(r"cluster_trace_suppressed kind=heartbeats lines=(\d+) window_ms=1000")
        wait_until(lambda: summary.search(e1.log_text()), 10, what="a suppressed-lines summary on e1",
                   diagnostics=e1.log_tail)
        log = e1.log_text()
        self.assertGreater(int(summary.search(log).group(1)), 0)
        # Windows of a second never overlap, so one second of the clock meets at most two.
        per_second = collections.Counter(line.split(" ", 1)[0] for line in log.splitlines()
                                         if "cluster_heartbeat_" in line)
        self.assertLessEqual(max(per_second.values()), 2 * TRACE_LINES_PER_SECOND, per_second)
        # The other node was not asked: still at info, no heartbeat lines.
        self.assertNotIn("cluster_heartbeat_", e2.log_text())

        # A reload reads the file (level debug) and the same environment again (info):
        # the run-time level ends, the environment's stays.
        self.assertTrue(e1.milter.reload_with_signal())
        self.assertEqual(e1.health()["log_level"], "info")
        self.assertEqual(e1.health()["node_id"], "e1")
        self.assertIn("log_level level=info previous=debug source=reload", e1.log_text())
        shown = e1.ctl("log", "level")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("log level: info (file: info; heartbeats on, sync on)", shown.stdout)

        # A secret from the environment is never logged.
        for n in nodes:
            self.assertNotIn(secret, n.log_text())

        refused = e1.ctl("log", "level", "loud")
        self.assertEqual(refused.returncode, 2)
        self.assertIn("unknown log level `loud`", refused.stderr)


class EnvironmentCheckTest(unittest.TestCase):
    """--check-config with ZETIAN_* variables: what the daemon would refuse or take."""

    def setUp(self):
        self.workdir = make_workdir("env-check", self.addCleanup)
        self.milter = Milter(self.workdir, self.addCleanup)

    def check(self, env: dict, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([milter_binary(), "-c", self.milter.config_path, "--check-config", *args],
                              env=dict(os.environ, **env), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=15)

    def test_errors_name_the_variable_and_set_wins(self):
        secret = "tiny-" + secrets.token_hex(3)
        r = self.check({"ZETIAN_NODE_IDX": "mx1", "ZETIAN_LOG_LEVEL": "loud", "ZETIAN_CLUSTER_ENABLED": "true",
                        "ZETIAN_CLUSTER_SHARED_SECRET": secret, "ZETIAN_CTL": "/usr/bin/zetianctl"})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("ZETIAN_NODE_IDX: no such key; did you mean ZETIAN_NODE_ID?", r.stderr)
        self.assertIn("ZETIAN_LOG_LEVEL: `log.level` must be one of", r.stderr)
        self.assertIn("ZETIAN_CLUSTER_SHARED_SECRET: the cluster's shared secret is too short", r.stderr)
        self.assertNotIn(secret, r.stdout + r.stderr)
        self.assertNotIn("ZETIAN_CTL", r.stderr, "a variable of another use is no configuration")
        # --set comes after the environment: its value is the one checked.
        r = self.check({"ZETIAN_LOG_LEVEL": "loud"}, "--set", "log.level=info")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
