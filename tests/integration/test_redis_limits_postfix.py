"""Rate limits kept in one Redis, end to end (issue 9): SMTP client -> three real
Postfix instances -> three independent zetian-milter processes (cluster disabled) ->
one smtp-sink, the three milters sharing one `redis-server` that each test starts on
a port and in a folder of its own (harness.RedisServer).

One Postfix trio and one sink serve the whole class: Postfix i's smtpd_milters points
at a milter port reserved for milter i, and every test starts its own Redis and its
own three milters on those ports (fresh Redis, fresh local buckets, fresh metrics).
The client sends from loopback addresses other than 127.0.0.1 (Postfix sees each as a
distinct client IP), nothing is exempt, and each test tags its messages, so nothing one
test sent is counted by another.

Messages are counted twice: by the SMTP replies, and by their tokens at the sink once
all three Postfix queues are empty (so a message that Postfix accepted but did not
deliver yet cannot hide). Each MAIL FROM is timed: with Redis down no message may wait
for a connect or a timeout beyond `redis.timeout`.

The Sentinel test starts its own master, replica and three Sentinels (all local
redis-server processes) and kills the master mid-run."""

import json
import os
import time
import unittest
import uuid

from harness import (REDIS_SERVER, MessageResult, Milter, RedisSentinel, RedisServer, SmtpSession, free_port,
                     make_workdir, metric_samples, milter_binary, rule, wait_until)
from postfix_trio import PostfixTrio

LIMIT = 10
IDS = ["r1", "r2", "r3"]
# Zetian's reply when fail_mode = "closed" refuses a check (plugin/check.cpp).
CLOSED_TEXT = "Rate limiter unavailable"
REDIS_TIMEOUT_MS = 200
# The longest a MAIL FROM may take: the milter's Redis deadline, plus a second for
# Postfix (smtpd -> milter -> reply) on a loaded 2-core machine. A message that waited
# for a connect attempt, or hung until Postfix's milter_command_timeout (10 s), fails it.
MAIL_BOUND_S = REDIS_TIMEOUT_MS / 1000 + 1.0
ALGORITHMS = ["token_bucket", "gcra", "sliding_window", "fixed_window"]


def quiet_period(algorithm: str) -> str:
    """About an hour, with no window boundary in the next two minutes. The window
    algorithms' windows start at multiples of the period since the epoch (Redis TIME):
    a fixed window that turned over mid-test would let the limit through twice."""
    if algorithm not in ("fixed_window", "sliding_window"):
        return "1h"
    now = time.time()
    for text, seconds in (("1h", 3600), ("1h1m", 3660), ("1h2m", 3720)):
        if seconds - now % seconds > 120:
            return text
    raise AssertionError("no period of about an hour without a window boundary in the next 2 minutes")


def period_seconds(text: str) -> int:
    return {"1h": 3600, "1h1m": 3660, "1h2m": 3720}[text]


