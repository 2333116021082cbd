"""The CPU fast path of the GRPO/RLOO backend (``backends/trl/cpu_speed.py``): the compact log-prob head gives the
same log-probs from fewer rows, bf16 autocast stays within the stated tolerance of fp32, and the settings resolve
and fail as documented."""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.core.backends.cpu_bf16 import (
    DRIFT_CHECK_EVERY,
    LOGPROB_TOLERANCE,
    DriftMonitor,
    logprob_drift,
)
from posttrain_llm.online_rl_trainer.core.backends.trl.cpu_speed import bf16_autocast, compact_lm_head
from posttrain_llm.online_rl_trainer.core.common import machine as machine_module
from posttrain_llm.online_rl_trainer.core.common.machine import Machine, check_machine, cpu_bf16_autocast_on

torch.set_num_threads(1)


def _fused_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.eval()
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def _batch(vocab: int, prompt_len: int = 12, completion_len: int = 5, rows: int = 3):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (rows, prompt_len + completion_len), generator=gen)
    labels = ids.clone()
    labels[:, :prompt_len] = -100  # only the completion is scored, as TRL does
    labels[0, -2:] = -100  # a completion that ended early (padding)
    return ids, labels


def test_compact_head_scores_only_labelled_positions_with_the_same_log_probs(tiny_model_dir, monkeypatch):
    from trl.trainer import utils as trl_utils

    model = _fused_tiny_model(tiny_model_dir)
    ids, labels = _batch(model.config.vocab_size)
    rows_scored = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows_scored.append(hidden.shape[0])
        return original_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels, fused_lm_head=True)
        with compact_lm_head():
            compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
    shifted = labels[:, 1:] != -100
    assert rows_scored == [ids.shape[0] * (ids.shape[1] - 1), int(shifted.sum())]  # 48 rows, then only 13
    assert torch.allclose(full.log_probs[shifted], compact.log_probs[shifted], atol=1e-5)
    assert torch.allclose(full.entropy[shifted], compact.entropy[shifted], atol=1e-5)
    assert torch.equal(compact.log_probs[~shifted], torch.zeros_like(compact.log_probs[~shifted]))
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block


def test_bf16_autocast_log_probs_stay_within_the_stated_tolerance(tiny_model_dir):
    """The README states: mean |log-prob difference| <= 0.05 nats and p99 <= 0.25 against fp32 (SmolLM2 measured
    0.015 and 0.116)."""
    model = _fused_tiny_model(tiny_model_dir)
    ids, labels = _batch(model.config.vocab_size, rows=8)
    with torch.no_grad(), compact_lm_head():
        fp32 = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        with bf16_autocast(True):
            bf16 = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    mask = labels[:, 1:] != -100
    diff = (fp32 - bf16)[mask].abs()
    assert diff.max() > 0  # the autocast did change the arithmetic
    assert diff.mean() <= 0.05 and torch.quantile(diff, 0.99) <= 0.25


@pytest.mark.parametrize("setting, use_gpu, has_bf16, expected", [
    ("auto", False, True, True),
    ("auto", False, False, False),
    ("auto", True, True, False),
    (True, False, False, True),  # the machine check rejects this combination before training
    (False, False, True, False),
])
def test_cpu_bf16_autocast_on(setting, use_gpu, has_bf16, expected):
    assert cpu_bf16_autocast_on(setting, use_gpu, Machine(cpu_bf16=has_bf16)) is expected


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(cpu_bf16_autocast=1), "use True, False or 'auto'"),
    (dict(cpu_bf16_autocast="yes"), "use True, False or 'auto'"),
    (dict(cpu_bf16_autocast=True, use_gpu=True), "applies to CPU runs (here use_gpu=True)"),
])
def test_bad_settings_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainerConfig(**kwargs)


