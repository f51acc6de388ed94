"""Multi-process cluster tests: real zetian-milter processes on loopback forming a
cluster, watched through their health sockets.

Each node is a harness.Milter with a [cluster] section; nodes listen for each other
on 127.0.0.1 with ports picked by free_port(). Timings are shortened (heartbeat 200 ms,
failure_detection_timeout 2 s) so that failure and recovery take seconds; assertions
are phrased in terms of those settings, never in fixed sleeps.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import unittest
from typing import Iterable, Optional

from harness import (HarnessError, Milter, ctl_binary, free_port, make_workdir, milter_binary,
                     wait_until)

HEARTBEAT_S = 0.2
FAILURE_TIMEOUT_S = 2.0
FAST_TIMING = {
    "heartbeat_interval": "200ms",
    "failure_threshold": 3,
    "success_threshold": 2,
    "failure_detection_timeout": "2s",
    "join_timeout": "5s",
}
HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(HERE, "..", "support", "make_test_certs.sh")



def member_view(milter) -> dict[str, str]:
    """{member id: status} as `milter` (a harness.Milter) sees the cluster, itself
    included; {} while it does not answer /health."""
    try:
        status, body, _ = milter.http("GET", "/health")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {m["id"]: m["status"] for m in json.loads(body)["members"]}

_U64 = (1 << 64) - 1


def _fnv1a64(value: int, data: bytes) -> int:
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & _U64
    return value


def hrw_score(node_id: str, key: str | bytes) -> int:
    """The rendezvous score of `node_id` for `key`, as cluster/placement/hrw.cpp computes
    it: FNV-1a 64 over the node id's length (8 bytes, little-endian), the node id and the
    key, then the splitmix64 finaliser."""
    node = node_id.encode()
    data = key.encode() if isinstance(key, str) else key
    h = _fnv1a64(0xCBF29CE484222325, len(node).to_bytes(8, "little"))
    h = _fnv1a64(_fnv1a64(h, node), data)
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _U64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _U64
    h ^= h >> 31
    return h


def owner_of(key: str | bytes, members: Iterable[str]) -> str:
    """The member that owns `key`: the highest score, ties to the smaller id. A rule's
    store key (what places it under `[affinity] method = "key"`) is its name, a NUL and
    the key value: store_key(rule, value)."""
    ranked = sorted(members, key=lambda m: (-hrw_score(m, key), m))
    if not ranked:
        raise ValueError("owner_of: no members")
    return ranked[0]


def store_key(rule_name: str, value: str) -> str:
    """The limiter's key for `value` (a client IP's text, a normalised sender...)
    under the rule named `rule_name`."""
    return rule_name + "\0" + value


def limits_remaining(milter, rule: str, key: str, fresh: int) -> int:
    """What `milter`'s own store has left for `key` under `rule` (GET /limits): `fresh`
    when it holds nothing (a full bucket is not stored)."""
    status, body, _ = milter.http("GET", f"/limits?rule={rule}&key={key}")
    if status != 200:
        raise AssertionError(f"GET /limits answered {status}: {body!r}")
    held = json.loads(body)["limits"]
    return int(held[0]["remaining"]) if held else fresh


class Node:
    """One cluster node: a zetian-milter process and its view of the cluster."""

    env: dict | None = None  # variables added to the process's environment (test hooks)

    def __init__(self, case: "ClusterTestCase", node_id: str, cluster: dict, extra: dict | None = None,
                 env: dict | None = None, milter_port: int | None = None):
        self.case = case
        self.env = env
        self.id = node_id
        self.port = cluster["bind"].rsplit(":", 1)[1]
        doc = {"cluster": dict(cluster)}
        for section, values in (extra or {}).items():
            doc.setdefault(section, {}).update(values)
        self.milter = Milter(case.workdir, case.addCleanup, node_id=node_id, extra=doc,
                             name=f"{node_id}-{secrets.token_hex(2)}", port=milter_port)
        self.address = cluster.get("advertise") or cluster["bind"]

    def start(self) -> "Node":
        if self.env:
            self.milter.start(env=self.env)
        else:
            self.milter.start()
        return self

    def running(self) -> bool:
        return self.milter.running()

    def kill9(self) -> None:
        """SIGKILL: no goodbye, no cleanup."""
        self.milter.process.proc.send_signal(signal.SIGKILL)
        self.milter.process.proc.wait(10)
        self.milter.process.stop()  # reaps, closes the log
        self.milter._stopped = True

    def stop(self) -> None:
        self.milter.stop()

    def health(self) -> Optional[dict]:
        try:
            status, body, _ = self.milter.http("GET", "/health")
        except OSError:
            return None
        if status != 200:
            return None
        return json.loads(body)

    def view(self) -> dict[str, str]:
        """{member id: status} as this node sees it (itself included)."""
        return member_view(self.milter)

    def metric(self, name: str) -> float:
        value = self.milter.metric(name)
        return 0.0 if value is None else value

    def log_text(self) -> str:
        return self.milter.log_text()

    def log_tail(self, lines: int = 40) -> str:
        return self.milter.log_tail(lines)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.milter.ctl(*args)


class ClusterTestCase(unittest.TestCase):
    """A temp folder, a shared secret, and helpers to start nodes and wait on views."""

    timing = FAST_TIMING

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        milter_binary()
        ctl_binary()

    def setUp(self):
        self.workdir = make_workdir(self.id().rsplit(".", 1)[-1][:16], self.addCleanup)
        self.secret_file = self.write_secret("cluster.secret", secrets.token_hex(32))
        self.nodes: list[Node] = []
        self.ports: dict[str, int] = {}

    def write_secret(self, name: str, value: str) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(value + "\n")
        os.chmod(path, 0o600)
        return path

    def endpoint(self, node_id: str) -> str:
        if node_id not in self.ports:
            self.ports[node_id] = free_port()
        return f"127.0.0.1:{self.ports[node_id]}"

    def node(self, node_id: str, seeds: Iterable[str] = (), secret_file: str | None = None,
             cluster: dict | None = None, extra: dict | None = None, start: bool = True,
             env: dict | None = None, milter_port: int | None = None) -> Node:
        settings = {"enabled": True, "bind": self.endpoint(node_id),
                    "seeds": [self.endpoint(s) for s in seeds],
                    "shared_secret_file": secret_file or self.secret_file}
        settings.update(self.timing)
        settings.update(cluster or {})
        n = Node(self, node_id, settings, extra, env, milter_port)
        self.nodes.append(n)
        return n.start() if start else n

    def start_cluster(self, count: int, prefix: str = "n", cluster: dict | None = None) -> list[Node]:
        """`count` nodes, each seeded with the first one only (learning the rest is the
        point), started at once; `cluster`: settings for all of them."""
        ids = [f"{prefix}{i + 1}" for i in range(count)]
        for i in ids:
            self.endpoint(i)
        return [self.node(i, seeds=[ids[0]] if i != ids[0] else [], cluster=cluster) for i in ids]

    def diagnostics(self, nodes: Iterable[Node]) -> str:
        parts = []
        for n in nodes:
            parts.append(f"{n.id} view: {n.view()}")
        for n in nodes:
            parts.append(n.log_tail(25))
        return "\n".join(parts)

    def wait_views(self, nodes: list[Node], expected: dict[str, str], timeout: float = 20.0,
                   what: str = "") -> float:
        """Wait until every node in `nodes` sees exactly `expected` for those ids
        (other ids may be present only if listed). Returns the seconds it took."""
        start = time.monotonic()

        def done():
            for n in nodes:
                view = n.view()
                for member, status in expected.items():
                    if view.get(member) != status:
                        return False
            return True
        wait_until(done, timeout, what=what or f"views {expected}",
                   diagnostics=lambda: self.diagnostics(nodes))
        return time.monotonic() - start

    def wait_full_view(self, nodes: list[Node], timeout: float = 20.0) -> float:
        return self.wait_views(nodes, {n.id: "active" for n in nodes}, timeout,
                               what=f"every node to see {[n.id for n in nodes]} active")


class StrangerFlood:
    """Holds `count` idle TCP connections to 127.0.0.1:`port` that never say a word,
    from the loopback addresses 127.0.0.2 ... 127.0.0.(1 + `sources`) in turn, and opens
    a new one for each that the node closes (as a hostile client would, to keep the
    handshake slots taken). Runs on its own thread until stop()."""

    def __init__(self, port: int, count: int = 100, sources: int = 13, every: float = 0.1):
        self.port = port
        self.count = count
        self.sources = [f"127.0.0.{2 + i}" for i in range(sources)]
        self.every = every
        self.opened = 0
        self.closed_by_node = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stranger-flood", daemon=True)
        self._sockets: list[socket.socket] = []

    def start(self) -> "StrangerFlood":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for s in self._sockets:
            s.close()
        self._sockets = []

    def _open(self) -> None:
        source = self.sources[self.opened % len(self.sources)]
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2,
                                         source_address=(source, 0))
        except OSError:
            return  # refused at once (listen backlog): try again next round
        s.setblocking(False)
        self._sockets.append(s)
        self.opened += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            alive = []
            for s in self._sockets:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    alive.append(s)  # still held open by the node
                    continue
                except OSError:
                    data = b""
                if data:
                    alive.append(s)  # a handshake byte or two: still held
                    continue
                s.close()
                self.closed_by_node += 1
            self._sockets = alive
            while len(self._sockets) < self.count and not self._stop.is_set():
                self._open()
            self._stop.wait(self.every)


def make_certs(workdir: str) -> str:
    """CA, node and rogue certificates from tests/support/make_test_certs.sh."""
    out = os.path.join(workdir, "certs")
    os.makedirs(out, exist_ok=True)
    cp = subprocess.run(["bash", MAKE_CERTS, out], capture_output=True, text=True, timeout=120)
    if cp.returncode != 0:
        raise HarnessError(f"make_test_certs.sh failed: {cp.stdout}{cp.stderr}")
    return out
