"""Host side of the sandbox: servers started once and reused, a bounded pool, and the result of one run.

:class:`Sandbox` keeps up to ``workers`` sandbox servers (one per concurrent program). Each server is an
interpreter started once inside its isolation (bubblewrap, ``unshare`` or none) that forks a fresh, limited
process tree per program, so a program costs two forks instead of an interpreter start. A server whose run ended
in a way the harness cannot vouch for (no reply in time, cleanup failure, protocol error) is killed and replaced
before the next run.

Verdicts (``suite.py``): :class:`ExecutionResult` carries one :class:`TestOutcome` per test as reported by the trusted test
runner, never the program's exit status or output. ``status == "error"`` means the judge could not decide (the
sandbox did not start, a server died): callers must not read it as a wrong answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from . import _codec as codec
from .config import SandboxConfig
from .isolation import SandboxUnavailable, host_is_root, installed_modes, plan_launch, warn_if_weak
from .suite import ExecutionResult, TestOutcome, TestSuite

_HOST_SLACK_SECONDS = 8.0
#: Longer programs are failed without running (no model writes this much code; the wire cap is 16 MiB).
MAX_CODE_CHARS = 2_000_000  # server grace (1 s) + its cleanup budget (5 s) + scheduling noise


class _ServerFailure(Exception):
    pass


def _descendants(root: int) -> set[int]:
    """Pids of every live descendant of ``root`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
                parents.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(int(entry))
            except (OSError, ValueError):
                continue
    found: set[int] = set()
    frontier = [root]
    while frontier:
        kids = [k for pid in frontier for k in parents.get(pid, ()) if k not in found]
        found.update(kids)
        frontier = kids
    return found


class _Server:
    """One running sandbox server and its channel."""

    def __init__(self, mode: str, config: SandboxConfig, workdir_base: str | None):
        self.mode, self.config = mode, config
        #: Without namespaces or a uid of its own, a program can kill its supervisor and this server: their
        #: death is then charged to the program (a failed run), not to the judge, or killing them would pay.
        self.program_can_kill_harness = mode == "none" and not host_is_root()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        tests_r, self.tests_w = os.pipe()  # the tests travel apart: the server itself never reads them
        self.sock = parent
        self.next_id = 0
        plan = plan_launch(mode, config, child.fileno(), tests_r, workdir_base)
        self.interpreter = plan.interpreter
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(plan.argv, pass_fds=(child.fileno(), tests_r), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True,
                                         **plan.popen_kwargs)
        finally:
            child.close()
            os.close(tests_r)
        self.fd = parent.fileno()
        codec.set_nonblocking(self.fd)
        codec.set_nonblocking(self.tests_w)
        try:
            hello = codec.recv_msg(self.fd, time.monotonic() + config.startup_timeout_seconds)
        except (EOFError, TimeoutError, codec.ProtocolError, OSError) as exc:
            tail = self.stderr_tail()
            self.kill()
            raise _ServerFailure(f"server did not start ({type(exc).__name__}): {tail}") from None
        if hello[0] != "hello" or hello[1].get("problem"):
            self.kill()
            raise _ServerFailure(f"server cannot isolate programs: {hello[1].get('problem')}")
        self.info = hello[1]

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-limit:].decode("utf-8", "replace").strip() or "<no stderr>"
        except (OSError, ValueError):
            return "<stderr unavailable>"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the server and everything under it (the sandbox's init first: its PID namespace dies with it)."""
        for _ in range(20):
            victims = _descendants(self.proc.pid) | ({self.proc.pid} if self.proc.poll() is None else set())
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.poll()
            time.sleep(0.005)
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.sock.close()
        self.stderr.close()
        try:
            os.close(self.tests_w)
        except OSError:
            pass

    def run(self, code: str, suite: TestSuite | None, config: SandboxConfig) -> ExecutionResult:
        start = time.monotonic()
        deadline = start + config.timeout_seconds + _HOST_SLACK_SECONDS
        self.next_id += 1
        req = {"id": self.next_id, "kind": "tests" if suite else "script", "code": code,
               "timeout": config.timeout_seconds, "memory_mb": config.memory_mb,
               "cpu_seconds": config.effective_cpu_seconds,
               "max_processes": config.max_processes, "max_output_bytes": config.max_output_bytes,
               "max_file_size_mb": config.max_file_size_mb,
               "max_open_files": config.max_open_files, "max_value_bytes": config.max_value_bytes}
        n_tests = suite.n_tests if suite else 0
        outcomes: dict[int, TestOutcome] = {}
        end: dict | None = None
        try:
            codec.send_msg(self.fd, req, deadline)
            if suite:
                codec.send_msg(self.tests_w, {"id": self.next_id, **suite.to_wire()}, deadline)
            while True:
                msg = codec.recv_msg(self.fd, deadline, codec.MAX_MESSAGE_BYTES + 4 * config.max_output_bytes)
                kind = msg[0]
                if kind == "test" and 0 <= msg[1] < n_tests:
                    outcomes[msg[1]] = TestOutcome(bool(msg[2]), str(msg[3]))
                elif kind == "end":
                    end = msg[1]
                elif kind == "done":
                    done = msg[1]
                    break
                else:
                    raise codec.ProtocolError(f"unexpected message {msg!r:.200}")
        except (EOFError, TimeoutError, codec.ProtocolError, OSError, IndexError, TypeError) as exc:
            raise _ServerFailure(f"sandbox server failed during the run ({type(exc).__name__}: {exc}); "
                                 f"server stderr: {self.stderr_tail()}") from None
        elapsed = time.monotonic() - start
        if not done.get("clean", False):
            raise _ServerFailure("could not kill every process the program started")
        if end is None and not done.get("killed"):
            raise _ServerFailure(f"the test supervisor failed (status {done.get('supervisor_status')}): "
                                 f"{self.stderr_tail()}")
        end = end or {}
        timed_out = bool(done.get("killed") or end.get("timed_out"))
        tests = tuple(outcomes.get(i, TestOutcome(False, "timeout" if timed_out else "not run"))
                      for i in range(n_tests))
        return ExecutionResult(
            status="timeout" if timed_out else "completed", tests=tests, exit_code=end.get("exit_code"),
            stdout=end.get("stdout", ""), stderr=end.get("stderr", ""),
            output_truncated=bool(end.get("output_truncated")), elapsed_seconds=elapsed, mode=self.mode)


def _resolve_mode(config: SandboxConfig, workdir_base: str) -> tuple[str, _Server]:
    """Start a first server in the requested mode (or the strongest that works, for ``auto``)."""
    modes = [config.mode] if config.mode != "auto" else installed_modes()
    reasons: dict[str, str] = {}
    for mode in modes:
        try:
            server = _Server(mode, config, workdir_base)
        except (_ServerFailure, SandboxUnavailable, OSError) as exc:
            reasons[mode] = str(exc)
            continue
        if config.mode == "auto":
            warn_if_weak(mode, reasons)
        return mode, server
    raise SandboxUnavailable(f"no sandbox mode could start ({'; '.join(f'{m}: {r}' for m, r in reasons.items())})")


class Sandbox:
    """A pool of sandbox servers: ``run`` judges one program, ``run_many`` a batch in parallel.

    Thread-safe. Servers start lazily; call :meth:`close` (or use as a context manager) to stop them.
    """

    def __init__(self, config: SandboxConfig | None = None, workers: int | None = None):
        self.config = config or SandboxConfig()
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r}; expected an int >= 1")
        self.workers = workers
        self.mode: str | None = None
        self._idle: list[_Server] = []
        self._started = 0
        self._cond = threading.Condition()
        self._mode_lock = threading.Lock()
        self._all: list[_Server] = []
        self._workdir_base = tempfile.mkdtemp(prefix="posttrain-sandbox-")
        os.chmod(self._workdir_base, 0o711)
        self._finalizer = weakref.finalize(self, _shutdown, self._all, self._workdir_base)

    def _checkout(self) -> _Server:
        with self._cond:
            while True:
                while self._idle and not self._idle[-1].alive():
                    dead = self._idle.pop()
                    dead.kill()
                    self._all.remove(dead)
                    self._started -= 1
                if self._idle:
                    return self._idle.pop()
                if self._started < self.workers:
                    self._started += 1
                    break
                self._cond.wait()
        try:
            with self._mode_lock:
                if self.mode is None:
                    self.mode, server = _resolve_mode(self.config, self._workdir_base)
                else:
                    server = _Server(self.mode, self.config, self._workdir_base)
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.append(server)
        return server

    def _checkin(self, server: _Server) -> None:
        with self._cond:
            self._idle.append(server)
            self._cond.notify()

    def _retire(self, server: _Server) -> None:
        server.kill()
        with self._cond:
            if server in self._all:
                self._all.remove(server)
            self._started -= 1
            self._cond.notify()

    def run(self, code: str, tests: TestSuite | None = None, config: SandboxConfig | None = None) -> ExecutionResult:
        """Judge ``code`` against ``tests`` (or just run it when ``tests`` is None). Never raises for the
        program's behaviour; returns ``status="error"`` when the judge itself fails.

        ``config`` may override the limits per call; the fields fixed when a server starts (mode, interpreter,
        uids, ``tmp_size_mb``, ``preimport``) are taken from the pool's config.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        config = config or self.config
        if len(code) > MAX_CODE_CHARS:  # the program's fault (a runaway completion), judged without running it
            n = tests.n_tests if tests else 0
            reason = f"program of {len(code)} characters is over the limit of {MAX_CODE_CHARS}"
            return ExecutionResult(status="completed", tests=(TestOutcome(False, reason),) * n, mode=self.mode or "")
        start = time.monotonic()
        try:
            server = self._checkout()
        except (SandboxUnavailable, _ServerFailure, OSError) as exc:
            return ExecutionResult(status="error", error=f"sandbox could not start: {exc}",
                                   elapsed_seconds=time.monotonic() - start, mode=self.mode or "")
        start = time.monotonic()
        try:
            result = server.run(code, tests, config)
        except _ServerFailure as exc:
            self._retire(server)
            elapsed = time.monotonic() - start
            if server.program_can_kill_harness:
                reason = f"the harness died while the program ran (mode 'none' cannot protect it): {exc}"[:500]
                return ExecutionResult(status="completed", tests=(TestOutcome(False, reason),) * (
                    tests.n_tests if tests else 0), elapsed_seconds=elapsed, mode=self.mode or "")
            return ExecutionResult(status="error", error=str(exc), elapsed_seconds=elapsed, mode=self.mode or "")
        except BaseException:
            self._retire(server)
            raise
        self._checkin(server)
        return result

    def run_many(self, programs: Sequence[tuple[str, TestSuite | None]]) -> list[ExecutionResult]:
        """Judge ``(code, tests)`` pairs on up to ``workers`` servers at once; results in input order."""
        if len(programs) <= 1:
            return [self.run(code, tests) for code, tests in programs]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(programs))) as pool:
            return list(pool.map(lambda p: self.run(*p), programs))

    def close(self) -> None:
        """Stop every server (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(servers: list[_Server], workdir_base: str) -> None:
    for server in list(servers):
        server.kill()
    servers.clear()
    shutil.rmtree(workdir_base, ignore_errors=True)
