"""When zetian-milter is stopped, Postfix follows its own milter_default_action, and a
stop with SMTP sessions open is prompt and clean (exit status 0)."""

import signal
import unittest

from harness import PostfixTestCase, rule


class PostfixWhenTheMilterIsDown(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"
    listeners = {"accept": {"milter_default_action": "accept"}}

    def test_tempfail_default_action_answers_451_once_the_milter_is_stopped(self):
        milter = self.start_milter([rule("per-ip", 100)])
        self.assertAccepted(self.send(1, source="127.0.0.2")[0], "message while the milter runs")
        milter.stop()
        [down] = self.send(1, source="127.0.0.2")
        self.assertReply(down.mail, 451, "4.7.1", what="MAIL FROM with the milter stopped")
        self.start_milter([rule("per-ip", 100)])
        self.assertAccepted(self.send(1, source="127.0.0.2")[0], "message after the restart")

    def test_accept_default_action_delivers_once_the_milter_is_stopped(self):
        milter = self.start_milter([rule("per-ip", 1)])
        first, second = self.send(2, source="127.0.0.2", listener="accept")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", what="the limit applies while the milter runs")
        milter.stop()
        for r in self.send(2, source="127.0.0.2", listener="accept"):
            self.assertDelivered(r)

    def test_sigterm_with_an_open_smtp_session_stops_promptly_and_the_session_goes_on(self):
        milter = self.start_milter([rule("per-ip", 100)])
        with self.session(source="127.0.0.2") as s:
            self.assertAccepted(s.send(), "message before the stop")
            milter.stop(timeout=10)  # asserts exit status 0 within the deadline
            after = s.send()
            # Postfix applies milter_default_action (tempfail) for the rest of the
            # session; what matters is an answer, not a hang or a dropped connection.
            self.assertIn(after.mail.code, (250, 451), str(after))
            self.assertReply(s.noop(), 250, what="NOOP after the milter stopped")

    def test_sigint_also_stops_cleanly(self):
        milter = self.start_milter([rule("per-ip", 100)])
        self.assertEqual(milter.stop(timeout=10, sig=signal.SIGINT), 0)


if __name__ == "__main__":
    unittest.main()
