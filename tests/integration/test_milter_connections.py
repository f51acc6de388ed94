"""Milter connections under a descriptor flood, with `ulimit -n 1024` on the milter as
under systemd's default: about 1,100 connections that never send a milter command.

The milter must survive, refuse what would leave it fewer than 64 descriptors
(closing those connections at once), keep its health socket answering, shut down
the silent ones after milter.timeout, and afterwards serve a real SMTP session
through Postfix. A flood on the health socket must not stop the milter listener
either: once it ends, milter sessions are served again."""

import contextlib
import os
import resource
import socket
import time

from harness import Milter, MilterClient, PostfixTestCase, http_unix, rule, wait_until

FLOOD = 1100
NOFILE = 1024


def raise_own_fd_limit(want: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Flood:
    """Connections that never send anything; tracks which the peer has closed."""

    def __init__(self, connect):
        self.socks: list[socket.socket] = []
        self.failed = 0
        for _ in range(FLOOD):
            try:
                self.socks.append(connect())
            except OSError:
                self.failed += 1
        for s in self.socks:
            s.setblocking(False)

    def closed_by_peer(self) -> int:
        closed = 0
        for s in self.socks:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def close(self):
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        self.socks = []


class IdleMilterConnections(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    def setUp(self):
        super().setUp()
        raise_own_fd_limit(2 * FLOOD + 256)

    def start_limited(self, timeout: str = "2s") -> Milter:
        PostfixTestCase._milter_serial += 1
        m = Milter(self.workdir, self.addCleanup, rules=[rule("per-ip", 1, key="client_ip")],
                   port=self.milter_port, name=f"m{PostfixTestCase._milter_serial}",
                   extra={"milter": {"timeout": timeout}})
        self._milters.append(m)
        m.start(nofile=NOFILE)
        return m

    def assertVerdictThroughPostfix(self, source: str):
        one, two = self.send(2, source=source)
        self.assertDelivered(one)
        self.assertReply(two.mail, 451, "4.7.1", contains="per-ip",
                         what="MAIL FROM of message 2 (the milter's verdict)")

    def test_idle_flood_is_capped_then_closed_and_mail_passes_afterwards(self):
        timeout_s = 10
        m = self.start_limited(f"{timeout_s}s")
        self.assertIn(f"file_limit nofile={NOFILE}", m.log_text())
        started = time.monotonic()
        flood = Flood(lambda: socket.create_connection(("127.0.0.1", m.port), timeout=5))
        self.addCleanup(flood.close)
        self.assertEqual(flood.failed, 0, "connect() to the milter failed")
        self.assertTrue(m.running(), "milter died under the flood")
        # The cap: connections beyond it are closed at once, before any could have
        # been closed for silence.
        wait_until(lambda: flood.closed_by_peer() >= FLOOD - (NOFILE - 64),
                   max(1.0, started + timeout_s - 1 - time.monotonic()),
                   what="connections over the cap closed at once", diagnostics=m.log_tail)
        self.assertLessEqual(open_fds(m.pid), NOFILE - 64 + 32, "descriptors in use by the milter")
        # The reserve keeps the health socket usable.
        status, _, _ = http_unix(m.health_socket, "GET", "/live", timeout=5)
        self.assertEqual(status, 200, "GET /live during the flood")
        # Silent connections are shut down after milter.timeout.
        wait_until(lambda: flood.closed_by_peer() == FLOOD, timeout_s + 15,
                   what="every silent connection closed", diagnostics=m.log_tail)
        self.assertTrue(m.running())
        log = m.log_text()
        self.assertIn("milter_connection_refused", log)
        self.assertIn("milter_silent_connections_closed", log)
        flood.close()
        wait_until(lambda: open_fds(m.pid) < 100, 10, what="descriptors released")
        self.assertVerdictThroughPostfix("127.0.0.2")

    def test_quiet_negotiated_connections_at_the_cap_give_way_to_new_sessions(self):
        # Connections that negotiate and then say nothing are past their first command,
        # so the silence rule does not close them, and libmilter sweeps waiting sessions
        # only every 600 s. At the cap, the one that waited longest is shut down as the
        # newest is refused, so a real session gets in within moments, not 10 minutes.
        nofile = 256
        PostfixTestCase._milter_serial += 1
        m = Milter(self.workdir, self.addCleanup, rules=[rule("per-ip", 1, key="client_ip")],
                   port=self.milter_port, name=f"m{PostfixTestCase._milter_serial}",
                   extra={"milter": {"timeout": "5s"}})
        self._milters.append(m)
        m.start(nofile=nofile)
        quiet: list[MilterClient] = []
        self.addCleanup(lambda: [c.close() for c in quiet])
        refused = 0
        while len(quiet) + refused < nofile:
            try:
                client = MilterClient(m.socket_spec)
                if client.negotiate() != b"O":
                    raise OSError("no negotiation reply")
                quiet.append(client)
            except OSError:
                refused += 1
        self.assertGreater(refused, 0, "the flood never reached the descriptor cap")
        self.assertGreaterEqual(len(quiet), nofile - 64 - 32, "quiet connections held")

        def one_session() -> bool:
            try:
                client = MilterClient(m.socket_spec)
            except OSError:
                return False
            try:
                return (client.negotiate() == b"O" and client.connect_stage("192.0.2.9") == b"c"
                        and client.mail() == b"c")
            except OSError:
                return False
            finally:
                client.close()

        wait_until(one_session, 15, what="a milter session served while quiet connections hold the cap",
                   diagnostics=m.log_tail)
        self.assertTrue(m.running())
        self.assertIn("milter_idle_connection_evicted", m.log_text())

    def test_a_connection_that_speaks_is_not_closed_as_silent(self):
        m = self.start_limited("1s")
        client = MilterClient(m.socket_spec)
        self.addCleanup(client.close)
        self.assertEqual(client.negotiate(), b"O")
        self.assertEqual(client.connect_stage("192.0.2.7"), b"c")
        # Longer than milter.timeout plus the once-a-second sweep, then the session
        # goes on (libmilter's own sweep of waiting sessions runs every 600 s).
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(client.mail(), b"c", "MAIL after a pause: the session is still open")

    def test_health_socket_flood_does_not_stop_the_milter_listener(self):
        m = self.start_limited("5s")

        def health_connect():
            # A full backlog answers EAGAIN at once on a Unix socket: retry for a
            # while, so the flood reaches whatever limit the server (or the
            # descriptors) sets.
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            deadline = time.monotonic() + 2.0
            while True:
                try:
                    s.connect(m.health_socket)
                    return s
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        s.close()
                        raise
                    time.sleep(0.005)
                except OSError:
                    s.close()
                    raise
        flood = Flood(health_connect)
        self.addCleanup(flood.close)
        # Whatever the health server does with the flood, a milter connection meanwhile
        # is served or closed at once (the listener sheds it when descriptors are
        # out), never left hanging.
        try:
            c = MilterClient(m.socket_spec, timeout=5)
            try:
                c.negotiate()
            finally:
                c.close()
        except TimeoutError:
            self.fail("a milter connection during the health flood hung\n" + m.log_tail())
        except (OSError, ConnectionError):
            pass
        flood.close()
        self.assertTrue(m.running(), "milter died under the health flood")

        def milter_serves():
            try:
                c = MilterClient(m.socket_spec, timeout=2)
                try:
                    return c.negotiate() == b"O" and c.connect_stage() == b"c"
                finally:
                    c.quit()
            except (OSError, ConnectionError):
                return False
        wait_until(milter_serves, 15, what="a milter session served after the health flood",
                   diagnostics=m.log_tail)
        self.assertVerdictThroughPostfix("127.0.0.3")
