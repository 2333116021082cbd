"""Reporting for the PPO loop: callbacks, the logging window, the console line and TensorBoard.

The PPO trainer speaks the ``transformers.TrainerCallback`` protocol like TRL's trainers, so the package's
``MetricsHistoryCallback`` (JSON, PNG) and ``AccuracyEvalCallback`` work unchanged. Callbacks receive the
:class:`TrainerConfig` as ``args`` (not a ``TrainingArguments``): callbacks that read TrainingArguments-only
fields will not find them.

Metrics of the steps between two logs are averaged (as TRL does); a log line is printed above the progress bar
as a dict of 4-significant-digit strings, the same look as TRL's console output.

``report_to``: ``tensorboard`` (``torch.utils.tensorboard.SummaryWriter`` in ``<output_dir>/runs/<run_name>``)
and ``none``. Other integrations (wandb, mlflow, ...) are rejected at construction for PPO: TRL's trainers get
them from transformers, this loop does not implement them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable

from ...config import ConfigError, TrainerConfig

SUPPORTED_REPORT_TO = ("tensorboard", "none")


def check_report_to(report_to: Iterable[str]) -> list[str]:
    """The integrations to use; ConfigError for one PPO does not support."""
    chosen = [r for r in report_to if r != "none"]
    bad = [r for r in chosen if r not in SUPPORTED_REPORT_TO]
    if bad:
        raise ConfigError(
            f"report_to={list(report_to)!r}: trainer_type='ppo' supports {list(SUPPORTED_REPORT_TO)}; "
            f"{bad} is available with 'grpo'/'rloo' (TRL) only"
        )
    return chosen


class CallbackRunner:
    """Calls ``TrainerCallback`` hooks in order; a hook may return a new ``TrainerControl``."""

    def __init__(self, callbacks: Iterable[Any], args: Any, state: Any, control: Any) -> None:
        self.callbacks: list[Any] = []
        self.args, self.state, self.control = args, state, control
        for cb in callbacks:
            self.add(cb)

    def add(self, callback: Any, first: bool = False) -> None:
        """Append ``callback`` (a class is instantiated), or put it ahead of all others with ``first``."""
        callback = callback() if isinstance(callback, type) else callback
        self.callbacks.insert(0 if first else len(self.callbacks), callback)

    def call(self, event: str, **kwargs: Any) -> Any:
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is None:
                continue
            result = hook(self.args, self.state, self.control, **kwargs)
            if result is not None:
                self.control = result
        return self.control


class MetricWindow:
    """Per-step metric dicts collected until the next log, then averaged key by key."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(self, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))

    def pop_mean(self) -> dict[str, float]:
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        out = {}
        for key in keys:
            values = [row[key] for row in self.rows if key in row]
            out[key] = sum(values) / len(values)
        self.rows = []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]


def format_log_line(logs: dict[str, Any]) -> str:
    """TRL's console look: ``{'reward': '0.25', ...}`` with 4 significant digits."""
    shown = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in logs.items()}
    return str(shown)


class LogSinks:
    """Console (above the tqdm bar) and TensorBoard, on the main process only."""

    def __init__(self, config: TrainerConfig, is_main_process: bool) -> None:
        self.is_main = is_main_process
        self.writer = None
        if is_main_process and "tensorboard" in check_report_to(config.report_to):
            from torch.utils.tensorboard import SummaryWriter

            run = config.run_name or f"ppo-{time.strftime('%Y%m%d-%H%M%S')}"
            self.log_dir = Path(config.output_dir) / "runs" / run
            self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, logs: dict[str, Any], step: int) -> None:
        if not self.is_main:
            return
        from tqdm.auto import tqdm

        tqdm.write(format_log_line(logs))
        if self.writer is not None:
            for key, value in logs.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def rollout_timing(started: float, sampled: float, reward_seconds: float, tokens: int) -> dict[str, float]:
    """The rollout's timing metrics, named as the GRPO/RLOO backend names them: ``timing/generate`` is the whole
    rollout (sampling, the log-prob/value passes, the rewards), ``timing/sample`` the ``generate`` call alone."""
    seconds = time.perf_counter() - started
    out = {"timing/generate": seconds, "timing/sample": sampled - started, "timing/reward": reward_seconds}
    if seconds > 0:
        out["timing/tokens_per_s"] = tokens / seconds
    return out


def train_summary(runtime: float, steps: int, global_batch: int, losses: list[float]) -> dict[str, float]:
    """The end-of-training log, with transformers' names: runtime, samples and steps per second, mean loss."""
    return {
        "train_runtime": round(runtime, 4),
        "train_samples_per_second": round(steps * global_batch / runtime, 3) if runtime > 0 else 0.0,
        "train_steps_per_second": round(steps / runtime, 3) if runtime > 0 else 0.0,
        "train_loss": sum(losses) / len(losses) if losses else float("nan"),
    }
