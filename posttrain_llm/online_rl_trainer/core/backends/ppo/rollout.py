"""PPO's rollout pieces: prompts -> left-padded ids -> sampled completions -> masks -> log-probs, values, rewards.

Layout of one rollout batch (B completions, the ``num_generations`` samples of a prompt adjacent):

    input_ids  = [pad pad p1 p2 p3 | c1 c2 EOS pad]     prompt left-padded (width P), completion right-padded (C)
    completion_mask =              [ 1  1  1   0 ]      real completion tokens INCLUDING the EOS; padding after it 0

Position ids skip the left padding (``cumsum(mask) - 1``), as ``generate`` does, so the log-probs we recompute
are those of the distribution that sampled the tokens. Logits are divided by the sampling temperature before
log-softmax (Huang et al. 2024, detail 'temperature'); ``top_p`` truncation is *not* applied to the recomputed
log-probs (as in TRL), so with ``top_p < 1`` the first ratio is close to, not exactly, the sampling one.

The value of completion token t is read at the hidden state that predicts it (position P-1+t), i.e. V(s_t) of
the state before the action, aligned with the log-prob of token t.

Rewards: each reward is called the TRL way (``completions`` as chat messages, ``prompts``, ``completion_ids``,
``trainer_state`` and every dataset column except ``prompt`` as lists). ``None`` (the judge could not decide)
becomes NaN in the (B, F) reward matrix; a completion with any NaN component is *excluded from the update*
(``combine_rewards`` returns ``valid`` = False), never scored 0. That is stricter than TRL, which sums the other
components as if the missing one were 0.

Multi-turn (tool/environment) rollouts are laid out by ``multi_turn.py`` into the same :class:`Samples`, with the
environment's tokens inside the completion and out of ``model_mask``.

Generation prefills each distinct prompt once, and every forward pass of the policy, the reference and a separate
critic computes each distinct prompt of its rows once and shares its KV cache with the completions
(``share_prompt_prefix``, ``backends/shared_prompt.py``): the same logits and values up to rounding from fewer tokens.
Not covered: vLLM generation, images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from ...algorithms import logprobs_from_logits
from ...common.tokens import encode_prompt, left_pad
from ...models.critic import position_ids_from_mask
from ...rewards.base import TRAINER_KWARGS, WITHHELD_COLUMNS
from ..cpu_sampling import fast_cpu_sampling
from ..decode_loop import drop_finished_rows
from ..shared_prompt import PromptSharingUnsupported, new_cache, shared_prompt_cache, shared_prompt_forward

Tensor = torch.Tensor
logger = logging.getLogger(__name__)


def completion_mask(completion_ids: Tensor, eos_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Real completion tokens up to and including the first EOS.

    completion_ids: (B, C) -> (mask (B, C) bool, terminated (B,) bool: the row has an EOS). A row without EOS
    (truncated at the length limit) is all real.
    """
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_ids), device=completion_ids.device))
    terminated = is_eos.any(dim=1)
    length = completion_ids.shape[1]
    first_eos = torch.where(terminated, is_eos.int().argmax(dim=1), torch.full_like(terminated, length, dtype=torch.long))
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)
    return positions <= first_eos.unsqueeze(1), terminated


# ---------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def sample_completions(model: Any, prompt_ids: Tensor, prompt_mask: Tensor, generation_config: Any, eos_ids: Sequence[int],
                       cache_kw: str | None = None):
    """Sample one completion per row with ``model.generate``.

    prompt_ids, prompt_mask: (B, P) left-padded -> (input_ids (B, P+C), attention_mask (B, P+C), completion_ids
    (B, C), completion_mask (B, C) bool, terminated (B,) bool). The attention mask is 0 on padding after EOS.
    ``cache_kw``: the model's cache keyword, to prefill each distinct prompt once (``shared_prompt_cache``).
    """
    extra = {}
    if cache_kw is not None:
        cache = shared_prompt_cache(model, prompt_ids, prompt_mask, cache_kw, model.config)
        extra = {} if cache is None else {cache_kw: cache}
    with fast_cpu_sampling(), drop_finished_rows(model):
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation_config,
                             **extra)
    completion_ids = out[:, prompt_ids.shape[1]:]
    mask, terminated = completion_mask(completion_ids, eos_ids)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    return out, attention_mask, completion_ids, mask, terminated


