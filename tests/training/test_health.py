"""Training-health warnings (core/training/health.py): the conditions on hand-written metric rows, their events,
and a real tiny GRPO run whose reward cannot vary."""

from __future__ import annotations

import json
import logging

import pytest

from posttrain_llm.online_rl_trainer.core.config import TrainerConfig
from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer
from posttrain_llm.online_rl_trainer.core.training import health
from posttrain_llm.online_rl_trainer.core.training.health import check_health, health_events
from tests.builders import plus_one_rows


def rows(n, **values):
    """``n`` training rows (steps 1..n); a value may be a list (one per row) or a number."""
    out = []
    for i in range(n):
        row = {"step": i + 1, "reward": 0.5, "reward_std": 0.3, "frac_reward_zero_std": 0.2, "entropy": 1.0,
               "completions/clipped_ratio": 0.0}
        row.update({k: (v[i] if isinstance(v, list) else v) for k, v in values.items()})
        out.append(row)
    return out


def test_a_healthy_run_has_no_warning():
    assert check_health(rows(30)) == {}
    assert health_events(rows(30)) == []


def test_entropy_collapse_needs_the_whole_window_below_a_tenth_of_the_first_value():
    w = health.WINDOW
    collapsed = [2.0] + [0.1] * w  # 0.1 < 0.1 * 2.0 = 0.2 for the last WINDOW steps
    found = check_health(rows(w + 1, entropy=collapsed))
    assert set(found) == {"entropy_collapse"} and "below 0.2 nats/token" in found["entropy_collapse"]
    almost = [2.0] + [0.1] * (w - 1) + [0.25]  # the last step is back above the limit
    assert check_health(rows(w + 1, entropy=almost)) == {}
    short = [2.0] + [0.1] * (w - 1)  # one step too few
    assert check_health(rows(w, entropy=short)) == {}
    # the absolute floor: a run that starts nearly deterministic is not flagged until it is below 0.01
    assert check_health(rows(w + 1, entropy=[0.05] + [0.02] * w)) == {}
    assert "entropy_collapse" in check_health(rows(w + 1, entropy=[0.05] + [0.005] * w))


@pytest.mark.parametrize("key, value", [("frac_reward_zero_std", 1.0), ("reward_std", 0.0)])
def test_no_learning_signal_after_flat_steps(key, value):
    n = health.FLAT_STEPS
    flat = rows(n, **{key: value}, reward=0.0)
    found = check_health(flat)
    assert set(found) == {"no_learning_signal"} and "(now 0)" in found["no_learning_signal"]
    assert check_health(flat[:-1]) == {}  # one step short
    broken = rows(n, **{key: [value] * (n - 1) + [0.5 if key == "frac_reward_zero_std" else 0.1]})
    assert check_health(broken) == {}


def test_with_dynamic_sampling_the_share_before_the_filter_decides():
    n = health.FLAT_STEPS
    # the trained batch is all informative (frac_reward_zero_std 0) but every group drawn was flat
    flat = rows(n, **{"frac_reward_zero_std": 0.0, "sampling/zero_variance_share": 1.0}, reward=1.0)
    assert set(check_health(flat)) == {"no_learning_signal"}
    fine = rows(n, **{"frac_reward_zero_std": 1.0, "sampling/zero_variance_share": 0.6})
    assert check_health(fine) == {}


def test_length_blowup_when_half_the_completions_are_cut():
    w = health.WINDOW
    assert set(check_health(rows(w, **{"completions/clipped_ratio": 0.5}))) == {"length_blowup"}
    assert check_health(rows(w, **{"completions/clipped_ratio": [0.5] * (w - 1) + [0.49]})) == {}


def test_events_start_once_and_rearm_after_the_condition_clears():
    w = health.WINDOW
    clipped = [0.9] * (w + 3) + [0.0] + [0.9] * w
    history = rows(len(clipped), **{"completions/clipped_ratio": clipped})
    history.insert(3, {"step": 3, "eval/accuracy": 0.5})  # evaluation-only rows are not training steps
    events = health_events(history)
    assert [(e["step"], e["condition"]) for e in events] == [(w, "length_blowup"), (2 * w + 4, "length_blowup")]


def constant(completions, **kwargs):
    return [1.0] * len(completions)


def test_a_run_whose_reward_cannot_vary_warns_and_records_it(tmp_path, tiny_model_dir, caplog):
    steps = health.FLAT_STEPS + 1
    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), max_steps=steps, num_generations=2,
                           per_device_train_batch_size=4, max_completion_length=8, output_dir=str(tmp_path / "out"),
                           save_steps=1000, torch_num_threads=1, learning_rate=1e-4, kl_coef=0.0)
    trainer = OnlineRLTrainer(config, constant, plus_one_rows(64))
    with caplog.at_level(logging.WARNING, logger=health.__name__):
        trainer.train()
    # (the random tiny model rarely ends within 8 tokens, so a length blow-up is reported too: it is real)
    warnings = [r.getMessage() for r in caplog.records if r.name == health.__name__ and "no learning" in r.getMessage()]
    assert len(warnings) == 1 and f"step {health.FLAT_STEPS}: no learning signal" in warnings[0]
    train_rows = [h for h in trainer.metrics_history if "reward" in h and "train_runtime" not in h]
    flags = [h["health/no_learning_signal"] for h in train_rows]
    assert flags == [0.0] * (health.FLAT_STEPS - 1) + [1.0, 1.0]
    trainer.save_model(tmp_path / "final")
    saved = json.loads((tmp_path / "final" / "training_metrics.json").read_text())
    events = [(e["step"], e["condition"]) for e in saved["health_warnings"] if e["condition"] != "length_blowup"]
    assert events == [(health.FLAT_STEPS, "no_learning_signal")]
