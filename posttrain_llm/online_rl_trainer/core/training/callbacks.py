"""Trainer callbacks shared by every algorithm: per-step metric history, step timing, task-accuracy evaluation.

They use the ``transformers.TrainerCallback`` protocol, which TRL's trainers call; our PPO loop calls the same
hooks, so metrics, plots and evaluation look the same whichever algorithm ran.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from transformers import TrainerCallback


class MetricsHistoryCallback(TrainerCallback):
    """Records every log dict with its step, and adds ``step_time`` (mean seconds per optimizer step since the last log)."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self._step_started: float | None = None
        self._step_times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_started is not None:
            self._step_times.append(time.perf_counter() - self._step_started)
            self._step_started = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if self._step_times and "train_runtime" not in logs:
            # Added in place so the console printer, which runs after this callback, shows it too. TRL >= 1.16 logs
            # its own ``step_time`` (its training_step); that one is kept.
            logs.setdefault("step_time", sum(self._step_times) / len(self._step_times))
            self._step_times = []
        self.history.append({"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}})


class AccuracyEvalCallback(TrainerCallback):
    """Every ``eval_steps`` optimizer steps, calls ``evaluate_fn(step)`` (task accuracy on the eval set).

    Like ``transformers``' ``eval_steps``, it runs at multiples of ``eval_steps``, not at step 0; call
    ``OnlineRLTrainer.evaluate()`` before ``train()`` for a starting point. It asks for a log at that step, so the
    metrics ``evaluate_fn`` leaves with :class:`PendingLogsCallback` go out with that step's training metrics.
    """

    def __init__(self, evaluate_fn: Callable[[int], Any], eval_steps: int):
        self.evaluate_fn = evaluate_fn
        self.eval_steps = eval_steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > 0 and state.global_step % self.eval_steps == 0:
            self.evaluate_fn(state.global_step)
            control.should_log = True
        return control


class PendingLogsCallback(TrainerCallback):
    """Adds metrics computed between two logs (``pending``) to the next training log dict, in place.

    It must be the *first* callback: transformers runs the ``report_to`` integrations (TensorBoard, wandb...)
    before user callbacks, and each receives the same dict, so only a callback placed ahead of them reaches
    every integration, the console and the metrics history with the same numbers.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending and logs is not None and "train_runtime" not in logs:
            logs.update(self.pending)
            self.pending = {}


def _plain(value: Any) -> Any:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.item() if value.numel() == 1 else value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return value
