"""Code correctness: run the completion's program against the row's tests in the sandbox.

:class:`CodeRewardFunction` takes the code of a completion (the last fenced ```` ```python ````, ```` ```py ````
or bare ```` ``` ```` block; an unclosed last fence counts up to the end of the text; with no fence at all, the
whole text) and the row's tests, in one of two forms (dataset columns, as TRL passes them):

- MBPP style: ``tests`` (a list of statements, usually ``assert``\\ s), optional ``test_setup_code``, optional
  ``entry_point`` (the function under test; needed only when it shadows a builtin, as MBPP task 126's ``sum``);
- HumanEval style: ``test`` (source defining ``check(candidate)``) and ``entry_point``, optional ``code_prompt``
  (HumanEval's own ``prompt``: signature + docstring; the chat prompt lives in ``prompt``).

HumanEval completions come in two shapes and both are accepted: the whole function (what our loader asks for)
is run after ``code_prompt``, so the prompt's imports and helpers exist and the model's definition replaces the
stub; a body alone is appended to ``code_prompt`` as in the original harness (indented if it was not). The
prompt's helpers that the tests call (``poly``, ``encode_cyclic``) are the trusted copies from ``code_prompt``,
not the program's.

Score: the fraction of tests passed (HumanEval has one test), or 1/0 with ``all_or_nothing``. Verdicts:
``passed`` (all tests), ``failed`` (some or all failed, timeout, crash), ``no_answer`` (no code: 0.0), ``error``
(the sandbox could not start or died: score ``None``, never 0, so TRL skips the sample and the guard counts it).
Rows without tests raise ``ValueError`` naming the columns present.

Batches run in parallel on a bounded pool of pre-started sandbox servers (``max_workers``, default the number of
cores). The sandbox (see :mod:`..sandbox`) decides every verdict in a trusted process; the program's exit
status and output are never read as a verdict.

Not covered: stdin/stdout-style problems (APPS, CodeContests), languages other than Python, partial credit
inside a HumanEval ``check``.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
import threading
from typing import Any, Mapping, Sequence

from ..sandbox import ExecutionResult, Sandbox, SandboxConfig, TestSuite
from .base import RewardFunction, RewardResult, completion_text, row_kwargs

__all__ = ["CodeRewardFunction", "PYTHON_FENCE_LANGS", "build_program", "extract_code", "suite_from_row"]

#: Fence info strings read as Python ("" is a bare fence).
PYTHON_FENCE_LANGS = ("python", "py", "python3", "")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\n`]*)$")


def extract_code(text: str) -> str | None:
    """The code to run from a completion, or ``None`` when there is none (see the module docstring).

    Fenced blocks in another language (```` ```bash ````) are not code to run; text with only such blocks has no
    code. An empty block is no code.
    """
    lines = text.split("\n")
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    lang = ""
    for line in lines:
        match = _FENCE.match(line)
        if current is None:
            if match:
                lang, current = match.group(1).strip().lower().split(" ")[0], []
        elif match and not match.group(1).strip():
            blocks.append((lang, current))
            current = None
        else:
            current.append(line)
    if current is not None:
        blocks.append((lang, current))  # unclosed last fence: the completion ran out of tokens
    if blocks:
        python = [body for lang, body in blocks if lang in PYTHON_FENCE_LANGS]
        code = "\n".join(python[-1]) if python else ""
    else:
        code = text
    code = textwrap.dedent(code).strip("\n")
    return code if code.strip() else None


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except Exception:  # noqa: BLE001 - untrusted text: SyntaxError, RecursionError (deep nesting), MemoryError
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def _compiles(code: str) -> bool:
    try:
        compile(code, "<program>", "exec", dont_inherit=True)
        return True
    except Exception:  # noqa: BLE001 - as above; the sandbox reports the real error when it runs the program
        return False


def build_program(code: str, code_prompt: str | None, entry_point: str | None) -> str:
    """The program to run for a HumanEval-style row (MBPP rows run ``code`` as is)."""
    if not code_prompt:
        return code
    if entry_point and _defines(code, entry_point):
        return f"{code_prompt.rstrip()}\n\n\n{code}\n"
    body = code_prompt + code
    if _compiles(body):
        return body
    indented = code_prompt + textwrap.indent(code, "    ")
    return indented if _compiles(indented) else body


def _text_column(row: Mapping[str, Any], column: str, required: bool = False) -> str | None:
    value = row.get(column)
    if value is None:
        if required:
            raise ValueError(f"row has no {column!r} column value; columns: {sorted(row)}")
        return None
    if not isinstance(value, str):
        raise ValueError(f"column {column!r} must be a string, got {type(value).__name__} {value!r:.100}")
    return value


def suite_from_row(row: Mapping[str, Any]) -> tuple[TestSuite, str | None]:
    """The tests of a row and its HumanEval ``code_prompt`` (or None). ValueError names what is missing."""
    tests = row.get("tests")
    if tests is not None:
        if isinstance(tests, str) or not isinstance(tests, Sequence) or not tests \
                or not all(isinstance(t, str) and t.strip() for t in tests):
            raise ValueError(f"column 'tests' must be a non-empty list of non-empty strings (test statements), "
                             f"got {tests!r:.200}")
        entry = _text_column(row, "entry_point")
        suite = TestSuite(statements=tuple(tests), setup=_text_column(row, "test_setup_code") or "",
                          entry_point=entry if entry and entry.isidentifier() else None)
        return suite, None
    if row.get("test") is not None:
        test = _text_column(row, "test", required=True)
        entry = _text_column(row, "entry_point", required=True)
        if not entry.isidentifier():
            raise ValueError(f"column 'entry_point' must be a Python identifier, got {entry!r}")
        code_prompt = _text_column(row, "code_prompt")
        return TestSuite(check=test, entry_point=entry, prelude=code_prompt or ""), code_prompt
    raise ValueError(
        "row has no tests: pass a 'tests' column (list of assert statements, MBPP style; optional "
        "'test_setup_code') or 'test' + 'entry_point' columns (HumanEval style; optional 'code_prompt'); "
        f"row columns: {sorted(row)}"
    )


class CodeRewardFunction(RewardFunction):
    """Reward = fraction of the row's tests the completion's program passes, judged in the sandbox.

    Args:
        all_or_nothing: 1.0 only when every test passes, else 0.0.
        sandbox: limits and isolation of each run (:class:`SandboxConfig`).
        max_workers: programs judged at once (sandbox servers kept running); default ``os.cpu_count()``.
    """

    def __init__(self, all_or_nothing: bool = False, sandbox: SandboxConfig | None = None,
                 max_workers: int | None = None):
        if not isinstance(all_or_nothing, bool):
            raise ValueError(f"all_or_nothing={all_or_nothing!r}; expected True or False")
        if sandbox is not None and not isinstance(sandbox, SandboxConfig):
            raise ValueError(f"sandbox={sandbox!r}; expected a SandboxConfig")
        workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"max_workers={max_workers!r}; expected an int >= 1 or None")
        self.all_or_nothing = all_or_nothing
        self.sandbox_config = sandbox or SandboxConfig()
        self.max_workers = workers
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "code"

    @property
    def sandbox(self) -> Sandbox:
        """The pool of sandbox servers (started on first use)."""
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(self.sandbox_config, workers=self.max_workers)
            return self._sandbox

    def close(self) -> None:
        """Stop the sandbox servers (they restart on the next call)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_sandbox"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _prepare(self, completion: str, row: Mapping[str, Any]) -> tuple[str | None, TestSuite]:
        suite, code_prompt = suite_from_row(row)
        code = extract_code(completion)
        if code is None:
            return None, suite
        return build_program(code, code_prompt, suite.entry_point if suite.check else None), suite

    def _verdict(self, program: str, result: ExecutionResult) -> RewardResult:
        if result.status == "error":
            return RewardResult(None, "error", f"judge error: {result.error}", extracted=program,
                                details={"mode": result.mode})
        total, passed = len(result.tests), result.passed_count
        all_passed = passed == total and result.status == "completed"
        score = (1.0 if all_passed else 0.0) if self.all_or_nothing else passed / total
        failures = [f"test {i}: {t.reason}" for i, t in enumerate(result.tests) if not t.passed]
        reason = f"{passed}/{total} tests passed" + (" (timeout)" if result.status == "timeout" else "")
        if failures:
            reason += "; first failure: " + failures[0]
        details = {"passed": passed, "total": total, "per_test": [t.passed for t in result.tests],
                   "status": result.status, "failures": failures[:5],
                   "elapsed_seconds": round(result.elapsed_seconds, 4), "mode": result.mode}
        return RewardResult(score, "passed" if all_passed else "failed", reason, extracted=program, details=details)

    def score(self, completion: str, **row: Any) -> RewardResult:
        program, suite = self._prepare(completion, row)
        if program is None:
            return RewardResult(0.0, "no_answer", "no code found in the completion")
        return self._verdict(program, self.sandbox.run(program, suite))

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        """Judge a batch on up to ``max_workers`` sandboxes at once; results in input order."""
        n = len(completions)
        prepared = [self._prepare(completion_text(c), row_kwargs(kwargs, i, n)) for i, c in enumerate(completions)]
        todo = [(i, program, suite) for i, (program, suite) in enumerate(prepared) if program is not None]
        runs = self.sandbox.run_many([(program, suite) for _, program, suite in todo]) if todo else []
        results: list[RewardResult] = [RewardResult(0.0, "no_answer", "no code found in the completion")] * n
        for (i, program, _), run in zip(todo, runs):
            results[i] = self._verdict(program, run)
        return results
