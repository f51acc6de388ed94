"""A throwaway Sendmail (Debian's sendmail-bin, never installed) for the integration tests.

sendmail-bin conflicts with postfix as an installed package, and the test machine runs
Postfix. So the packages are fetched with `apt-get download` and unpacked with
`dpkg -x` into a cache folder kept between runs and shared by every build that runs
the tests (Release and ASan in CI): /var/tmp/zetian-test-cache/sendmail/<version>,
or under $ZETIAN_TEST_CACHE. Their shared libraries (libwrap0, liblockfile1, ...) and
m4 are ordinary packages that do not conflict with Postfix (the Makefile's PACKAGES).

Each Sendmail gets a .cf built with m4 from an .mc of its own (INPUT_MAIL_FILTER for
zetian), its own queue folder, hosts file and service switch, and runs in the
foreground (-bD) as root on a free loopback port, relaying everything to an
smtp-sink. Nothing under /etc is touched: Sendmail insists on a fully qualified host
name before it reads its config (it sleeps 60 s otherwise), so it runs in its own UTS
and mount namespaces (`unshare`) where the host name is mx.sendmail.test and
/etc/hosts is a bind mount of its own hosts file, seen by no other process.

Sendmail logs only to syslog; what it did is in its traffic log (-X: every SMTP line
in and out, the relay to the sink included), which diagnostics() shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from typing import Callable, Optional

from harness import (HarnessError, ManagedProcess, MessageResult, Milter, PostfixTestCase,
                     Reply, SmtpSession, SmtpSink, free_port, make_workdir, send_messages,
                     skip_unless_postfix_as_root, tail, tcp_listening, wait_until)

SENDMAIL_PACKAGES = ("sendmail-bin", "sendmail-cf", "sendmail-base")
CACHE_ROOT = os.environ.get("ZETIAN_TEST_CACHE", "/var/tmp/zetian-test-cache")
M4 = shutil.which("m4", path="/usr/bin:/bin") or ""
UNSHARE = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") or ""
APT_GET = shutil.which("apt-get", path="/usr/bin:/bin") or ""
SASLPASSWD2 = shutil.which("saslpasswd2", path="/usr/sbin:/usr/bin") or ""
# Where Debian's Cyrus SASL loads its plugins, and one of the folders it reads
# <app>.conf from (/etc/sasl2 comes first, but does not exist unless sasl2-bin's
# saslauthd is set up, and must not be created by a test).
SASL_PLUGIN_DIR = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}/sasl2"
# The name Sendmail runs under in its UTS namespace: dotted, in its own hosts file.
HOSTNAME = "mx.sendmail.test"


def _progress(text: str) -> None:
    print(f"[sendmail] {text}", file=sys.stderr, flush=True)


def _run(argv: list[str], cwd: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def _candidate_version() -> str:
    """The version apt would download now ("" when the package lists do not know it)."""
    cp = _run(["apt-cache", "policy", SENDMAIL_PACKAGES[0]], timeout=60)
    m = re.search(r"Candidate:\s*(\S+)", cp.stdout)
    return m.group(1) if m and m.group(1) != "(none)" else ""


def _apt_update() -> None:
    _progress("apt-get update (the package lists do not have sendmail-bin, or are stale)")
    cp = _run([APT_GET, "update"], timeout=600)
    if cp.returncode != 0:
        raise HarnessError(f"apt-get update failed ({cp.returncode}):\n{cp.stdout}{cp.stderr}")


def _download_and_unpack(version: str, folder: str) -> str:
    """Fetch the packages of `version` into `folder`/debs and unpack them into
    `folder`/root; raises HarnessError naming the failing step."""
    shutil.rmtree(folder, ignore_errors=True)
    debs = os.path.join(folder, "debs")
    os.makedirs(debs)
    wanted = [f"{p}={version}" for p in SENDMAIL_PACKAGES]
    _progress(f"downloading {' '.join(wanted)} into {debs} (once; cached for later runs)")
    cp = _run([APT_GET, "download", "-o", "APT::Sandbox::User=root", *wanted], cwd=debs)
    if cp.returncode != 0:
        raise HarnessError(f"apt-get download failed ({cp.returncode}):\n{cp.stdout}{cp.stderr}")
    root = os.path.join(folder, "root")
    unpacking = root + ".tmp"
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        _progress(f"unpacking {os.path.basename(deb)}")
        cp = _run(["dpkg", "-x", deb, unpacking], timeout=120)
        if cp.returncode != 0:
            raise HarnessError(f"dpkg -x {deb} failed:\n{cp.stderr}")
    os.rename(unpacking, root)
    with open(os.path.join(folder, "complete"), "w") as f:
        f.write(version + "\n")
    _progress(f"Sendmail {version} ready in {root}")
    return root


def sendmail_root() -> str:
    """The folder Debian's Sendmail packages are unpacked in (dpkg -x): the version apt
    offers now, downloaded and unpacked on first use and reused by later runs. When the
    package lists are empty or stale, one apt-get update; when that version cannot be
    fetched at all (no network), the newest version already in the cache, with a note."""
    if not APT_GET:
        raise HarnessError("apt-get not found: the Sendmail test fetches Debian's sendmail-bin")
    base = os.path.join(CACHE_ROOT, "sendmail")
    os.makedirs(base, exist_ok=True)
    # Two test processes (Release and ASan) may start at once: one downloads, the other
    # waits for it and finds the folder complete.
    with open(os.path.join(base, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        updated = False
        failure = ""
        for _ in range(2):
            version = _candidate_version()
            if version:
                folder = os.path.join(base, version.replace(":", "_"))
                if os.path.exists(os.path.join(folder, "complete")):
                    return os.path.join(folder, "root")
                try:
                    return _download_and_unpack(version, folder)
                except HarnessError as e:
                    failure = str(e)
                    shutil.rmtree(folder, ignore_errors=True)
            else:
                failure = "apt knows no sendmail-bin"
            if updated:
                break
            try:
                _apt_update()
            except HarnessError as e:
                failure += "\n" + str(e)
                break
            updated = True
        cached = sorted(glob.glob(os.path.join(base, "*", "complete")), key=os.path.getmtime)
        if cached:
            root = os.path.join(os.path.dirname(cached[-1]), "root")
            _progress(f"using the cached {root}: the current version could not be fetched ({failure})")
            return root
        raise HarnessError(f"Debian's sendmail-bin could not be fetched: {failure}")


def sendmail_binary(root: str) -> str:
    """The unpacked sendmail binary, after checking that its shared libraries are
    installed (they are ordinary Debian packages; only sendmail-bin itself conflicts
    with Postfix)."""
    binary = os.path.join(root, "usr/libexec/sendmail/sendmail")
    if not os.access(binary, os.X_OK):
        raise HarnessError(f"{binary} is missing from the unpacked sendmail-bin")
    cp = _run(["ldd", binary], timeout=30)
    missing = re.findall(r"^\s*(\S+) => not found", cp.stdout, re.MULTILINE)
    if missing:
        raise HarnessError(f"Sendmail's shared libraries are not installed: {', '.join(missing)} "
                           "(apt-get install libwrap0 liblockfile1 libdb5.3 libldap-2.5-0 libnsl2 "
                           "libsasl2-2; the Makefile's PACKAGES lists them)")
    return binary


def sendmail_mc(workdir: str, port: int, relay_port: int, milter_spec: str, sasl: bool = False) -> str:
    """The .mc of a test Sendmail: SMTP on 127.0.0.1:`port` only, every recipient relayed
    to [127.0.0.1]:`relay_port`, its files in `workdir`, no DNS, and zetian as an
    INPUT_MAIL_FILTER with the spec `milter_spec` (S=..., F=..., T=...). With `sasl`,
    AUTH PLAIN and LOGIN are offered (without TLS: loopback only)."""
    auth = ("define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl\nTRUST_AUTH_MECH(`PLAIN LOGIN')dnl\n"
            if sasl else "define(`confAUTH_MECHANISMS', `')dnl\n")
    return f"""\
