#!/usr/bin/python3
"""Smoke test of policy_dunno (CTest: bench_policy_dunno_smoke).

Starts the responder on a free port and checks, over real sockets: two pipelined
requests on one connection get two answers, in one read or several; a request split
across sends is answered once complete; the connection stays open for a third request;
a malformed request (a line without '=') closes only that connection; SIGUSR1 and
SIGTERM print the counters, and SIGTERM exits 0.

  /usr/bin/python3 tests/bench/policy_dunno_smoke.py build/tests/bench/policy_dunno
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

ANSWER = b"action=DUNNO\n\n"
DEADLINE_S = 10.0

REQUEST = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
           b"client_address=127.0.0.1\nsender=a@example.org\nrecipient=b@example.net\n"
           b"instance=1a2b.5f3c.1\nrecipient_count=0\n\n")


def fail(msg: str) -> None:
    raise SystemExit(f"FAIL: {msg}")


def recv_exactly(s: socket.socket, size: int) -> bytes:
    """`size` bytes, or fewer if the peer closes first; fails at the deadline."""
    s.settimeout(DEADLINE_S)
    data = b""
    while len(data) < size:
        try:
            chunk = s.recv(size - len(data))
        except socket.timeout:
            fail(f"no complete answer within {DEADLINE_S}s (got {data!r})")
        if not chunk:
            break
        data += chunk
    return data


def read_line(f, pattern: str) -> re.Match:
    """The next stdout line of the responder, which must match `pattern`."""
    line = f.readline().decode(errors="replace").strip()
    m = re.fullmatch(pattern, line)
    if not m:
        fail(f"expected a line matching {pattern!r}, got {line!r}")
    return m


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    proc = subprocess.Popen([sys.argv[1], "0"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        port = int(read_line(proc.stdout, r"policy_dunno: listening on 127\.0\.0\.1:(\d+)").group(1))

        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as s:
            s.sendall(REQUEST + REQUEST)  # pipelined: both before reading
            got = recv_exactly(s, 2 * len(ANSWER))
            if got != ANSWER * 2:
                fail(f"two pipelined requests: expected two answers, got {got!r}")
            half = len(REQUEST) // 2
            s.sendall(REQUEST[:half])
            s.settimeout(0.2)  # an answer to half a request would arrive at once
            try:
                early = s.recv(64)
                fail(f"answered an incomplete request: {early!r}")
            except socket.timeout:
                pass
            s.sendall(REQUEST[half:])
            got = recv_exactly(s, len(ANSWER))
            if got != ANSWER:
                fail(f"request split across sends: got {got!r}")

            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as bad:
                bad.sendall(b"request=smtpd_access_policy\nno equals sign\n\n")
                got = recv_exactly(bad, len(ANSWER))
                if got != b"":
                    fail(f"malformed request: expected the connection closed, got {got!r}")

            s.sendall(REQUEST)  # the first connection was not disturbed
            if recv_exactly(s, len(ANSWER)) != ANSWER:
                fail("the first connection stopped answering after another one was closed")

        proc.send_signal(signal.SIGUSR1)
        read_line(proc.stdout, r"policy_dunno: connections=2 open=[01] requests=4 malformed=1")
        proc.send_signal(signal.SIGTERM)
        read_line(proc.stdout, r"policy_dunno: connections=2 open=[01] requests=4 malformed=1")
        status = proc.wait(DEADLINE_S)
        if status != 0:
            fail(f"exit status {status} after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print("policy_dunno smoke test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
