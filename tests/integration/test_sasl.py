"""SASL-authenticated sessions: `ratelimit.exempt_authenticated` and the `sasl_user` key.

Postfix authenticates through the harness's Dovecot-protocol server and hands the user
name to the milter as {auth_authen} with MAIL FROM (Postfix's default
milter_mail_macros), which is where zetian must read it.
"""

import unittest

from harness import PostfixTestCase, rule


class SaslAuthenticatedSessions(PostfixTestCase):
    milter_address = "auto"
    default_action = "tempfail"
    sasl = True

    @property
    def credentials(self):
        return (self.sasl_user, self.sasl_password)

    def test_authenticated_session_is_not_limited_when_exempt_authenticated_is_true(self):
        self.start_milter([rule("per-ip", 1)], exempt_authenticated=True)
        for r in self.send(4, source="127.0.0.2", auth=self.credentials):
            self.assertAccepted(r, "authenticated message")

    def test_unauthenticated_session_is_still_limited_when_exempt_authenticated_is_true(self):
        self.start_milter([rule("per-ip", 1)], exempt_authenticated=True)
        first, second = self.send(2, source="127.0.0.3")
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", contains="per-ip",
                         what="MAIL FROM of an unauthenticated session over the limit")

    def test_authenticated_session_is_limited_when_exempt_authenticated_is_false(self):
        self.start_milter([rule("per-ip", 1)], exempt_authenticated=False)
        first, second = self.send(2, source="127.0.0.2", auth=self.credentials)
        self.assertAccepted(first)
        self.assertReply(second.mail, 451, "4.7.1", contains="per-ip",
                         what="MAIL FROM of an authenticated session over the limit")

    def test_sasl_user_key_limits_the_user_across_client_addresses(self):
        self.start_milter([rule("per-user", 1, key="sasl_user")])
        [first] = self.send(1, source="127.0.0.2", auth=self.credentials)
        self.assertAccepted(first)
        # Same user from another address: the budget follows the user, not the IP.
        [second] = self.send(1, source="127.0.0.3", auth=self.credentials)
        self.assertReply(second.mail, 451, "4.7.1", contains="per-user",
                         what="MAIL FROM of the same user from another address")


if __name__ == "__main__":
    unittest.main()
