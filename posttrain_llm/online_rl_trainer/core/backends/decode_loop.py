"""A decoding loop for ``generate`` that drops finished rows from the batch.

transformers' sampling loop (``GenerationMixin._sample``) runs every row of a batch until the last row ends: a row that
wrote EOS keeps going through every layer, its new tokens replaced by padding. Sampled completions differ a lot in
length (the README's GRPO task: 16 rows, most end within ~10-20 tokens, a few run to the 64-token limit), so most of a
generation's decode steps compute rows that have already ended, and on a CPU a decode step's cost grows with its rows
(SmolLM2-135M on 2 cores, one new token under bf16 autocast: 64 ms for 1 row, 79 for 4, 141 for 16).

:func:`sample_dropping_finished` is that loop with finished rows removed: after each step the rows that ended leave
the KV cache (``Cache.batch_select_indices``), the attention mask and the positions, and only the rows still running
go through the model. It runs as ``generate``'s decoding loop (``custom_generate``, transformers' hook for one:
``generate`` still prepares the inputs, the cache, the logits processors and the stopping criteria, and the prefill
is its own ``_prefill``), so the caller gets what ``generate`` returns: (B, P + T) ids, padding after each row's EOS, T
the number of steps until the last row ended. :func:`drop_finished_rows` installs it on a model for a ``with`` block;
GRPO/RLOO generation, PPO's rollout and ``ModelEvaluator`` run inside one. Measured by ``benchmarks/bench_decode.py``.

Same tokens as ``generate``: the logits processors see each running row's ids as before, and each step draws its
sample for the whole batch (a finished row gets a one-point distribution on the pad token and its draw is discarded),
so the random stream is the one ``generate`` uses and a seed gives the same completions, up to float rounding of
matmuls over a smaller batch. Greedy decoding has no stream to keep.

Covers: sampling and greedy search, processors that act on each row alone (temperature, top-k, top-p, min-p),
stopping on EOS, length or a per-row token budget (:class:`RowBudgets`), decoder-only models with a dynamic KV cache
(full or sliding-window layers), text inputs, ``return_dict_in_generate`` with raw logits or scores (the agent rollouts
read the logits; a row's entries after its end are zeros, and no cache is returned), transformers 5 (its
``_prefill``). Anything else -- other processors (a repetition penalty) or stopping criteria (stop strings), a
streamer, attentions or hidden states in the output, several synchronised GPUs, static or linear-attention caches,
multimodal inputs -- runs transformers' own loop unchanged (:func:`unsupported_reason` says why); beam search and the
other modes never reach this loop. Not done: continuous batching (new rows joining as others end), which a batch of
fixed prompts does not need.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from transformers.generation.stopping_criteria import StoppingCriteria

from ..common.patching import patched

__all__ = ["ENABLED", "RowBudgets", "drop_finished_rows", "sample_dropping_finished", "unsupported_reason"]

#: Switch for measuring the loop against transformers' own (``benchmarks/bench_cpu_step.py``'s ``noprune``).
ENABLED = True

# Processors whose output row r depends on row r of the ids and scores only (checked by exact class).
# (Not the repetition penalty: generate gives it per-row prompt lengths sized to the whole batch.)
_ROW_WISE_PROCESSORS = frozenset({"TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper"})
_CACHE_KEYS = ("cache", "past_key_values")
# What ``generate`` hands a text-only decoder's loop besides the cache.
_MODEL_KWARGS = frozenset({"attention_mask", "position_ids", "use_cache", "logits_to_keep", *_CACHE_KEYS})
_CACHE_LAYERS = frozenset({"DynamicLayer", "DynamicSlidingWindowLayer"})


class RowBudgets(StoppingCriteria):
    """A stopping criterion for ``generate``: row i ends after ``budgets[i]`` new tokens (``max_new_tokens`` is one
    number for the whole batch). transformers' loop pads a row after its budget; :func:`sample_dropping_finished`
    drops it from the batch there. Either way each step still draws for every row, so the tokens within the budgets
    are what the same call without the criterion samples."""

    def __init__(self, prompt_length: int, budgets: Sequence[int]) -> None:
        if prompt_length < 0 or not budgets or any(int(b) < 1 for b in budgets):
            raise ValueError(f"RowBudgets(prompt_length={prompt_length}, budgets={list(budgets)}): expected a "
                             "prompt length >= 0 and at least one budget, each >= 1")
        self.prompt_length = int(prompt_length)
        self.budgets = torch.tensor([int(b) for b in budgets], dtype=torch.long)

    def check_batch(self, batch: int) -> None:
        if batch != self.budgets.numel():
            raise ValueError(f"RowBudgets has {self.budgets.numel()} budgets for a batch of {batch} rows")

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        """input_ids: (B, prompt_length + t) -> (B,) bool: the rows whose budget is spent after t new tokens."""
        self.check_batch(input_ids.shape[0])
        return (self.budgets <= input_ids.shape[1] - self.prompt_length).to(input_ids.device)


def _cache_of(model_kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    for key in _CACHE_KEYS:
        if model_kwargs.get(key) is not None:
            return key, model_kwargs[key]
    return None, None


def unsupported_reason(model: Any, logits_processor: Any, stopping_criteria: Any, generation_config: Any,
                       synced_gpus: bool = False, streamer: Any = None, **model_kwargs: Any) -> str | None:
    """Why :func:`sample_dropping_finished` would hand this call to transformers' loop, or None when it runs it."""
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    if getattr(model.config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    if synced_gpus:
        return "synced GPUs (every process must run every step)"
    if streamer is not None:
        return "a streamer"
    if getattr(generation_config, "return_dict_in_generate", False) and (
            generation_config.output_attentions or generation_config.output_hidden_states):
        return "attentions or hidden states asked for in the output"
    if getattr(generation_config, "_pad_token_tensor", None) is None:
        return "no pad token"
    if not callable(getattr(model, "_prefill", None)):
        return f"{type(model).__name__} has no _prefill (transformers < 5)"
    extra = sorted(set(k for k, v in model_kwargs.items() if v is not None) - _MODEL_KWARGS)
    if extra:
        return f"model inputs {extra}"
    if model_kwargs.get("use_cache") is False or model_kwargs.get("position_ids") is None:
        return "no cache or no position ids"
    _, cache = _cache_of(model_kwargs)
    layers = getattr(cache, "layers", None)
    if cache is None or getattr(cache, "is_compileable", True) or not layers:
        return f"cache {type(cache).__name__} (a dynamic cache is needed)"
    odd = sorted({type(layer).__name__ for layer in layers} - _CACHE_LAYERS)
    if odd:
        return f"cache layers {odd}"
    odd = sorted({type(p).__name__ for p in logits_processor} - _ROW_WISE_PROCESSORS)
    if odd:
        return f"logits processors {odd}"
    kinds = [type(c) for c in stopping_criteria]
    if MaxLengthCriteria not in kinds or any(k not in (MaxLengthCriteria, EosTokenCriteria, RowBudgets) for k in kinds):
        return f"stopping criteria {[k.__name__ for k in kinds]}"
    return None


@torch.no_grad()
def sample_dropping_finished(model: Any, input_ids: torch.Tensor, logits_processor: Any, stopping_criteria: Any,
                             generation_config: Any, synced_gpus: bool = False, streamer: Any = None,
                             **model_kwargs: Any) -> Any:
    """``generate``'s decoding loop (``custom_generate``) for sampling and greedy search, finished rows dropped.

    input_ids: (B, P) prompts as ``generate`` prepared them -> (B, P + T) ids, the pad token after each row's EOS;
    with ``return_dict_in_generate`` a ``GenerateDecoderOnlyOutput`` of those ids and, when asked for, T (B, V) raw
    logits / processed scores, zeros in a row's entries after it ended (transformers computes them on padding) and
    no cache (``cache=None``: the one decoded into holds only the rows that ran longest).
    Calls outside :func:`unsupported_reason`'s cover run ``GenerationMixin._sample`` with the same arguments.
    """
    from transformers.generation.configuration_utils import GenerationMode
    from transformers.generation.utils import GenerationMixin

    mode = generation_config.get_generation_mode()
    if mode not in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH):
        # drop_finished_rows only installs this loop for these modes; anything else reaching it is a caller's mistake
        raise ValueError(f"sample_dropping_finished decodes by sampling or greedy search, not {mode.value!r}; call "
                         "generate without custom_generate for that mode")
    if not ENABLED or unsupported_reason(model, logits_processor, stopping_criteria, generation_config, synced_gpus,
                                         streamer, **model_kwargs) is not None:
        return GenerationMixin._sample(model, input_ids, logits_processor=logits_processor,
                                       stopping_criteria=stopping_criteria, generation_config=generation_config,
                                       synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)

    cache_key, cache = _cache_of(model_kwargs)
    batch = input_ids.shape[0]
    device = input_ids.device
    steps_allowed, eos_ids, allowed = _limits(stopping_criteria, input_ids)
    pad = int(generation_config._pad_token_tensor)
    as_dict = bool(generation_config.return_dict_in_generate)
    raw_logits = [] if as_dict and generation_config.output_logits else None
    processed = [] if as_dict and generation_config.output_scores else None
    if steps_allowed < 1:
        return _output(input_ids, as_dict, processed, raw_logits)
    generated = torch.full((batch, steps_allowed), pad, dtype=input_ids.dtype, device=device)

    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    mask = model_kwargs.get("attention_mask")
    if mask is None:  # generate drops an all-ones mask: every position the cache now holds is a real token
        mask = torch.ones((batch, cache.get_seq_length()), dtype=torch.long, device=device)
    position = model_kwargs["position_ids"][:, -1:]
    rows = torch.arange(batch, device=device)  # the batch row of each row still running
    steps = 0
    while True:
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        del outputs
        scores = logits_processor(torch.cat([input_ids[rows], generated[rows, :steps]], dim=1), logits)
        if raw_logits is not None:
            raw_logits.append(_batch_rows(logits, rows, batch))
        if processed is not None:
            processed.append(_batch_rows(scores, rows, batch))
        tokens = _draw(scores, rows, batch, pad) if generation_config.do_sample else scores.argmax(dim=-1)
        generated[rows, steps] = tokens
        steps += 1
        if steps >= steps_allowed:
            break
        running = ~torch.isin(tokens, eos_ids) if eos_ids is not None else torch.ones_like(tokens, dtype=torch.bool)
        if allowed is not None:
            running &= allowed[rows] > steps
        if not bool(running.any()):
            break
        if not bool(running.all()):
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, position, tokens = rows[keep], mask[keep], position[keep], tokens[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = position + 1
        outputs = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                        return_dict=True, **{cache_key: cache})
    return _output(torch.cat([input_ids, generated[:, :steps]], dim=1), as_dict, processed, raw_logits)


