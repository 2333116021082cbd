"""Dynamic sampling (DAPO) in TRL's GRPO and RLOO: zero-variance groups dropped, the batch refilled, and the update
exactly that of a batch built by hand from the kept groups.

The reward is flat (always 1) for rows of kind ``flat`` and varies with the completion for ``varied`` rows, so which
groups must be dropped is known. The reference batch is built by hand: a trainer *without* dynamic sampling gets
the kept groups' rows, and its sampler is replaced by the token ids the dynamic trainer generated for them; TRL then
computes everything (rewards, advantages, masks, the loss normaliser) through its ordinary path.
"""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from tests.backends.callbacks import assert_exact_resume, with_callbacks
from tests.backends.trl.test_trl_advantages import group_relative_advantages, rloo_advantages
from tests.builders import chat

G = 4


def make_rows(n_flat: int, n_varied: int) -> list[dict]:
    rows = [{"prompt": chat(f"{a}+{a}="), "kind": "flat"} for a in range(n_flat)]
    return rows + [{"prompt": chat(f"{a}*{a}="), "kind": "varied"} for a in range(n_varied)]


class Recorder:
    """A reward that is 1 for ``flat`` rows and len(completion) % 3 otherwise, recording every call."""

    __name__ = "recorder"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, completion_ids, kind, **kwargs):
        values = [1.0 if k == "flat" else float(len(c[0]["content"]) % 3) for c, k in zip(completions, kind)]
        self.calls.append({"prompts": prompts, "ids": completion_ids, "kind": kind, "rewards": values})
        return values


def config(tmp_path, trainer_type, **overrides):
    values = dict(trainer_type=trainer_type, num_generations=G, per_device_train_batch_size=4 * G,
                  max_completion_length=8, temperature=1.0, kl_coef=0.0, max_steps=1, save_steps=1000,
                  learning_rate=1e-3, output_dir=str(tmp_path / "run"))
    values.update(overrides)
    return values


def kept_groups(calls):
    """The (prompt, kind, ids) of each group whose rewards differ, in the order drawn."""
    kept = []
    for call in calls:
        for g in range(0, len(call["rewards"]), G):
            if len(set(call["rewards"][g:g + G])) > 1:
                kept.append((call["prompts"][g], call["kind"][g], call["ids"][g:g + G]))
    return kept


def grads(backend, batch):
    backend.current_gradient_accumulation_steps = 1  # set by transformers' training loop
    backend.model.zero_grad()
    backend.compute_loss(backend.model, batch).backward()
    return {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("trainer_type", ["grpo", "rloo"])
def test_the_update_is_exactly_that_of_the_kept_groups(tmp_path, tiny_model_dir, trainer_type):
    torch.manual_seed(0)
    reward = Recorder()
    rows = make_rows(n_flat=6, n_varied=6)
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), dynamic_sampling=True, max_sampling_rounds=6,
                        **config(tmp_path, trainer_type))
    backend = OnlineRLTrainer(cfg, reward, rows).backend
    backend.model.train()  # training mode, as inside train(): evaluation batches are never filtered
    inputs = [row for row in rows[4:8] for _ in range(G)]  # 2 flat + 2 varied prompts, as TRL's sampler hands them
    out = backend._generate_and_score_completions(inputs)

    kept = kept_groups(reward.calls)
    assert len(reward.calls) >= 2, "the first round had only 2 informative groups of 4: a refill round must run"
    assert len(kept) >= 4
    kept = kept[:4]
    assert {k for _, k, _ in kept} == {"varied"}
    metrics = backend._metrics["train"]
    drawn = sum(len(c["rewards"]) for c in reward.calls) // G
    assert metrics["sampling/rounds"] == [float(len(reward.calls))]
    assert metrics["sampling/prompts_drawn"] == [float(drawn)]
    flat_groups = sum(1 for c in reward.calls for g in range(0, len(c["rewards"]), G) if len(set(c["rewards"][g:g + G])) == 1)
    assert metrics["sampling/zero_variance_share"] == [pytest.approx(flat_groups / drawn)]
    assert metrics["sampling/filled_groups"] == [0.0]

    # the batch, by hand: the kept rows, with the kept completions forced in place of sampling
    ids = [list(i) for _, _, group in kept for i in group]
    plain = OnlineRLTrainer(TrainerConfig(model_name_or_path=str(tiny_model_dir),
                                          **config(tmp_path / "plain", trainer_type)), Recorder(), rows).backend
    plain.model.train()
    if trainer_type == "grpo":
        plain._generate_single_turn = lambda *args, **kwargs: (ids, None)
    else:
        plain._generate_single_turn = lambda *args, **kwargs: ids
    hand_rows = [{"prompt": p, "kind": k} for p, k, _ in kept for _ in range(G)]
    ref = plain._generate_and_score_completions(hand_rows)

    assert out.keys() == ref.keys()
    assert {"prompt_ids", "completion_ids", "completion_mask", "advantages"} <= out.keys()
    assert trainer_type == "rloo" or "num_items_in_batch" in out  # GRPO's loss normaliser
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
        else:
            assert value == ref[key], key
    rewards = torch.tensor([float(len(plain.processing_class.decode(i, skip_special_tokens=True)) % 3) for i in ids])
    formula = group_relative_advantages(rewards, G, "group") if trainer_type == "grpo" else rloo_advantages(rewards, G)
    torch.testing.assert_close(out["advantages"].float(), formula.float(), atol=1e-5, rtol=1e-5)
    assert (out["advantages"] != 0).any()
    mine, theirs = grads(backend, out), grads(plain, ref)
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0, msg=name)