class RedisLimitsBehindPostfix(PostfixTrio, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not REDIS_SERVER:
            raise unittest.SkipTest("redis-server is not installed: "
                                    "DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server")
        milter_binary()
        cls.start_postfix_trio("redis-postfix", IDS)

    def setUp(self):
        super().setUp()
        self.watch_postfix()
        self.workdir = make_workdir(self.tag.rsplit("-", 1)[0], self.addCleanup)
        self.milters: list[Milter] = []
        self.redis: RedisServer | None = None
        self.mail_seconds: list[float] = []

    # -- fixture

    def start_redis(self, appendonly: bool = False, password: str | None = None) -> RedisServer:
        self.redis = RedisServer(self.workdir, self.addCleanup, appendonly=appendonly,
                                 password=password).start()
        return self.redis

    def write_file(self, name: str, content: str) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(content + "\n")
        return path

    def start_milter(self, index: int, url: str, *rules: dict, fail_mode: str = "local",
                     redis: dict | None = None) -> Milter:
        """Milter number `index` (behind Postfix `index`), cluster disabled, its
        `[redis]` at `url` with timeout REDIS_TIMEOUT_MS (plus `redis`)."""
        section = {"url": url, "timeout": f"{REDIS_TIMEOUT_MS}ms"}
        section.update(redis or {})
        m = Milter(self.workdir, self.addCleanup, rules=rules, node_id=IDS[index],
                   name=f"{IDS[index]}-{uuid.uuid4().hex[:4]}", port=self.milter_ports[index],
                   extra={"redis": section, "ratelimit": {"fail_mode": fail_mode}})
        self.milters.append(m)
        return m.start()

    def start_trio(self, *rules: dict, fail_mode: str = "local", redis: dict | None = None) -> list[Milter]:
        assert self.redis is not None
        milters = [self.start_milter(i, self.redis.url, *rules, fail_mode=fail_mode, redis=redis)
                   for i in range(len(IDS))]
        for m in milters:
            self.wait_redis_state(m, "up")
        return milters

    def everything(self, lines: int = 25) -> str:
        parts = [m.log_tail(lines) for m in self.milters]
        parts += [p.log_tail(lines) for p in self.postfixes]
        if self.redis is not None:
            parts.append(self.redis.log_tail(lines))
        return "\n".join(parts)

    # -- sending

    def send_timed(self, index: int, postfix: int, source: str) -> tuple[MessageResult, float]:
        """Message number `index` of this test in a session of its own, from `source`
        through Postfix number `postfix` (0..2), and how long its MAIL FROM took."""
        with SmtpSession(self.postfixes[postfix].port(), source=source) as s:
            mail = s.smtp.mail
            took: list[float] = []

            def timed_mail(*args, **kwargs):
                start = time.monotonic()
                try:
                    return mail(*args, **kwargs)
                finally:
                    took.append(time.monotonic() - start)
            s.smtp.mail = timed_mail
            result = s.send(token=f"{self.tag}-{index:02d}-{uuid.uuid4().hex[:8]}")
            return result, took[0]

    def send_round_robin(self, count: int, source: str, first: int = 0,
                         postfixes=(0, 1, 2)) -> list[MessageResult]:
        """`count` messages one by one, message i through Postfix postfixes[i % n];
        every MAIL FROM within MAIL_BOUND_S."""
        results = []
        self.mail_seconds = []
        for i in range(count):
            result, took = self.send_timed(first + i, postfixes[i % len(postfixes)], source)
            self.assertLess(took, MAIL_BOUND_S,
                            f"MAIL FROM of message {first + i} took {took:.3f}s: {result}\n{self.everything()}")
            results.append(result)
            self.mail_seconds.append(took)
        return results

    def assertAtOnce(self):
        """The MAIL FROMs of the last send_round_robin were answered without waiting for
        Redis: with Redis known to be down a check falls back at once, so the median is
        far below redis.timeout (measured: under 1 ms; a check that waited for a
        connect attempt or the deadline would take about REDIS_TIMEOUT_MS)."""
        median = sorted(self.mail_seconds)[len(self.mail_seconds) // 2]
        self.assertLess(median, REDIS_TIMEOUT_MS / 1000 / 2,
                        f"median MAIL FROM {median * 1000:.1f} ms of {len(self.mail_seconds)}")

    # -- reading the milters

    def health_redis(self, m: Milter) -> dict:
        status, body, _ = m.http("GET", "/health")
        self.assertEqual(status, 200, body)
        redis = json.loads(body)["redis"]
        self.assertIsInstance(redis, dict, body)
        return redis

    def wait_redis_state(self, m: Milter, state: str, timeout: float = 20.0) -> dict:
        """The milter's /health redis object once its state is `state` ("up" is the
        state name of a ready connection)."""
        return wait_until(lambda: (lambda r: r if r["state"] == state else None)(self.health_redis(m)),
                          timeout, what=f"{m.node_id}'s /health redis state {state!r}",
                          diagnostics=lambda: json.dumps(self.health_redis(m)) + "\n" + self.everything())

    def fallbacks(self, m: Milter, rule_name: str, reason: str | None = None) -> int:
        """zetian_fallbacks_total of `rule_name` for `reason` (None: any reason)."""
        status, body, _ = m.http("GET", "/metrics")
        self.assertEqual(status, 200)
        return int(sum(v for labels, v in metric_samples(body, "zetian_fallbacks_total")
                       if labels.get("rule") == rule_name and (reason is None or labels.get("reason") == reason)))

    @staticmethod
    def log_lines(m: Milter, word: str) -> list[str]:
        return [line for line in m.log_text().splitlines() if word in line.split()]

    # -- checking

    def assertRateLimited(self, result: MessageResult, rule_name: str):
        self.assertZetianTempfail(result, rule_name, self.everything)

    def assertClosed(self, result: MessageResult):
        self.assertZetianTempfail(result, CLOSED_TEXT, self.everything)

    def assertSinkCount(self, passed: list[MessageResult]):
        self.assertAtTheSink(passed, self.everything)

    def assertPassed(self, results: list[MessageResult], count: int, rule_name: str):
        """Exactly `count` accepted, every other one refused by `rule_name`."""
        passed = [r for r in results if r.accepted]
        self.assertEqual(len(passed), count,
                         f"{len(passed)} of {len(results)} passed, want {count}:\n"
                         + "\n".join(map(str, results)) + "\n" + self.everything())
        for r in results:
            if not r.accepted:
                self.assertRateLimited(r, rule_name)

    def assertOneEpisode(self, m: Milter, downs: int = 1, ups: int = 0, error: str | None = None):
        """`downs` redis_down and `ups` redis_up lines in the milter's log, however many
        checks fell back in between; the last redis_down names `error`."""
        down = self.log_lines(m, "redis_down")
        self.assertEqual(len(down), downs, m.log_tail())
        self.assertEqual(len(self.log_lines(m, "redis_up")), ups, m.log_tail())
        # The engine's fallback episodes too: one line each, not one per check.
        episodes = [line for line in self.log_lines(m, "cluster_limits_fallback") if "owner=@redis" in line]
        self.assertEqual(len(episodes), downs, m.log_tail())
        if downs:
            assert self.redis is not None
            self.assertIn(f"address={self.redis.url}", down[-1])
            if error:
                self.assertIn(error, down[-1])

    # -- 1. exactly the limit, every algorithm

    def check_algorithm(self, algorithm: str, ip_one_by_one: str, ip_at_once: str):
        period = quiet_period(algorithm)
        self.start_redis()
        # Exactness is the point here, not outages: a deadline no loaded machine misses,
        # so that no check falls back to a milter's own bucket.
        self.start_trio(rule("per_ip", LIMIT, period, algorithm=algorithm, store="redis"),
                        redis={"timeout": "2s"})
        results = self.send_round_robin(30, ip_one_by_one)
        self.assertPassed(results, LIMIT, "per_ip")
        # The first ten are the ones that pass: nothing refused while budget was left.
        self.assertTrue(all(r.accepted for r in results[:LIMIT]), "\n".join(map(str, results)))
        burst = self.send_all_at_once(30, ip_at_once)
        self.assertPassed(burst, LIMIT, "per_ip")
        self.assertSinkCount([r for r in results + burst if r.accepted])
        # Every decision was Redis's.
        for m in self.milters:
            self.assertEqual(self.fallbacks(m, "per_ip"), 0, m.log_tail())
            self.assertEqual(self.log_lines(m, "redis_down"), [])
        # One key per client IP, each with a TTL (Redis never fills with dead buckets).
        keys = sorted(self.redis.command("KEYS", "zetian:*"))
        self.assertEqual(len(keys), 2, keys)
        self.assertTrue(any(ip_one_by_one.encode() in k for k in keys), keys)
        self.assertTrue(any(ip_at_once.encode() in k for k in keys), keys)
        for k in keys:
            ttl_ms = self.redis.command("PTTL", k)
            self.assertGreater(ttl_ms, 0, k)
            self.assertLessEqual(ttl_ms, 2 * period_seconds(period) * 1000, k)

    def test_token_bucket_exactly_the_limit(self):
        self.check_algorithm("token_bucket", "127.0.0.21", "127.0.0.22")

    def test_gcra_exactly_the_limit(self):
        self.check_algorithm("gcra", "127.0.0.23", "127.0.0.24")

    def test_sliding_window_exactly_the_limit(self):
        self.check_algorithm("sliding_window", "127.0.0.25", "127.0.0.26")

    def test_fixed_window_exactly_the_limit(self):
        self.check_algorithm("fixed_window", "127.0.0.27", "127.0.0.28")

    # -- 2. Redis killed mid-run, per fail_mode

    def kill_redis_after_five(self, fail_mode: str, ip: str, appendonly: bool = False) -> list[MessageResult]:
        """Redis and the trio; five messages pass through Redis; then kill -9 of Redis.
        Returns the five."""
        self.start_redis(appendonly=appendonly)
        self.start_trio(rule("per_ip", LIMIT, "1h", store="redis"), fail_mode=fail_mode)
        before = self.send_round_robin(5, ip)
        self.assertTrue(all(r.accepted for r in before), "\n".join(map(str, before)))
        self.redis.kill9()
        return before

    def assertDownEverywhere(self, fallbacks_each: int):
        """Each milter shows Redis down in /health with an error, counted
        `fallbacks_each` unreachable fallbacks, and logged one redis_down line."""
        for m in self.milters:
            health = self.wait_redis_state(m, "down")
            self.assertTrue(health["last_error"], health)
            self.assertEqual(health["address"].split(" ")[0], self.redis.url, health)
            self.assertEqual(self.fallbacks(m, "per_ip", "unreachable"), fallbacks_each, m.log_tail())
            self.assertEqual(self.fallbacks(m, "per_ip"), fallbacks_each, m.log_tail())
            self.assertEqual(m.metric("zetian_redis_up"), 0)
            self.assertOneEpisode(m)

    def test_redis_killed_fail_mode_local(self):
        before = self.kill_redis_after_five("local", "127.0.0.31")
        # 15 through each milter. Redis charged 5 before the kill, but a milter cannot
        # ask it now: each decides with its own bucket, which Redis checks never
        # charged (a full 10), so exactly 10 of each milter's 15 pass, 30 in all: the
        # limit per milter, not per pool, for as long as Redis is down.
        after = self.send_round_robin(45, "127.0.0.31", first=5)
        self.assertAtOnce()
        for k in range(3):
            self.assertEqual(sum(r.accepted for r in after[k::3]), LIMIT,
                             f"through milter {IDS[k]}:\n" + "\n".join(map(str, after[k::3])))
            # The local bucket passes its first ten, then refuses.
            self.assertTrue(all(r.accepted for r in after[k::3][:LIMIT]))
        self.assertPassed(after, 3 * LIMIT, "per_ip")
        self.assertDownEverywhere(15)
        self.assertSinkCount(before + [r for r in after if r.accepted])

    def test_redis_killed_fail_mode_open(self):
        before = self.kill_redis_after_five("open", "127.0.0.32")
        # 15 through each milter: more than a local bucket's 10, and all pass.
        after = self.send_round_robin(45, "127.0.0.32", first=5)
        self.assertAtOnce()
        self.assertPassed(after, 45, "per_ip")
        self.assertDownEverywhere(15)
        self.assertSinkCount(before + after)

    def test_redis_killed_fail_mode_closed_then_back_with_its_counts(self):
        before = self.kill_redis_after_five("closed", "127.0.0.33", appendonly=True)
        during = self.send_round_robin(9, "127.0.0.33", first=5)
        self.assertAtOnce()
        for r in during:
            self.assertClosed(r)
        self.assertDownEverywhere(3)
        # Redis back on the same port and folder: the milters reconnect, and its AOF
        # kept the five charges: five more pass, not ten.
        self.redis.restart()
        for m in self.milters:
            self.wait_redis_state(m, "up")
            wait_until(lambda: self.log_lines(m, "redis_up"), 5, what=f"{m.node_id}'s redis_up line",
                       diagnostics=m.log_tail)
            self.assertOneEpisode(m, ups=1)
            self.assertEqual(m.metric("zetian_redis_up"), 1)
            self.assertIsNone(self.health_redis(m)["last_error"])
        after = self.send_round_robin(10, "127.0.0.33", first=14)
        self.assertPassed(after, LIMIT - 5, "per_ip")
        self.assertTrue(all(r.accepted for r in after[:LIMIT - 5]), "\n".join(map(str, after)))
        for m in self.milters:
            self.assertEqual(self.fallbacks(m, "per_ip"), 3, m.log_tail())
        self.assertSinkCount(before + [r for r in after if r.accepted])

    def test_redis_frozen_waits_at_most_the_timeout(self):
        """A Redis that takes requests and never answers (SIGSTOP): unlike a killed one,
        nothing tells the milter it is gone, so only the deadline bounds the wait."""
        self.start_redis()
        self.start_trio(rule("per_ip", LIMIT, "1h", store="redis"))
        ip = "127.0.0.37"
        before = self.send_round_robin(5, ip)
        self.assertTrue(all(r.accepted for r in before), "\n".join(map(str, before)))
        self.redis.freeze()
        # Five through each milter, all passing on the local buckets (fail_mode local).
        # Each milter's first check waits for its deadline (send_round_robin bounds every
        # MAIL FROM by redis.timeout + 1 s). At twice the timeout without an answer the
        # connection counts as stuck and is replaced; the checks sent before that wait
        # (at most until then), the ones after fall back at once: from each milter's
        # fourth message on (more than 2 x redis.timeout after its first).
        during = self.send_round_robin(15, ip, first=5)
        self.assertPassed(during, 15, "per_ip")
        took = [f"{t * 1000:.0f}" for t in self.mail_seconds]
        for k, m in enumerate(self.milters):
            self.assertGreaterEqual(self.mail_seconds[k], REDIS_TIMEOUT_MS / 1000 * 0.9,
                                    f"{m.node_id}'s first check did not wait for Redis: {took} ms")
            for late in self.mail_seconds[9 + k::3]:
                self.assertLess(late, REDIS_TIMEOUT_MS / 1000 / 2,
                                f"{m.node_id} still waited with the connection known stuck: {took} ms")
            self.assertGreaterEqual(self.fallbacks(m, "per_ip", "timeout"), 1, m.log_tail())
            self.assertEqual(self.fallbacks(m, "per_ip"), 5, m.log_tail())
            wait_until(lambda: self.log_lines(m, "redis_down"), 5, what=f"{m.node_id}'s redis_down line",
                       diagnostics=m.log_tail)
            self.assertTrue(self.health_redis(m)["last_error"])
        self.redis.thaw()
        for m in self.milters:
            self.wait_redis_state(m, "up")
            wait_until(lambda: self.log_lines(m, "redis_up"), 5, what=f"{m.node_id}'s redis_up line",
                       diagnostics=m.log_tail)
            self.assertEqual(len(self.log_lines(m, "redis_down")), 1, m.log_tail())
        # Redis runs what it had read when it resumes, the dropped connection's scripts
        # too (their checks passed on the local buckets): at most the five left.
        after = self.send_round_robin(10, ip, first=20)
        passed = [r for r in after if r.accepted]
        self.assertLessEqual(len(passed), LIMIT - 5, "\n".join(map(str, after)))
        self.assertPassed(after, len(passed), "per_ip")
        self.assertSinkCount(before + during + passed)

    # -- 3. Redis restarted: the counts it kept

    def test_redis_restart_keeps_the_counts_and_each_outage_is_one_episode(self):
        self.start_redis(appendonly=True)
        self.start_trio(rule("per_ip", LIMIT, "1h", store="redis"))
        ip = "127.0.0.34"
        before = self.send_round_robin(7, ip)
        self.assertTrue(all(r.accepted for r in before), "\n".join(map(str, before)))
        self.redis.kill9()
        # While it is down, one message per milter passes on the local buckets; those
        # charges are the milters' own and never reach Redis.
        during = self.send_round_robin(3, ip, first=7)
        self.assertPassed(during, 3, "per_ip")
        self.redis.restart()
        for m in self.milters:
            self.wait_redis_state(m, "up")
            wait_until(lambda: self.log_lines(m, "redis_up"), 5, what=f"{m.node_id}'s redis_up line",
                       diagnostics=m.log_tail)
        after = self.send_round_robin(12, ip, first=10)
        self.assertPassed(after, LIMIT - 7, "per_ip")
        self.assertTrue(all(r.accepted for r in after[:LIMIT - 7]), "\n".join(map(str, after)))
        # A second outage is a second episode: one more redis_down line per milter.
        self.redis.kill9()
        again = self.send_round_robin(3, ip, first=22)
        self.assertPassed(again, 3, "per_ip")
        for m in self.milters:
            self.wait_redis_state(m, "down")
            self.assertOneEpisode(m, downs=2, ups=1)
            self.assertEqual(self.fallbacks(m, "per_ip", "unreachable"), 2, m.log_tail())
        self.assertSinkCount([r for r in before + during + after + again if r.accepted])

    # -- 4. Redis wrong or absent at start

    def test_wrong_password_at_start(self):
        self.start_redis(password="the-right-one")
        wrong = self.write_file("wrong.pass", "not-the-right-one")
        right = self.write_file("right.pass", "the-right-one")
        limited = rule("per_ip", LIMIT, "1h", store="redis")
        m = self.start_milter(0, self.redis.url, limited, fail_mode="closed", redis={"password_file": wrong})
        health = self.wait_redis_state(m, "down")
        self.assertIn("AUTH refused", health["last_error"] or "", health)
        wait_until(lambda: self.log_lines(m, "redis_down"), 5, what="a redis_down line", diagnostics=m.log_tail)
        refused = self.send_round_robin(3, "127.0.0.35", postfixes=(0,))
        self.assertAtOnce()
        for r in refused:
            self.assertClosed(r)
        self.assertOneEpisode(m, error="AUTH refused")
        self.assertNotIn("not-the-right-one", m.log_text())
        self.assertEqual(self.fallbacks(m, "per_ip", "unreachable"), 3, m.log_tail())
        # The same Redis with the right password: checks go to Redis.
        ok = self.start_milter(1, self.redis.url, limited, fail_mode="closed", redis={"password_file": right})
        self.wait_redis_state(ok, "up")
        passed = self.send_round_robin(3, "127.0.0.35", first=3, postfixes=(1,))
        self.assertPassed(passed, 3, "per_ip")
        self.assertEqual(self.fallbacks(ok, "per_ip"), 0, ok.log_tail())
        self.assertEqual(len(self.redis.command("KEYS", "zetian:*")), 1)
        self.assertSinkCount(passed)

    def test_unreachable_at_start(self):
        # A port nothing listens on.
        port = free_port()
        m = self.start_milter(0, f"redis://127.0.0.1:{port}/0", rule("per_ip", LIMIT, "1h", store="redis"),
                              fail_mode="local")
        health = self.wait_redis_state(m, "down")
        self.assertIn("refused", (health["last_error"] or "").lower(), health)
        wait_until(lambda: self.log_lines(m, "redis_down"), 5, what="a redis_down line", diagnostics=m.log_tail)
        down = self.log_lines(m, "redis_down")
        self.assertEqual(len(down), 1, m.log_tail())
        self.assertIn(f"127.0.0.1:{port}", down[0])
        self.assertIn("refused", down[0].lower())
        # fail_mode local: the milter's own bucket holds the limit.
        results = self.send_round_robin(12, "127.0.0.36", postfixes=(0,))
        self.assertAtOnce()
        self.assertPassed(results, LIMIT, "per_ip")
        self.assertEqual(self.fallbacks(m, "per_ip", "unreachable"), 12, m.log_tail())
        self.assertEqual(len(self.log_lines(m, "redis_down")), 1, m.log_tail())
        self.assertSinkCount([r for r in results if r.accepted])

    # -- 4. a master followed through its Sentinels

    def test_sentinel_failover_is_followed_and_the_limit_holds(self):
        master = RedisServer(self.workdir, self.addCleanup, name="master",
                             extra=["--repl-diskless-sync-delay", "0"]).start()
        replica = RedisServer(self.workdir, self.addCleanup, name="replica",
                              extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
        sentinels = [RedisSentinel(self.workdir, self.addCleanup, master.port, name=f"sentinel{i}").start()
                     for i in range(3)]
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 30,
                   what="the replica to sync", diagnostics=replica.log_tail)
        # Every Sentinel has found the replica and the two others (hello messages, every 2 s).
        agreed = f"address=127.0.0.1:{master.port},slaves=1,sentinels=3"
        for s in sentinels:
            wait_until(lambda s=s: agreed in s.info("sentinel").get("master0", ""), 30,
                       what=f"Sentinel {s.port} to see the whole set", diagnostics=s.log_tail)
        section = {"sentinels": [s.address for s in sentinels], "master_name": "mymaster", "timeout": "2s"}
        milters = [self.start_milter(i, "redis:///0", rule("per_ip", LIMIT, "1h", store="redis"),
                                     fail_mode="closed", redis=section)
                   for i in range(len(IDS))]
        for m in milters:
            health = self.wait_redis_state(m, "up")
            self.assertEqual(health["address"], f"sentinel master mymaster at redis://127.0.0.1:{master.port}/0")
            self.assertEqual(health["role"], "master")
        before = self.send_round_robin(6, "127.0.0.38")
        self.assertPassed(before, 6, "per_ip")
        # Replication is asynchronous: the counts are on the replica before the master goes.
        offset = int(master.info("replication")["master_repl_offset"])
        wait_until(lambda: int(replica.info("replication").get("slave_repl_offset", "0")) >= offset, 10,
                   what="the replica to catch up")

        killed = time.monotonic()
        master.kill9()
        promoted = f"sentinel master mymaster at redis://127.0.0.1:{replica.port}/0"
        for m in milters:
            wait_until(lambda m=m: (lambda r: r["state"] == "up" and r["address"] == promoted)(self.health_redis(m)),
                       20, what=f"{m.node_id} to follow the new master",
                       diagnostics=lambda m=m: json.dumps(self.health_redis(m)) + "\n" + m.log_tail())
        followed = time.monotonic() - killed
        print(f"\nthe three milters followed the new master {followed:.2f} s after the kill", flush=True)
        for m in milters:
            self.assertTrue(self.log_lines(m, "redis_master_switch"), m.log_tail())
        # The limit holds across the failover: 6 before, 4 after.
        after = self.send_round_robin(10, "127.0.0.38", first=6)
        self.assertPassed(after, LIMIT - 6, "per_ip")
        self.assertSinkCount([r for r in before + after if r.accepted])


if __name__ == "__main__":
    unittest.main()
