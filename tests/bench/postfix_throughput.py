#!/usr/bin/python3
"""Postfix throughput with and without zetian-milter.

One throwaway Postfix relaying to smtp-sink (no dump, so the sink is cheap), with three
smtpd listeners that differ only in their milter:
  none  no milter
  inet  zetian-milter over inet:PORT@127.0.0.1
  unix  zetian-milter over a Unix socket (Postfix's services run unchrooted here)
  redis zetian-milter over inet whose rule has `store = "redis"`, in a redis-server the
        script starts (loopback, a free port, `--save '' --appendonly no`)
The milters have one rule per client IP with a limit far above the run size, and the
client (127.0.0.1) is not exempt, so every message is checked and charged, none denied.
`--store redis` measures none, inet and redis (the same rule in the node's own store
and in Redis) in one run; the summary adds time(inet) / time(redis) (issue 9's target
is at least 0.95), the CPU per message of each milter and of redis-server, and the
Redis milter's fallbacks (0 when every decision was Redis's).

For each mode `smtp-source -m MESSAGES -s SESSIONS` is timed (wall clock, the queue is
drained before every run), runs are interleaved across modes in an order rotated each
run (so that no mode always follows the same one through the machine's load drift),
and the best of RUNS is reported with messages/s and the ratio time(none) / time(mode): 1.0 means the milter
costs nothing, the target is at least 0.9.

Run as root from the repository (after building):
  /usr/bin/python3 tests/bench/postfix_throughput.py [--milter build/milter/zetian-milter]
  /usr/bin/python3 tests/bench/postfix_throughput.py --store redis -r 6
Only loopback addresses are used.
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
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402  (needs the path above)
from harness import (Milter, Postfix, RedisServer, SmtpSink, make_workdir, metric_samples,  # noqa: E402
                     rule, wait_until)


def log(msg: str) -> None:
    print(msg, flush=True)


def run_source(port: int, messages: int, sessions: int, same_session: bool,
               progress: bool = True) -> float:
    """Run smtp-source against 127.0.0.1:port; returns the wall time in seconds."""
    argv = [harness.SMTP_SOURCE, "-c", "-m", str(messages), "-s", str(sessions),
            "-f", "bench@example.org", "-t", "sink@example.net", "-M", "bench.zetian.test"]
    if same_session:
        argv.append("-d")
    argv.append(f"127.0.0.1:{port}")
    tty = sys.stdout.isatty()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    # -c prints a running count of completed messages; show every 10%.
    step = max(messages // 10, 1)
    next_mark = step
    output = b""
    if progress:
        print("      progress:", end="", flush=True)
    while True:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        output += chunk
        counts = re.findall(rb"(\d+)\s", output[-64:])
        if progress and counts and int(counts[-1]) >= next_mark:
            pct = 100 * int(counts[-1]) // messages
            next_mark = (int(counts[-1]) // step + 1) * step
            print(f" {pct}%", end="", flush=True)
    status = proc.wait()
    elapsed = time.monotonic() - start
    if progress:
        print("\r" if tty else "", end="" if tty else "\n", flush=True)
    for line in output.decode(errors="replace").splitlines():
        if "smtp-source:" in line:  # errors and warnings of smtp-source itself
            log("      " + line.strip())
    if status != 0:
        raise SystemExit(f"smtp-source exited with {status}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-m", type=int, default=2000)
    ap.add_argument("--sessions", "-s", type=int, default=8)
    ap.add_argument("--runs", "-r", type=int, default=3, help="best of this many runs per mode")
    ap.add_argument("--modes", default=None,
                    help="comma list of none, inet, unix, redis (default: none,inet,unix; "
                         "with --store redis: none,inet,redis)")
    ap.add_argument("--store", choices=["node", "redis"], default="node",
                    help="redis: also measure the rule kept in a redis-server started here")
    ap.add_argument("--redis-timeout", default="1s", help="[redis] timeout of the redis mode")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    ap.add_argument("--same-session", action="store_true",
                    help="smtp-source -d: all messages of a client over one connection")
    args = ap.parse_args()
    if args.modes is None:
        args.modes = "none,inet,redis" if args.store == "redis" else "none,inet,unix"

    stop, modes = harness.postfix_bench_setup(ap, args, ("none", "inet", "unix", "redis"))
    if stop is not None:
        return stop

    with contextlib.ExitStack() as stack:
        cleanup = stack.callback
        work = make_workdir("bench", cleanup)
        sink = SmtpSink(work, cleanup, dump=False)
        log(f"smtp-sink on 127.0.0.1:{sink.port}")

        milters: dict[str, Milter] = {}
        policy = [rule("per-client-ip", 100_000_000, period="1h", key="client_ip", stage="mail")]
        quiet = {"log": {"level": "info"}}  # production level: no line per decision
        if "inet" in modes:
            milters["inet"] = Milter(work, cleanup, rules=policy, name="mi", extra=quiet)
        if "unix" in modes:
            sock = os.path.join(work, "mu.sock")
            milters["unix"] = Milter(work, cleanup, rules=policy, name="mu", extra=quiet,
                                     socket_spec=f"unix:{sock}")
        redis = None
        if "redis" in modes:
            redis = RedisServer(work, cleanup).start()
            log(f"redis-server on {redis.url} (--save '' --appendonly no)")
            in_redis = [dict(r, store="redis") for r in policy]
            milters["redis"] = Milter(work, cleanup, rules=in_redis, name="mr",
                                      extra=dict(quiet, redis={"url": redis.url, "timeout": args.redis_timeout}))
        for name, m in milters.items():
            m.start()
            if name == "unix":
                os.chmod(m.socket_spec[5:], 0o666)  # smtpd connects as the postfix user
            log(f"zetian-milter ({name}) ready: {m.socket_spec}  [{m.binary}]")
        if "redis" in milters:
            m = milters["redis"]
            wait_until(lambda: m.metric("zetian_redis_up") == 1, 20, what="the redis milter's Redis to be up",
                       diagnostics=m.log_tail)

        listeners = {"none": {"smtpd_milters": ""}}
        if "inet" in milters:
            listeners["inet"] = {"smtpd_milters": f"inet:127.0.0.1:{milters['inet'].port}"}
        if "unix" in milters:
            listeners["unix"] = {"smtpd_milters": milters["unix"].socket_spec}
        if "redis" in milters:
            listeners["redis"] = {"smtpd_milters": f"inet:127.0.0.1:{milters['redis'].port}"}
        postfix = Postfix(work, cleanup, sink.port, milter="", default_action="tempfail",
                          listeners=listeners, smtpd_maxproc=max(20, args.sessions * 2))
        log(f"Postfix {postfix.config_dir}: " +
            ", ".join(f"{m}=127.0.0.1:{postfix.port(m)}" for m in modes))

        # Warm-up: start smtpd processes and open the milter paths once.
        for mode in modes:
            run_source(postfix.port(mode), min(50, args.messages), args.sessions, args.same_session,
                       progress=False)
        wait_until(postfix.queue_is_empty, 120, what="the queue to drain after warm-up")

        times: dict[str, list[float]] = {m: [] for m in modes}
        # CPU of each mode's milter (and of redis-server) during that mode's own runs.
        cpu: dict[str, float] = {m: 0.0 for m in modes}
        redis_cpu = 0.0
        fallbacks_before = fallbacks(milters.get("redis"))
        loads = [loadavg()]
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                m = milters.get(mode)
                log(f"run {run}/{args.runs} {mode:>5}: smtp-source -m {args.messages} -s {args.sessions}"
                    f"  (load {loadavg()})")
                cpu0 = cpu_seconds(m.pid) if m else 0.0
                redis0 = cpu_seconds(redis.process.pid) if redis and mode == "redis" else 0.0
                t = run_source(postfix.port(mode), args.messages, args.sessions, args.same_session)
                if m:
                    cpu[mode] += cpu_seconds(m.pid) - cpu0
                if redis and mode == "redis":
                    redis_cpu += cpu_seconds(redis.process.pid) - redis0
                times[mode].append(t)
                log(f"run {run}/{args.runs} {mode:>5}: {t:.2f} s, {args.messages / t:.0f} msg/s")
                wait_until(postfix.queue_is_empty, 300, what="the queue to drain")
        loads.append(loadavg())

        refusals = len(re.findall(r"milter-reject|reject: ", postfix.log_text()))
        milter_warnings = [l for l in postfix.log_text().splitlines()
                           if "warning:" in l and "milter" in l.lower()]
        postfix.assert_log_clean()

        log("")
        log(f"Postfix throughput, smtp-source -m {args.messages} -s {args.sessions}"
            f"{' -d' if args.same_session else ''}, best of {args.runs}, {os.cpu_count()} CPUs")
        log(f"load before {loads[0]}, after {loads[1]}")
        log(f"{'milter':<8} {'best s':>8} {'msg/s':>8} {'ratio':>6} {'median s':>9} {'CPU ms/msg':>11}   runs (s)")
        base = min(times["none"]) if "none" in times else None
        for mode in modes:
            best = min(times[mode])
            ratio = f"{base / best:.2f}" if base else "-"
            runs = " ".join(f"{t:.2f}" for t in times[mode])
            per_msg = f"{1000 * cpu[mode] / (args.messages * args.runs):.3f}" if mode in milters else "-"
            log(f"{mode:<8} {best:8.2f} {args.messages / best:8.0f} {ratio:>6} "
                f"{statistics.median(times[mode]):9.2f} {per_msg:>11}   {runs}")
        if "redis" in times and "inet" in times:
            log(f"redis / node rule (time(inet) / time(redis)): best of each "
                f"{min(times['inet']) / min(times['redis']):.3f}, medians "
                f"{statistics.median(times['inet']) / statistics.median(times['redis']):.3f}  (target >= 0.95)")
            log(f"redis-server CPU {1000 * redis_cpu / (args.messages * args.runs):.3f} ms/msg; the redis milter's "
                f"fallbacks during the runs: {fallbacks(milters['redis']) - fallbacks_before}")
        log(f"refused by Postfix or milter: {refusals}; milter warnings in mail.log: {len(milter_warnings)}")
        for line in milter_warnings[:5]:
            log("  " + line)
        for name, m in milters.items():
            m.stop()
        return 1 if refusals else 0


def fallbacks(m: Milter | None) -> int:
    """zetian_fallbacks_total of a milter, all rules and reasons (0 without one)."""
    if m is None:
        return 0
    status, body, _ = m.http("GET", "/metrics")
    return int(sum(v for _, v in metric_samples(body, "zetian_fallbacks_total"))) if status == 200 else 0


if __name__ == "__main__":
    sys.exit(main())
