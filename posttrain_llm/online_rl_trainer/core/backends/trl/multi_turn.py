"""Multi-turn tool/environment rollouts inside TRL's GRPO and RLOO trainers.

With ``OnlineRLTrainer(tools=..., environment_factory=...)`` the trainer's ``_generate`` runs
``backends/agent_rollouts.collect_rollouts`` instead of one ``generate`` call: the same rollout engine, budgets and
call format as PPO and the evaluator, so a rollout is the same token sequence whichever algorithm trains on it. TRL's
own tool loop (``GRPOTrainer(tools=...)``) is not used: it exists for GRPO only, parses calls with the tokenizer's
response schema (SmolLM2's and the tiny model's tokenizers have none), and has no budget on tool calls or output.

What each trainer gets back:

- **GRPO**: the 8-tuple of TRL's ``_generate`` with ``tool_mask`` = the rollouts' ``env_mask`` (1 on model tokens,
  0 on tool/environment tokens). TRL then keeps environment tokens out of the loss, the KL term, the entropy metric
  and the token count that normalises the loss (its own multi-turn path, ``completion_mask * tool_mask``).
- **RLOO**: the 3-tuple of its ``_generate``. RLOO has no tool mask, and its loss works on *sequence* log-probs
  (``sum(per_token_logps * completion_mask)``), so here every log-prob pass (old, reference, loss) returns 0 at
  environment positions (``_get_per_token_logps_and_entropies`` multiplies by the mask): the sequence log-prob, the
  importance ratio and the KL penalty then cover the model's tokens only, and environment tokens get no gradient.
  The mask travels in the generation batch as ``env_mask`` (split into micro-batches and checkpointed with it).
  RLOO's ``entropy`` and ``kl`` metrics divide by all real completion tokens, environment tokens included (their
  terms are 0): with tools those two metrics read low by the environment-token share.

Both: the reward functions judge the *final* assistant message, with the rollouts' ``reward_kwargs()``
(``agent_transcript``, ``agent_env_reward``, ``agent_num_tool_calls``, ``agent_stop_reason``) as extra columns (a
dataset column of the same name is an error). ``completions/*`` lengths count model tokens, ``clipped_ratio`` counts
rollouts stopped by a length budget, and ``agent/*`` metrics (turns, tool calls, errors, malformed calls, stops) are
logged every generation round. Sampling draws from the global torch RNG, which checkpoints save, so resume stays exact.

Not covered: vLLM generation, TRL's ``rollout_func``, multimodal prompts, per-turn rewards (GRPO/RLOO give one
advantage per sequence; an environment's ``get_turn_reward`` is used by PPO only, and ignored here with a warning).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from ...common.errors import ConfigError
from ..agent_rollouts import LENGTH_STOPS, AgentBatch, agent_metrics, collect_rollouts

logger = logging.getLogger(__name__)


class MultiTurnMixin:
    """Mixed in between our other mixins and TRL's GRPO/RLOO trainer (``trainers.trainer_class``)."""

    _agent_setup: Any = None
    _agent_inputs: list[dict[str, Any]] | None = None
    _active_env_mask: torch.Tensor | None = None
    _pending_env_mask: torch.Tensor | None = None
    _warned_turn_rewards = False

    def enable_multi_turn(self, setup: Any) -> None:
        """Use multi-turn rollouts for ``setup`` (an ``agent_rollouts.AgentSetup``; None: single-turn, TRL's own)."""
        self._agent_setup = setup

    # ------------------------------------------------------------------------------------------- generation
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]):
        if self._agent_setup is None:
            return super()._generate_and_score_completions(inputs)
        self._agent_inputs = inputs  # the rows: environments are reset with them, rewards read columns from them
        try:
            output = super()._generate_and_score_completions(inputs)
            if self.online_rl_trainer_type == "rloo":
                output["env_mask"] = pad_mask(self._pending_env_mask, output["completion_ids"].shape[1])
            return output
        finally:
            self._agent_inputs = self._active_env_mask = self._pending_env_mask = None

    def _generate(self, prompts: list):
        if self._agent_setup is None:
            return super()._generate(prompts)
        rows = self._agent_inputs
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("multi-turn _generate called outside _generate_and_score_completions")
        check_chat_prompts(prompts)
        batch = self._agent_rollouts(prompts, rows)
        merge_reward_columns(rows, batch.reward_kwargs())
        self._log_agent_generation(batch)
        completions: list[Any] = [[{"role": "assistant", "content": t}] for t in batch.final_texts]
        if self.online_rl_trainer_type == "rloo":
            mask = [torch.tensor(m, dtype=torch.long) for m in batch.env_mask]
            self._pending_env_mask = torch.nn.utils.rnn.pad_sequence(mask, batch_first=True).to(self.accelerator.device)
            self._active_env_mask = self._pending_env_mask  # the old/reference log-prob passes that follow
            return batch.prompt_ids, batch.completion_ids, completions
        return batch.prompt_ids, batch.completion_ids, batch.env_mask, completions, None, {}, None, []

    def _agent_rollouts(self, prompts: list, rows: Sequence[Mapping[str, Any]]) -> AgentBatch:
        from trl.models import unwrap_model_for_generation

        args = self.args
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
            batch = collect_rollouts(model, self.processing_class, prompts, rows, self._agent_setup,
                                     temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or 0,
                                     seed=None, cpu_bf16=getattr(self, "_cpu_bf16", False))
        if len(batch.rollouts) != len(prompts):
            raise RuntimeError(f"collect_rollouts returned {len(batch.rollouts)} rollouts for {len(prompts)} prompts")
        if not self._warned_turn_rewards and any(r.turn_rewards is not None for r in batch.rollouts):
            logger.warning("the environment returns per-turn rewards (get_turn_reward); %s gives one advantage per "
                           "rollout and does not use them (PPO does)", self.online_rl_trainer_type.upper())
            self._warned_turn_rewards = True
        return batch

    def _log_agent_generation(self, batch: AgentBatch) -> None:
        """What TRL's ``_generate`` logs, with lengths in model tokens and clipping by length budget, plus agent/*."""
        acc, device = self.accelerator, self.accelerator.device
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        prompt_lengths = acc.gather(torch.tensor([len(p) for p in batch.prompt_ids], device=device))
        model_lengths = acc.gather(torch.tensor([sum(m) for m in batch.env_mask], device=device)).float()
        all_lengths = acc.gather(torch.tensor([len(c) for c in batch.completion_ids], device=device))
        clipped = acc.gather(torch.tensor([r.stop_reason in LENGTH_STOPS for r in batch.rollouts], device=device))
        if mode == "train":
            self.state.num_input_tokens_seen += int(prompt_lengths.sum() + all_lengths.sum())
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]
        metrics["completions/mean_length"].append(model_lengths.mean().item())
        metrics["completions/min_length"].append(model_lengths.min().item())
        metrics["completions/max_length"].append(model_lengths.max().item())
        metrics["completions/clipped_ratio"].append(clipped.float().mean().item())
        terminated = model_lengths[~clipped]
        if terminated.numel() == 0:
            terminated = torch.zeros(1, device=device)
        metrics["completions/mean_terminated_length"].append(terminated.mean().item())
        metrics["completions/min_terminated_length"].append(terminated.min().item())
        metrics["completions/max_terminated_length"].append(terminated.max().item())
        for key, value in agent_metrics(batch, acc).items():
            metrics[key].append(value)

    # ------------------------------------------------------------------------------------------- RLOO masking
    def _compute_loss(self, model: Any, inputs: dict[str, Any]):
        if self._agent_setup is None or "env_mask" not in inputs:
            return super()._compute_loss(model, inputs)
        self._active_env_mask = inputs["env_mask"]
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._active_env_mask = None

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, *args: Any, **kwargs: Any):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        mask = self._active_env_mask
        if mask is None:
            return (logps, entropies, *rest)
        mask = pad_mask(mask, logps.shape[1]).to(logps.dtype)
        if mask.shape != logps.shape:
            raise RuntimeError(f"env_mask {tuple(mask.shape)} does not match the log-probs {tuple(logps.shape)}")
        return (logps * mask, None if entropies is None else entropies * mask, *rest)


def pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(B, C) 0/1 mask right-padded with 0 (or cut) to (B, width): TRL may pad completions to a multiple."""
    if mask.shape[1] >= width:
        return mask[:, :width]
    return torch.nn.functional.pad(mask, (0, width - mask.shape[1]), value=0)


def check_chat_prompts(prompts: Sequence[Any]) -> None:
    """Multi-turn rollouts need chat prompts (a list of role/content messages): the tools and the tool results are
    chat messages."""
    for i, prompt in enumerate(prompts):
        if not (isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) and "role" in m for m in prompt)):
            raise ConfigError(f"prompt {i} is {prompt!r:.80}; with tools or an environment every prompt must be a chat "
                              "(a list of {'role': ..., 'content': ...} messages)")


def merge_reward_columns(rows: Sequence[dict[str, Any]], extra: Mapping[str, Sequence[Any]]) -> None:
    """Put each rollout's reward kwargs into its row (TRL's reward call reads columns from the rows); the dataset's
    columns were checked for clashes when the trainer was built (``agent_rollouts.check_reward_columns``)."""
    for i, row in enumerate(rows):
        for key, values in extra.items():
            row[key] = values[i]
