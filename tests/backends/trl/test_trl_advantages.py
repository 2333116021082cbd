"""TRL computes GRPO's and RLOO's advantages; this checks TRL's numbers against the papers' formulas on a real batch.

The formulas are written out here, as the reference: GRPO's group-relative advantage (DeepSeekMath §4.1.2; std
scaling per group, per batch, or none as in Dr.GRPO) and RLOO's leave-one-out baseline (Ahmadian et al. 2024). The
batch is real: the tiny model generates ``num_generations`` completions for each prompt inside TRL's own
``_generate_and_score_completions``, a reward scores them, and TRL's advantages must equal the formulas applied to
the rewards it was given. A TRL upgrade that changed either computation would fail here.
"""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig

G = 4


def group_relative_advantages(rewards: torch.Tensor, g: int, scale: str, eps: float = 1e-4) -> torch.Tensor:
    """(B*G,) rewards, the G of a prompt adjacent -> r - group mean, divided by the group's (or the batch's)
    unbiased std + eps unless ``scale == "none"``."""
    groups = rewards.view(-1, g)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centered = centered / (groups.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centered = centered / (rewards.std() + eps)
    return centered.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, g: int) -> torch.Tensor:
    """(B*G,) -> r_i minus the mean of the other G-1 rewards of the same prompt."""
    groups = rewards.view(-1, g)
    return (groups - (groups.sum(dim=1, keepdim=True) - groups) / (g - 1)).reshape(-1)


def test_the_reference_formulas_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350 -> +-0.866025; group 2: all equal -> 0
    torch.testing.assert_close(group_relative_advantages(rewards, 4, "group", eps=0.0)[:4],
                               torch.tensor([0.866025, -0.866025, 0.866025, -0.866025], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    # [3, 0, 0]: 3 - mean(0, 0) = 3; 0 - mean(3, 0) = -1.5
    torch.testing.assert_close(rloo_advantages(torch.tensor([3.0, 0.0, 0.0]), 3), torch.tensor([3.0, -1.5, -1.5]))


def _trl_batch(tmp_path, tiny_model_dir, **config):
    """TRL's advantages for one generation batch, and the rewards TRL was given for it."""
    seen: list[float] = []

    def length_mod_5(completions, **kwargs):  # varied, deterministic in the completion: a real spread of rewards
        values = [float(len(c[0]["content"]) % 5) for c in completions]
        seen.extend(values)
        return values

    rows = [{"prompt": [{"role": "user", "content": f"{a}+{a}="}], "answer": str(2 * a)} for a in range(4)]
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=G, per_device_train_batch_size=4 * G,
                        max_completion_length=8, temperature=1.0, kl_coef=0.0, max_steps=1, save_steps=1000,
                        output_dir=str(tmp_path / "run"), **config)
    backend = OnlineRLTrainer(cfg, length_mod_5, rows).backend
    inputs = [row for row in rows for _ in range(G)]  # what TRL's RepeatSampler hands over: a prompt's G copies adjacent
    out = backend._generate_and_score_completions(inputs)
    return out["advantages"].double().cpu(), torch.tensor(seen, dtype=torch.float64)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_grpo_advantages_are_group_relative(tmp_path, tiny_model_dir, scale):
    advantages, rewards = _trl_batch(tmp_path, tiny_model_dir, trainer_type="grpo", scale_rewards=scale)
    assert rewards.numel() == 4 * G and rewards.unique().numel() > 1  # a batch with something to compare
    torch.testing.assert_close(advantages, group_relative_advantages(rewards, G, scale), atol=1e-5, rtol=1e-5)


def test_trl_rloo_advantages_are_leave_one_out(tmp_path, tiny_model_dir):
    advantages, rewards = _trl_batch(tmp_path, tiny_model_dir, trainer_type="rloo")
    assert rewards.numel() == 4 * G and rewards.unique().numel() > 1
    torch.testing.assert_close(advantages, rloo_advantages(rewards, G), atol=1e-5, rtol=1e-5)
    # and it is not the group-mean baseline: RLOO's is G/(G-1) times larger
    assert not torch.allclose(advantages, group_relative_advantages(rewards, G, "none"), atol=1e-3)