def _limits(stopping_criteria: Any, input_ids: torch.Tensor) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
    """-> (new tokens the length limit allows, (E,) EOS ids or None, (B,) new tokens each row may write or None)."""
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    batch, prompt_length = input_ids.shape
    device = input_ids.device
    max_length = min(c.max_length for c in stopping_criteria if type(c) is MaxLengthCriteria)
    eos = [c.eos_token_id.to(device) for c in stopping_criteria if type(c) is EosTokenCriteria]
    budgets = [c for c in stopping_criteria if type(c) is RowBudgets]
    for c in budgets:
        c.check_batch(batch)
    # each budget counts new tokens from its own prompt_length (normally this call's prompt width)
    allowed = torch.stack([c.budgets.to(device) - (prompt_length - c.prompt_length) for c in budgets]).min(0).values \
        if budgets else None
    return max_length - prompt_length, torch.cat([e.reshape(-1) for e in eos]) if eos else None, allowed


def _draw(scores: torch.Tensor, rows: torch.Tensor, batch: int, pad: int) -> torch.Tensor:
    """scores: (R, V) of the running rows -> (R,) sampled tokens, drawn as one sample per batch row as ``generate``
    draws them (a finished row gets a one-point distribution on pad, its draw discarded), so the random stream stays
    ``generate``'s."""
    probs = torch.softmax(scores, dim=-1)
    if rows.numel() == batch:
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    full = probs.new_zeros(batch, probs.shape[-1])
    full[:, pad] = 1.0
    full[rows] = probs
    return torch.multinomial(full, num_samples=1).squeeze(1)[rows]


