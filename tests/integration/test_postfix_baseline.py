"""Baseline with Postfix alone (no zetian-milter): the harness's Postfix relays to the
sink, SASL works, and Postfix 3.7's own behaviour when its milter cannot be reached.

These facts are what every zetian test builds on, so they are checked on their own:
if one fails, the milter tests would fail for reasons that are not ours.
"""

import errno
import socket
import subprocess
import unittest

from harness import POSTCONF, PostfixTestCase, SmtpSession


class PostfixRelaysToTheSink(PostfixTestCase):
    sasl = True

    def test_message_from_a_loopback_client_is_relayed_to_the_sink(self):
        [result] = self.send(1, source="127.0.0.2")
        self.assertReply(result.mail, 250, "2.1.0", what="MAIL FROM")
        self.assertReply(result.data, 250, "2.0.0", what="DATA")
        [msg] = self.assertDelivered(result)
        self.assertIn("[127.0.0.2]", msg.raw.decode(), "Postfix's Received header names the client")
        self.assertEqual(msg.message["Message-ID"], f"<{result.token}@zetian.test>")

    def test_several_messages_in_one_session_all_reach_the_sink(self):
        results = self.send(4, source="127.0.0.3")
        for r in results:
            self.assertAccepted(r)
        for r in results:
            self.sink.wait_for(r.token, diagnostics=self.diagnostics)

    def test_every_recipient_of_a_message_reaches_the_sink(self):
        rcpts = [f"user{i}@example.net" for i in range(5)]
        with self.session(source="127.0.0.4") as s:
            result = s.send(rcpts=rcpts)
        for rcpt, reply in result.rcpts:
            self.assertReply(reply, 250, "2.1.5", what=f"RCPT TO:<{rcpt}>")
        [msg] = self.assertDelivered(result)
        got = sorted(a.split()[0].strip("<>") for a in msg.rcpt_args)
        self.assertEqual(got, sorted(rcpts))

    def test_sasl_login_with_the_right_password_is_accepted_and_mail_relayed(self):
        with self.session(source="127.0.0.5") as s:
            self.assertIn("AUTH", s.ehlo_reply.text, "EHLO advertises AUTH")
            self.assertReply(s.login(self.sasl_user, self.sasl_password), 235, "2.7.0",
                             what="AUTH")
            result = s.send()
        [msg] = self.assertDelivered(result)
        self.assertIn("ESMTPA", msg.raw.decode(), "Postfix marks the session as authenticated")
        self.assertIn(f"sasl_username={self.sasl_user}", self.postfix.log_text())

    def test_sasl_login_with_a_wrong_password_is_refused_with_535(self):
        with self.session(source="127.0.0.5") as s:
            self.assertReply(s.login(self.sasl_user, "wrong"), 535, "5.7.8", what="AUTH")

    def test_postfix_passes_auth_authen_to_milters_at_mail_from(self):
        # zetian's sasl_user key and exempt_authenticated read {auth_authen} at MAIL
        # FROM; the harness relies on Postfix's default milter_mail_macros for it.
        cp = subprocess.run([POSTCONF, "-c", self.postfix.config_dir, "-h", "milter_mail_macros"],
                            capture_output=True, text=True, check=True)
        self.assertIn("{auth_authen}", cp.stdout.split())


class PostfixWithAnUnreachableMilter(PostfixTestCase):
    """smtpd_milters points at a port where nothing listens. Postfix 3.7 still greets
    and answers EHLO; with `tempfail` it refuses MAIL FROM with 451 4.7.1 (and the
    session stays usable), with `accept` it delivers as if there were no milter."""

    milter_address = "auto"  # a reserved port; no test here starts a milter on it
    default_action = "tempfail"
    listeners = {"accept": {"milter_default_action": "accept"}}

    def test_tempfail_default_action_greets_then_answers_451_at_mail_from(self):
        with self.session(source="127.0.0.2") as s:
            self.assertEqual(s.banner.code, 220, "the banner is still sent")
            self.assertEqual(s.ehlo_reply.code, 250)
            result = s.send()
            self.assertReply(result.mail, 451, "4.7.1", what="MAIL FROM")
            self.assertIsNone(result.data)
            self.assertReply(s.noop(), 250, what="NOOP after the refusal")
        self.assertIn("connect to Milter service", self.postfix.log_text())

    def test_tempfail_default_action_refuses_every_message_of_the_session(self):
        results = self.send(3, source="127.0.0.3")
        for r in results:
            self.assertReply(r.mail, 451, "4.7.1", what="MAIL FROM")

    def test_accept_default_action_delivers_as_without_a_milter(self):
        results = self.send(2, source="127.0.0.2", listener="accept")
        for r in results:
            self.assertDelivered(r)


class SmtpSessionHelper(unittest.TestCase):
    """The client helper itself: binding a source address must fail loudly when the
    address is not local, or the tests that rely on distinct client IPs would lie."""

    def test_binding_a_non_local_source_address_fails(self):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            with self.assertRaises(OSError) as caught:
                SmtpSession(listener.getsockname()[1], source="192.0.2.1", timeout=2)
            self.assertEqual(caught.exception.errno, errno.EADDRNOTAVAIL)


if __name__ == "__main__":
    unittest.main()
