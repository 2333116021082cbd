"""PPO with one pass over the rollout: the critic's values come from its forward in the update
(``backends/ppo/targets.py``), not from a separate rollout forward -- the same update as the two-pass order."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.backends.ppo import trainer as ppo_trainer
from posttrain_llm.online_rl_trainer.core.backends.ppo.targets import critic_runs_in_update
from posttrain_llm.online_rl_trainer.core.config import TrainerConfig
from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer
from tests.builders import plus_one_rows

torch.set_num_threads(1)


def frac7(completions, **kwargs):
    texts = [c[0]["content"] for c in completions]
    return [t.count("7") / max(1, len(t)) for t in texts]


def _trainer(tmp_path, tiny_model_dir, **kw):
    base = dict(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3,
                kl_coef=0.05, max_completion_length=5, num_generations=2, per_device_train_batch_size=8,
                gradient_accumulation_steps=2, output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1,
                seed=3)
    base.update(kw)
    return OnlineRLTrainer(TrainerConfig(**base), frac7, plus_one_rows(32))


@pytest.mark.parametrize("share", [True, False])
def test_critic_in_the_update_gives_the_two_pass_update(tmp_path, tiny_model_dir, monkeypatch, share):
    """Two steps (the second on the updated critic): the same policy and critic weights and statistics as computing
    the values in a rollout forward first; the critic runs half as many forwards."""
    runs = {}
    for in_update in (False, True):
        if not in_update:
            monkeypatch.setattr(ppo_trainer, "critic_runs_in_update", lambda cfg, c: False)
        else:
            monkeypatch.undo()
        trainer = _trainer(tmp_path / str(in_update), tiny_model_dir, share_prompt_prefix=share)
        c = trainer._backend.c
        calls: list[int] = []
        hook = c.critic.backbone.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        trainer.train()
        hook.remove()
        weights = {f"{n}.{k}": v.clone() for n, m in (("policy", c.policy), ("critic", c.critic))
                   for k, v in m.state_dict().items()}
        steps = [h for h in trainer.metrics_history if "reward" in h]
        runs[in_update] = (weights, steps, len(calls))
    (w_two, s_two, calls_two), (w_one, s_one, calls_one) = runs[False], runs[True]
    for key in w_two:
        assert torch.allclose(w_two[key], w_one[key], atol=1e-5), key
    assert len(s_one) == len(s_two) == 2
    for a, b in zip(s_two, s_one):
        assert a["reward"] == b["reward"]  # the same completions were sampled in both steps
        for key in ("value_loss", "policy_loss", "explained_variance", "clipfrac/value", "entropy"):
            assert math.isfinite(b[key]) and b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert calls_one * 2 == calls_two  # the rollout's critic forward is gone, the update's is the only one


def test_several_passes_or_a_shared_critic_keep_the_rollout_values(tmp_path, tiny_model_dir):
    def in_update(**kw):
        t = _trainer(tmp_path / str(sorted(kw.items())), tiny_model_dir, **kw)
        return critic_runs_in_update(t.config, t._backend.c)

    assert in_update() is True
    assert in_update(ppo_epochs=2) is False
    assert in_update(num_mini_batches=2, gradient_accumulation_steps=1) is False
    assert in_update(critic_type="shared") is False


@pytest.mark.parametrize("critic_type", ["separate", "shared"])
def test_ppo_optimizers_use_fused_adamw_on_cpu(tmp_path, tiny_model_dir, critic_type):
    """As GRPO/RLOO get from transformers' default (``adamw_torch_fused``): on CPU the for-loop AdamW was 5-10x
    slower per SmolLM2 step."""
    backend = _trainer(tmp_path, tiny_model_dir, critic_type=critic_type)._backend
    optimizers = backend.c.optimizers
    assert len(optimizers) == (2 if critic_type == "separate" else 1)
    for opt in optimizers:
        inner = getattr(opt, "optimizer", opt)  # accelerate's wrapper
        assert all(group["fused"] is True for group in inner.param_groups)
