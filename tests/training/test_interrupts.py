"""SIGINT / SIGTERM during training (issue 16: "preemption-safe"): real signals sent to real child processes on the
tiny model. Before: a 16-46-frame KeyboardInterrupt traceback, no checkpoint of the step reached, no word on how to
resume, and a second run into the same folder ran alongside the first. Now: the step finishes, a checkpoint of it is
written when the run writes checkpoints, the command ends with one line (step, checkpoint, the command to resume)
and the shell's exit code for the signal; a second signal abandons the step at once; a second run into the folder
of a live one stops before doing anything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.files import checkpoints as ckpt
from posttrain_llm.online_rl_trainer.core.files.run_manifest import read_manifest
from posttrain_llm.online_rl_trainer.core.training.interrupts import REPEAT_WINDOW_S, TrainingInterrupted
from posttrain_llm.online_rl_trainer.examples import train_math
from tests.builders import plus_one_rows

torch.set_num_threads(1)
MODULE = "posttrain_llm.online_rl_trainer.examples.train_math"
CHILD = Path(__file__).with_name("resume_child.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli_args(out: Path, *extra: str) -> list[str]:
    # The tiny model without warm-up, logging every step (a YAML config), 4 completions per step: ~0.2 s a step.
    config = TrainerConfig.from_preset("offline-demo", logging_steps=1, num_generations=4,
                                       per_device_train_batch_size=8).save_yaml(out.parent / f"{out.name}.yaml")
    return ["--config", str(config), "--no-warmup", "--eval-samples", "0", "--threads", "1", "--output-dir", str(out),
            *extra]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", MODULE, *args], stdout=handle, stderr=subprocess.STDOUT, env=ENV)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def _one_line_exit(log: Path) -> str:
    """The run's last output line, after checking it left no traceback."""
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    return text.strip().splitlines()[-1]


def _trained_steps(out: Path) -> list[int]:
    history = json.loads((out / "final" / "training_metrics.json").read_text())["history"]
    return [row["step"] for row in history if "reward" in row]


@pytest.mark.parametrize("algo,sig", [("grpo", signal.SIGINT), ("ppo", signal.SIGTERM)])
def test_a_signal_finishes_the_step_saves_it_and_the_resume_continues_from_it(algo, sig, tmp_path):
    """Also: while the first run trains, the same command into the same folder stops at once, naming that run."""
    out = tmp_path / "run"
    args = _cli_args(out, "--trainer", algo, "--num-generations", "2" if algo == "ppo" else "4", "--max-steps", "3000",
                     "--save-steps", "3")
    first = _start(args, tmp_path / "first.log")
    try:
        _wait_for(out / "checkpoint-3" / ckpt.COMPLETE_MARKER, first, tmp_path / "first.log")
        if algo == "grpo":  # the lock: a second run into the same folder
            started = time.monotonic()
            second = subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, env=ENV,
                                    timeout=300)
            assert second.returncode == 2 and first.poll() is None, second.stderr[-3000:]
            last = second.stderr.strip().splitlines()[-1]  # the CLIs' one line for a user error
            assert last.startswith("error: output_dir ") and f"is in use by another training run (pid {first.pid} " in last
            assert time.monotonic() - started < 120  # refused at start, no training: it took only the imports
        first.send_signal(sig)
        assert first.wait(timeout=300) == 128 + sig
    finally:
        _stop(first)
    line = _one_line_exit(tmp_path / "first.log")
    match = re.fullmatch(rf"interrupted by {sig.name} at step (\d+) of 3000 \(checkpoint-(\d+) saved\); to continue: "
                         rf"python -m {MODULE} .* --resume", line)
    assert match and match.group(1) == match.group(2), line
    step = int(match.group(1))
    assert step >= 3 and ckpt.latest_checkpoint(out) == out / f"checkpoint-{step}"  # the step reached, not the last periodic one
    manifest = read_manifest(out)
    assert (manifest["status"], manifest["step"], manifest["signal"]) == ("interrupted", step, sig.name)
    assert not (out / ".run.lock").exists()

    resume_args = [a if a != "3000" else str(step + 2) for a in args] + ["--resume"]
    assert line.endswith(" ".join(args) + " --resume")  # the printed command is this one
    summary = train_math.main(resume_args)
    assert summary["steps"] == step + 2 and _trained_steps(out) == [step + 1, step + 2]
    assert read_manifest(out)["resumes"][-1]["checkpoint"] == f"checkpoint-{step}"


def test_a_second_signal_abandons_a_long_step_at_once(tmp_path, tiny_model_dir):
    """The PPO child's reward stalls for 120 s after checkpoint-3: the first SIGINT asks for the end of the step (a
    repeat within the window is ignored), a later one abandons it. Step 4 is lost, checkpoint-3 is the one to
    resume from."""
    run_dir = tmp_path / "ppo"
    run_dir.mkdir()
    with open(run_dir / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, str(CHILD), "ppo", str(tiny_model_dir), str(run_dir), "--stall-after",
                                 "3"], stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        _wait_for(run_dir / "stalled", proc, run_dir / "log.txt")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # a repeat right away is the same request (a launcher forwarding it)
        time.sleep(REPEAT_WINDOW_S + 0.5)
        assert proc.poll() is None  # the first signal waits for the step
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130 and time.monotonic() - started < 30
    finally:
        _stop(proc)
    line = _one_line_exit(run_dir / "log.txt")
    assert line == ("interrupted by SIGINT during step 4 of 6, abandoned (newest checkpoint: checkpoint-3); "
                    "rerun with --resume (train(resume_from_checkpoint=True)) to continue from it"), line
    out = run_dir / "out"
    assert [p.name for p in ckpt.checkpoint_folders(out)] == ["checkpoint-3"] and not list(out.glob(".tmp-*"))
    assert read_manifest(out)["status"] == "interrupted"


def test_without_checkpoints_an_interrupt_saves_nothing_and_says_so(tmp_path, tiny_model_dir):
    """save_steps beyond max_steps: the user asked for no checkpoints, so none is written on a signal either. The
    signal is sent to this process from the reward of step 2; the handlers are put back after training."""
    calls, armed = [], [True]

    def reward(completions, **kwargs):
        calls.append(1)
        if len(calls) == 2 and armed[0]:
            os.kill(os.getpid(), signal.SIGINT)
        return [len(c[0]["content"]) / 10 for c in completions]

    before = signal.getsignal(signal.SIGINT)
    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), max_steps=20, save_steps=1000, learning_rate=1e-3,
                           kl_coef=0.0, max_completion_length=5, num_generations=4, per_device_train_batch_size=8,
                           output_dir=str(tmp_path / "out"), torch_num_threads=1)
    rows = plus_one_rows(8)
    with pytest.raises(TrainingInterrupted) as caught:
        OnlineRLTrainer(config, reward, rows).train()
    assert str(caught.value) == ("interrupted by SIGINT at step 2 of 20 (no checkpoint: checkpoints are off, "
                                 "save_steps > max_steps); rerun to start over (set --save-steps N, save_steps, to "
                                 "make a run resumable)")
    assert caught.value.exit_code == 130 and caught.value.checkpoint is None
    assert ckpt.checkpoint_folders(tmp_path / "out") == [] and signal.getsignal(signal.SIGINT) is before
    # The interrupted run left nothing worth keeping: the same fresh run may start again in its folder.
    assert read_manifest(tmp_path / "out")["status"] == "interrupted"
    armed[0] = False  # no signal this time
    OnlineRLTrainer(config.replace(max_steps=2), reward, rows).train()
    assert read_manifest(tmp_path / "out")["status"] == "finished"
