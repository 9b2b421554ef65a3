"""What the Python integration tests (tests/AREA/*_test.py) share: a free port,
the switch to Debian's python3 when a client library is missing, and a server
process started, awaited, stopped and checked the same way everywhere.

meson runs each test as `python3 tests/AREA/NAME_test.py ARGS...`
(tests/meson.build), in the build dir, the sanitized one alike; each test puts
tests/support (this file's directory, found from its own __file__) first on
sys.path before `import testlib`, so it works from any working dir. Standard
library only: some tests run under whichever python3 is first on PATH.
"""
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SYSTEM_PYTHON = "/usr/bin/python3"


def require_modules(*names):
    """Imports `names`. Where one is missing and this is not Debian's python3
    (a version manager's python3 first on PATH may lack python3-redis and
    python3-pymemcache), the script is run again under /usr/bin/python3 with
    the same arguments; otherwise the ImportError goes to the caller."""
    try:
        for name in names:
            importlib.import_module(name)
    except ImportError:
        if sys.executable != SYSTEM_PYTHON and os.path.exists(SYSTEM_PYTHON):
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
        raise


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what, timeout):
    """Polls predicate() until it returns a true value, which it returns;
    AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting for " + what)
        time.sleep(0.05)


class Threads:
    """Helper threads whose exceptions fail the test: an assertion raised in
    a plain threading.Thread only prints a traceback, and the test passes.
    start() runs target(*args) in a thread per args; join() waits for all
    and raises the first exception one of them raised."""

    def __init__(self, target, args_list):
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(target, args))
                        for args in args_list]

    def _run(self, target, args):
        try:
            target(*args)
        except BaseException as e:  # handed to join(), in the test's thread
            self.errors.append(e)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def run_threads(target, args_list):
    """Threads(target, args_list) started and joined."""
    Threads(target, args_list).start().join()


class Server:
    """A server process of a test. Its stderr (and stdout with merge_stdout,
    else stdout is dropped) goes to an anonymous temporary file, read with
    log_text(): a file, not a pipe, so a chatty server never blocks on a full
    pipe, and nothing is left behind. It is ready once it accepts connections
    on every port in `ports` (self.port is the first), or, with `ready`, once
    its log holds that text ready_count times: no probe connection then, for
    tests that count the server's connections. `timeout` bounds the start-up
    (start_timeout where given) and the stop; it is generous, not a timing
    assertion. A server that exits or does not get ready in time is killed and
    the constructor raises RuntimeError with its log."""

    def __init__(self, argv, ports=(), ready=None, ready_count=1, timeout=10.0, start_timeout=None,
                 merge_stdout=False, preexec_fn=None):
        self.what = os.path.basename(argv[0])
        self.timeout = timeout
        self.port = ports[0] if ports else None
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log if merge_stdout else subprocess.DEVNULL,
                                     stderr=self.log, preexec_fn=preexec_fn)
        start_timeout = timeout if start_timeout is None else start_timeout
        deadline = time.monotonic() + start_timeout
        try:
            for port in ports:
                while not self._accepts(port):
                    self._check_starting(deadline, start_timeout, "accept connections on port %d" % port)
                    time.sleep(0.05)
            if ready is not None:
                while self.log_text().count(ready) < ready_count:
                    self._check_starting(deadline, start_timeout, "log %r %d time(s)" % (ready, ready_count))
                    time.sleep(0.05)
        except RuntimeError as e:
            self.kill()
            raise RuntimeError("%s; its log:\n%s" % (e, self.log_text())) from None
        except BaseException:
            self.kill()  # never leave a server behind
            raise

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def _check_starting(self, deadline, timeout, what):
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited with %s before it could %s" % (self.what, self.proc.returncode, what))
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not %s within %g s" % (self.what, what, timeout))

    def log_text(self):
        """Everything the server logged so far. pread: the file offset is
        shared with the server, which still appends at it."""
        if self.log.closed:
            return self.final_log
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _ended(self):
        """The process has been waited for: its log is kept as text and the
        file closed (an open one would make unittest warn)."""
        if not self.log.closed:
            self.final_log = self.log_text()
            self.log.close()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=None):
        """SIGTERM unless it already exited; returns the exit status (negative:
        the signal that ended it). One that does not exit within timeout
        (default: the server's) is killed, and AssertionError says so."""
        timeout = self.timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("%s did not exit within %g s of SIGTERM; its log:\n%s"
                                     % (self.what, timeout, self.log_text()[-4000:])) from None
        self._ended()
        return self.proc.returncode

    def stop_ok(self, timeout=None):
        """stop(), then AssertionError unless the status is 0: a crash, or in
        the sanitized build (scripts/test --sanitize) a leak or undefined
        behaviour, gives another; its report is then in the log shown. Also
        when the server had exited before the stop. Returns the log."""
        status = self.stop(timeout)
        log = self.log_text()
        if status != 0:
            raise AssertionError("%s exited with %s; its log:\n%s" % (self.what, status, log[-4000:]))
        return log

    def kill(self):
        """SIGKILL unless it already exited (a crash, or clean-up after a failure)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._ended()
