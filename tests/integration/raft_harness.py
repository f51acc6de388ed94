"""Helpers for the tests and benchmarks of the Raft-replicated policy (issue 10): real
zetian-milter processes with [cluster] enabled, watched and driven through their health
sockets (GET /health, GET|PUT /policy, GET /policy/history) as docs/operations.md ("The
replicated policy") describes them.

Timings: the membership timings of cluster_harness.FAST_TIMING plus a short Raft
election timeout (300 ms, randomized in [t, 2t)); every wait is a poll with a deadline
stated in those terms, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from typing import Iterable, Optional, Sequence

from cluster_harness import FAST_TIMING, Node
import harness
from harness import HarnessError, MilterClient, free_port, http_unix, rule, to_toml, wait_until

ELECTION_TIMEOUT_S = 0.3
RAFT_TIMING = dict(FAST_TIMING, election_timeout="300ms")
# A PUT is answered within the server's 10 s deadline; the client waits a little longer.
CHANGE_TIMEOUT_S = 15.0
# Leader election after a kill: the followers notice within [t, 2t), PreVote and a vote
# take a round trip or two; generous for a loaded 2-core machine.
ELECTION_DEADLINE_S = 20 * ELECTION_TIMEOUT_S + 5.0


def policy_doc(*rules: dict, fail_mode: str = "local") -> dict:
    """The policy tables: nothing exempt (the built-in default exempts loopback, where
    every test client sends from), `rules` in order."""
    return {"ratelimit": {"exempt": [], "exempt_authenticated": False, "fail_mode": fail_mode,
                          "rule": list(rules)}}


def policy_toml(*rules: dict, fail_mode: str = "local") -> str:
    return to_toml(policy_doc(*rules, fail_mode=fail_mode))


def raft_settings(bootstrap_expect: int, **extra) -> dict:
    """[cluster] keys for a Raft node, on top of the harness's own."""
    settings = dict(RAFT_TIMING, bootstrap_expect=bootstrap_expect)
    settings.update(extra)
    return settings


# --------------------------------------------------------------------------- the health socket


def request(node: Node, method: str, target: str, body: str | None = None,
            timeout: float = CHANGE_TIMEOUT_S) -> tuple[int, object]:
    """(status, JSON body or the raw text when it is not JSON); raises OSError when the
    node does not answer."""
    status, text, _ = http_unix(node.milter.health_socket, method, target,
                                body.encode() if body is not None else None, timeout=timeout)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def health(node: Node) -> Optional[dict]:
    """GET /health, None while the node does not answer."""
    if not node.running():
        return None
    with contextlib.suppress(OSError, ValueError):
        status, body = request(node, "GET", "/health", timeout=3.0)
        if status == 200 and isinstance(body, dict):
            return body
    return None


def put_policy(node: Node, text: str, base_version: int | None = None,
               timeout: float = CHANGE_TIMEOUT_S) -> tuple[int, object]:
    target = "/policy" if base_version is None else f"/policy?base_version={base_version}"
    return request(node, "PUT", target, text, timeout)


def get_policy(node: Node, timeout: float = CHANGE_TIMEOUT_S) -> tuple[int, object]:
    return request(node, "GET", "/policy", timeout=timeout)


def policy_version(node: Node) -> Optional[int]:
    h = health(node)
    return None if h is None else h.get("policy_version")


def leader_of(nodes: Sequence[Node]) -> Optional[Node]:
    """The node that every one of `nodes` names as leader in /health, once it says
    itself that it leads (role "leader"); None otherwise."""
    names = set()
    for n in nodes:
        h = health(n)
        if h is None:
            return None
        names.add(h.get("leader"))
    if len(names) != 1 or None in names:
        return None
    name = names.pop()
    leader = next((n for n in nodes if n.id == name), None)
    if leader is None:
        return None
    h = health(leader)
    if h is None or (h.get("raft") or {}).get("role") != "leader":
        return None
    return leader


def wait_leader(nodes: Sequence[Node], timeout: float = ELECTION_DEADLINE_S,
                diagnostics=None) -> Node:
    return wait_until(lambda: leader_of(nodes), timeout,
                      what=f"{[n.id for n in nodes]} to agree on a leader", diagnostics=diagnostics)


def formed(nodes: Sequence[Node]) -> Optional[Node]:
    """The leader, once every one of `nodes` names it and counts all of `nodes` as
    voters (the ones that joined as learners were promoted); None before."""
    leader = leader_of(nodes)
    if leader is None:
        return None
    for n in nodes:
        h = health(n)
        raft = (h or {}).get("raft") or {}
        if raft.get("voters") != len(nodes):
            return None
        roles = {m.get("id"): m.get("raft_role") for m in h.get("members", [])}
        if any(roles.get(other.id) != "voter" for other in nodes):
            return None
    return leader


