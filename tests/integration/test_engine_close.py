"""SIGTERM while 20 milter sessions are mid-dialogue: the milter exits 0 within a
bound, and nothing touches the engine after it is freed (the CI runs this under
ASan too, where a session callback racing zetian_engine_close() is a
heap-use-after-free report and a non-zero exit).

The sessions speak the milter protocol directly (harness.MilterClient): each of 20
threads negotiates, passes the connect stage, then loops MAIL/RCPT/abort as fast as
the milter answers, so callbacks are running inside the engine when the signal comes."""

import signal
import threading
import time
import unittest

from harness import Milter, MilterClient, make_workdir, rule, wait_until

SESSIONS = 20
STOP_BOUND_S = 15.0


class StopWithSessionsMidDialogue(unittest.TestCase):

    def test_sigterm_with_20_sessions_mid_dialogue_exits_0_without_a_crash(self):
        workdir = make_workdir("engclose", self.addCleanup)
        m = Milter(workdir, self.addCleanup,
                   rules=[rule("per-sender", 1_000_000, key="sender", stage="mail"),
                          rule("per-rcpt", 1_000_000, key="rcpt", stage="rcpt")])
        m.start()

        stop = threading.Event()
        steps = [0] * SESSIONS
        errors: list[str] = []
        clients: list[MilterClient] = []
        lock = threading.Lock()

        def session(i: int):
            try:
                c = MilterClient(m.socket_spec, timeout=10)
            except OSError as e:
                with lock:
                    errors.append(f"session {i}: connect: {e}")
                return
            with lock:
                clients.append(c)
            try:
                if c.negotiate() != b"O" or c.connect_stage(f"192.0.2.{i + 1}") != b"c":
                    with lock:
                        errors.append(f"session {i}: bad start")
                    return
                while not stop.is_set():
                    c.mail(f"<s{i}@example.org>")
                    c.rcpt(f"<r{i}@example.net>")
                    c.abort()
                    steps[i] += 1
            except (OSError, ConnectionError):
                pass  # the milter went away mid-dialogue: expected once it stops

        threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        self.addCleanup(stop.set)
        wait_until(lambda: all(n >= 3 for n in steps) or errors, 20,
                   what="every session mid-dialogue", diagnostics=m.log_tail)
        self.assertEqual(errors, [])

        started = time.monotonic()
        status = m.stop(timeout=STOP_BOUND_S)  # raises unless exit status 0 in time
        elapsed = time.monotonic() - started
        stop.set()
        for c in clients:
            c.close()
        for t in threads:
            t.join(5)
        self.assertEqual(status, 0)
        self.assertLess(elapsed, STOP_BOUND_S)
        log = m.log_text()
        for marker in ("AddressSanitizer", "runtime error:", "ThreadSanitizer", "terminate called"):
            self.assertNotIn(marker, log, m.log_tail(80))
        print(f"\n[engine_close] stopped in {elapsed:.2f}s with {SESSIONS} sessions, "
              f"{sum(steps)} transactions done", flush=True)


if __name__ == "__main__":
    unittest.main()
