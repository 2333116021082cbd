r"""Math answer correctness: the verifiable reward for GSM8K / MATH style problems.

:class:`MathRewardFunction` reads the model's final answer (``\boxed{...}``; in lenient mode the last number when
there is no box) and compares it by value with the gold answer of the row:

1. a fast path with no symbolic algebra: equal normalised keys (see :mod:`.math_answers`: ``$``, thousands commas,
   units, ``\dfrac``, ``\frac43``, ``\left(``, ``x=``, ``\text{(C)}`` ...), then exact numbers (``0.5 == 1/2``,
   ``5.00 == 5``, within 1e-6 as math-verify rounds to 6 places). Two plain numbers never go further;
2. otherwise math-verify (``parse`` + ``verify``) in a helper process with a hard deadline
   (:mod:`.math_verifier`), which holds in any thread, unlike math-verify's ``signal.alarm`` timeout that TRL
   switches off outside the main thread.

Verdicts: ``passed`` 1.0; ``failed`` 0.0 (wrong, or hedged: several boxes that disagree); ``no_answer`` 0.0 (no
box, only empty boxes); ``error`` None (the check ran past its deadline or the checker died: not the model's
fault, and never scored 0). A missing or empty gold answer raises :class:`RewardFunctionError`.

Departures from TRL's ``accuracy_reward``: hedging is punished instead of accepting the first match; the gold may be
a raw GSM8K solution (``... #### 72``) or a MATH solution (its last box is used); answers written as words in
``\text{}`` are compared as text, case-insensitively, not as products of symbols (math-verify would equate the
anagrams ``\text{east}`` and ``\text{seat}``).

Not covered: answers that need the question to be understood (``2\frac{1}{2}`` as a mixed number is math-verify's
call), multi-part answers beyond what math-verify compares, proofs.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .base import RewardFunction, RewardFunctionError, RewardResult
from .math_answers import (
    answer_number,
    clean_answer,
    extract_boxed_answers,
    extract_last_number,
    final_answer_from_gold,
    key_of_cleaned,
    normalize_answer,
)
from .math_verifier import VerifierCrashed, VerifierTimeout, shared_pool

__all__ = [
    "MATH_MODES",
    "MathRewardFunction",
    "answers_equivalent",
    "extract_boxed_answers",
    "extract_last_number",
    "normalize_answer",
]

MATH_MODES = ("strict", "lenient")
#: Extracted answers longer than this are graded wrong without a symbolic check: no gold answer in GSM8K or
#: MATH is near this length, and parsing a huge expression would only burn the deadline.
MAX_ANSWER_CHARS = 1000
_NUMERIC_TOLERANCE = Fraction(1, 10**6)
_TEXT_WRAPPED = re.compile(r"^\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}$")


def _remaining(deadline: float, timeout_seconds: float) -> float:
    """Seconds left before ``deadline``; VerifierTimeout when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise VerifierTimeout(f"no time left of the {timeout_seconds:g}s deadline for this completion")
    return left


def _is_text_answer(answer: str) -> bool:
    """An answer written as words, wholly inside ``\\text{}`` (``\\text{Evelyn}``, ``\\text{(C)}``)."""
    m = _TEXT_WRAPPED.match(answer.strip().strip("$").strip())
    return bool(m) and any(ch.isalpha() for ch in m.group(1))


def answers_equivalent(pred: str, gold: str, timeout_seconds: float = 5.0) -> bool:
    r"""Whether the predicted answer equals the gold answer by value.

    Both are bare answers (box contents, not whole completions). Cheap checks first (normalised keys, exact
    numbers); math-verify only for the rest, bounded by ``timeout_seconds`` in any thread.

    Raises:
        VerifierTimeout: the symbolic check did not finish in time (the judge could not decide).
        VerifierCrashed: the checking process died.
        ValueError: ``timeout_seconds`` is not positive, or ``gold`` is empty.
    """
    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds={timeout_seconds!r}; expected a positive number of seconds")
    p, g = clean_answer(pred), clean_answer(gold)
    if not g:
        raise ValueError(f"gold answer {gold!r} is empty after normalisation; nothing to compare against")
    if not p:
        return False
    if _is_text_answer(pred) or _is_text_answer(gold):
        return key_of_cleaned(p).lower() == key_of_cleaned(g).lower()
    if key_of_cleaned(p) == key_of_cleaned(g):
        return True
    p_value, g_value = answer_number(p), answer_number(g)
    if p_value is not None and g_value is not None:
        return abs(p_value - g_value) < _NUMERIC_TOLERANCE
    return shared_pool().check(p, g, timeout_seconds)


