"""Multi-turn tool rollouts trained by our PPO (core/backends/ppo/multi_turn.py) on the tiny built-in model.

Every rollout's first turn is a scripted tool call (the tiny model would not write one by itself); every later
turn is sampled by the policy, so the rest of the run is real: the environment runs the tool, its result is
tokenized into the completion, and PPO trains on the model's tokens only. Checked: an episode end to end, that the
environment's tokens add nothing to the real loss (nor gradient at their logits), GAE across the environment's
block, per-turn rewards at the turn ends, the log-probs of the exact sequence, and bit-exact resume.
"""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.agents import MultiTurnConfig, run_rollouts
from posttrain_llm.online_rl_trainer.core.algorithms import gae_advantages
from posttrain_llm.online_rl_trainer.core.backends.ppo import multi_turn, update
from posttrain_llm.online_rl_trainer.core.backends.ppo.multi_turn import agent_tensors, turn_reward_tensor
from posttrain_llm.online_rl_trainer.core.config import TrainerConfig
from posttrain_llm.online_rl_trainer.core.models.tiny import build_char_tokenizer
from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer
from tests.backends.callbacks import logged_steps, resume_runs
from tests.backends.multi_turn_helpers import CALL, AddEnv, frac7, used_tool
from tests.builders import plus_one_rows

