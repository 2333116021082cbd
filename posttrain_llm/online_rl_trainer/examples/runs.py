"""The training CLIs' side of run safety: the output folder is claimed before any work, and a signal ends the
command with one line.

- :func:`claimed_output_dir`: the lock of ``--output-dir`` for the whole command (main process only), taken before
  the warm-up or the model load, and the fresh-run check made then too, so a run that would be refused is refused
  in the first second, not after minutes of warm-up (``core/files/run_folder.py`` has the rules);
- the demo's default folder: re-running a command that did not name ``--output-dir`` replaces the previous run
  there **if that run finished** (what ``make demo`` twice should do); a run that was interrupted with
  checkpoints is never replaced without ``--overwrite``, and a folder the user named never is;
- :func:`interrupted_exit`: ``TrainingInterrupted`` becomes one line on stderr with the exact command to resume,
  and the exit code 128 + signal (130 for Ctrl-C, 143 for SIGTERM); a Ctrl-C outside training one line too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from typing import Iterator

from posttrain_llm.online_rl_trainer.core.files import run_lock
from posttrain_llm.online_rl_trainer.core.files.output_folders import ensure_writable_folder
from posttrain_llm.online_rl_trainer.core.files.run_folder import check_fresh_run, previous_run_finished
from posttrain_llm.online_rl_trainer.core.training.interrupts import TrainingInterrupted

logger = logging.getLogger("examples")


def is_main_process() -> bool:
    """Rank 0 under ``accelerate launch`` / torchrun, or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def with_default_dir_policy(config, *, default_dir: bool, resume: bool):
    """``config`` with ``overwrite_output_dir=True`` when the folder is the command's default one and holds a
    finished run (re-running the demo replaces it); otherwise unchanged."""
    if default_dir and not resume and not config.overwrite_output_dir and previous_run_finished(config.output_dir):
        if is_main_process():
            logger.info("replacing the finished run in the default output folder %s (name one with --output-dir to "
                        "keep runs side by side)", config.output_dir)
        return config.replace(overwrite_output_dir=True)
    return config


@contextlib.contextmanager
def claimed_output_dir(config, *, resume: bool) -> Iterator[None]:
    """Hold the output folder's lock for the block (main process) after checking a fresh run may use it."""
    ensure_writable_folder(config.output_dir, "--output-dir")
    with run_lock.holding(config.output_dir, enabled=is_main_process()):
        if not resume:
            check_fresh_run(config.output_dir, config.overwrite_output_dir)
        yield


def interrupted_exit(exc: BaseException, module: str, argv: list[str] | None, can_resume: bool = True) -> SystemExit:
    """Print the one line for an interrupt (``TrainingInterrupted`` or a bare Ctrl-C) and return the SystemExit
    (``can_resume``: the command has a ``--resume`` flag)."""
    if not isinstance(exc, TrainingInterrupted):
        print("interrupted before training started or after it ended: nothing to save", file=sys.stderr)
        return SystemExit(130)
    args = list(sys.argv[1:] if argv is None else argv)
    line = exc.message.split("; rerun", 1)[0]
    if exc.checkpoint is not None and can_resume:
        command = shlex.join(["python", "-m", module, *args, *([] if "--resume" in args else ["--resume"])])
        line += f"; to continue: {command}"
    else:
        line += "; rerun the same command to start over"
    print(line, file=sys.stderr)
    return SystemExit(exc.exit_code)
