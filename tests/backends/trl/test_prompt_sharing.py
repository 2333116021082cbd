"""Shared-prompt log-prob passes (``backends/shared_prompt.py``, ``backends/trl/prompt_sharing.py``): the same
log-probs, entropies and gradients as the per-row pass, whole groups per micro-batch with TRL's random stream, and
the fallbacks when a run or a model cannot share."""

from __future__ import annotations

import logging

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer
from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import (
    PromptSharingUnsupported,
    cache_argument_name,
    new_cache,
    prompt_groups,
    shared_prompt_forward,
)
from posttrain_llm.online_rl_trainer.core.backends.trl import prompt_sharing
from posttrain_llm.online_rl_trainer.core.backends.trl.prompt_sharing import group_shuffle
from tests.builders import plus_one_rows, tiny_rl_config

torch.set_num_threads(1)


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return model


def _grouped_batch(vocab: int, prompt_len: int = 9, completion_len: int = 5):
    """Two prompts x 3 completions; the second prompt is 3 tokens shorter (left padding); two completions ended early."""
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, vocab, (2, prompt_len), generator=gen).repeat_interleave(3, 0)
    ids = torch.cat([prompts, torch.randint(3, vocab, (6, completion_len), generator=gen)], 1)
    mask = torch.ones_like(ids)
    mask[3:, :3] = 0
    mask[0, -2:] = 0
    mask[4, -4:] = 0
    return ids.masked_fill(mask == 0, 0), mask, completion_len


def _per_row(model, ids, mask, keep):
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -keep:], out.entropy[:, -keep:]


def _common_prefix_batch(vocab: int, completion_len: int = 5):
    """Three prompts x 2 completions: the prompts share their first 6 tokens, then 3, 5 and 1 own tokens + a last
    token (left padding: lengths 10, 12, 8); two completions ended early."""
    gen = torch.Generator().manual_seed(2)
    common = torch.randint(3, vocab, (6,), generator=gen).tolist()
    prompts = [common + torch.randint(3, vocab, (n + 1,), generator=gen).tolist() for n in (3, 5, 1)]
    width = max(len(p) for p in prompts)
    rows, masks = [], []
    for p in prompts:
        for _ in range(2):
            rows.append([0] * (width - len(p)) + p + torch.randint(3, vocab, (completion_len,), generator=gen).tolist())
            masks.append([0] * (width - len(p)) + [1] * (len(p) + completion_len))
    ids, mask = torch.tensor(rows), torch.tensor(masks)
    mask[1, -2:] = 0
    mask[4, -3:] = 0
    return ids.masked_fill(mask == 0, 0), mask, completion_len


def _shared(model, ids, mask, keep, make_cache=None, common_prefix=False):
    name = cache_argument_name(model)

    def prefix(i, a, p, cache):
        return model(input_ids=i, attention_mask=a, position_ids=p, use_cache=True, logits_to_keep=1, **{name: cache})

    def tail(i, a, p, cache):
        labels = i.masked_fill(a[:, -i.shape[1]:] == 0, -100)
        labels[:, 0] = -100
        out = model(input_ids=i, attention_mask=a, position_ids=p, labels=labels, fused_lm_head=True, **{name: cache})
        return out.log_probs[:, -keep:], out.entropy[:, -keep:]

    return shared_prompt_forward(prefix, tail, ids, mask, ids.shape[1] - keep,
                                 make_cache or (lambda: new_cache(model.config)), needs_grad=torch.is_grad_enabled(),
                                 common_prefix=common_prefix)


def test_prompt_groups_by_hand():
    ids = torch.tensor([[0, 5, 6, 1], [9, 5, 6, 2], [0, 0, 7, 3], [0, 5, 6, 4]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]])
    groups = prompt_groups(ids, mask, prompt_length=3)
    # rows 0, 1 and 3 share the prompt [pad, 5, 6] (the pads' ids do not matter); row 2's is [pad, pad, 7]
    assert groups.num_prompts == 2
    assert groups.inverse[0] == groups.inverse[1] == groups.inverse[3] != groups.inverse[2]
    assert sorted(groups.first.tolist()) == [0, 2]
    assert groups.lead == 1  # column 0 is padding in every row


