#!/usr/bin/python3
"""Postfix throughput with three zetian-milter nodes in a cluster (issue 8): a
cluster-scope exact rule against the same rule with scope = "node".

Three throwaway Postfix instances relay to one smtp-sink (no dump). Each Postfix has
three smtpd listeners that differ only in their milter:
  none     no milter
  cluster  node i of cluster "c" (c1, c2, c3), whose rule has scope = "cluster"
  node     node i of cluster "l" (l1, l2, l3), the same rule with scope = "node"
Both trios are real clusters (same timing, replication on), so the only difference is
where the rule's count lives. The rule is per client IP with a limit far above the run,
nothing is exempt, and smtp-source connects from 127.0.0.1: every message is checked
and charged on the owner of the one key "per-client-ip\\0127.0.0.1" (for "cluster"),
so the Postfix behind the owner checks locally and the other two ask the owner over
the node link (two thirds of all checks are remote), none is denied.

A run starts one `smtp-source -m MESSAGES/3 -s SESSIONS` per Postfix at once and times
until the last one ends (the queues are drained before every run); runs are
interleaved across modes, in an order rotated each run; best of RUNS. Ratios: time(node) / time(cluster) (target
>= 0.95) and time(none) / time(mode).

Run as root from the repository (after building zetian-milter):
  /usr/bin/python3 tests/bench/cluster_throughput.py --milter build/milter/zetian-milter
`--consistency fast` puts consistency = "fast" in the cluster rule (once leases exist).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster_nodes import Cluster, cluster_rule, loadavg, owner_of, store_key  # noqa: E402  (sets the path too)

import harness  # noqa: E402
from harness import Postfix, SmtpSink, free_port, make_workdir, wait_until  # noqa: E402

IDS = ["1", "2", "3"]
RULE = "per-client-ip"


def log(msg: str) -> None:
    print(msg, flush=True)


def run_sources(ports: list[int], messages: int, sessions: int) -> float:
    """One smtp-source per port, all at once; the wall time until the last ends."""
    procs = []
    start = time.monotonic()
    for port in ports:
        argv = [harness.SMTP_SOURCE, "-m", str(messages), "-s", str(sessions),
                "-f", "bench@example.org", "-t", "sink@example.net", "-M", "bench.zetian.test",
                f"127.0.0.1:{port}"]
        procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    outputs = [p.communicate()[0] for p in procs]
    elapsed = time.monotonic() - start
    for p, out in zip(procs, outputs):
        for line in out.decode(errors="replace").splitlines():
            if "smtp-source:" in line:
                log("      " + line.strip())
        if p.returncode != 0:
            raise SystemExit(f"smtp-source exited with {p.returncode}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-m", type=int, default=3000, help="per run, over the three Postfix")
    ap.add_argument("--sessions", "-s", type=int, default=4, help="smtp-source -s, per Postfix")
    ap.add_argument("--runs", "-r", type=int, default=3, help="best of this many runs per mode")
    ap.add_argument("--modes", default="none,cluster,node", help="comma list of none, cluster, node")
    ap.add_argument("--consistency", default="exact", choices=["exact", "fast"],
                    help="consistency of the cluster-scope rule")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    args = ap.parse_args()

    stop, modes = harness.postfix_bench_setup(ap, args, ("none", "cluster", "node"))
    if stop is not None:
        return stop
    per_postfix = max(args.messages // 3, 1)

    with contextlib.ExitStack() as stack:
        cleanup = stack.callback
        work = make_workdir("clbench", cleanup)
        sink = SmtpSink(work, cleanup, dump=False)
        log(f"smtp-sink on 127.0.0.1:{sink.port}")

        clusters: dict[str, Cluster] = {}
        ports: dict[str, list[int]] = {}
        for mode, prefix, scope in (("cluster", "c", "cluster"), ("node", "l", "node")):
            if mode not in modes:
                continue
            ports[mode] = [free_port() for _ in IDS]
            c = Cluster(work, cleanup, prefix,
                        [cluster_rule(RULE, 100_000_000, scope=scope, consistency=args.consistency)])
            c.start([prefix + i for i in IDS], ports[mode])
            clusters[mode] = c
            log(f"cluster {prefix}1..{prefix}3 (scope = {scope!r}) ready, milters on {ports[mode]}")
        owner = None
        if "cluster" in clusters:
            owner = owner_of(store_key(RULE, "127.0.0.1"), ["c" + i for i in IDS])
            log(f"owner of {RULE} 127.0.0.1: {owner}")

        postfixes = []
        for k, i in enumerate(IDS):
            listeners = {"none": {"smtpd_milters": ""}}
            for mode in ("cluster", "node"):
                if mode in ports:
                    listeners[mode] = {"smtpd_milters": f"inet:127.0.0.1:{ports[mode][k]}"}
            pdir = os.path.join(work, f"postfix-{i}")
            os.makedirs(pdir)
            os.chmod(pdir, 0o755)
            postfixes.append(Postfix(pdir, cleanup, sink.port, milter="", default_action="tempfail",
                                     listeners=listeners, smtpd_maxproc=max(20, args.sessions * 2)))
        log("Postfix: " + "; ".join(", ".join(f"{m}=127.0.0.1:{p.port(m)}" for m in modes)
                                    for p in postfixes))

        def drained() -> bool:
            return all(p.queue_is_empty() for p in postfixes)

        for mode in modes:  # warm-up: smtpd processes and milter connections
            run_sources([p.port(mode) for p in postfixes], min(50, per_postfix), args.sessions)
        wait_until(drained, 120, what="the queues to drain after warm-up")

        def counters() -> dict[str, float]:
            c = clusters.get("cluster")
            if not c:
                return {}
            names = ["zetian_limit_calls_sent_total", "zetian_limit_frames_sent_total",
                     "zetian_fallbacks_total"]
            return {n: sum(c.metric("c" + i, n) for i in IDS) for n in names}

        before = counters()
        times: dict[str, list[float]] = {m: [] for m in modes}
        loads: dict[str, list[str]] = {m: [] for m in modes}
        # CPU time of each trio's three milters during its own runs: less sensitive to
        # the machine's other load than the wall time.
        cpu: dict[str, float] = {m: 0.0 for m in modes}

        def trio_cpu(mode: str) -> float:
            c = clusters.get(mode)
            return sum(cpu_seconds(m.pid) for m in c.milters.values()) if c else 0.0
        for run in range(1, args.runs + 1):
            # Rotate the order each run, so that no mode always follows the same one.
            shift = (run - 1) % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                load = loadavg()
                cpu0 = trio_cpu(mode)
                t = run_sources([p.port(mode) for p in postfixes], per_postfix, args.sessions)
                cpu[mode] += trio_cpu(mode) - cpu0
                times[mode].append(t)
                loads[mode].append(load)
                log(f"run {run}/{args.runs} {mode:>7}: {t:.2f} s, {3 * per_postfix / t:.0f} msg/s"
                    f"  (load before: {load})")
                wait_until(drained, 300, what="the queues to drain")
        after = counters()

        text = "".join(p.log_text() for p in postfixes)
        refusals = len(re.findall(r"milter-reject|reject: ", text))
        milter_warnings = [line for line in text.splitlines() if "warning:" in line and "milter" in line.lower()]
        for p in postfixes:
            p.assert_log_clean()

        total = 3 * per_postfix
        log("")
        log(f"Postfix throughput, 3 nodes, 3 x smtp-source -m {per_postfix} -s {args.sessions}, "
            f"best of {args.runs}, {os.cpu_count()} CPUs, consistency {args.consistency}")
        log(f"{'milter':<8} {'best s':>8} {'msg/s':>8} {'vs none':>8} {'median s':>9} {'CPU ms/msg':>11}   runs (s)")
        base = min(times["none"]) if "none" in times else None
        for mode in modes:
            best = min(times[mode])
            ratio = f"{base / best:.2f}" if base else "-"
            runs = " ".join(f"{t:.2f}" for t in times[mode])
            median = statistics.median(times[mode])
            per_msg = f"{1000 * cpu[mode] / (total * args.runs):.3f}" if mode in clusters else "-"
            log(f"{mode:<8} {best:8.2f} {total / best:8.0f} {ratio:>8} {median:9.2f} {per_msg:>11}   {runs}")
        if "cluster" in times and "node" in times:
            log(f"cluster / node (time(node) / time(cluster), best of each): "
                f"{min(times['node']) / min(times['cluster']):.3f}  (target >= 0.95); medians: "
                f"{statistics.median(times['node']) / statistics.median(times['cluster']):.3f}")
        if before:
            d = {k: after[k] - before[k] for k in after}
            sent, frames = d["zetian_limit_calls_sent_total"], d["zetian_limit_frames_sent_total"]
            log(f"cluster trio during the runs: remote checks {sent:.0f}, frames {frames:.0f}, "
                f"fallbacks {d['zetian_fallbacks_total']:.0f}; owner {owner}")
        log(f"refused by Postfix or milter: {refusals}; milter warnings in mail.log: {len(milter_warnings)}")
        for line in milter_warnings[:5]:
            log("  " + line)
        for c in clusters.values():
            c.stop()
        return 1 if refusals else 0


if __name__ == "__main__":
    sys.exit(main())
