"""Real zetian-milter processes forming a cluster on loopback, for the cluster benchmark
scripts (cluster_throughput.py, cluster_accuracy.py). Built on the integration harness
(harness.Milter, cluster_harness timings and placement), without unittest."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.dont_write_bytecode = True  # keep the source tree clean

from cluster_harness import FAST_TIMING, member_view, owner_of, store_key  # noqa: E402,F401
from harness import Milter, free_port, wait_until  # noqa: E402,F401


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cluster_rule(name: str, limit: int, scope: str = "cluster", consistency: str = "exact",
                 period: str = "1h", key: str = "client_ip") -> dict:
    """A [[ratelimit.rule]] table; `consistency` goes in as it is, so `fast` needs no
    change here once leases exist."""
    return {"name": name, "key": key, "stage": "mail", "limit": limit, "period": period,
            "action": "tempfail", "scope": scope, "consistency": consistency}


class Cluster:
    """Nodes of one cluster: ids, cluster ports and milters, all sharing one secret.
    Every node is seeded with the first one; `timing` goes into [cluster]."""

    def __init__(self, work: str, cleanup: Callable[[Callable], None], name: str,
                 rules: list[dict], fail_mode: str = "local", timing: dict | None = None,
                 log_level: str = "info"):
        self.work = work
        self.cleanup = cleanup
        self.name = name
        self.rules = rules
        self.fail_mode = fail_mode
        self.timing = dict(FAST_TIMING if timing is None else timing)
        self.log_level = log_level
        self.secret_file = os.path.join(work, f"{name}.secret")
        with open(self.secret_file, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(self.secret_file, 0o600)
        self.ports: dict[str, int] = {}
        self.milters: dict[str, Milter] = {}
        self.first: str | None = None

    def endpoint(self, node_id: str) -> str:
        if node_id not in self.ports:
            self.ports[node_id] = free_port()
        return f"127.0.0.1:{self.ports[node_id]}"

    def add(self, node_id: str, milter_port: int | None = None, start: bool = True) -> Milter:
        if self.first is None:
            self.first = node_id
        seeds = [] if node_id == self.first else [self.endpoint(self.first)]
        settings = {"enabled": True, "bind": self.endpoint(node_id), "seeds": seeds,
                    "shared_secret_file": self.secret_file}
        settings.update(self.timing)
        extra = {"cluster": settings,
                 "ratelimit": {"fail_mode": self.fail_mode},
                 "log": {"level": self.log_level}}
        m = Milter(self.work, self.cleanup, rules=self.rules, node_id=node_id, extra=extra,
                   name=f"{self.name}-{node_id}", port=milter_port)
        self.milters[node_id] = m
        if start:
            m.start()
        return m

    def start(self, ids: list[str], milter_ports: list[int] | None = None) -> "Cluster":
        for i in ids:
            self.endpoint(i)
        for k, i in enumerate(ids):
            self.add(i, milter_ports[k] if milter_ports else None)
        self.wait_full_view(ids)
        return self

    def wait_full_view(self, ids: list[str], timeout: float = 30.0) -> float:
        start = time.monotonic()

        def done() -> bool:
            for i in ids:
                view = member_view(self.milters[i])
                if any(view.get(j) != "active" for j in ids):
                    return False
            return True
        wait_until(done, timeout, what=f"{self.name}: every node to see {ids} active",
                   diagnostics=lambda: "\n".join(self.milters[i].log_tail(20) for i in ids))
        return time.monotonic() - start

    def kill9(self, node_id: str) -> None:
        m = self.milters[node_id]
        m.process.proc.send_signal(signal.SIGKILL)
        m.process.proc.wait(10)
        m.process.stop()  # reaps, closes the log
        m._stopped = True

    def metric(self, node_id: str, name: str) -> float:
        value = self.milters[node_id].metric(name)
        return 0.0 if value is None else value

    def stop(self) -> None:
        for m in self.milters.values():
            if m.running():
                m.stop()
