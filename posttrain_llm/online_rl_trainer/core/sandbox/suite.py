"""What the sandbox is asked to run and what it reports: the tests of one program, and the verdict per test.

Plain frozen records, shared by the host side (``runner.py``) and the rewards (``rewards/code.py``); the wire form
of a :class:`TestSuite` is what the in-sandbox test runner (``_testrunner.py``) receives. ``status == "error"``
means the judge could not decide: callers must not read it as a wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestSuite:
    """Tests for one program.

    Either ``statements`` (MBPP style: each a test, e.g. an ``assert``) or ``check`` + ``entry_point``
    (HumanEval style: ``check`` defines ``check(candidate)``; one test). ``prelude`` is trusted code run first in
    the tests' process (a HumanEval prompt: its imports and helpers); ``setup`` runs after the program's names
    are bound (MBPP ``test_setup_code``). ``entry_point`` is also the one program name allowed to shadow a
    builtin or a standard-library module in the tests.
    """

    __test__ = False  # not a pytest class, despite the name

    statements: tuple[str, ...] = ()
    check: str | None = None
    entry_point: str | None = None
    setup: str = ""
    prelude: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.statements, str) or not all(isinstance(s, str) for s in self.statements):
            raise ValueError(f"TestSuite.statements must be a sequence of strings, got {self.statements!r:.200}")
        object.__setattr__(self, "statements", tuple(self.statements))
        if bool(self.statements) == bool(self.check):
            raise ValueError("TestSuite needs exactly one of `statements` (non-empty) or `check`")
        if self.check and not (isinstance(self.entry_point, str) and self.entry_point.isidentifier()):
            raise ValueError(f"TestSuite.entry_point={self.entry_point!r}; a `check` suite needs the name of the "
                             "function under test")
        for name in ("setup", "prelude"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"TestSuite.{name} must be a string, got {getattr(self, name)!r:.100}")

    @property
    def n_tests(self) -> int:
        return len(self.statements) if self.statements else 1

    def to_wire(self) -> dict:
        return {"statements": list(self.statements), "check": self.check, "entry_point": self.entry_point,
                "setup": self.setup, "prelude": self.prelude}


@dataclass(frozen=True)
class TestOutcome:
    """The verdict on one test: passed or not, and why not."""

    __test__ = False

    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class ExecutionResult:
    """What happened to one program.

    Attributes:
        status: ``completed`` (ran to the end), ``timeout`` (wall clock hit; tests not reached count as failed)
            or ``error`` (the judge could not decide; see ``error``).
        tests: one outcome per test (empty for a run without tests).
        exit_code: the program's exit status, only for runs without tests (informational, never a verdict).
        stdout, stderr: the first ``max_output_bytes`` of each; ``output_truncated`` if there was more.
        elapsed_seconds: wall time seen by the host. ``mode``: the isolation mode used.
    """

    status: str
    tests: tuple[TestOutcome, ...] = ()
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    elapsed_seconds: float = 0.0
    mode: str = ""
    error: str = ""

    @property
    def passed_count(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def all_passed(self) -> bool:
        return self.status == "completed" and bool(self.tests) and all(t.passed for t in self.tests)
