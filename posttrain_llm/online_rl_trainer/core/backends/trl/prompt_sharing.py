"""Shared-prompt log-prob passes for TRL's GRPO and RLOO (``TrainerConfig.share_prompt_prefix``, on by default).

Every log-prob pass TRL makes -- the loss's forward and backward, old and reference log-probs -- goes through
``_get_per_token_logps_and_entropies`` with rows of prompt + completion. This mixin, the last before TRL's class,
computes it with each distinct prompt of a micro-batch once (``backends/shared_prompt.py``): the same log-probs,
entropies and gradients up to float rounding (tested against TRL's pass, values and gradients), from fewer tokens.
Measured on the README's SmolLM2 task (bf16 autocast, 2 threads, a group of 4 completions of 30 tokens after a
100-token prompt): forward + backward 1.85 s -> 1.24 s per micro-batch.

For a micro-batch to hold whole groups, TRL's shuffle of the generation batch into micro-batches is replaced by one
that moves groups (the G completions of a prompt, consecutive in TRL's batch) as blocks: the same random permutation
TRL draws (same calls on the global generator, so the random stream is unchanged), applied to groups in the order
they first appear in it. Which rows share a micro-batch does not change the update for TRL's loss types that
normalise by sequences or by the whole batch's tokens (grpo, dr_grpo, dapo, cispo, sapo); for ``bnpo``
(per-micro-batch token means) it is another random grouping, as TRL's own shuffle is.

It turns itself off, with one log line saying why, where it cannot be the same computation: several processes (DDP
would see two forward calls per backward), gradient checkpointing (transformers drops the cache under it), a model
whose ``forward`` takes no cache, and for any call with images or an MoE auxiliary loss. Before its first use it
checks itself: TRL's pass and the shared pass on the same rows, in fp32 without grad; a log-prob differing by more
than :data:`SELF_CHECK_TOLERANCE` turns it off for the run with a warning, and a cache that holds no gradient does
the same at the first training pass; a passed check is a log line with its largest difference.
``prompt_sharing/rows_per_prompt`` is logged (rows over distinct prompts, averaged over the step's passes; 1.0 =
nothing shared).

Each pass also leaves out the completion columns after its rows' last real token (:func:`kept_columns`): TRL pads
every completion to the longest of the generation batch, so with one group per micro-batch a single 64-token
completion made all four micro-batches compute 64 columns. The log-probs and entropies of those columns come back as
zeros; every TRL loss and metric masks them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from ...common.patching import patched
from ..shared_prompt import (
    PromptSharingUnsupported,
    cache_argument_name,
    group_blocks,
    inner_model,
    new_cache,
    prompt_groups,
    shared_prompt_cache,
    shared_prompt_forward,
)
from .deferred_prefix import DeferredPrefix, prompts_of_batches

logger = logging.getLogger(__name__)

__all__ = ["PromptSharingMixin", "SELF_CHECK_TOLERANCE", "group_shuffle", "kept_columns"]

#: Largest |log-prob difference| (nats, fp32) between TRL's pass and the shared pass that the self-check accepts.
SELF_CHECK_TOLERANCE = 1e-3


def group_shuffle(seq_dict: dict[str, Any], group_size: int) -> dict[str, Any]:
    """TRL's ``shuffle_sequence_dict`` with groups of ``group_size`` consecutive rows kept together: one
    ``torch.randperm`` over the rows, as TRL draws, and the groups in the order their rows first appear in it."""
    from trl.trainer.utils import shuffle_sequence_dict

    batch_size = len(next(v for v in seq_dict.values() if v is not None))
    if group_size <= 1 or batch_size % group_size:
        return shuffle_sequence_dict(seq_dict)
    rows = group_blocks(torch.randperm(batch_size), group_size)

    def permute(v: Any) -> Any:
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return v[rows]
        return [v[i] for i in rows.tolist()]

    return {key: permute(val) for key, val in seq_dict.items()}


@contextlib.contextmanager
def _trl_shuffles_groups(group_size: int) -> Iterator[None]:
    """Within the block, TRL's GRPO and RLOO trainers shuffle their generation batch with :func:`group_shuffle`."""
    from trl.trainer import grpo_trainer, rloo_trainer

    def shuffle(seq_dict: dict) -> dict:
        return group_shuffle(seq_dict, group_size)

    with contextlib.ExitStack() as stack:
        for module in (grpo_trainer, rloo_trainer):
            if hasattr(module, "shuffle_sequence_dict"):
                stack.enter_context(patched(module, "shuffle_sequence_dict", shuffle))
        yield


_inner_model = inner_model


