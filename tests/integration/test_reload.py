"""Policy reload without restart: SIGUSR1 and `zetianctl reload` apply a new policy to
an SMTP session that stays open across the reload; a config with errors is refused and
the running policy keeps working.

A renamed rule starts with a fresh bucket, so these tests rename the rule on reload:
what a kept bucket does when only its limit changes is the limiter's business (unit
tests), not what is checked here.
"""

import unittest

from harness import PostfixTestCase, rule, to_toml

BROKEN_RULE = """
[[ratelimit.rule]]
name = "broken"
key = "client_ip"
limit = "lots"
period = "1h"
"""


class ReloadWithOpenSession(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"

    def test_sigusr1_reload_lowers_the_limit_inside_an_open_session(self):
        milter = self.start_milter([rule("per-ip", 10)])
        with self.session(source="127.0.0.2") as s:
            for _ in range(2):
                self.assertAccepted(s.send(), "message before the reload")
            milter.write_config([rule("per-ip-strict", 1)])
            self.assertTrue(milter.reload_with_signal(), "SIGUSR1 reload was refused\n"
                            + milter.log_tail())
            self.assertAccepted(s.send(), "first message under the new policy")
            over = s.send()
            self.assertReply(over.mail, 451, "4.7.1", contains="per-ip-strict",
                             what="MAIL FROM over the new, lower limit")
            self.assertReply(s.noop(), 250, what="NOOP: the session survived the reload")

    def test_zetianctl_reload_raises_the_limit_inside_an_open_session(self):
        milter = self.start_milter([rule("per-ip", 2)])
        with self.session(source="127.0.0.2") as s:
            self.assertAccepted(s.send())
            self.assertAccepted(s.send())
            self.assertReply(s.send().mail, 451, "4.7.1", contains="per-ip",
                             what="MAIL FROM over the old limit")
            milter.write_config([rule("per-ip-relaxed", 5)])
            cp = milter.ctl("reload")
            self.assertEqual(cp.returncode, 0, f"zetianctl reload: {cp.stdout}{cp.stderr}")
            for i in range(5):
                self.assertAccepted(s.send(), f"message {i + 1} under the relaxed policy")
            self.assertReply(s.send().mail, 451, "4.7.1", contains="per-ip-relaxed",
                             what="MAIL FROM over the relaxed limit")

    def test_reload_with_errors_is_refused_by_zetianctl_and_the_old_policy_keeps_working(self):
        milter = self.start_milter([rule("per-ip", 2)])
        good = to_toml(milter.config_doc([rule("per-ip", 2)], [], False))
        milter.write_config(text=good + BROKEN_RULE)
        cp = milter.ctl("reload")
        self.assertNotEqual(cp.returncode, 0, "zetianctl reload must fail on a broken config")
        self.assertIn("zetian.toml:", cp.stdout + cp.stderr, "the error names the file and line")
        self.assertTrue(milter.running())
        status, _, _ = milter.http("GET", "/ready")
        self.assertEqual(status, 200, "still ready after a refused reload")
        first, second, third = self.send(3, source="127.0.0.2")
        self.assertAccepted(first)
        self.assertAccepted(second)
        self.assertReply(third.mail, 451, "4.7.1", contains="per-ip",
                         what="the old limit still applies")

    def test_sigusr1_reload_with_errors_is_refused_and_the_old_policy_keeps_working(self):
        milter = self.start_milter([rule("per-ip", 1)])
        with self.session(source="127.0.0.2") as s:
            self.assertAccepted(s.send())
            good = to_toml(milter.config_doc([rule("per-ip-relaxed", 100)], [], False))
            milter.write_config(text=good + BROKEN_RULE)
            self.assertFalse(milter.reload_with_signal(), "a broken config must be refused")
            self.assertReply(s.send().mail, 451, "4.7.1", contains="per-ip",
                             what="the old limit still applies after the refused reload")
            self.assertReply(s.noop(), 250)


if __name__ == "__main__":
    unittest.main()
