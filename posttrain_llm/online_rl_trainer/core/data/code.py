"""HumanEval and MBPP loaders: local files first (``<dir>/humaneval/HumanEval.jsonl.gz``, ``<dir>/mbpp/...``),
the Hugging Face Hub as a fallback (``openai/openai_humaneval``; ``google-research-datasets/mbpp`` configs
``full`` / ``sanitized``).

Rows carry the columns :class:`~..rewards.code.CodeRewardFunction` reads:

- HumanEval (164 tasks, split ``test``): ``tests`` is absent; ``test`` (defines ``check(candidate)``),
  ``entry_point``, ``code_prompt`` (the dataset's own ``prompt``: signature + docstring), ``canonical_solution``;
  ``answer`` = ``code_prompt + canonical_solution`` (a full reference function, for symmetry with math rows).
- MBPP: ``tests`` (the ``test_list`` asserts), ``test_setup_code`` (sanitized: its ``test_imports`` joined),
  ``challenge_tests``, ``entry_point`` (the reference's function that the tests call, so a task whose function
  is named like a builtin, e.g. task 126's ``sum``, can be judged), ``text`` (the description); ``answer`` = the
  reference code with ``\\n`` line ends.

Splits of MBPP follow the task-id ranges of the upstream README: ``prompt`` 1-10, ``test`` 11-510,
``validation`` 511-600, ``train`` 601-974 (sanitized file: 7 / 257 / 43 / 120 tasks).

Prompts ask for one fenced python block. MBPP prompts show only the first ``show_tests`` tests (default 1, enough
to give the function's name and signature) instead of all three as in the paper's prompt: in RL the policy is
rewarded on those very tests, and showing all of them invites hard-coding their answers.

Not covered: HumanEval+ / MBPP+ (EvalPlus) extended tests, the few-shot prompt of the MBPP paper (pass your own
``few_shot``), APPS or other stdin/stdout problem sets.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .base import DataError, LocalOrHubLoader, RowRef, require_text
from .files import resolve_records

DEFAULT_CODE_SYSTEM_PROMPT = "You are an expert Python programmer."
CODE_ANSWER_INSTRUCTION = "Answer with a single ```python code block containing the complete solution."
HUMANEVAL_HUB_ID = "openai/openai_humaneval"
MBPP_HUB_ID = "google-research-datasets/mbpp"
MBPP_VARIANTS = ("full", "sanitized")
#: Inclusive task-id ranges of the MBPP splits (upstream README).
MBPP_SPLIT_RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def _string_list(record: Mapping[str, Any], column: str, ref: RowRef, allow_empty: bool = False) -> list[str]:
    value = record.get(column)
    if value is None and allow_empty:
        return []
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty) \
            or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(ref, f"expected a {'' if allow_empty else 'non-empty '}list of non-empty strings, "
                        f"got {value!r:.100}", column)
    return [v.replace("\r\n", "\n") for v in value]


def mbpp_entry_point(code: str, tests: Sequence[str]) -> str | None:
    """The reference's top-level function that the tests call first (None if it cannot be told)."""
    try:
        defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for test in tests:
            for node in ast.walk(ast.parse(test)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                    return node.func.id
    except SyntaxError:
        return None
    return None


class HumanEvalLoader(LocalOrHubLoader):
    """HumanEval (164 problems, split ``test``). Columns: see the module docstring.

    Args:
        data_dir: folder holding ``humaneval/HumanEval.jsonl.gz``; else ``$ONLINE_RL_DATA_DIR``; else the Hub.
        system_prompt: system message, or ``None`` for none.
        prompt_template: user message; ``{question}`` is replaced by the task (the signature in a fence and the
            answer instruction).
        few_shot: (question, answer) pairs inserted before the task.
        skip_invalid: skip bad rows (recorded in ``last_skipped``) instead of raising :class:`DataError`.
        use_hub: allow the Hub fallback.
    """

    splits = ("test",)

    def __init__(self, data_dir: str | Path | None = None, system_prompt: str | None = DEFAULT_CODE_SYSTEM_PROMPT,
                 prompt_template: str = "{question}", few_shot: Sequence[tuple[str, str]] | None = None,
                 skip_invalid: bool = False, use_hub: bool = True):
        super().__init__(data_dir, system_prompt, prompt_template, few_shot, skip_invalid, use_hub)

    def _records(self, split: str) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        return resolve_records("HumanEval", "humaneval/HumanEval.jsonl.gz", [(HUMANEVAL_HUB_ID, None, "test")],
                               self.data_dir, self.use_hub)

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        code_prompt = require_text(record, "prompt", ref)
        entry_point = require_text(record, "entry_point", ref)
        if not entry_point.isidentifier():
            raise DataError(ref, f"{entry_point!r} is not a Python identifier", "entry_point")
        question = ("Complete this Python function:\n\n```python\n" + code_prompt.rstrip("\n") + "\n```\n\n"
                    "Answer with a single ```python code block containing the complete function, signature "
                    "included.")
        solution = require_text(record, "canonical_solution", ref)
        return {
            "prompt": self.prompt_format.build(question),
            "answer": code_prompt + solution,
            "task_id": require_text(record, "task_id", ref),
            "code_prompt": code_prompt,
            "canonical_solution": solution,
            "test": require_text(record, "test", ref),
            "entry_point": entry_point,
        }


class MBPPLoader(LocalOrHubLoader):
    """MBPP, ``variant="full"`` (974 tasks) or ``"sanitized"`` (427 hand-verified tasks), split by task id.

    Args:
        variant: ``full`` or ``sanitized``.
        show_tests: how many of the task's tests the prompt shows (0-3; default 1, see the module docstring).
        Other arguments as for :class:`HumanEvalLoader` (files ``mbpp/mbpp.jsonl`` / ``mbpp/sanitized-mbpp.json``).
    """

    splits = tuple(MBPP_SPLIT_RANGES)

    def __init__(self, variant: str = "full", data_dir: str | Path | None = None, show_tests: int = 1,
                 system_prompt: str | None = DEFAULT_CODE_SYSTEM_PROMPT, prompt_template: str = "{question}",
                 few_shot: Sequence[tuple[str, str]] | None = None, skip_invalid: bool = False, use_hub: bool = True):
        if variant not in MBPP_VARIANTS:
            raise ValueError(f"MBPPLoader variant={variant!r}; accepted: {list(MBPP_VARIANTS)}")
        if isinstance(show_tests, bool) or not isinstance(show_tests, int) or not 0 <= show_tests <= 3:
            raise ValueError(f"MBPPLoader show_tests={show_tests!r}; expected an int from 0 to 3")
        super().__init__(data_dir, system_prompt, prompt_template, few_shot, skip_invalid, use_hub)
        self.variant = variant
        self.show_tests = show_tests

    def _records(self, split: str) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        path = "mbpp/mbpp.jsonl" if self.variant == "full" else "mbpp/sanitized-mbpp.json"
        low, high = MBPP_SPLIT_RANGES[split]
        records = resolve_records(f"MBPP ({self.variant})", path, [(MBPP_HUB_ID, self.variant, split)],
                                  self.data_dir, self.use_hub)
        for ref, record in records:
            task_id = record.get("task_id")
            if isinstance(task_id, bool) or not isinstance(task_id, int):
                raise DataError(ref, f"expected an integer task id, got {task_id!r}", "task_id")
            if low <= task_id <= high:
                yield ref, record

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        text = require_text(record, "text" if self.variant == "full" else "prompt", ref)
        code = require_text(record, "code", ref).replace("\r\n", "\n")
        tests = _string_list(record, "test_list", ref)
        if self.variant == "full":
            setup = record.get("test_setup_code") or ""
            if not isinstance(setup, str):
                raise DataError(ref, f"expected a string, got {setup!r:.100}", "test_setup_code")
            setup = setup.replace("\r\n", "\n")
            challenge = _string_list(record, "challenge_test_list", ref, allow_empty=True)
        else:
            setup = "\n".join(_string_list(record, "test_imports", ref, allow_empty=True))
            challenge = []
        shown = tests[: self.show_tests]
        question = text.strip()
        if shown:
            question += ("\nYour code should pass " + ("this test" if len(shown) == 1 else "these tests") + ":\n\n"
                         + "\n".join(shown))
        question += "\n\n" + CODE_ANSWER_INSTRUCTION
        return {
            "prompt": self.prompt_format.build(question),
            "answer": code,
            "task_id": record["task_id"],
            "text": text,
            "tests": tests,
            "test_setup_code": setup,
            "challenge_tests": challenge,
            "entry_point": mbpp_entry_point(code, tests) or "",
        }
