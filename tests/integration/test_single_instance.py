"""One zetian-milter per node: a second instance started with the configuration of a
running one refuses (exit status non-zero, a message naming the running pid) before
it touches anything, so the first keeps its pid file and its milter socket and mail
through Postfix still reaches it; the first then stops and removes both. A Unix
socket left by a kill -9 does not prevent a start, but a socket someone answers on is
never removed. Both socket forms: inet and unix."""

import os
import signal
import socket
import stat
import subprocess
import unittest

from harness import (POSTFIX, SMTP_SINK, Milter, MilterClient, PostfixTestCase, make_workdir,
                     rule)


def read_pid_file(path: str):
    """The pid file's content, or None when it is gone."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


class _SecondInstance:
    """The checks, shared by the inet and the Unix socket classes below."""

    def start_milter(self, rules, **kwargs) -> Milter:
        """A milter with a pid file in the class's folder."""
        pid_file = os.path.join(self.workdir, f"pid-{PostfixTestCase._milter_serial + 1}")
        extra = {"milter": {"pid_file": pid_file, **self.milter_extra}}
        m = super().start_milter(rules, extra=extra, **kwargs)
        m.pid_file = pid_file
        return m

    def milter_kwargs(self) -> dict:
        return {}

    def run_second(self, m: Milter) -> subprocess.CompletedProcess:
        return subprocess.run([m.binary, "-c", m.config_path], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)

    def assertMilterAnswers(self, m: Milter, what: str):
        client = MilterClient(m.socket_spec)
        try:
            self.assertEqual(client.negotiate(), b"O", f"{what}: milter negotiation")
            self.assertEqual(client.connect_stage(), b"c", f"{what}: connect stage")
        finally:
            client.quit()

    def test_a_second_instance_refuses_and_leaves_the_first_one_working(self):
        first = self.start_milter([rule("per-ip", 1, key="client_ip")], **self.milter_kwargs())
        self.assertEqual(read_pid_file(first.pid_file), str(first.pid))
        socket_before = self.socket_identity(first)

        second = self.run_second(first)
        self.assertNotEqual(second.returncode, 0, f"second instance: {second}")
        self.assertTrue(first.running(), "first instance still runs")
        self.assertEqual(read_pid_file(first.pid_file), str(first.pid), "first instance's pid file intact")
        self.assertEqual(self.socket_identity(first), socket_before, "milter socket untouched")
        self.assertIn(f"pid {first.pid}", second.stderr, "the message names the running pid")
        self.assertIn("another zetian-milter", second.stderr)
        self.assertNotIn("listening", second.stderr + second.stdout)
        self.assertMilterAnswers(first, "after the second instance")
        # Through Postfix: the rule (1 per client IP) answers the second message, which
        # only a milter that Postfix reaches can do.
        one, two = self.send(2, source="127.0.0.2")
        self.assertDelivered(one)
        self.assertReply(two.mail, 451, "4.7.1", contains="per-ip", what="MAIL FROM of message 2")

        self.assertEqual(first.stop(), 0)
        self.assertFalse(os.path.exists(first.pid_file), "pid file left after SIGTERM")
        if self.unix_path:
            self.assertFalse(os.path.exists(self.unix_path), "milter socket left after SIGTERM")


class SecondInstanceOnInet(_SecondInstance, PostfixTestCase):
    milter_address = "auto"
    unix_path = None
    milter_extra: dict = {}

    def socket_identity(self, m: Milter):
        return m.port


class SecondInstanceOnUnixSocket(_SecondInstance, PostfixTestCase):
    """Postfix runs unchrooted in the harness: the path means the same to both. The
    milter runs as root here; umask 0000 lets smtpd (user postfix) use its socket."""

    milter_extra = {"umask": "0000"}

    @classmethod
    def setUpClass(cls):
        if os.geteuid() == 0 and POSTFIX and SMTP_SINK:
            top = make_workdir("single", cls.addClassCleanup)
            cls.unix_path = os.path.join(top, "milter.sock")
            cls.milter_address = f"unix:{cls.unix_path}"
        super().setUpClass()

    def milter_kwargs(self) -> dict:
        return {"port": None, "socket_spec": f"unix:{self.unix_path}"}

    def socket_identity(self, m: Milter):
        st = os.stat(self.unix_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        return (st.st_dev, st.st_ino)

    def test_a_socket_left_by_kill_9_does_not_prevent_a_start(self):
        m = self.start_milter([rule("per-ip", 1, key="client_ip")], **self.milter_kwargs())
        m.process.send_signal(signal.SIGKILL)
        m.process.stop(None, 10)
        m._stopped = True
        self.assertTrue(os.path.exists(self.unix_path), "kill -9 leaves the socket file behind")

        again = self.start_milter([rule("per-ip", 1, key="client_ip")], **self.milter_kwargs())
        self.assertIn("stale_socket_removed", again.log_text())
        one, two = self.send(2, source="127.0.0.3")
        self.assertDelivered(one)
        self.assertReply(two.mail, 451, "4.7.1", contains="per-ip", what="MAIL FROM of message 2")
        self.assertEqual(again.stop(), 0)
        self.assertFalse(os.path.exists(self.unix_path))

    def test_a_socket_someone_answers_on_is_left_alone(self):
        # Another program (not a zetian-milter: a different state_dir, so no lock
        # conflict) listens on the configured path.
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind(self.unix_path)
        self.addCleanup(lambda: os.path.exists(self.unix_path) and os.unlink(self.unix_path))
        other.listen(8)
        identity = self.socket_identity(None)
        m = Milter(self.workdir, self.addCleanup, rules=[rule("per-ip", 1)], name="intruder",
                   **self.milter_kwargs())
        result = subprocess.run([m.binary, "-c", m.config_path], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=30)
        self.assertNotEqual(result.returncode, 0, str(result))
        self.assertIn("another process answers", result.stderr)
        self.assertEqual(self.socket_identity(None), identity, "the live socket was replaced")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(conn.close)
        conn.settimeout(2)
        conn.connect(self.unix_path)
        other.settimeout(2)
        peer, _ = other.accept()  # the other program still gets its connections
        peer.close()


if __name__ == "__main__":
    unittest.main()
