"""Dynamic sampling for TRL's GRPO and RLOO (DAPO, Yu et al. 2025, arXiv:2503.14476 §3.2): groups whose completions
all got the same reward teach nothing, so they are dropped and the batch is refilled with fresh prompts.

``TrainerConfig(dynamic_sampling=True, max_sampling_rounds=R)``. For each generation batch TRL hands the trainer:

1. generate and score it (TRL's own ``_generate`` and ``_calculate_rewards``: same sampling, same guarded rewards);
2. keep the groups whose rewards differ (``algorithms/group_filter.informative_groups``);
3. while a process still lacks groups and fewer than R rounds ran, draw more prompts from the training set, generate
   and score them, keep the informative groups;
4. hand TRL's ``_generate_and_score_completions`` the kept groups (the first ones drawn, exactly the batch size)
   with their generations and rewards *replayed*: advantages, old/reference log-probs, the loss normaliser
   (``num_items_in_batch``) and every metric are then TRL's own, computed on the kept groups only. The update is
   exactly the update of a batch made of those groups (tested against one built by hand).

When R rounds did not find enough, the batch is completed with the zero-variance groups drawn first (zero advantage:
TRL's behaviour without the filter), and ``sampling/filled_groups`` counts them. Per step (train only):
``sampling/zero_variance_share`` (of all groups drawn, before the filter: what the health check reads),
``sampling/rounds``, ``sampling/prompts_drawn``, ``sampling/filled_groups``, ``sampling/reward_mean_drawn`` (the mean
reward of every completion drawn; TRL's ``reward`` is over the kept groups, so it reads higher than the policy's
true success rate).

Extra prompts are drawn uniformly (with the curriculum: by its weights) from a generator keyed by (seed, global
step, round, process): no state to checkpoint, so a resumed run draws what the uninterrupted one drew. Groups never
straddle processes (``TrainerConfig`` keeps each process's batch a multiple of ``num_generations``).

Departures from DAPO: refill rounds draw only as many prompts as the observed keep rate says are missing (at most
one batch), not a whole batch, because every rollout costs on a CPU; RLOO's KL-in-reward (``kl_coef`` > 0) does not
count as spread (the filter reads the task rewards). Not covered: multi-turn tool rollouts (refused at build),
iterable datasets (no random access), evaluation (never filtered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ...algorithms.group_filter import informative_groups, weighted_reward
from ...common.errors import ConfigError


@dataclass(frozen=True)
class _Group:
    round: int  # which generation round drew it
    start: int  # its first row in that round's local rows


class DynamicSamplingMixin:
    """Mixed in between our checkpointing/speed mixins and MultiTurnMixin (``trainers.trainer_class``)."""

    _max_sampling_rounds: int = 0  # 0: off
    _replay: tuple[Any, torch.Tensor] | None = None

    def enable_dynamic_sampling(self, max_rounds: int) -> None:
        """Filter zero-variance groups with at most ``max_rounds`` generation rounds per batch (0: off)."""
        if max_rounds:
            check_random_access("dynamic_sampling", self.train_dataset)
        self._max_sampling_rounds = int(max_rounds)

    # ------------------------------------------------------------------------------------------- TRL hooks
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]):
        if not self._max_sampling_rounds or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        rows, generation, rewards = self._sample_informative(inputs)
        self._replay = (generation, rewards)
        try:
            return super()._generate_and_score_completions(rows)
        finally:
            self._replay = None

    def _generate(self, prompts: list):
        if self._replay is not None:
            return self._replay[0]
        return super()._generate(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._replay is not None:
            return self._replay[1]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    # ------------------------------------------------------------------------------------------- the rounds
    def _sample_informative(self, inputs: list[dict[str, Any]]):
        """Generate and score rounds until every process has its batch of informative groups (or the round cap) ->
        (rows, replayed generation tuple, gathered rewards) for the kept groups."""
        acc, size = self.accelerator, self.num_generations
        target = len(inputs) // size
        weights = self.reward_weights.to(acc.device)
        per_function = getattr(self, "multi_objective_aggregation", "sum_then_normalize") == "normalize_then_sum"
        rounds: list[tuple[list[dict[str, Any]], Any, torch.Tensor]] = []
        kept: list[_Group] = []
        spare: list[_Group] = []
        drawn = zero = 0
        reward_sum, reward_count = 0.0, 0
        round_rows = inputs
        while True:
            prompts = [x["prompt"] for x in round_rows]
            generation = self._generate(prompts)
            completions, completion_ids = _completions_of(generation)
            rewards = self._calculate_rewards(round_rows, prompts, completions, completion_ids)  # all processes
            n = len(round_rows)
            local = rewards[acc.process_index * n:(acc.process_index + 1) * n]
            rounds.append((round_rows, generation, local))
            informative = informative_groups(rewards, weights, size, per_function)
            drawn += informative.numel()
            zero += int((~informative).sum())
            summed = weighted_reward(rewards, weights)
            summed = summed[~torch.isnan(summed)]
            reward_sum, reward_count = reward_sum + float(summed.sum()), reward_count + summed.numel()
            mine = informative[acc.process_index * (n // size):(acc.process_index + 1) * (n // size)]
            for g, keep in enumerate(mine.tolist()):
                (kept if keep else spare).append(_Group(len(rounds) - 1, g * size))
            missing = int(acc.gather(torch.tensor([max(0, target - len(kept))], device=acc.device)).max())
            if missing == 0 or len(rounds) >= self._max_sampling_rounds:
                break
            keep_rate = (drawn - zero) / drawn
            more = min(target, math.ceil(missing / max(keep_rate, 1.0 / target)))
            round_rows = self._extra_rows(more, len(rounds))
        chosen = kept[:target]
        filled = spare[: target - len(chosen)]
        metrics = self._metrics["train"]
        metrics["sampling/zero_variance_share"].append(zero / drawn)
        metrics["sampling/rounds"].append(float(len(rounds)))
        metrics["sampling/prompts_drawn"].append(float(drawn))
        metrics["sampling/filled_groups"].append(float(acc.gather(torch.tensor([len(filled)], device=acc.device)).sum()))
        metrics["sampling/reward_mean_drawn"].append(reward_sum / max(reward_count, 1))
        picks = [(g.round, range(g.start, g.start + size)) for g in chosen + filled]
        rows = [rounds[r][0][i] for r, span in picks for i in span]
        generation = _take_rows([r[1] for r in rounds], picks)
        local = torch.cat([rounds[r][2][span.start:span.stop] for r, span in picks])
        return rows, generation, acc.gather(local)

    def _extra_rows(self, groups: int, round_index: int) -> list[dict[str, Any]]:
        """``groups`` prompts drawn from the training set (keyed by seed, step, round and process), each repeated
        ``num_generations`` times, as TRL's sampler repeats them."""
        key = [int(self.args.seed), int(self.state.global_step), round_index, int(self.accelerator.process_index)]
        rng = np.random.default_rng(key)
        weights = self.curriculum_weights()
        size = len(self.train_dataset)
        replace = groups > (size if weights is None else int(np.count_nonzero(weights)))
        return self._prompt_rows(rng.choice(size, size=groups, replace=replace, p=weights))

    def curriculum_weights(self) -> np.ndarray | None:
        """Sampling probabilities over the training set for refill draws; None: uniform (CurriculumMixin's hook)."""
        return None

    def _prompt_rows(self, indices: Any) -> list[dict[str, Any]]:
        """Training rows ``indices``, each repeated ``num_generations`` times as TRL's sampler repeats them."""
        return [dict(self.train_dataset[int(i)]) for i in indices for _ in range(self.num_generations)]