@dataclass
class Samples:
    """One sampled batch (B = rows x num_generations, the generations of a row adjacent), single- or multi-turn."""

    input_ids: Tensor
    """(B, P+C): left-padded prompt, right-padded completion."""
    attention_mask: Tensor
    """(B, P+C) long: 1 on every real token (prompt, model and environment tokens)."""
    completion_ids: Tensor
    """(B, C)."""
    model_mask: Tensor
    """(B, C) bool: the tokens the model wrote (the real completion tokens single-turn; no environment token)."""
    clipped: Tensor
    """(B,) bool: the sample was cut by a length limit."""
    texts: list[str]
    """What the reward functions judge (the final assistant message, multi-turn)."""
    reward_ids: list[list[int]]
    """The ``completion_ids`` passed to the reward functions."""
    extra_columns: dict[str, list] = field(default_factory=dict)
    """Reward keyword arguments beside the dataset columns (``AgentBatch.reward_kwargs()``, multi-turn)."""
    turn_rewards: Tensor | None = None
    """(B, C) per-turn rewards at turn ends, or None (see ``multi_turn.py``)."""
    metrics: dict[str, float] = field(default_factory=dict)
    multi_turn: bool = False


def sample_single_turn(c: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], num_generations: int) -> Samples:
    """One completion per row and generation with ``generate`` (``c`` is the run's ``PPOComponents``)."""
    encoded = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
    prompt_ids, prompt_mask = left_pad([e for e in encoded for _ in range(num_generations)], tokenizer.pad_token_id)
    device = c.accelerator.device
    with c.autocast():
        ids, attn, cids, cmask, terminated = sample_completions(
            c.policy, prompt_ids.to(device), prompt_mask.to(device), c.generation_config, c.eos_ids, c.policy_cache_kw)
    kept = [row[m].tolist() for row, m in zip(cids, cmask)]
    texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    return Samples(ids, attn, cids, cmask, ~terminated, texts, kept)


# --------------------------------------------------------------------------------------------- forward passes
def policy_forward(module: Any, input_ids: Tensor, attention_mask: Tensor, num_completion_tokens: int,
                   temperature: float, shared_value_head: bool, cache_kw: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Temperature-scaled logits for the completion tokens, and the shared head's values when there is one.

    input_ids, attention_mask: (B, P+C) -> (logits (B, C, V), values (B, C) float32 or None). ``cache_kw``: the
    keyword the policy takes a KV cache by, to compute each distinct prompt once (``share_prompt_prefix``); None
    computes every row whole (always so with the shared value head).
    """
    keep = num_completion_tokens + 1
    position_ids = position_ids_from_mask(attention_mask)
    if shared_value_head:
        logits, values = module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                logits_to_keep=keep)
        values = values[:, :-1]
    else:
        def prefix(ids, mask, pos, cache):
            return module(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **{cache_kw: cache})

        def tail(ids, mask, pos, cache):  # ids: the prompt's last token + the completion, (B, keep)
            return module(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                          **{cache_kw: cache}).logits

        logits = _shared(module, prefix, tail, input_ids, attention_mask, position_ids, keep) if cache_kw else None
        if logits is None:
            logits = module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            logits_to_keep=keep, use_cache=False).logits
        values = None
    return logits[:, :-1] / temperature, values


def critic_values(critic: Any, input_ids: Tensor, attention_mask: Tensor, num_completion_tokens: int,
                  cache_kw: str | None = None) -> Tensor:
    """A separate critic's values at the completion tokens: (B, P+C) -> (B, C) float32 (``cache_kw``: as in
    :func:`policy_forward`)."""
    keep = num_completion_tokens + 1
    position_ids = position_ids_from_mask(attention_mask)

    def on_cache(ids, mask, pos, cache):  # the prompt pass and the completions' pass alike: values of every column
        return critic(input_ids=ids, attention_mask=mask, position_ids=pos, **{cache_kw: cache})

    values = _shared(critic, on_cache, on_cache, input_ids, attention_mask, position_ids, keep) if cache_kw else None
    if values is None:
        values = critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return values[:, -keep:-1]


_WARNED: set[str] = set()


def _shared(module: Any, prefix: Any, tail: Any, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
            keep: int) -> Tensor | None:
    """The tail's output with each distinct prompt (and the prompts' common prefix) computed once, or None (nothing
    shared, or the model's cache cannot carry gradients: then a warning, once per model class, and the caller computes
    every row whole)."""
    config = getattr(module, "config", None) or getattr(getattr(module, "backbone", None), "config", None)
    try:
        return shared_prompt_forward(prefix, tail, input_ids, attention_mask, input_ids.shape[1] - keep + 1,
                                     lambda: new_cache(config), position_ids=position_ids,
                                     needs_grad=torch.is_grad_enabled(), common_prefix=True)
    except PromptSharingUnsupported as err:
        if type(module).__name__ not in _WARNED:
            _WARNED.add(type(module).__name__)
            logger.warning("share_prompt_prefix: %s computes every row whole (%s)", type(module).__name__, err)
        return None


def token_logprobs(logits: Tensor, completion_ids: Tensor) -> Tensor:
    """(B, C, V) logits, (B, C) ids -> (B, C) log-probs of the sampled tokens (float32 for low-precision logits)."""
    return logprobs_from_logits(logits, completion_ids)


@torch.no_grad()
def rollout_passes(c: Any, ids: Tensor, attn: Tensor, cids: Tensor, temperature: float,
                   values: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Old log-probs, reference log-probs (None without a reference) and values of a sampled batch, per micro-batch.

    ids, attn: (B, P+C); cids: (B, C) -> ((B, C) float32, (B, C) float32 or None, (B, C) float32 or None). ``c`` is
    the run's ``PPOComponents``; every pass runs under its precision context (``c.autocast()``). ``values=False``:
    no separate critic's forward (the update computes the values, ``targets.py``); a shared critic's values come
    with the policy's forward anyway.
    """
    length = cids.shape[1]
    want_values = values
    old_logp, ref_logp, values_out = [], [], []
    shared = c.shared_module is not None
    for rows in torch.arange(ids.shape[0]).split(c.micro_batch):
        with c.autocast():
            logits, v = policy_forward(c.shared_module if shared else c.policy, ids[rows], attn[rows], length,
                                       temperature, shared, c.policy_cache_kw)
            old_logp.append(token_logprobs(logits, cids[rows]))
            if v is not None or want_values:
                values_out.append(v if v is not None else critic_values(c.critic, ids[rows], attn[rows], length,
                                                                        c.critic_cache_kw))
            if c.has_reference:
                with c.reference_context():
                    ref_logits, _ = policy_forward(c.reference, ids[rows], attn[rows], length, temperature, False,
                                                   c.policy_cache_kw)
                ref_logp.append(token_logprobs(ref_logits, cids[rows]))
    ref = torch.cat(ref_logp).float() if ref_logp else None
    return torch.cat(old_logp).float(), ref, torch.cat(values_out).float() if values_out else None


