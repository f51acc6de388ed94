#!/usr/bin/python3
"""Accuracy of Redis-held limits on real processes (issue 9): offered against admitted,
the table to set beside rspamd 3.4's measured figures (a burst of 30 at a limit of 10
admitted 10 to 16; Redis down, every message passed; a Redis restart forgot every
count).

Every run of a scenario starts its own `redis-server` (harness.RedisServer: loopback, a
free port, a folder of its own, `--save ''`) and three independent zetian-milter
processes (harness.Milter, `[cluster] enabled = false`) sharing it, with one rule:
LIMIT per period per client IP, stage mail, `store = "redis"`. The client is
harness.MilterClient, the milter protocol spoken directly (no Postfix: the count is the
milters' decisions; one transaction per milter session: negotiate, connect, HELO,
MAIL FROM); a message is admitted when MAIL FROM is answered "continue".

  one_by_one:ALGO   3 x LIMIT messages one after another, round-robin over the three
                    milters (ALGO: token_bucket, gcra, sliding_window, fixed_window)
  all_at_once:ALGO  3 x LIMIT sessions, round-robin over the three, each opened
                    (negotiate, connect, HELO) first, then every MAIL FROM released
                    together by a barrier
  down:FAIL_MODE    LIMIT / 2 through Redis, then kill -9 of Redis (no wait), then
                    3 x (LIMIT + LIMIT / 2) more round-robin, more than a milter's own
                    bucket holds (FAIL_MODE: local, open, closed); every MAIL FROM
                    while Redis is down is timed, and the longest is printed against
                    `[redis] timeout`
  restart:aof       LIMIT - 3 through Redis (appendonly yes, appendfsync always), kill -9
                    and start of Redis on the same port and folder, wait until the
                    three milters show Redis up again, then messages up to 3 x LIMIT
  restart:noaof     the same with appendonly no (what the count would be if Redis kept
                    nothing)

The window algorithms' windows start at multiples of the period (Redis TIME): the rule's
period is about an hour with no window boundary in the next two minutes
(quiet_period() of the integration test), so a turn of the window cannot let a second
limit through mid-run.

Run from the repository (after building zetian-milter); root is not needed:
  python3 tests/bench/redis_accuracy.py --milter build/milter/zetian-milter --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.dont_write_bytecode = True  # keep the source tree clean

from harness import (REDIS_SERVER, MilterClient, Milter, RedisServer, make_workdir,  # noqa: E402
                     metric_samples, rule, wait_until)
from test_redis_limits_postfix import ALGORITHMS, quiet_period  # noqa: E402

RULE = "per_ip"
IDS = ["r1", "r2", "r3"]
FAIL_MODES = ["local", "open", "closed"]
SCENARIOS = ([f"one_by_one:{a}" for a in ALGORITHMS] + [f"all_at_once:{a}" for a in ALGORITHMS]
             + [f"down:{m}" for m in FAIL_MODES] + ["restart:aof", "restart:noaof"])


def log(msg: str) -> None:
    print(msg, flush=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Run:
    """One run of one scenario: its Redis, its three milters, what was offered and
    admitted (in total and after the event, for the down and restart rows)."""

    def __init__(self, args, name: str, stack: contextlib.ExitStack):
        self.args = args
        self.name = name
        self.limit = args.limit
        self.cleanup = stack.callback
        self.work = make_workdir(f"racc-{name.replace(':', '-')[:14]}", self.cleanup)
        self.redis: RedisServer | None = None
        self.milters: list[Milter] = []
        self.offered = self.admitted = 0
        self.offered_after = self.admitted_after = 0  # after the kill or the restart
        self.longest_mail_s = 0.0  # the longest MAIL FROM after the event
        self.notes = ""

    def start(self, algorithm: str = "token_bucket", fail_mode: str = "local", appendonly: bool = False,
              timeout: str = "2s") -> None:
        self.redis = RedisServer(self.work, self.cleanup, appendonly=appendonly).start()
        limited = rule(RULE, self.limit, quiet_period(algorithm), algorithm=algorithm, store="redis")
        for node_id in IDS:
            m = Milter(self.work, self.cleanup, rules=[limited], node_id=node_id, name=node_id,
                       extra={"redis": {"url": self.redis.url, "timeout": timeout},
                              "ratelimit": {"fail_mode": fail_mode},
                              "log": {"level": self.args.log_level}})
            self.milters.append(m.start())
        for m in self.milters:
            self.wait_redis(m, "up")

    def redis_health(self, m: Milter) -> dict:
        status, body, _ = m.http("GET", "/health")
        return json.loads(body)["redis"] if status == 200 else {}

    def wait_redis(self, m: Milter, state: str) -> None:
        wait_until(lambda: self.redis_health(m).get("state") == state, 20,
                   what=f"{m.node_id}'s /health redis state {state!r}",
                   diagnostics=lambda: json.dumps(self.redis_health(m)) + "\n" + m.log_tail())

    def fallbacks(self) -> int:
        total = 0
        for m in self.milters:
            status, body, _ = m.http("GET", "/metrics")
            if status == 200:
                total += int(sum(v for labels, v in metric_samples(body, "zetian_fallbacks_total")
                                 if labels.get("rule") == RULE))
        return total

    def mail(self, m: Milter, ip: str) -> tuple[bool, float]:
        """One transaction through `m`: admitted?, and how long its MAIL FROM took."""
        c = MilterClient(m.socket_spec, timeout=30)
        try:
            c.negotiate()
            c.connect_stage(ip)
            c.helo()
            start = time.monotonic()
            code = c.mail("<s@example.org>")
            return code == b"c", time.monotonic() - start
        finally:
            c.quit()

    def one_by_one(self, count: int, ip: str, after: bool = False) -> None:
        for i in range(count):
            ok, took = self.mail(self.milters[(self.offered + i) % 3], ip)
            self.admitted += ok
            if after:
                self.offered_after += 1
                self.admitted_after += ok
                self.longest_mail_s = max(self.longest_mail_s, took)
        self.offered += count

    def all_at_once(self, count: int, ip: str) -> None:
        barrier = threading.Barrier(count, timeout=60)
        lock = threading.Lock()
        errors: list[str] = []

        def one(i: int):
            try:
                c = MilterClient(self.milters[i % 3].socket_spec, timeout=30)
                try:
                    c.negotiate()
                    c.connect_stage(ip)
                    c.helo()
                    barrier.wait()
                    code = c.mail("<s@example.org>")
                finally:
                    c.quit()
                with lock:
                    self.offered += 1
                    self.admitted += code == b"c"
            except Exception as e:  # reported with the row
                barrier.abort()
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=one, args=(i,), name=f"session-{i}") for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if errors:
            self.notes = f"{len(errors)} sessions failed: {errors[0]}"


def run(args, name: str, index: int) -> Run:
    kind, _, variant = name.partition(":")
    L = args.limit
    ip = f"192.0.2.{10 + index % 200}"
    with contextlib.ExitStack() as stack:
        r = Run(args, name, stack)
        if kind in ("one_by_one", "all_at_once"):
            r.start(algorithm=variant)
            if kind == "one_by_one":
                r.one_by_one(3 * L, ip)
            else:
                r.all_at_once(3 * L, ip)
            r.notes += f"{'; ' if r.notes else ''}fallbacks {r.fallbacks()}"
        elif kind == "down":
            r.start(fail_mode=variant, timeout=f"{args.down_timeout_ms}ms")
            first = L // 2
            r.one_by_one(first, ip)
            assert r.redis is not None
            r.redis.kill9()
            r.one_by_one(3 * (L + first), ip, after=True)
            r.notes = (f"Redis killed after {first} ({r.admitted - r.admitted_after} admitted); while down "
                       f"{r.admitted_after} of {r.offered_after} admitted, longest MAIL FROM "
                       f"{1000 * r.longest_mail_s:.1f} ms (redis.timeout {args.down_timeout_ms} ms); "
                       f"fallbacks {r.fallbacks()}")
        elif kind == "restart":
            r.start(appendonly=variant == "aof")
            first = L - 3
            r.one_by_one(first, ip)
            assert r.redis is not None
            r.redis.kill9()
            t0 = time.monotonic()
            r.redis.restart()
            for m in r.milters:
                r.wait_redis(m, "up")
            back = time.monotonic() - t0
            r.one_by_one(3 * L - first, ip, after=True)
            r.notes = (f"{first} admitted before the kill; Redis back and seen up by all three after "
                       f"{back:.2f} s; after it {r.admitted_after} of {r.offered_after} admitted; "
                       f"fallbacks {r.fallbacks()}")
        else:
            raise ValueError(name)
        for m in r.milters:
            m.stop()
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--runs", "-r", type=int, default=3, help="runs of each scenario")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default: all)")
    ap.add_argument("--down-timeout-ms", type=int, default=200, help="[redis] timeout in the down rows")
    ap.add_argument("--milter", help="zetian-milter binary (default: $ZETIAN_MILTER or newest build)")
    ap.add_argument("--log-level", default="info", help="the milters' log.level")
    args = ap.parse_args()
    if args.milter:
        os.environ["ZETIAN_MILTER"] = args.milter
    if not REDIS_SERVER:
        print("redis-server is needed: apt-get install redis-server", file=sys.stderr)
        return 2
    if args.limit < 4:
        ap.error("--limit must be at least 4 (the restart rows send limit - 3 first)")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; known: {', '.join(SCENARIOS)}")

    rows: dict[str, list[Run]] = {n: [] for n in names}
    loads = [loadavg()]
    for rep in range(args.runs):
        # Scenarios interleaved, so that the machine's load drifts over all of them alike.
        for name in names:
            load = loadavg()
            r = run(args, name, 20 * rep + names.index(name))
            rows[name].append(r)
            log(f"{name:<26} run {rep + 1}: offered {r.offered:3d}  admitted {r.admitted:3d}  "
                f"(limit {r.limit}; load {load})  {r.notes}")
    loads.append(loadavg())
    L = args.limit
    expected = {
        "one_by_one": f"{L}",
        "all_at_once": f"{L}",
        "down:local": f"{L // 2} + {L} per milter while down = {L // 2 + 3 * L}",
        "down:open": f"{L // 2} + all while down = {L // 2 + 3 * (L + L // 2)}",
        "down:closed": f"{L // 2} + none while down",
        "restart:aof": f"{L} (the counts kept)",
        "restart:noaof": f"{L - 3} + {L} = {2 * L - 3} (counts forgotten)",
    }
    log("")
    log(f"limit {L} per client IP, {3 * L} offered per run ({L // 2 + 3 * (L + L // 2)} in the down rows), "
        f"three milters sharing one Redis, {args.runs} runs; load before {loads[0]}, after {loads[1]}")
    log(f"{'scenario':<26} {'admitted per run':<20} {'after the event':<20} expected")
    for name in names:
        runs = rows[name]
        admitted = " ".join(str(r.admitted) for r in runs)
        after = " ".join(f"{r.admitted_after}/{r.offered_after}" for r in runs) if ":" in name and \
            name.split(":")[0] in ("down", "restart") else "-"
        log(f"{name:<26} {admitted:<20} {after:<20} {expected.get(name, expected.get(name.split(':')[0], ''))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
