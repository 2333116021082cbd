"""Training health: plain-language warnings when a run looks unhealthy, from the metrics every step logs.

Three conditions, each judged on the last logged training steps (all algorithms log the metrics they read):

- **entropy collapse**: the mean per-token entropy (``entropy``) stayed below ``ENTROPY_FRACTION`` of its first
  logged value, or below ``ENTROPY_FLOOR`` nats, for ``WINDOW`` logged steps: the policy has stopped exploring, so
  its samples (and the groups' rewards) stop differing.
- **no learning signal**: for ``FLAT_STEPS`` logged steps every group's rewards were equal (``frac_reward_zero_std``
  = 1, GRPO/RLOO; with dynamic sampling ``sampling/zero_variance_share``, the share before its filter) or every
  sample got the same reward (``reward_std`` = 0): advantages are 0 and nothing is learned.
  The message says at what reward (0: the task is too hard; 1: solved, or a reward that cannot fail).
- **length blow-up**: at least ``CLIPPED_SHARE`` of the completions hit ``max_completion_length``
  (``completions/clipped_ratio``) for ``WINDOW`` logged steps: answers are cut before they end.

:class:`HealthCallback` checks after every training log, adds ``health/<condition>`` = 1.0 or 0.0 to the log (so
the flags are in ``training_metrics.json`` and every ``report_to`` integration), and writes a warning to the console
when a condition starts (once, until it clears). :func:`health_events` rebuilds the events from a metrics history:
``training_metrics.json`` lists them under ``health_warnings`` and ``reward_curve.png`` marks them.

The thresholds are fixed, chosen to flag runs that are broken rather than merely slow; they are not a tuned detector.
Logged but not judged: the importance-ratio tails (PPO: ``ratio/max``, ``ratio/min`` over every token of a step;
GRPO/RLOO: TRL's ``clip_ratio/*``; with ``num_iterations=1`` their ratio is exactly 1).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

WINDOW = 5
FLAT_STEPS = 10
ENTROPY_FRACTION = 0.1
ENTROPY_FLOOR = 0.01
CLIPPED_SHARE = 0.5
CONDITIONS = ("entropy_collapse", "no_learning_signal", "length_blowup")


def _value(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _last(rows: Sequence[Mapping[str, Any]], key: str, n: int) -> list[float] | None:
    """The last ``n`` values of ``key``, or None when fewer than ``n`` of the last rows logged it."""
    values = [_value(r, key) for r in rows[-n:]]
    return values if len(values) == n and None not in values else None


def check_health(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The conditions that hold at the last of the training ``rows`` (one dict per logged step, in order) ->
    {condition: message}."""
    found: dict[str, str] = {}
    first = next((_value(r, "entropy") for r in rows if _value(r, "entropy") is not None), None)
    entropy = _last(rows, "entropy", WINDOW)
    if entropy is not None and first is not None:
        limit = max(ENTROPY_FLOOR, ENTROPY_FRACTION * first)
        if max(entropy) < limit:
            found["entropy_collapse"] = (
                f"entropy collapse: the policy's entropy has been below {limit:.3g} nats/token for {WINDOW} logged steps"
                f" (now {entropy[-1]:.3g}, first {first:.3g}); it samples nearly the same completion every time. "
                "Lower the learning rate, raise the temperature, or add a KL penalty (kl_coef)")
    # With dynamic sampling the trained batch holds informative groups only: read the share before the filter.
    zero = _last(rows, "sampling/zero_variance_share", FLAT_STEPS) or _last(rows, "frac_reward_zero_std", FLAT_STEPS)
    spread = _last(rows, "reward_std", FLAT_STEPS)
    reward = _value(rows[-1], "reward") if rows else None
    if (zero is not None and min(zero) >= 1.0) or (spread is not None and max(spread) <= 0.0):
        at = f"{reward:.3g}" if reward is not None else "?"
        found["no_learning_signal"] = (
            f"no learning signal: for {FLAT_STEPS} logged steps every sample of a prompt got the same reward (now "
            f"{at}), so every advantage is 0. At 0 the task is too hard for the model (easier data, a warm-up, partial "
            "credit); at the maximum it is solved or the reward cannot fail")
    clipped = _last(rows, "completions/clipped_ratio", WINDOW)
    if clipped is not None and min(clipped) >= CLIPPED_SHARE:
        found["length_blowup"] = (
            f"length blow-up: {clipped[-1]:.0%} of the completions hit max_completion_length (at least "
            f"{CLIPPED_SHARE:.0%} for {WINDOW} logged steps); answers are cut before they end. Raise "
            "max_completion_length, or penalise length")
    return found


def is_training_row(row: Mapping[str, Any]) -> bool:
    """A training step's log (not an evaluation-only row, not the final summary)."""
    return "reward" in row and "train_runtime" not in row


def health_events(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every start of a condition in a metrics history: [{"step", "condition", "message"}], in order."""
    rows: list[Mapping[str, Any]] = []
    active: set[str] = set()
    events = []
    for row in history:
        if not is_training_row(row):
            continue
        rows.append(row)
        found = check_health(rows)
        for condition in CONDITIONS:
            if condition in found and condition not in active:
                events.append({"step": row.get("step"), "condition": condition, "message": found[condition]})
        active = set(found)
    return events


class HealthCallback(TrainerCallback):
    """Adds ``health/<condition>`` flags to every training log and warns when a condition starts (module docstring).
    Put it ahead of the metrics history (``add_callback_first``) so the flags reach the history and the integrations."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.active: set[str] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run starts from the logs its checkpoint saved (transformers' and our PPO's state.log_history),
        # so the flags match those of the uninterrupted run.
        self.rows = [dict(r) for r in getattr(state, "log_history", None) or [] if is_training_row(r)]
        self.active = set(check_health(self.rows)) if self.rows else set()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not is_training_row(logs):
            return
        self.rows.append(dict(logs))
        found = check_health(self.rows)
        for condition in CONDITIONS:
            logs[f"health/{condition}"] = 1.0 if condition in found else 0.0
            if condition in found and condition not in self.active:
                logger.warning("step %d: %s", state.global_step, found[condition])
        self.active = set(found)
