#!/usr/bin/env python3
"""The black-box abuse probe of issue 7, repeatable: a real zetian-milter started as
under systemd (`prlimit --nofile=1024:1024`, a config in a temp folder with the health
socket in it and an inet milter socket on a free loopback port), hurt from outside the
way a hostile or broken client would, and watched through /proc and its sockets:

  pipeline  `GET /live` written back to back without reading, for SECONDS, on the Unix
            health socket and then on the TCP listener (`health.listen`): the peak RSS
            during, the RSS after the client left, another client's /live latency
  slowhttp  1,030 health connections sending one byte a second (reopened when closed):
            fds held, /live on a fresh connection, CPU time, log growth, and a milter
            session (negotiate, connect, helo, mail, quit) during and right after
  idlemilter  1,100 milter connections that never say a word: the same observations,
            and how long until the milter has closed them all (milter.timeout); then
            the same connections reopened as soon as closed, for 20 s; then 1,100 that
            send the options negotiation and then nothing
  second    a second instance on the same config (inet and unix milter sockets): its
            exit code and message; the first keeps its pid file and sockets and serves
  bigconfig 5,000, 10,000, 12,000 exempt CIDRs on one line (85 bytes each, the largest
            under the 1 MiB file limit): `--check-config` time; a
            `POST /reload` of it while another process polls /live every 50 ms: the
            longest gap between answers
  cluster   3 nodes, ~100 idle unauthenticated connections held against the seed's
            cluster port: SIGTERM another member, start it again, time until all three
            see it active (and the same without the flood, for comparison)
  combined  all the floods above at once on one node (more descriptors than it has):
            the same observations as slowhttp
  all       each of the above, one fresh milter each

  python3 tests/bench/abuse_probe.py --milter build/milter/zetian-milter all
  python3 tests/bench/abuse_probe.py pipeline --seconds 10

Everything is on loopback, bounded in count and time; every process started is stopped
and the temp folders are removed (ZETIAN_KEEP_TMP=1 keeps them). A probe that fails
prints its error and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from harness import Milter, MilterClient, free_port, http_unix, rule, wait_until  # noqa: E402

NOFILE = 1024  # systemd's default soft limit, the setting the original probe used
LIVE = b"GET /live HTTP/1.1\r\nHost: probe\r\n\r\n"


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_size(m: Milter) -> int:
    try:
        return os.path.getsize(m.log_path)
    except OSError:
        return 0


def count_lines(m: Milter, offset: int, words: tuple[str, ...]) -> dict[str, int]:
    with open(m.log_path, "r", errors="replace") as f:
        f.seek(offset)
        text = f.read()
    return {w: text.count(w) for w in words}


# --------------------------------------------------------------------------- clients


def live(path: str, timeout: float = 2.0) -> tuple[bool, float]:
    """GET /live on a fresh connection to the Unix health socket: (answered 200, seconds)."""
    start = time.monotonic()
    try:
        status, _, _ = http_unix(path, "GET", "/live", timeout=timeout)
        return status == 200, time.monotonic() - start
    except OSError:
        return False, time.monotonic() - start


def milter_session(spec: str, timeout: float = 5.0) -> tuple[bool, float, str]:
    """negotiate, connect, helo, mail, quit: (every step answered `continue`, seconds, what
    went wrong)."""
    start = time.monotonic()
    client = None
    try:
        client = MilterClient(spec, timeout)
        if client.negotiate() != b"O":
            return False, time.monotonic() - start, "negotiation refused"
        for name, step in (("connect", client.connect_stage), ("helo", client.helo),
                           ("mail", client.mail)):
            code = step()
            if code != b"c":
                return False, time.monotonic() - start, f"{name} answered {code!r}"
        client.quit()
        client = None
        return True, time.monotonic() - start, ""
    except (OSError, ConnectionError) as e:
        return False, time.monotonic() - start, f"{type(e).__name__}: {e}"
    finally:
        if client is not None:
            client.close()


class Observer:
    """Samples the process while a flood runs: every `every` seconds its fds and RSS,
    /live on a fresh connection, and every other round a milter session; CPU time and
    log growth over the whole window."""

    def __init__(self, m: Milter, every: float = 1.0, sessions: bool = True):
        self.m = m
        self.every = every
        self.sessions = sessions
        self.fds: list[int] = []
        self.rss: list[int] = []
        self.live: list[tuple[bool, float]] = []
        self.milter: list[tuple[bool, float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> "Observer":
        self.cpu0 = cpu_seconds(self.m.pid)
        self.log0 = log_size(self.m)
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.seconds = time.monotonic() - self.t0
        self.cpu = cpu_seconds(self.m.pid) - self.cpu0
        self.log_bytes = log_size(self.m) - self.log0

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.fds.append(fd_count(self.m.pid))
                self.rss.append(proc_status(self.m.pid)["VmRSS"])
            self.live.append(live(self.m.health_socket))
            if self.sessions and n % 2 == 0:
                self.milter.append(milter_session(self.m.socket_spec))
            n += 1
            self._stop.wait(self.every)

    def summary(self) -> dict:
        live_ok = [t for ok, t in self.live if ok]
        sess_ok = [t for ok, t, _ in self.milter if ok]
        out = {
            "window_s": round(self.seconds, 1),
            "fds_max": max(self.fds, default=0),
            "fds_last": self.fds[-1] if self.fds else 0,
            "rss_max_kib": max(self.rss, default=0),
            "cpu_s": round(self.cpu, 2),
            "cpu_percent": round(100 * self.cpu / self.seconds, 1),
            "log_bytes": self.log_bytes,
            "live_answered": f"{len(live_ok)}/{len(self.live)}",
            "live_max_ms": round(1000 * max((t for _, t in self.live), default=0), 1),
        }
        if self.sessions:
            out["milter_sessions_served"] = f"{len(sess_ok)}/{len(self.milter)}"
            out["milter_session_max_ms"] = round(1000 * max((t for _, t, _ in self.milter), default=0), 1)
            errors = sorted({e for ok, _, e in self.milter if not ok})
            if errors:
                out["milter_session_errors"] = "; ".join(errors)[:200]
        return out


# --------------------------------------------------------------------------- set-up


class Bench:
    def __init__(self, milter_timeout: str):
        self.cleanups: list = []
        self.workdir = harness.make_workdir("abuse", self.cleanups.append)
        self.milter_timeout = milter_timeout
        self.serial = 0

    def close(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}", file=sys.stderr)
        self.cleanups = []

    def milter(self, extra: dict | None = None, socket_spec: str | None = None,
               name: str | None = None, node_id: str = "probe", start: bool = True) -> Milter:
        """A zetian-milter with one rule far above anything the probe sends (so every
        session is checked, none denied), logging at info to its log file."""
        self.serial += 1
        doc = {"log": {"level": "info"}, "milter": {"timeout": self.milter_timeout}}
        for section, values in (extra or {}).items():
            doc.setdefault(section, {}).update(values)
        m = Milter(self.workdir, self.cleanups.append, rules=[rule("probe", 1_000_000_000)],
                   socket_spec=socket_spec, node_id=node_id, extra=doc,
                   name=name or f"m{self.serial}")
        if start:
            m.start(nofile=NOFILE)
        return m


def raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"this probe holds {need} sockets; the hard RLIMIT_NOFILE is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def table(title: str, rows: dict) -> None:
    log(f"\n{title}")
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        log(f"  {k:<{width}}  {v}")


# --------------------------------------------------------------------------- 1. pipeline


def pipeline_once(m: Milter, connect, seconds: float) -> dict:
    """One client writing `GET /live` back to back, never reading, for `seconds`
    (reconnecting if the server closes it, as a hostile client would)."""
    chunk = LIVE * (65536 // len(LIVE))
    written = 0
    closes = 0
    stop = threading.Event()

    def writer():
        nonlocal written, closes
        s = None
        while not stop.is_set():
            if s is None:
                try:
                    s = connect()
                    s.settimeout(0.2)
                except OSError:
                    stop.wait(0.1)
                    continue
            try:
                written += s.send(chunk)
            except socket.timeout:
                continue  # the server stopped reading: keep the pressure on
            except OSError:
                closes += 1
                s.close()
                s = None
        if s is not None:
            s.close()

    base = proc_status(m.pid)["VmRSS"]
    t = threading.Thread(target=writer, name="pipeline", daemon=True)
    t.start()
    peak = base
    lat: list[tuple[bool, float]] = []
    deadline = time.monotonic() + seconds
    next_live = 0.0
    while time.monotonic() < deadline:
        peak = max(peak, proc_status(m.pid)["VmRSS"])
        if time.monotonic() >= next_live:
            lat.append(live(m.health_socket))
            next_live = time.monotonic() + 0.2
        time.sleep(0.1)
    stop.set()
    t.join(10)
    left = time.monotonic()
    # The RSS after the client left: once the server has dropped the connection, the
    # memory it held should be back within a couple of seconds.
    time.sleep(3)
    after = proc_status(m.pid)
    ok = [x for good, x in lat if good]
    return {
        "written_mib": round(written / 2**20, 1),
        "requests_written": written // len(LIVE),
        "closed_by_server": closes,
        "rss_before_kib": base,
        "rss_peak_kib": peak,
        "rss_after_kib": after["VmRSS"],
        "after_s": round(time.monotonic() - left, 1),
        "other_live_answered": f"{len(ok)}/{len(lat)}",
        "other_live_p50_ms": round(1000 * sorted(ok)[len(ok) // 2], 1) if ok else None,
        "other_live_max_ms": round(1000 * max(x for _, x in lat), 1) if lat else None,
    }


def probe_pipeline(b: Bench, seconds: float) -> dict:
    port = free_port()
    m = b.milter({"health": {"listen": f"127.0.0.1:{port}"}})

    def unix():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(m.health_socket)
        return s

    results = {}
    results["unix"] = pipeline_once(m, unix, seconds)
    results["tcp"] = pipeline_once(m, lambda: socket.create_connection(("127.0.0.1", port), 2), seconds)
    results["VmHWM_kib"] = proc_status(m.pid)["VmHWM"]
    ok, t, err = milter_session(m.socket_spec)
    results["milter_session_after"] = "served" if ok else f"NOT served: {err}"
    m.stop()
    for k in ("unix", "tcp"):
        table(f"pipeline over {k} ({seconds:g} s, never reading)", results[k])
    table("pipeline: process", {"VmHWM_kib": results["VmHWM_kib"],
                                "milter_session_after": results["milter_session_after"]})
    return results


# --------------------------------------------------------------------------- 2. slow health


class SlowHealth:
    """`count` connections to the Unix health socket, each sent one byte a second of a
    request that never ends; a connection the server closes is replaced (nonblocking
    connects: a full accept queue is counted, not waited on)."""

    PREFIX = b"GET /live HTTP/1.1\r\nX-Slow: "

    def __init__(self, address, count: int, send: bool = True):
        self.address = address  # a path (Unix socket) or (host, port)
        self.send = send  # False: hold the connections silent (the milter flood)
        self.count = count
        self.opened = 0
        self.closed_by_server = 0
        self.connect_refused = 0
        self.held_max = 0
        self._socks: dict[socket.socket, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-health", daemon=True)

    def start(self) -> "SlowHealth":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for s in self._socks:
            s.close()
        self._socks = {}

    def _open(self) -> None:
        unix = isinstance(self.address, str)
        s = socket.socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(self.address)
        # TCP: EINPROGRESS is a connection on its way (loopback finishes it at once).
        if err != 0 and (unix or err not in (errno.EINPROGRESS, errno.EAGAIN)):
            s.close()
            self.connect_refused += 1
            return
        self._socks[s] = 0
        self.opened += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for s, pos in list(self._socks.items()):
                alive = True
                try:
                    if s.recv(4096) == b"":
                        alive = False
                except BlockingIOError:
                    pass
                except OSError:
                    alive = False
                if alive and self.send:
                    byte = self.PREFIX[pos:pos + 1] or b"a"
                    try:
                        s.send(byte)
                        self._socks[s] = pos + 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                if not alive:
                    s.close()
                    del self._socks[s]
                    self.closed_by_server += 1
            self.held_max = max(self.held_max, len(self._socks))
            for _ in range(self.count - len(self._socks)):
                if self._stop.is_set():
                    break
                self._open()
            self.held_max = max(self.held_max, len(self._socks))
            self._stop.wait(1.0)


def after_flood(m: Milter) -> dict:
    ok, t, err = milter_session(m.socket_spec)
    lok, lt = live(m.health_socket)
    return {"milter_session_right_after": f"served in {1000 * t:.0f} ms" if ok else f"NOT served: {err}",
            "live_right_after": f"200 in {1000 * lt:.0f} ms" if lok else "no answer",
            "fds_right_after": fd_count(m.pid)}


def probe_slowhttp(b: Bench, count: int, seconds: float) -> dict:
    """The flood on the Unix health socket, then on the TCP listener; /live is always
    asked on the Unix socket (a fresh connection each time)."""
    raise_own_nofile(count + 4096)
    port = free_port()
    m = b.milter({"health": {"listen": f"127.0.0.1:{port}"}})
    results = {}
    for kind, address in (("unix", m.health_socket), ("tcp", ("127.0.0.1", port))):
        fds_idle = fd_count(m.pid)
        obs = Observer(m).start()
        flood = SlowHealth(address, count).start()
        time.sleep(seconds)
        flood.stop()
        obs.stop()
        out = {"connections_wanted": count, "opened": flood.opened,
               "connect_failed_queue_full": flood.connect_refused,
               "closed_by_server": flood.closed_by_server, "held_by_client_max": flood.held_max,
               "fds_idle": fds_idle}
        out.update(obs.summary())
        out.update(count_lines(m, obs.log0, ("accept_failed", "health_connection_refused")))
        out.update(after_flood(m))
        results[kind] = out
        table(f"slowhttp: {count} {kind} health connections, one byte a second, reopened when "
              f"closed, {seconds:g} s (/live asked on the Unix socket)", out)
    m.stop()
    return results


# --------------------------------------------------------------------------- 3. idle milter


def probe_idlemilter(b: Bench, count: int, timeout_s: float, refill_seconds: float,
                     negotiated: bool, negotiated_seconds: float | None = None) -> dict:
    raise_own_nofile(count + 4096)
    m = b.milter()
    fds_idle = fd_count(m.pid)
    obs = Observer(m).start()
    socks = []
    failed = 0
    t0 = time.monotonic()
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", m.port), timeout=1)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
    opened_in = time.monotonic() - t0
    open_ = set(socks)
    closed_at: list[float] = []
    refused_at_once = None
    # Silent connections are closed after milter.timeout; give it three times that.
    deadline = time.monotonic() + 3 * timeout_s + 10
    while open_ and time.monotonic() < deadline:
        for s in list(open_):
            try:
                if s.recv(1) == b"":
                    raise ConnectionError
            except BlockingIOError:
                continue
            except (OSError, ConnectionError):
                pass
            open_.discard(s)
            closed_at.append(time.monotonic() - t0)
        if refused_at_once is None and time.monotonic() - t0 > opened_in + 1:
            refused_at_once = len(closed_at)
        time.sleep(0.2)
    all_closed = time.monotonic() - t0 if not open_ else None
    time.sleep(1)  # one more observation with the connections gone
    obs.stop()
    for s in socks:
        s.close()
    out = {"connections": count, "connect_failed": failed, "opened_in_s": round(opened_in, 1),
           "fds_idle": fds_idle,
           "closed_within_1s_of_opening": refused_at_once,
           "still_open_at_end": len(open_),
           "all_closed_after_s": round(all_closed, 1) if all_closed is not None else f"NO (>{deadline - t0:.0f} s)",
           "milter.timeout": f"{timeout_s:g} s"}
    out.update(obs.summary())
    out.update(count_lines(m, obs.log0, ("milter_connection_refused", "milter_silent_connections_closed",
                                         "milter_accept_failed")))
    out.update(after_flood(m))
    table(f"idlemilter: {count} silent milter connections, opened once", out)
    results = {"once": out}
    if refill_seconds > 0:
        # The same flood, but every connection the milter closes is opened again at once
        # (as a hostile client would): what a real session gets while it lasts.
        obs = Observer(m).start()
        flood = SlowHealth(("127.0.0.1", m.port), count, send=False).start()
        time.sleep(refill_seconds)
        flood.stop()
        obs.stop()
        out = {"connections_wanted": count, "opened": flood.opened,
               "connect_failed": flood.connect_refused, "closed_by_milter": flood.closed_by_server,
               "held_by_client_max": flood.held_max}
        out.update(obs.summary())
        out.update(count_lines(m, obs.log0, ("milter_connection_refused", "milter_silent_connections_closed",
                                             "milter_accept_failed")))
        out.update(after_flood(m))
        table(f"idlemilter: {count} silent milter connections, reopened when closed, "
              f"{refill_seconds:g} s", out)
        results["refilled"] = out
    if negotiated:
        results["negotiated"] = negotiated_flood(m, count, timeout_s, negotiated_seconds)
    m.stop()
    return results


def negotiated_flood(m: Milter, count: int, timeout_s: float, window: float | None) -> dict:
    """`count` connections that send the options negotiation (a milter command, so they
    are no longer silent) and then nothing: whether the milter closes them, and whether
    a real session is served meanwhile. Watched for `window` seconds (default 3 x
    milter.timeout + 10 s), or until the milter has closed them all."""
    negotiate = MilterClient.packet(b"O", MilterClient.VERSION.to_bytes(4, "big")
                                    + MilterClient.ACTIONS.to_bytes(4, "big") + (0).to_bytes(4, "big"))
    obs = Observer(m).start()
    socks = []
    failed = 0
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", m.port), timeout=1)
            s.sendall(negotiate)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
    open_ = set(socks)
    answered = set()
    window = window or 3 * timeout_s + 10
    t0 = time.monotonic()
    early_closed = None
    all_closed = None
    while time.monotonic() - t0 < window:
        if not open_:
            all_closed = time.monotonic() - t0
            break
        for s in list(open_):
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                answered.add(s)
                continue
            open_.discard(s)
        if early_closed is None and time.monotonic() - t0 > 1:
            early_closed = len(socks) - len(open_)
        time.sleep(0.2)
    obs.stop()
    for s in socks:
        s.close()
    out = {"connections": count, "connect_failed": failed,
           "negotiation_answered": len(answered),
           "closed_within_1s": early_closed,
           f"still_open_after_{window:g}_s": len(open_),
           "all_closed_after_s": round(all_closed, 1) if all_closed is not None else f"NO (>{window:g} s)",
           "milter.timeout": f"{timeout_s:g} s"}
    out.update(obs.summary())
    out.update(count_lines(m, obs.log0, ("milter_connection_refused", "milter_silent_connections_closed",
                                         "milter_accept_failed")))
    out.update(after_flood(m))
    table(f"idlemilter: {count} milter connections that negotiate, then say nothing", out)
    return out


# --------------------------------------------------------------------------- 4. second instance


def probe_second(b: Bench) -> dict:
    results = {}
    for kind in ("inet", "unix"):
        name = f"second-{kind}"
        spec = None
        if kind == "unix":
            spec = "unix:" + os.path.join(b.workdir, name, "milter.sock")
        pid_file = os.path.join(b.workdir, name, "zetian.pid")
        m = b.milter({"milter": {"pid_file": pid_file}}, socket_spec=spec, name=name)
        wait_until(lambda: os.path.exists(pid_file), 10, what="pid file")

        def state():
            st = {"pid_file": open(pid_file).read().strip() if os.path.exists(pid_file) else None,
                  "health_inode": os.stat(m.health_socket).st_ino if os.path.exists(m.health_socket) else None}
            if spec:
                path = spec[5:]
                st["milter_inode"] = os.stat(path).st_ino if os.path.exists(path) else None
            return st
        before = state()
        t0 = time.monotonic()
        cp = subprocess.run([harness.PRLIMIT, f"--nofile={NOFILE}:{NOFILE}", "--", m.binary, "-c", m.config_path],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        after = state()
        ok, _, err = milter_session(m.socket_spec)
        lok, _ = live(m.health_socket)
        message = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
        out = {"second_exit_code": cp.returncode, "second_ran_s": round(took, 2),
               "second_message": message[-1][:400] if message else "",
               "pid_file_intact": after["pid_file"] == before["pid_file"] == str(m.pid),
               "health_socket_intact": after["health_inode"] == before["health_inode"] is not None}
        if spec:
            out["milter_socket_intact"] = after["milter_inode"] == before["milter_inode"] is not None
        out["first_milter_session"] = "served" if ok else f"NOT served: {err}"
        out["first_live"] = "200" if lok else "no answer"
        out["first_running"] = m.running()
        m.stop()
        out["pid_file_removed_at_first_stop"] = not os.path.exists(pid_file)
        results[kind] = out
        table(f"second: another instance on the config of a running one ({kind} milter socket)", out)
    return results


# --------------------------------------------------------------------------- 5. big config


POLLER = r"""
import json, socket, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
req = b"GET /live HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
last = time.monotonic(); gap = 0.0; ok = 0; failed = 0
print("started", flush=True)
end = last + seconds
while time.monotonic() < end:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5); s.connect(path)
        s.sendall(req); data = b""
        while True:
            c = s.recv(4096)
            if not c: break
            data += c
        s.close()
        if data.startswith(b"HTTP/1.1 200"):
            now = time.monotonic(); gap = max(gap, now - last); last = now; ok += 1
        else:
            failed += 1
    except OSError:
        failed += 1
    time.sleep(0.05)
