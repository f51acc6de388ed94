"""Rate limits end to end: SMTP client -> real Postfix -> zetian-milter -> smtp-sink.

Each test starts its own zetian-milter (fresh buckets) on the class's milter port.
Nothing is exempt unless a test says so: the built-in default exempts loopback, and
every test client is on loopback (127.0.0.2, 127.0.0.3, ... act as different IPs).
"""

import unittest

from harness import PostfixTestCase, rule, wait_until


class LimitsThroughAnyMta:
    """Tests that hold as they are whichever MTA is in front of zetian: mixed into
    RateLimitsThroughPostfix here and into test_sendmail's LimitsThroughSendmail. The
    class using it is a PostfixTestCase (start_milter, send, the assertions)."""

    def test_reject_action_answers_550_5_7_1(self):
        self.start_milter([rule("per-ip-reject", 1, action="reject")])
        first, second = self.send(2, source="127.0.0.2")
        self.assertAccepted(first)
        self.assertReply(second.mail, 550, "5.7.1", contains="per-ip-reject",
                         what="MAIL FROM over a reject limit")

    def test_tag_action_delivers_and_adds_the_header_to_the_message_over_limit(self):
        self.start_milter([rule("tag-ip", 1, period="1h", action="tag")])
        first, second = self.send(2, source="127.0.0.2")
        [m1] = self.assertDelivered(first)
        [m2] = self.assertDelivered(second)
        self.assertEqual(m1.header("X-Zetian-RateLimit"), [], "within the limit: no header")
        tags = m2.header("X-Zetian-RateLimit")
        self.assertEqual(len(tags), 1, f"one header on the message over the limit: {tags}")
        self.assertIn("rule=tag-ip", tags[0])
        self.assertIn("limit=1/1h", tags[0])

    def test_exempt_network_is_never_limited(self):
        self.start_milter([rule("per-ip", 1)], exempt=["127.0.0.5/32"])
        for r in self.send(4, source="127.0.0.5"):
            self.assertAccepted(r, "message from the exempt 127.0.0.5")
        first, second = self.send(2, source="127.0.0.6")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", what="MAIL FROM from non-exempt 127.0.0.6")


class RateLimitsThroughPostfix(LimitsThroughAnyMta, PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    def test_limit_of_5_per_client_ip_passes_5_and_answers_the_6th_with_451(self):
        self.start_milter([rule("per-ip", 5, key="client_ip", stage="mail")])
        results = self.send(6, source="127.0.0.2")
        for i, r in enumerate(results[:5], 1):
            self.assertAccepted(r, f"message {i} of 5")
        sixth = results[5]
        # Postfix's own milter-failure reply is also 451 4.7.1 ("Service unavailable"),
        # so insist on zetian's reply, which names the rule.
        self.assertReply(sixth.mail, 451, "4.7.1", contains="per-ip", what="MAIL FROM of message 6")
        self.assertIsNone(sixth.data)
        for r in results[:5]:
            self.sink.wait_for(r.token, diagnostics=self.diagnostics)

    def test_another_client_ip_has_its_own_budget(self):
        self.start_milter([rule("per-ip", 5)])
        results = self.send(6, source="127.0.0.2")
        self.assertReply(results[5].mail, 451, "4.7.1", what="MAIL FROM of message 6 from .2")
        for r in self.send(5, source="127.0.0.3"):
            self.assertAccepted(r, "message from 127.0.0.3")

    def test_limit_counts_messages_across_sessions(self):
        self.start_milter([rule("per-ip", 2)])
        results = self.send(3, source="127.0.0.2", one_session=False)
        self.assertAccepted(results[0])
        self.assertAccepted(results[1])
        self.assertReply(results[2].mail, 451, "4.7.1", what="MAIL FROM in the third session")

    def test_dry_run_delivers_everything_and_logs_what_it_would_have_done(self):
        milter = self.start_milter([rule("dry-ip", 1, action="dry_run")])
        results = self.send(3, source="127.0.0.2")
        for r in results:
            [m] = self.assertDelivered(r)
            self.assertEqual(m.header("X-Zetian-RateLimit"), [])
        wait_until(lambda: "dry_run" in milter.log_text(), 10,
                   what="a milter log line containing dry_run", diagnostics=self.diagnostics)

    def test_recipient_stage_rule_counts_recipients_not_messages(self):
        self.start_milter([rule("rcpt-global", 3, key="global", stage="rcpt")])
        rcpts = [f"user{i}@example.net" for i in range(5)]
        with self.session(source="127.0.0.2") as s:
            result = s.send(rcpts=rcpts)
        self.assertReply(result.mail, 250, what="MAIL FROM")
        for rcpt, reply in result.rcpts[:3]:
            self.assertReply(reply, 250, what=f"RCPT TO:<{rcpt}> within the limit")
        for rcpt, reply in result.rcpts[3:]:
            self.assertReply(reply, 451, "4.7.1", contains="rcpt-global",
                             what=f"RCPT TO:<{rcpt}> over the limit")
        [m] = self.assertDelivered(result)
        got = sorted(a.split()[0].strip("<>") for a in m.rcpt_args)
        self.assertEqual(got, sorted(rcpts[:3]), "only the accepted recipients reach the sink")

    def test_rcpt_key_gives_each_recipient_its_own_budget(self):
        self.start_milter([rule("per-rcpt", 1, key="rcpt", stage="rcpt")])
        with self.session(source="127.0.0.2") as s:
            first = s.send(rcpts=["a@example.net", "b@example.net"])
            second = s.send(rcpts=["a@example.net", "c@example.net"])
        self.assertEqual([rep.code for _, rep in first.rcpts], [250, 250], str(first))
        self.assertReply(second.rcpts[0][1], 451, "4.7.1", what="second RCPT TO:<a@example.net>")
        self.assertReply(second.rcpts[1][1], 250, what="first RCPT TO:<c@example.net>")
        self.assertAccepted(second)


if __name__ == "__main__":
    unittest.main()