@torch.no_grad()
def fp32_logprobs(c: Any, ids: Tensor, attn: Tensor, cids: Tensor, temperature: float) -> Tensor:
    """The policy's log-probs of ``cids`` without any autocast (the fp32 reference of the bf16 drift check)."""
    shared = c.shared_module is not None
    logits, _ = policy_forward(c.shared_module if shared else c.policy, ids, attn, cids.shape[1], temperature, shared)
    return token_logprobs(logits, cids)


# ------------------------------------------------------------------------------------------------- rewards
def score_completions(reward_funcs: Sequence[Any], texts: Sequence[str], prompts: Sequence[Any],
                      completion_ids: Sequence[Sequence[int]], columns: dict[str, list], trainer_state: Any = None) -> Tensor:
    """Call every reward on the batch -> (B, F) float64 matrix, NaN where a reward returned None.

    ``columns``: dataset columns as lists aligned with ``texts`` (the prompt's row repeated per generation).
    """
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    extra = {k: v for k, v in columns.items() if k not in WITHHELD_COLUMNS | TRAINER_KWARGS}
    matrix = torch.full((len(texts), len(reward_funcs)), float("nan"), dtype=torch.float64)
    for j, fn in enumerate(reward_funcs):
        values = fn(completions=completions, prompts=list(prompts), completion_ids=[list(c) for c in completion_ids],
                    trainer_state=trainer_state, **extra)
        for i, v in enumerate(values):
            if v is not None:
                matrix[i, j] = float(v)
    return matrix


def combine_rewards(matrix: Tensor, weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Weighted sum of reward components per completion, and which completions can be trained on.

    matrix: (B, F) with NaN for "judge could not decide"; weights: F floats -> (total (B,), valid (B,) bool).
    A row with any NaN is invalid and gets total 0 (a placeholder: invalid rows are masked out of the update).
    """
    if matrix.dim() != 2 or matrix.shape[1] != len(weights):
        raise ValueError(f"reward matrix {tuple(matrix.shape)} does not match {len(weights)} weights")
    valid = ~torch.isnan(matrix).any(dim=1)
    w = torch.tensor(list(weights), dtype=matrix.dtype, device=matrix.device)
    total = (torch.nan_to_num(matrix, nan=0.0) * w).sum(dim=1)
    return torch.where(valid, total, torch.zeros_like(total)), valid


def _mean_std(values: Tensor) -> tuple[float, float]:
    if values.numel() == 0:
        return float("nan"), float("nan")
    std = float(values.std()) if values.numel() > 1 else 0.0
    return float(values.mean()), std


def reward_metrics(matrix: Tensor, weights: Sequence[float], names: Sequence[str]) -> dict[str, float]:
    """TRL-style reward logs from a (gathered) reward matrix: per component mean/std over its non-None values and
    ``judge_errors`` (count of None), then ``reward``/``reward_std`` of the weighted total over valid rows."""
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        column = matrix[:, j]
        finite = column[~torch.isnan(column)]
        out[f"rewards/{name}/mean"], out[f"rewards/{name}/std"] = _mean_std(finite)
        out[f"rewards/{name}/judge_errors"] = float(torch.isnan(column).sum())
    total, valid = combine_rewards(matrix, weights)
    out["reward"], out["reward_std"] = _mean_std(total[valid])
    out["samples_excluded"] = float((~valid).sum())
    return out
