"""SIGTERM while 20 milter sessions are mid-dialogue: the milter exits 0 within a
bound, and nothing touches the engine after it is freed (the CI runs this under
ASan too, where a session callback racing zetian_engine_close() is a
heap-use-after-free report and a non-zero exit).

The sessions speak the milter protocol directly (harness.MilterClient): each of 20
threads negotiates, passes the connect stage, then keeps MAIL/RCPT/abort transactions
pipelined (a writer thread sends bursts of PIPELINE while the session thread reads the
replies). libmilter's worker runs the next command without looking at its stop flag
as long as one is already buffered, so callbacks are still running inside the engine
when smfi_main() returns and main() closes the engine: the window the engine's close
must handle. (Answering each command before sending the next, the workers notice the
stop within a millisecond and the window is too small to hit.)"""

import contextlib
import threading
import time
import unittest

from harness import Milter, MilterClient, make_workdir, rule, wait_until

SESSIONS = 20
PIPELINE = 100
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
        started = [False] * SESSIONS
        all_open = threading.Barrier(SESSIONS)
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
                    all_open.abort()
                    return
                # Pipelines begin once every session is open: libmilter's pool keeps a
                # worker on a session while it has input buffered, and a session still
                # negotiating could wait for a worker a long time.
                all_open.wait(20)
                burst = (c.packet(b"M", f"<s{i}@example.org>".encode() + b"\0")
                         + c.packet(b"R", f"<r{i}@example.net>".encode() + b"\0")
                         + c.packet(b"A")) * PIPELINE

                def write():
                    with contextlib.suppress(OSError):
                        while not stop.is_set():
                            c.send_raw(burst)
                writer = threading.Thread(target=write, daemon=True)
                writer.start()
                started[i] = True
                replies = 0
                while not stop.is_set():
                    c.reply()  # MAIL and RCPT answer, abort does not
                    replies += 1
                    steps[i] = replies // 2
            except threading.BrokenBarrierError:
                with lock:
                    errors.append(f"session {i}: the other sessions did not open")
            except (OSError, ConnectionError):
                all_open.abort()  # no effect once every session is open
                # The milter went away mid-dialogue: expected once it stops.

        threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        self.addCleanup(stop.set)
        # Every session connected with its pipeline full, and callbacks running. (Not
        # every session is served meanwhile: libmilter's pool keeps a worker on a
        # session as long as it has input buffered, so with pipelines a few sessions
        # wait for a worker; they are mid-dialogue all the same.)
        wait_until(lambda: (all(started) and sum(steps) >= 10 * PIPELINE) or errors, 20,
                   what="every session mid-dialogue",
                   diagnostics=lambda: f"started: {started}\ntransactions per session: {steps}\n"
                                       + m.log_tail())
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
            at = log.find(marker)
            if at >= 0:
                report = "\n".join(line for line in log[at:].splitlines() if "level=debug" not in line)
                self.fail(f"{marker} in the milter's log after the stop:\n{report[:6000]}")
        print(f"\n[engine_close] stopped in {elapsed:.2f}s with {SESSIONS} sessions, "
              f"{sum(steps)} transactions done", flush=True)


if __name__ == "__main__":
    unittest.main()
