"""A pass-rate curriculum: draw the training prompts the model sometimes solves, retire the ones it always solves,
down-weight the ones it never solves.

Per prompt (a row index of the training set) the record keeps the pass rate of its most recent group of samples
(the share of completions whose reward reached ``pass_threshold``), how often it was drawn, and the step it was last
drawn. Sampling weights, from the record:

========================  ===========================================  =========================
prompt                    record                                       weight
========================  ===========================================  =========================
unseen                    never drawn                                  ``unseen_weight`` (1)
learning                  last pass rate strictly between 0 and 1      ``learning_weight`` (2)
failed                    last pass rate 0                             ``failed_weight`` (0.25)
retired (solved)          last pass rate 1, drawn < ``recheck_steps``  0
                          steps ago
due for a re-check        last pass rate 1, ``recheck_steps`` ago      ``unseen_weight``
========================  ===========================================  =========================

Draws are without replacement within a batch (with replacement only when fewer prompts have a weight than the batch
needs), from a generator the caller keys by (seed, step): with the record, that decides the batch, so a run resumed
from a checkpoint that saved the record draws what the uninterrupted run drew, and every process computes the same
global draw. The weights follow prime-rl's difficulty pools and open-instruct's ``no_resampling_pass_rate`` in spirit;
the numbers are ours, not tuned (the README's ``bench_sampling`` table says what they bought).

Not covered: prompts identified by content (the record is by row index: duplicated rows are separate prompts), a
pass rate over a longer window than the last group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..common.errors import ConfigError


@dataclass(frozen=True)
class CurriculumSettings:
    """How the record turns into sampling weights (see the module docstring)."""

    pass_threshold: float = 1.0
    recheck_steps: int = 20
    unseen_weight: float = 1.0
    learning_weight: float = 2.0
    failed_weight: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.recheck_steps, bool) or not isinstance(self.recheck_steps, int) or self.recheck_steps < 1:
            raise ConfigError(f"curriculum recheck_steps={self.recheck_steps!r} must be an integer >= 1")
        for name in ("unseen_weight", "learning_weight", "failed_weight", "pass_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"curriculum {name}={value!r} must be a finite number")
        for name in ("unseen_weight", "learning_weight", "failed_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"curriculum {name}={getattr(self, name)!r} must be >= 0")


class PassRateCurriculum:
    """The per-prompt record of a training set of ``size`` prompts and the weights it gives."""

    def __init__(self, size: int, settings: CurriculumSettings | None = None):
        if size < 1:
            raise ConfigError(f"a curriculum needs at least one prompt (got a training set of {size})")
        self.settings = settings or CurriculumSettings()
        self.rate = np.full(size, np.nan)  # last group's pass rate; NaN: never drawn
        self.seen = np.zeros(size, dtype=np.int64)
        self.last_step = np.full(size, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rate)

    # ------------------------------------------------------------------------------------------- sampling
    def _states(self, step: int) -> dict[str, np.ndarray]:
        """(size,) boolean masks at ``step``: ``seen``, ``learning`` (0 < rate < 1), ``failed`` (rate 0) and
        ``retired`` (solved within the last ``recheck_steps`` steps). A solved prompt past its re-check is seen but in
        none of the other three: it is drawn like an unseen one."""
        seen = ~np.isnan(self.rate)
        return {"seen": seen, "learning": seen & (self.rate > 0.0) & (self.rate < 1.0),
                "failed": seen & (self.rate <= 0.0),
                "retired": seen & (self.rate >= 1.0) & (step - self.last_step < self.settings.recheck_steps)}

    def weights(self, step: int) -> np.ndarray:
        """(size,) sampling probabilities at training step ``step`` (uniform when every weight is 0)."""
        s, states = self.settings, self._states(step)
        w = np.full(len(self), s.unseen_weight, dtype=np.float64)
        w[states["failed"]] = s.failed_weight
        w[states["learning"]] = s.learning_weight
        w[states["retired"]] = 0.0
        total = w.sum()
        return w / total if total > 0 else np.full(len(self), 1.0 / len(self))

    def draw(self, rng: np.random.Generator, count: int, step: int) -> np.ndarray:
        """``count`` prompt indices for the batch at ``step``: weighted, without replacement when enough prompts
        have a weight."""
        p = self.weights(step)
        replace = count > int(np.count_nonzero(p))
        return rng.choice(len(self), size=count, replace=replace, p=p)

    # ------------------------------------------------------------------------------------------- the record
    def update(self, indices: Sequence[int], pass_rates: Sequence[float], step: int) -> None:
        """Record one group per entry: prompt ``indices[i]`` passed ``pass_rates[i]`` of its samples at ``step``
        (NaN: no sample could be scored, nothing recorded). Later entries win for a repeated prompt."""
        for index, rate in zip(indices, pass_rates):
            if np.isnan(rate):
                continue
            self.rate[index] = float(rate)
            self.seen[index] += 1
            self.last_step[index] = step

    def metrics(self, step: int, drawn_rates: Sequence[float] = ()) -> dict[str, float]:
        """Shares of the training set, ``curriculum/{seen,learning,failed,retired}_share``, and the mean pass rate of
        the groups just recorded (``drawn_rates``, NaN ignored) as ``curriculum/drawn_pass_rate``."""
        n = float(len(self))
        out = {f"curriculum/{name}_share": float(mask.sum()) / n for name, mask in self._states(step).items()}
        rates = [r for r in drawn_rates if not np.isnan(r)]
        if rates:
            out["curriculum/drawn_pass_rate"] = float(np.mean(rates))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rate": self.rate.copy(), "seen": self.seen.copy(), "last_step": self.last_step.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rate = np.asarray(state["rate"], dtype=np.float64)
        if rate.shape != self.rate.shape:
            raise ValueError(f"curriculum record for {rate.shape[0]} prompts cannot be loaded into a training set of "
                             f"{len(self)}: resume with the same training data")
        self.rate = rate.copy()
        self.seen = np.asarray(state["seen"], dtype=np.int64).copy()
        self.last_step = np.asarray(state["last_step"], dtype=np.int64).copy()


_DRAW_KEY = 7919  # keeps the curriculum's draws apart from other keyed draws (dynamic sampling's refills)


def curriculum_from_config(config: Any, size: int) -> PassRateCurriculum | None:
    """The curriculum a ``TrainerConfig`` asks for (``curriculum``, ``curriculum_pass_threshold``,
    ``curriculum_recheck_steps``) over a training set of ``size`` prompts; None when it is off."""
    if not config.curriculum:
        return None
    return PassRateCurriculum(size, CurriculumSettings(pass_threshold=config.curriculum_pass_threshold,
                                                       recheck_steps=config.curriculum_recheck_steps))


def draw_global_batch(curriculum: PassRateCurriculum, seed: int, step: int, count: int) -> np.ndarray:
    """The ``count`` prompts of the global batch at ``step`` (every process computes the same and takes its slice)."""
    return curriculum.draw(np.random.default_rng([int(seed), int(step), _DRAW_KEY]), count, int(step))


def record_groups(curriculum: PassRateCurriculum, row_indices: Sequence[int], rewards: Sequence[float],
                  group_size: int, step: int) -> list[float]:
    """Record the groups of a scored batch: ``row_indices``/``rewards`` per completion (G consecutive per prompt;
    index -1: a row the curriculum did not draw, ignored) -> the pass rates recorded (NaN: group unscored)."""
    rates = group_pass_rates(rewards, group_size, curriculum.settings.pass_threshold)
    firsts = list(row_indices)[::group_size]
    known = [(int(i), r) for i, r in zip(firsts, rates) if i >= 0]
    curriculum.update([i for i, _ in known], [r for _, r in known], step)
    return [r for _, r in known]


def group_pass_rates(rewards: Sequence[float], group_size: int, threshold: float) -> list[float]:
    """(N,) rewards (NaN: unscored), G consecutive per prompt -> the share of each group's scored rewards >= threshold
    (NaN for a group with none scored)."""
    values = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or len(values) % group_size:
        raise ValueError(f"{len(values)} rewards do not split into groups of {group_size}")
    out = []
    for g in values.reshape(-1, group_size):
        scored = g[~np.isnan(g)]
        out.append(float((scored >= threshold).mean()) if scored.size else float("nan"))
    return out
