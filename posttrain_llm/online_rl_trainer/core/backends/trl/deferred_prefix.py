"""The prompts' common prefix computed once per optimizer step, its gradient collected over the micro-batches.

A GRPO step's prompts usually begin alike (a system prompt, a few-shot example: ~80 of the ~97 tokens of the README's
SmolLM2 prompts), but each micro-batch holds one group (one prompt) to keep memory low, so sharing within a
micro-batch (``shared_prompt.py``) cannot share it across prompts. Here the common prefix of the whole generation
batch goes through the model once, without autograd, at the first training micro-batch that needs it; every
micro-batch builds its cache from *leaf* copies of those keys and values, so its backward stops at the leaves and adds
into their ``.grad``; after the last micro-batch of the optimizer step (before clipping and the optimizer),
:meth:`DeferredPrefix.flush` runs the prefix again, with autograd, under the autocast state of the first pass, and
back-propagates the accumulated key/value gradients through it into the weights. The weights do not change between
the micro-batches of an optimizer step, so this is the same gradient as computing the prefix in every micro-batch, up
to float rounding (TRL's loss scaling is inside the collected gradients).

Why a second prefix pass instead of keeping the first one's graph until the flush: under bf16 autocast that graph
holds a bf16 copy of every weight (~0.27 GB for SmolLM2-135M) next to each micro-batch's own copies, which measured
+0.25 GiB of peak RSS (3.88 against 3.63 GiB); the second pass is one forward of ~80 tokens per optimizer step.
Departs from per-micro-batch prefixes under dropout (the no-grad pass and the gradient pass draw different masks;
SmolLM2 and most chat models train with dropout 0).

Only for training passes with gradient (the no-grad passes compute the prefix themselves, per call), caches whose
layers are plain ``DynamicLayer``s, one process (prompt sharing is off under DDP). Not covered: a prefix longer than
what each prompt leaves for its own tokens (those rows fall back to per-call sharing).
"""

from __future__ import annotations

from typing import Any

import torch

from ..shared_prompt import CommonPrefix, batch_common_prefix, new_cache

__all__ = ["DeferredPrefix", "prompts_of_batches"]


def prompts_of_batches(batches: list[dict[str, Any]]) -> list[list[int]]:
    """The distinct prompts (real tokens, padding dropped) of TRL's buffered micro-batches."""
    seen: dict[tuple[int, ...], None] = {}
    for batch in batches:
        ids, mask = batch.get("prompt_ids"), batch.get("prompt_mask")
        if not isinstance(ids, torch.Tensor) or not isinstance(mask, torch.Tensor):
            return []
        for row, row_mask in zip(ids.tolist(), mask.tolist()):
            seen[tuple(t for t, m in zip(row, row_mask) if m)] = None
    return [list(p) for p in seen]


class DeferredPrefix:
    """The common prefix of the current generation batch; see the module docstring."""

    def __init__(self) -> None:
        self.tokens: tuple[int, ...] = ()
        self._leaves: list[torch.Tensor] | None = None  # the prefix's keys and values, as leaves collecting gradients
        self._rerun: Any = None  # () -> the prefix's keys and values again, with autograd (for flush)
        self.passes = 0  # prefix passes run, both kinds (tests, metrics)

    def set_prompts(self, prompts: list[list[int]]) -> None:
        """A new generation batch: its prompts' common prefix (at least 2 tokens, else none)."""
        tokens = batch_common_prefix(prompts) if len(prompts) > 1 else ()
        tokens = tokens if len(tokens) >= 2 else ()
        if tokens != self.tokens:
            self.flush()  # the old prefix's gradient goes in now; the weights have not changed since it ran
            self.tokens = tokens

    def common_prefix(self, model: Any, cache_kw: str, config: Any) -> CommonPrefix | None:
        """The :class:`CommonPrefix` for a training pass of ``model``, or None (no prefix; a cache this cannot
        rebuild from tensors)."""
        if not self.tokens:
            return None
        from transformers.cache_utils import DynamicLayer

        if any(type(layer) is not DynamicLayer for layer in getattr(new_cache(config), "layers", [None])):
            return None

        def cache() -> Any:
            if self._leaves is None:
                self._run(model, cache_kw, config)
            leaves = self._leaves
            fresh = new_cache(config)
            for i in range(len(leaves) // 2):
                fresh.update(leaves[2 * i], leaves[2 * i + 1], i)
            return fresh

        return CommonPrefix(self.tokens, cache)

    def _run(self, model: Any, cache_kw: str, config: Any) -> None:
        device = next(model.parameters()).device
        ids = torch.tensor(self.tokens, device=device)[None]
        # the autocast state of this (first) pass, for the second one at flush, which runs outside any autocast region
        autocast_on, autocast_dtype = torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)

        def keys_and_values() -> list[torch.Tensor]:
            cache = new_cache(config)
            model(input_ids=ids, attention_mask=torch.ones_like(ids),
                  position_ids=torch.arange(ids.shape[1], device=device)[None], use_cache=True, logits_to_keep=1,
                  **{cache_kw: cache})
            self.passes += 1
            return [t for layer in cache.layers for t in (layer.keys, layer.values)]

        def rerun() -> list[torch.Tensor]:
            with torch.enable_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_on):
                return keys_and_values()

        with torch.no_grad():
            outputs = keys_and_values()
        self._leaves = [t.requires_grad_(True) for t in outputs]  # no-grad outputs are leaves already
        self._rerun = rerun

    def flush(self) -> None:
        """Back-propagate the gradients the micro-batches left on the prefix's keys and values (if any), through a
        second pass of the prefix with autograd."""
        leaves, rerun, self._leaves, self._rerun = self._leaves, self._rerun, None, None
        if leaves is None or all(leaf.grad is None for leaf in leaves):
            return
        outputs = rerun()
        pairs = [(out, leaf.grad) for out, leaf in zip(outputs, leaves) if leaf.grad is not None and out.requires_grad]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
