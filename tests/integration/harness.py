"""Integration-test harness: a throwaway Postfix, an smtp-sink, a Dovecot-protocol SASL
server, an SMTP client and the zetian-milter process, all on loopback.

Everything here runs real processes on ports and in folders it picks itself, and stops
what it starts: every start registers its stop with the caller's cleanup stack before
the process exists, so a failing test cannot leave a Postfix, a sink or a milter behind.

Rules kept throughout:
- synchronisation is by polling a condition with a deadline (`wait_until`), never by a
  fixed sleep;
- Postfix runs as root from its own config folder (`postfix -c DIR start`), with every
  service unchrooted, so Unix-socket paths mean the same to Postfix as to us;
- Postfix's mail.log is checked for `fatal:`/`panic:` lines and its tail is put into
  failure messages, together with the milter's own log.

Environment:
  ZETIAN_MILTER  path of the zetian-milter binary (default: search build folders)
  ZETIAN_CTL     path of zetianctl
  ZETIAN_KEEP_TMP=1  keep the temp folders (for debugging a failure by hand)
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import email.utils
import fcntl
import glob
import http.client
import json
import os
import pwd
import random
import re
import shutil
import signal
import smtplib
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""
POSTCONF = shutil.which("postconf", path="/usr/sbin:/usr/bin:/sbin:/bin") or ""
SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") or ""
SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or ""
PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin:/usr/sbin") or "prlimit"
REDIS_SERVER = shutil.which("redis-server", path="/usr/bin:/usr/sbin:/bin") or ""
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Helpers wait at most this long for anything to happen (process start, delivery, ...).
DEFAULT_DEADLINE_S = 20.0


# --------------------------------------------------------------------------- basics


class HarnessError(AssertionError):
    """A failure of the environment (a process that did not start, a deadline passed).
    Derives from AssertionError so unittest reports it as a failure with its text."""


def wait_until(predicate: Callable[[], object], timeout: float = DEFAULT_DEADLINE_S,
               interval: float = 0.02, what: str = "condition",
               diagnostics: Callable[[], str] | None = None):
    """Poll `predicate` until it returns a truthy value, which is returned. Raises
    HarnessError naming `what` at the deadline. The interval backs off to 0.2 s."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = ""
            if diagnostics is not None:
                with contextlib.suppress(Exception):
                    extra = "\n" + diagnostics()
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()
# One lock file per port handed out, held (flock) for the life of this process: the
# test files run in parallel (ctest -j), and a port one of them reserved for a whole
# class (a Postfix trio's milter ports) is not bound while no milter runs on it, so a
# bind probe alone would let another process take it. The kernel drops the locks when
# a process dies, so nothing stale is left to clean.
_PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "zetian-test-ports")
_port_lock_files: list = []


