"""A weighted sum of rewards, with the per-component breakdown kept.

``CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction()], weights=[1.0, 0.2])`` scores
``1.0 * math + 0.2 * format`` (a plain weighted sum, not a weighted mean: this is what TRL computes when it is given
several reward functions with ``reward_weights``). Trainers that wrap TRL should pass :attr:`components` to TRL
instead of the composite, so that each component is logged on its own; ``__call__`` on the composite is for
evaluation and for trainers of our own.

Components may be :class:`RewardFunction` objects or plain reward callables (``fn(completions, **kwargs) ->
list[float | None]``); callables are wrapped in :class:`CallableReward`, which calls them with whole batches just as
TRL would. A plain callable's verdict is only its number: positive -> ``passed``, otherwise ``failed``.

Status of a composite verdict: ``error`` (score None) if any component could not decide, ``passed`` if all passed,
``no_answer`` if all gave no answer, else ``failed``. ``details`` maps each component's name to its score.

Not covered: negative weights (penalties): write the penalty as a reward function that returns negative values.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .base import RewardFunction, RewardFunctionError, RewardResult, reward_name


class CallableReward(RewardFunction):
    """A plain reward callable seen as a :class:`RewardFunction` (batch calls go straight to the callable)."""

    def __init__(self, fn: Callable[..., Any]):
        if not callable(fn):
            raise TypeError(f"reward {fn!r} is not callable; pass a RewardFunction or a function")
        self.fn = fn

    @property
    def name(self) -> str:
        return reward_name(self.fn)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return list(self.fn(completions=completions, **kwargs))

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        values = self(completions, **kwargs)
        if len(values) != len(completions):
            raise RewardFunctionError(
                f"reward {self.name!r} returned {len(values)} values for {len(completions)} completions"
            )
        return [_result_from_value(self.name, i, v) for i, v in enumerate(values)]

    def score(self, completion: str, **row: Any) -> RewardResult:
        return self.score_batch([completion], **{k: [v] for k, v in row.items()})[0]


def _result_from_value(name: str, index: int, value: Any) -> RewardResult:
    if value is None:
        return RewardResult(None, "error", f"{name} could not decide")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RewardFunctionError(
                f"reward {name!r} returned {value!r} for sample {index}; expected a float or None"
            ) from None
    if not math.isfinite(value):
        raise RewardFunctionError(f"reward {name!r} returned {value} for sample {index}; rewards must be finite")
    return RewardResult(float(value), "passed" if value > 0 else "failed", f"{name} = {value:g}")


def _scores_by_component(component: RewardFunction, completions: Sequence[Any], kwargs: dict) -> list[RewardResult]:
    """Per-sample results of one component; rewards that only implement ``__call__`` are read by value."""
    if type(component).score is RewardFunction.score:
        return CallableReward(component).score_batch(completions, **kwargs)
    return component.score_batch(completions, **kwargs)


class CompositeRewardFunction(RewardFunction):
    """Weighted sum of reward functions; ``None`` from any component makes the whole verdict ``None``."""

    def __init__(
        self,
        rewards: Sequence[RewardFunction | Callable[..., Any]],
        weights: Sequence[float] | None = None,
        name: str = "composite",
    ):
        if isinstance(rewards, (str, bytes)) or not isinstance(rewards, Sequence) or len(rewards) == 0:
            raise ValueError(f"CompositeRewardFunction needs a non-empty list of rewards, got {rewards!r}")
        wrapped = [r if isinstance(r, RewardFunction) else CallableReward(r) for r in rewards]
        if weights is None:
            weights = [1.0] * len(wrapped)
        weights = list(weights)
        if len(weights) != len(wrapped):
            raise ValueError(
                f"CompositeRewardFunction got {len(wrapped)} rewards {[r.name for r in wrapped]} but "
                f"{len(weights)} weights {weights}; give one weight per reward"
            )
        for r, w in zip(wrapped, weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weight {w!r} for reward {r.name!r} must be a finite number >= 0")
        if not any(w > 0 for w in weights):
            raise ValueError(f"all weights are zero ({weights}); at least one reward must count")
        names = [r.name for r in wrapped]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"reward names must be unique within a composite (they name the logged metrics); "
                f"duplicated: {duplicates}. Give the rewards distinct names"
            )
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"CompositeRewardFunction name={name!r}; expected a non-empty string")
        self._components = list(zip(wrapped, (float(w) for w in weights)))
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def components(self) -> list[tuple[RewardFunction, float]]:
        """(reward, weight) pairs; trainers hand these to TRL one by one so each is logged."""
        return list(self._components)

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        per_component = [(r, w, _scores_by_component(r, completions, kwargs)) for r, w in self._components]
        return [self._combine([(r, w, results[i]) for r, w, results in per_component]) for i in range(len(completions))]

    def score(self, completion: str, **row: Any) -> RewardResult:
        return self.score_batch([completion], **{k: [v] for k, v in row.items()})[0]

    def _combine(self, parts: list[tuple[RewardFunction, float, RewardResult]]) -> RewardResult:
        details = {r.name: res.score for r, _, res in parts}
        reason = ", ".join(f"{r.name}={res.score} ({res.status})" for r, _, res in parts)
        statuses = {res.status for _, _, res in parts}
        if "error" in statuses:
            return RewardResult(None, "error", reason, details=details)
        total = sum(w * res.score for _, w, res in parts)  # type: ignore[operator]
        status = "passed" if statuses == {"passed"} else "no_answer" if statuses == {"no_answer"} else "failed"
        extracted = next((res.extracted for _, _, res in parts if res.extracted is not None), None)
        return RewardResult(total, status, reason, extracted=extracted, details=details)

    def __repr__(self) -> str:
        inner = ", ".join(f"{r.name}×{w:g}" for r, w in self._components)
        return f"CompositeRewardFunction(name={self._name!r}, [{inner}])"