print(json.dumps({"max_gap_s": round(gap, 3), "answered": ok, "failed": failed}), flush=True)
"""


def big_config(base: str, n: int) -> str:
    """`base` with `exempt` replaced by `n` CIDRs on one line, about 85 bytes each (the
    original probe's file: 10,000 on one line, 855 KB): full-form IPv6 /128 blocks,
    padded with the blanks TOML allows between array elements."""
    items = []
    for i in range(n):
        item = f'"2001:0db8:0000:0000:0000:0000:{i // 65536:04x}:{i % 65536:04x}/128",'
        items.append(item + " " * max(1, 85 - len(item)))
    line = "exempt = [" + "".join(items).rstrip().rstrip(",") + "]"
    out = [line if raw.startswith("exempt = ") else raw for raw in base.splitlines()]
    if line not in out:
        raise RuntimeError("the base config has no `exempt = ` line to replace")
    return "\n".join(out) + "\n"


def probe_bigconfig(b: Bench, counts: list[int]) -> dict:
    m = b.milter()
    normal = open(m.config_path).read()
    out: dict = {}
    for n in counts:
        text = big_config(normal, n)
        path = os.path.join(m.workdir, f"big{n}.toml")
        with open(path, "w") as f:
            f.write(text)
        longest = max(len(line) for line in text.splitlines())
        t0 = time.monotonic()
        cp = subprocess.run([m.binary, "-c", path, "--check-config"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
        out[f"check_{n}_cidrs_one_line_s"] = round(time.monotonic() - t0, 2)
        out[f"check_{n}_exit"] = cp.returncode
        if cp.returncode != 0:
            out[f"check_{n}_error"] = (cp.stderr.strip() or cp.stdout.strip())[:200]
        out[f"check_{n}_line_kb"] = round(longest / 1000, 1)
    # Reload the largest file that passed the check while another process polls /live
    # every 50 ms (files over 1 MiB are refused by design).
    passed = [n for n in counts if out[f"check_{n}_exit"] == 0]
    if not passed:
        raise RuntimeError(f"no big config passed --check-config: {out}")
    n = max(passed)
    out["reloaded_cidrs"] = n
    with open(os.path.join(m.workdir, f"big{n}.toml")) as f:
        m.write_config(text=f.read())
    poller = subprocess.Popen([sys.executable, "-c", POLLER, m.health_socket, "6"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert poller.stdout is not None
        poller.stdout.readline()  # "started"
        time.sleep(1.5)  # a baseline of answers before the reload
        t0 = time.monotonic()
        try:
            status, body, _ = http_unix(m.health_socket, "POST", "/reload", body=b"", timeout=120)
        except OSError as e:
            status, body = None, str(e)
        out["reload_http_status"] = status
        out["reload_s"] = round(time.monotonic() - t0, 2)
        if status != 200:
            out["reload_body"] = body[:160]
        result = json.loads(poller.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait(10)
    out["poller_live_answered"] = result["answered"]
    out["poller_live_failed"] = result["failed"]
    out["poller_longest_live_gap_ms"] = round(1000 * result["max_gap_s"])
    m.write_config(text=normal)
    m.stop()
    table(f"bigconfig: {', '.join(map(str, counts))} exempt CIDRs on one line", out)
    return out


# --------------------------------------------------------------------------- 6. cluster


def view(m: Milter) -> dict[str, str]:
    import cluster_harness  # noqa: E402  (same folder as harness)
    return cluster_harness.member_view(m)


def probe_cluster(b: Bench, strangers: int) -> dict:
    import cluster_harness  # noqa: E402  (same folder as harness)
    secret = os.path.join(b.workdir, "cluster.secret")
    with open(secret, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    ids = ["n1", "n2", "n3"]
    ports = {i: free_port() for i in ids}

    def node(i: str, start: bool = True) -> Milter:
        cluster = {"enabled": True, "bind": f"127.0.0.1:{ports[i]}",
                   "seeds": [] if i == "n1" else [f"127.0.0.1:{ports['n1']}"],
                   "shared_secret_file": secret}
        return b.milter({"cluster": cluster}, node_id=i, name=f"cluster-{i}", start=start)

    nodes = {i: node(i) for i in ids}

    def full() -> bool:
        return all(view(m) == {i: "active" for i in ids} for m in nodes.values())
    formed = time.monotonic()
    wait_until(full, 120, interval=0.05, what="3-node full view")
    out: dict = {"formed_s": round(time.monotonic() - formed, 1)}

    def restart(label: str) -> None:
        nodes["n2"].stop()
        t0 = time.monotonic()
        nodes["n2"] = node("n2", start=False)
        log0 = log_size(nodes["n2"])
        nodes["n2"].start(nofile=NOFILE)
        try:
            wait_until(full, 120, interval=0.05, what=f"n2 active everywhere ({label})")
            out[f"rejoin_{label}_s"] = round(time.monotonic() - t0, 2)
        except AssertionError:
            out[f"rejoin_{label}_s"] = "NO (>120 s)"
            out[f"views_{label}"] = {i: view(m) for i, m in nodes.items()}
        out[f"n2_join_timeout_{label}"] = count_lines(nodes["n2"], log0, ("cluster_join_timeout",))["cluster_join_timeout"]

    restart("no_flood")
    for label, targets in ((f"{strangers}_strangers_on_n1", ["n1"]),
                           (f"{strangers}_strangers_on_each", ids)):
        floods = [cluster_harness.StrangerFlood(ports[i], count=strangers).start() for i in targets]
        try:
            wait_until(lambda: all(f.opened >= strangers for f in floods), 30,
                       what="the stranger floods to be in place")
            time.sleep(2)  # let them churn through evictions
            restart(label)
        finally:
            for f in floods:
                f.stop()
        out[f"strangers_opened_{label}"] = sum(f.opened for f in floods)
        out[f"strangers_closed_by_nodes_{label}"] = sum(f.closed_by_node for f in floods)
    for i in ids:
        samples = harness.metric_samples(nodes[i].http("GET", "/metrics")[1],
                                         "zetian_cluster_links_rejected_total")
        out[f"{i}_links_rejected"] = {lab.get("reason", "?"): int(v) for lab, v in samples if v}
    for m in nodes.values():
        m.stop()
    table(f"cluster: restart n2 of 3, without and with {strangers} idle strangers held against "
          f"the seed n1, then against every node", out)
    return out


# --------------------------------------------------------------------------- 7. combined


def probe_combined(b: Bench, seconds: float) -> dict:
    """Every flood above at once against one node (slow health connections on the Unix
    socket and on the TCP listener, silent milter connections reopened when closed,
    idle strangers on the cluster port): together they want more descriptors than the
    1,024 the process has, so the listeners meet EMFILE; the milter and /live must
    still be served, the loop must not spin, the log must not flood."""
    import cluster_harness  # noqa: E402  (same folder as harness)
    raise_own_nofile(6000)
    secret = os.path.join(b.workdir, "combined.secret")
    with open(secret, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    hport, cport = free_port(), free_port()
    m = b.milter({"health": {"listen": f"127.0.0.1:{hport}"},
                  "cluster": {"enabled": True, "bind": f"127.0.0.1:{cport}", "seeds": [],
                              "shared_secret_file": secret}})
    fds_idle = fd_count(m.pid)
    obs = Observer(m).start()
    floods = [SlowHealth(m.health_socket, 1030), SlowHealth(("127.0.0.1", hport), 1030),
              SlowHealth(("127.0.0.1", m.port), 1100, send=False)]
    for f in floods:
        f.start()
    strangers = cluster_harness.StrangerFlood(cport, count=100).start()
    time.sleep(seconds)
    held_strangers = len(strangers._sockets)
    strangers.stop()
    for f in floods:
        f.stop()
    obs.stop()
    out = {"fds_idle": fds_idle,
           "held_by_client_max": f"unix {floods[0].held_max}, tcp {floods[1].held_max}, "
                                 f"milter {floods[2].held_max}, cluster {held_strangers} at the end"}
    out.update(obs.summary())
    out.update(count_lines(m, obs.log0, ("accept_failed", "health_connection_refused",
                                         "milter_connection_refused", "milter_accept_failed",
                                         "cluster_link_rejected")))
    out.update(after_flood(m))
    table(f"combined: every flood at once, {seconds:g} s", out)
    m.stop()
    return out


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milter", default=os.path.join(HERE, "..", "..", "build", "milter", "zetian-milter"))
    parser.add_argument("--milter-timeout", type=int, default=5, help="milter.timeout in seconds (default 5)")
    parser.add_argument("--json", action="store_true", help="also print every figure as one JSON line")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--seconds", type=float, default=10)
    p = sub.add_parser("slowhttp")
    p.add_argument("--connections", type=int, default=1030)
    p.add_argument("--seconds", type=float, default=20)
    p = sub.add_parser("idlemilter")
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--refill-seconds", type=float, default=20,
                   help="then hold them by reopening each closed one, this long (0: skip)")
    p.add_argument("--no-negotiated", action="store_true",
                   help="skip the last phase (connections that negotiate, then idle)")
    p.add_argument("--negotiated-seconds", type=float, default=None,
                   help="watch the negotiated connections this long (default 3 x milter.timeout + 10)")
    sub.add_parser("second")
    p = sub.add_parser("bigconfig")
    p.add_argument("--cidrs", type=int, nargs="+", default=[5000, 10000, 12000])
    p = sub.add_parser("cluster")
    p.add_argument("--strangers", type=int, default=100)
    p = sub.add_parser("combined")
    p.add_argument("--seconds", type=float, default=20)
    sub.add_parser("all")
    args = parser.parse_args()
    os.environ["ZETIAN_MILTER"] = os.path.abspath(args.milter)
    ctl = os.path.join(os.path.dirname(os.path.abspath(args.milter)), "zetianctl")
    if "ZETIAN_CTL" not in os.environ and os.path.exists(ctl):
        os.environ["ZETIAN_CTL"] = ctl
    for d in ("/proc/self/status",):
        if not os.path.exists(d):
            raise SystemExit("needs Linux /proc")

    probes = {
        "pipeline": lambda b: probe_pipeline(b, getattr(args, "seconds", 10)),
        "slowhttp": lambda b: probe_slowhttp(b, getattr(args, "connections", 1030),
                                             getattr(args, "seconds", 20)),
        "idlemilter": lambda b: probe_idlemilter(b, getattr(args, "connections", 1100), args.milter_timeout,
                                                 getattr(args, "refill_seconds", 20),
                                                 not getattr(args, "no_negotiated", False),
                                                 getattr(args, "negotiated_seconds", None)),
        "second": probe_second,
        "bigconfig": lambda b: probe_bigconfig(b, getattr(args, "cidrs", [5000, 10000, 12000])),
        "cluster": lambda b: probe_cluster(b, getattr(args, "strangers", 100)),
        "combined": lambda b: probe_combined(b, getattr(args, "seconds", 20)),
    }
    chosen = list(probes) if args.what == "all" else [args.what]
    log(f"zetian-milter {os.environ['ZETIAN_MILTER']} under prlimit --nofile={NOFILE}:{NOFILE}, "
        f"milter.timeout {args.milter_timeout}s, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    results: dict = {}
    failed = []
    for name in chosen:
        b = Bench(f"{args.milter_timeout}s")
        started = time.monotonic()
        try:
            results[name] = probes[name](b)
        except Exception as e:  # one probe's failure must not hide the others' figures
            failed.append(name)
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"\n{name}: FAILED: {type(e).__name__}: {e}")
        finally:
            b.close()
        log(f"  ({name} took {time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.2f})")
    if args.json:
        print(json.dumps(results, default=str))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
