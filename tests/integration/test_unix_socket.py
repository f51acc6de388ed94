"""zetian-milter started as root on a Unix socket, dropping to an unprivileged user:
the process runs as `nobody` with group `postfix`, the socket is created after the
drop (owned nobody:postfix, mode 0770 from umask 0007) so Postfix's smtpd can use it
through the group, the pid file is written before the drop, and SIGTERM removes the
pid file and the socket.

Postfix runs unchrooted in the harness, so smtpd_milters = unix:PATH is the same path
for Postfix as for the milter.
"""

import contextlib
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import unittest

from harness import (POSTFIX, SMTP_SINK, Milter, PostfixTestCase, make_workdir, rule,
                     wait_until)

MILTER_USER = "nobody"
MILTER_GROUP = "postfix"


def proc_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid (real, effective, saved, fs) and Groups of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("Uid", "Gid", "Groups"):
                out[name] = [int(v) for v in value.split()]
    return out


class UnixSocketAsUnprivilegedUser(PostfixTestCase):
    default_action = "tempfail"

    @classmethod
    def setUpClass(cls):
        # The socket path must be known before Postfix starts (smtpd_milters); its
        # folder is made here. Without root or Postfix, super() skips the class.
        if os.geteuid() == 0 and POSTFIX and SMTP_SINK:
            try:
                cls.user = pwd.getpwnam(MILTER_USER)
                cls.group = grp.getgrnam(MILTER_GROUP)
            except KeyError as e:
                raise unittest.SkipTest(f"user {MILTER_USER} / group {MILTER_GROUP} missing: {e}")
            top = make_workdir("usock", cls.addClassCleanup)
            cls.socket_dir = os.path.join(top, "s")
            os.mkdir(cls.socket_dir)
            # The milter (nobody) creates the socket here; smtpd (postfix) traverses it.
            os.chown(cls.socket_dir, cls.user.pw_uid, cls.group.gr_gid)
            os.chmod(cls.socket_dir, 0o750)
            cls.milter_socket = os.path.join(cls.socket_dir, "milter.sock")
            cls.milter_address = f"unix:{cls.milter_socket}"
        super().setUpClass()

    def start_unprivileged_milter(self, rules, pid_dir: str) -> Milter:
        pid_file = os.path.join(pid_dir, "zetian-milter.pid")
        PostfixTestCase._milter_serial += 1
        m = Milter(self.workdir, self.addCleanup, rules=rules, port=None,
                   socket_spec=f"unix:{self.milter_socket}", name=f"u{PostfixTestCase._milter_serial}",
                   extra={"milter": {"user": MILTER_USER, "group": MILTER_GROUP,
                                     "umask": "0007", "pid_file": pid_file}})
        # Health socket and state_dir are used after the privilege drop.
        for d in (m.workdir, m.state_dir):
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        self._milters.append(m)
        m.pid_file = pid_file
        m.start()
        return m

    def stop_promptly(self, m: Milter) -> int:
        """SIGTERM, then wake libmilter's listener (it checks its stop flag only when
        its poll() returns, every 5 s) with a connection to the Unix socket; Milter.stop
        then asserts exit status 0."""
        m.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            m.process.proc.wait(0.2)
        if m.running():
            with contextlib.suppress(OSError), \
                    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.milter_socket)
        return m.stop(timeout=10)

    def test_runs_as_nobody_with_a_group_socket_that_postfix_uses(self):
        # The pid file is written as root before the drop; it is removed after the
        # drop, which needs a folder the milter user may write.
        pid_dir = os.path.join(self.workdir, "run")
        os.makedirs(pid_dir, exist_ok=True)
        os.chown(pid_dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(pid_dir, 0o755)
        m = self.start_unprivileged_milter([rule("per-ip", 2, key="client_ip")], pid_dir)

        ids = proc_ids(m.pid)
        self.assertEqual(ids["Uid"], [self.user.pw_uid] * 4, f"Uid of the milter: {ids}")
        self.assertEqual(ids["Gid"], [self.group.gr_gid] * 4, f"Gid of the milter: {ids}")
        self.assertNotIn(0, ids["Groups"], f"root's group kept: {ids}")

        st = os.stat(self.milter_socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode), f"{self.milter_socket} is not a socket")
        self.assertEqual((st.st_uid, st.st_gid), (self.user.pw_uid, self.group.gr_gid),
                         "socket owner (created after the drop)")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o770, f"socket mode {oct(st.st_mode)}")
        hs = os.stat(m.health_socket)
        self.assertEqual(hs.st_uid, self.user.pw_uid, "health socket created after the drop")

        with open(m.pid_file) as f:
            self.assertEqual(f.read().strip(), str(m.pid), "pid file content")

        results = self.send(3, source="127.0.0.2")
        for i, r in enumerate(results[:2], 1):
            self.assertDelivered(r)
        # Postfix's own reply when it cannot reach the milter is also 451 4.7.1: insist
        # on the rule name, which only zetian's reply carries.
        self.assertReply(results[2].mail, 451, "4.7.1", contains="per-ip",
                         what="MAIL FROM of message 3 over the Unix socket")

        self.assertEqual(self.stop_promptly(m), 0)
        self.assertFalse(os.path.exists(m.pid_file), "pid file left after SIGTERM")
        self.assertFalse(os.path.exists(self.milter_socket), "milter socket left after SIGTERM")


if __name__ == "__main__":
    unittest.main()