def wait_formed(nodes: Sequence[Node], timeout: float = ELECTION_DEADLINE_S, diagnostics=None) -> Node:
    return wait_until(lambda: formed(nodes), timeout,
                      what=f"{[n.id for n in nodes]} to be voters with one leader", diagnostics=diagnostics)


def versions(node: Node) -> tuple[Optional[int], Optional[int]]:
    """(policy_version: the version the Raft state applied; policy.version: the one the
    engine has in force, published a moment later on its reload worker), from /health."""
    h = health(node)
    if h is None:
        return None, None
    return h.get("policy_version"), (h.get("policy") or {}).get("version")


def wait_version(nodes: Iterable[Node], version: int, timeout: float = 20.0, diagnostics=None) -> None:
    """Until every one of `nodes` applied `version` and has it in force (mail it filters
    from now on follows it)."""
    nodes = list(nodes)
    wait_until(lambda: all(versions(n) == (version, version) for n in nodes), timeout,
               what=f"policy version {version} in force on {[n.id for n in nodes]} "
                    f"(now {[versions(n) for n in nodes]})",
               diagnostics=diagnostics)


def raft_role_of(node: Node, member: str) -> Optional[str]:
    """members[].raft_role of `member` as `node` sees it."""
    h = health(node)
    if h is None:
        return None
    for m in h.get("members", []):
        if m.get("id") == member:
            return m.get("raft_role")
    return None


def restart(node: Node) -> Node:
    """Start a stopped (or killed) node again with the same id, config and state_dir."""
    node.milter._stopped = False
    return node.start()


def write_file(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class PendingRequest:
    """An HTTP request written in full to a node's health socket whose answer nobody
    waits for: the change is on its way when the node is killed."""

    def __init__(self, node: Node, method: str, target: str, body: str):
        data = body.encode()
        head = (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n").encode()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(node.milter.health_socket)
        self.sock.sendall(head + data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of `samples`."""
    if not samples:
        raise HarnessError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


def mail_check(node: Node, ip: str, sender: str = "<sender@example.org>") -> tuple[bytes, str]:
    """One transaction from `ip` through `node`'s milter socket, up to MAIL FROM, with
    harness.MilterClient: (the reply packet's command byte, b"c" continue or b"y" a reply
    code; the reply text)."""
    c = MilterClient(node.milter.socket_spec)
    try:
        c.negotiate()
        c.connect_stage(ip)
        c.helo()
        # MilterClient.mail() returns the command byte only: the text is wanted here.
        c.send_raw(c.packet(b"M", sender.encode() + b"\0"))
        code, data = c.reply()
        return code, data.rstrip(b"\0").decode(errors="replace")
    finally:
        c.quit()


class BenchTrio:
    """Three started nodes for the Raft benchmarks (tests/bench/raft_*.py), outside any
    test case: n1..n3 on loopback, bootstrap_expect = 3, one per-IP rule as the seed
    policy, each node's state_dir under `state_root` when given. Stopped by close()."""

    def __init__(self, name: str, election_timeout: str, state_root: str | None = None):
        import types
        self.cleanups: list = []
        self.workdir = harness.make_workdir(name, self.cleanups.append)
        secret = os.path.join(self.workdir, "secret")
        with open(secret, "w") as f:
            f.write(secrets.token_hex(32))
        os.chmod(secret, 0o600)
        case = types.SimpleNamespace(workdir=self.workdir, addCleanup=self.cleanups.append)
        ids = ["n1", "n2", "n3"]
        ports = {i: free_port() for i in ids}
        self.nodes: list[Node] = []
        for i in ids:
            cluster = dict(FAST_TIMING, enabled=True, bind=f"127.0.0.1:{ports[i]}",
                           seeds=[f"127.0.0.1:{ports[s]}" for s in ids if s != i],
                           shared_secret_file=secret, bootstrap_expect=3, election_timeout=election_timeout)
            extra = dict(policy_doc(rule("per_ip", 1000, "1h")), log={"level": "info"})
            if state_root is not None:
                state_dir = os.path.join(state_root, i)
                os.makedirs(state_dir)
                extra["node"] = {"state_dir": state_dir}
            self.nodes.append(Node(case, i, cluster, extra))
        for n in self.nodes:
            n.start()

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}", file=sys.stderr)
