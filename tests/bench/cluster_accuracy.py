#!/usr/bin/python3
"""Accuracy of cluster-wide limits on real nodes (issue 8): offered against admitted.

Every scenario starts fresh zetian-milter nodes on loopback (cluster timing of the
integration tests: heartbeat 200 ms, failure_detection_timeout 2 s; replication every
250 ms, replication_factor 2, fail_mode local) with one rule: LIMIT per hour per client
IP, stage mail. The client is harness.MilterClient, the milter protocol spoken directly
(no Postfix: the count is the milter's decision, one SMTP transaction per milter
session: negotiate, connect, HELO, MAIL FROM), one client IP per scenario.

  one_by_one    3 x LIMIT messages one after another, round-robin over 3 nodes
  all_at_once   3 x LIMIT sessions, round-robin over 3 nodes, opened first, then all
                MAIL FROMs released together (a barrier)
  node_scope    one_by_one with scope = "node" (reference: each node counts alone)
  kill_now      LIMIT / 2 one by one, then kill -9 of the key's owner right after the
                last answer (no wait: what it granted since its last replication round
                is lost), then the rest of 3 x LIMIT round-robin over the survivors
  kill_synced   the same, but the kill waits until the first replica's bucket shows the
                LIMIT / 2 charges (a replication round after the last one)
  join          LIMIT / 2 one by one over 3 nodes, then a 4th node (which the key's
                hash puts first among the four: the key moves to it with hand-off)
                starts while messages keep coming every 20 ms round-robin over the
                nodes up (the new one included once it serves), until the four see
                each other and at least 3 x LIMIT were offered
  join_quiet    the same, but the new node gets messages only once the four see each
                other active (its MTA held back until it has joined)
  restart       LIMIT / 2 one by one, then the key's owner is stopped (SIGTERM: it
                leaves and hands its keys off) and started again on the same state_dir
                while messages keep coming every 20 ms round-robin over the nodes up
                (the restarted one once it serves), until the three see each other
                again and at least 3 x LIMIT were offered
  restart_synced  the same, but the stop waits until the first replica's bucket shows
                the LIMIT / 2 charges

Run from the repository (after building zetian-milter); root is not needed:
  python3 tests/bench/cluster_accuracy.py --milter build/milter/zetian-milter
`--consistency fast` puts consistency = "fast" in the rule (once leases exist);
`--sync-interval` sets [cluster] sync_interval for those rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster_nodes import (FAST_TIMING, Cluster, cluster_rule, loadavg, member_view,  # noqa: E402
                           owner_of, store_key, wait_until)

from harness import MilterClient, make_workdir  # noqa: E402

RULE = "per_ip"
IDS = ["n1", "n2", "n3"]
SCENARIOS = ["one_by_one", "all_at_once", "node_scope", "kill_now", "kill_synced", "join", "join_quiet",
             "restart", "restart_synced"]


def log(msg: str) -> None:
    print(msg, flush=True)


def mail_once(milter, ip: str) -> bytes | None:
    """One transaction's MAIL FROM through `milter`: its reply code, None when the node
    does not answer (it is dead)."""
    try:
        c = MilterClient(milter.socket_spec)
    except OSError:
        return None
    try:
        c.negotiate()
        c.connect_stage(ip)
        c.helo()
        return c.mail("<s@example.org>")
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            c.quit()


class Scenario:
    def __init__(self, args, name: str):
        self.args = args
        self.name = name
        self.limit = args.limit
        self.offered = 0
        self.admitted = 0
        self.notes = ""
        self.trace: list[str] = []  # --trace: one line per message
        self.t0 = time.monotonic()

    def cluster(self, stack, scope: str = "cluster") -> Cluster:
        cleanup = stack.callback
        work = make_workdir(f"acc-{self.name[:8]}", cleanup)
        timing = dict(FAST_TIMING)
        if self.args.sync_interval:
            timing["sync_interval"] = self.args.sync_interval
        c = Cluster(work, cleanup, "a", [cluster_rule(RULE, self.limit, scope=scope,
                                                      consistency=self.args.consistency)],
                    fail_mode="local", timing=timing, log_level=self.args.log_level)
        stack.callback(c.stop)
        return c

    def send(self, milter, ip: str) -> bytes | None:
        code = mail_once(milter, ip)
        if self.args.trace:
            self.trace.append(f"  {time.monotonic() - self.t0:7.3f} s  via {milter.node_id}: "
                              f"{'no answer' if code is None else code.decode()}")
        if code is not None:
            self.offered += 1
            self.admitted += code == b"c"
        return code

    def round_robin(self, c: Cluster, ids: list[str], ip: str, count: int) -> None:
        for i in range(count):
            self.send(c.milters[ids[i % len(ids)]], ip)


def remaining_on(milter, ip: str) -> int | None:
    q = urllib.parse.urlencode({"rule": RULE, "key": ip})
    try:
        status, body, _ = milter.http("GET", "/limits?" + q)
    except OSError:
        return None
    if status != 200:
        return None
    rows = json.loads(body)["limits"]
    return int(rows[0]["remaining"]) if rows else None


def run(args, name: str, index: int) -> Scenario:
    s = Scenario(args, name)
    L = s.limit
    ip = f"192.0.2.{10 + index}"
    with contextlib.ExitStack() as stack:
        if name in ("one_by_one", "node_scope"):
            c = s.cluster(stack, scope="node" if name == "node_scope" else "cluster").start(IDS)
            s.round_robin(c, IDS, ip, 3 * L)
        elif name == "all_at_once":
            c = s.cluster(stack).start(IDS)
            n = 3 * L
            barrier = threading.Barrier(n, timeout=60)
            lock = threading.Lock()
            errors: list[str] = []

            def one(i: int):
                try:
                    client = MilterClient(c.milters[IDS[i % 3]].socket_spec, timeout=30)
                    try:
                        client.negotiate()
                        client.connect_stage(ip)
                        client.helo()
                        barrier.wait()
                        code = client.mail("<s@example.org>")
                    finally:
                        client.quit()
                    with lock:
                        s.offered += 1
                        s.admitted += code == b"c"
                except Exception as e:  # reported with the row
                    barrier.abort()
                    errors.append(f"{type(e).__name__}: {e}")
            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            if errors:
                s.notes = f"{len(errors)} sessions failed: {errors[0]}"
        elif name in ("kill_now", "kill_synced"):
            c = s.cluster(stack).start(IDS)
            owner = owner_of(store_key(RULE, ip), IDS)
            survivors = [i for i in IDS if i != owner]
            replica = owner_of(store_key(RULE, ip), survivors)
            first = L // 2
            s.round_robin(c, IDS, ip, first)
            if name == "kill_synced":
                t0 = time.monotonic()
                wait_until(lambda: (remaining_on(c.milters[replica], ip) or L + 1) <= L - first, 10,
                           what=f"{replica} to hold the key's state after {first} charges")
                s.notes = f"replica {replica} in sync {1000 * (time.monotonic() - t0):.0f} ms after the last send; "
            held = remaining_on(c.milters[replica], ip)
            c.kill9(owner)
            s.round_robin(c, survivors, ip, 3 * L - first)
            s.notes += (f"owner {owner} killed after {first} admitted; replica {replica} showed "
                        f"{held if held is not None else 'no bucket'} remaining at the kill")
        elif name in ("join", "join_quiet"):
            ids4 = IDS + ["n4"]
            # A client IP whose key the newcomer owns among the four.
            for last in range(10 + index, 255):
                ip = f"192.0.2.{last}"
                if owner_of(store_key(RULE, ip), ids4) == "n4":
                    break
            c = s.cluster(stack).start(IDS)
            old_owner = owner_of(store_key(RULE, ip), IDS)
            first = L // 2
            s.round_robin(c, IDS, ip, first)
            c.endpoint("n4")
            joined = threading.Event()
            start_error: list[str] = []

            def start_n4():
                try:
                    c.add("n4")
                    joined.set()
                except Exception as e:  # reported with the row
                    start_error.append(f"{type(e).__name__}: {e}")
            starter = threading.Thread(target=start_n4)
            t0 = time.monotonic()
            starter.start()
            full_view_at = None
            i = 0
            while time.monotonic() - t0 < 30:
                serving = full_view_at is not None if name == "join_quiet" else joined.is_set()
                up = ids4 if serving else IDS
                s.send(c.milters[up[i % len(up)]], ip)
                i += 1
                if full_view_at is None and joined.is_set() and all(
                        all(member_view(c.milters[m]).get(j) == "active" for j in ids4) for m in ids4):
                    full_view_at = time.monotonic() - t0
                if full_view_at is not None and s.offered >= 3 * L:
                    break
                time.sleep(0.02)  # pacing of the offered load, not synchronisation
            starter.join(30)
            moved = c.metric(old_owner, "zetian_limit_buckets_handed_off_total")
            per_node = ", ".join(
                f"{m} served {c.metric(m, 'zetian_limit_calls_served_total'):.0f} "
                f"held {c.metric(m, 'zetian_limit_calls_held_total'):.0f} "
                f"forwarded {c.metric(m, 'zetian_limit_calls_forwarded_total'):.0f} "
                f"fallbacks {c.metric(m, 'zetian_fallbacks_total'):.0f}" for m in ids4)
            s.notes = (f"key owned by {old_owner}, then n4; n4 seen by all after "
                       f"{full_view_at if full_view_at is None else round(full_view_at, 2)} s; "
                       f"{old_owner} handed off {moved:.0f} bucket states; {per_node}"
                       + (f"; n4 failed to start: {start_error[0]}" if start_error else ""))
        elif name in ("restart", "restart_synced"):
            c = s.cluster(stack).start(IDS)
            owner = owner_of(store_key(RULE, ip), IDS)
            first = L // 2
            s.round_robin(c, IDS, ip, first)
            if name == "restart_synced":
                replica = owner_of(store_key(RULE, ip), [i for i in IDS if i != owner])
                wait_until(lambda: (remaining_on(c.milters[replica], ip) or L + 1) <= L - first, 10,
                           what=f"{replica} to hold the key's state after {first} charges")
            restarted = threading.Event()
            start_error: list[str] = []

            def restart():
                try:
                    c.milters[owner].stop()
                    c.milters[owner].start()
                    restarted.set()
                except Exception as e:  # reported with the row
                    start_error.append(f"{type(e).__name__}: {e}")
            restarter = threading.Thread(target=restart)
            t0 = time.monotonic()
            restarter.start()
            back_at = None
            i = 0
            while time.monotonic() - t0 < 30:
                up = IDS if restarted.is_set() else [n for n in IDS if n != owner]
                s.send(c.milters[up[i % len(up)]], ip)
                i += 1
                if back_at is None and restarted.is_set() and all(
                        all(member_view(c.milters[m]).get(j) == "active" for j in IDS) for m in IDS):
                    back_at = time.monotonic() - t0
                if back_at is not None and s.offered >= 3 * L:
                    break
                time.sleep(0.02)  # pacing of the offered load, not synchronisation
            restarter.join(30)
            s.notes = (f"owner {owner} restarted; all three active again after "
                       f"{back_at if back_at is None else round(back_at, 2)} s"
                       + (f"; restart failed: {start_error[0]}" if start_error else ""))
        else:
            raise ValueError(name)
        if args.consistency == "fast":
            # Whether leases decided anything: a killed or restarted node's counter is gone.
            up = [i for i, m in c.milters.items() if m.running()]
            leased = sum(c.metric(i, "zetian_lease_tokens_consumed_total") for i in up)
            s.notes += f"{'; ' if s.notes else ''}decided from a lease: {leased:.0f} (on {', '.join(up)})"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--runs", "-r", type=int, default=3, help="runs of each scenario")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--consistency", default="exact", choices=["exact", "fast"])
    ap.add_argument("--sync-interval", help="[cluster] sync_interval (fast mode), e.g. 250ms")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    ap.add_argument("--trace", action="store_true",
                    help="print every message: seconds since the scenario's first, node, reply "
                         "(c: continue, y/t: refused)")
    ap.add_argument("--log-level", default="info", help="the nodes' log.level (debug: one line per decision; "
                    "ZETIAN_KEEP_TMP=1 keeps the logs)")
    args = ap.parse_args()
    if args.milter:
        os.environ["ZETIAN_MILTER"] = args.milter
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; known: {', '.join(SCENARIOS)}")

    rows = []
    for name in names:
        for r in range(args.runs):
            load = loadavg()
            s = run(args, name, 10 * names.index(name) + r)
            rows.append((name, s, load))
            for line in s.trace:
                log(line)
            log(f"{name:<12} run {r + 1}: offered {s.offered:3d}  admitted {s.admitted:3d}  "
                f"(limit {s.limit}; load {load})  {s.notes}")
    log("")
    log(f"limit {args.limit}/h per client IP, consistency {args.consistency}, 3 nodes"
        + (f", sync_interval {args.sync_interval}" if args.sync_interval else ""))
    log(f"{'scenario':<12} {'offered':>12} {'admitted':>12}")
    for name in names:
        mine = [s for n, s, _ in rows if n == name]
        offered = "/".join(str(s.offered) for s in mine)
        admitted = "/".join(str(s.admitted) for s in mine)
        log(f"{name:<12} {offered:>12} {admitted:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