def _batch_rows(values: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """values: (R, V) of the running rows -> (B, V), zeros in the rows that ended."""
    if rows.numel() == batch:
        return values
    full = values.new_zeros(batch, values.shape[-1])
    full[rows] = values
    return full


def _output(sequences: torch.Tensor, as_dict: bool, scores: list | None, raw_logits: list | None) -> Any:
    if not as_dict:
        return sequences
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return GenerateDecoderOnlyOutput(sequences=sequences, scores=None if scores is None else tuple(scores),
                                     logits=None if raw_logits is None else tuple(raw_logits))


@contextlib.contextmanager
def drop_finished_rows(model: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block, ``model.generate(...)`` decodes with :func:`sample_dropping_finished` when the call samples
    or searches greedily (as its final generation config says) and names no decoding loop, assistant or streamer of
    its own; every other call goes to ``generate`` unchanged. ``enabled=False`` changes nothing."""
    if not enabled:
        yield
        return
    original = model.generate

    def generate(*args: Any, **kwargs: Any):
        if _eligible(model, kwargs):
            kwargs["custom_generate"] = sample_dropping_finished
        return original(*args, **kwargs)

    with patched(model, "generate", generate):
        yield


_GENERATE_PARAMETERS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus",
                        "negative_prompt_ids", "negative_prompt_attention_mask", "trust_remote_code", "tokenizer")


def _eligible(model: Any, kwargs: dict[str, Any]) -> bool:
    from transformers.generation.configuration_utils import GenerationMode

    if not ENABLED or any(kwargs.get(k) is not None for k in ("custom_generate", "assistant_model", "streamer")):
        return False
    prepare = getattr(model, "_prepare_generation_config", None)
    if not callable(prepare) or not callable(getattr(model, "_prefill", None)):
        return False
    config_kwargs = {k: v for k, v in kwargs.items() if k not in _GENERATE_PARAMETERS and k != "generation_config"}
    try:
        # the config generate will decode with: the call's, the model's defaults, then the call's keyword arguments
        config, _ = prepare(kwargs.get("generation_config"), **config_kwargs)
        mode = config.get_generation_mode()
    except Exception:  # noqa: BLE001 - generate itself will raise on a bad config, with its own message
        return False
    return mode in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH)
