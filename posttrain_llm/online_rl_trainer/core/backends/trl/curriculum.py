"""The pass-rate curriculum (``data/curriculum.py``) inside TRL's GRPO and RLOO.

``TrainerConfig(curriculum=True)``. TRL's dataloader still paces the run (epochs, ``max_steps``), but the prompts of
each generation batch are drawn by the curriculum at generation time: the whole global batch from a generator keyed by
(seed, global step), each process taking its slice, so every process draws the same prompts as a one-process run
would and no state but the record is needed. Every scored group (all processes, gathered; with dynamic sampling, its
refill rounds too) updates the record after the batch. The record is saved in each checkpoint
(``trl_state_<rank>.pt``) and restored on resume, so a resumed run draws exactly what the uninterrupted one drew.

Logged per generation batch: ``curriculum/{seen,learning,failed,retired}_share`` (of the training set) and
``curriculum/drawn_pass_rate`` (the mean pass rate of the groups drawn).

Not covered: evaluation (never curriculum-drawn), iterable datasets (no random access).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...algorithms.group_filter import weighted_reward
from ...data.curriculum import PassRateCurriculum, draw_global_batch, record_groups
from .dynamic_sampling import check_random_access


class CurriculumMixin:
    """Mixed in above DynamicSamplingMixin (``trainers.trainer_class``)."""

    _curriculum: PassRateCurriculum | None = None
    _row_indices: dict[int, int] | None = None
    _scored: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def enable_curriculum(self, curriculum: PassRateCurriculum | None) -> None:
        if curriculum is not None:
            check_random_access("curriculum", self.train_dataset)
            if len(curriculum) != len(self.train_dataset):
                raise ValueError(f"curriculum for {len(curriculum)} prompts, training set of {len(self.train_dataset)}")
        self._curriculum = curriculum

    def curriculum_weights(self) -> np.ndarray | None:
        """Sampling probabilities for dynamic sampling's refill draws (None: no curriculum, uniform)."""
        return None if self._curriculum is None else self._curriculum.weights(int(self.state.global_step))

    # ------------------------------------------------------------------------------------------- TRL hooks
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]):
        if self._curriculum is None or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._row_indices, self._scored = {}, []
        try:
            output = super()._generate_and_score_completions(self._curriculum_rows(len(inputs)))
            self._update_curriculum()
            return output
        finally:
            self._row_indices, self._scored = None, None

    def _prompt_rows(self, indices: Any) -> list[dict[str, Any]]:
        rows = super()._prompt_rows(indices)
        if self._row_indices is not None:
            for j, row in enumerate(rows):
                self._row_indices[id(row)] = int(indices[j // self.num_generations])
        return rows

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._scored is not None and getattr(self, "_replay", None) is None:  # a replay was recorded already
            acc = self.accelerator
            local = torch.tensor([self._row_indices.get(id(row), -1) for row in inputs], device=acc.device)
            summed = weighted_reward(rewards, self.reward_weights)
            self._scored.append((acc.gather(local).cpu(), summed.cpu()))
        return rewards

    # ------------------------------------------------------------------------------------------- the record
    def _curriculum_rows(self, local_rows: int) -> list[dict[str, Any]]:
        acc, size = self.accelerator, self.num_generations
        per_process = local_rows // size
        chosen = draw_global_batch(self._curriculum, self.args.seed, self.state.global_step, per_process * acc.num_processes)
        return self._prompt_rows(chosen[acc.process_index * per_process:(acc.process_index + 1) * per_process])

    def _update_curriculum(self) -> None:
        curriculum, step = self._curriculum, int(self.state.global_step)
        drawn = []
        for indices, rewards in self._scored:
            drawn += record_groups(curriculum, indices.tolist(), rewards.tolist(), self.num_generations, step)
        for key, value in curriculum.metrics(step, drawn).items():
            self._metrics["train"][key].append(value)