def test_when_the_round_cap_is_hit_the_batch_is_filled_and_counted(tmp_path, tiny_model_dir):
    torch.manual_seed(0)
    reward = Recorder()
    rows = make_rows(n_flat=8, n_varied=0)  # nothing can be informative
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), dynamic_sampling=True, max_sampling_rounds=2,
                        **config(tmp_path, "grpo"))
    backend = OnlineRLTrainer(cfg, reward, rows).backend
    backend.model.train()
    out = backend._generate_and_score_completions([row for row in rows[:4] for _ in range(G)])
    metrics = backend._metrics["train"]
    assert len(reward.calls) == 2 and metrics["sampling/rounds"] == [2.0]
    assert metrics["sampling/filled_groups"] == [4.0] and metrics["sampling/zero_variance_share"] == [1.0]
    assert out["completion_ids"].shape[0] == 4 * G and (out["advantages"] == 0).all()
    # the filled groups are the first drawn: the batch TRL handed over, as without the filter
    assert out["completion_ids"].tolist()[0][:len(reward.calls[0]["ids"][0])] == list(reward.calls[0]["ids"][0])


def test_training_with_dynamic_sampling_logs_and_resumes_exactly(tmp_path, tiny_model_dir):
    rows = make_rows(n_flat=8, n_varied=8)

    def make(out_dir, callbacks):
        cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), dynamic_sampling=True,
                            **config(tmp_path, "grpo", max_steps=4, save_steps=2, output_dir=str(out_dir)))
        return with_callbacks(OnlineRLTrainer(cfg, Recorder(), rows), callbacks)

    a = assert_exact_resume(make, tmp_path, ("loss", "reward", "sampling/rounds", "sampling/prompts_drawn",
                                             "sampling/zero_variance_share"))
    assert any(a[s]["sampling/rounds"] > 1 for s in a)
    assert all(a[s]["frac_reward_zero_std"] == 0.0 for s in a if a[s]["sampling/filled_groups"] == 0)


def test_refused_where_it_cannot_work(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="dynamic_sampling=True applies to trainer_type 'grpo' and 'rloo'"):
        TrainerConfig(trainer_type="ppo", num_generations=1, dynamic_sampling=True)
    with pytest.raises(ConfigError, match="max_sampling_rounds"):
        TrainerConfig(dynamic_sampling=True, max_sampling_rounds=0)