def check_random_access(feature: str, train_dataset: Any) -> None:
    """ConfigError when ``feature`` cannot draw prompts at random from ``train_dataset``. (Groups never straddle
    processes: ``TrainerConfig`` requires ``per_device_train_batch_size`` to be a multiple of ``num_generations``.)"""
    if not (hasattr(train_dataset, "__len__") and hasattr(train_dataset, "__getitem__")):
        raise ConfigError(f"{feature} draws prompts at random, which needs a dataset with random access; got a "
                          f"{type(train_dataset).__name__} (use a datasets.Dataset or a list of rows)")


def _completions_of(generation: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(completions, completion_ids) of a TRL ``_generate`` tuple: GRPO's 8-tuple or RLOO's 3-tuple."""
    if len(generation) == 8:
        return generation[3], generation[1]
    if len(generation) == 3:
        return generation[2], generation[1]
    raise RuntimeError(f"unexpected _generate result of length {len(generation)}")


def _take_rows(parts: Sequence[Sequence[Any]], picks: Sequence[tuple[int, range]]) -> tuple[Any, ...]:
    """The rows ``picks`` (round, row range) of several ``_generate`` tuples, as one tuple of the same layout: per-row
    lists are concatenated, dicts of per-row lists likewise, None stays None, anything else is the first round's."""
    first = parts[0]
    out = []
    for k, value in enumerate(first):
        if isinstance(value, list) and len(value) == _rows_in(first):
            out.append([parts[r][k][i] for r, span in picks for i in span])
        elif isinstance(value, dict):
            out.append({key: ([parts[r][k][key][i] for r, span in picks for i in span]
                              if isinstance(v, list) and len(v) == _rows_in(first) else v)
                        for key, v in value.items()})
        else:
            out.append(value)
    return tuple(out)


def _rows_in(generation: Sequence[Any]) -> int:
    return len(generation[1])  # completion_ids: one per row in both layouts
