"""Maintenance (drain) with a real Postfix: `zetianctl maintenance on` makes new SMTP
sessions from remote clients get 421 4.3.2 at connect, so they try another MX, while
loopback clients (local submission, monitoring) are still served; `off` ends it."""

import smtplib
import socket
import subprocess
import unittest

from harness import PostfixTestCase, rule


def non_loopback_ipv4() -> str:
    """An IPv4 address of this host outside 127/8, to connect from as a "remote"
    client (Linux delivers a connection from a local address to 127.0.0.1)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    return ""


class Maintenance(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    def connect(self, source: str) -> tuple[int, str]:
        client = smtplib.SMTP(timeout=30, source_address=(source, 0))
        try:
            code, msg = client.connect("127.0.0.1", self.postfix.port())
            return code, msg.decode(errors="replace")
        finally:
            try:
                client.close()
            except (OSError, smtplib.SMTPException):
                pass

    def test_drain_answers_remote_clients_421_and_spares_loopback(self):
        remote = non_loopback_ipv4()
        if not remote:
            self.skipTest("this host has no non-loopback IPv4 address to act as a remote client")
        milter = self.start_milter([rule("per-ip", 100)])
        code, _ = self.connect(remote)
        self.assertEqual(code, 220)

        cp = milter.ctl("maintenance", "on")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        code, text = self.connect(remote)
        # Postfix closes the session with its own 421 text ("Service unavailable - try
        # again later") when a milter answers 421 at connect.
        self.assertEqual(code, 421, text)
        # Loopback still gets in and its mail is delivered.
        [local] = self.send(1, source="127.0.0.2")
        self.assertDelivered(local)
        self.assertGreaterEqual(milter.metric("zetian_maintenance_refusals_total"), 1)

        cp = milter.ctl("maintenance", "off")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        code, text = self.connect(remote)
        self.assertEqual(code, 220, text)


if __name__ == "__main__":
    unittest.main()