def kept_columns(attention_mask: torch.Tensor, logits_to_keep: int) -> int:
    """attention_mask: (B, L) whose last ``logits_to_keep`` columns are right-padded completions -> how many of those
    columns reach the rows' last real token (at least 1). Columns after it change no real token's log-prob (causal
    attention) and every loss masks them, so a pass can leave them out."""
    completion = attention_mask[:, attention_mask.shape[1] - logits_to_keep:]
    real = torch.nonzero(completion.any(dim=0))
    return max(int(real[-1]) + 1, 1) if real.numel() else 1


def _pad_columns(values: torch.Tensor | None, width: int) -> torch.Tensor | None:
    """(B, C) -> (B, width), zeros on the right: the columns :func:`kept_columns` left out (masked by every loss)."""
    if values is None or values.shape[1] == width:
        return values
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


def _checkpointing(model: Any) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


class PromptSharingMixin:
    """Mixed in last, right before TRL's trainer (``trainers.trainer_class``)."""

    _prompt_sharing: bool = False
    _prompt_sharing_checked: bool = False
    _cache_kw: str | None = None  # the model's cache keyword, resolved once in enable_prompt_sharing
    _deferred: DeferredPrefix | None = None  # the generation batch's common prefix, once per optimizer step
    _prefix_source: Any = None  # the buffered micro-batches the prefix was taken from

    def enable_prompt_sharing(self, enabled: bool) -> None:
        """Share prompts in the log-prob passes when asked and when this run allows it (else one log line why not)."""
        self._prompt_sharing = False
        if not enabled:
            return
        reason = None
        inner = _inner_model(self.model)
        if self.accelerator.num_processes > 1:
            reason = f"{self.accelerator.num_processes} processes"
        elif _checkpointing(inner) or getattr(self.args, "gradient_checkpointing", False):
            reason = "gradient checkpointing is on"
        elif cache_argument_name(inner) is None:
            reason = f"{type(inner).__name__}.forward takes no cache"
        if reason:
            logger.info("share_prompt_prefix: off for this run (%s); each row's prompt is computed with it", reason)
            return
        self._cache_kw = cache_argument_name(inner)
        self._deferred = DeferredPrefix()
        self._prompt_sharing = True

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        """TRL's generation with each distinct prompt prefilled once: ``model.generate`` gets a cache of the prompts
        (``shared_prompt_cache``), so its own prefill runs only each row's last prompt token. Not with vLLM, a
        ``cache_implementation`` (static caches), or inputs beyond ids and mask (images)."""
        model = self.model
        if (not self._prompt_sharing or getattr(self, "use_vllm", False)
                or getattr(self.generation_config, "cache_implementation", None) is not None):
            return super()._generate_single_turn(*args, **kwargs)
        inner = _inner_model(model)
        cache_kw = self._cache_kw
        original = model.generate

        def generate(*gen_args: Any, **gen_kwargs: Any):
            ids, mask = gen_kwargs.get("input_ids"), gen_kwargs.get("attention_mask")
            plain = set(gen_kwargs) <= {"input_ids", "attention_mask", "generation_config"} and not gen_args
            if plain and ids is not None and mask is not None:
                cache = shared_prompt_cache(model, ids, mask, cache_kw, inner.config)
                if cache is not None:
                    gen_kwargs[cache_kw] = cache
            return original(*gen_args, **gen_kwargs)

        with patched(model, "generate", generate):
            return super()._generate_single_turn(*args, **kwargs)

    def _prepare_inputs(self, generation_batch: Any):
        if not self._prompt_sharing:
            return super()._prepare_inputs(generation_batch)
        with _trl_shuffles_groups(int(self.num_generations)):
            inputs = super()._prepare_inputs(generation_batch)
        buffered = getattr(self, "_buffered_inputs", None)
        if self.model.training and buffered is not None and buffered is not self._prefix_source:
            self._prefix_source = buffered  # a new generation batch: its prompts' common prefix
            self._deferred.set_prompts(prompts_of_batches(buffered))
        return inputs

    def training_step(self, *args: Any, **kwargs: Any):
        output = super().training_step(*args, **kwargs)
        if self._deferred is not None and self.accelerator.sync_gradients:
            # the optimizer steps next: the common prefix's gradient goes into the weights now (deferred_prefix.py)
            self._deferred.flush()
        return output

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False, **extra: Any):
        trl_pass = super()._get_per_token_logps_and_entropies
        if not self._prompt_sharing or compute_aux_loss or any(v is not None for v in extra.values()):
            return trl_pass(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                            compute_aux_loss, **extra)
        if not self._prompt_sharing_checked:
            self._prompt_sharing_checked = True
            self._self_check(model, input_ids, attention_mask, logits_to_keep)
            if not self._prompt_sharing:
                return trl_pass(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                                compute_aux_loss, **extra)
        batch_size = batch_size or input_ids.shape[0]
        logps, entropies = [], []
        for start in range(0, input_ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            # TRL pads every completion to the generation batch's longest; these rows need only their own longest
            keep = kept_columns(attention_mask[rows], logits_to_keep)
            width = input_ids.shape[1] - (logits_to_keep - keep)
            ids, mask = input_ids[rows, :width], attention_mask[rows, :width]
            try:
                out = self._shared_pass(model, ids, mask, keep, compute_entropy)
            except PromptSharingUnsupported as err:
                logger.warning("share_prompt_prefix: off for the rest of the run (%s)", err)
                self._prompt_sharing = False
                out = None
            if out is None:  # nothing shared in these rows (or just turned off): TRL's pass
                out = trl_pass(model, ids, mask, keep, None, compute_entropy)[:2]
            logps.append(_pad_columns(out[0], logits_to_keep))
            entropies.append(_pad_columns(out[1], logits_to_keep))
        entropy = torch.cat(entropies) if compute_entropy else None
        return torch.cat(logps), entropy, None

    def _shared_pass(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                     compute_entropy: bool, record: bool = True) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """TRL's fused-head log-probs (and entropies) of the last ``logits_to_keep`` columns, each prompt once."""
        inner = _inner_model(model)
        cache_kw = self._cache_kw
        prompt_length = input_ids.shape[1] - logits_to_keep
        groups = prompt_groups(input_ids, attention_mask, prompt_length)
        if record:
            self._record_sharing(input_ids.shape[0], groups.num_prompts)

        # positions: None (TRL's numbering) unless the common prefix of different prompts is shared too
        def prefix(ids, mask, positions, cache):
            return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         **{cache_kw: cache})

        def tail(ids, mask, positions, cache):
            labels = ids.masked_fill(mask[:, -ids.shape[1]:] == 0, -100)
            labels[:, 0] = -100  # the prompt's last token: its hidden state scores completion token 0
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, fused_lm_head=True,
                        **{cache_kw: cache})
            entropy = out.entropy[:, -logits_to_keep:] if compute_entropy else None
            return out.log_probs[:, -logits_to_keep:], entropy

        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
        common = True  # no-grad passes: the common prefix of this call's prompts, computed here
        if needs_grad and self._deferred is not None:
            common = self._deferred.common_prefix(model, cache_kw, inner.config) or True
        with self.accelerator.autocast():  # as TRL's pass (a no-op on CPU without mixed precision)
            return shared_prompt_forward(prefix, tail, input_ids, attention_mask, prompt_length,
                                         lambda: new_cache(inner.config), needs_grad=needs_grad, groups=groups,
                                         common_prefix=common)

    def _record_sharing(self, rows: int, prompts: int) -> None:
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["prompt_sharing/rows_per_prompt"].append(rows / max(prompts, 1))

    @torch.no_grad()
    def _self_check(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> None:
        """TRL's pass against the shared pass on the first rows that share a prompt, fp32; off if they differ."""
        trl_pass = super()._get_per_token_logps_and_entropies
        # Two rows of each of up to four prompts: both the rows' sharing and the prompts' common prefix are checked.
        groups = prompt_groups(input_ids, attention_mask, input_ids.shape[1] - logits_to_keep)
        rows = torch.cat([torch.nonzero(groups.inverse == u).flatten()[:2] for u in range(min(groups.num_prompts, 4))])
        ids, mask = input_ids[rows], attention_mask[rows]
        with torch.autocast(ids.device.type, enabled=False):
            shared = self._shared_pass(model, ids, mask, logits_to_keep, False, record=False)
            if shared is None:  # no shared prompt in these rows: check again on the next call
                self._prompt_sharing_checked = False
                return
            reference = trl_pass(model, ids, mask, logits_to_keep)[0]
        real = mask[:, -logits_to_keep:].bool()
        diff = float((shared[0] - reference).abs().masked_fill(~real, 0).max()) if bool(real.any()) else 0.0
        if diff <= SELF_CHECK_TOLERANCE:
            # A log line, not a metric: a resumed process checks again, and its logs must match the uninterrupted run's.
            logger.info("share_prompt_prefix: self-check passed (%.3g nats at most against the per-row pass)", diff)
        else:
            reason = f"its log-probs differ from the per-row pass by up to {diff:.2g} nats (> {SELF_CHECK_TOLERANCE})"
            logger.warning("share_prompt_prefix: off for this run: %s", reason)
            self._prompt_sharing = False
