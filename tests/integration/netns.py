"""Network namespaces for cluster tests: every node on a host of its own, on one LAN
whose cables the test can pull.

Layout of a `Lan` (all names carry a random tag, so parallel runs never meet):

    ztTAG-sw   the "switch": bridge br0 (multicast snooping off, so every multicast
               datagram is flooded to every port), optionally an address on br0 for
               servers the nodes share (dnsmasq);
    ztTAG-h1.. one namespace per host, its end of a veth pair named eth0 with
               SUBNET.N/24, the other end (p1, p2, ...) a port of br0.

Nothing is created in the host's own namespace: deleting the namespaces deletes every
link and route with them.

Processes run inside a namespace through `ip netns exec NS argv...`, which execs argv
in place (same pid, so ManagedProcess's stop and the harness guard still hold) after
bind-mounting each file of /etc/netns/NS/ over /etc/ — that is how a node gets its own
/etc/resolv.conf. Unix sockets live in the shared file system, so a node's health socket
answers the test process from the host namespace as usual.

Cleanup: every namespace is removed by the test's cleanup stack, and registered with a
watchdog of our own (like harness._Guard, whose protocol knows only process sessions and
folders): if the test process dies without cleaning up, the watchdog kills whatever
still runs in the namespaces, deletes them and removes their /etc/netns folders.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import unittest
from typing import Callable, Optional, Sequence

from cluster_harness import ClusterTestCase, Node
from harness import DEFAULT_DEADLINE_S, HarnessError, ManagedProcess, Milter, wait_until

IP = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""
DNSMASQ = shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""
NETNS_ETC = "/etc/netns"

Cleanup = Callable[[Callable], None]


# --------------------------------------------------------------------------- watchdog


_WATCHDOG_CODE = r"""
import os, shutil, signal, subprocess, sys
ip, names = sys.argv[1], set()
for line in sys.stdin:
    op, name = line[0], line[1:].strip()
    (names.add if op == "+" else names.discard)(name)
# The test process is gone without removing these: empty and delete them.
for name in names:
    pids = subprocess.run([ip, "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    subprocess.run([ip, "netns", "delete", name], capture_output=True)
    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)
"""


class _NetnsWatchdog:
    """A process that outlives the test process and deletes the namespaces still
    registered when the test process's pipe to it closes."""

    _proc: Optional[subprocess.Popen] = None
    _lock = threading.Lock()

    @classmethod
    def send(cls, line: str) -> None:
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                cls._proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG_CODE, IP],
                                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, start_new_session=True,
                                             text=True)
            with contextlib.suppress(OSError):
                cls._proc.stdin.write(line + "\n")
                cls._proc.stdin.flush()


