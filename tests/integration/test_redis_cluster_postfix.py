"""Rate limits kept in a Redis Cluster, end to end (issue 9): SMTP client -> three real
Postfix instances -> three independent zetian-milter processes (cluster disabled) ->
one smtp-sink, the three milters sharing one 3-master Redis Cluster that each test
starts (harness.RedisCluster) with `[redis] cluster = [...]`.

The Postfix trio, the sending and the checks are test_redis_limits_postfix's (this
class extends it); load_tests below runs only the tests written here."""

import json
import unittest

from harness import RedisCluster, rule
from test_redis_limits_postfix import LIMIT, RedisLimitsBehindPostfix


def slot_owner(cluster: RedisCluster, key: bytes) -> int:
    """The index of the master that serves `key` (slots are spread evenly by index)."""
    slot = cluster.nodes[0].command("CLUSTER", "KEYSLOT", key)
    n = len(cluster.nodes)
    return next(i for i in range(n) if 16384 * i // n <= slot < 16384 * (i + 1) // n)


class RedisClusterBehindPostfix(RedisLimitsBehindPostfix):

    def start_cluster_trio(self, *rules: dict) -> tuple[RedisCluster, list]:
        cluster = RedisCluster(self.workdir, self.addCleanup).start()
        # A Redis Cluster has only database 0: "redis:///0" is the url it allows.
        # Exactness is the point: a deadline no loaded machine misses.
        milters = [self.start_milter(i, "redis:///0", *rules, redis={"cluster": cluster.addresses, "timeout": "2s"})
                   for i in range(3)]
        for m in milters:
            self.wait_redis_state(m, "up")
        return cluster, milters

    def sources_on_each_master(self, cluster: RedisCluster, count: int) -> list[str]:
        """`count` loopback client addresses whose per_ip keys are on distinct masters."""
        chosen: dict[int, str] = {}
        for last in range(40, 250):
            ip = f"127.0.0.{last}"
            owner = slot_owner(cluster, b"zetian:per_ip\x00" + ip.encode())
            chosen.setdefault(owner, ip)
            if len(chosen) == count:
                return [chosen[i] for i in sorted(chosen)]
        self.fail("no client addresses whose keys spread over the masters")

    def test_redis_cluster_exactly_the_limit(self):
        cluster, milters = self.start_cluster_trio(rule("per_ip", LIMIT, "1h", store="redis"))
        health = self.health_redis(milters[0])
        self.assertEqual(health["role"], "cluster", json.dumps(health))
        for address in cluster.addresses:
            self.assertIn(address, health["address"])
        one, two, burst_ip = self.sources_on_each_master(cluster, 3)
        results = self.send_round_robin(30, one)
        self.assertPassed(results, LIMIT, "per_ip")
        results += self.send_round_robin(30, two, first=30)
        self.assertPassed(results[30:], LIMIT, "per_ip")
        burst = self.send_all_at_once(30, burst_ip)
        self.assertPassed(burst, LIMIT, "per_ip")
        self.assertSinkCount([r for r in results + burst if r.accepted])
        for m in milters:
            self.assertEqual(self.fallbacks(m, "per_ip"), 0, m.log_tail())
            self.assertEqual(self.log_lines(m, "redis_down"), [], m.log_tail())
        # Each key on its own master, with its count there.
        for index, ip in enumerate((one, two, burst_ip)):
            key = b"zetian:per_ip\x00" + ip.encode()
            self.assertEqual(cluster.nodes[index].command("EXISTS", key), 1, ip)
        self.assertEqual(len(cluster.keys("zetian:*")), 3)


def load_tests(loader, tests, pattern):
    """Only the tests of this module: the base class's run in their own module."""
    names = sorted(n for n in vars(RedisClusterBehindPostfix) if n.startswith("test"))
    return unittest.TestSuite(RedisClusterBehindPostfix(n) for n in names)


if __name__ == "__main__":
    unittest.main()