def test_logprob_drift_by_hand():
    bf16 = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 0.0]])
    fp32 = torch.tensor([[-1.1, -2.0, -9.0], [-0.5, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])  # the -9.0 is padding: not counted
    drift = logprob_drift(bf16, fp32, mask)
    assert drift["cpu_bf16/logprob_diff_mean"] == pytest.approx((0.1 + 0 + 0 + 0.25) / 4)
    assert drift["cpu_bf16/logprob_diff_max"] == pytest.approx(0.25)
    assert logprob_drift(bf16, fp32, torch.zeros_like(mask)) == {}
    with pytest.raises(ValueError, match="shapes differ"):
        logprob_drift(bf16, fp32[:, :2], mask)


def test_drift_monitor_checks_the_first_round_then_every_n_and_warns_once(caplog):
    monitor = DriftMonitor()
    due = [monitor.due() for _ in range(2 * DRIFT_CHECK_EVERY + 1)]
    assert [i for i, d in enumerate(due) if d] == [0, DRIFT_CHECK_EVERY, 2 * DRIFT_CHECK_EVERY]
    high = {"cpu_bf16/logprob_diff_mean": 2 * LOGPROB_TOLERANCE}
    with caplog.at_level("WARNING"):
        monitor.record(high)
        monitor.record(high)
    assert len([r for r in caplog.records if "differ from fp32" in r.getMessage()]) == 1


def test_forcing_bf16_on_a_cpu_without_it_fails_where_training_starts():
    config = TrainerConfig(cpu_bf16_autocast=True)
    with pytest.raises(ConfigError, match="no native bfloat16"):
        check_machine(config, Machine(cpu_bf16=False))
    check_machine(config, Machine(cpu_bf16=True))
    check_machine(TrainerConfig(cpu_bf16_autocast="auto"), Machine(cpu_bf16=False))


def test_smollm2_preset_takes_the_fast_path():
    config = TrainerConfig.from_preset("smollm2-cpu")
    assert (config.cpu_bf16_autocast, config.gradient_checkpointing, config.torch_num_threads) == ("auto", False, None)


@pytest.mark.parametrize("algo", ["grpo", "rloo", "ppo"])
def test_a_run_on_the_bf16_path_trains(algo, tmp_path, tiny_model_dir, monkeypatch):
    """'auto' on a CPU reported as having bf16: generation and log-probs run under autocast, the weights stay fp32
    and change, the loss is finite, and the measured drift against fp32 is logged and within the tolerance."""
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer
    from tests.builders import plus_one_rows

    monkeypatch.setattr(machine_module, "_cpu_supports_bf16", lambda: True)
    config = TrainerConfig(trainer_type=algo, model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3,
                           kl_coef=0.0, max_completion_length=6, num_generations=4, per_device_train_batch_size=8,
                           output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1,
                           cpu_bf16_autocast="auto")
    trainer = OnlineRLTrainer(config, lambda completions, **kw: [float(len(c[0]["content"])) for c in completions],
                              plus_one_rows(16))
    backend = trainer._backend
    assert (backend.c.cpu_bf16 if algo == "ppo" else backend._cpu_bf16) is True
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    trainer.train()
    after = backend.model.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    loss_key = "policy_loss" if algo == "ppo" else "loss"
    steps = [h for h in trainer.metrics_history if loss_key in h]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(h[loss_key])) for h in steps)
    drift = [h for h in trainer.metrics_history if "cpu_bf16/logprob_diff_mean" in h]
    assert drift, "the first generation round runs the drift check"
    assert 0 < drift[0]["cpu_bf16/logprob_diff_mean"] <= LOGPROB_TOLERANCE  # autocast changed something, a little
    assert all("timing/update" in h for h in steps)


def test_the_default_path_runs_no_drift_check(tmp_path, tiny_model_dir):
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer
    from tests.builders import plus_one_rows

    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), max_steps=1, kl_coef=0.0, max_completion_length=4,
                           num_generations=4, per_device_train_batch_size=8, output_dir=str(tmp_path / "out"),
                           save_steps=1000, torch_num_threads=1)
    trainer = OnlineRLTrainer(config, lambda completions, **kw: [1.0] * len(completions), plus_one_rows(16))
    trainer.train()
    assert not any(k.startswith("cpu_bf16/") for h in trainer.metrics_history for k in h)
