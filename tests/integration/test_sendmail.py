"""The limit tests of the Postfix files, through a real Sendmail 8.17 (Debian 12's
sendmail-bin, fetched and unpacked by sendmail_harness.py): SMTP client -> Sendmail ->
zetian-milter -> smtp-sink.

One Sendmail per class, registered as
INPUT_MAIL_FILTER(`zetian', `S=inet:PORT@127.0.0.1, F=T, T=S:10s;R:10s;E:1m');
each test starts its own zetian-milter (fresh buckets) on PORT. Nothing is exempt
unless a test says so, and every client is on loopback (127.0.0.x act as different IPs).
"""

import smtplib
import unittest

from harness import REPO_ROOT, SmtpSession, rule, send_via_data_command, wait_until
from sendmail_harness import SendmailTestCase
from test_ratelimit import LimitsThroughAnyMta


class LimitsThroughSendmail(LimitsThroughAnyMta, SendmailTestCase):
    milter_flags = "T"
    milter_timeouts = "S:10s;R:10s;E:1m"
    sasl = True  # AUTH PLAIN/LOGIN against a sasldb of the class's own

    @property
    def credentials(self):
        return (self.sasl_user, self.sasl_password)

    def test_limit_of_5_per_client_ip_passes_5_and_answers_the_6th_with_451(self):
        milter = self.start_milter([rule("per-ip", 5, key="client_ip", stage="mail")])
        results = self.send(6, source="127.0.0.2")
        for i, r in enumerate(results[:5], 1):
            self.assertAccepted(r, f"message {i} of 5")
        # Sendmail's own answer when a milter fails is 451 4.3.2: insist on zetian's.
        self.assertReply(results[5].mail, 451, "4.7.1", contains="per-ip", what="MAIL FROM of message 6")
        self.assertIsNone(results[5].data)
        for r in results[:5]:
            self.sink.wait_for(r.token, diagnostics=self.diagnostics)
        # The client address came through Sendmail's connect step: the key is the IP.
        self.assertIn("key=127.0.0.2", milter.log_text())
        # Another client address has its own budget.
        self.assertAccepted(self.send(1, source="127.0.0.3")[0], "message from 127.0.0.3")

    def test_quarantine_accepts_and_sendmail_keeps_the_message_quarantined(self):
        self.start_milter([rule("q-ip", 1, action="quarantine")])
        first, second = self.send(2, source="127.0.0.2")
        self.assertDelivered(first)
        # Over the limit: accepted at the end of DATA (quarantine is not a refusal) ...
        self.assertReply(second.mail, 250, what="MAIL FROM over a quarantine limit")
        self.assertReply(second.data, 250, what="end of DATA over a quarantine limit")
        qid = self.queue_id(second.data)
        # ... and kept in Sendmail's queue as quarantined (hf file), with zetian's reason,
        # where `mailq -qQ` shows it.
        held = wait_until(lambda: self.sendmail.quarantined().get(qid), 15,
                          what=f"message {qid} quarantined in Sendmail's queue",
                          diagnostics=self.diagnostics)
        self.assertEqual(held, "zetian rate limit q-ip exceeded")
        listing = self.sendmail.tool("-bp", "-qQ")
        self.assertIn(qid, listing.stdout, listing.stdout + listing.stderr)
        self.assertIn("QUARANTINE: zetian rate limit q-ip exceeded", listing.stdout)
        # A later message from another client is delivered; the quarantined one is not.
        [later] = self.send(1, source="127.0.0.3")
        self.assertDelivered(later)
        self.assertEqual(self.sink.find(second.token), [], "the quarantined message reached the sink")
        self.assertIn(qid, self.sendmail.quarantined())
        self.assertNotIn(qid, self.sendmail.queued(), "quarantined, not waiting for delivery")
        # What docs/operations.md tells operators: -Q without a reason on the quarantined
        # item (-qQ -qI<id>) releases it, and a queue run delivers it.
        released = self.sendmail.tool("-Q", "-qQ", f"-qI{qid}")
        self.assertEqual(released.returncode, 0, released.stdout + released.stderr)
        self.assertNotIn(qid, self.sendmail.quarantined())
        run = self.sendmail.tool(f"-qI{qid}")
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.sink.wait_for(second.token, diagnostics=self.diagnostics)

    def test_the_contrib_snippet_registers_zetian_as_documented(self):
        cf = self.sendmail.build_cf(
            f"OSTYPE(`linux')dnl\ninclude(`{REPO_ROOT}/contrib/sendmail/zetian.mc')dnl\nMAILER(`smtp')dnl\n")
        self.assertIn("O InputMailFilters=zetian\n", cf)
        self.assertIn("\nXzetian, S=inet:8891@127.0.0.1, F=T, T=C:10s;S:10s;R:10s;E:1m\n", cf)

    def test_recipient_stage_rule_refuses_only_the_recipients_over_the_limit(self):
        self.start_milter([rule("rcpt-global", 2, key="global", stage="rcpt")])
        rcpts = [f"user{i}@example.net" for i in range(4)]
        with self.session(source="127.0.0.2") as s:
            result = s.send(rcpts=rcpts)
        for rcpt, reply in result.rcpts[:2]:
            self.assertReply(reply, 250, what=f"RCPT TO:<{rcpt}> within the limit")
        for rcpt, reply in result.rcpts[2:]:
            self.assertReply(reply, 451, "4.7.1", contains="rcpt-global",
                             what=f"RCPT TO:<{rcpt}> over the limit")
        [m] = self.assertDelivered(result)
        got = sorted(a.split()[0].strip("<>") for a in m.rcpt_args)
        self.assertEqual(got, sorted(rcpts[:2]), "only the accepted recipients reach the sink")

    def test_data_stage_rule_refuses_the_data_command(self):
        self.start_milter([rule("data-sender", 1, key="sender", stage="data")])
        with self.session(source="127.0.0.2") as s:
            first = send_via_data_command(s, sender="bulk@example.org")
            second = send_via_data_command(s, sender="bulk@example.org")
        self.assertDelivered(first)
        self.assertReply(second.rcpts[0][1], 250, what="RCPT TO (the rule is at DATA)")
        self.assertReply(second.data, 451, "4.7.1", contains="data-sender",
                         what="DATA command of the second message from bulk@example.org")

    def test_connect_stage_tempfail_greets_then_answers_mail_from_with_sendmails_own_text(self):
        milter = self.start_milter([rule("conn-ip", 1, key="client_ip", stage="connect")])
        self.assertDelivered(self.send(1, source="127.0.0.2")[0])
        # Unlike Postfix, Sendmail drops a milter's reply text at the connect step: the
        # banner and EHLO are answered, then each MAIL FROM gets its generic 451 4.3.2
        # (the words it uses when a milter is down); zetian's log names the rule.
        with self.session(source="127.0.0.2") as s:
            self.assertReply(s.banner, 220, what="banner of the second session")
            self.assertReply(s.ehlo_reply, 250, what="EHLO in the second session")
            for _ in range(2):
                refused = s.send()
                self.assertReply(refused.mail, 451, "4.3.2", what="MAIL FROM in the second session")
                self.assertIsNone(refused.data)
        self.assertIn("verdict=tempfail", milter.log_text())
        self.assertIn("rule=conn-ip", milter.log_text())

    def test_connect_stage_421_refuses_the_greeting(self):
        self.start_milter([rule("conn-421", 1, key="client_ip", stage="connect",
                                reply="421 4.7.0 %{rule}: too many connections")])
        self.assertDelivered(self.send(1, source="127.0.0.2")[0])
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            SmtpSession(self.sendmail.port, source="127.0.0.2")
        self.assertEqual(refused.exception.smtp_code, 421, str(refused.exception))

    def test_sasl_user_key_gets_auth_authen_from_sendmail(self):
        milter = self.start_milter([rule("per-user", 1, key="sasl_user")])
        [first] = self.send(1, source="127.0.0.2", auth=self.credentials)
        self.assertAccepted(first)
        # Same user from another address: the budget follows the user, so Sendmail sent
        # {auth_authen} with MAIL FROM.
        [second] = self.send(1, source="127.0.0.3", auth=self.credentials)
        self.assertReply(second.mail, 451, "4.7.1", contains="per-user",
                         what="MAIL FROM of the same user from another address")
        self.assertIn(f"key={self.sasl_user}", milter.log_text())
        # Without AUTH the rule has no key to count: not limited.
        for r in self.send(2, source="127.0.0.4"):
            self.assertAccepted(r, "unauthenticated message")

    def test_exempt_authenticated_exempts_only_authenticated_sessions(self):
        self.start_milter([rule("per-ip", 1)], exempt_authenticated=True)
        for r in self.send(3, source="127.0.0.2", auth=self.credentials):
            self.assertAccepted(r, "authenticated message")
        first, second = self.send(2, source="127.0.0.2")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", contains="per-ip",
                         what="MAIL FROM of an unauthenticated session over the limit")

    def test_milter_down_with_f_t_answers_451_4_3_2_and_recovers_when_it_is_back(self):
        milter = self.start_milter([rule("per-ip", 100)])
        self.assertDelivered(self.send(1, source="127.0.0.2")[0])
        self.wait_sessions_closed(milter)
        milter.stop()
        [down] = self.send(1, source="127.0.0.2")
        # F=T: Sendmail tempfails the transaction itself, with its own text.
        self.assertReply(down.mail, 451, "4.3.2", what="MAIL FROM with the milter stopped")
        self.assertIsNone(down.data)
        self.start_milter([rule("per-ip", 100)])
        self.assertDelivered(self.send(1, source="127.0.0.2")[0])


if __name__ == "__main__":
    unittest.main()
