"""Callbacks shared by the backend tests."""

from __future__ import annotations

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """Stops training after optimizer step ``step`` (an interrupted run, for the resume tests of every backend)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control
