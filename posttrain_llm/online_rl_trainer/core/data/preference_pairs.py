r"""Preference pairs from our own arithmetic task, for training a reward model offline (no torch).

:func:`arithmetic_preference_pairs` turns the problems of :class:`~.synthetic.SyntheticArithmeticLoader` into rows
``{"prompt", "chosen", "rejected", "answer", "rejected_kind"}`` in TRL's conversational preference format (the
prompt is the loader's conversation; ``chosen`` and ``rejected`` are one assistant message each):

- ``chosen``: a correct answer in the format :class:`~..rewards.math.MathRewardFunction` gives full credit
  (``\boxed{19}``; in the ``"chat"`` prompt style a worked line, ``12 + 7 = 19. The answer is \boxed{19}.``);
- ``rejected`` is one of two kinds, dealt alternately so the mix is exact:

  - ``"wrong_number"``: the same format with a wrong result. On an addition whose units carry it is the forgotten
    carry (``37+5`` -> ``32``, the tiny model's own typical mistake); otherwise the result moved by 1..10;
  - ``"unformatted"``: the right number without ``\boxed{}`` (the strict math reward gives it no credit).

The splits are the loader's, so pairs built from ``"train"`` and ``"test"`` with the same seed share no problem.

:func:`pairs_from_graded_samples` builds pairs the classic RLHF way instead: from a policy's own samples, graded by
a checker (``chosen`` = a sample that passed, ``rejected`` = one that failed on the same prompt), so the rejected
answers are the policy's real mistakes rather than made-up ones.

:func:`read_preference_rows` reads and checks preference rows of any origin (a file, a Dataset, a list of dicts).

Not covered: several rejected answers per prompt, ties, margins (the rows carry none).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Sequence

from ..common.errors import short_repr
from .base import DataError
from .custom import iter_source
from .synthetic import PROMPT_STYLES, SyntheticArithmeticLoader

REJECTED_KINDS = ("wrong_number", "unformatted")
SPLITS = ("train", "test")


def wrong_result(a: int, op: str, b: int, right: int, rng: random.Random) -> int:
    """A plausible wrong result: the forgotten carry of ``a+b`` when the units carry, else ``right`` moved by 1..10."""
    if op == "+" and a % 10 + b % 10 >= 10:
        return right - 10
    return right + rng.choice([d for d in range(-10, 11) if d != 0])


def answer_text(row: dict[str, Any], result: int | str, boxed: bool, prompt_style: str) -> str:
    """The assistant's answer to an arithmetic row: ``\\boxed{N}`` (bare) or a worked line (chat); ``boxed=False``
    writes the number alone."""
    final = f"\\boxed{{{result}}}" if boxed else str(result)
    if prompt_style == "bare":
        return final
    return f"{row['a']} {row['operator']} {row['b']} = {result}. The answer is {final}."


def arithmetic_preference_pairs(n: int, seed: int = 0, difficulty: int = 1, split: str = "train",
                                prompt_style: str = "bare",
                                rejected_kinds: tuple[str, ...] = REJECTED_KINDS) -> list[dict[str, Any]]:
    """``n`` preference rows over distinct problems of ``split`` (see the module docstring).

    Args:
        n: number of pairs (at most the split's size: 700 train / 300 test problems by default).
        seed: fixes the train/test split of the problems, which problems are drawn, and the wrong numbers.
        difficulty: the loader's difficulty (1-3; see ``core/data/synthetic.py``).
        split: ``"train"`` or ``"test"`` (disjoint problems for the same seed).
        prompt_style: ``"bare"`` (the tiny model: ``12+7=``) or ``"chat"`` (a question with a one-shot example).
        rejected_kinds: which kinds of rejected answer to deal, in turn.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}; pass a positive number of pairs")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; accepted: {list(SPLITS)}")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style={prompt_style!r}; accepted: {list(PROMPT_STYLES)}")
    kinds = tuple(rejected_kinds)
    bad = [k for k in kinds if k not in REJECTED_KINDS]
    if not kinds or bad:
        raise ValueError(f"rejected_kinds={rejected_kinds!r}; pass a non-empty subset of {list(REJECTED_KINDS)}")
    loader = SyntheticArithmeticLoader(difficulty=difficulty, seed=seed, prompt_style=prompt_style)
    available = loader.num_train if split == "train" else loader.num_test
    if n > available:
        raise ValueError(f"n={n} pairs but the {split!r} split of difficulty {difficulty} has {available} problems; "
                         f"ask for at most {available}")
    rng = random.Random(f"pairs-{seed}-{split}")
    pairs = []
    for i, row in enumerate(loader.load(split, num_samples=n, seed=seed)):
        right = int(row["answer"])
        kind = kinds[i % len(kinds)]
        if kind == "wrong_number":
            rejected = answer_text(row, wrong_result(row["a"], row["operator"], row["b"], right, rng), True, prompt_style)
        else:
            rejected = answer_text(row, right, False, prompt_style)
        pairs.append({
            "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": answer_text(row, right, True, prompt_style)}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "answer": row["answer"],
            "rejected_kind": kind,
        })
    return pairs


