#!/usr/bin/env python3
"""Commit latency of a replicated policy change (issue 10), as a client sees it: three
zetian-milter processes on loopback form one Raft cluster (bootstrap_expect = 3); N
changes are made one after another with PUT /policy on one node's health socket, each
timed from the request's first byte to its answer (committed by a majority, fsynced,
and in force on that node). Twice: with node.state_dir on disk (each append fsynced)
and on /dev/shm (tmpfs: fsync costs nothing there). Printed as a table of p50/p99/max
per state_dir and per node the change is sent to (the leader; a follower, which
forwards it to the leader), and what the same socket costs without Raft (GET /health; a
PUT refused with 400 by the policy loader), to tell the commit from the rest.

  python3 tests/bench/raft_commit_latency.py --milter build/milter/zetian-milter --changes 200
  python3 tests/bench/raft_commit_latency.py --changes 50 --modes shm --via leader

Issue 10's targets (docs/BENCHMARKS.md): p99 <= 10 ms with fsync, <= 1 ms without.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from cluster_harness import Node  # noqa: E402
from harness import rule  # noqa: E402
from raft_harness import (BenchTrio, percentile, policy_toml, put_policy, request, wait_formed,  # noqa: E402
                          wait_version)

MODES = {"disk": None, "shm": "/dev/shm"}


def fs_type(path: str) -> str:
    """The type of the file system `path` is on, from /proc/mounts (the longest mount
    point that holds it)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            mount = fields[1]
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, fields[2]
    return kind


class Cluster(BenchTrio):
    """Three nodes with their state_dir under `state_root`, formed and at version 1."""

    def __init__(self, state_root: str, election_timeout: str):
        super().__init__("bench-raft", election_timeout, state_root)
        self.state_root = state_root
        self.leader = wait_formed(self.nodes, timeout=60)
        wait_version(self.nodes, 1, timeout=60)


def measure(node: Node, changes: int, warmup: int, serial: list[int]) -> list[float]:
    """Milliseconds of each of `changes` PUT /policy on `node` (after `warmup` untimed)."""
    out = []
    for k in range(warmup + changes):
        serial[0] += 1
        text = policy_toml(rule("per_ip", 1000 + serial[0], "1h"))
        start = time.perf_counter()
        status, body = put_policy(node, text)
        elapsed = (time.perf_counter() - start) * 1000.0
        if status != 200:
            raise SystemExit(f"PUT /policy on {node.id} answered {status}: {body}")
        if k >= warmup:
            out.append(elapsed)
    return out


def baseline(node: Node, count: int) -> dict[str, list[float]]:
    """What a change costs without Raft, on the same socket: GET /health (the HTTP round
    trip) and a PUT /policy the node refuses with 400 (the round trip, the body and the
    policy loader's check; nothing proposed)."""
    bad = policy_toml(rule("per_ip", 1000, "1h")).replace("limit = 1000", 'limit = "many"')
    out: dict[str, list[float]] = {"GET /health": [], "PUT refused (400)": []}
    for _ in range(count):
        for what, call in (("GET /health", lambda: request(node, "GET", "/health")),
                           ("PUT refused (400)", lambda: put_policy(node, bad))):
            start = time.perf_counter()
            status, body = call()
            out[what].append((time.perf_counter() - start) * 1000.0)
            if status != (200 if what == "GET /health" else 400):
                raise SystemExit(f"{what} on {node.id} answered {status}: {body}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or the newest build)")
    ap.add_argument("--changes", type=int, default=200, help="timed changes per row (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed changes first (default 10)")
    ap.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["disk", "shm"])
    ap.add_argument("--via", nargs="+", choices=["leader", "follower"], default=["leader", "follower"])
    ap.add_argument("--disk-dir", default=tempfile.gettempdir(),
                    help="where the disk mode's state_dirs go (default: the temp folder)")
    ap.add_argument("--election-timeout", default="1s", help='[cluster] election_timeout (default "1s")')
    args = ap.parse_args()
    if args.milter:
        os.environ["ZETIAN_MILTER"] = os.path.abspath(args.milter)
    harness.milter_binary()

    rows = []
    for mode in args.modes:
        parent = MODES[mode] or args.disk_dir
        root = tempfile.mkdtemp(prefix="zt-raft-bench-", dir=parent)
        cluster = None
        try:
            cluster = Cluster(root, args.election_timeout)
            serial = [0]
            for via in args.via:
                node = cluster.leader if via == "leader" else next(n for n in cluster.nodes if n is not cluster.leader)
                ms = measure(node, args.changes, args.warmup, serial)
                rows.append((f"{mode} ({fs_type(root)})", via, "PUT committed", len(ms), percentile(ms, 50),
                             percentile(ms, 99), max(ms)))
                print(f"  {mode} via {via}: done", file=sys.stderr)
            if mode == args.modes[0]:
                for what, ms in baseline(cluster.leader, args.changes).items():
                    rows.append(("-", "leader", what, len(ms), percentile(ms, 50), percentile(ms, 99), max(ms)))
        finally:
            if cluster is not None:
                cluster.close()
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nPUT /policy commit latency, 3 nodes on loopback, election_timeout {args.election_timeout}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'state_dir':<16} {'sent to':<9} {'request':<18} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for where, via, what, n, p50, p99, worst in rows:
        print(f"{where:<16} {via:<9} {what:<18} {n:>5} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
