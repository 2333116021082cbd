"""Symbolic answer checks with math-verify, run in helper processes so that a deadline holds in any thread.

math-verify bounds its own work with ``signal.alarm``, which only works in the main thread; TRL therefore turns
the timeout off when a reward runs in another thread, and an answer such as ``9^{9^{9^{9}}}`` then hangs training.
Even in the main thread an alarm cannot interrupt a single long C call (CPython big-integer power holds the
interpreter until it is done), and a thread cannot be stopped at all. So the check runs in a child process:

- the child (``python -c`` bootstrap running this file, importing only the standard library and math-verify, never
  the training stack) arms its own interval timer per request and answers ``timeout`` when it fires;
- the parent waits for the answer with ``select`` until ``timeout + grace``; if nothing came back it kills the
  child and reports a timeout. A fresh child is started on the next request (about half a second).

The pool keeps up to ``max_workers`` idle children and is re-created after ``fork`` (a forked copy never talks to
its parent's children). Start-up time (importing math-verify) does not count against a request's deadline.

Not covered: memory limits for the child (a huge expression can use a lot of memory before its deadline),
Windows (``select`` on pipes is POSIX-only).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

_WORKER_RUN_NAME = "__posttrain_llm_math_verify_worker__"
_BOOTSTRAP = (
    "import json, os, runpy, sys\n"
    "sys.path[:] = json.loads(os.environ['POSTTRAIN_LLM_SYS_PATH'])\n"
    f"runpy.run_path(os.environ['POSTTRAIN_LLM_WORKER_FILE'], run_name={_WORKER_RUN_NAME!r})\n"
)


class VerifierTimeout(Exception):
    """The symbolic check did not finish within its deadline (the judge could not decide)."""


class VerifierCrashed(Exception):
    """The checking process died while working on a request (the judge could not decide)."""


class VerifierUnavailable(RuntimeError):
    """math-verify could not be started at all (not installed, or the interpreter failed): a setup problem."""


class _Worker:
    """One child process speaking JSON lines on stdin/stdout."""

    def __init__(self, startup_timeout_seconds: float):
        env = dict(os.environ)
        # The child sees the same import path as the parent (scripts may have extended sys.path).
        env["POSTTRAIN_LLM_SYS_PATH"] = json.dumps([os.path.abspath(p) if p else os.getcwd() for p in sys.path])
        env["POSTTRAIN_LLM_WORKER_FILE"] = os.path.abspath(__file__)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._buffer = bytearray()
        self._next_id = 0
        try:
            hello = self._read_message(time.monotonic() + startup_timeout_seconds)
        except (VerifierCrashed, ValueError) as exc:
            hello = {"ready": False, "error": str(exc)}
        if hello is None or not hello.get("ready"):
            self.kill()
            why = f"no answer in {startup_timeout_seconds:g}s" if hello is None else hello.get("error", "unknown")
            raise VerifierUnavailable(
                f"the math-verify checking process did not start ({why}); install it with `pip install math-verify`"
            )

    def check(self, pred: str, gold: str, timeout_seconds: float, grace_seconds: float) -> bool:
        self._next_id += 1
        request = {"id": self._next_id, "pred": pred, "gold": gold, "timeout": float(timeout_seconds)}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.kill()
            raise VerifierCrashed(f"math-verify process was gone ({exc})") from None
        reply = self._read_message(time.monotonic() + timeout_seconds + grace_seconds)
        if reply is None:
            self.kill()
            raise VerifierTimeout(f"math-verify did not answer within {timeout_seconds:g}s; process killed")
        if reply.get("id") != self._next_id:
            self.kill()
            raise VerifierCrashed(f"math-verify answered request {reply.get('id')} instead of {self._next_id}")
        if reply.get("error") == "timeout":
            raise VerifierTimeout(f"math-verify gave up after {timeout_seconds:g}s")
        if "error" in reply:
            raise VerifierCrashed(f"math-verify failed: {reply['error']}")
        return bool(reply["equal"])

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the child, None on deadline; VerifierCrashed if the child exited."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()  # read the fd directly: the buffered reader is never used
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                raise VerifierCrashed(f"math-verify process exited with code {code}")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class MathVerifyPool:
    """Up to ``max_workers`` math-verify processes shared by all threads of this process."""

    def __init__(self, max_workers: int = 4, startup_timeout_seconds: float = 120.0, grace_seconds: float = 0.5):
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers!r}; expected an integer >= 1")
        self.max_workers = max_workers
        self.startup_timeout_seconds = startup_timeout_seconds
        self.grace_seconds = grace_seconds
        self._idle: list[_Worker] = []
        self._started = 0
        self._cond = threading.Condition()
        self.restarts = 0

    def check(self, pred: str, gold: str, timeout_seconds: float) -> bool:
        """True when math-verify finds ``pred`` equal to ``gold`` (both bare LaTeX, no ``$``).

        Raises VerifierTimeout / VerifierCrashed when it cannot decide, VerifierUnavailable on setup trouble.
        """
        worker = self._acquire()
        try:
            result = worker.check(pred, gold, timeout_seconds, self.grace_seconds)
        finally:
            self._release(worker)
        return result

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._started >= self.max_workers:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker(self.startup_timeout_seconds)  # start outside the lock: it takes ~0.5 s
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker.alive():
                self._idle.append(worker)
            else:
                self._started -= 1
                self.restarts += 1
            self._cond.notify()

    def idle_pids(self) -> list[int]:
        """Process ids of the idle checking processes (for diagnostics and tests)."""
        with self._cond:
            return [w.proc.pid for w in self._idle]

    def close(self) -> None:
        """Stop the idle processes (busy ones stop when their request ends and they are found dead)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.kill()


_shared_pool: MathVerifyPool | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def shared_pool() -> MathVerifyPool:
    """The process-wide pool, created on first use and again after a fork."""
    global _shared_pool, _shared_pid
    with _shared_lock:
        if _shared_pool is None or _shared_pid != os.getpid():
            _shared_pool = MathVerifyPool()
            _shared_pid = os.getpid()
        return _shared_pool


@atexit.register
def _close_shared_pool() -> None:
    if _shared_pool is not None and _shared_pid == os.getpid():
        _shared_pool.close()


# ----------------------------------------------------------------------------------------------------------------
# Child side. Runs only in the helper process (see _BOOTSTRAP); imports nothing from this package.


def _worker_main() -> None:
    import logging
    import signal

    # Protocol goes to a private copy of stdout; stray prints from libraries go to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)

    def send(message: dict[str, Any]) -> None:
        out.write((json.dumps(message) + "\n").encode())

    try:
        from math_verify import parse, verify
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises VerifierUnavailable
        send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    class Deadline(BaseException):
        """BaseException so that math-verify's and sympy's `except Exception` cannot swallow it."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Deadline()

    signal.signal(signal.SIGALRM, on_alarm)
    send({"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, request["timeout"])
                gold = parse("\\boxed{" + request["gold"] + "}", parsing_timeout=None)
                pred = parse("\\boxed{" + request["pred"] + "}", parsing_timeout=None)
                reply["equal"] = bool(gold and pred and verify(gold, pred, timeout_seconds=None))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Deadline:
            reply = {"id": request["id"], "error": "timeout"}
        except Exception as exc:  # noqa: BLE001 - the parent reports it as a judge error
            reply = {"id": request["id"], "error": f"{type(exc).__name__}: {exc}"[:500]}
        send(reply)


if __name__ == _WORKER_RUN_NAME:
    _worker_main()
