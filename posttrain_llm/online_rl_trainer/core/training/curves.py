"""Training outputs on disk: metrics JSON and the reward-curve PNG.

matplotlib runs headless (Agg). The plot shows the mean total reward per logged step, each reward component on
its own, the task accuracy from evaluation steps when there were any, and a dashed line where a training-health
warning started (``health.py``); the JSON lists those warnings under ``health_warnings``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..files.atomic import write_json_atomic
from .health import health_events


def write_metrics_json(history: Sequence[dict[str, Any]], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """``{"history": [...], "health_warnings": [...], **extra}`` as JSON, atomically (a full disk never leaves a
    truncated file in place)."""
    return write_json_atomic(path, {"history": list(history), "health_warnings": health_events(history),
                                    **(extra or {})})


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in history:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(row.get("step", len(xs))))
            ys.append(float(v))
    return xs, ys


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "Online RL training") -> Path | None:
    """Draw reward (total and per component) and eval accuracy over steps. Returns None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reward_x, reward_y = _series(history, "reward")
    components = sorted({k for row in history for k in row if k.startswith("rewards/") and k.endswith("/mean")})
    acc_x, acc_y = _series(history, "eval/accuracy")
    if not reward_x and not acc_x:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if reward_x:
        ax.plot(reward_x, reward_y, label="reward (total)", color="black", linewidth=1.8)
    if len(components) > 1:
        for key in components:
            x, y = _series(history, key)
            ax.plot(x, y, label=key.removeprefix("rewards/").removesuffix("/mean"), linewidth=1.0, alpha=0.8)
    if acc_x:
        ax.plot(acc_x, acc_y, "o-", label="eval accuracy", color="tab:red")
    for i, event in enumerate(health_events(history)):
        ax.axvline(event["step"], color="tab:orange", linestyle="--", linewidth=1.0,
                   label="health warning" if i == 0 else None)
        ax.annotate(event["condition"].replace("_", " "), (event["step"], 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7, color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward / accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
