"""contrib/prometheus/alerts.yml and contrib/grafana/zetian.json against the real
metrics: every metric they name, and every label value they select on, exists in GET
/metrics of a running zetian-milter; the rules pass `promtool check rules`, and
`promtool test rules` with tests/support/prometheus/alerts_test.yml (each alert fires
on the series meant to fire it).

The node is configured so that every family can appear: a one-node Raft cluster
(bootstrap_expect = 1, so zetian_raft_* and the cluster families), a Redis of the
test's own (zetian_redis_*), the policy host (zetian_policy_*), [metrics.statsd]
(zetian_statsd_*) and one rule (the per-rule families). A name the files use that
/metrics lacks is a panel that stays empty or an alert that can never fire.

promtool comes from Debian's `prometheus` package without installing it (which would
start a Prometheus service): `apt-get download` and `dpkg -x` into
/var/tmp/zetian-test-cache/prometheus/<version>, kept for later runs."""

import glob
import json
import os
import re
import socket
import subprocess
import tempfile
import unittest

import raft_harness
from cluster_harness import ClusterTestCase
from harness import RedisServer, free_port, rule, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ALERTS = os.path.join(ROOT, "contrib", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "zetian.json")
ALERTS_TEST = os.path.join(ROOT, "tests", "support", "prometheus", "alerts_test.yml")
PROMTOOL_CACHE = "/var/tmp/zetian-test-cache/prometheus"

SELECTOR = re.compile(r"\b(zetian_[a-zA-Z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def promtool() -> str:
    """The path of a promtool from Debian's package, fetched once into the cache."""
    cached = sorted(glob.glob(os.path.join(PROMTOOL_CACHE, "*", "usr", "bin", "promtool")))
    if cached:
        return cached[-1]
    os.makedirs(PROMTOOL_CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=PROMTOOL_CACHE) as scratch:
        download = ["apt-get", "download", "-o", "APT::Sandbox::User=root", "prometheus"]
        cp = subprocess.run(download, cwd=scratch, capture_output=True, text=True, timeout=300)
        if cp.returncode != 0:
            # A stale package list names a version the mirror no longer has.
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=300)
            cp = subprocess.run(download, cwd=scratch, capture_output=True, text=True, timeout=300)
        if cp.returncode != 0:
            raise AssertionError(f"apt-get download prometheus failed:\n{cp.stdout}{cp.stderr}")
        deb = glob.glob(os.path.join(scratch, "prometheus_*.deb"))[0]
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        unpacked = os.path.join(scratch, "root")
        subprocess.run(["dpkg", "-x", deb, unpacked], check=True, timeout=300)
        target = os.path.join(PROMTOOL_CACHE, version)
        try:
            os.rename(unpacked, target)  # atomic: a parallel run sees all of it or nothing
        except OSError:
            if not os.path.exists(os.path.join(target, "usr", "bin", "promtool")):
                raise
    return os.path.join(target, "usr", "bin", "promtool")


def series(metrics_text: str) -> dict[str, list[dict[str, str]]]:
    """Metric name -> the label sets of its samples."""
    out: dict[str, list[dict[str, str]]] = {}
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            out.setdefault(m.group(1), []).append(dict(LABEL.findall(m.group(2) or "")))
    return out