def _reserve_across_processes(port: int) -> bool:
    if not os.path.isdir(_PORT_LOCK_DIR):
        os.makedirs(_PORT_LOCK_DIR, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(_PORT_LOCK_DIR, 0o1777)
    f = open(os.path.join(_PORT_LOCK_DIR, str(port)), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _port_lock_files.append(f)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on `host`. Chosen at random below the kernel's
    ephemeral range (32768+) so an outgoing connection cannot take it before the
    server binds it, never the same twice in one process, and never one another test
    process holds (see _reserve_across_processes)."""
    with _port_lock:
        for _ in range(500):
            port = random.randint(20000, 32000)
            if port in _ports_handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            if not _reserve_across_processes(port):
                continue
            _ports_handed_out.add(port)
            return port
    raise HarnessError("no free TCP port found")


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive TCP ports, each free now on `host` and reserved
    as free_port() reserves one, for a program that takes a base port and uses the
    ports after it (contrib/demo/cluster.sh --base-port)."""
    with _port_lock:
        for _ in range(500):
            base = random.randint(20000, 32000 - count)
            block = range(base, base + count)
            if any(p in _ports_handed_out for p in block):
                continue
            free = True
            for port in block:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    try:
                        s.bind((host, port))
                    except OSError:
                        free = False
                        break
            if not free:
                continue
            held = 0
            while held < count and _reserve_across_processes(base + held):
                held += 1
            if held < count:
                # Another test process holds one of them: give back what this took.
                for f in _port_lock_files[len(_port_lock_files) - held:]:
                    f.close()
                del _port_lock_files[len(_port_lock_files) - held:]
                continue
            _ports_handed_out.update(block)
            return base
    raise HarnessError(f"no {count} consecutive free TCP ports found")


def tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tcp_listening(host: str, port: int) -> bool:
    """True if some socket listens on host:port, checked in /proc/net/tcp without
    connecting (a probe connection would show up in Postfix's log and reach milters)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            content = f.read().splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(content[-lines:])


_GUARD_CODE = r"""
import os, shutil, signal, sys
sids, dirs = set(), set()
for line in sys.stdin:
    op, kind, value = line[0], line[1:].split(" ", 1)[0], line.split(" ", 1)[1].strip()
    target = sids if kind == "sid" else dirs
    value = int(value) if kind == "sid" else value
    (target.add if op == "+" else target.discard)(value)
# The test process is gone (stdin closed) without stopping these: kill and remove.
for sid in sids:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
                if int(stat[stat.rfind(")") + 2:].split()[3]) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


class _Guard:
    """A watchdog process that outlives the test process: if the test process dies
    without running its cleanups (CTest's TIMEOUT kills it, or SIGKILL), the guard
    sees its stdin close and kills every process session and removes every temp
    folder still registered. Normal cleanups unregister what they stopped."""

    _instance: Optional["_Guard"] = None
    _lock = threading.Lock()

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _GUARD_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, text=True)

    @classmethod
    def send(cls, line: str) -> None:
        with cls._lock:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = _Guard()
            with contextlib.suppress(OSError):
                cls._instance.proc.stdin.write(line + "\n")
                cls._instance.proc.stdin.flush()


def guard_session(sid: int) -> None:
    _Guard.send(f"+sid {sid}")


def unguard_session(sid: int) -> None:
    _Guard.send(f"-sid {sid}")


def make_workdir(prefix: str, cleanup: Callable[[Callable], None]) -> str:
    """A temp folder the `postfix` user can traverse (mode 755), removed by `cleanup`
    unless ZETIAN_KEEP_TMP=1."""
    # Short: Unix socket paths (health socket, milter socket) must stay under 108 bytes.
    path = tempfile.mkdtemp(prefix=f"zt-{prefix[:16]}-")
    os.chmod(path, 0o755)
    if os.environ.get("ZETIAN_KEEP_TMP") == "1":
        print(f"[harness] keeping {path}", file=sys.stderr)
    else:
        _Guard.send(f"+dir {path}")

        def remove():
            shutil.rmtree(path, ignore_errors=True)
            _Guard.send(f"-dir {path}")
        cleanup(remove)
    return path


def _pids_in_session(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (Postfix's master is a session
    leader; all its children stay in its session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "r") as f:
                stat = f.read()
        except OSError:
            continue
        # comm can contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        # fields[0]=state, [1]=ppid, [2]=pgrp, [3]=session
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class ManagedProcess:
    """A child process in its own process group; stop() signals the whole group and
    escalates to SIGKILL after a deadline."""

    def __init__(self, argv: Sequence[str], log_path: str, env: dict | None = None,
                 cwd: str | None = None, name: str | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name or os.path.basename(argv[0])
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        guard_session(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.proc.pid, sig)

    def stop(self, sig: Optional[int] = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        """Signal the process (only the leader with `sig`; None: the caller already
        did), wait up to `timeout`, then SIGKILL the whole group. Returns the exit
        status, or None if it had to be killed."""
        status: Optional[int]
        if self.proc.poll() is None:
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)
            try:
                status = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                status = None
        else:
            status = self.proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        unguard_session(self.proc.pid)
        self._log.close()
        return status


# --------------------------------------------------------------------------- smtp-sink


@dataclass
class SinkMessage:
    path: str
    raw: bytes
    message: email.message.EmailMessage

    @property
    def client_addr(self) -> str:
        return self.message.get("X-Client-Addr", "")

    @property
    def rcpt_args(self) -> list[str]:
        return [str(v) for v in self.message.get_all("X-Rcpt-Args", [])]

    def header(self, name: str) -> list[str]:
        return [str(v) for v in self.message.get_all(name, [])]


class SmtpSink:
    """`smtp-sink` on 127.0.0.1:PORT. With dump=True each transaction is stored in its
    own file under `dump_dir` (smtp-sink -d), readable with messages()."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], dump: bool = True):
        self.workdir = workdir
        self.port = free_port()
        self.dump_dir = os.path.join(workdir, "sink")
        self.dump = dump
        os.makedirs(self.dump_dir, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.dump_dir, pw.pw_uid, pw.pw_gid)
        argv = [SMTP_SINK, "-4", "-u", "postfix", "-h", "smtp-sink.test", "-m", "512"]
        if dump:
            argv += ["-d", os.path.join(self.dump_dir, "msg.")]
        argv += [f"127.0.0.1:{self.port}", "256"]
        self.process = ManagedProcess(argv, os.path.join(workdir, "smtp-sink.log"),
                                      name="smtp-sink")
        cleanup(self.process.stop)
        wait_until(lambda: tcp_accepts("127.0.0.1", self.port) or self._died(), 10,
                   what=f"smtp-sink on port {self.port}")
        if not self.process.running():
            raise HarnessError("smtp-sink exited at start:\n" + tail(self.process.log_path))

    def _died(self) -> bool:
        return not self.process.running()

    def messages(self) -> list[SinkMessage]:
        """Every completely received message so far, oldest first. A dump file is
        complete once it ends with the empty line smtp-sink writes after the data."""
        out = []
        paths = sorted(glob.glob(os.path.join(self.dump_dir, "msg.*")),
                       key=lambda p: (os.stat(p).st_mtime_ns, p))
        parser = email.parser.BytesParser(policy=email.policy.default)
        for p in paths:
            try:
                with open(p, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue
            if not raw.endswith(b"\n\n") and not raw.endswith(b"\r\n\r\n"):
                continue
            out.append(SinkMessage(p, raw, parser.parsebytes(raw)))
        return out

    def find(self, token: str) -> list[SinkMessage]:
        needle = token.encode()
        return [m for m in self.messages() if needle in m.raw]

    def wait_for(self, token: str, count: int = 1, timeout: float = DEFAULT_DEADLINE_S,
                 diagnostics: Callable[[], str] | None = None) -> list[SinkMessage]:
        """Wait until at least `count` messages containing `token` have arrived."""
        return wait_until(lambda: (lambda f: f if len(f) >= count else None)(self.find(token)),
                          timeout, what=f"{count} message(s) with {token!r} at the sink",
                          diagnostics=diagnostics)


# --------------------------------------------------------------------------- SASL


class DovecotAuthServer:
    """A minimal server for the Dovecot authentication protocol (v1.2) on a Unix
    socket, so Postfix's `smtpd_sasl_type = dovecot` can authenticate without Dovecot.
    Accepts PLAIN and LOGIN for one user/password pair.

    Server greeting: VERSION, MECH lines, SPID, CUID, COOKIE, DONE. The client (Postfix)
    sends VERSION and CPID, then `AUTH <id> <mech> service=.. [resp=<base64>]`; we reply
    `OK <id> user=<name>`, `FAIL <id> reason=..`, or `CONT <id> <base64 challenge>` and
    the client answers `CONT <id> <base64>`."""

    def __init__(self, path: str, cleanup: Callable[[Callable], None],
                 user: str = "alice@example.org", password: str = "s3cret"):
        self.path = path
        self.user = user
        self.password = password
        self.attempts: list[tuple[str, bool]] = []  # (user, success), for assertions
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                outer._serve(self.rfile, self.wfile)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.server = Server(path, Handler)
        os.chmod(path, 0o666)  # smtpd connects as the postfix user
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="dovecot-auth")
        self.thread.start()
        cleanup(self.close)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _check(self, user: str, password: str) -> bool:
        ok = user == self.user and password == self.password
        self.attempts.append((user, ok))
        return ok

    def _serve(self, rfile, wfile):
        def send(line: str):
            wfile.write((line + "\n").encode())
            wfile.flush()

        send("VERSION\t1\t2")
        send("MECH\tPLAIN\tplaintext")
        send("MECH\tLOGIN\tplaintext")
        send(f"SPID\t{os.getpid()}")
        send("CUID\t1")
        send("COOKIE\t" + uuid.uuid4().hex)
        send("DONE")
        pending: dict[str, dict] = {}  # request id -> state of a multi-step AUTH
        for raw in rfile:
            parts = raw.decode(errors="replace").rstrip("\r\n").split("\t")
            cmd = parts[0]
            if cmd == "AUTH" and len(parts) >= 3:
                rid, mech = parts[1], parts[2].upper()
                args = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
                resp = args.get("resp")
                if mech == "PLAIN":
                    if resp is None:
                        pending[rid] = {"mech": "PLAIN"}
                        send(f"CONT\t{rid}\t")
                    else:
                        send(self._finish_plain(rid, resp))
                elif mech == "LOGIN":
                    state = {"mech": "LOGIN"}
                    pending[rid] = state
                    if resp:
                        state["user"] = _b64d(resp)
                        send(f"CONT\t{rid}\t" + _b64e("Password:"))
                    else:
                        send(f"CONT\t{rid}\t" + _b64e("Username:"))
                else:
                    send(f"FAIL\t{rid}\treason=unsupported mechanism")
            elif cmd == "CONT" and len(parts) >= 2:
                rid = parts[1]
                data = parts[2] if len(parts) > 2 else ""
                state = pending.get(rid)
                if state is None:
                    send(f"FAIL\t{rid}\treason=unknown request")
                elif state["mech"] == "PLAIN":
                    del pending[rid]
                    send(self._finish_plain(rid, data))
                elif "user" not in state:
                    state["user"] = _b64d(data)
                    send(f"CONT\t{rid}\t" + _b64e("Password:"))
                else:
                    del pending[rid]
                    user = state["user"]
                    if self._check(user, _b64d(data)):
                        send(f"OK\t{rid}\tuser={user}")
                    else:
                        send(f"FAIL\t{rid}\tuser={user}\treason=bad password")
            # VERSION, CPID and anything unknown: nothing to answer

    def _finish_plain(self, rid: str, resp: str) -> str:
        try:
            _authz, user, password = base64.b64decode(resp).decode().split("\0")
        except Exception:
            return f"FAIL\t{rid}\treason=malformed PLAIN response"
        if self._check(user, password):
            return f"OK\t{rid}\tuser={user}"
        return f"FAIL\t{rid}\tuser={user}\treason=bad password"


def _b64e(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _b64d(s: str) -> str:
    return base64.b64decode(s).decode(errors="replace")


# --------------------------------------------------------------------------- Redis


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


def _resp_command(*args: str | bytes | int) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_read(f) -> object:
    """One RESP2 reply from a binary file: str for +, int for :, bytes or None for $,
    list or None for *; an error reply is returned as a RedisError (not raised)."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return RedisError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("Redis closed the connection")
        return data[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


class RedisServer:
    """A `redis-server` of the test's own: 127.0.0.1 on a free port, its files (and its
    log) in a folder of its own under `workdir`, nothing saved unless `appendonly`.

    start() waits for PING; kill9() is a crash (SIGKILL, reaped); freeze()/thaw() a
    server that stops answering (SIGSTOP/SIGCONT); stop() a clean shutdown; restart() starts it again on the same port and folder (with `appendonly`
    and `appendfsync always` every write is on disk before Redis answers it, so even
    a kill -9 loses no count). command() speaks RESP for assertions on keys."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], appendonly: bool = False,
                 password: str | None = None, name: str = "redis", extra: Sequence[str] = ()):
        if not REDIS_SERVER:
            raise unittest.SkipTest("redis-server is not installed: "
                                    "DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server")
        self.port = free_port()
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.appendonly = appendonly
        self.password = password
        self.cleanup = cleanup
        self.extra = list(extra)  # more redis-server arguments ("--replicaof", ...)
        self.process: Optional[ManagedProcess] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def info(self, section: str) -> dict[str, str]:
        """INFO `section` as name -> value."""
        reply = self.command("INFO", section)
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def argv(self) -> list[str]:
        argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                "--daemonize", "no", "--save", "", "--logfile", ""]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv + self.extra

    def start(self, timeout: float = DEFAULT_DEADLINE_S) -> "RedisServer":
        if self.running():
            raise HarnessError(f"redis-server on port {self.port} is already running")
        self.process = ManagedProcess(self.argv(), self.log_path, cwd=self.dir, name="redis-server")
        self.starts += 1
        if self.starts == 1:
            self.cleanup(self._cleanup_stop)
        wait_until(lambda: self.ping() or not self.process.running(), timeout,
                   what=f"redis-server on port {self.port} to answer PING", diagnostics=self.log_tail)
        if not self.process.running():
            self.process.stop()
            raise HarnessError(f"redis-server exited at start\n{self.log_tail()}")
        return self

    restart = start  # same port, same folder: what the AOF holds comes back

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def kill9(self) -> None:
        """SIGKILL and reap: the port is closed (and its clients' connections reset)
        when this returns."""
        assert self.process is not None
        self.process.stop(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel's backlog) and takes
        commands, but nothing is answered until thaw()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        assert self.process is not None
        status = self.process.stop(signal.SIGTERM)
        if status != 0:
            raise HarnessError(f"redis-server exited with {status} on SIGTERM\n{self.log_tail()}")

    def _cleanup_stop(self):
        if self.process is not None and self.process.running():
            self.process.stop(signal.SIGKILL)

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """Run one command (after AUTH when the server has a password); an error reply
        raises RedisError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            if self.password is not None:
                s.sendall(_resp_command("AUTH", self.password))
                reply = _resp_read(f)
                if isinstance(reply, RedisError):
                    raise reply
            s.sendall(_resp_command(*args))
            reply = _resp_read(f)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=1.0) == "PONG"
        except (OSError, ConnectionError, RedisError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        return f"--- redis-server {self.log_path} (last {lines} lines) ---\n" + tail(self.log_path, lines)


class RedisSentinel(RedisServer):
    """A Redis Sentinel (`redis-server CONF --sentinel`) watching the master on
    127.0.0.1:`master_port` as `master_name`, with quorum `quorum` and a master called
    down after `down_after_ms`. Its configuration file (which a Sentinel rewrites) is in
    its own folder."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], master_port: int,
                 master_name: str = "mymaster", quorum: int = 2, down_after_ms: int = 500,
                 name: str = "sentinel"):
        super().__init__(workdir, cleanup, name=name)
        self.conf_path = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf_path, "w") as f:
            f.write(f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
                    f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                    f"sentinel failover-timeout {master_name} 2000\n")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [REDIS_SERVER, self.conf_path, "--sentinel", "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", self.dir, "--daemonize", "no", "--logfile", ""]


class RedisCluster:
    """A Redis Cluster of `masters` masters (RedisServer each, `--cluster-enabled yes`,
    its own port and cluster bus port, folders `cluster-N` under `workdir`), no
    replicas, slots spread evenly. start() forms it by hand as `redis-cli --cluster
    create` does (a slot range per node, distinct config epochs, every node MEETs every
    other) without that tool's one-second waits, and returns once every node knows every
    node and slot and says cluster_state:ok (Redis holds a master at `fail` for 2 s
    after it starts). Coverage is not required, so a killed master's slots fail alone."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], masters: int = 3):
        self.nodes: list[RedisServer] = []
        self.buses: list[int] = []
        for i in range(masters):
            bus = free_port()
            self.buses.append(bus)
            node = RedisServer(workdir, cleanup, name=f"cluster-{i}")
            node.extra = ["--cluster-enabled", "yes", "--cluster-config-file",
                          os.path.join(node.dir, "nodes.conf"), "--cluster-port", str(bus),
                          "--cluster-require-full-coverage", "no"]
            self.nodes.append(node)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self, timeout: float = DEFAULT_DEADLINE_S) -> "RedisCluster":
        for node in self.nodes:
            node.start()
        n = len(self.nodes)
        for i, node in enumerate(self.nodes):
            node.command("CLUSTER", "ADDSLOTSRANGE", 16384 * i // n, 16384 * (i + 1) // n - 1)
            node.command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for node in self.nodes:
            for other, bus in zip(self.nodes, self.buses):
                if other is not node:
                    node.command("CLUSTER", "MEET", "127.0.0.1", other.port, bus)

        def formed(node: RedisServer) -> bool:
            info = node.command("CLUSTER", "INFO")
            info = info.decode() if isinstance(info, bytes) else str(info)
            return ("cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
                    and f"cluster_known_nodes:{n}\r\n" in info)
        wait_until(lambda: all(formed(node) for node in self.nodes), timeout,
                   what="the Redis Cluster to form",
                   diagnostics=lambda: "\n".join(node.log_tail() for node in self.nodes))
        return self

    def keys(self, pattern: str) -> list[bytes]:
        """KEYS `pattern` on every master."""
        found: list[bytes] = []
        for node in self.nodes:
            if node.running():
                found += node.command("KEYS", pattern)
        return found

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(node.log_tail(lines) for node in self.nodes)


# --------------------------------------------------------------------------- Postfix


MASTER_CF_SERVICES = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Listener:
    """One smtpd listener: its port and the `-o` overrides that make it differ from
    main.cf (for example a different milter_default_action)."""
    name: str
    port: int
    overrides: dict[str, str] = field(default_factory=dict)


class Postfix:
    """A throwaway Postfix instance relaying everything to `relay_port` (an smtp-sink).

    `milter` is the value for smtpd_milters ("" for none); `listeners` maps extra
    listener names to main.cf overrides, each on its own port (see `port(name)`); the
    main listener is called "main". `sasl_path` enables SASL AUTH through a Dovecot
    protocol socket. `main_cf` adds or replaces main.cf settings."""

    FATAL_RE = re.compile(r"\b(fatal|panic):")

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], relay_port: int,
                 milter: str = "", default_action: str = "tempfail",
                 listeners: dict[str, dict[str, str]] | None = None,
                 sasl_path: str | None = None, main_cf: dict[str, str] | None = None,
                 smtpd_maxproc: int = 20):
        if not POSTFIX:
            raise unittest.SkipTest("postfix is not installed (apt-get install postfix)")
        self.workdir = workdir
        self.config_dir = os.path.join(workdir, "etc")
        self.queue_dir = os.path.join(workdir, "queue")
        self.data_dir = os.path.join(workdir, "data")
        self.maillog = os.path.join(workdir, "mail.log")
        self.master_pid: Optional[int] = None
        self.listeners = [Listener("main", free_port())]
        for name, overrides in (listeners or {}).items():
            self.listeners.append(Listener(name, free_port(), dict(overrides)))

        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)

        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "maillog_file": self.maillog,
            "maillog_file_prefixes": workdir,
            "syslog_name": "postfix-zetian-test",
            "myhostname": "mx.zetian.test",
            "mydomain": "zetian.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": f"[127.0.0.1]:{relay_port}",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject",
            "smtpd_banner": "$myhostname ESMTP zetian-test",
            # No DNS anywhere: the only next hop is a bracketed IP.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # Deterministic and quick: no penalty sleeps, no flow throttling, errors do
            # not end a test session early.
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
            "smtpd_junk_command_limit": "100000",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_recipient_limit": "1000",
            "in_flow_delay": "0",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "smtp_connect_timeout": "5s",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "smtputf8_enable": "no",
            # Milter: protocol 6, short timeouts so a hung milter fails a test quickly.
            "smtpd_milters": milter,
            "non_smtpd_milters": "",
            "milter_default_action": default_action,
            "milter_protocol": "6",
            "milter_connect_timeout": "5s",
            "milter_command_timeout": "10s",
            "milter_content_timeout": "15s",
        }
        if sasl_path:
            settings.update({
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": sasl_path,
                "smtpd_sasl_security_options": "noanonymous",
                "smtpd_tls_auth_only": "no",
                "broken_sasl_auth_clients": "no",
            })
        settings.update(main_cf or {})
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            for lst in self.listeners:
                f.write(f"127.0.0.1:{lst.port} inet n - n - {smtpd_maxproc} smtpd\n")
                for k, v in lst.overrides.items():
                    f.write(f"  -o {k}={v}\n")
            f.write(MASTER_CF_SERVICES)
        # Postfix re-reads a config file until its mtime is older than "now" (it
        # guards against half-written files); a file written this second costs ~2 s
        # of 300 ms retries at start. Back-date both files.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.config_dir, name), (past, past))

        cleanup(self.stop)
        self._run_postfix("start", timeout=60)
        self.master_pid = self._read_master_pid()
        if self.master_pid is None:
            raise HarnessError("postfix start left no master.pid\n" + self.log_tail())
        guard_session(self.master_pid)
        for lst in self.listeners:
            wait_until(lambda: tcp_listening("127.0.0.1", lst.port), 10,
                       what=f"Postfix smtpd on port {lst.port}", diagnostics=self.log_tail)
        self.assert_log_clean()

    # -- control

    def _run_postfix(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        env = dict(os.environ, MAIL_CONFIG=self.config_dir)
        cp = subprocess.run([POSTFIX, "-c", self.config_dir, command], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout)
        if cp.returncode != 0 and command == "start":
            raise HarnessError(f"postfix start failed ({cp.returncode}):\n{cp.stdout}{cp.stderr}\n"
                               + self.log_tail())
        return cp

    def _read_master_pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """`postfix stop`, then make sure no process of this instance is left."""
        pid = self.master_pid or self._read_master_pid()
        if pid is None:
            return
        if _pid_alive(pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run_postfix("stop", timeout=30)
        with contextlib.suppress(HarnessError):
            wait_until(lambda: not _pids_in_session(pid), 10,
                       what=f"Postfix processes of master {pid} to exit")
        for leftover in _pids_in_session(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        wait_until(lambda: not _pids_in_session(pid), 5,
                   what=f"killed Postfix processes of master {pid} to go")
        unguard_session(pid)
        self.master_pid = None

    def running_pids(self) -> list[int]:
        return _pids_in_session(self.master_pid) if self.master_pid else []

    def port(self, listener: str = "main") -> int:
        for lst in self.listeners:
            if lst.name == listener:
                return lst.port
        raise KeyError(listener)

    # -- logs

    def log_text(self) -> str:
        try:
            with open(self.maillog, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- Postfix {self.maillog} (last {lines} lines) ---\n" + tail(self.maillog, lines)

    def fatal_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if self.FATAL_RE.search(line)]

    def assert_log_clean(self):
        bad = self.fatal_lines()
        if bad:
            raise HarnessError("Postfix logged fatal/panic errors:\n" + "\n".join(bad[-20:]))

    def queue_is_empty(self) -> bool:
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, sub)):
                if files:
                    return False
        return True


# --------------------------------------------------------------------------- SMTP client


POSTQUEUE = "/usr/sbin/postqueue"
POSTSUPER = "/usr/sbin/postsuper"


@dataclass
class Reply:
    code: int
    text: str

    def __str__(self):
        return f"{self.code} {self.text}"


@dataclass
class MessageResult:
    """What the server said to one message: MAIL, each RCPT, DATA (None when DATA was
    not reached because MAIL or every RCPT was refused)."""
    token: str
    mail: Reply
    rcpts: list[tuple[str, Reply]] = field(default_factory=list)
    data: Optional[Reply] = None

    @property
    def accepted(self) -> bool:
        return self.data is not None and self.data.code == 250

    def __str__(self):
        parts = [f"MAIL {self.mail}"]
        parts += [f"RCPT {r} {rep}" for r, rep in self.rcpts]
        parts.append(f"DATA {self.data}" if self.data else "DATA (not sent)")
        return f"<{self.token}: " + "; ".join(parts) + ">"


def make_token(prefix: str = "zt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def build_message(sender: str, rcpts: Sequence[str], token: str, subject: str = "") -> bytes:
    lines = [
        f"From: <{sender}>",
        f"To: {', '.join(f'<{r}>' for r in rcpts)}",
        f"Subject: {subject or 'zetian integration test'} {token}",
        f"Message-ID: <{token}@zetian.test>",
        f"Date: {email.utils.formatdate(localtime=True)}",
        "",
        f"Body of {token}.",
        f"END-{token}",
        "",
    ]
    return "\r\n".join(lines).encode()


class SmtpSession:
    """One SMTP session to Postfix from a chosen loopback source address.

    with SmtpSession(port, source="127.0.0.2") as s:
        r = s.send()              # one message, default sender/recipient
        r = s.send(rcpts=[...])   # several recipients
    """

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1",
                 helo: str = "client.zetian.test", timeout: float = 30.0):
        self.port = port
        self.source = source
        self.smtp = smtplib.SMTP(timeout=timeout, source_address=(source, 0))
        self.smtp.set_debuglevel(0)
        code, msg = self.smtp.connect(host, port)
        self.banner = Reply(code, msg.decode(errors="replace"))
        if code != 220:
            self.close()
            raise smtplib.SMTPConnectError(code, msg)
        code, msg = self.smtp.ehlo(helo)
        self.ehlo_reply = Reply(code, msg.decode(errors="replace"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def login(self, user: str, password: str) -> Reply:
        try:
            code, msg = self.smtp.login(user, password)
        except smtplib.SMTPAuthenticationError as e:
            code, msg = e.smtp_code, e.smtp_error
        return Reply(code, msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg))

    def send(self, sender: str = "sender@example.org",
             rcpts: Sequence[str] = ("rcpt@example.net",), token: str | None = None,
             body: bytes | None = None) -> MessageResult:
        token = token or make_token()
        code, msg = self.smtp.mail(sender)
        result = MessageResult(token, Reply(code, msg.decode(errors="replace")))
        if code != 250:
            self._rset()
            return result
        accepted = 0
        for r in rcpts:
            code, msg = self.smtp.rcpt(r)
            result.rcpts.append((r, Reply(code, msg.decode(errors="replace"))))
            accepted += code in (250, 251)
        if not accepted:
            self._rset()
            return result
        code, msg = self.smtp.data(body if body is not None else build_message(sender, rcpts, token))
        result.data = Reply(code, msg.decode(errors="replace"))
        return result

    def noop(self) -> Reply:
        code, msg = self.smtp.noop()
        return Reply(code, msg.decode(errors="replace"))

    def _rset(self):
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.smtp.rset()

    def close(self):
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.smtp.quit()
        with contextlib.suppress(Exception):
            self.smtp.close()


def send_messages(port: int, count: int, source: str = "127.0.0.1", one_session: bool = True,
                  auth: tuple[str, str] | None = None, sender: str = "sender@example.org",
                  rcpts: Sequence[str] = ("rcpt@example.net",)) -> list[MessageResult]:
    """Send `count` messages from `source`, in one session or one session each; with
    `auth`, log in first in every session (and raise if the login fails)."""
    results = []
    session: Optional[SmtpSession] = None
    try:
        for _ in range(count):
            if session is None:
                session = SmtpSession(port, source=source)
                if auth:
                    reply = session.login(*auth)
                    if reply.code != 235:
                        raise HarnessError(f"SMTP AUTH as {auth[0]} failed: {reply}")
            results.append(session.send(sender=sender, rcpts=rcpts))
            if not one_session:
                session.close()
                session = None
    finally:
        if session is not None:
            session.close()
    return results


def send_via_data_command(session, sender: str = "sender@example.org",
                          rcpts=("rcpt@example.net",)) -> MessageResult:
    """Like SmtpSession.send, but a refusal of the DATA command itself (a reply other
    than 354, which smtplib raises as SMTPDataError) is recorded as the DATA reply."""
    token = make_token()
    smtp = session.smtp
    code, msg = smtp.mail(sender)
    result = MessageResult(token, Reply(code, msg.decode(errors="replace")))
    if code != 250:
        smtp.rset()
        return result
    for r in rcpts:
        code, msg = smtp.rcpt(r)
        result.rcpts.append((r, Reply(code, msg.decode(errors="replace"))))
    try:
        code, msg = smtp.data(build_message(sender, rcpts, token))
    except smtplib.SMTPDataError as e:
        code, msg = e.smtp_code, e.smtp_error
        smtp.rset()
    result.data = Reply(code, msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg))
    return result


# --------------------------------------------------------------------------- TOML


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(doc: dict) -> str:
    """A small TOML writer for our config shape: top-level tables of scalars/arrays,
    nested tables, and arrays of tables (lists of dicts, e.g. ratelimit.rule)."""
    out: list[str] = []

    def table(prefix: str, body: dict):
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)
                   and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
        if prefix and (scalars or not body):
            out.append(f"[{prefix}]")
        for k, v in scalars.items():
            out.append(f"{k} = {_toml_value(v)}")
        if scalars:
            out.append("")
        for k, v in body.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v)
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for item in v:
                    out.append(f"[[{name}]]")
                    for ik, iv in item.items():
                        out.append(f"{ik} = {_toml_value(iv)}")
                    out.append("")

    table("", doc)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- health HTTP


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def http_unix(path: str, method: str, target: str, body: bytes | None = None,
              timeout: float = 5.0) -> tuple[int, str, dict]:
    """One HTTP/1.1 request over a Unix socket: (status, body text, headers)."""
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, target, body=body,
                     headers={"Content-Length": str(len(body or b""))} if method != "GET" else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), dict(resp.getheaders())
    finally:
        conn.close()