# --------------------------------------------------------------------------- commands


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run([IP, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                        timeout=15)
    if check and cp.returncode != 0:
        raise HarnessError(f"`ip {' '.join(args)}` failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


def require_netns() -> None:
    """SkipTest unless this process may create namespaces, bridges and veth pairs."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("network namespaces need root (ip netns add)")
    if not IP:
        raise unittest.SkipTest("the `ip` command (iproute2) is not installed")
    probe = f"zt{secrets.token_hex(3)}-probe"
    cp = ip("netns", "add", probe, check=False)
    if cp.returncode != 0:
        raise unittest.SkipTest(f"`ip netns add` fails here: {cp.stderr.strip()}")
    try:
        for args in (("link", "add", "br0", "type", "bridge"),
                     ("link", "add", "p0", "type", "veth", "peer", "name", "eth0")):
            cp = ip("-n", probe, *args, check=False)
            if cp.returncode != 0:
                raise unittest.SkipTest(f"`ip link add {' '.join(args[2:])}` fails in a "
                                        f"namespace: {cp.stderr.strip()}")
    finally:
        ip("netns", "delete", probe, check=False)


# --------------------------------------------------------------------------- namespaces


class Netns:
    """One network namespace, deleted (with everything still running in it) by the
    cleanup stack, or by the watchdog if the test process dies first."""

    def __init__(self, name: str, cleanup: Cleanup):
        self.name = name
        self.etc_dir = os.path.join(NETNS_ETC, name)
        _NetnsWatchdog.send(f"+{name}")
        try:
            ip("netns", "add", name)
        except HarnessError:
            _NetnsWatchdog.send(f"-{name}")
            raise
        cleanup(self.remove)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ip("-n", self.name, *args, check=check)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv to run `argv` inside this namespace (exec'd in place by ip)."""
        return [IP, "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=15)

    def use_nameserver(self, address: str) -> None:
        """/etc/resolv.conf as seen by processes started with argv() from now on."""
        os.makedirs(self.etc_dir, exist_ok=True)
        with open(os.path.join(self.etc_dir, "resolv.conf"), "w") as f:
            f.write(f"nameserver {address}\noptions timeout:1 attempts:2\n")

    def pids(self) -> list[int]:
        out = ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def remove(self) -> None:
        leftovers = self.pids()
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        ip("netns", "delete", self.name, check=False)
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        _NetnsWatchdog.send(f"-{self.name}")
        if leftovers:
            raise HarnessError(f"processes {leftovers} were still running in namespace "
                               f"{self.name} at cleanup (killed)")

    def describe(self) -> str:
        links = self.ip("-br", "link", check=False).stdout.strip()
        routes = self.ip("route", "show", "table", "all", check=False).stdout.strip()
        routes = "\n".join(r for r in routes.splitlines() if "table local" not in r)
        return f"[{self.name}]\n{links}\n{routes}"


class Host:
    """A namespace on the LAN: eth0 with `address`/24, cabled to switch port `port`."""

    def __init__(self, lan: "Lan", index: int, netns: Netns, address: str):
        self.lan = lan
        self.index = index
        self.netns = netns
        self.address = address
        self.port = f"p{index}"

    def unplug(self) -> None:
        """Pull the cable at the switch: the host keeps its address and routes, but no
        frame reaches it or leaves it (its eth0 loses carrier)."""
        self.lan.switch.ip("link", "set", self.port, "down")

    def plug(self) -> None:
        self.lan.switch.ip("link", "set", self.port, "up")

    def blackhole(self, other: "Host") -> None:
        """Drop everything this host sends to `other` (a /32 blackhole route)."""
        self.netns.ip("route", "add", "blackhole", f"{other.address}/32")

    def unblackhole(self, other: "Host") -> None:
        self.netns.ip("route", "del", "blackhole", f"{other.address}/32")

    def route_multicast(self) -> None:
        """A route for 224.0.0.0/4 out of eth0, so sending to a group needs no default
        route."""
        self.netns.ip("route", "add", "224.0.0.0/4", "dev", "eth0")


class Lan:
    """A switch namespace with a bridge and `hosts` namespaces cabled to it."""

    def __init__(self, cleanup: Cleanup, hosts: int, subnet: str = "10.77.0",
                 switch_address: Optional[str] = None):
        self.tag = f"zt{secrets.token_hex(3)}"
        self.subnet = subnet
        self.switch = Netns(f"{self.tag}-sw", cleanup)
        self.switch.ip("link", "add", "br0", "type", "bridge")
        self.switch.ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        self.switch.ip("link", "set", "br0", "up")
        self.switch_address = None
        if switch_address is not None:
            self.switch_address = f"{subnet}.{switch_address}"
            self.switch.ip("addr", "add", f"{self.switch_address}/24", "dev", "br0")
        self.hosts: list[Host] = []
        for _ in range(hosts):
            self.add_host(cleanup)

    def add_host(self, cleanup: Cleanup) -> Host:
        index = len(self.hosts) + 1
        netns = Netns(f"{self.tag}-h{index}", cleanup)
        port = f"p{index}"
        self.switch.ip("link", "add", port, "type", "veth", "peer", "name", "eth0",
                       "netns", netns.name)
        self.switch.ip("link", "set", port, "master", "br0")
        self.switch.ip("link", "set", port, "up")
        address = f"{self.subnet}.{index}"
        netns.ip("addr", "add", f"{address}/24", "dev", "eth0")
        netns.ip("link", "set", "eth0", "up")
        host = Host(self, index, netns, address)
        self.hosts.append(host)
        return host

    def describe(self) -> str:
        return "\n".join(ns.describe() for ns in [self.switch] + [h.netns for h in self.hosts])


# --------------------------------------------------------------------------- processes


class NetnsMilter(Milter):
    """A zetian-milter inside a namespace. Its milter socket is a Unix socket in its
    folder: a TCP socket on the namespace's loopback would be out of the test's reach."""

    def __init__(self, netns: Netns, workdir: str, cleanup: Cleanup, name: str, **kwargs):
        self.netns = netns
        kwargs.setdefault("socket_spec", f"unix:{os.path.join(workdir, name, 'milter.sock')}")
        super().__init__(workdir, cleanup, name=name, **kwargs)

    @property
    def milter_socket(self) -> str:
        return self.socket_spec[len("unix:"):]

    def start(self, timeout: float = DEFAULT_DEADLINE_S) -> "NetnsMilter":
        self.process = ManagedProcess(self.netns.argv([self.binary, "-c", self.config_path]),
                                      self.log_path, name="zetian-milter")
        self.cleanup(self._cleanup_stop)
        wait_until(lambda: self._ready() or not self.process.running(), timeout,
                   what=f"zetian-milter in {self.netns.name}: GET /ready = 200",
                   diagnostics=self.log_tail)
        if not self.process.running():
            self._stopped = True
            status = self.process.stop()
            raise HarnessError(f"zetian-milter in {self.netns.name} exited with {status} at "
                               f"start\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """As Milter.stop; libmilter's listener notices the signal only when its poll()
        returns (every 5 s), so a connection to the Unix milter socket wakes it."""
        assert self.process is not None
        self._stopped = True
        self.process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.proc.wait(0.2)
        if self.process.running():
            with contextlib.suppress(OSError), \
                    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(self.milter_socket)
        status = self.process.stop(None, timeout)
        if status is None:
            raise HarnessError(f"zetian-milter in {self.netns.name} did not exit within "
                               f"{timeout}s of {signal.Signals(sig).name} (killed)\n{self.log_tail()}")
        if status != 0:
            raise HarnessError(f"zetian-milter in {self.netns.name} exited with {status} after "
                               f"{signal.Signals(sig).name}\n{self.log_tail()}")
        return status


def udp_listening(pid: int, address: str, port: int) -> bool:
    """True if a UDP socket is bound to address:port in the network namespace of `pid`
    (read from /proc/PID/net/udp, which shows that process's namespace)."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/udp") as f:
            next(f)
            return any(line.split()[1] == want for line in f)
    except (OSError, StopIteration):
        return False


class Dnsmasq:
    """dnsmasq as the only DNS server of a LAN, answering from its command line only
    (no upstream, no /etc/hosts), authoritative for `domain` (unknown names there are
    NXDOMAIN, known names without the asked type are NODATA)."""

    def __init__(self, netns: Netns, address: str, workdir: str, cleanup: Cleanup,
                 records: Sequence[str], domain: str):
        if not DNSMASQ:
            raise unittest.SkipTest("dnsmasq is not installed: apt-get install -y dnsmasq-base")
        self.address = address
        self.log_path = os.path.join(workdir, "dnsmasq.log")
        argv = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-poll", f"--listen-address={address}", "--bind-interfaces", "--port=53",
                f"--local=/{domain}/", "--log-queries", "--log-facility=-", *records]
        self.process = ManagedProcess(netns.argv(argv), self.log_path, name="dnsmasq")
        cleanup(self.process.stop)
        wait_until(lambda: udp_listening(self.process.pid, address, 53)
                   or not self.process.running(), 10, what=f"dnsmasq on {address}:53",
                   diagnostics=self.log_tail)
        if not self.process.running():
            raise HarnessError("dnsmasq exited at start\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            with open(self.log_path, errors="replace") as f:
                return f"--- dnsmasq {self.log_path} ---\n" + "\n".join(f.read().splitlines()[-lines:])
        return f"({self.log_path} unreadable)"


# --------------------------------------------------------------------------- cluster nodes


class NetnsNode(Node):
    """A cluster_harness.Node whose zetian-milter runs on `host` (in its namespace)."""

    def __init__(self, case, node_id: str, host: Host, cluster: dict, extra: dict | None = None):
        self.case = case
        self.id = node_id
        self.host = host
        self.port = cluster["bind"].rsplit(":", 1)[1]
        doc = {"cluster": dict(cluster)}
        for section, values in (extra or {}).items():
            doc.setdefault(section, {}).update(values)
        self.milter = NetnsMilter(host.netns, case.workdir, case.addCleanup, node_id=node_id,
                                  extra=doc, name=f"{node_id}-{secrets.token_hex(2)}")
        self.address = cluster.get("advertise") or cluster["bind"]


class NetnsClusterTestCase(ClusterTestCase):
    """ClusterTestCase with a LAN of namespaces per test (`self.lan`); nodes are started
    on its hosts with `self.node_on(host, ...)`. Skips when namespaces cannot be made."""

    @classmethod
    def setUpClass(cls):
        require_netns()
        super().setUpClass()

    def make_lan(self, hosts: int, switch_address: Optional[int] = None) -> Lan:
        self.lan = Lan(self.addCleanup, hosts, switch_address=switch_address)
        return self.lan

    def node_on(self, host: Host, node_id: str, cluster: dict, secret_file: str | None = None,
                start: bool = True) -> NetnsNode:
        settings = {"enabled": True, "shared_secret_file": secret_file or self.secret_file}
        settings.update(self.timing)
        settings.update(cluster)
        n = NetnsNode(self, node_id, host, settings)
        self.nodes.append(n)
        return n.start() if start else n

    def diagnostics(self, nodes=None) -> str:
        text = super().diagnostics(self.nodes if nodes is None else nodes)
        lan = getattr(self, "lan", None)
        return text + ("\n--- network ---\n" + lan.describe() if lan is not None else "")
