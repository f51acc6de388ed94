#!/usr/bin/env python3
"""Cluster membership measurements with real zetian-milter processes on loopback,
default timing ([cluster] heartbeat_interval 1s, failure_threshold 3,
failure_detection_timeout 10s) unless --fast:

  failover   kill -9 one node of 3; time until every other node shows it `failed`
             (polled every 20 ms); restart it, wait for the full view; N runs; p50/p99
  converge   start N nodes at once (each seeded with the first); time from the start
             of the first process until every node sees every node `active`
  idle       a formed cluster at rest for S seconds: CPU time and bytes sent per node

  python3 tests/bench/cluster_membership.py --milter build/milter/zetian-milter \\
      failover --runs 20
  python3 tests/bench/cluster_membership.py converge --nodes 3 9 --runs 3
  python3 tests/bench/cluster_membership.py idle --nodes 3 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import Milter, free_port, http_unix, wait_until  # noqa: E402
from cluster_harness import member_view as view  # noqa: E402


class Bench:
    def __init__(self, timing: dict):
        self.cleanups: list = []
        self.workdir = harness.make_workdir("bench-cluster", self.cleanups.append)
        self.secret = os.path.join(self.workdir, "secret")
        with open(self.secret, "w") as f:
            f.write(secrets.token_hex(32))
        self.timing = timing
        self.ports: dict[str, int] = {}

    def close(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}", file=sys.stderr)

    def endpoint(self, node_id: str) -> str:
        if node_id not in self.ports:
            self.ports[node_id] = free_port()
        return f"127.0.0.1:{self.ports[node_id]}"

    def node(self, node_id: str, seeds: list[str], start: bool = True) -> Milter:
        cluster = {"enabled": True, "bind": self.endpoint(node_id),
                   "seeds": [self.endpoint(s) for s in seeds], "shared_secret_file": self.secret}
        cluster.update(self.timing)
        m = Milter(self.workdir, self.cleanups.append, node_id=node_id,
                   extra={"cluster": cluster, "log": {"level": "info"}},
                   name=f"{node_id}-{secrets.token_hex(2)}")
        if start:
            m.start()
        return m


def full(nodes: dict[str, Milter]) -> bool:
    want = {i: "active" for i in nodes}
    return all(view(m) == want for m in nodes.values())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def kill9(m: Milter):
    m.process.proc.send_signal(signal.SIGKILL)
    m.process.proc.wait(10)
    m.process.stop()
    m._stopped = True


def failover(b: Bench, runs: int) -> dict:
    ids = ["n1", "n2", "n3"]
    nodes = {i: b.node(i, [] if i == "n1" else ["n1"]) for i in ids}
    wait_until(lambda: full(nodes), 120, what="full view")
    times = []
    for run in range(runs):
        victim = ids[1 + run % 2]
        others = [nodes[i] for i in ids if i != victim]
        kill9(nodes[victim])
        killed = time.monotonic()
        while not all(view(o).get(victim) == "failed" for o in others):
            if time.monotonic() - killed > 120:
                raise SystemExit(f"run {run}: {victim} never seen failed")
            time.sleep(0.02)
        took = time.monotonic() - killed
        times.append(took)
        print(f"  run {run + 1:2d}: {victim} failed everywhere after {took:.2f} s", flush=True)
        nodes[victim] = b.node(victim, ["n1"])
        wait_until(lambda: full(nodes), 120, what="full view after restart")
    return {"runs": runs, "p50_s": percentile(times, 50), "p99_s": percentile(times, 99),
            "min_s": min(times), "max_s": max(times)}


def converge(b: Bench, count: int) -> float:
    ids = [f"c{count}x{i + 1}" for i in range(count)]
    for i in ids:
        b.endpoint(i)
    nodes = {i: b.node(i, [] if i == ids[0] else [ids[0]], start=False) for i in ids}
    started = time.monotonic()
    for m in nodes.values():
        m.process = harness.ManagedProcess([m.binary, "-c", m.config_path], m.log_path, name="zetian-milter")
        b.cleanups.append(m._cleanup_stop)
    wait_until(lambda: full(nodes), 180, interval=0.02, what=f"{count}-node full view")
    took = time.monotonic() - started
    for m in nodes.values():
        m.stop()
    return took


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle(b: Bench, count: int, seconds: float) -> dict:
    ids = [f"i{i + 1}" for i in range(count)]
    nodes = {i: b.node(i, [] if i == ids[0] else [ids[0]]) for i in ids}
    wait_until(lambda: full(nodes), 120, what="full view")
    time.sleep(5)  # let the first gossip settle

    def sent(m):
        return harness.parse_metric(http_unix(m.health_socket, "GET", "/metrics")[1],
                                    "zetian_cluster_sent_bytes_total") or 0.0
    cpu0 = {i: cpu_seconds(m.pid) for i, m in nodes.items()}
    bytes0 = {i: sent(m) for i, m in nodes.items()}
    time.sleep(seconds)
    cpu = [cpu_seconds(m.pid) - cpu0[i] for i, m in nodes.items()]
    sent_bytes = [sent(m) - bytes0[i] for i, m in nodes.items()]
    return {"nodes": count, "seconds": seconds,
            "cpu_percent_per_node": statistics.mean(cpu) / seconds * 100,
            "bytes_per_s_per_node": statistics.mean(sent_bytes) / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milter", default=os.path.join(HERE, "..", "..", "build", "milter", "zetian-milter"))
    parser.add_argument("--fast", action="store_true", help="heartbeat 200ms, failure_detection_timeout 2s")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("failover")
    p.add_argument("--runs", type=int, default=20)
    p = sub.add_parser("converge")
    p.add_argument("--nodes", type=int, nargs="+", default=[3, 9])
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("idle")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    os.environ["ZETIAN_MILTER"] = os.path.abspath(args.milter)
    timing = ({"heartbeat_interval": "200ms", "failure_detection_timeout": "2s"} if args.fast else {})
    b = Bench(timing)
    try:
        if args.what == "failover":
            print(json.dumps(failover(b, args.runs)))
        elif args.what == "converge":
            for n in args.nodes:
                times = [converge(b, n) for _ in range(args.runs)]
                print(json.dumps({"nodes": n, "runs": times, "median_s": statistics.median(times)}), flush=True)
        else:
            print(json.dumps(idle(b, args.nodes, args.seconds)))
    finally:
        b.close()


if __name__ == "__main__":
    main()
