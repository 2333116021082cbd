"""Zero-advantage micro-batches skip their forward and backward (``backends/trl/zero_advantage.py``): the optimizer
gets bit-identical gradients, the skip is counted, and it turns itself off where it could change the update."""

from __future__ import annotations

import logging

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer
from posttrain_llm.online_rl_trainer.core.backends.trl import zero_advantage
from tests.builders import plus_one_rows, tiny_rl_config

torch.set_num_threads(1)


def _config(tmp_path, **overrides):
    # 4 prompts x G=4 per step, one group per micro-batch (4 accumulation steps), 2 optimizer steps
    return tiny_rl_config(tmp_path, **{"max_steps": 2, "gradient_accumulation_steps": 4, **overrides})


def _half_flat_reward(completions, prompts, **kw):
    """Prompts with an even number equal-reward (advantage 0) groups; the others score by length."""
    out = []
    for prompt, completion in zip(prompts, completions):
        number = int(prompt[-1]["content"].split("+")[0])
        out.append(1.0 if number % 2 == 0 else float(len(completion[0]["content"]) % 3))
    return out


class _Grads:
    def __init__(self):
        from transformers import TrainerCallback

        spy = self

        class Callback(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                spy.steps.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

        self.steps, self.callback = [], Callback()


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_skipping_zero_advantage_micro_batches_gives_the_same_gradients(algo, tmp_path, tiny_model_dir):
    runs = []
    for skip in (False, True):
        spy = _Grads()
        config = _config(tmp_path / str(skip), trainer_type=algo, model_name_or_path=str(tiny_model_dir),
                         skip_zero_advantage=skip)
        trainer = OnlineRLTrainer(config, _half_flat_reward, plus_one_rows(8), callbacks=[spy.callback])
        assert trainer._backend._skip_zero_advantage is skip
        trainer.train()
        weights = {k: v.clone() for k, v in trainer._backend.model.state_dict().items()}
        runs.append((spy.steps, weights, trainer.metrics_history))
    (off_grads, off_weights, off_hist), (on_grads, on_weights, on_hist) = runs
    assert len(off_grads) == len(on_grads) == 2
    for off, on in zip(off_grads, on_grads):
        assert off.keys() == on.keys() and sum(float(g.abs().sum()) for g in off.values()) > 0
        for name in off:  # exact: a skipped micro-batch adds the same zeros the real one would have
            assert torch.equal(off[name], on[name]), name
    for name in off_weights:
        assert torch.equal(off_weights[name], on_weights[name]), name
    skipped = [h["update/skipped_micro_batches"] for h in on_hist if "update/skipped_micro_batches" in h]
    assert skipped and all(0 < s < 1 for s in skipped)  # some groups were flat, some were not
    assert not any("update/skipped_micro_batches" in h for h in off_hist)
    losses = [[h["loss"] for h in hist if "loss" in h] for hist in (off_hist, on_hist)]
    assert losses[0] == losses[1]


def test_a_step_where_every_group_is_flat_still_steps_adamw_with_zero_gradients(tmp_path, tiny_model_dir):
    spy = _Grads()
    config = _config(tmp_path, model_name_or_path=str(tiny_model_dir), max_steps=1)
    trainer = OnlineRLTrainer(config, lambda completions, **kw: [1.0] * len(completions), plus_one_rows(8),
                              callbacks=[spy.callback])
    trainer.train()
    (grads,) = spy.steps
    trainable = [n for n, p in trainer._backend.model.named_parameters() if p.requires_grad]
    assert sorted(grads) == sorted(trainable) and all(not g.any() for g in grads.values())
    assert [h["update/skipped_micro_batches"] for h in trainer.metrics_history if "update/skipped_micro_batches" in h] == [1.0]


def test_zero_loss_gives_every_trainable_weight_a_zero_gradient():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[1].bias.requires_grad_(False)
    loss = zero_advantage.zero_loss(model)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert model[1].bias.grad is None
    for p in (model[0].weight, model[0].bias, model[1].weight):
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()


@pytest.mark.parametrize("overrides, reason", [
    (dict(kl_coef=0.05), "beta=0.05"),
    (dict(trl_kwargs={"entropy_coef": 0.01}), "entropy bonus"),
])
def test_it_turns_itself_off_where_it_could_change_the_update(overrides, reason, tmp_path, tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger=zero_advantage.__name__):
        trainer = OnlineRLTrainer(_config(tmp_path, model_name_or_path=str(tiny_model_dir), **overrides),
                                  _half_flat_reward, plus_one_rows(8))
    assert trainer._backend._skip_zero_advantage is False
    assert any("skip_zero_advantage: off" in r.getMessage() and reason in r.getMessage() for r in caplog.records)


def test_the_config_field_is_validated(tmp_path):
    from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError

    with pytest.raises(ConfigError, match="skip_zero_advantage"):
        _config(tmp_path, model_name_or_path="builtin:tiny-char-llama", skip_zero_advantage="yes")
