"""Three throwaway Postfix instances and one smtp-sink shared by a whole test class,
for the tests that put several milters behind Postfix (the cluster-wide limits and
the Redis store): Postfix i's smtpd_milters points at a milter port reserved for
milter i, and every test starts its own milters on those ports.

A class mixes PostfixTrio in before unittest.TestCase (or a subclass of it), calls
start_postfix_trio() from setUpClass and watch_postfix() from setUp, and gets:
- send_all_at_once(): a burst of sessions released together;
- assertZetianTempfail(): a MAIL FROM refused by zetian's rule, not by Postfix;
- assertAtTheSink(): every accepted message delivered, nothing else of the test.
Each takes a `diagnostics` callable for its failure message (the milters' logs)."""

import os
import threading
import uuid
from typing import Callable, Sequence

from harness import (MessageResult, Postfix, SmtpSession, SmtpSink, free_port, make_workdir,
                     policy_main_cf, skip_unless_postfix_as_root, wait_until)


class PostfixTrio:
    sink: SmtpSink
    postfixes: list[Postfix]
    milter_ports: list[int]
    policy_ports: list[int]
    tag: str

    @classmethod
    def start_postfix_trio(cls, name: str, ids: Sequence[str], policy: bool = False) -> None:
        """The sink, then one Postfix per id, each pointed at a free port for its milter
        (cls.milter_ports, in the order of `ids`), or with `policy`, at a free port for
        its node's policy server instead (cls.policy_ports; check_policy_service in
        smtpd_recipient_restrictions, no milter). Skips the class (a failure under
        CI=true) when Postfix is missing or the tests do not run as root."""
        skip_unless_postfix_as_root()
        cleanup = cls.addClassCleanup
        cls.class_dir = make_workdir(name, cleanup)
        cls.sink = SmtpSink(cls.class_dir, cleanup)
        cls.milter_ports = [free_port() for _ in ids]
        cls.policy_ports = [free_port() for _ in ids] if policy else []
        cls.postfixes = []
        for i, (node_id, port) in enumerate(zip(ids, cls.milter_ports)):
            workdir = os.path.join(cls.class_dir, f"postfix-{node_id}")
            os.makedirs(workdir)
            os.chmod(workdir, 0o755)
            if policy:
                cls.postfixes.append(Postfix(workdir, cleanup, cls.sink.port, milter="",
                                             main_cf=policy_main_cf(cls.policy_ports[i])))
                continue
            cls.postfixes.append(Postfix(workdir, cleanup, cls.sink.port, milter=f"inet:127.0.0.1:{port}",
                                         default_action="tempfail"))

    def watch_postfix(self) -> None:
        """A message tag of this test's own (self.tag), and a check at its end that no
        Postfix logged a fatal or panic error meanwhile."""
        self.tag = f"{self.id().rsplit('.', 1)[-1][5:25]}-{uuid.uuid4().hex[:6]}"
        fatal_before = [len(p.fatal_lines()) for p in self.postfixes]

        def check_postfix_logs():
            for p, before in zip(self.postfixes, fatal_before):
                new = p.fatal_lines()[before:]
                if new:
                    self.fail("Postfix logged fatal/panic errors during the test:\n"
                              + "\n".join(new))
        self.addCleanup(check_postfix_logs)

    def send_all_at_once(self, count: int, source: str) -> list[MessageResult]:
        """`count` sessions, round-robin over the Postfix trio, each opened (banner and
        EHLO) before any of them sends MAIL FROM, then all released together."""
        barrier = threading.Barrier(count, timeout=60)
        results: list[MessageResult | None] = [None] * count
        errors: list[str] = []

        def one(i: int):
            try:
                with SmtpSession(self.postfixes[i % len(self.postfixes)].port(), source=source) as s:
                    barrier.wait()
                    results[i] = s.send(token=f"{self.tag}-{i:02d}-{uuid.uuid4().hex[:8]}")
            except Exception as e:  # reported below with the others
                barrier.abort()
                errors.append(f"session {i}: {type(e).__name__}: {e}")
        threads = [threading.Thread(target=one, args=(i,), name=f"smtp-{i}") for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "an SMTP session did not finish")
        self.assertEqual(errors, [])
        self.assertEqual(sum(r is not None for r in results), count)
        return [r for r in results if r is not None]

    def assertZetianTempfail(self, result: MessageResult, text: str, diagnostics: Callable[[], str]) -> None:
        """MAIL FROM got zetian's 451 4.7.1 with `text` in it (a rule's name, or the
        closed fail_mode's reply). Postfix's own reply when a milter fails is also
        451 4.7.1, but says neither."""
        ok = (result.mail.code == 451 and result.mail.text.startswith("4.7.1")
              and text in result.mail.text and result.data is None)
        if not ok:
            self.fail(f"want 451 4.7.1 with {text!r}, got {result}\n{diagnostics()}")

    def assertAtTheSink(self, passed: list[MessageResult], diagnostics: Callable[[], str]) -> None:
        """Every accepted message reached the sink, and nothing else of this test did
        (the three queues empty first, so that nothing accepted can still be on its way)."""
        for r in passed:
            self.sink.wait_for(r.token, diagnostics=diagnostics)
        wait_until(lambda: all(p.queue_is_empty() for p in self.postfixes), 30,
                   what="the three Postfix queues to empty", diagnostics=diagnostics)
        at_sink = self.sink.find(self.tag)
        self.assertEqual(sorted(m.message["Message-ID"] for m in at_sink),
                         sorted(f"<{r.token}@zetian.test>" for r in passed))