# --------------------------------------------------------------------------- milter


def _find_built(name: str, env: str) -> Optional[str]:
    """The binary named by `env`, else the newest one under the repository's build*
    folders (for running a test file by hand; CTest always sets the variable)."""
    path = os.environ.get(env)
    if path:
        return path
    found = [c for c in glob.glob(os.path.join(REPO_ROOT, "build*", "**", name), recursive=True)
             if os.path.isfile(c) and os.access(c, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def parse_metric(text: str, name: str) -> Optional[float]:
    """Sum of every sample of `name` (any labels) in Prometheus text, None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) == name:
            seen = True
            with contextlib.suppress(ValueError):
                total += float(m.group(3))
    return total if seen else None


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of `name` as (labels, value)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        with contextlib.suppress(ValueError):
            out.append((labels, float(m.group(3))))
    return out


def postfix_bench_setup(ap, args, known_modes: Sequence[str]) -> tuple[int | None, list[str]]:
    """The checks every Postfix benchmark script makes before it starts (tests/bench/):
    root, the postfix tools, --milter into ZETIAN_MILTER, and --modes parsed against
    `known_modes` (ap.error() on an unknown one). Returns (exit code to stop with, or
    None; the modes)."""
    if os.geteuid() != 0:
        print("must run as root (it starts throwaway Postfix instances)", file=sys.stderr)
        return 2, []
    if not POSTFIX or not SMTP_SOURCE or not SMTP_SINK:
        print("postfix, smtp-source and smtp-sink are needed: apt-get install postfix", file=sys.stderr)
        return 2, []
    if args.milter:
        os.environ["ZETIAN_MILTER"] = args.milter
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in known_modes:
            ap.error(f"unknown mode {m!r}")
    return None, modes


def milter_binary() -> str:
    path = _find_built("zetian-milter", "ZETIAN_MILTER")
    if not path:
        raise unittest.SkipTest("zetian-milter not built and ZETIAN_MILTER not set")
    if not os.access(path, os.X_OK):
        raise HarnessError(f"ZETIAN_MILTER={path} is not an executable file")
    return path


def ctl_binary() -> str:
    path = _find_built("zetianctl", "ZETIAN_CTL")
    if not path:
        raise unittest.SkipTest("zetianctl not built and ZETIAN_CTL not set")
    return path


def rule(name: str, limit: int, period: str = "1h", key: str = "client_ip",
         stage: str = "mail", action: str = "tempfail", **extra) -> dict:
    """A [[ratelimit.rule]] table."""
    r = {"name": name, "key": key, "stage": stage, "limit": limit, "period": period,
         "action": action}
    r.update(extra)
    return r


class Milter:
    """A zetian-milter process with a config written by the test.

    The milter listens on `socket` (default inet on a free loopback port), its health
    socket is in the workdir, it logs at debug to stderr (captured in `log_path`), and
    nothing is exempt unless the test says so (the built-in default exempts loopback,
    which would exempt every test client)."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None],
                 rules: Iterable[dict] = (), exempt: Sequence[str] = (),
                 exempt_authenticated: bool = False, port: int | None = None,
                 socket_spec: str | None = None, node_id: str = "itest",
                 extra: dict | None = None, name: str = "milter"):
        self.binary = milter_binary()
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.cleanup = cleanup
        # socket_spec="": no milter listener at all (a node serving only policy requests).
        self.port = port if port is not None else (None if socket_spec is not None else free_port())
        self.socket_spec = socket_spec if socket_spec is not None else f"inet:{self.port}@127.0.0.1"
        self.health_socket = os.path.join(self.workdir, "health.sock")
        self.state_dir = os.path.join(self.workdir, "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.config_path = os.path.join(self.workdir, "zetian.toml")
        self.log_path = os.path.join(self.workdir, "milter.log")
        self.node_id = node_id
        self.extra = extra or {}
        self.process: Optional[ManagedProcess] = None
        self._stopped = False
        self.write_config(rules, exempt, exempt_authenticated)

    # -- config

    def config_doc(self, rules: Iterable[dict], exempt: Sequence[str],
                   exempt_authenticated: bool) -> dict:
        doc = {
            "node": {"id": self.node_id, "state_dir": self.state_dir},
            "milter": {"socket": self.socket_spec},
            "health": {"socket": self.health_socket},
            "log": {"level": "debug", "target": "stderr"},
            "ratelimit": {"exempt": list(exempt), "exempt_authenticated": exempt_authenticated},
        }
        rules = list(rules)
        if rules:
            doc["ratelimit"]["rule"] = rules
        for section, values in self.extra.items():
            doc.setdefault(section, {}).update(values)
        return doc

    def write_config(self, rules: Iterable[dict] = (), exempt: Sequence[str] = (),
                     exempt_authenticated: bool = False, text: str | None = None) -> str:
        """Write the config file (from a policy, or verbatim `text`). Atomic rename, so
        a reload never reads a half-written file."""
        content = text if text is not None else to_toml(
            self.config_doc(rules, exempt, exempt_authenticated))
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(content)
        os.replace(tmp, self.config_path)
        return content

    # -- process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = DEFAULT_DEADLINE_S, env: dict | None = None,
              nofile: int | None = None) -> "Milter":
        """Start and wait for /ready. `env`: variables added to the inherited
        environment (test hooks). `nofile` sets RLIMIT_NOFILE (soft and hard) for the
        process, as `ulimit -n` would (prlimit execs the milter: same pid)."""
        argv = [self.binary, "-c", self.config_path]
        if nofile is not None:
            argv = [PRLIMIT, f"--nofile={nofile}:{nofile}", "--"] + argv
        self.process = ManagedProcess(argv, self.log_path,
                                      env=dict(os.environ, **env) if env else None,
                                      name="zetian-milter")
        self.cleanup(self._cleanup_stop)
        wait_until(lambda: self._ready() or not self.process.running(), timeout,
                   what="zetian-milter GET /ready = 200", diagnostics=self.log_tail)
        if not self.process.running():
            self._stopped = True
            self.process.stop()
            raise HarnessError(f"zetian-milter exited with {self.process.proc.returncode} "
                               f"at start\n{self.log_tail()}")
        if self.port is not None:
            # /ready should imply this; a milter socket that is not yet listening
            # would make Postfix apply milter_default_action to the first session.
            wait_until(lambda: tcp_accepts("127.0.0.1", self.port), timeout,
                       what=f"milter socket 127.0.0.1:{self.port}", diagnostics=self.log_tail)
        elif self.socket_spec.startswith("unix:"):
            path = self.socket_spec[5:]
            wait_until(lambda: os.path.exists(path), timeout, what=f"milter socket {path}",
                       diagnostics=self.log_tail)
        if self.policy_spec:
            # Checked without connecting: a probe connection that says nothing would
            # show up in the policy host's connection and malformed-request counts.
            wait_until(lambda: policy_socket_listening(self.policy_spec), timeout,
                       what=f"policy socket {self.policy_spec}", diagnostics=self.log_tail)
        return self

    @property
    def policy_spec(self) -> str:
        """The node's `[policy] socket` ("" when it serves no policy requests)."""
        return str(self.extra.get("policy", {}).get("socket", ""))

    def _ready(self) -> bool:
        try:
            status, _, _ = http_unix(self.health_socket, "GET", "/ready", timeout=1.0)
            return status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or `sig`) and wait; raises unless it exits 0 within `timeout`."""
        assert self.process is not None
        self._stopped = True
        self.process.send_signal(sig)
        if self.port is not None and self.process.running():
            # libmilter's listener checks its stop flag only when its poll() returns,
            # which times out every 5 s (MI_CHK_TIME); a connection wakes it at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.proc.wait(0.2)
            if self.process.running():
                tcp_accepts("127.0.0.1", self.port)
        status = self.process.stop(None, timeout)
        if status is None:
            raise HarnessError(f"zetian-milter did not exit within {timeout}s of "
                               f"{signal.Signals(sig).name} (killed)\n{self.log_tail()}")
        if status != 0:
            raise HarnessError(f"zetian-milter exited with {status} after "
                               f"{signal.Signals(sig).name}\n{self.log_tail()}")
        return status

    def _cleanup_stop(self):
        if self.process is None or self._stopped:
            return
        if self.process.running():
            self.stop()
            return
        status = self.process.stop()  # reap and close the log
        self._stopped = True
        raise HarnessError(f"zetian-milter exited on its own during the test (status {status})\n"
                           + self.log_tail())

    # -- reload

    def metric(self, name: str) -> Optional[float]:
        """Sum of a metric's samples in GET /metrics (None when it is not exported)."""
        try:
            status, body, _ = self.http("GET", "/metrics")
        except OSError:
            return None
        if status != 200:
            return None
        return parse_metric(body, name)

    def reload_outcomes(self) -> tuple[int, int]:
        """(applied, refused) reloads so far: from the metrics zetian_reloads_total and
        zetian_reload_failures_total, or, if those are not exported, from log lines
        `reload ok` / `reload refused`."""
        ok = self.metric("zetian_reloads_total")
        failed = self.metric("zetian_reload_failures_total")
        if ok is not None and failed is not None:
            return int(ok), int(failed)
        text = self.log_text()
        return (len(re.findall(r"reload[ =_]?ok", text, re.IGNORECASE)),
                len(re.findall(r"reload[ =_]?(refused|fail|error)", text, re.IGNORECASE)))

    def reload_with_signal(self, timeout: float = 10.0) -> bool:
        """SIGUSR1, then wait until the milter has finished that reload. Returns True
        if it was applied, False if it was refused."""
        ok0, failed0 = self.reload_outcomes()
        self.process.send_signal(signal.SIGUSR1)
        ok, failed = wait_until(
            lambda: (lambda o: o if (o[0] > ok0 or o[1] > failed0 or not self.running()) else None)(
                self.reload_outcomes()),
            timeout, what="the reload after SIGUSR1 to finish", diagnostics=self.log_tail)
        if not self.running():
            raise HarnessError("zetian-milter died on SIGUSR1\n" + self.log_tail())
        return ok > ok0

    # -- health socket and CLI

    def http(self, method: str, target: str, body: bytes | None = None) -> tuple[int, str, dict]:
        return http_unix(self.health_socket, method, target, body)

    def ctl(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        return subprocess.run([ctl_binary(), "-s", self.health_socket, *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def check_config(self, path: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "-c", path or self.config_path, "--check-config"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=15)

    # -- logs

    def log_text(self) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- zetian-milter {self.log_path} (last {lines} lines) ---\n" + tail(self.log_path, lines)


# --------------------------------------------------------------------------- milter protocol


def milter_connect(spec: str, timeout: float = 5.0) -> socket.socket:
    """A connected socket to a milter socket spec (inet:PORT@HOST, unix:PATH)."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(rest)
        return s
    port, _, host = rest.partition("@")
    s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


class MilterClient:
    """The MTA side of the milter protocol (version 6), enough to drive a session
    through connect, HELO, MAIL, RCPT and abort without Postfix: every step is offered
    with a reply (no SMFIP_NO*/NR_* bits), so each command gets exactly one answer.

    Packets are a 4-byte big-endian length, a command byte and its data."""

    VERSION = 6
    ACTIONS = 0x1FF

    def __init__(self, spec: str, timeout: float = 5.0):
        self.sock = milter_connect(spec, timeout)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def _send(self, cmd: bytes, data: bytes = b""):
        self.sock.sendall(self.packet(cmd, data))

    @staticmethod
    def packet(cmd: bytes, data: bytes = b"") -> bytes:
        return len(cmd + data).to_bytes(4, "big") + cmd + data

    def send_raw(self, packets: bytes):
        """Write packets (see packet()) without reading replies: a pipeline."""
        self.sock.sendall(packets)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("milter closed the connection")
            buf += chunk
        return buf

    def reply(self) -> tuple[bytes, bytes]:
        """(command byte, data) of the milter's next packet."""
        length = int.from_bytes(self._recv_exact(4), "big")
        packet = self._recv_exact(length)
        return packet[:1], packet[1:]

    def step(self, cmd: bytes, data: bytes = b"") -> bytes:
        """Send a command and return the reply's command byte (b"c" continue, b"y"
        reply code, b"t" tempfail, b"r" reject, ...)."""
        self._send(cmd, data)
        code, _ = self.reply()
        return code

    def negotiate(self) -> bytes:
        self._send(b"O", self.VERSION.to_bytes(4, "big") + self.ACTIONS.to_bytes(4, "big")
                   + (0).to_bytes(4, "big"))
        code, _ = self.reply()
        return code

    def connect_stage(self, client_ip: str = "192.0.2.1", hostname: str = "client.test") -> bytes:
        return self.step(b"C", hostname.encode() + b"\0" + b"4" + (25).to_bytes(2, "big")
                         + client_ip.encode() + b"\0")

    def helo(self, name: str = "client.test") -> bytes:
        return self.step(b"H", name.encode() + b"\0")

    def mail(self, sender: str = "<sender@example.org>") -> bytes:
        return self.step(b"M", sender.encode() + b"\0")

    def rcpt(self, rcpt: str = "<rcpt@example.net>") -> bytes:
        return self.step(b"R", rcpt.encode() + b"\0")

    def abort(self):
        """End the transaction (no reply in the protocol)."""
        self._send(b"A")

    def quit(self):
        with contextlib.suppress(OSError):
            self._send(b"Q")
        self.close()


# --------------------------------------------------------------------------- policy delegation


def policy_socket_listening(spec: str) -> bool:
    """Whether a `[policy] socket` spec (inet:PORT@HOST, unix:PATH) is listening, seen
    without connecting to it."""
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return os.path.exists(rest)
    port, _, host = rest.partition("@")
    return tcp_listening(host or "127.0.0.1", int(port))


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (IPv4 and IPv6), from the socket inodes
    of its open files matched against /proc/net/tcp{,6}."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(os.path.join(fd_dir, fd))
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def policy_service(port: int) -> str:
    return f"check_policy_service inet:127.0.0.1:{port}"


# What the harness Postfix does after our check: relay for mynetworks (every test
# client is on loopback) and for SASL-authenticated clients, nothing else.
RELAY_AFTER_POLICY = "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"


def policy_main_cf(port: int) -> dict[str, str]:
    """main.cf settings that hook a policy server on 127.0.0.1:`port` where most sites
    do (smtpd_recipient_restrictions only), with Postfix's client timeouts shortened so
    a server that hangs fails a test in seconds rather than minutes (100 s default)."""
    return {
        "smtpd_recipient_restrictions": f"{policy_service(port)}, {RELAY_AFTER_POLICY}",
        "smtpd_policy_service_timeout": "15s",
    }


def skip_unless_postfix_as_root() -> None:
    """Skip the test class (a failure under CI=true) when Postfix or smtp-sink is
    missing or the tests do not run as root, in the words CTest's SKIP_REGULAR_EXPRESSION
    (tests/integration/CMakeLists.txt) knows."""
    if not POSTFIX or not SMTP_SINK:
        raise unittest.SkipTest("postfix (with smtp-sink) is not installed: "
                                "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix")
    if os.geteuid() != 0:
        raise unittest.SkipTest("a throwaway Postfix must be started as root")


# --------------------------------------------------------------------------- test bases


class PostfixTestCase(unittest.TestCase):
    """One Postfix + smtp-sink per test class (class attributes `postfix`, `sink`).

    Subclasses set:
      milter_address  smtpd_milters value; "auto" = inet on a port reserved for the
                      class (`milter_port`), where tests start their own Milter
      default_action  milter_default_action
      listeners       extra smtpd listeners {name: {param: value}}
      main_cf         main.cf settings added or replaced
      sasl            start the Dovecot-protocol auth server and enable AUTH
    """

    milter_address: str = ""
    default_action: str = "tempfail"
    listeners: dict[str, dict[str, str]] = {}
    main_cf: dict[str, str] = {}
    sasl: bool = False
    sasl_user = "alice@example.org"
    sasl_password = "s3cret"

    postfix: Postfix
    sink: SmtpSink
    milter_port: Optional[int] = None
    _milter_serial = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        skip_unless_postfix_as_root()
        cls.workdir = make_workdir(cls.__name__.lower(), cls.addClassCleanup)
        cls.sink = SmtpSink(cls.workdir, cls.addClassCleanup)
        milter = cls.milter_address
        if milter == "auto":
            cls.milter_port = free_port()
            milter = f"inet:127.0.0.1:{cls.milter_port}"
        sasl_path = None
        if cls.sasl:
            sasl_path = os.path.join(cls.workdir, "auth.sock")
            cls.auth_server = DovecotAuthServer(sasl_path, cls.addClassCleanup,
                                                cls.sasl_user, cls.sasl_password)
        cls.postfix = Postfix(cls.workdir, cls.addClassCleanup, cls.sink.port, milter=milter,
                              default_action=cls.default_action, listeners=cls.listeners,
                              sasl_path=sasl_path, main_cf=dict(cls.main_cf))

    def setUp(self):
        super().setUp()
        self._milters: list[Milter] = []
        self._fatal_before = len(self.postfix.fatal_lines())
        self.addCleanup(self._check_postfix_log)

    def _check_postfix_log(self):
        new = self.postfix.fatal_lines()[self._fatal_before:]
        if new:
            self.fail("Postfix logged fatal/panic errors during the test:\n" + "\n".join(new))

    def tearDown(self):
        if self._has_failed():
            sys.stderr.write("\n" + self.diagnostics(80) + "\n")
        super().tearDown()

    def _has_failed(self) -> bool:
        """Whether the test method has already failed or errored (the result records
        it before tearDown runs), so the logs can be shown while they still exist."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        return any(test is self for test, _ in list(getattr(result, "errors", []))
                   + list(getattr(result, "failures", [])))

    # -- helpers

    def start_milter(self, rules: Iterable[dict] = (), **kwargs) -> Milter:
        """Start a zetian-milter on the class's milter port (stopped and checked for a
        clean exit at the end of the test)."""
        kwargs.setdefault("port", self.milter_port)
        PostfixTestCase._milter_serial += 1
        name = f"m{PostfixTestCase._milter_serial}"
        m = Milter(self.workdir, self.addCleanup, rules=rules, name=name, **kwargs)
        with open(os.path.join(m.workdir, "TEST"), "w") as f:
            f.write(self.id() + "\n")
        self._milters.append(m)
        m.start()
        return m

    # -- the queue (the hold queue of quarantine tests)

    def queue_entries(self) -> list[dict]:
        """`postqueue -j`: one JSON object per queued message (queue_name, queue_id, ...)."""
        cp = subprocess.run([POSTQUEUE, "-c", self.postfix.config_dir, "-j"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
        if cp.returncode != 0:
            self.fail(f"postqueue -j failed ({cp.returncode}): {cp.stderr}")
        return [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]

    def delete_from_queue(self, queue_id: str):
        subprocess.run([POSTSUPER, "-c", self.postfix.config_dir, "-d", queue_id],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15)

    @staticmethod
    def queue_id(reply: Reply) -> str:
        m = re.search(r"queued as ([0-9A-Za-z]+)", reply.text)
        if not m:
            raise AssertionError(f"no queue id in {reply}")
        return m.group(1)

    def diagnostics(self, lines: int = 30) -> str:
        parts = [self.postfix.log_tail(lines)]
        for m in self._milters:
            parts.append(m.log_tail(lines))
        return "\n".join(parts)

    def send(self, count: int = 1, source: str = "127.0.0.2", listener: str = "main",
             **kwargs) -> list[MessageResult]:
        return send_messages(self.postfix.port(listener), count, source=source, **kwargs)

    def session(self, source: str = "127.0.0.2", listener: str = "main") -> SmtpSession:
        s = SmtpSession(self.postfix.port(listener), source=source)
        self.addCleanup(s.close)
        return s

    def assertReply(self, reply: Optional[Reply], code: int, enhanced: str | None = None,
                    contains: str | None = None, what: str = "reply"):
        """The reply has `code`, starts with the `enhanced` status code and contains
        `contains`; on failure the message carries the Postfix and milter log tails."""
        ok = (reply is not None and reply.code == code
              and (enhanced is None or reply.text.startswith(enhanced))
              and (contains is None or contains in reply.text))
        if not ok:
            want = f"{code}{' ' + enhanced if enhanced else ''}" \
                   f"{' containing ' + repr(contains) if contains else ''}"
            self.fail(f"{what}: got {reply}, want {want}\n{self.diagnostics()}")

    def assertAccepted(self, result: MessageResult, what: str = "message"):
        if not result.accepted:
            self.fail(f"{what} was not accepted: {result}\n{self.diagnostics()}")

    def assertDelivered(self, result: MessageResult, count: int = 1) -> list[SinkMessage]:
        self.assertAccepted(result)
        return self.sink.wait_for(result.token, count, diagnostics=self.diagnostics)


class PolicyPostfixTestCase(PostfixTestCase):
    """One Postfix asking a zetian node over Postfix's policy delegation protocol
    (check_policy_service, no milter) and that node, for the whole class.

    The node (`cls.node`, a Milter with a `[policy]` section) listens on
    `cls.policy_port`; tests give it their policy with `apply_policy()`, a reload, as
    a running node gets it. A renamed rule starts with a fresh bucket, so each test
    names its rules with `unique()` and nothing one test charged counts in another.
    The node keeps its milter listener (on a port of its own, unused here).

    Subclasses may add listeners and main.cf settings in `configure_postfix()`, where
    `policy_port` is known."""

    node: Milter
    policy_port: int
    _rule_serial = 0

    @classmethod
    def configure_postfix(cls) -> None:
        """Called once cls.policy_port is known and before Postfix starts: a subclass
        may add to cls.main_cf (a copy of its own) and set cls.listeners."""

    @classmethod
    def setUpClass(cls):
        # What PostfixTestCase skips on, checked before configure_postfix() may need it.
        skip_unless_postfix_as_root()
        cls.policy_port = free_port()
        cls.main_cf = dict(policy_main_cf(cls.policy_port), **cls.main_cf)
        cls.configure_postfix()
        super().setUpClass()
        cls.node = Milter(cls.workdir, cls.addClassCleanup, name="policy-node",
                          extra={"policy": {"socket": f"inet:{cls.policy_port}@127.0.0.1"}})
        cls.node.start()

    def setUp(self):
        super().setUp()
        if not self.node.running():
            self.fail("the class's policy node is not running\n" + self.node.log_tail())
        self._node_log_start = len(self.node.log_text())

    def unique(self, name: str) -> str:
        """`name` with a serial of the class's own: a rule no earlier test charged."""
        PolicyPostfixTestCase._rule_serial += 1
        return f"{name}-{PolicyPostfixTestCase._rule_serial}"

    def apply_policy(self, rules: Iterable[dict], exempt: Sequence[str] = (),
                     exempt_authenticated: bool = False) -> None:
        """Write the node's config with this policy and reload it (SIGUSR1); fails the
        test if the node refuses it."""
        self.node.write_config(rules, exempt, exempt_authenticated)
        if not self.node.reload_with_signal():
            self.fail("the node refused the reload\n" + self.node.log_tail())

    def node_log(self) -> str:
        """The node's log since this test began."""
        return self.node.log_text()[self._node_log_start:]

    def diagnostics(self, lines: int = 30) -> str:
        return "\n".join([super().diagnostics(lines), self.node.log_tail(lines)])
