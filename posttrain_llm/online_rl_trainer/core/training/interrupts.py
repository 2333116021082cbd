"""Stopping a training run cleanly on SIGINT or SIGTERM: Ctrl-C, or a cluster preempting the job.

While ``OnlineRLTrainer.train()`` runs, :class:`catch_interrupts` replaces the SIGINT and SIGTERM handlers (main
thread only; the previous ones come back afterwards):

- the **first** signal only sets a flag. The step under way finishes; at its end :class:`StopOnSignal` stops
  training and, when the run writes checkpoints at all (``save_steps <= max_steps``), asks for a checkpoint of
  that step; the trainer then raises :class:`TrainingInterrupted` with one line: the step reached, the checkpoint
  and how to resume. No step is cut in half, and the checkpoint is the same one an uninterrupted run would write at
  that step, so resuming continues exactly;
- a **second** signal abandons the step at once (:class:`StepAbandoned` raised where the code is): for a step too
  long to wait for (a cluster's grace period after SIGTERM is often 30 s). Nothing of that step is saved; the
  newest complete checkpoint is the one to resume from (a checkpoint being written is never left half-complete:
  ``files/checkpoints.py``). A repeat within :data:`REPEAT_WINDOW_S` of the first counts as the same request: under
  ``accelerate launch`` a Ctrl-C reaches each worker twice, from the terminal and forwarded by torchrun's agent.

Under ``accelerate launch`` a signal may reach some processes and not others, or at different steps: the flag is
summed over the processes at every step end, so all of them stop after the same step and write one checkpoint.

Not covered: SIGKILL (cannot be caught: resume from the last periodic checkpoint), signals before or after
``train()`` (the CLIs report those as one line too, with nothing to save), and a second signal on only some of
several processes (the others stop when the launcher tears the job down).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds after the first signal during which another one is taken as the same request, not as "stop at once".
REPEAT_WINDOW_S = 2.0


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal. ``str()`` is the one line to show; the attributes say what was kept.

    A ``KeyboardInterrupt`` so ``except Exception`` in user code does not swallow a Ctrl-C. ``exit_code`` is the
    shell's convention for death by that signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, *, signal_name: str, step: int, max_steps: int, checkpoint: str | None,
                 abandoned: bool, exit_code: int) -> None:
        super().__init__(message)
        self.message, self.signal_name, self.step, self.max_steps = message, signal_name, step, max_steps
        self.checkpoint, self.abandoned, self.exit_code = checkpoint, abandoned, exit_code

    def __str__(self) -> str:
        return self.message


class StepAbandoned(KeyboardInterrupt):
    """Raised by the handler on the second signal, inside whatever the step was doing."""


class catch_interrupts:
    """``with catch_interrupts() as guard:`` -- SIGINT/SIGTERM set ``guard.signum`` (first) or abandon (second)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "catch_interrupts":
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            if time.monotonic() - self._first_at < REPEAT_WINDOW_S:
                return  # the same request delivered twice (terminal + launcher)
            logger.warning("%s again: abandoning the current step", signal.Signals(signum).name)
            raise StepAbandoned(signum)
        self.signum, self._first_at = signum, time.monotonic()
        logger.warning("%s received: finishing the current step, then saving and stopping (send it again, %g s or more "
                       "later, to stop at once, losing the step)", signal.Signals(signum).name, REPEAT_WINDOW_S)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal on another process"


class StopOnSignal(TrainerCallback):
    """At each step end: if a signal came (on any process), stop training, and save a checkpoint of this step when
    the run writes checkpoints (``save_steps <= max_steps``)."""

    def __init__(self, guard: catch_interrupts | None = None, accelerator: Any = None) -> None:
        self.guard, self.accelerator = guard, accelerator
        self.stopped_at: int | None = None
        self.saved = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.guard is None:
            return control
        requested = self.guard.signum is not None
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:  # collective: every process calls it at every step end
            import torch

            flag = torch.tensor([int(requested)], device=acc.device)
            requested = int(acc.reduce(flag, "sum")[0]) > 0
        if requested:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            if checkpoints_enabled(args.save_steps, state.max_steps):
                control.should_save = self.saved = True
        return control


def checkpoints_enabled(save_steps: int, max_steps: int) -> bool:
    """Whether the run writes checkpoints at all: the user asked for them with a ``save_steps`` it reaches."""
    return 0 < save_steps <= max_steps


def interruption(guard: catch_interrupts, stopper: StopOnSignal, *, step: int, max_steps: int,
                 checkpoint: str | None, checkpoints_on: bool, abandoned: bool) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` to raise, with its one-line message. ``checkpoint``: the newest complete
    checkpoint's folder name after training stopped (None if there is none)."""
    where = f"during step {step + 1} of {max_steps}, abandoned" if abandoned else f"at step {step} of {max_steps}"
    resume = "rerun with --resume (train(resume_from_checkpoint=True)) to continue"
    if checkpoint is not None and stopper.saved and not abandoned:
        kept, advice = f"{checkpoint} saved", resume
    elif checkpoint is not None:
        kept, advice = f"newest checkpoint: {checkpoint}", f"{resume} from it"
    else:
        kept = "no checkpoint written yet" if checkpoints_on else "no checkpoint: checkpoints are off, save_steps > max_steps"
        advice = "rerun to start over (set --save-steps N, save_steps, to make a run resumable)"
    signum = guard.signum or signal.SIGINT
    return TrainingInterrupted(
        f"interrupted by {guard.signal_name} {where} ({kept}); {advice}", signal_name=guard.signal_name, step=step,
        max_steps=max_steps, checkpoint=checkpoint, abandoned=abandoned, exit_code=128 + int(signum),
    )
