#!/usr/bin/python3
"""Raft under mail load (issue 10): three zetian-milter nodes that form a Raft cluster
(bootstrap_expect = 3, default election_timeout "1s"), each behind its own throwaway
Postfix, with smtp-source sending through all three for --minutes. Counts the leader
changes and term moves after the cluster formed: a healthy cluster under load should
have none (the target is zero elections over 10 minutes).

Every node's policy has one cluster-scope exact rule per client IP with a limit far
above the run, so every message is checked, two thirds of them over the node links
that also carry Raft's heartbeats.

Run as root from the repository (after building zetian-milter):
  /usr/bin/python3 tests/bench/raft_stability.py --milter build/milter/zetian-milter --minutes 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster_nodes import Cluster, cluster_rule, loadavg  # noqa: E402  (sets the path too)

import harness  # noqa: E402
from cluster_throughput import run_sources  # noqa: E402
from harness import Postfix, SmtpSink, free_port, make_workdir, wait_until  # noqa: E402

IDS = ["r1", "r2", "r3"]


def log(msg: str) -> None:
    print(msg, flush=True)


def health(milter) -> dict:
    status, body, _ = milter.http("GET", "/health")
    return json.loads(body) if status == 200 else {}


def raft_view(milter) -> tuple[str | None, int | None]:
    """(leader, term) as a node's /health shows them, or from its log when /health has
    no Raft fields."""
    h = health(milter)
    if "term" in h:
        return h.get("leader"), h.get("term")
    lines = re.findall(r"raft_leader_changed leader=(\S+) term=(\d+)", milter.log_text())
    return (lines[-1][0], int(lines[-1][1])) if lines else (None, None)


def leader_changes(milter) -> int:
    return len(re.findall(r"raft_leader_changed", milter.log_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the mail load runs")
    ap.add_argument("--sessions", "-s", type=int, default=4, help="smtp-source -s, per Postfix")
    ap.add_argument("--batch", type=int, default=300, help="messages per smtp-source run, per Postfix")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    args = ap.parse_args()
    if args.milter:
        os.environ["ZETIAN_MILTER"] = os.path.abspath(args.milter)
    if os.geteuid() != 0 or not harness.POSTFIX or not harness.SMTP_SOURCE:
        log("needs root, postfix and smtp-source (postfix package)")
        return 2

    with contextlib.ExitStack() as stack:
        cleanup = stack.callback
        work = make_workdir("raftstab", cleanup)
        sink = SmtpSink(work, cleanup, dump=False)
        ports = [free_port() for _ in IDS]
        timing = {"heartbeat_interval": "200ms", "failure_detection_timeout": "2s", "join_timeout": "5s",
                  "bootstrap_expect": 3}
        cluster = Cluster(work, cleanup, "raft", [cluster_rule("per-client-ip", 100_000_000, scope="cluster")],
                          timing=timing)
        cluster.start(IDS, ports)

        def formed() -> bool:
            views = [raft_view(cluster.milters[i]) for i in IDS]
            return all(v[0] for v in views) and len({v for v in views}) == 1
        wait_until(formed, 60, what="one Raft leader seen by all three nodes")
        leader, term = raft_view(cluster.milters[IDS[0]])
        changes_before = {i: leader_changes(cluster.milters[i]) for i in IDS}
        log(f"Raft cluster formed: leader {leader}, term {term}")

        postfixes = []
        for k, i in enumerate(IDS):
            pdir = os.path.join(work, f"postfix-{i}")
            os.makedirs(pdir)
            os.chmod(pdir, 0o755)
            postfixes.append(Postfix(pdir, cleanup, sink.port, milter=f"inet:127.0.0.1:{ports[k]}",
                                     default_action="tempfail", smtpd_maxproc=max(20, args.sessions * 2)))

        sent = 0
        start = time.monotonic()
        deadline = start + args.minutes * 60
        while time.monotonic() < deadline:
            t = run_sources([p.port() for p in postfixes], args.batch, args.sessions)
            sent += 3 * args.batch
            elapsed = time.monotonic() - start
            now_leader, now_term = raft_view(cluster.milters[IDS[0]])
            log(f"{elapsed / 60:5.1f} min: {sent} messages ({3 * args.batch / t:.0f} msg/s), leader {now_leader}, "
                f"term {now_term}, load {loadavg()}")
            wait_until(lambda: all(p.queue_is_empty() for p in postfixes), 300, what="the queues to drain")
        elapsed = time.monotonic() - start
        changes = {i: leader_changes(cluster.milters[i]) - changes_before[i] for i in IDS}
        end_leader, end_term = raft_view(cluster.milters[IDS[0]])
        log("")
        log(f"{sent} messages through 3 Postfix in {elapsed / 60:.1f} min; leader {leader} -> {end_leader}, "
            f"term {term} -> {end_term}; leader changes seen after forming: {changes} (target: none)")
        return 0 if end_term == term and not any(changes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