def test_shared_pass_gives_the_per_row_log_probs_entropies_and_gradients(tiny_model_dir):
    model = _model(tiny_model_dir)
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    results = []
    for forward in (_per_row, _shared):
        model.zero_grad(set_to_none=True)
        logps, entropy = forward(model, ids, mask, keep)
        real = mask[:, -keep:]
        ((logps * real).sum() + 0.3 * (entropy * real).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((logps.detach(), entropy.detach(), grads))
    (lp_row, ent_row, g_row), (lp_shared, ent_shared, g_shared) = results
    real = mask[:, -keep:].bool()
    assert torch.allclose(lp_shared[real], lp_row[real], atol=1e-5)
    assert torch.allclose(ent_shared[real], ent_row[real], atol=1e-5)
    assert torch.equal(lp_shared[~real], torch.zeros_like(lp_shared[~real]))  # padding scores 0, as TRL's pass
    assert g_row.abs().sum() > 0
    assert torch.allclose(g_shared, g_row, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("common_prefix", [False, True])
def test_common_prefix_of_different_prompts_gives_the_per_row_pass(tiny_model_dir, common_prefix):
    """Three levels (the prompts' 6 common tokens once, each prompt's own tokens, each row's tail): the per-row
    log-probs, entropies and gradients (rotary positions: the same relative positions); the embeddings see 1 x 6,
    then 3 prompts x 5 own columns (padded between the common and the own tokens), then 6 rows x (1 + 5)."""
    model = _model(tiny_model_dir)
    ids, mask, keep = _common_prefix_batch(model.config.vocab_size)
    results, seen = [], []
    for forward in (_per_row, lambda *a: _shared(*a, common_prefix=common_prefix)):
        model.zero_grad(set_to_none=True)
        hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
        logps, entropy = forward(model, ids, mask, keep)
        hook.remove()
        real = mask[:, -keep:]
        ((logps * real).sum() + 0.3 * (entropy * real).sum()).backward()
        results.append((logps.detach(), entropy.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (lp_row, ent_row, g_row), (lp_shared, ent_shared, g_shared) = results
    real = mask[:, -keep:].bool()
    assert torch.allclose(lp_shared[real], lp_row[real], atol=1e-5)
    assert torch.allclose(ent_shared[real], ent_row[real], atol=1e-5)
    assert torch.allclose(g_shared, g_row, atol=1e-5, rtol=1e-4)
    if common_prefix:
        assert seen[1:] == [(1, 6), (3, 5), (6, 6)]
    else:  # two levels: the 3 prompts whole but their last token (11 columns: one column is padding everywhere)
        assert seen[1:] == [(3, 11), (6, 6)]


def test_the_prompt_passes_are_fewer_tokens(tiny_model_dir):
    model = _model(tiny_model_dir)
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        _shared(model, ids, mask, keep)
    hook.remove()
    # 2 distinct prompts of 9 - 1 columns (no column is padding in every row), then 6 rows of 1 + 5 columns
    assert seen == [(2, 8), (6, 6)]


def test_nothing_shared_returns_none(tiny_model_dir):
    model = _model(tiny_model_dir)
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    with torch.no_grad():
        assert _shared(model, ids[[0, 3]], mask[[0, 3]], keep) is None


def test_a_cache_that_drops_gradients_is_refused(tiny_model_dir):
    from transformers import DynamicCache

    class DetachingCache(DynamicCache):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.detach(), value_states.detach(), *args, **kwargs)

    model = _model(tiny_model_dir)
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    with pytest.raises(PromptSharingUnsupported, match="no tensor with a gradient"):
        _shared(model, ids, mask, keep, make_cache=lambda: DetachingCache(config=model.config))


def test_group_shuffle_moves_whole_groups_and_draws_what_trl_draws():
    from trl.trainer.utils import shuffle_sequence_dict

    batch = {"ids": torch.arange(12).reshape(12, 1) * 10, "names": [f"r{i}" for i in range(12)],
             "scalar": torch.tensor(3.0), "none": None}
    torch.manual_seed(5)
    ours = group_shuffle(batch, group_size=4)
    after_ours = torch.rand(1)
    torch.manual_seed(5)
    trl = shuffle_sequence_dict(batch)
    after_trl = torch.rand(1)
    assert torch.equal(after_ours, after_trl)  # the same draws from the global generator
    rows = (ours["ids"][:, 0] // 10).tolist()
    assert sorted(rows) == list(range(12))
    assert all(rows[i:i + 4] == list(range(rows[i], rows[i] + 4)) and rows[i] % 4 == 0 for i in range(0, 12, 4))
    assert ours["names"] == [f"r{i}" for i in rows]
    assert ours["scalar"] is batch["scalar"] and ours["none"] is None
    # groups in the order their rows first appear in TRL's permutation
    trl_rows = (trl["ids"][:, 0] // 10).tolist()
    first_groups = list(dict.fromkeys(r // 4 for r in trl_rows))
    assert [rows[i] // 4 for i in range(0, 12, 4)] == first_groups


def test_group_shuffle_falls_back_when_groups_do_not_tile_the_batch():
    batch = {"ids": torch.arange(6)}
    torch.manual_seed(0)
    ours = group_shuffle(batch, group_size=4)
    assert sorted(ours["ids"].tolist()) == list(range(6))


_config = tiny_rl_config


def _reward(completions, **kw):
    return [float(len(c[0]["content"]) % 3) for c in completions]


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_a_step_with_shared_prompts_equals_one_without(algo, tmp_path, tiny_model_dir, caplog):
    """Same seed, same completions (the shuffle draws what TRL's draws), one optimizer step each way, two micro-batches
    of one group: the gradient the optimizer gets agrees to float rounding (the prompts' common prefix computed once
    for both micro-batches, its gradient added after the second), the sharing is logged and the self-check passed.
    (The gradient, not the weights after AdamW: its first step is ~lr * sign(g), so an entry of ~1e-9 whose rounding
    flips its sign moves a weight by ~2 lr.)"""
    from transformers import TrainerCallback

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            self.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    grads, weights, histories, checks = [], [], [], []
    for share in (False, True):
        config = _config(tmp_path / str(share), trainer_type=algo, model_name_or_path=str(tiny_model_dir),
                         share_prompt_prefix=share, kl_coef=0.05)
        spy = Grads()
        trainer = OnlineRLTrainer(config, _reward, plus_one_rows(16), callbacks=[spy])
        assert trainer._backend._prompt_sharing is share
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=prompt_sharing.__name__):
            trainer.train()
        checks.append([float(r.args[0]) for r in caplog.records if "self-check passed" in r.getMessage()])
        grads.append(spy.grads)
        weights.append({k: v.clone() for k, v in trainer._backend.model.state_dict().items()})
        histories.append(trainer.metrics_history)
    if share:
        # one no-grad prefix pass for both micro-batches, one more with autograd for its gradient
        assert trainer._backend._deferred.passes == 2 and len(trainer._backend._deferred.tokens) >= 2
    off, on = grads
    assert off.keys() == on.keys() and sum(float(g.abs().sum()) for g in off.values()) > 0
    for key in off:
        assert torch.allclose(on[key], off[key], atol=1e-6, rtol=1e-4), key
    for key in weights[0]:  # and the weights moved alike (to within a tenth of the first AdamW step)
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-4), key
    rows = [h["prompt_sharing/rows_per_prompt"] for h in histories[1] if "prompt_sharing/rows_per_prompt" in h]
    assert rows and rows[0] == pytest.approx(4.0)
    assert checks[1] and checks[1][0] <= prompt_sharing.SELF_CHECK_TOLERANCE and not checks[0]
    assert not any("prompt_sharing/rows_per_prompt" in h for h in histories[0])


def test_a_failed_self_check_turns_sharing_off_and_training_goes_on(tmp_path, tiny_model_dir, monkeypatch, caplog):
    monkeypatch.setattr(prompt_sharing, "SELF_CHECK_TOLERANCE", -1.0)  # any difference, even 0, fails
    trainer = OnlineRLTrainer(_config(tmp_path, model_name_or_path=str(tiny_model_dir)), _reward, plus_one_rows(16))
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer._backend._prompt_sharing is False
    assert any("share_prompt_prefix: off for this run" in r.getMessage() for r in caplog.records)
    assert [h for h in trainer.metrics_history if "loss" in h]


def test_gradient_checkpointing_turns_sharing_off_with_a_log_line(tmp_path, tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO):
        trainer = OnlineRLTrainer(_config(tmp_path, model_name_or_path=str(tiny_model_dir), gradient_checkpointing=True),
                                  _reward, plus_one_rows(16))
    assert trainer._backend._prompt_sharing is False
    assert any("gradient checkpointing is on" in r.getMessage() for r in caplog.records)


def test_group_blocks_by_hand():
    from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import group_blocks

    assert group_blocks(torch.tensor([5, 0, 3, 1, 4, 2]), 2).tolist() == [4, 5, 0, 1, 2, 3]
    assert group_blocks(torch.tensor([0, 1, 2]), 1).tolist() == [0, 1, 2]


def test_ppo_shares_prompts_in_every_pass_with_the_same_update(tmp_path, tiny_model_dir, monkeypatch):
    """PPO: rollout passes (policy, reference, critic) and the update compute each distinct prompt once -- the
    embeddings see U prompts of P-1 columns, then B rows of 1 + C -- and one step's gradients match the per-row run
    (to float rounding; the weights after AdamW to a tenth of its first step, which is ~lr * sign(g): see
    test_a_step_with_shared_prompts_equals_one_without)."""
    from posttrain_llm.online_rl_trainer.core.backends.ppo import components

    weights, shapes, grads = [], [], []
    real_clip_and_step = components.PPOComponents.clip_and_step

    def spy(self):
        grads.append({f"{i}.{n}": p.grad.clone() for i, m in enumerate((self.policy, self.critic))
                      for n, p in m.named_parameters() if p.grad is not None})
        return real_clip_and_step(self)

    monkeypatch.setattr(components.PPOComponents, "clip_and_step", spy)
    for share in (False, True):
        config = _config(tmp_path / str(share), trainer_type="ppo", model_name_or_path=str(tiny_model_dir),
                         share_prompt_prefix=share, kl_coef=0.05, per_device_train_batch_size=8,
                         gradient_accumulation_steps=1)
        trainer = OnlineRLTrainer(config, _reward, plus_one_rows(16))
        c = trainer._backend.c
        assert (c.policy_cache_kw is not None, c.critic_cache_kw is not None) == (share, share)
        seen: list[tuple[int, ...]] = []
        record = seen.append
        hooks = [m.get_input_embeddings().register_forward_hook(lambda m, i, o, record=record: record(tuple(i[0].shape)))
                 for m in (c.policy, c.critic.backbone)]
        trainer.train()
        for h in hooks:
            h.remove()
        shapes.append(seen)
        weights.append({f"{n}.{k}": v.clone() for n, m in (("policy", c.policy), ("critic", c.critic))
                        for k, v in m.state_dict().items()})
    assert len(grads) == 2, "one optimizer step per run"
    off, on = grads
    assert off.keys() == on.keys() and sum(float(g.abs().sum()) for g in off.values()) > 0
    for key in off:
        assert torch.allclose(on[key], off[key], atol=1e-6, rtol=1e-4), key
    off, on = weights
    for key in off:
        assert torch.allclose(off[key], on[key], atol=1e-4), key
    rows_per_pass = {s[0] for s in shapes[0] if s[1] > 1}
    assert rows_per_pass == {8}  # per-row: every pass sees the 8 rows whole (one-token decode steps aside)
    assert any(s[0] == 2 for s in shapes[1])  # shared: 2 distinct prompts in a pass of 8 rows


def test_ppo_turns_sharing_off_for_the_shared_critic(tmp_path, tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO):
        trainer = OnlineRLTrainer(_config(tmp_path, trainer_type="ppo", model_name_or_path=str(tiny_model_dir),
                                          critic_type="shared"), _reward, plus_one_rows(16))
    assert trainer._backend.c.policy_cache_kw is None
    assert any("critic_type='shared'" in r.getMessage() for r in caplog.records)


def test_generate_with_the_shared_prompt_cache_gives_the_same_tokens_and_scores(tiny_model_dir):
    from transformers import AutoModelForCausalLM, GenerationConfig

    from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import shared_prompt_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    prompt_ids, prompt_mask = ids[:, :-keep], mask[:, :-keep]
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None,
                              output_scores=True, return_dict_in_generate=True)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    plain = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    first_plain = seen[0]
    seen.clear()
    name = cache_argument_name(model)
    cache = shared_prompt_cache(model, prompt_ids, prompt_mask, name, model.config)
    shared = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config, **{name: cache})
    hook.remove()
    assert first_plain == (6, 9) and seen[:2] == [(2, 8), (6, 1)]  # 2 prompts once, then each row's last token
    assert torch.equal(plain.sequences, shared.sequences)
    for a, b in zip(plain.scores, shared.scores):
        assert torch.allclose(a, b, atol=1e-4)
    assert shared_prompt_cache(model, prompt_ids[[0, 3]], prompt_mask[[0, 3]], name, model.config) is None


def test_a_generate_patched_on_the_model_is_used_and_kept(tmp_path, tiny_model_dir):
    """Someone else's instance-level ``model.generate`` (a wrapper, a test double) receives the shared prompt cache and
    is still in place after generation."""
    trainer = OnlineRLTrainer(_config(tmp_path, model_name_or_path=str(tiny_model_dir)), _reward, plus_one_rows(16))
    model = trainer._backend.model
    original, calls = model.generate, []

    def wrapped(*args, **kwargs):
        calls.append(sorted(kwargs))
        return original(*args, **kwargs)

    model.generate = wrapped
    trainer.train()
    assert model.__dict__["generate"] is wrapped
    assert calls and all("cache" in kw or "past_key_values" in kw for kw in calls)


def test_kept_columns_by_hand():
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]])
    assert prompt_sharing.kept_columns(mask, 4) == 2  # completion columns 2..5: the last real one is column 3
    assert prompt_sharing.kept_columns(mask, 2) == 1  # nothing real in the last 2: one column all the same
    assert prompt_sharing.kept_columns(torch.ones(2, 5, dtype=torch.long), 3) == 3


def test_passes_leave_out_the_completion_columns_after_the_rows_last_real_token(tmp_path, tiny_model_dir):
    """TRL pads completions to the generation batch's longest; each micro-batch's pass computes only up to its own
    longest, and returns the same log-probs and entropies on real tokens as TRL's full-width pass (zeros after)."""
    trainer = OnlineRLTrainer(_config(tmp_path, model_name_or_path=str(tiny_model_dir)), _reward, plus_one_rows(16))
    backend = trainer._backend
    model = backend.model
    ids, mask, keep = _grouped_batch(model.config.vocab_size)
    ids, mask, keep = torch.nn.functional.pad(ids, (0, 4)), torch.nn.functional.pad(mask, (0, 4)), keep + 4
    mask[3:, -6:] = 0  # the second micro-batch (rows 3-5) ends 6 columns before the end
    ids = ids.masked_fill(mask == 0, 0)
    widths = []
    hook = prompt_sharing.inner_model(model).register_forward_pre_hook(
        lambda m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]) if "labels" in kwargs else None,
        with_kwargs=True)
    backend._prompt_sharing_checked = True
    with torch.no_grad():
        got = backend._get_per_token_logps_and_entropies(model, ids, mask, keep, batch_size=3, compute_entropy=True)
        hook.remove()
        backend._prompt_sharing = False
        want = backend._get_per_token_logps_and_entropies(model, ids, mask, keep, batch_size=3, compute_entropy=True)
    # tails: the prompt's last token + 5 completion columns (rows 1, 2 run to column 5 of 9), then + 3
    assert widths == [6, 4]
    real = mask[:, -keep:].bool()
    for g, w in zip(got[:2], want[:2]):
        assert g.shape == w.shape == (6, keep)
        assert torch.allclose(g[real], w[real], atol=1e-5)
        assert not g[~real & (torch.arange(keep) >= 5)].any()
