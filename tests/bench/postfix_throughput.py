#!/usr/bin/python3
"""Postfix throughput with and without zetian-milter (and a policy service).

One throwaway Postfix relaying to smtp-sink (no dump, so the sink is cheap), with one
smtpd listener per mode that differ only in their milter or policy service:
  none  no milter
  dunno no milter; `smtpd_recipient_restrictions = check_policy_service
        inet:127.0.0.1:PORT, permit_mynetworks`, the service being policy_dunno (built
        from tests/bench/policy_dunno.c), which answers every request `action=DUNNO`:
        the floor under any policy-delegation host (issue 11). The policy check comes
        first, so mynetworks (127.0.0.0/8, the client) cannot skip it; smtp-source sends
        one recipient per message, so it is one request per message, at RCPT
  policy no milter; the same restriction list as `dunno`, the service being
        zetian-milter's policy host (policy.socket = inet:PORT@127.0.0.1) with the
        milters' rule: every request is checked (connect, helo and mail caught up at the
        first RCPT of each message, then rcpt) and the message charged
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

How smtpd keeps its policy connection (the `dunno` listener sets these to Postfix 3.7's
defaults, so the run does not depend on the main.cf Debian ships; Postfix has no
`smtpd_policy_service_reuse_time_limit`, these are its reuse settings):
  smtpd_policy_service_max_idle = 300s       an idle connection is closed after this
  smtpd_policy_service_max_ttl = 1000s       an active one is closed after this
  smtpd_policy_service_request_limit = 0     requests per connection: no limit
  smtpd_policy_service_timeout = 100s        connect, write or read
  smtpd_policy_service_default_action = 451 4.3.5 ...   a failed request tempfails
                                             the recipient: counted as a refusal below
Each smtpd process opens one connection at its first request and keeps it for every
SMTP session it serves (max_use = 100 sessions by default, then the process exits), so
with one message per session the connection carries about 100 requests, where a milter
connection carries one session. The summary shows the responder's connections and
requests during the timed runs.

Run as root from the repository (after building):
  /usr/bin/python3 tests/bench/postfix_throughput.py [--milter build/milter/zetian-milter]
  /usr/bin/python3 tests/bench/postfix_throughput.py --store redis -r 6
  /usr/bin/python3 tests/bench/postfix_throughput.py --modes none,dunno,policy,inet,unix -r 5
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402  (needs the path above)
from harness import (ManagedProcess, Milter, Postfix, RedisServer, SmtpSink, free_port, make_workdir,  # noqa: E402
                     metric_samples, rule, tail, wait_until)


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


# The restriction list of the `dunno` listener; commas, not spaces, because it goes into
# master.cf as one `-o name=value` word.
POLICY_RESTRICTIONS = "check_policy_service,inet:127.0.0.1:{port},permit_mynetworks"
# Postfix 3.7's defaults, written out (see the module's docstring).
POLICY_CLIENT_SETTINGS = {
    "smtpd_policy_service_max_idle": "300s",
    "smtpd_policy_service_max_ttl": "1000s",
    "smtpd_policy_service_request_limit": "0",
    "smtpd_policy_service_timeout": "100s",
}


class PolicyDunno:
    """policy_dunno on a free loopback port (it picks the port and prints it), with its
    counters read through SIGUSR1."""

    STATS_RE = re.compile(r"policy_dunno: connections=(\d+) open=(\d+) requests=(\d+) malformed=(\d+)")

    def __init__(self, workdir: str, cleanup, binary: str):
        self.log_path = os.path.join(workdir, "policy_dunno.log")
        self.process = ManagedProcess([binary, "0"], self.log_path, name="policy_dunno")
        cleanup(self.process.stop)
        found = wait_until(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self._log())
                           or not self.process.running(), 10, what="policy_dunno to listen")
        if not self.process.running():
            raise SystemExit("policy_dunno exited at start:\n" + tail(self.log_path))
        self.port = int(found.group(1))
        self.binary = binary

    def _log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stats(self) -> dict[str, int]:
        """connections (accepted so far), open, requests (answered so far), malformed."""
        before = len(self.STATS_RE.findall(self._log()))
        self.process.send_signal(signal.SIGUSR1)
        lines = wait_until(lambda: (lambda f: f if len(f) > before else None)(self.STATS_RE.findall(self._log())),
                           10, what="policy_dunno's counters")
        return dict(zip(("connections", "open", "requests", "malformed"), map(int, lines[-1])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-m", type=int, default=2000)
    ap.add_argument("--sessions", "-s", type=int, default=8)
    ap.add_argument("--runs", "-r", type=int, default=3, help="best of this many runs per mode")
    ap.add_argument("--modes", default=None,
                    help="comma list of none, dunno, policy, inet, unix, redis (default: none,inet,unix; "
                         "with --store redis: none,inet,redis)")
    ap.add_argument("--store", choices=["node", "redis"], default="node",
                    help="redis: also measure the rule kept in a redis-server started here")
    ap.add_argument("--redis-timeout", default="1s", help="[redis] timeout of the redis mode")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    ap.add_argument("--policy-dunno",
                    help="policy_dunno binary for the dunno mode (default: $ZETIAN_POLICY_DUNNO or newest build)")
    ap.add_argument("--same-session", action="store_true",
                    help="smtp-source -d: all messages of a client over one connection")
    args = ap.parse_args()
    if args.modes is None:
        args.modes = "none,inet,redis" if args.store == "redis" else "none,inet,unix"

    # `policy` (zetian's own policy host, issue 11) joins this list with the host.
    stop, modes = harness.postfix_bench_setup(ap, args, ("none", "dunno", "policy", "inet", "unix", "redis"))
    if stop is not None:
        return stop
    dunno_binary = None
    if "dunno" in modes:
        dunno_binary = args.policy_dunno or harness._find_built("policy_dunno", "ZETIAN_POLICY_DUNNO")
        if not dunno_binary or not os.access(dunno_binary, os.X_OK):
            ap.error("the dunno mode needs policy_dunno: cmake --build build --target policy_dunno "
                     "(or --policy-dunno PATH)")

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
        if "policy" in modes:
            policy_port = free_port()
            milters["policy"] = Milter(work, cleanup, rules=policy, name="mp",
                                       extra=dict(quiet, policy={"socket": f"inet:{policy_port}@127.0.0.1"}))
            milters["policy"].policy_port = policy_port
        dunno = None
        if dunno_binary:
            dunno = PolicyDunno(work, cleanup, dunno_binary)
            log(f"policy_dunno ready: inet:127.0.0.1:{dunno.port}  [{dunno.binary}]")
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
        if dunno:
            listeners["dunno"] = dict(POLICY_CLIENT_SETTINGS, smtpd_milters="",
                                      smtpd_recipient_restrictions=POLICY_RESTRICTIONS.format(port=dunno.port))
        if "policy" in milters:
            listeners["policy"] = dict(POLICY_CLIENT_SETTINGS, smtpd_milters="",
                                       smtpd_recipient_restrictions=POLICY_RESTRICTIONS.format(
                                           port=milters["policy"].policy_port))
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
        # policy_dunno's connections and requests during the timed dunno runs.
        dunno_connections = dunno_requests = 0
        loads = [loadavg()]
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                m = milters.get(mode)
                log(f"run {run}/{args.runs} {mode:>5}: smtp-source -m {args.messages} -s {args.sessions}"
                    f"  (load {loadavg()})")
                pid = m.pid if m else dunno.process.pid if mode == "dunno" else None
                cpu0 = cpu_seconds(pid) if pid else 0.0
                redis0 = cpu_seconds(redis.process.pid) if redis and mode == "redis" else 0.0
                dunno0 = dunno.stats() if mode == "dunno" else None
                t = run_source(postfix.port(mode), args.messages, args.sessions, args.same_session)
                if pid:
                    cpu[mode] += cpu_seconds(pid) - cpu0
                if dunno0:
                    dunno1 = dunno.stats()
                    dunno_connections += dunno1["connections"] - dunno0["connections"]
                    dunno_requests += dunno1["requests"] - dunno0["requests"]
                if redis and mode == "redis":
                    redis_cpu += cpu_seconds(redis.process.pid) - redis0
                times[mode].append(t)
                log(f"run {run}/{args.runs} {mode:>5}: {t:.2f} s, {args.messages / t:.0f} msg/s")
                wait_until(postfix.queue_is_empty, 300, what="the queue to drain")
        loads.append(loadavg())

        refusals = len(re.findall(r"milter-reject|reject: ", postfix.log_text()))
        policy_addresses = ([f"127.0.0.1:{dunno.port}"] if dunno else []) + (
            [f"127.0.0.1:{milters['policy'].policy_port}"] if "policy" in milters else [])
        milter_warnings = [l for l in postfix.log_text().splitlines()
                           if "warning:" in l and ("milter" in l.lower() or any(a in l for a in policy_addresses))]
        postfix.assert_log_clean()

        log("")
        log(f"Postfix throughput, smtp-source -m {args.messages} -s {args.sessions}"
            f"{' -d' if args.same_session else ''}, best of {args.runs}, {os.cpu_count()} CPUs")
        log(f"load before {loads[0]}, after {loads[1]}")
        log(f"{'filter':<8} {'best s':>8} {'msg/s':>8} {'ratio':>6} {'median s':>9} {'CPU ms/msg':>11}   runs (s)")
        base = min(times["none"]) if "none" in times else None
        for mode in modes:
            best = min(times[mode])
            ratio = f"{base / best:.2f}" if base else "-"
            runs = " ".join(f"{t:.2f}" for t in times[mode])
            per_msg = (f"{1000 * cpu[mode] / (args.messages * args.runs):.3f}"
                       if mode in milters or mode == "dunno" else "-")
            log(f"{mode:<8} {best:8.2f} {args.messages / best:8.0f} {ratio:>6} "
                f"{statistics.median(times[mode]):9.2f} {per_msg:>11}   {runs}")
        if "redis" in times and "inet" in times:
            log(f"redis / node rule (time(inet) / time(redis)): best of each "
                f"{min(times['inet']) / min(times['redis']):.3f}, medians "
                f"{statistics.median(times['inet']) / statistics.median(times['redis']):.3f}  (target >= 0.95)")
            log(f"redis-server CPU {1000 * redis_cpu / (args.messages * args.runs):.3f} ms/msg; the redis milter's "
                f"fallbacks during the runs: {fallbacks(milters['redis']) - fallbacks_before}")
        if "policy" in times and "dunno" in times:
            log(f"policy host / trivial responder (time(dunno) / time(policy)): best of each "
                f"{min(times['dunno']) / min(times['policy']):.3f}, medians "
                f"{statistics.median(times['dunno']) / statistics.median(times['policy']):.3f}  (target >= 0.97)")
        if dunno:
            final = dunno.stats()
            log(f"policy_dunno during the timed dunno runs: {dunno_requests} requests for "
                f"{args.messages * args.runs} messages over {dunno_connections} new connections; "
                f"malformed in all: {final['malformed']}")
        log(f"refused by Postfix, milter or policy service: {refusals}; "
            f"milter/policy warnings in mail.log: {len(milter_warnings)}")
        for line in milter_warnings[:5]:
            log("  " + line)
        for name, m in milters.items():
            m.stop()
        if dunno and (dunno_requests != args.messages * args.runs or final["malformed"]):
            log("policy_dunno did not answer exactly one request per message")
            return 1
        return 1 if refusals else 0


def fallbacks(m: Milter | None) -> int:
    """zetian_fallbacks_total of a milter, all rules and reasons (0 without one)."""
    if m is None:
        return 0
    status, body, _ = m.http("GET", "/metrics")
    return int(sum(v for _, v in metric_samples(body, "zetian_fallbacks_total"))) if status == 200 else 0


if __name__ == "__main__":
    sys.exit(main())
