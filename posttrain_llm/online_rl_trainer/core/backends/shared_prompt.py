"""One forward of each distinct prompt in a batch, its key/value cache shared by every completion of that prompt.

GRPO and RLOO sample G completions per prompt, and every log-prob pass (the loss, old and reference log-probs) runs the
model over prompt + completion for each of the G rows: the prompt's hidden states are computed G times, identically.
On the README's SmolLM2 task the chat prompt is ~100 tokens and a completion ~20-40, so most of a step's forward and
backward was spent on copies of the same prompt. Here a batch's rows are grouped by their prompt (token for token,
padding included); each distinct prompt but its last token goes through the model once with a cache, the cache is
indexed out to the rows (``Cache.batch_select_indices``, a differentiable gather), and the rows' last prompt token +
completion go through the model on top of it. Autograd carries the completions' gradients back through the cached
keys and values into the one prompt pass, so the loss, the log-probs and the gradients are those of the per-row
forward (same positions, same masks) up to float rounding: the same function, computed with fewer tokens.

This is the "shared-prefix forward" of Prefix Grouper (Liu et al. 2025, arXiv:2506.05433), done through the model's
own KV cache instead of a custom attention kernel, so any decoder whose cache is a differentiable
``transformers`` ``Cache`` works unchanged. A row's tail attends over the prompt keys of its own row (padding masked as
in the per-row pass); training shares nothing across different prompts.

Evaluation (greedy, no gradient) goes one step further: :func:`common_prefix_inputs` lays a batch of *different*
prompts out as [their common token prefix][padding][each prompt's own rest], and :func:`common_prefix_cache` computes
that prefix once (a system prompt and a few-shot example are most of a typical eval prompt). The padding sits
between the prefix and the rest instead of on the left; the attention mask hides it and positions count only real
tokens (``generate``'s cumsum of the mask), so each row is the function of its left-padded form.

Not covered: encoder-decoder and multimodal models, caches that write into preallocated buffers (static caches) or
detach, gradient checkpointing (transformers drops the cache under it), and several processes (DDP sees two forward
calls per backward). Callers fall back to the per-row forward there; :func:`shared_prompt_forward` returns ``None``
when a batch has nothing to share and raises :class:`PromptSharingUnsupported` when the cache does not carry gradients.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["CommonPrefix", "PromptGroups", "PromptSharingUnsupported", "batch_common_prefix", "cache_argument_name",
           "common_prefix_cache",
           "common_prefix_inputs", "group_blocks", "inner_model", "new_cache", "prompt_groups", "shared_prompt_cache",
           "shared_prompt_forward"]


class PromptSharingUnsupported(RuntimeError):
    """The model's cache cannot carry a shared prompt (it does not connect the completions' gradients to it)."""


@dataclass(frozen=True)
class PromptGroups:
    """Rows grouped by identical prompt. ``first``: (U,) the first row of each distinct prompt; ``inverse``: (B,) the
    distinct prompt of each row (``first[inverse[r]]`` has row r's prompt); ``lead``: leading columns that are padding
    in every row (dropped before the forward, as they change nothing)."""

    first: Tensor
    inverse: Tensor
    lead: int

    @property
    def num_prompts(self) -> int:
        return int(self.first.shape[0])


@dataclass(frozen=True)
class CommonPrefix:
    """First tokens of every prompt whose keys and values were computed elsewhere: ``cache()`` returns a fresh cache
    of one row holding them (the GRPO trainer builds it from tensors whose gradients it collects over the
    micro-batches of an optimizer step, ``backends/trl/prompt_sharing.py``)."""

    tokens: tuple[int, ...]
    cache: Callable[[], Any]


def batch_common_prefix(prompts: list[list[int]], shortest_own: int = 2) -> tuple[int, ...]:
    """The longest first tokens shared by every token list that leaves each at least ``shortest_own`` tokens of its
    own. [[1, 2, 3, 4], [1, 2, 5, 6, 7]] -> (1, 2); [[1, 2, 3]] -> (1,)."""
    if not prompts:
        return ()
    shortest, first = min(len(p) for p in prompts), prompts[0]
    length = 0
    while length < shortest - shortest_own and all(p[length] == first[length] for p in prompts):
        length += 1
    return tuple(first[:length])


def prompt_groups(input_ids: Tensor, attention_mask: Tensor, prompt_length: int) -> PromptGroups:
    """input_ids, attention_mask: (B, L) with the prompt in the first ``prompt_length`` columns (left padded) ->
    the distinct prompts. Two rows share a prompt when their prompt columns agree token for token and pad for pad."""
    prompt_mask = attention_mask[:, :prompt_length].bool()
    prompts = input_ids[:, :prompt_length].masked_fill(~prompt_mask, -1)  # pads compare equal whatever their id
    _, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    first = torch.full((int(inverse.max()) + 1,), input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    lead = int((~prompt_mask.any(dim=0)).long().cumprod(dim=0).sum())
    return PromptGroups(first=first, inverse=inverse, lead=lead)


def group_blocks(permutation: Tensor, group_size: int) -> Tensor:
    """A row order that keeps groups of ``group_size`` consecutive rows together, from a random row permutation:
    the groups in the order their rows first appear in it. (N,) permutation of 0..N-1, N a multiple of
    ``group_size`` -> (N,) row indices. Example: [5, 0, 3, 1, 4, 2] with groups of 2 -> groups 2, 0, 1 ->
    [4, 5, 0, 1, 2, 3]."""
    n = permutation.shape[0]
    groups = permutation // group_size
    first_seen = torch.full((n // group_size,), n, dtype=torch.long, device=permutation.device)
    first_seen = first_seen.scatter_reduce(0, groups, torch.arange(n, device=permutation.device), reduce="amin")
    starts = torch.argsort(first_seen) * group_size
    return (starts[:, None] + torch.arange(group_size, device=permutation.device)).flatten()


def cache_argument_name(model: Any) -> str | None:
    """The keyword a causal LM's ``forward`` takes its KV cache by (``cache`` in transformers >= 5.x, before that
    ``past_key_values``), or None when it takes none. ``model``: the transformers model (not a PEFT/DDP wrapper)."""
    try:
        parameters = inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    return None


def inner_model(model: Any) -> Any:
    """The transformers model inside PEFT/DDP wrappers (where ``forward``'s signature and the config live)."""
    model = getattr(model, "module", model)  # DDP
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def new_cache(config: Any) -> Any:
    """An empty ``DynamicCache`` for a model with this config (the layer types -- full or sliding attention -- come
    from the config where the installed transformers supports that)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


def _cache_tensors(cache: Any) -> list[Tensor]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                if isinstance(t, Tensor)]
    return [t for t in (*getattr(cache, "key_cache", []), *getattr(cache, "value_cache", [])) if isinstance(t, Tensor)]


def shared_prompt_forward(prefix_call: Callable[..., Any], tail_call: Callable[..., Any], input_ids: Tensor,
                          attention_mask: Tensor, prompt_length: int, make_cache: Callable[[], Any], *,
                          position_ids: Tensor | None = None, needs_grad: bool = False,
                          groups: PromptGroups | None = None, common_prefix: bool | CommonPrefix = False) -> Any:
    """The per-row forward over ``input_ids`` computed with each distinct prompt once; ``None`` if no two rows share a
    prompt (nothing to gain: run the per-row forward).

    input_ids, attention_mask: (B, L), prompt in the first ``prompt_length`` columns, completion after it.
    ``prefix_call(input_ids, attention_mask, position_ids, cache)`` runs the model over the distinct prompts but their
    last token, (U, P-1), filling ``cache``; its result is ignored. ``tail_call(input_ids, attention_mask,
    position_ids, cache)`` runs it over each row's last prompt token + completion, (B, L-P+1), with the (B, L) mask of
    the whole row, and its result is returned: hidden states at column j of the tail are those of column P-1+j of the
    per-row forward. ``position_ids``: (B, L), or None to let the model number the columns 0.. as in a per-row forward
    without them (the leading all-padding columns are dropped first, which shifts every position alike -- rotary
    attention depends only on differences). ``needs_grad``: the caller will back-propagate; then a cache that holds
    no tensor with a gradient raises :class:`PromptSharingUnsupported` rather than silently dropping the prompt's
    gradient. ``groups``: ``prompt_groups(input_ids, attention_mask, prompt_length)`` when the caller has it already.

    ``common_prefix``: when the distinct prompts begin with the same tokens (a system prompt, a few-shot example),
    those are computed once too, in a first ``prefix_call`` on (1, L) -- three levels: the common prefix, each
    distinct prompt's own tokens on top of it (a second ``prefix_call``, (U, M), left-padded between prefix and own
    tokens), each row's tail on top of that. Positions are then explicit: every row's real tokens numbered 0, 1, ...
    without gaps, so a rotary model sees the relative positions of the per-row pass (absolute offsets differ from a
    left-padded pass without ``position_ids``; models with absolute position embeddings must not use it -- the
    trainers' self-checks would catch them). A :class:`CommonPrefix` supplies the first level already computed (even
    for a single distinct prompt); rows whose prompts do not all begin with its tokens fall back to ``True``.
    """
    if groups is None:
        groups = prompt_groups(input_ids, attention_mask, prompt_length)
    prompts = None
    if common_prefix is not False:
        prompts = [input_ids[r, :prompt_length][attention_mask[r, :prompt_length].bool()].tolist()
                   for r in groups.first.tolist()]
    if isinstance(common_prefix, CommonPrefix):
        n = len(common_prefix.tokens)
        if n and all(len(p) >= n + 2 and tuple(p[:n]) == common_prefix.tokens for p in prompts):
            return _three_level_forward(prefix_call, tail_call, input_ids, attention_mask, prompt_length, make_cache,
                                        groups, n, [p[n:-1] for p in prompts], needs_grad, common_prefix.cache)
    if prompts is not None and len(prompts) > 1:
        n = len(batch_common_prefix(prompts))
        if n >= 2:
            return _three_level_forward(prefix_call, tail_call, input_ids, attention_mask, prompt_length, make_cache,
                                        groups, n, [p[n:-1] for p in prompts], needs_grad)
    lead = groups.lead
    prefix_length = prompt_length - lead - 1
    if groups.num_prompts == input_ids.shape[0] or prefix_length < 1:
        return None
    ids, mask = input_ids[:, lead:], attention_mask[:, lead:]
    pos = position_ids[:, lead:] if position_ids is not None else None
    cache = make_cache()
    prefix_call(ids[groups.first, :prefix_length], mask[groups.first, :prefix_length],
                None if pos is None else pos[groups.first, :prefix_length], cache)
    _check_gradient(cache, needs_grad)
    cache.batch_select_indices(groups.inverse)
    return tail_call(ids[:, prefix_length:], mask, None if pos is None else pos[:, prefix_length:], cache)


def _check_gradient(cache: Any, needs_grad: bool) -> None:
    if needs_grad and not any(t.requires_grad for t in _cache_tensors(cache)):
        raise PromptSharingUnsupported(
            f"{type(cache).__name__} holds no tensor with a gradient after the prompt pass: the completions' gradients "
            "would not reach the prompt")


def _three_level_forward(prefix_call: Callable[..., Any], tail_call: Callable[..., Any], input_ids: Tensor,
                         attention_mask: Tensor, prompt_length: int, make_cache: Callable[[], Any],
                         groups: PromptGroups, common: int, middles: list[list[int]], needs_grad: bool,
                         first_cache: Callable[[], Any] | None = None) -> Any:
    """:func:`shared_prompt_forward` with the common prefix of ``common`` tokens computed once (see there), or taken
    from ``first_cache()``."""
    device, rows = input_ids.device, input_ids.shape[0]
    width = max(len(m) for m in middles)
    mid_ids = torch.zeros((len(middles), width), dtype=input_ids.dtype, device=device)
    mid_mask = torch.zeros((len(middles), width), dtype=attention_mask.dtype, device=device)
    for u, m in enumerate(middles):
        mid_ids[u, width - len(m):] = torch.tensor(m, dtype=input_ids.dtype, device=device)
        mid_mask[u, width - len(m):] = 1
    ones = torch.ones((1, common), dtype=attention_mask.dtype, device=device)
    if first_cache is not None:
        cache = first_cache()
    else:
        first = int(groups.first[0])
        common_ids = input_ids[first, :prompt_length][attention_mask[first, :prompt_length].bool()][:common]
        cache = make_cache()
        prefix_call(common_ids[None], ones, torch.arange(common, device=device)[None], cache)
    _check_gradient(cache, needs_grad)
    cache.batch_select_indices(torch.zeros(len(middles), dtype=torch.long, device=device))
    mid_positions = (common + mid_mask.long().cumsum(1) - 1).clamp(min=common)  # padding: any position, masked
    prefix_call(mid_ids, torch.cat([ones.expand(len(middles), -1), mid_mask], 1), mid_positions, cache)
    cache.batch_select_indices(groups.inverse)
    tail_ids, tail_mask = input_ids[:, prompt_length - 1:], attention_mask[:, prompt_length - 1:]
    full_mask = torch.cat([ones.expand(rows, -1), mid_mask[groups.inverse], tail_mask], 1)
    start = common + mid_mask.long().sum(1)[groups.inverse]
    tail_positions = start[:, None] + torch.arange(tail_ids.shape[1], device=device)[None]
    return tail_call(tail_ids, full_mask, tail_positions, cache)


@torch.no_grad()
def shared_prompt_cache(model: Any, input_ids: Tensor, attention_mask: Tensor, cache_kw: str, config: Any) -> Any:
    """For ``generate``: a cache holding every row's prompt but its last token, each distinct prompt computed once,
    or None when no two rows share a prompt. Passed as ``generate(input_ids, attention_mask, <cache_kw>=cache)``, the
    prefill then runs only each row's last prompt token (G completions of a prompt: the prompt prefilled once, not G
    times). input_ids, attention_mask: (B, P) left-padded prompts. Positions are those ``generate`` gives left-padded
    rows (cumsum of the mask - 1), so the cache is what its own prefill would have written."""
    groups = prompt_groups(input_ids, attention_mask, input_ids.shape[1])
    if groups.num_prompts == input_ids.shape[0] or input_ids.shape[1] < 2:
        return None
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    rows = groups.first
    cache = new_cache(config)
    model(input_ids=input_ids[rows, :-1], attention_mask=attention_mask[rows, :-1], position_ids=positions[rows, :-1],
          use_cache=True, logits_to_keep=1, **{cache_kw: cache})
    cache.batch_select_indices(groups.inverse)
    return cache


def common_prefix_inputs(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor, int]:
    """Token lists (B rows of different lengths) -> (input_ids (B, L+S), attention_mask (B, L+S), L): the L tokens
    every row starts with, then each row's remaining tokens left-padded to the longest rest S. L leaves every row
    at least one token after the prefix (so ``generate`` has a last prompt token to prefill); L = 0 when the rows
    share nothing (or there is one row: then the layout is plain left padding). Example: [1, 2, 3, 4] and [1, 2, 5]
    -> L = 2, ids [[1, 2, 3, 4], [1, 2, pad, 5]], mask [[1, 1, 1, 1], [1, 1, 0, 1]]."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("common_prefix_inputs: every row needs at least one token")
    shortest = min(len(s) for s in sequences)
    length = 0
    if len(sequences) > 1:
        first = sequences[0]
        while length < shortest - 1 and all(s[length] == first[length] for s in sequences):
            length += 1
    rests = [list(s[length:]) for s in sequences]
    width = max(len(r) for r in rests)
    ids = torch.full((len(sequences), length + width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length + width), dtype=torch.long)
    if length:
        ids[:, :length] = torch.tensor(list(sequences[0][:length]), dtype=torch.long)
        mask[:, :length] = 1
    for row, rest in enumerate(rests):
        ids[row, length + width - len(rest):] = torch.tensor(rest, dtype=torch.long)
        mask[row, length + width - len(rest):] = 1
    return ids, mask, length


@torch.no_grad()
def common_prefix_cache(model: Any, input_ids: Tensor, prefix_length: int, cache_kw: str, config: Any,
                        rows: int | None = None) -> Any:
    """For ``generate`` on :func:`common_prefix_inputs` output: a cache of the common prefix, computed once for one
    row and copied to ``rows`` rows (default: every row of ``input_ids``; B x ``num_return_sequences`` when
    ``generate`` expands the batch -- the copies are identical, so their order does not matter). input_ids: (B, L+S);
    positions 0..L-1, as ``generate`` numbers them. None when there is no prefix."""
    if prefix_length < 1:
        return None
    prefix = input_ids[:1, :prefix_length]
    cache = new_cache(config)
    model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
          position_ids=torch.arange(prefix_length, device=prefix.device)[None], use_cache=True, logits_to_keep=1,
          **{cache_kw: cache})
    count = input_ids.shape[0] if rows is None else rows
    cache.batch_select_indices(torch.zeros(count, dtype=torch.long, device=prefix.device))
    return cache
