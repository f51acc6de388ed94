"""The policy delegation host (issue 11) end to end: SMTP client -> real Postfix 3.7
asking zetian with check_policy_service (no milter) -> smtp-sink.

The same limits as the milter tests (test_ratelimit.py, test_actions.py, test_sasl.py),
behind the hook most sites use: check_policy_service in smtpd_recipient_restrictions
only. Postfix then asks at RCPT, so a refusal is the RCPT's reply
(`451 4.7.1 <rcpt>: Recipient address rejected: text`) and MAIL FROM is accepted; the
node runs the connect, helo and mail stage rules before the first RCPT of each
transaction, once, so a `stage = "mail"` rule counts messages, not recipients.

One Postfix and one node serve the class; each test reloads the node with its own
policy, names its rules uniquely (a renamed rule has a fresh bucket) and sends from
client addresses of its own. Extra smtpd listeners of the same Postfix hook the policy
service differently:
  eod     also in smtpd_end_of_data_restrictions (requests at END-OF-MESSAGE too);
  double  also in smtpd_relay_restrictions (every RCPT asked twice, identically);
  solo    at a second policy port, where a test starts a node with no milter listener;
  unix    at a Unix socket, where a test starts a node as an unprivileged user.

Then two nodes in one cluster, each behind its own Postfix, share a cluster-wide limit.
"""

import grp
import json
import os
import pwd
import re
import subprocess
import unittest
import uuid

from cluster_harness import ClusterTestCase, Node
from harness import (RELAY_AFTER_POLICY, Milter, MessageResult, PolicyPostfixTestCase, SmtpSession,
                     free_port, listening_tcp_ports, make_workdir, metric_samples, policy_service, rule,
                     wait_until)
from postfix_trio import PostfixTrio
from test_maintenance import non_loopback_ipv4

POSTCAT = "/usr/sbin/postcat"
TWO_RCPTS = ("first@example.net", "second@example.net")
# Postfix's words before a policy server's text on a refused RCPT.
RCPT_REJECTED = "Recipient address rejected"
# The node on a Unix socket runs as this user and group (as in test_unix_socket.py).
UNIX_USER = "nobody"
UNIX_GROUP = "postfix"