#: Verdicts a graded sample can carry (``RewardResult.status``); ``error`` (the judge could not decide) never pairs.
GRADED_STATUSES = ("passed", "failed", "no_answer", "error")


def pairs_from_graded_samples(records: Sequence[Mapping[str, Any]],
                              max_pairs_per_prompt: int = 1) -> list[dict[str, Any]]:
    """Preference rows from sampled, graded completions: for each prompt with at least one ``passed`` and one
    ``failed``/``no_answer`` sample, up to ``max_pairs_per_prompt`` rows ``{"prompt", "chosen", "rejected", "answer",
    "rejected_kind"}`` (TRL's conversational format, as :func:`arithmetic_preference_pairs`).

    Args:
        records: one per prompt, with ``prompt``, ``completions`` (the samples, strings) and ``statuses`` (their
            verdicts, from ``GRADED_STATUSES``; ``ModelEvaluator.evaluate(..., num_samples_per_problem=K)`` records
            have both), and optionally ``answer``.
        max_pairs_per_prompt: rows per prompt at most. Rejected answers are the *distinct* failing completions in
            the order they were sampled (so one prompt's rows never repeat a comparison); the chosen answer cycles
            through the distinct passing completions in the same way.

    ``rejected_kind`` is the rejected sample's verdict: ``"failed"`` (a wrong answer) or ``"no_answer"`` (no
    gradable answer). Samples judged ``error`` are left out: a judge failure says nothing about the answer.
    Prompts whose samples all pass or all fail give no row (nothing to compare).
    """
    if isinstance(max_pairs_per_prompt, bool) or not isinstance(max_pairs_per_prompt, int) or max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt={max_pairs_per_prompt!r}; expected an integer >= 1")
    rows = []
    for i, record in enumerate(records):
        completions, statuses = list(record["completions"]), list(record["statuses"])
        if len(completions) != len(statuses):
            raise ValueError(f"record {i}: {len(completions)} completions but {len(statuses)} statuses")
        unknown = sorted({s for s in statuses if s not in GRADED_STATUSES})
        if unknown:
            raise ValueError(f"record {i}: statuses {unknown}; accepted: {list(GRADED_STATUSES)}")
        good = _distinct(c for c, s in zip(completions, statuses) if s == "passed")
        bad = _distinct((c, s) for c, s in zip(completions, statuses) if s in ("failed", "no_answer"))
        for j, (rejected, kind) in enumerate(bad[:max_pairs_per_prompt] if good else []):
            rows.append({
                "prompt": record["prompt"],
                "chosen": [{"role": "assistant", "content": good[j % len(good)]}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "answer": record.get("answer"),
                "rejected_kind": kind,
            })
    return rows


def _distinct(items: Iterable[Any]) -> list[Any]:
    """``items`` without repeats, in first-seen order; a ``(completion, verdict)`` tuple is keyed by its completion."""
    seen: dict[Any, Any] = {}
    for item in items:
        seen.setdefault(item[0] if isinstance(item, tuple) else item, item)
    return list(seen.values())


def preference_problem(value: Any, column: str) -> str | None:
    """Why a ``prompt``/``chosen``/``rejected`` value is unusable, or None: a string (non-empty, except an empty
    prompt), or a list of ``{'role': str, 'content': str}`` messages (non-empty for chosen/rejected)."""
    if isinstance(value, str):
        return None if value.strip() or column == "prompt" else "is an empty string"
    if not isinstance(value, list) or (not value and column != "prompt"):
        return f"is {short_repr(value)}; expected a string or a list of {{'role', 'content'}} messages"
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"message {i} is {short_repr(m)}; each message must be {{'role': str, 'content': str}}"
    return None


def read_preference_rows(source: Any) -> list[dict[str, Any]]:
    """Preference rows (``chosen``, ``rejected``, optional ``prompt``, any other columns) from a JSONL/JSON/CSV/
    Parquet path, a ``datasets.Dataset`` or a list of dicts; :class:`DataError` naming the row and column of a bad
    one. Without ``prompt`` the prompt is taken to be inside ``chosen``/``rejected`` (TRL's implicit prompt)."""
    rows = []
    for ref, record in iter_source(source):
        for column in ("chosen", "rejected", "prompt"):
            if column not in record:
                if column == "prompt":
                    continue
                raise DataError(ref, f"no {column!r} column (has {sorted(record)}); a preference row needs "
                                      "'chosen' and 'rejected' (and usually 'prompt')", column)
            problem = preference_problem(record[column], column)
            if problem is not None:
                raise DataError(ref, f"{column} {problem}", column)
        rows.append(dict(record))
    if not rows:
        raise DataError(str(source)[:200], "no preference rows")
    return rows
