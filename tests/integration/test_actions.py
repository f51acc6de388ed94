"""Actions, replies, sender filters, key normalisation and the connect/data stages,
end to end: SMTP client -> real Postfix 3.7 -> zetian-milter -> smtp-sink.

Each test starts its own zetian-milter (fresh buckets) on the class's milter port.
Nothing is exempt: every test client is on loopback (127.0.0.x act as different IPs).
"""

import re
import unittest

from harness import PostfixTestCase, rule, send_via_data_command, wait_until


class ActionsThroughPostfix(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    # -- helpers


    # -- quarantine

    def test_quarantine_accepts_and_puts_the_message_over_limit_on_hold(self):
        self.start_milter([rule("q-ip", 1, action="quarantine")])
        first, second = self.send(2, source="127.0.0.2")
        self.assertDelivered(first)
        # Over the limit: still accepted at the end of DATA (quarantine is not a refusal).
        self.assertReply(second.mail, 250, what="MAIL FROM over a quarantine limit")
        self.assertReply(second.data, 250, what="end of DATA over a quarantine limit")
        qid = self.queue_id(second.data)
        self.addCleanup(self.delete_from_queue, qid)

        held = wait_until(
            lambda: [e for e in self.queue_entries() if e.get("queue_id") == qid],
            15, what=f"message {qid} in the queue", diagnostics=self.diagnostics)
        self.assertEqual(held[0].get("queue_name"), "hold",
                         f"message {qid} should be in the hold queue: {held}")
        wait_until(lambda: re.search(rf"{qid}: milter-hold: .*milter triggers HOLD action",
                                     self.postfix.log_text()),
                   10, what=f"'milter triggers HOLD action' for {qid} in mail.log",
                   diagnostics=self.diagnostics)
        # A later message from another client is delivered; the held one never is.
        [later] = self.send(1, source="127.0.0.3")
        self.assertDelivered(later)
        self.assertEqual(self.sink.find(second.token), [], "the held message reached the sink")
        self.assertEqual([e.get("queue_name") for e in self.queue_entries()
                          if e.get("queue_id") == qid], ["hold"])

    # -- replies

    def test_custom_reply_expands_placeholders_and_keeps_a_literal_percent(self):
        self.start_milter([rule(
            "custom-reply", 2, period="1h",
            reply="452 4.7.1 %{rule} over %{limit}/%{period}: 100% used, retry in %{retry_after}s")])
        results = self.send(3, source="127.0.0.2")
        self.assertAccepted(results[0])
        self.assertAccepted(results[1])
        third = results[2].mail
        self.assertReply(third, 452, "4.7.1", what="MAIL FROM over a limit with a custom reply")
        m = re.fullmatch(r"4\.7\.1 custom-reply over 2/1h: 100% used, retry in (\d+)s", third.text)
        self.assertIsNotNone(m, f"reply text not as configured (one '%', placeholders "
                                f"expanded): {third.text!r}")
        # 2 per hour, both used just now: the next token is about 30 minutes away.
        self.assertTrue(1 <= int(m.group(1)) <= 3600, third.text)

    # -- sender filter

    def test_null_sender_rule_limits_bounces_only(self):
        self.start_milter([rule("bounces", 1, key="client_ip", senders="null")])
        # Normal senders first: they must not use up the bounce budget ...
        for r in self.send(3, source="127.0.0.2", sender="someone@example.org"):
            self.assertAccepted(r, "message from a normal sender")
        bounce1, bounce2 = self.send(2, source="127.0.0.2", sender="")
        self.assertAccepted(bounce1, "first bounce (MAIL FROM:<>)")
        self.assertReply(bounce2.mail, 451, "4.7.1", contains="bounces",
                         what="MAIL FROM:<> over the bounce limit")
        # ... and the limited bounces do not limit normal senders from the same client.
        for r in self.send(2, source="127.0.0.2", sender="other@example.org"):
            self.assertAccepted(r, "normal sender after the bounces were limited")
        self.assertDelivered(bounce1)

    # -- key normalisation

    def test_sender_domain_key_ignores_the_case_of_the_domain(self):
        self.start_milter([rule("per-domain", 1, key="sender_domain")])
        [first] = self.send(1, source="127.0.0.2", sender="user@Example.COM")
        self.assertAccepted(first, "first message from user@Example.COM")
        [second] = self.send(1, source="127.0.0.3", sender="other@example.com")
        self.assertReply(second.mail, 451, "4.7.1", contains="per-domain",
                         what="MAIL FROM:<other@example.com> after user@Example.COM")
        [third] = self.send(1, source="127.0.0.2", sender="user@EXAMPLE.org")
        self.assertAccepted(third, "another domain has its own budget")

    # -- stages

    def test_connect_stage_tempfail_still_greets_and_refuses_mail_from(self):
        self.start_milter([rule("conn-ip", 1, key="client_ip", stage="connect")])
        [first] = self.send(1, source="127.0.0.2")
        self.assertDelivered(first)

        # Postfix 3.7, milter tempfail (not 421) at connect: the 220 banner and EHLO
        # are still answered (SmtpSession insists on 220), then every MAIL FROM gets
        # the milter's reply.
        with self.session(source="127.0.0.2") as s:
            self.assertReply(s.banner, 220, what="banner of the second session")
            self.assertReply(s.ehlo_reply, 250, what="EHLO in the second session")
            refused = s.send()
            self.assertReply(refused.mail, 451, "4.7.1", contains="conn-ip",
                             what="MAIL FROM in the second session")
            self.assertEqual(refused.rcpts, [])
            self.assertIsNone(refused.data)
            again = s.send(sender="other@example.org")
            self.assertReply(again.mail, 451, "4.7.1", contains="conn-ip",
                             what="second MAIL FROM in the second session")
        # Another client is not affected; once its message is at the sink, the refused
        # one (never queued) is certainly not.
        [other] = self.send(1, source="127.0.0.3")
        self.assertDelivered(other)
        self.assertEqual(self.sink.find(refused.token) + self.sink.find(again.token), [])

    def test_data_stage_rule_refuses_the_data_command(self):
        self.start_milter([rule("data-sender", 1, key="sender", stage="data")])
        with self.session(source="127.0.0.2") as s:
            first = send_via_data_command(s, sender="bulk@example.org")
            second = send_via_data_command(s, sender="bulk@example.org")
            other = send_via_data_command(s, sender="quiet@example.org")
        self.assertDelivered(first)
        self.assertReply(second.mail, 250, what="MAIL FROM (the rule is at DATA)")
        self.assertReply(second.rcpts[0][1], 250, what="RCPT TO (the rule is at DATA)")
        self.assertReply(second.data, 451, "4.7.1", contains="data-sender",
                         what="DATA command of the second message from bulk@example.org")
        self.assertDelivered(other)
        self.assertEqual(self.sink.find(second.token), [], "the refused message reached the sink")


if __name__ == "__main__":
    unittest.main()