class PolicyAnswersThroughPostfix(PolicyPostfixTestCase):
    sasl = True

    @classmethod
    def configure_postfix(cls):
        cls.solo_port = free_port()
        # The Unix socket's folder: the node (as `nobody`) creates the socket there,
        # smtpd (as `postfix`) traverses it through the group.
        cls.unix_dir = make_workdir("polunix", cls.addClassCleanup)
        os.chown(cls.unix_dir, pwd.getpwnam(UNIX_USER).pw_uid, grp.getgrnam(UNIX_GROUP).gr_gid)
        os.chmod(cls.unix_dir, 0o750)
        cls.unix_socket = os.path.join(cls.unix_dir, "policy.sock")
        hook = policy_service(cls.policy_port)
        # A "remote" client for the maintenance test may relay too.
        cls.remote = non_loopback_ipv4()
        if cls.remote:
            cls.main_cf["mynetworks"] = f"127.0.0.0/8, {cls.remote}/32"
        cls.main_cf.update({
            # Referenced by the listeners' -o overrides (master.cf values hold no spaces).
            "zt_policy_eod": hook,
            "zt_policy_relay": f"{hook}, permit_mynetworks, permit_sasl_authenticated, reject",
            "zt_policy_solo": f"{policy_service(cls.solo_port)}, {RELAY_AFTER_POLICY}",
            "zt_policy_unix": f"check_policy_service unix:{cls.unix_socket}, {RELAY_AFTER_POLICY}",
        })
        cls.listeners = {
            "eod": {"smtpd_end_of_data_restrictions": "$zt_policy_eod"},
            "double": {"smtpd_relay_restrictions": "$zt_policy_relay"},
            "solo": {"smtpd_recipient_restrictions": "$zt_policy_solo"},
            "unix": {"smtpd_recipient_restrictions": "$zt_policy_unix"},
        }

    @property
    def credentials(self):
        return (self.sasl_user, self.sasl_password)

    # -- helpers

    def assertRcptRefused(self, result: MessageResult, code: int, enhanced: str, rule_name: str,
                          what: str = "message"):
        """MAIL FROM accepted, every RCPT refused with `code` `enhanced` and the rule's
        name in Postfix's "Recipient address rejected" reply, DATA never sent. Postfix's
        own answer when the policy service fails (451 4.3.5) names no rule."""
        self.assertReply(result.mail, 250, what=f"MAIL FROM of the {what} (the policy answers at RCPT)")
        self.assertTrue(result.rcpts, f"{what}: no RCPT was sent: {result}")
        for rcpt, reply in result.rcpts:
            self.assertReply(reply, code, enhanced, contains=rule_name, what=f"RCPT TO:<{rcpt}> of the {what}")
            self.assertIn(RCPT_REJECTED, reply.text, f"RCPT TO:<{rcpt}> of the {what}")
        self.assertIsNone(result.data, f"{what}: DATA sent after every RCPT was refused")

    def assertAllRcptsAccepted(self, result: MessageResult, what: str = "message"):
        self.assertAccepted(result, what)
        codes = [reply.code for _, reply in result.rcpts]
        if codes != [250] * len(codes):
            self.fail(f"{what}: every RCPT should be accepted: {result}\n{self.diagnostics()}")


    # -- counting

    def test_limit_of_5_per_client_ip_passes_5_messages_of_2_recipients_then_451_at_rcpt(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 5, key="client_ip", stage="mail")])
        results = self.send(6, source="127.0.0.10", rcpts=TWO_RCPTS)
        # Ten recipients in five messages: a mail-stage rule charges each message once,
        # however many RCPTs Postfix asks about.
        for i, r in enumerate(results[:5], 1):
            self.assertAllRcptsAccepted(r, f"message {i} of 5")
        self.assertRcptRefused(results[5], 451, "4.7.1", name, "message 6")
        for r in results[:5]:
            [m] = self.assertDelivered(r)
            self.assertEqual(sorted(a.split()[0].strip("<>") for a in m.rcpt_args), sorted(TWO_RCPTS))
        # Another client address has its own budget.
        [other] = self.send(1, source="127.0.0.11", rcpts=TWO_RCPTS)
        self.assertAllRcptsAccepted(other, "message from 127.0.0.11")

    def test_limit_counts_messages_across_smtp_sessions(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 2)])
        results = self.send(3, source="127.0.0.12", one_session=False)
        self.assertAllRcptsAccepted(results[0], "message 1 (own session)")
        self.assertAllRcptsAccepted(results[1], "message 2 (own session)")
        self.assertRcptRefused(results[2], 451, "4.7.1", name, "message 3 (own session)")

    def test_recipient_stage_rule_counts_recipients_not_messages(self):
        name = self.unique("rcpt-global")
        self.apply_policy([rule(name, 3, key="global", stage="rcpt")])
        rcpts = [f"user{i}@example.net" for i in range(5)]
        with self.session(source="127.0.0.13") as s:
            result = s.send(rcpts=rcpts)
        self.assertReply(result.mail, 250, what="MAIL FROM")
        for rcpt, reply in result.rcpts[:3]:
            self.assertReply(reply, 250, what=f"RCPT TO:<{rcpt}> within the limit")
        for rcpt, reply in result.rcpts[3:]:
            self.assertReply(reply, 451, "4.7.1", contains=name, what=f"RCPT TO:<{rcpt}> over the limit")
        [m] = self.assertDelivered(result)
        got = sorted(a.split()[0].strip("<>") for a in m.rcpt_args)
        self.assertEqual(got, sorted(rcpts[:3]), "only the accepted recipients reach the sink")

    def test_rcpt_key_gives_each_recipient_its_own_budget(self):
        name = self.unique("per-rcpt")
        self.apply_policy([rule(name, 1, key="rcpt", stage="rcpt")])
        with self.session(source="127.0.0.14") as s:
            first = s.send(rcpts=["a@example.net", "b@example.net"])
            second = s.send(rcpts=["a@example.net", "c@example.net"])
        self.assertEqual([rep.code for _, rep in first.rcpts], [250, 250], str(first))
        self.assertReply(second.rcpts[0][1], 451, "4.7.1", contains=name, what="second RCPT TO:<a@example.net>")
        self.assertReply(second.rcpts[1][1], 250, what="first RCPT TO:<c@example.net>")
        self.assertAccepted(second)

    def test_connect_stage_rule_counts_smtp_connections_not_messages(self):
        name = self.unique("conn-ip")
        self.apply_policy([rule(name, 2, key="client_ip", stage="connect")])
        # Postfix asks only at RCPT: the connect rule is caught up once per SMTP
        # connection, so three messages in one session cost one.
        for r in self.send(3, source="127.0.0.34"):
            self.assertAllRcptsAccepted(r, "message in the first session")
        [second] = self.send(1, source="127.0.0.34")
        self.assertAllRcptsAccepted(second, "message in the second session")
        # The third connection is over the limit: every message of it is refused.
        third = self.send(2, source="127.0.0.34", rcpts=TWO_RCPTS)
        for r in third:
            self.assertRcptRefused(r, 451, "4.7.1", name, "message in the third session")
        [other] = self.send(1, source="127.0.0.35")
        self.assertAllRcptsAccepted(other, "message from another client")

    def test_data_stage_rule_answers_at_end_of_data_when_hooked_there(self):
        name = self.unique("data-sender")
        self.apply_policy([rule(name, 1, key="sender", stage="data")])
        sender = f"{name}@example.org"
        with self.session(source="127.0.0.36", listener="eod") as s:
            first = s.send(sender=sender)
            second = s.send(sender=sender)
            # Postfix 3.7 keeps the transaction open after a refusal at END-OF-MESSAGE
            # (the next MAIL would be "nested"); a client resets, as smtplib's own
            # sendmail() does.
            s.smtp.rset()
            other = s.send(sender=f"other-{sender}")
        self.assertDelivered(first)
        self.assertAllRcptsAccepted(other, "message from another sender")
        self.assertReply(second.mail, 250, what="MAIL FROM (the rule is at DATA)")
        self.assertReply(second.rcpts[0][1], 250, what="RCPT TO (the rule is at DATA)")
        self.assertReply(second.data, 451, "4.7.1", contains=name,
                         what="end of DATA of the second message from the sender")
        self.assertDelivered(other)
        self.assertEqual(self.sink.find(second.token), [], "the refused message reached the sink")

    # -- actions

    def test_reject_action_answers_550_5_7_1_at_rcpt(self):
        name = self.unique("per-ip-reject")
        self.apply_policy([rule(name, 1, action="reject")])
        first, second = self.send(2, source="127.0.0.15", rcpts=TWO_RCPTS)
        self.assertAllRcptsAccepted(first)
        self.assertRcptRefused(second, 550, "5.7.1", name, "message over a reject limit")

    def test_tag_action_prepends_one_header_to_the_message_over_the_limit_only(self):
        name = self.unique("tag-ip")
        self.apply_policy([rule(name, 1, period="1h", action="tag")])
        # Two recipients each: the header comes once per message, not once per RCPT.
        first, second = self.send(2, source="127.0.0.16", rcpts=TWO_RCPTS)
        self.assertAllRcptsAccepted(first)
        self.assertAllRcptsAccepted(second)
        [m1] = self.assertDelivered(first)
        [m2] = self.assertDelivered(second)
        self.assertEqual(m1.header("X-Zetian-RateLimit"), [], "within the limit: no header")
        tags = m2.header("X-Zetian-RateLimit")
        self.assertEqual(len(tags), 1, f"one header on the message over the limit: {tags}\n{self.diagnostics()}")
        self.assertIn(f"rule={name}", tags[0])
        self.assertIn("limit=1/1h", tags[0])

    def check_quarantine(self, listener: str, source: str):
        """A quarantine rule of 1 per client address, two messages through `listener`:
        the first is delivered, the second accepted and put in the hold queue."""
        name = self.unique("q-ip")
        self.apply_policy([rule(name, 1, action="quarantine")])
        sender = f"{name}@example.org"
        first, second = self.send(2, source=source, listener=listener, sender=sender)
        self.assertDelivered(first)
        # Over the limit: accepted (quarantine is not a refusal), then held.
        self.assertAllRcptsAccepted(second, "message over a quarantine limit")
        qid = self.queue_id(second.data)
        self.addCleanup(self.delete_from_queue, qid)
        held = wait_until(lambda: [e for e in self.queue_entries() if e.get("queue_id") == qid],
                          15, what=f"message {qid} in the queue", diagnostics=self.diagnostics)
        self.assertEqual(held[0].get("queue_name"), "hold", f"message {qid} should be on hold: {held}")
        wait_until(lambda: re.search(rf": hold: [A-Z-]+ from .*from=<{re.escape(sender)}>",
                                     self.postfix.log_text()),
                   10, what=f"Postfix's hold line for the message from {sender} in mail.log",
                   diagnostics=self.diagnostics)
        # A later message from another client is delivered; the held one never is.
        [later] = self.send(1, source=source.rsplit(".", 1)[0] + ".99", listener=listener)
        self.assertDelivered(later)
        self.assertEqual(self.sink.find(second.token), [], "the held message reached the sink")
        self.assertEqual([e.get("queue_name") for e in self.queue_entries() if e.get("queue_id") == qid],
                         ["hold"])

    def test_quarantine_puts_the_message_over_the_limit_in_the_hold_queue(self):
        self.check_quarantine("main", "127.0.0.17")

    def test_quarantine_with_end_of_data_hooked_too(self):
        self.check_quarantine("eod", "127.0.0.18")

    def test_message_both_tagged_and_quarantined_is_held_with_its_header(self):
        """One request gets one action: with two recipients, the first RCPT is answered
        HOLD and the second PREPEND."""
        tag, hold = self.unique("tag-ip"), self.unique("q-ip")
        self.apply_policy([rule(tag, 1, action="tag"), rule(hold, 1, action="quarantine")])
        first, second = self.send(2, source="127.0.0.37", rcpts=TWO_RCPTS)
        self.assertDelivered(first)
        self.assertAllRcptsAccepted(second, "message over both limits")
        qid = self.queue_id(second.data)
        self.addCleanup(self.delete_from_queue, qid)
        held = wait_until(lambda: [e for e in self.queue_entries() if e.get("queue_id") == qid],
                          15, what=f"message {qid} in the queue", diagnostics=self.diagnostics)
        self.assertEqual(held[0].get("queue_name"), "hold", f"message {qid} should be on hold: {held}")
        cp = subprocess.run([POSTCAT, "-c", self.postfix.config_dir, "-h", "-q", qid],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        headers = [line for line in cp.stdout.splitlines() if line.startswith("X-Zetian-RateLimit:")]
        self.assertEqual(len(headers), 1, f"headers of the held message:\n{cp.stdout}\n{self.diagnostics()}")
        self.assertIn(f"rule={tag}", headers[0])

    def test_dry_run_delivers_everything_and_logs_each_message_it_would_have_refused(self):
        name = self.unique("dry-ip")
        self.apply_policy([rule(name, 1, action="dry_run")])
        results = self.send(3, source="127.0.0.19", rcpts=TWO_RCPTS)
        for r in results:
            self.assertAllRcptsAccepted(r)
            [m] = self.assertDelivered(r)
            self.assertEqual(m.header("X-Zetian-RateLimit"), [])

        def would_have() -> list[str]:
            return [line for line in self.node_log().splitlines()
                    if f"rule={name} " in line and "dry_run" in line]
        # Messages 2 and 3 are over the limit: one line each, not one per recipient.
        wait_until(lambda: len(would_have()) >= 2, 10, what=f"two dry_run lines for {name}",
                   diagnostics=self.diagnostics)
        self.assertEqual(len(would_have()), 2, "\n".join(would_have()))

    def test_exempt_network_is_never_limited(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 1)], exempt=["127.0.0.20/32"])
        for r in self.send(4, source="127.0.0.20", rcpts=TWO_RCPTS):
            self.assertAllRcptsAccepted(r, "message from the exempt 127.0.0.20")
        first, second = self.send(2, source="127.0.0.21")
        self.assertAllRcptsAccepted(first, "first message from 127.0.0.21")
        self.assertRcptRefused(second, 451, "4.7.1", name, "second message from non-exempt 127.0.0.21")

    # -- several restriction lists asking

    def test_every_rcpt_asked_twice_is_charged_once(self):
        """The `double` listener asks at every RCPT from smtpd_relay_restrictions and
        again from smtpd_recipient_restrictions, with the same attributes."""
        per_rcpt, per_ip = self.unique("per-rcpt"), self.unique("per-ip")
        self.apply_policy([rule(per_rcpt, 1, key="rcpt", stage="rcpt"), rule(per_ip, 2)])
        repeats_before = self.node.metric("zetian_policy_repeats_total") or 0
        with self.session(source="127.0.0.22", listener="double") as s:
            first = s.send(rcpts=["a@example.net", "b@example.net"])
            second = s.send(rcpts=["a@example.net", "c@example.net"])
            third = s.send(rcpts=["d@example.net"])
        self.assertAllRcptsAccepted(first, "first message (a, b)")
        self.assertReply(second.rcpts[0][1], 451, "4.7.1", contains=per_rcpt, what="RCPT TO:<a> again")
        self.assertReply(second.rcpts[1][1], 250, what="RCPT TO:<c>")
        self.assertAccepted(second, "second message (c accepted)")
        self.assertRcptRefused(third, 451, "4.7.1", per_ip, "third message from the client")
        self.assertDelivered(first)
        self.assertDelivered(second)
        # a, b and c, accepted by the relay restrictions, were asked again.
        repeats = (self.node.metric("zetian_policy_repeats_total") or 0) - repeats_before
        self.assertGreaterEqual(repeats, 3, "answers repeated without a charge")

    def test_end_of_data_requests_do_not_charge_the_message_again(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 2)])
        results = self.send(3, source="127.0.0.23", listener="eod", rcpts=TWO_RCPTS)
        self.assertAllRcptsAccepted(results[0], "message 1")
        self.assertAllRcptsAccepted(results[1], "message 2")
        self.assertRcptRefused(results[2], 451, "4.7.1", name, "message 3")
        self.assertDelivered(results[0])
        self.assertDelivered(results[1])

    # -- SASL

    def test_authenticated_session_is_not_limited_when_exempt_authenticated_is_true(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 1)], exempt_authenticated=True)
        for r in self.send(4, source="127.0.0.24", auth=self.credentials):
            self.assertAllRcptsAccepted(r, "authenticated message")
        # The same policy still limits an unauthenticated client.
        first, second = self.send(2, source="127.0.0.25")
        self.assertAllRcptsAccepted(first)
        self.assertRcptRefused(second, 451, "4.7.1", name, "unauthenticated message over the limit")

    def test_authenticated_session_is_limited_when_exempt_authenticated_is_false(self):
        name = self.unique("per-ip")
        self.apply_policy([rule(name, 1)], exempt_authenticated=False)
        first, second = self.send(2, source="127.0.0.26", auth=self.credentials)
        self.assertAllRcptsAccepted(first)
        self.assertRcptRefused(second, 451, "4.7.1", name, "authenticated message over the limit")

    def test_sasl_user_key_limits_the_user_across_client_addresses(self):
        name = self.unique("per-user")
        self.apply_policy([rule(name, 1, key="sasl_user")])
        [first] = self.send(1, source="127.0.0.27", auth=self.credentials)
        self.assertAllRcptsAccepted(first)
        # Same user from another address: the budget follows the user, not the IP.
        [second] = self.send(1, source="127.0.0.28", auth=self.credentials)
        self.assertRcptRefused(second, 451, "4.7.1", name, "message of the same user from another address")
        # A client that does not log in has no sasl_user key: the rule does not apply.
        for r in self.send(2, source="127.0.0.28"):
            self.assertAllRcptsAccepted(r, "unauthenticated message")

    # -- a node that serves policy requests only

    def start_solo_node(self, rules: list[dict], **policy: object) -> Milter:
        """A node of this test's own on the `solo` listener's policy port, without a
        milter listener; `policy`: more [policy] keys."""
        node = Milter(self.workdir, self.addCleanup, rules=rules, socket_spec="",
                      extra={"policy": {"socket": f"inet:{self.solo_port}@127.0.0.1", **policy}},
                      name=f"solo-{uuid.uuid4().hex[:4]}")
        self._milters.append(node)
        return node.start()

    def test_node_without_milter_listener_serves_policy_requests(self):
        name = self.unique("solo-ip")
        node = self.start_solo_node([rule(name, 2)])
        # Its only TCP listener is the policy socket (the health socket is a Unix one).
        self.assertEqual(listening_tcp_ports(node.pid), {self.solo_port}, node.log_tail())
        results = self.send(3, source="127.0.0.29", listener="solo")
        self.assertAllRcptsAccepted(results[0], "message 1")
        self.assertAllRcptsAccepted(results[1], "message 2")
        self.assertRcptRefused(results[2], 451, "4.7.1", name, "message 3")
        self.assertDelivered(results[0])

        status, body, _ = node.http("GET", "/health")
        self.assertEqual(status, 200, body)
        host = json.loads(body).get("policy_host")
        self.assertIsInstance(host, dict, f"/health has no policy_host: {body}")
        self.assertIn(str(self.solo_port), str(host.get("socket")), body)
        for key in ("connections", "max_connections", "sessions", "requests_total", "malformed_total"):
            self.assertIsInstance(host.get(key), int, f"policy_host.{key}: {body}")
        # One RCPT per message, each asked once.
        self.assertGreaterEqual(host["requests_total"], 3, body)
        self.assertEqual(host["malformed_total"], 0, body)
        status, text, _ = node.http("GET", "/metrics")
        self.assertEqual(status, 200)
        samples = metric_samples(text, "zetian_policy_requests_total")
        rcpt = {labels.get("action"): value for labels, value in samples if labels.get("state") == "RCPT"}
        self.assertGreaterEqual(sum(rcpt.values()), 3, f"RCPT requests in /metrics: {samples}")
        self.assertTrue(any(value >= 1 for action, value in rcpt.items() if action != "dunno"),
                        f"the refused RCPT is not counted under an action of its own: {samples}")
        self.assertEqual(listening_tcp_ports(node.pid), {self.solo_port}, node.log_tail())

    def test_tempfail_action_defer_if_permit_answers_with_postfix_defer_code(self):
        name = self.unique("defer-ip")
        self.start_solo_node([rule(name, 1)], tempfail_action="defer_if_permit")
        first, second = self.send(2, source="127.0.0.30", listener="solo")
        self.assertAllRcptsAccepted(first)
        # DEFER_IF_PERMIT: Postfix defers only because a later restriction
        # (permit_mynetworks) permits, with its access_map_defer_code (450) and 4.7.1.
        self.assertRcptRefused(second, 450, "4.7.1", name, "message over the limit")

    def test_unix_socket_of_a_node_running_as_an_unprivileged_user(self):
        """`[policy] socket = "unix:PATH"` with the milter socket's permissions: the node
        drops to nobody:postfix with umask 0007, so smtpd reaches it through the group."""
        name = self.unique("unix-ip")
        node = Milter(self.workdir, self.addCleanup, rules=[rule(name, 1)], socket_spec="",
                      extra={"policy": {"socket": f"unix:{self.unix_socket}"},
                             "milter": {"user": UNIX_USER, "group": UNIX_GROUP, "umask": "0007"}},
                      name=f"unix-{uuid.uuid4().hex[:4]}")
        user = pwd.getpwnam(UNIX_USER)
        for d in (node.workdir, node.state_dir):  # used after the privilege drop
            os.chown(d, user.pw_uid, user.pw_gid)
        self._milters.append(node)
        node.start()
        first, second = self.send(2, source="127.0.0.33", listener="unix")
        self.assertAllRcptsAccepted(first)
        self.assertRcptRefused(second, 451, "4.7.1", name, "message over the limit")

    def test_postfix_reconnects_to_a_restarted_node_and_applies_its_default_action_meanwhile(self):
        name = self.unique("restart-ip")
        node = self.start_solo_node([rule(name, 5)])
        [before] = self.send(1, source="127.0.0.38", listener="solo")
        self.assertAllRcptsAccepted(before, "message before the stop")
        node.stop()
        # No policy server: Postfix's smtpd_policy_service_default_action (451 4.3.5).
        [down] = self.send(1, source="127.0.0.38", listener="solo")
        self.assertReply(down.rcpts[0][1], 451, "4.3.5", what="RCPT while the node is down")
        # A new node on the same port: the smtpd processes that held a connection to the
        # old one reconnect, and the limit starts afresh (the new node's own buckets).
        self.start_solo_node([rule(name, 1)])
        first, second = self.send(2, source="127.0.0.38", listener="solo")
        self.assertAllRcptsAccepted(first, "first message after the restart")
        self.assertRcptRefused(second, 451, "4.7.1", name, "second message after the restart")

    def test_maintenance_answers_remote_clients_421_and_spares_loopback(self):
        if not self.remote:
            self.skipTest("this host has no non-loopback IPv4 address to act as a remote client")
        node = self.start_solo_node([rule(self.unique("per-ip"), 100)])
        cp = node.ctl("maintenance", "on")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        # The connect stage, caught up at RCPT, answers 421: Postfix refuses the RCPT
        # with it and ends the SMTP session (so the client tries another MX).
        with self.session(source=self.remote, listener="solo") as s:
            refused = s.send()
            self.assertReply(refused.rcpts[0][1], 421, what="RCPT from a remote client in maintenance")
            self.assertIsNone(refused.data)
        wait_until(lambda: f"disconnect from unknown[{self.remote}]" in self.postfix.log_text(), 10,
                   what="Postfix to end the remote client's session", diagnostics=self.diagnostics)
        [local] = self.send(1, source="127.0.0.39", listener="solo")
        self.assertDelivered(local)
        cp = node.ctl("maintenance", "off")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        [remote] = self.send(1, source=self.remote, listener="solo")
        self.assertDelivered(remote)


