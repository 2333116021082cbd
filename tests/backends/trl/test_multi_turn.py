"""Multi-turn tool rollouts trained by TRL's GRPO and RLOO (core/backends/trl/multi_turn.py) on the tiny model.

As in the PPO tests, every rollout's first turn is a scripted tool call (the tiny model would not write one by
itself) and every later turn is sampled by the policy, so the rest is real: the environment runs the tool, its
result is tokenized into the completion, TRL computes its loss. Checked for both trainers: an episode end to end,
that the loss gives no gradient to the environment's tokens (and does when the mask is removed, so the check can
fail), that rewards judge the final answer, and bit-exact resume.
"""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.backends import agent_rollouts
from posttrain_llm.online_rl_trainer.core.backends.trl.prompt_sharing import PromptSharingMixin
from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from posttrain_llm.online_rl_trainer.core.config import TrainerConfig
from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer
from tests.backends.callbacks import logged_steps, resume_runs
from tests.backends.multi_turn_helpers import CALL, AddEnv, frac7, used_tool
from tests.builders import plus_one_rows

torch.set_num_threads(1)
TRAINERS = ("grpo", "rloo")


def final_answer(completions, agent_transcript, **kwargs):
    """1 when the completion the reward sees is the transcript's last assistant message and not the tool call."""
    out = []
    for c, transcript in zip(completions, agent_transcript):
        last = [m for m in transcript if m["role"] == "assistant"][-1]["content"]
        out.append(float(c[0]["content"] == last and CALL not in c[0]["content"]))
    return out


def _config(out, tiny_model_dir, trainer_type, **kw):
    base = dict(trainer_type=trainer_type, model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3,
                max_completion_length=120, num_generations=2, per_device_train_batch_size=4, output_dir=str(out),
                save_steps=1000, torch_num_threads=1, max_turns=2, tool_call_format="chatml", tools_in_prompt=False,
                seed=3, logging_steps=1)
    base.update(kw)
    return TrainerConfig(**base)


def _trainer(out, tiny_model_dir, trainer_type, rewards=(used_tool, frac7, final_answer), callbacks=(), rows=None,
             **kw):
    return OnlineRLTrainer(_config(out, tiny_model_dir, trainer_type, **kw), list(rewards),
                           rows if rows is not None else plus_one_rows(32), environment_factory=AddEnv,
                           callbacks=list(callbacks))


def _steps(trainer):
    return [h for h in trainer.metrics_history if "reward" in h]


@pytest.mark.parametrize("trainer_type", TRAINERS)
def test_a_multi_turn_episode_trains_end_to_end(tmp_path, tiny_model_dir, first_turn_calls, trainer_type):
    trainer = _trainer(tmp_path / "out", tiny_model_dir, trainer_type, max_steps=2)
    before = {k: v.clone() for k, v in trainer.backend.model.state_dict().items()}
    trainer.train()
    steps = _steps(trainer)
    assert len(steps) == 2
    for logged in steps:
        assert math.isfinite(logged["loss"]) and math.isfinite(logged["reward"])
        assert logged["agent/tool_calls_total"] >= 4 and logged["agent/tool_errors_total"] == 0
        assert logged["agent/turns_mean"] >= 2 and logged["agent/env_tokens_total"] > 0
        assert logged["rewards/used_tool/mean"] == 1.0  # agent_num_tool_calls reached the reward
        assert logged["rewards/final_answer/mean"] == 1.0  # the reward judged the final message, not the call
        assert logged["completions/mean_length"] == pytest.approx(logged["agent/model_tokens_mean"])
    after = trainer.backend.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _generation_batch(backend):
    rows = [dict(backend.train_dataset[i]) for i in range(2) for _ in range(2)]
    backend.model.train()
    return backend._generate_and_score_completions(rows)


def _logp_grads(backend, batch, monkeypatch, base):
    """Gradient of the loss with respect to the per-token log-probs the log-prob pass returns (before any mask)."""
    seen = []
    real = base._get_per_token_logps_and_entropies

    def keep(self, *args, **kwargs):
        logps, *rest = real(self, *args, **kwargs)
        if torch.is_grad_enabled() and logps.requires_grad:
            logps.retain_grad()
            seen.append(logps)
        return (logps, *rest)

    monkeypatch.setattr(base, "_get_per_token_logps_and_entropies", keep)
    backend.model.zero_grad(set_to_none=True)
    backend.current_gradient_accumulation_steps = 1  # set by transformers' training loop, read by the loss
    loss = backend.compute_loss(backend.model, batch)
    loss.backward()
    monkeypatch.setattr(base, "_get_per_token_logps_and_entropies", real)
    (logps,) = seen
    return logps.grad.abs()


