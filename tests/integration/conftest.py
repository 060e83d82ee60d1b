"""Shared fixtures for keepmq's integration tests.

Every test gets its own broker process on a free port (the `broker` fixture,
or `broker_factory` for custom configuration), started from the binary in
$KEEPMQ_BIN (default: build/keepmq). At teardown the broker is stopped with
SIGTERM and the test fails if it did not exit cleanly with status 0, or if
AddressSanitizer/UBSan/LeakSanitizer reported anything in its log - so the
same suite run against the sanitizer build checks memory safety too.
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEEPMQ_BIN = os.environ.get("KEEPMQ_BIN", os.path.join(ROOT, "build", "keepmq"))
if not os.path.isabs(KEEPMQ_BIN):
    KEEPMQ_BIN = os.path.join(ROOT, KEEPMQ_BIN)

SANITIZER_PATTERNS = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer"
)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Broker:
    """A keepmq process. `conf` is extra configuration text; the listener,
    node name and log level are filled in unless the text sets them."""

    def __init__(self, tmpdir, conf="", workers=None, args=(), expect_start=True):
        self.tmpdir = tmpdir
        self.port = free_port()
        self.host = "127.0.0.1"
        lines = []
        if "listener.tcp." not in conf:
            lines.append(f"listener.tcp.default = 127.0.0.1:{self.port}")
        if "log.level" not in conf:
            lines.append("log.level = info")
        if workers is not None and "node.io_workers" not in conf:
            lines.append(f"node.io_workers = {workers}")
        lines.append(conf)
        self.conf_path = os.path.join(tmpdir, f"keepmq-{self.port}.conf")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(tmpdir, f"keepmq-{self.port}.log")
        self.args = list(args)
        self.proc = None
        self.returncode = None
        self.expect_start = expect_start

    def start(self):
        self.logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(
            [KEEPMQ_BIN, "-c", self.conf_path] + self.args,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmpdir,
        )
        if self.expect_start and not wait_port(self.port, proc=self.proc):
            self.stop()
            raise RuntimeError(f"keepmq did not start; log:\n{self.log()}")
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "timeout"
                self.logf.close()
                return self.returncode
        self.returncode = self.proc.returncode
        self.logf.close()
        return self.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.returncode = self.proc.returncode
        self.logf.close()

    def sanitizer_report(self):
        text = self.log()
        m = SANITIZER_PATTERNS.search(text)
        return text[max(0, m.start() - 200):m.start() + 4000] if m else None


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix="keepmq-test-") as d:
        yield d


@pytest.fixture
def broker_factory(tmpdir_path):
    """broker_factory(conf="", workers=None, args=(), start=True) -> Broker.

    Brokers it made are stopped at teardown, and the test fails unless each
    exited with status 0 after SIGTERM and without sanitizer reports (a test
    that stops a broker itself, e.g. with kill9, is not held to that)."""
    made = []

    def make(conf="", workers=None, args=(), start=True, expect_start=True):
        b = Broker(tmpdir_path, conf, workers, args, expect_start)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    problems = []
    for b in made:
        if b.proc is None:
            continue
        stopped_by_test = b.returncode is not None
        rc = b.stop()
        report = b.sanitizer_report()
        if report:
            problems.append(f"sanitizer report in broker log:\n{report}")
        if not stopped_by_test and rc != 0:
            problems.append(f"broker exit status {rc} after SIGTERM; log tail:\n{b.log()[-3000:]}")
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def broker(broker_factory):
    """A broker with default configuration (two I/O workers)."""
    return broker_factory(workers=2)


# ---------------------------------------------------------------- persistence

from persist_adapters import ADAPTERS  # noqa: E402


def _adapter(request, tmpdir_path):
    """The adapter of request.param. Its close() (if any: the Redis adapter
    stops its redis-server there) runs when the test's temporary directory is
    removed, i.e. after broker_factory has stopped the test's brokers, which
    may still write to the store while they shut down, whatever the order of
    the test's arguments."""
    store = ADAPTERS[request.param](tmpdir_path)
    close = getattr(store, "close", None)
    if close is not None:
        try:
            # tmpdir_path is torn down after every fixture that uses it
            # (broker_factory included); its finalizers run last-in first-out,
            # so this one runs before the directory is removed
            request._get_active_fixturedef("tmpdir_path").addfinalizer(close)
        except AttributeError:  # another pytest: at the fixture's own teardown
            request.addfinalizer(close)
    return store


@pytest.fixture(params=sorted(ADAPTERS))
def store(request, tmpdir_path):
    """A store adapter (persist_adapters.py): the shared persistence suite runs
    once per backend that has one."""
    return _adapter(request, tmpdir_path)


@pytest.fixture(params=sorted(n for n, a in ADAPTERS.items() if a.family == "sql"))
def sql_store(request, tmpdir_path):
    """A store adapter of the SQL family only: for tests about raw SQL itself
    (its compile-time checks, several statements per action, NULLs, query())."""
    return _adapter(request, tmpdir_path)


@pytest.fixture(params=sorted(n for n, a in ADAPTERS.items() if hasattr(a, "small_filesystem")))
def file_store(request, tmpdir_path):
    """A store adapter whose store is a file on a local filesystem that the test
    can shrink and break (small_filesystem / filesystem_outage): SQLite."""
    return _adapter(request, tmpdir_path)