class PolicyClusterBehindPostfix(PostfixTrio, ClusterTestCase):
    """Two nodes in one cluster, each the policy server of its own Postfix (and with its
    milter listener on, unused: a node may serve both protocols)."""

    IDS = ["p1", "p2"]
    LIMIT = 10

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_postfix_trio("pol-cluster", cls.IDS, policy=True)

    def setUp(self):
        super().setUp()
        self.watch_postfix()

    def start_pair(self, *rules: dict) -> list[Node]:
        for i in self.IDS:
            self.endpoint(i)
        nodes = [self.node(i, seeds=[self.IDS[0]] if i != self.IDS[0] else [],
                           extra={"ratelimit": {"rule": list(rules)},
                                  "policy": {"socket": f"inet:{port}@127.0.0.1"}})
                 for i, port in zip(self.IDS, self.policy_ports)]
        self.wait_full_view(nodes)
        return nodes

    def everything(self, nodes: list[Node]) -> str:
        return "\n".join([self.diagnostics(nodes)] + [p.log_tail(25) for p in self.postfixes])

    def send_one(self, index: int, postfix: int, source: str) -> MessageResult:
        with SmtpSession(self.postfixes[postfix].port(), source=source) as s:
            return s.send(token=f"{self.tag}-{index:02d}-{uuid.uuid4().hex[:8]}")

    def assertPassed(self, results: list[MessageResult], rule_name: str, nodes: list[Node]):
        passed = [r for r in results if r.accepted]
        self.assertEqual(len(passed), self.LIMIT, f"{len(passed)} of {len(results)} passed:\n"
                         + "\n".join(map(str, results)) + "\n" + self.everything(nodes))
        for r in results:
            if r.accepted:
                continue
            ok = (r.mail.code == 250 and r.data is None and r.rcpts
                  and all(rep.code == 451 and rep.text.startswith("4.7.1") and rule_name in rep.text
                          for _, rep in r.rcpts))
            self.assertTrue(ok, f"want RCPT refused with 451 4.7.1 naming {rule_name}, got {r}\n"
                            + self.everything(nodes))
        self.assertAtTheSink(passed, lambda: self.everything(nodes))

    def test_cluster_wide_limit_of_10_passes_exactly_10_of_30_over_both_postfix(self):
        nodes = self.start_pair(rule("pol_ip", self.LIMIT, "1h", consistency="exact"))
        results = [self.send_one(i, i % 2, "127.0.0.31") for i in range(30)]
        self.assertPassed(results, "pol_ip", nodes)
        # Nothing was refused while budget was left.
        self.assertTrue(all(r.accepted for r in results[:self.LIMIT]), "\n".join(map(str, results)))
        for node in nodes:
            self.assertTrue(node.running(), f"{node.id} exited\n{node.log_tail()}")

    def test_cluster_wide_limit_of_10_holds_for_30_sessions_at_once(self):
        nodes = self.start_pair(rule("pol_ip", self.LIMIT, "1h", consistency="exact"))
        results = self.send_all_at_once(30, "127.0.0.32")
        self.assertEqual(len(results), 30)
        self.assertPassed(results, "pol_ip", nodes)


if __name__ == "__main__":
    unittest.main()