@dataclass(frozen=True)
class MathRewardFunction(RewardFunction):
    r"""1.0 when the completion's final answer equals the row's gold answer, else 0.0 (None if undecidable).

    Metric name: ``math_accuracy`` in strict mode, ``math_accuracy_lenient`` in lenient mode (distinct, so both can
    sit in one composite).
    """

    mode: str = "strict"
    r"""``strict``: only ``\boxed{}`` answers count. ``lenient``: the boxes if any (same rules), else the last
    number in the text (for models not trained to box, e.g. GSM8K baselines)."""
    timeout_seconds: float = 5.0
    """Deadline for grading one completion (all its symbolic checks together), enforced from any thread; past it
    the verdict is ``error`` with score None."""
    answer_column: str = "answer"
    """Dataset column with the gold answer: a plain answer, a GSM8K solution (``#### 72``) or a MATH solution."""

    def __post_init__(self) -> None:
        if self.mode not in MATH_MODES:
            raise ValueError(f"MathRewardFunction.mode={self.mode!r}; expected one of {MATH_MODES}")
        if (
            isinstance(self.timeout_seconds, bool)
            or not isinstance(self.timeout_seconds, (int, float))
            or not math.isfinite(self.timeout_seconds)
            or self.timeout_seconds <= 0
        ):
            raise ValueError(
                f"MathRewardFunction.timeout_seconds={self.timeout_seconds!r}; expected a finite number of seconds > 0"
            )
        if not isinstance(self.answer_column, str) or not self.answer_column:
            raise ValueError(f"MathRewardFunction.answer_column={self.answer_column!r}; expected a column name")

    @property
    def name(self) -> str:
        return "math_accuracy" if self.mode == "strict" else "math_accuracy_lenient"

    def extract(self, text: str) -> str | None:
        """The answer this reward would grade in ``text``, or None (no answer, hedged, or undecidable hedge check).

        For majority voting, group by ``normalize_answer(extract(text))``.
        """
        try:
            answer, _, _ = self._select_answer(text, time.monotonic() + self.timeout_seconds)
        except (VerifierTimeout, VerifierCrashed):
            return None
        return answer

    def score(self, completion: str, **row: Any) -> RewardResult:
        """Grade one completion. All symbolic checks for it (hedge checks included) share one deadline."""
        gold = self._gold(row)
        deadline = time.monotonic() + self.timeout_seconds
        answer: str | None = None
        try:
            answer, status, reason = self._select_answer(completion, deadline)
            if answer is None:
                return RewardResult(0.0, status, reason)
            if len(answer) > MAX_ANSWER_CHARS:
                return RewardResult(0.0, "failed", f"answer is {len(answer)} characters (> {MAX_ANSWER_CHARS})",
                                    extracted=answer[:MAX_ANSWER_CHARS])
            correct = answers_equivalent(answer, gold, _remaining(deadline, self.timeout_seconds))
        except (VerifierTimeout, VerifierCrashed) as exc:
            return RewardResult(None, "error", f"{type(exc).__name__}: {exc}", extracted=answer)
        if correct:
            return RewardResult(1.0, "passed", f"{reason}equals gold {gold!r}", extracted=answer)
        return RewardResult(0.0, "failed", f"{reason}differs from gold {gold!r}", extracted=answer)

    def _gold(self, row: dict[str, Any]) -> str:
        column = self.answer_column
        if column not in row:
            raise RewardFunctionError(
                f"reward {self.name!r} needs the gold answer in column {column!r}, but the row has only "
                f"{sorted(row)}; pass MathRewardFunction(answer_column=...) naming the gold-answer column"
            )
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RewardFunctionError(
                f"reward {self.name!r}: column {column!r} holds {value!r:.200} (type {type(value).__name__}); expected "
                "the gold answer as a string"
            )
        gold = final_answer_from_gold(str(value))
        if not clean_answer(gold):
            raise RewardFunctionError(f"reward {self.name!r}: column {column!r} holds an empty gold answer ({value!r:.200})")
        return gold

    def _select_answer(self, text: str, deadline: float) -> tuple[str | None, str, str]:
        """(answer or None, status if None, reason). May raise VerifierTimeout/Crashed while checking a hedge."""
        boxes = extract_boxed_answers(text)
        filled = [b for b in boxes if clean_answer(b)]
        if boxes and not filled:
            return None, "no_answer", f"only empty \\boxed{{}} ({len(boxes)})"
        if filled:
            first = filled[0]
            distinct = {normalize_answer(b): b for b in filled[1:]}
            distinct.pop(normalize_answer(first), None)
            for other in distinct.values():
                if len(other) > MAX_ANSWER_CHARS or not answers_equivalent(
                    other, first, _remaining(deadline, self.timeout_seconds)
                ):
                    why = f"hedged: {len(filled)} boxed answers disagree ({first!r:.60} vs {other!r:.60})"
                    return None, "failed", why
            suffix = f" ({len(filled)} agreeing boxes)" if len(filled) > 1 else ""
            return filled[-1], "", f"boxed answer{suffix} "
        if self.mode == "lenient":
            number = extract_last_number(text)
            if number is not None:
                return number, "", "last number in text "
            return None, "no_answer", "no \\boxed{} answer and no number in the text"
        return None, "no_answer", "no \\boxed{} answer"
