r"""Format rewards: does the completion have the shape the prompt asked for (independent of correctness)?

:class:`FormatRewardFunction` has three kinds, each scoring in [0, 1]:

- ``boxed``: exactly one non-empty ``\boxed{}`` / ``\fbox{}`` -> 1.0 (passed). Several boxes -> 0.0 (failed): giving
  partial credit would pay for hedging, which the strict math reward punishes too. Only empty boxes -> 0.0
  (failed); no box (or an unbalanced one) -> 0.0 (no_answer).
- ``think_answer``: the whole completion is ``<think>...</think>`` then ``<answer>...</answer>`` (whitespace
  around and between allowed, both non-empty) -> 1.0. Otherwise partial credit 0.25 for each of the four tags that
  appears exactly once, capped at 0.75 so that only the full structure earns 1.0 (the tag-count shaping of the
  open-r1 / "xmlcount" recipes, without their per-character penalties) -> failed, or no_answer when no tag is
  present.
- ``regex``: the user's ``pattern`` -> 1.0 when it matches, else 0.0. ``match="fullmatch"`` (default) must match the
  whole completion with leading/trailing whitespace removed; ``match="search"`` anywhere. ``re.DOTALL`` is on, so
  ``.`` crosses lines.

Not covered: chat templates that put ``<think>`` in the prompt (the completion then starts inside the thinking;
use ``regex``), guarding user patterns against catastrophic backtracking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .base import RewardFunction, RewardResult
from .math_answers import extract_boxed_answers

FORMAT_KINDS = ("boxed", "think_answer", "regex")
REGEX_MATCH_MODES = ("fullmatch", "search")
_THINK_ANSWER = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_THINK_ANSWER_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_TAG_CREDIT = 0.25
_PARTIAL_CAP = 0.75


@dataclass(frozen=True)
class FormatRewardFunction(RewardFunction):
    """Score the shape of a completion; see the module docstring for each kind's scale."""

    kind: str = "boxed"
    """One of ``boxed``, ``think_answer``, ``regex``."""
    pattern: str | None = None
    """The regular expression, for ``kind="regex"`` only."""
    name: str | None = None  # type: ignore[assignment]
    """Metric name; defaults to ``format_<kind>``."""
    match: str = "fullmatch"
    """For ``regex``: ``fullmatch`` (whole stripped completion) or ``search`` (anywhere)."""
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FORMAT_KINDS:
            raise ValueError(f"FormatRewardFunction.kind={self.kind!r}; expected one of {FORMAT_KINDS}")
        if self.match not in REGEX_MATCH_MODES:
            raise ValueError(f"FormatRewardFunction.match={self.match!r}; expected one of {REGEX_MATCH_MODES}")
        if self.kind == "regex":
            if not isinstance(self.pattern, str) or not self.pattern:
                raise ValueError(f"FormatRewardFunction(kind='regex') needs a non-empty pattern, got {self.pattern!r}")
            try:
                compiled = re.compile(self.pattern, re.DOTALL)
            except re.error as exc:
                raise ValueError(f"FormatRewardFunction.pattern={self.pattern!r} is not a valid regex: {exc}") from None
            object.__setattr__(self, "_compiled", compiled)
        elif self.pattern is not None:
            raise ValueError(
                f"FormatRewardFunction.pattern={self.pattern!r} is only used with kind='regex' (kind={self.kind!r})"
            )
        if self.name is None:
            object.__setattr__(self, "name", f"format_{self.kind}")
        elif not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"FormatRewardFunction.name={self.name!r}; expected a non-empty string")

    def score(self, completion: str, **row: Any) -> RewardResult:
        if self.kind == "boxed":
            return _score_boxed(completion)
        if self.kind == "think_answer":
            return _score_think_answer(completion)
        return self._score_regex(completion)

    def _score_regex(self, completion: str) -> RewardResult:
        assert self._compiled is not None
        if self.match == "fullmatch":
            found = self._compiled.fullmatch(completion.strip())
        else:
            found = self._compiled.search(completion)
        if found:
            return RewardResult(1.0, "passed", f"matches {self.pattern!r} ({self.match})", extracted=found.group(0))
        return RewardResult(0.0, "failed", f"does not match {self.pattern!r} ({self.match})")


def _score_boxed(completion: str) -> RewardResult:
    boxes = extract_boxed_answers(completion)
    filled = [b for b in boxes if b.strip()]
    if not boxes:
        return RewardResult(0.0, "no_answer", "no \\boxed{}")
    if not filled:
        return RewardResult(0.0, "failed", f"{len(boxes)} empty \\boxed{{}}")
    if len(boxes) > 1:
        return RewardResult(0.0, "failed", f"{len(boxes)} \\boxed{{}} found; exactly one expected")
    return RewardResult(1.0, "passed", "exactly one \\boxed{}", extracted=filled[0])


def _score_think_answer(completion: str) -> RewardResult:
    whole = _THINK_ANSWER.fullmatch(completion)
    counts = {tag: completion.count(tag) for tag in _THINK_ANSWER_TAGS}
    if whole and all(n == 1 for n in counts.values()) and whole["think"].strip() and whole["answer"].strip():
        return RewardResult(1.0, "passed", "<think>...</think><answer>...</answer>", extracted=whole["answer"].strip())
    once = [tag for tag, n in counts.items() if n == 1]
    if not any(counts.values()):
        return RewardResult(0.0, "no_answer", "no <think>/<answer> tags")
    score = min(_TAG_CREDIT * len(once), _PARTIAL_CAP)
    return RewardResult(score, "failed", f"partial structure: tags present once: {once}; counts {counts}")