def dashboard_queries(doc: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and templating query."""
    out = []

    def panels(items):
        for p in items:
            for t in p.get("targets", []):
                out.append((f"panel {p.get('title')!r}", t.get("expr", "")))
            panels(p.get("panels", []))

    panels(doc.get("panels", []))
    for var in doc.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if var.get("type") == "query":
            out.append((f"variable {var.get('name')!r}", query or ""))
    return out


def alert_queries(path: str) -> list[tuple[str, str]]:
    """(where, expr) of every rule, read without a YAML library: each `expr:` is one
    line or a `|` block indented below it."""
    out, lines = [], open(path).read().splitlines()
    name = "?"
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- (?:alert|record): (\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2)
            if value in ("|", ">", "|-", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((f"alert {name}", " ".join(block)))
                continue
            out.append((f"alert {name}", value))
        i += 1
    return out


def problems(queries: list[tuple[str, str]], known: dict[str, list[dict[str, str]]]) -> list[str]:
    """What the queries select that /metrics does not have: an unknown name, or a label
    value (= or =~) that no sample carries. Grafana variables ($instance) match anything."""
    found = []
    for where, query in queries:
        if not SELECTOR.search(query):
            found.append(f"{where}: names no zetian_ metric: {query!r}")
        for m in SELECTOR.finditer(query):
            name, matchers = m.group(1), m.group(2) or ""
            if name not in known:
                found.append(f"{where}: {name} is not in /metrics")
                continue
            for label, op, value in MATCHER.findall(matchers):
                if "$" in value or op in ("!=", "!~"):
                    continue
                values = {s.get(label) for s in known[name]}
                ok = value in values if op == "=" else any(
                    v is not None and re.fullmatch(value, v) for v in values)
                if not ok:
                    found.append(f"{where}: no {name} sample has {label}{op}\"{value}\" (has {sorted(map(str, values))})")
    return found


class ContribMatchesMetrics(ClusterTestCase):

    def test_alerts_and_dashboard_use_only_metrics_that_exist(self):
        redis = RedisServer(self.workdir, self.addCleanup).start()
        agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        agent.bind(("127.0.0.1", 0))
        self.addCleanup(agent.close)
        policy_port = free_port()
        node = self.node("m1", cluster=raft_harness.raft_settings(1), extra={
            "redis": {"url": redis.url},
            "policy": {"socket": f"inet:{policy_port}@127.0.0.1"},
            "metrics": {"statsd": {"address": f"127.0.0.1:{agent.getsockname()[1]}", "interval": "1s"}},
            "ratelimit": {"rule": [rule("per-ip", 10)]},
        })
        # promtool while the node elects itself and connects to Redis.
        cp = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, f"promtool check rules:\n{cp.stdout}{cp.stderr}")
        # The alerts fire on the series that should fire them (and not on their neighbours).
        cp = subprocess.run([promtool(), "test", "rules", ALERTS_TEST], capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, f"promtool test rules:\n{cp.stdout}{cp.stderr}")

        # zetian_policy_requests_total has a sample once a request was answered.
        with socket.create_connection(("127.0.0.1", policy_port), timeout=10) as policy:
            policy.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=SMTP\n"
                           b"client_address=192.0.2.9\nsender=a@example.org\nrecipient=b@example.net\n\n")
            answer = b""
            while not answer.endswith(b"\n\n"):
                chunk = policy.recv(4096)
                self.assertTrue(chunk, f"the policy host closed without an answer: {answer!r}")
                answer += chunk
        self.assertTrue(answer.startswith(b"action="), answer)

        def ready():
            text = node.milter.http("GET", "/metrics")[1]
            s = series(text)
            leader = s.get("zetian_raft_is_leader") and "zetian_raft_is_leader 1" in text
            return s if leader and "zetian_redis_up 1" in text and "zetian_statsd_pushes_total" in s else None

        known = wait_until(ready, 30, what="a Raft leader, Redis up and a StatsD push in /metrics",
                           diagnostics=node.log_tail)
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        queries = alert_queries(ALERTS) + dashboard_queries(dashboard)
        self.assertGreaterEqual(len([q for q in queries if q[0].startswith("alert")]), 8)
        self.assertGreaterEqual(len(queries), 30)
        self.assertEqual(problems(queries, known), [])
        ids = [p["id"] for p in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")

    def test_the_checker_sees_a_wrong_name_and_a_wrong_label_value(self):
        known = {"zetian_cluster_members": [{"status": "failed"}, {"status": "active"}]}
        self.assertEqual(problems([("q", 'zetian_cluster_members{status="failed"}')], known), [])
        self.assertEqual(problems([("q", 'zetian_cluster_members{status=~"fail.*",instance=~"$i"}')], known), [])
        self.assertEqual(len(problems([("q", 'zetian_cluster_member{status="failed"}')], known)), 1)
        self.assertEqual(len(problems([("q", 'zetian_cluster_members{status="down"}')], known)), 1)
        self.assertEqual(len(problems([("q", 'up == 0')], known)), 1)


if __name__ == "__main__":
    unittest.main()
