"""A ``generate_fn`` for multi-turn rollouts (``core.agents.run_rollouts``) from a transformers causal LM.

:func:`hf_generate_fn` returns a function that takes token sequences of different lengths and a per-sequence token
budget, and returns each sequence's new token ids exactly as sampled plus their log-probs. One ``model.generate``
call per turn for the whole batch: left padding with an attention mask, KV cache, ``max_new_tokens`` set to the
largest budget; each sequence is then cut at its first end-of-turn token (inclusive; ``agents.end_of_turn_ids``)
and at its own budget, so nothing after a sequence's end is returned. A sequence leaves the decode batch once it
writes an end-of-turn token or spends its own budget (``decode_loop.drop_finished_rows`` and ``RowBudgets``: the same
ids and logits as ``generate``'s loop within each budget, from fewer rows per step).

Log-probs are those of the sampled tokens under ``log_softmax(raw_logits / temperature)`` (``output_logits``: the
logits before any processor), computed in float32: the distribution the trainers' losses score (they divide the
logits by the same temperature), not the top-k/top-p-truncated one actually sampled from. With ``do_sample=False``
the temperature is 1. Cost: generate keeps the raw logits of every step until it returns (steps x batch x vocab
floats: about 200 MB for SmolLM2 with 8 sequences of 128 new tokens).

Seeding: with ``seed``, call k draws under ``torch.manual_seed(seed + k)`` inside a forked RNG state, so a run is
reproducible and the global RNG is left untouched; without it the global RNG is used. Not covered: vLLM (see
``eval/vllm_generation.py``), beam search, stop strings.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch
from transformers.generation.stopping_criteria import StoppingCriteriaList

from ..agents import end_of_turn_ids
from .cpu_sampling import fast_cpu_sampling
from .decode_loop import RowBudgets, drop_finished_rows

GenerateFn = Callable[[list[list[int]], list[int]], list[tuple[list[int], list[float]]]]


def _left_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _cut(new_ids: list[int], budget: int, stop_ids: frozenset[int]) -> int:
    """How many of ``new_ids`` belong to the sequence: up to its first end-of-turn token (inclusive) and budget."""
    for i, token in enumerate(new_ids[:budget]):
        if token in stop_ids:
            return i + 1
    return min(budget, len(new_ids))


def hf_generate_fn(model: Any, tokenizer: Any, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                   do_sample: bool = True, seed: int | None = None) -> GenerateFn:
    """A ``generate_fn(sequences, max_new_tokens) -> [(new_ids, logprobs), ...]`` for ``model``.

    Args:
        model: a transformers causal LM (``generate`` with ``output_logits``).
        tokenizer: its tokenizer (pad and end-of-turn ids).
        temperature, top_p, top_k: sampling settings (``top_k=0``: no top-k); ignored when ``do_sample`` is False.
        do_sample: sample (True) or greedy decoding (False).
        seed: makes sampling reproducible (see the module docstring); None uses the global RNG.
    """
    if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r}; expected a number > 0 when sampling")
    stop_ids = end_of_turn_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    scale = float(temperature) if do_sample else 1.0
    sampling = dict(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k)) \
        if do_sample else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    calls = itertools.count()

    def generate(sequences: list[list[int]], max_new_tokens: list[int]) -> list[tuple[list[int], list[float]]]:
        if len(sequences) != len(max_new_tokens) or not sequences:
            raise ValueError(f"{len(sequences)} sequences and {len(max_new_tokens)} budgets; expected as many, >= 1")
        device = next(model.parameters()).device
        input_ids, attention_mask = _left_pad([list(s) for s in sequences], pad_id, device)
        was_training = model.training
        model.eval()
        devices = [device.index or 0] if device.type == "cuda" else []
        try:
            with (torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None),
                  fast_cpu_sampling(), drop_finished_rows(model)):
                if seed is not None:
                    torch.manual_seed(seed + next(calls))
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max(max_new_tokens),
                    eos_token_id=sorted(stop_ids), pad_token_id=pad_id, output_logits=True,
                    return_dict_in_generate=True, use_cache=True, **sampling,
                    stopping_criteria=StoppingCriteriaList([RowBudgets(input_ids.shape[1], max_new_tokens)]))
        finally:
            model.train(was_training)
        new = out.sequences[:, input_ids.shape[1]:]
        logits = torch.stack(out.logits, dim=1)[:, : new.shape[1]].float() / scale  # (batch, steps, vocab)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, budget in enumerate(max_new_tokens):
            ids = new[row].tolist()
            n = _cut(ids, budget, stop_ids)
            results.append((ids[:n], logprobs[row, :n].tolist()))
        return results

    return generate