divert(-1)
# A throwaway Sendmail for zetian's integration tests (tests/integration/sendmail_harness.py).
divert(0)dnl
OSTYPE(`linux')dnl
define(`confCF_VERSION', `zetian-test')dnl
define(`confDOMAIN_NAME', `{HOSTNAME}')dnl
define(`QUEUE_DIR', `{workdir}/mqueue')dnl
define(`MSP_QUEUE_DIR', `{workdir}/clientmqueue')dnl
define(`STATUS_FILE', `{workdir}/sendmail.st')dnl
define(`confPID_FILE', `{workdir}/sendmail.pid')dnl
dnl No aliases: every recipient is relayed, nothing is delivered here.
define(`ALIAS_FILE', `')dnl
define(`confHELP_FILE', `')dnl
dnl Host names from our hosts file only, never DNS (the tests use example.org/.net).
define(`confSERVICE_SWITCH_FILE', `{workdir}/service.switch')dnl
define(`confHOSTS_FILE', `{workdir}/hosts')dnl
define(`confDONT_PROBE_INTERFACES', `true')dnl
define(`confTO_IDENT', `0s')dnl
dnl Deliver while the client waits, so the sink has the message when DATA is answered,
dnl and never fall back to queueing because a loaded CI machine has a high load average.
define(`confDELIVERY_MODE', `interactive')dnl
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
define(`confDELAY_LA', `0')dnl
{auth}dnl The temp folder is under /tmp (mode 1777), which Sendmail otherwise calls unsafe.
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe')dnl
dnl "relay:" first: [127.0.0.1] alone is one of this host's names ($=w), which
dnl Sendmail would strip and then deliver to the recipient's domain itself.
define(`SMART_HOST', `relay:[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {relay_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
dnl Every test client is on loopback (127.0.0.2, 127.0.0.3, ...): they may relay.
RELAY_DOMAIN(`127')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
INPUT_MAIL_FILTER(`zetian', `{milter_spec}')dnl
MAILER(`smtp')dnl
"""


class Sendmail:
    """A Sendmail daemon (-bD, in the foreground) on 127.0.0.1:`port`, relaying to
    127.0.0.1:`relay_port`, with zetian registered as `milter_spec`."""

    def __init__(self, workdir: str, cleanup: Callable[[Callable], None], relay_port: int,
                 milter_spec: str, sasl_user: str | None = None, sasl_password: str | None = None):
        if not M4:
            raise HarnessError("m4 is not installed (apt-get install m4): it builds sendmail.cf")
        if not UNSHARE:
            raise HarnessError("unshare (util-linux) is not installed")
        self.root = sendmail_root()
        self.binary = sendmail_binary(self.root)
        self.cf_dir = os.path.join(self.root, "usr/share/sendmail/cf")
        self.dir = os.path.join(workdir, "sendmail")
        self.queue_dir = os.path.join(self.dir, "mqueue")
        for d in (self.dir, self.queue_dir, os.path.join(self.dir, "clientmqueue")):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.queue_dir, 0o700)
        self.port = free_port()
        self.mc_path = os.path.join(self.dir, "sendmail.mc")
        self.cf_path = os.path.join(self.dir, "sendmail.cf")
        self.hosts_path = os.path.join(self.dir, "hosts")
        self.log_path = os.path.join(self.dir, "sendmail.out")
        self.traffic_path = os.path.join(self.dir, "traffic.log")
        with open(self.hosts_path, "w") as f:
            f.write(f"127.0.0.1 {HOSTNAME} localhost\n")
        with open(os.path.join(self.dir, "service.switch"), "w") as f:
            f.write("hosts files\naliases files\n")
        # (source, mount point) pairs bind-mounted in Sendmail's mount namespace.
        self.binds = [(self.hosts_path, "/etc/hosts")]
        if sasl_user is not None:
            self._set_up_sasl(sasl_user, sasl_password or "")
        mc = sendmail_mc(self.dir, self.port, relay_port, milter_spec, sasl=sasl_user is not None)
        with open(self.mc_path, "w") as f:
            f.write(mc)
        with open(self.cf_path, "w") as f:
            f.write(self.build_cf(mc))
        self.process = ManagedProcess(self._in_namespace(["-bD", "-X", self.traffic_path]),
                                      self.log_path, name="sendmail")
        cleanup(self.stop)
        wait_until(lambda: tcp_listening("127.0.0.1", self.port) or not self.process.running(), 20,
                   what=f"Sendmail on port {self.port}", diagnostics=self.log_tail)
        if not self.process.running():
            raise HarnessError("Sendmail exited at start\n" + self.log_tail())

    def build_cf(self, mc: str) -> str:
        """The .cf that m4 makes of `mc` with the unpacked sendmail-cf's m4 files, as
        `make -C /etc/mail` does of sendmail.mc."""
        cp = subprocess.run([M4, f"-D_CF_DIR_={self.cf_dir}/", os.path.join(self.cf_dir, "m4/cf.m4"), "-"],
                            input=mc, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0 or not cp.stdout or "ERROR" in cp.stderr:
            raise HarnessError(f"m4 could not build a .cf ({cp.returncode}):\n{cp.stderr}")
        return cp.stdout

    def _set_up_sasl(self, user: str, password: str) -> None:
        """A Cyrus SASL set-up of this Sendmail's own: a sasldb with `user` (user@realm),
        and a plugin folder (PLAIN, LOGIN, sasldb) with a Sendmail.conf that points at
        it, bind-mounted on the system's plugin folder for Sendmail alone."""
        if not SASLPASSWD2:
            raise HarnessError("saslpasswd2 is not installed (apt-get install sasl2-bin): "
                               "it writes the Sendmail test's sasldb")
        sasl_dir = os.path.join(self.dir, "sasl2")
        os.makedirs(sasl_dir, exist_ok=True)
        for plugin in ("libplain.so", "liblogin.so", "libsasldb.so"):
            shutil.copy(os.path.realpath(os.path.join(SASL_PLUGIN_DIR, plugin)),
                        os.path.join(sasl_dir, plugin))
        sasldb = os.path.join(self.dir, "sasldb2")
        name, _, realm = user.partition("@")
        cp = subprocess.run([SASLPASSWD2, "-p", "-c", "-f", sasldb, "-a", "Sendmail"]
                            + (["-u", realm] if realm else []) + [name],
                            input=password, capture_output=True, text=True, timeout=30)
        if cp.returncode != 0:
            raise HarnessError(f"saslpasswd2 failed ({cp.returncode}): {cp.stderr}")
        os.chmod(sasldb, 0o600)
        with open(os.path.join(sasl_dir, "Sendmail.conf"), "w") as f:
            f.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {sasldb}\n"
                    "mech_list: PLAIN LOGIN\n")
        self.binds.append((sasl_dir, SASL_PLUGIN_DIR))

    def _in_namespace(self, args: list[str]) -> list[str]:
        """argv running this Sendmail with `args` in its own UTS and mount namespaces
        (host name mx.sendmail.test, our files bind-mounted on /etc/hosts and, with
        SASL, the plugin folder). `unshare` and `sh` exec, so the pid is Sendmail's."""
        script = ('hostname "$1" && shift && while [ "$1" != -- ]; do '
                  'mount --bind "$1" "$2" || exit 1; shift 2; done && shift && exec "$@"')
        binds = [path for pair in self.binds for path in pair]
        return [UNSHARE, "--uts", "--mount", "sh", "-c", script, "sh", HOSTNAME, *binds, "--",
                self.binary, "-C", self.cf_path, *args]

    def stop(self) -> None:
        if self.process.running():
            self.process.stop()

    def tool(self, *args: str) -> subprocess.CompletedProcess:
        """Run this Sendmail's binary in a one-off mode (-bp, ...)."""
        return _run(self._in_namespace(list(args)), timeout=60)

    def quarantined(self) -> dict[str, str]:
        """Queue id -> reason of every quarantined message in the queue: Sendmail keeps
        them as hf<id> (instead of qf<id>) with the reason on a `q` line."""
        out = {}
        for path in glob.glob(os.path.join(self.queue_dir, "hf*")):
            with contextlib.suppress(OSError), open(path, "r", errors="replace") as f:
                reason = next((line[1:].rstrip("\n") for line in f if line.startswith("q")), "")
            out[os.path.basename(path)[2:]] = reason
        return out

    def queued(self) -> list[str]:
        """Queue ids of messages waiting for delivery (qf<id>)."""
        return [os.path.basename(p)[2:] for p in glob.glob(os.path.join(self.queue_dir, "qf*"))]

    def log_tail(self, lines: int = 40) -> str:
        return (f"--- Sendmail output {self.log_path} (last {lines} lines) ---\n" + tail(self.log_path, lines)
                + f"\n--- Sendmail traffic {self.traffic_path} (last {lines} lines) ---\n"
                + tail(self.traffic_path, lines))


class SendmailTestCase(PostfixTestCase):
    """PostfixTestCase's tests and assertions with a Sendmail in front instead of Postfix:
    one Sendmail + smtp-sink per test class (`sendmail`, `sink`), zetian registered on
    the class's milter port with `milter_flags` (F=) and `milter_timeouts` (T=), and a
    fresh Milter per test (start_milter). With `sasl`, Sendmail offers AUTH PLAIN/LOGIN
    for `sasl_user` / `sasl_password` (self.send(..., auth=(user, password)))."""

    milter_flags = "T"
    milter_timeouts = "S:10s;R:10s;E:1m"

    sendmail: Sendmail

    @classmethod
    def setUpClass(cls):
        super(PostfixTestCase, cls).setUpClass()
        skip_unless_postfix_as_root()
        cls.workdir = make_workdir(cls.__name__.lower(), cls.addClassCleanup)
        cls.sink = SmtpSink(cls.workdir, cls.addClassCleanup)
        cls.milter_port = free_port()
        spec = f"S=inet:{cls.milter_port}@127.0.0.1, F={cls.milter_flags}, T={cls.milter_timeouts}"
        cls.sendmail = Sendmail(cls.workdir, cls.addClassCleanup, cls.sink.port, spec,
                                sasl_user=cls.sasl_user if cls.sasl else None,
                                sasl_password=cls.sasl_password)

    def setUp(self):
        super(PostfixTestCase, self).setUp()
        self._milters = []
        if not self.sendmail.process.running():
            self.fail("the class's Sendmail is not running\n" + self.sendmail.log_tail())

    def start_milter(self, rules=(), **kwargs) -> Milter:
        """PostfixTestCase.start_milter, and before the milter is stopped at the end of the
        test, a wait until it has seen every SMTP session end (see wait_sessions_closed)."""
        milter = super().start_milter(rules, **kwargs)
        self.addCleanup(self.wait_sessions_closed, milter)  # cleanups run last in, first out
        return milter

    def wait_sessions_closed(self, milter: Milter) -> None:
        """Wait until `milter` has no SMTP session open (zetian_sessions_active = 0).
        Sendmail sends the milter its QUIT only after it answered the client's QUIT, so
        a stop right after a session may find it still open; the milter reads no more
        commands once it is told to stop, and its shutdown then waits 5 s for that
        session before it exits."""
        if milter.running():
            wait_until(lambda: milter.metric("zetian_sessions_active") == 0, 10,
                       what="the milter to see every SMTP session end", diagnostics=self.diagnostics)

    def diagnostics(self, lines: int = 30) -> str:
        return "\n".join([self.sendmail.log_tail(lines)] + [m.log_tail(lines) for m in self._milters])

    def send(self, count: int = 1, source: str = "127.0.0.2", **kwargs) -> list[MessageResult]:
        return send_messages(self.sendmail.port, count, source=source, **kwargs)

    def session(self, source: str = "127.0.0.2") -> SmtpSession:
        s = SmtpSession(self.sendmail.port, source=source)
        self.addCleanup(s.close)
        return s

    @staticmethod
    def queue_id(reply: Reply) -> str:
        """The queue id in Sendmail's answer to DATA (`2.0.0 <id> Message accepted`)."""
        m = re.match(r"2\.0\.0 (\S+) Message accepted", reply.text)
        if not m:
            raise AssertionError(f"no Sendmail queue id in {reply}")
        return m.group(1)
