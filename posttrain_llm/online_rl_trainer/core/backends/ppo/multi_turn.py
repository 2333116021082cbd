"""PPO's multi-turn rollouts: tool/environment episodes (``backends/agent_rollouts.collect_rollouts``) laid out as the
tensors PPO trains on.

Layout of one rollout batch, as in ``rollout.py`` but with the environment's tokens inside the completion:

    input_ids      = [pad p1 p2 | m1 m2 e1 e2 e3 m3 m4 pad]   prompt left-padded, completion right-padded
    attention_mask = [ 0   1  1 |  1  1  1  1  1  1  1   0 ]   every real token: the model attends to tool results
    model_mask     =            [  1  1  0  0  0  1  1   0 ]   the tokens the model wrote (env_mask of the rollout)

``completion_ids`` are the rollout's tokens exactly as generated and observed (never re-tokenised), so the log-probs
PPO recomputes are those of the sequence the model produced. The trainer's ``train_mask`` is ``model_mask`` and a
decided reward: the environment's tokens are out of the policy loss, the KL penalty, the entropy, the value loss,
GAE (``algorithms.gae_advantages_over_turns`` skips them: the next state of a model token before a tool result is
the model's first token after it) and the whitening statistics.

Rewards (choices where issue 13 is silent):

- The reward functions judge the *final* assistant message (``AgentBatch.final_texts``) with the rollout's
  ``reward_kwargs()`` (``agent_transcript``, ``agent_env_reward``, ...) as extra columns; their ``completion_ids``
  are the whole completion (model and environment tokens, as TRL passes them). The weighted sum goes on the last
  model token, as in single-turn PPO.
- Per-turn rewards (an environment's ``get_turn_reward()``, read after each turn's tools ran) are added, with weight
  1, at that turn's last model token (``Rollout.turn_end_positions``) before GAE; a turn whose reward is None gets
  0 there. The last turn's reward adds to the sequence reward on the same token.
- ``completions/clipped_ratio`` counts rollouts stopped by a length budget (``truncated``, ``max_total_tokens``).

Resume stays bit-exact: an environment is made and reset for each rollout and dropped after it (nothing carries from
one step to the next), sampling draws from the global torch RNG (``seed=None``), which checkpoints save, and the
tools do not touch it. Not covered: asynchronous rollouts, environments shared across rollouts.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ...common.tokens import left_pad
from ..agent_rollouts import LENGTH_STOPS, agent_metrics, collect_rollouts
from .rollout import Samples

Tensor = torch.Tensor


def agent_tensors(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                  env_mask: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Token lists of B rollouts -> (input_ids (B, P+C), attention_mask (B, P+C) long, completion_ids (B, C),
    real (B, C) bool: every real completion token, model_mask (B, C) bool: the model's tokens); see the module
    docstring for the layout."""
    if not (len(prompt_ids) == len(completion_ids) == len(env_mask)) or not prompt_ids:
        raise ValueError(f"{len(prompt_ids)} prompts, {len(completion_ids)} completions and {len(env_mask)} env masks; "
                         "expected as many, >= 1")
    prompt, prompt_mask = left_pad(prompt_ids, pad_id)
    width = max(len(c) for c in completion_ids)
    cids = torch.full((len(completion_ids), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(completion_ids), width), dtype=torch.bool)
    model = torch.zeros_like(real)
    for row, (ids, env) in enumerate(zip(completion_ids, env_mask)):
        if len(ids) != len(env) or any(v not in (0, 1) for v in env):
            raise ValueError(f"rollout {row}: {len(ids)} completion ids but env_mask {list(env)[:8]}... of length "
                             f"{len(env)}; expected one 0/1 per completion token")
        if not any(env):
            raise ValueError(f"rollout {row} has no model token; a rollout starts with a model turn")
        cids[row, :len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        real[row, :len(ids)] = True
        model[row, :len(ids)] = torch.tensor(list(env), dtype=torch.bool)
    return (torch.cat([prompt, cids], dim=1), torch.cat([prompt_mask, real.long()], dim=1), cids, real, model)


def turn_reward_tensor(rollouts: Sequence[Any], width: int) -> Tensor | None:
    """Per-turn rewards at each turn's last model token: (B, width) float32, 0 elsewhere and for a turn whose reward
    is None; None when no rollout has per-turn rewards (its environment has no ``get_turn_reward``)."""
    if all(r.turn_rewards is None for r in rollouts):
        return None
    out = torch.zeros((len(rollouts), width), dtype=torch.float32)
    for row, r in enumerate(rollouts):
        if r.turn_rewards is None:
            continue
        if len(r.turn_rewards) != len(r.turn_end_positions):
            raise ValueError(f"rollout {row}: {len(r.turn_rewards)} turn rewards for {len(r.turn_end_positions)} "
                             "turns; expected one per turn")
        for position, reward in zip(r.turn_end_positions, r.turn_rewards):
            if not (0 <= position < width and r.env_mask[position] == 1):
                raise ValueError(f"rollout {row}: turn end {position} is not a model token of the completion")
            if reward is not None:
                out[row, position] += float(reward)
    return out


def sample_multi_turn(c: Any, tokenizer: Any, setup: Any, cfg: Any, rows: Sequence[Mapping[str, Any]]) -> Samples:
    """Run one multi-turn rollout per row and generation (``num_generations`` adjacent per row) with the policy
    (``c`` is the run's ``PPOComponents``) -> the :class:`~.rollout.Samples` of the batch, on the run's device."""
    expanded = [row for row in rows for _ in range(cfg.num_generations)]
    with c.accelerator.autocast():
        batch = collect_rollouts(c.policy, tokenizer, [row["prompt"] for row in expanded], expanded, setup,
                                 temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, seed=None,
                                 cpu_bf16=c.cpu_bf16)
    if len(batch.rollouts) != len(expanded):
        raise ValueError(f"collect_rollouts returned {len(batch.rollouts)} rollouts for {len(expanded)} prompts")
    ids, attn, cids, _, model = agent_tensors(batch.prompt_ids, batch.completion_ids, batch.env_mask,
                                              tokenizer.pad_token_id)
    device = c.accelerator.device
    turn_rewards = turn_reward_tensor(batch.rollouts, cids.shape[1])
    clipped = torch.tensor([r.stop_reason in LENGTH_STOPS for r in batch.rollouts], dtype=torch.bool)
    return Samples(
        input_ids=ids.to(device), attention_mask=attn.to(device), completion_ids=cids.to(device),
        model_mask=model.to(device), clipped=clipped.to(device), texts=list(batch.final_texts),
        reward_ids=[list(x) for x in batch.completion_ids], extra_columns=batch.reward_kwargs(),
        turn_rewards=None if turn_rewards is None else turn_rewards.to(device),
        metrics=agent_metrics(batch, c.accelerator), multi_turn=True)
