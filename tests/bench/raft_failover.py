#!/usr/bin/env python3
"""Leader failover of the replicated policy (issue 10): three zetian-milter processes on
loopback in one Raft cluster, default Raft settings (election_timeout "1s", randomized
in [1s, 2s)). Each round kills the leader with SIGKILL and measures, from the kill:

  elected   until both survivors name the same new leader in /health (polled every 10 ms)
  accepted  until a change is accepted: PUT /policy is sent to a survivor over and over
            (each attempt given at most --attempt-timeout seconds, the survivors in turn)
            until one answers 200 (committed by the new majority and in force there)

then restarts the killed node and waits until it has caught up, before the next round.
Prints p50/p99/max of both over the rounds.

  python3 tests/bench/raft_failover.py --milter build/milter/zetian-milter --rounds 50
  python3 tests/bench/raft_failover.py --rounds 10 --election-timeout 300ms

Issue 10's targets (docs/BENCHMARKS.md): accepted p50 <= 1 s, p99 <= 2 s over 50 kills.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from cluster_harness import Node  # noqa: E402
from harness import rule, wait_until  # noqa: E402
from raft_harness import (BenchTrio, formed, health, leader_of, percentile, policy_toml,  # noqa: E402
                          policy_version, put_policy, restart, wait_formed)


def Cluster(election_timeout: str) -> BenchTrio:
    return BenchTrio("bench-failover", election_timeout)


def settled(nodes: list[Node]) -> Node | None:
    """The leader, once all three agree on it and apply the same policy version."""
    leader = formed(nodes)
    if leader is None:
        return None
    versions = {policy_version(n) for n in nodes}
    return leader if len(versions) == 1 and None not in versions else None


def one_round(nodes: list[Node], serial: int, attempt_timeout: float) -> tuple[float, float, str, str]:
    leader = wait_until(lambda: settled(nodes), 60, what="a settled cluster")
    survivors = [n for n in nodes if n is not leader]
    elected_at: list[float] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            new = leader_of(survivors)
            if new is not None:
                elected_at.append(time.monotonic())
                return
            stop.wait(0.01)

    leader.kill9()
    killed_at = time.monotonic()
    watcher = threading.Thread(target=watch, name="election-watch", daemon=True)
    watcher.start()
    text = policy_toml(rule("per_ip", 2000 + serial, "1h"))
    attempt = 0
    while True:
        to = survivors[attempt % 2]
        attempt += 1
        try:
            status, _ = put_policy(to, text, timeout=attempt_timeout)
        except OSError:  # the attempt's time is up: try the other survivor
            status = 0
        if status == 200:
            accepted_at = time.monotonic()
            break
        if time.monotonic() - killed_at > 60:
            raise SystemExit(f"no change accepted within 60 s of the kill\n"
                             + "\n".join(n.log_tail(30) for n in survivors))
        if status != 0:
            time.sleep(0.01)  # a quick refusal (no leader yet): do not spin
    watcher.join(60)
    stop.set()
    new_leader = leader_of(survivors)
    restart(leader)
    elected = (elected_at[0] if elected_at else accepted_at) - killed_at
    return elected, accepted_at - killed_at, leader.id, new_leader.id if new_leader else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or the newest build)")
    ap.add_argument("--rounds", type=int, default=50, help="kills of the leader (default 50)")
    ap.add_argument("--election-timeout", default="1s", help='[cluster] election_timeout (default "1s")')
    ap.add_argument("--attempt-timeout", type=float, default=1.0,
                    help="seconds one PUT attempt may take before the other survivor is tried (default 1)")
    args = ap.parse_args()
    if args.milter:
        os.environ["ZETIAN_MILTER"] = os.path.abspath(args.milter)
    harness.milter_binary()

    cluster = Cluster(args.election_timeout)
    elected, accepted = [], []
    try:
        wait_formed(cluster.nodes, timeout=60)
        for r in range(args.rounds):
            e, a, old, new = one_round(cluster.nodes, r, args.attempt_timeout)
            elected.append(e * 1000.0)
            accepted.append(a * 1000.0)
            print(f"  round {r + 1}: killed {old}, new leader {new}: elected {e * 1000:.0f} ms, "
                  f"change accepted {a * 1000:.0f} ms", file=sys.stderr)
        wait_until(lambda: settled(cluster.nodes), 60, what="a settled cluster at the end")
        changes = [(health(n) or {}).get("raft", {}).get("leader_changes") for n in cluster.nodes]
    finally:
        cluster.close()

    print(f"\nkill -9 of the Raft leader, 3 nodes on loopback, election_timeout {args.election_timeout}, "
          f"{len(accepted)} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'from the kill until':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for what, ms in (("both survivors name a new leader", elected), ("a change is accepted (PUT 200)", accepted)):
        print(f"{what:<36} {percentile(ms, 50):>8.0f} {percentile(ms, 99):>8.0f} {max(ms):>8.0f}")
    print(f"leader changes seen per node since its (re)start: {changes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