@pytest.mark.parametrize("trainer_type", TRAINERS)
def test_environment_tokens_get_no_gradient(tmp_path, tiny_model_dir, first_turn_calls, monkeypatch, trainer_type):
    backend = _trainer(tmp_path / "out", tiny_model_dir, trainer_type, kl_coef=0.04).backend
    # The pass below the multi-turn mask: TRL's own, or the shared-prompt one in front of it (prompt_sharing.py).
    base = PromptSharingMixin
    batch = _generation_batch(backend)
    # Advantages of both signs (the rewards of this tiny batch may tie within each group, which gives no gradient).
    batch["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5])
    key = "tool_mask" if trainer_type == "grpo" else "env_mask"
    real = batch["completion_mask"].bool()
    model = real & batch[key].bool()
    env = real & ~batch[key].bool()
    assert env.any() and model.any()
    grads = _logp_grads(backend, batch, monkeypatch, base)
    assert grads[env].eq(0).all()
    assert grads[model].gt(0).any()
    # The control: the same batch with the mask removed does send gradient to the environment's tokens.
    unmasked = {**batch, key: torch.ones_like(batch[key])}
    assert _logp_grads(backend, unmasked, monkeypatch, base)[env].gt(0).any()


@pytest.mark.parametrize("trainer_type", TRAINERS)
def test_resume_of_a_multi_turn_run_reproduces_the_uninterrupted_run_exactly(tmp_path, tiny_model_dir,
                                                                             first_turn_calls, trainer_type):
    kw = dict(max_steps=4, save_steps=2, kl_coef=0.04)
    straight, interrupted, resumed = resume_runs(
        lambda out, callbacks: _trainer(out, tiny_model_dir, trainer_type, callbacks=callbacks, **kw), tmp_path)
    a, b = logged_steps(straight), logged_steps(interrupted, resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step]["agent/env_tokens_total"] > 0
        for key in a[step]:
            if key not in ("step_time",) and not key.startswith(("timing/", "agent/tool_time_s")):
                assert a[step][key] == b[step][key], (step, key, a[step][key], b[step][key])
    wa, wb = straight.backend.model.state_dict(), resumed.backend.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_dataset_column_named_like_a_reward_argument_is_refused(tmp_path, tiny_model_dir):
    rows = [{**r, "agent_stop_reason": "x"} for r in plus_one_rows(32)]
    with pytest.raises(ConfigError, match=r"columns \['agent_stop_reason'\] clash"):
        _trainer(tmp_path / "out", tiny_model_dir, "grpo", rows=rows)


def test_plain_text_prompts_are_refused_with_the_row(tmp_path, tiny_model_dir):
    rows = [{**r, "prompt": "1+1="} for r in plus_one_rows(32)]
    backend = _trainer(tmp_path / "out", tiny_model_dir, "rloo", rows=rows).backend
    with pytest.raises(ConfigError, match="prompt 0 is '1\\+1='.*must be a chat"):
        _generation_batch(backend)


def test_agent_rollouts_are_used_instead_of_trls_generate(tmp_path, tiny_model_dir, first_turn_calls, monkeypatch):
    calls = []
    real = agent_rollouts.collect_rollouts

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    from posttrain_llm.online_rl_trainer.core.backends.trl import multi_turn

    monkeypatch.setattr(multi_turn, "collect_rollouts", spy)
    backend = _trainer(tmp_path / "out", tiny_model_dir, "grpo", temperature=0.7).backend
    _generation_batch(backend)
    assert len(calls) == 1 and calls[0]["temperature"] == 0.7 and calls[0]["seed"] is None


@pytest.mark.parametrize("trainer_type", ("rloo", "ppo"))
def test_evaluate_runs_the_same_multi_turn_rollouts(tmp_path, tiny_model_dir, first_turn_calls, trainer_type):
    from posttrain_llm.online_rl_trainer.core.rewards import MathRewardFunction

    trainer = _trainer(tmp_path / "out", tiny_model_dir, trainer_type, max_completion_length=100)
    result = trainer.evaluate(plus_one_rows(3), MathRewardFunction())
    agent = result["agent"]
    assert agent["call_format"] == "chatml" and agent["tool_calls_total"] == 3 and agent["tool_errors_total"] == 0
    assert all(len([m for m in rec["transcript"] if m["role"] == "tool"]) == 1 for rec in result["records"])
