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


def assert_exact_resume(make, root, keys, steps=(1, 2, 3, 4)):
    """Run :func:`resume_runs` and check that every key of ``keys`` logged at each of ``steps`` is the same, to the
    last bit, with and without the interruption -> the straight run's logged steps."""
    straight, interrupted, resumed = resume_runs(make, root)
    a, b = logged_steps(straight), logged_steps(interrupted, resumed)
    assert sorted(a) == sorted(b) == list(steps)
    for step in a:
        for key in keys:
            assert a[step][key] == b[step][key], (step, key)
    return a


def with_callbacks(trainer, callbacks):
    """``trainer`` (an OnlineRLTrainer) with ``callbacks`` added to its backend (the ``make`` of the resume tests)."""
    for callback in callbacks:
        trainer.backend.add_callback(callback)
    return trainer