torch.set_num_threads(1)
@pytest.fixture
def recorded(monkeypatch):
    """The AgentBatch of every multi-turn rollout the PPO backend collects."""
    batches = []
    real = multi_turn.collect_rollouts

    def collect(*args, **kwargs):
        batches.append(real(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(multi_turn, "collect_rollouts", collect)
    return batches


def _config(out, tiny_model_dir, **kw):
    base = dict(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3,
                kl_coef=0.05, max_completion_length=120, num_generations=2, per_device_train_batch_size=4,
                ppo_epochs=2, num_mini_batches=2, output_dir=str(out), save_steps=1000, torch_num_threads=1,
                max_turns=2, tool_call_format="chatml", tools_in_prompt=False, seed=3)
    base.update(kw)
    return TrainerConfig(**base)


def _trainer(out, tiny_model_dir, rewards=(used_tool, frac7), callbacks=(), **kw):
    return OnlineRLTrainer(_config(out, tiny_model_dir, **kw), list(rewards), plus_one_rows(32),
                           environment_factory=AddEnv, callbacks=list(callbacks))


def _steps(trainer):
    return [h for h in trainer.metrics_history if "reward" in h]


def _model_and_env(batch, prompt_width):
    real = batch["attention_mask"][:, prompt_width:].bool()
    return batch["train_mask"], real & ~batch["train_mask"]


# ------------------------------------------------------------------------------------------ end to end
def test_a_multi_turn_episode_trains_end_to_end(tmp_path, tiny_model_dir, first_turn_calls):
    trainer = _trainer(tmp_path / "out", tiny_model_dir, max_steps=2)
    trainer.train()
    for logged in _steps(trainer):
        for key in ("policy_loss", "value_loss", "entropy", "kl", "reward", "explained_variance"):
            assert math.isfinite(logged[key]), (key, logged[key])
        assert logged["agent/tool_calls_total"] >= 4 and logged["agent/tool_errors_total"] == 0
        assert logged["agent/turns_mean"] >= 2 and logged["agent/env_tokens_total"] > 0
        assert logged["rewards/used_tool/mean"] == 1.0  # agent_num_tool_calls reached the reward
        # lengths count the model's tokens only
        assert logged["completions/mean_length"] == pytest.approx(logged["agent/model_tokens_mean"])


def test_the_rollout_tensors_mask_the_environment_and_keep_the_exact_log_probs(tmp_path, tiny_model_dir,
                                                                                 first_turn_calls, recorded):
    backend = _trainer(tmp_path / "out", tiny_model_dir, kl_coef=0.0, whiten_advantages=False).backend
    batch, metrics = backend.rollout([backend.train_dataset[i] for i in range(2)])
    (agent,) = recorded
    width = batch["input_ids"].shape[1] - batch["completion_ids"].shape[1]
    model, env = _model_and_env(batch, width)
    for row, r in enumerate(agent.rollouts):
        n = len(r.completion_ids)
        assert batch["completion_ids"][row, :n].tolist() == list(r.completion_ids)  # never re-tokenised
        assert batch["input_ids"][row, width:width + n].tolist() == list(r.completion_ids)
        assert model[row, :n].int().tolist() == list(r.env_mask) and not model[row, n:].any()
        assert batch["attention_mask"][row, width:width + n].eq(1).all()  # the model attends to tool results
        # the policy's log-probs of the tokens it sampled (turn 2 on) are those the sampler saw
        sampled = [i for i in range(r.turn_end_positions[0] + 1, n) if r.env_mask[i]]
        assert sampled
        torch.testing.assert_close(batch["old_logp"][row, sampled], torch.tensor([r.logprobs[i] for i in sampled]),
                                   atol=2e-4, rtol=0)
    assert env.any() and metrics["agent/env_tokens_total"] == float(env.sum())
    for key in ("advantages", "returns"):
        assert batch[key][env].eq(0).all(), key


# ------------------------------------------------------------------------------------ the real loss
def _micro_step_grads(backend, b, rows, logits_seen):
    c, cfg = backend.c, backend.config
    for module in c._trainable:
        module.zero_grad(set_to_none=True)
    c.set_train_mode(True)
    stats, _ = update._micro_step(cfg, c, b, rows, b["completion_ids"].shape[1], 1.0)
    c.set_train_mode(False)
    grads = {n: p.grad.clone() for m in c._trainable for n, p in m.named_parameters() if p.grad is not None}
    return stats, grads, logits_seen.pop()


def test_environment_tokens_add_nothing_to_the_loss_and_get_no_gradient(tmp_path, tiny_model_dir, first_turn_calls,
                                                                       monkeypatch):
    backend = _trainer(tmp_path / "out", tiny_model_dir).backend
    b, _ = backend.rollout([backend.train_dataset[i] for i in range(2)])
    width = b["input_ids"].shape[1] - b["completion_ids"].shape[1]
    model, env = _model_and_env(b, width)
    assert env.any() and model.any()
    logits_seen = []
    real_logprobs = update.token_logprobs

    def keep_logits(logits, ids):
        logits.retain_grad()
        logits_seen.append(logits)
        return real_logprobs(logits, ids)

    monkeypatch.setattr(update, "token_logprobs", keep_logits)
    rows = torch.arange(b["input_ids"].shape[0])
    stats, grads, logits = _micro_step_grads(backend, b, rows, logits_seen)
    # nonsense at the environment's positions only: the loss, its statistics and every gradient stay the same
    changed = dict(b)
    for key, shift in (("advantages", 100.0), ("returns", -50.0), ("old_logp", -5.0), ("old_values", 7.0)):
        changed[key] = torch.where(env, b[key] + shift, b[key])
    stats2, grads2, _ = _micro_step_grads(backend, changed, rows, logits_seen)
    assert stats == stats2
    assert grads.keys() == grads2.keys() and all(torch.equal(grads[k], grads2[k]) for k in grads)
    per_position = logits.grad.abs().sum(dim=-1)  # (B, C): gradient at the logits that predict each token
    assert per_position[env].eq(0).all()
    assert per_position[model].gt(0).any()


# ---------------------------------------------------------------------------------- GAE and turn rewards
@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.8)])
def test_gae_skips_the_environment_and_turn_rewards_land_at_turn_ends(tmp_path, tiny_model_dir, first_turn_calls,
                                                                     recorded, gamma, lam):
    # No KL, no whitening. The sequence reward (used_tool = 1) sits on the last model token, the per-turn reward 0.5
    # on turn 1's last token (turn 2's is None: it called nothing). At gamma = lam = 1 a model token's return is the
    # reward to go: 1.5 on turn 1's tokens, 1.0 on turn 2's, 0 on the environment's. At gamma, lam < 1 the result
    # must equal GAE over the model tokens alone (treating the environment's tokens as steps would differ there).
    backend = _trainer(tmp_path / "out", tiny_model_dir, rewards=(used_tool,), kl_coef=0.0, gamma=gamma, lam=lam,
                       whiten_advantages=False).backend
    batch, _ = backend.rollout([backend.train_dataset[i] for i in range(2)])
    (agent,) = recorded
    for row, r in enumerate(agent.rollouts):
        assert r.turn_rewards == (0.5, None) and len(r.turn_end_positions) == 2
        first_end, n = r.turn_end_positions[0], len(r.completion_ids)
        env = [i for i in range(n) if not r.env_mask[i]]
        assert batch["returns"][row, env].eq(0).all() and batch["advantages"][row, env].eq(0).all()
        if gamma == lam == 1.0:
            expected = [(1.5 if i <= first_end else 1.0) if r.env_mask[i] else 0.0 for i in range(n)]
            torch.testing.assert_close(batch["returns"][row, :n], torch.tensor(expected), atol=1e-6, rtol=0)
        keep = [i for i in range(n) if r.env_mask[i]]  # the environment's block cut out
        rewards = torch.zeros(1, len(keep))
        rewards[0, keep.index(first_end)] += 0.5
        rewards[0, -1] += 1.0
        values = batch["old_values"][row, keep].unsqueeze(0)
        adv, ret = gae_advantages(rewards, values, torch.ones_like(rewards), gamma, lam)
        torch.testing.assert_close(batch["advantages"][row, keep], adv[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(batch["returns"][row, keep], ret[0], atol=1e-6, rtol=0)


def test_turn_rewards_are_placed_at_each_turns_last_model_token():
    tok = build_char_tokenizer()
    eos = tok.eos_token_id
    script = {"p": [tok.encode(CALL, add_special_tokens=False) + [eos], tok.encode("5", add_special_tokens=False) + [eos]]}

    def generate(sequences, budgets):
        return [(script["p"].pop(0), None) for _ in sequences]

    prompt = tok.apply_chat_template([{"role": "user", "content": "2+3="}], add_generation_prompt=True, tokenize=True,
                                     return_dict=False)
    (r,) = run_rollouts([prompt], [{}], generate, tok, AddEnv, MultiTurnConfig(call_format="chatml"))
    first_end, last = r.turn_end_positions
    assert r.turn_rewards == (0.5, None) and last == len(r.completion_ids) - 1
    out = turn_reward_tensor([r], len(r.completion_ids) + 3)
    expected = torch.zeros_like(out)
    expected[0, first_end] = 0.5  # turn 2's reward is None: nothing there
    assert torch.equal(out, expected)
    ids, attn, cids, real, model = agent_tensors([r.prompt_ids], [r.completion_ids], [r.env_mask], tok.pad_token_id)
    assert model[0].int().tolist() == list(r.env_mask) and real.all() and attn.eq(1).all()
    assert model[0, first_end] and model[0, last] and not model[0, first_end + 1]  # the tool result follows


def test_bad_rollout_layouts_are_refused_with_the_row():
    with pytest.raises(ValueError, match="rollout 1: 3 completion ids"):
        agent_tensors([[1], [1]], [[5, 6], [5, 6, 7]], [[1, 1], [1, 1]], 0)
    with pytest.raises(ValueError, match="rollout 0 has no model token"):
        agent_tensors([[1]], [[5]], [[0]], 0)


# ---------------------------------------------------------------------------------------------- resume
def _weights(trainer):
    return {**{f"policy.{k}": v for k, v in trainer.backend.model.state_dict().items()},
            **{f"critic.{k}": v for k, v in trainer.backend.critic.state_dict().items()}}


def _wall_clock(key):
    return key == "step_time" or key.startswith("timing/") or key.startswith("agent/tool_time_s")


def test_resume_of_a_multi_turn_run_reproduces_the_uninterrupted_run_exactly(tmp_path, tiny_model_dir,
                                                                             first_turn_calls):
    kw = dict(max_steps=4, save_steps=2, adaptive_kl=True, kl_target=0.1, kl_horizon=10)
    straight, interrupted, resumed = resume_runs(
        lambda out, callbacks: _trainer(out, tiny_model_dir, callbacks=callbacks, **kw), tmp_path)
    a, b = logged_steps(straight), logged_steps(interrupted, resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step]["agent/env_tokens_total"] > 0
        for key in a[step]:
            if not _wall_clock(key):
                assert a[step][key] == b[step][key], (step, key, a[step][key], b[step][key])
    wa, wb = _weights(straight), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
