"""Callbacks and the interrupted-and-resumed run shared by the backend resume tests."""

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


def resume_runs(make, root, stop_at=2):
    """(straight, interrupted, resumed): ``make(output_dir, callbacks)`` builds a trainer; the straight run trains to
    the end in ``root/a``, the interrupted one stops after step ``stop_at`` in ``root/b``, and the resumed one
    continues there from the latest checkpoint."""
    straight = make(root / "a", [])
    straight.train()
    interrupted = make(root / "b", [StopAt(stop_at)])
    interrupted.train()
    assert interrupted.backend.state.global_step == stop_at
    resumed = make(root / "b", [])
    resumed.train(resume_from_checkpoint=True)
    return straight, interrupted, resumed


def logged_steps(*trainers):
    """{step: log} of the training steps (logs with a reward) of one run, or of an interrupted run and its resume."""
    return {h["step"]: h for t in trainers for h in t.metrics_history if "reward" in h}
