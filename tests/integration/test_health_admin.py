"""The health socket (HTTP over a Unix socket) and zetianctl: health, liveness,
readiness, metrics, and seeing and clearing a counter so mail flows again."""

import json
import os
import subprocess
import unittest

from harness import PostfixTestCase, ctl_binary, metric_samples, rule


class HealthSocketAndCli(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    def test_health_live_and_ready_answer_over_the_unix_socket(self):
        milter = self.start_milter([rule("per-ip", 5)], node_id="itest-health")
        status, body, headers = milter.http("GET", "/health")
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        for field in ("node_id", "status", "uptime_s", "version", "maintenance", "members"):
            self.assertIn(field, doc, f"/health lacks {field}: {body}")
        self.assertEqual(doc["node_id"], "itest-health")
        self.assertIsInstance(doc["members"], list)
        self.assertFalse(doc["maintenance"])
        # No Raft yet: no leader (null, never a stand-in id) and no term at all.
        self.assertIn("leader", doc)
        self.assertIsNone(doc["leader"], body)
        self.assertNotIn("term", doc, body)
        for path in ("/live", "/ready"):
            status, body, _ = milter.http("GET", path)
            self.assertEqual(status, 200, f"GET {path}: {body}")

    def test_metrics_count_decisions_by_rule_and_verdict(self):
        milter = self.start_milter([rule("per-ip", 1)])
        first, second = self.send(2, source="127.0.0.2")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1")
        status, text, headers = milter.http("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/plain"), headers)
        samples = [(labels, v) for labels, v in metric_samples(text, "zetian_decisions_total")
                   if labels.get("rule") == "per-ip"]
        self.assertTrue(samples, "no zetian_decisions_total{rule=\"per-ip\",...} sample:\n" + text)
        self.assertGreaterEqual(sum(v for _, v in samples), 2, samples)
        self.assertGreaterEqual(len({labels.get("verdict") for labels, _ in samples}), 2,
                                f"one accepting and one denying verdict: {samples}")

    def test_zetianctl_status_health_and_metrics_succeed(self):
        milter = self.start_milter([rule("per-ip", 5)], node_id="itest-ctl")
        for args in (["status"], ["health"], ["metrics"]):
            cp = milter.ctl(*args)
            self.assertEqual(cp.returncode, 0, f"zetianctl {' '.join(args)}: {cp.stdout}{cp.stderr}")
        metrics = milter.ctl("metrics").stdout
        self.assertIn("zetian_", metrics)
        # The health server's own counters are exported (the refused and timed-out ones
        # are driven in the unit tests).
        for name in ("zetian_health_connections_refused_total", "zetian_health_accept_errors_total",
                     "zetian_health_connections_shed_total", "zetian_health_requests_timed_out_total",
                     "zetian_health_connections_overflowed_total"):
            self.assertEqual(len(metric_samples(metrics, name)), 1, f"{name} missing:\n{metrics}")
        cp = milter.ctl("--json", "health")
        if cp.returncode == 0:
            self.assertEqual(json.loads(cp.stdout)["node_id"], "itest-ctl")

    def test_zetianctl_says_clearly_when_the_socket_is_missing(self):
        milter = self.start_milter([rule("per-ip", 5)])
        missing = os.path.join(self.workdir, "no-such.sock")
        cp = subprocess.run([ctl_binary(), "-s", missing, "status"], capture_output=True,
                            text=True, timeout=15)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn(missing, cp.stdout + cp.stderr, "the message names the socket")
        self.assertTrue(milter.running())

    def test_limits_show_lists_the_bucket_and_reset_lets_mail_flow_again(self):
        milter = self.start_milter([rule("per-ip", 1)])
        first, second = self.send(2, source="127.0.0.4")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", what="MAIL FROM over the limit")

        cp = milter.ctl("limits", "show", "--rule", "per-ip")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("127.0.0.4", cp.stdout, "the bucket of 127.0.0.4 is listed")
        status, body, _ = milter.http("GET", "/limits?rule=per-ip&key=127.0.0.4")
        self.assertEqual(status, 200, body)
        self.assertIn("127.0.0.4", body)

        cp = milter.ctl("limits", "reset", "per-ip", "127.0.0.4")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        [after] = self.send(1, source="127.0.0.4")
        self.assertAccepted(after, "message after limits reset")

    def test_limits_show_stops_at_its_limit_and_the_cursor_goes_on(self):
        milter = self.start_milter([rule("per-ip", 5)])
        sources = ("127.0.0.4", "127.0.0.5", "127.0.0.6")
        for source in sources:
            self.assertAccepted(self.send(1, source=source)[0])

        cp = milter.ctl("limits", "show")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        for source in sources:
            self.assertIn(source, cp.stdout)
        self.assertNotIn("stopped at", cp.stdout)

        cp = milter.ctl("--json", "limits", "show", "--limit", "2")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        doc = json.loads(cp.stdout)
        self.assertEqual(len(doc["limits"]), 2, cp.stdout)
        self.assertTrue(doc["more"], cp.stdout)
        self.assertIsInstance(doc["next"], str, cp.stdout)
        # The token is the daemon's own: the rest of the listing is there after it.
        status, body, _ = milter.http("GET", "/limits?after=" + doc["next"])
        self.assertEqual(status, 200, body)
        seen = {entry["key"] for entry in doc["limits"] + json.loads(body)["limits"]}
        self.assertEqual(seen, set(sources))

    def test_limits_reset_over_http_clears_only_the_named_key(self):
        milter = self.start_milter([rule("per-ip", 1)])
        for source in ("127.0.0.4", "127.0.0.5"):
            first, second = self.send(2, source=source)
            self.assertAccepted(first)
            self.assertReply(second.mail, 451, "4.7.1")
        status, body, _ = milter.http("POST", "/limits/reset?rule=per-ip&key=127.0.0.4")
        self.assertEqual(status, 200, body)
        self.assertAccepted(self.send(1, source="127.0.0.4")[0], "reset key flows again")
        self.assertReply(self.send(1, source="127.0.0.5")[0].mail, 451, "4.7.1",
                         what="the other key is still limited")


if __name__ == "__main__":
    unittest.main()
