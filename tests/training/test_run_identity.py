"""Runs have an identity (issue 16, items 4 and 5): a manifest in the output folder, a lock, no fresh run over an
earlier run's checkpoints, resumes checked against the checkpoint's run. Each test reproduces a failure the issue
found: two runs into one folder both "succeeded" (the second replaced the first), ``--resume`` silently continued
another run's checkpoint, and a fresh run mixed its checkpoints with an old run's. Tiny model, a step or two each.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.errors import UserError
from posttrain_llm.online_rl_trainer.core.files import checkpoints as ckpt
from posttrain_llm.online_rl_trainer.core.files import run_lock
from posttrain_llm.online_rl_trainer.core.files.run_folder import RunExistsError
from posttrain_llm.online_rl_trainer.core.files.run_manifest import read_manifest
from posttrain_llm.online_rl_trainer.examples import train_math
from tests.builders import plus_one_rows

torch.set_num_threads(1)


def _rows(n=8, offset=0):
    return plus_one_rows(n, start=offset)


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10 for c in completions]


def _trainer(tmp_path, tiny_model_dir, rows=None, **kw):
    base = dict(model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3, kl_coef=0.0, seed=1,
                max_completion_length=5, num_generations=4, per_device_train_batch_size=8, save_steps=1,
                save_total_limit=None, output_dir=str(tmp_path / "out"), torch_num_threads=1)
    base.update(kw)
    return OnlineRLTrainer(TrainerConfig(**base), length_reward, rows or _rows())


def _steps(trainer) -> list[int]:
    return [row["step"] for row in trainer.metrics_history if "reward" in row]


# ---------------------------------------------------------------------------------------------- the manifest
def test_the_manifest_records_the_run_and_every_checkpoint_names_its_run(tmp_path, tiny_model_dir):
    _trainer(tmp_path, tiny_model_dir).train()
    out = tmp_path / "out"
    manifest = read_manifest(out)
    assert manifest["status"] == "finished" and manifest["step"] == 2
    assert (manifest["trainer_type"], manifest["model"], manifest["seed"]) == ("grpo", str(tiny_model_dir), 1)
    assert len(manifest["config_hash"]) == 16 and len(manifest["data_fingerprint"]) == 16
    assert {"torch", "transformers", "trl"} <= set(manifest["package_versions"])
    assert manifest["config"]["max_steps"] == 2 and manifest["identity"]["rewards"] == ["length_reward"]
    for step in (1, 2):
        run = ckpt.checkpoint_info(out / f"checkpoint-{step}")["run"]
        assert run["run_id"] == manifest["run_id"] and run["config_hash"] == manifest["config_hash"]
    assert not (out / run_lock.LOCK_FILENAME).exists()  # released at the end


# ---------------------------------------------------------------------------------------------- the lock
def _lock_of(pid: int, started: int | None, tmp_path):
    (tmp_path / "out").mkdir(exist_ok=True)
    owner = {"pid": pid, "host": socket.gethostname(), "process_start": started, "acquired": "2020-01-01 00:00:00"}
    (tmp_path / "out" / run_lock.LOCK_FILENAME).write_text(json.dumps(owner))


def test_a_run_into_a_folder_locked_by_a_live_process_stops_at_once(tmp_path, tiny_model_dir):
    """The other process is real and alive (its pid and start time in the lock, as its run would write them)."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_of(other.pid, run_lock._process_start_time(other.pid), tmp_path)
        trainer = _trainer(tmp_path, tiny_model_dir)
        with pytest.raises(run_lock.OutputDirBusyError, match=rf"in use by another training run \(pid {other.pid} "):
            trainer.train()
    finally:
        other.kill()
        other.wait()
    assert isinstance(run_lock.OutputDirBusyError("x"), UserError)
    assert int(trainer.backend.state.global_step) == 0 and read_manifest(tmp_path / "out") is None


@pytest.mark.parametrize("how", ["dead pid", "reused pid"])
def test_a_stale_lock_is_taken_over_with_a_warning(how, tmp_path, tiny_model_dir, caplog):
    """A killed run's lock: its pid is gone, or now belongs to a process that started after the lock was taken."""
    if how == "dead pid":
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        pid, started, other = gone.pid, None, None
    else:
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pid, started = other.pid, run_lock._process_start_time(other.pid) - 1
    try:
        _lock_of(pid, started, tmp_path)
        with caplog.at_level(logging.WARNING, logger="posttrain_llm.online_rl_trainer.core.files.run_lock"):
            _trainer(tmp_path, tiny_model_dir, max_steps=1).train()
    finally:
        if other is not None:
            other.kill()
            other.wait()
    assert f"taking over a stale lock on {tmp_path / 'out'}: its owner (pid {pid} " in caplog.text
    assert read_manifest(tmp_path / "out")["status"] == "finished"


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    run_lock.acquire(tmp_path)
    run_lock.acquire(tmp_path)
    run_lock.release(tmp_path)
    assert (tmp_path / run_lock.LOCK_FILENAME).exists()  # still held once
    run_lock.release(tmp_path)
    assert not (tmp_path / run_lock.LOCK_FILENAME).exists()


# --------------------------------------------------------------------------------- fresh run, overwrite, resume
def test_a_fresh_run_refuses_an_earlier_runs_checkpoints_and_overwrite_replaces_them(tmp_path, tiny_model_dir):
    _trainer(tmp_path, tiny_model_dir).train()  # checkpoint-1, checkpoint-2
    out = tmp_path / "out"
    first = read_manifest(out)["run_id"]
    with pytest.raises(RunExistsError, match=r"holds checkpoints of an earlier run \(checkpoint-1, checkpoint-2; run "
                                             rf"{first}.*--resume.*--overwrite"):
        _trainer(tmp_path, tiny_model_dir, max_steps=1).train()
    assert read_manifest(out)["run_id"] == first  # nothing was touched

    second = _trainer(tmp_path, tiny_model_dir, max_steps=1, overwrite_output_dir=True, seed=5)
    second.train()
    manifest = read_manifest(out)
    assert manifest["run_id"] != first and manifest["seed"] == 5
    # The old run's newer checkpoint-2 is gone: a later resume cannot pick it up instead of the new run's.
    assert [p.name for p in ckpt.checkpoint_folders(out)] == ["checkpoint-1"]
    assert ckpt.checkpoint_info(out / "checkpoint-1")["run"]["run_id"] == manifest["run_id"]


def test_a_fresh_run_refuses_a_finished_run_but_takes_over_one_that_left_nothing(tmp_path, tiny_model_dir):
    _trainer(tmp_path, tiny_model_dir, max_steps=1, save_steps=100).train()
    for folder in ckpt.checkpoint_folders(tmp_path / "out"):  # transformers saves the last step anyway; PPO does not
        shutil.rmtree(folder)
    with pytest.raises(RunExistsError, match="holds a finished run .* would replace. Pass --overwrite"):
        _trainer(tmp_path, tiny_model_dir, max_steps=1, save_steps=100).train()
    manifest = read_manifest(tmp_path / "out")
    manifest["status"] = "failed"  # a run that crashed before its first checkpoint
    (tmp_path / "out" / "run_manifest.json").write_text(json.dumps(manifest))
    _trainer(tmp_path, tiny_model_dir, max_steps=1, save_steps=100).train()
    assert read_manifest(tmp_path / "out")["run_id"] != manifest["run_id"]


def test_resume_refuses_a_checkpoint_of_a_run_with_other_settings_naming_them(tmp_path, tiny_model_dir, caplog):
    _trainer(tmp_path, tiny_model_dir).train()
    out = tmp_path / "out"
    other = _trainer(tmp_path, tiny_model_dir, rows=_rows(offset=50), max_steps=3, seed=2, num_generations=2,
                     per_device_train_batch_size=4)
    with pytest.raises(ckpt.CheckpointError) as caught:
        other.train(resume_from_checkpoint=True)
    message = str(caught.value)
    for change in ("seed: 1 -> 2", "num_generations: 4 -> 2", "per_device_train_batch_size: 8 -> 4",
                   "data_fingerprint: "):
        assert change in message, message
    assert "max_steps" not in message  # extending a run is what resuming is for
    assert f"checkpoint {str(out / 'checkpoint-2')!r}" in message and "--resume-mismatch-ok" in message
    assert int(other.backend.state.global_step) == 0

    with caplog.at_level(logging.INFO, logger="posttrain_llm.online_rl_trainer.core.files.run_folder"):
        other.train(resume_from_checkpoint=True, resume_mismatch_ok=True)
    assert _steps(other) == [3]
    assert f"resuming {out / 'checkpoint-2'} with changed settings (resume_mismatch_ok): " in caplog.text
    assert f"resuming from {out / 'checkpoint-2'} (step 2, run " in caplog.text  # the log names the checkpoint
    resumes = read_manifest(out)["resumes"]
    assert resumes[-1]["checkpoint"] == "checkpoint-2" and "seed: 1 -> 2" in resumes[-1]["changed"]


def test_resume_with_the_same_settings_continues_the_same_run(tmp_path, tiny_model_dir):
    _trainer(tmp_path, tiny_model_dir).train()
    run_id = read_manifest(tmp_path / "out")["run_id"]
    resumed = _trainer(tmp_path, tiny_model_dir, max_steps=3, save_steps=10, logging_steps=1)  # not identity
    resumed.train(resume_from_checkpoint=True)
    manifest = read_manifest(tmp_path / "out")
    assert _steps(resumed) == [3] and manifest["run_id"] == run_id and manifest["resumes"][0]["changed"] == []


# ---------------------------------------------------------------------------------------------------- the CLI
def _cli(*extra: str) -> list[str]:
    return ["--max-steps", "1", "--num-generations", "4", "--eval-samples", "0", "--no-warmup", "--threads", "1",
            "--num-samples", "16", *extra]


def test_the_demo_command_twice_replaces_its_own_finished_run_but_a_named_folder_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "outputs" / "offline_demo"  # the preset's folder
    train_math.main(_cli())
    first = read_manifest(default)["run_id"]
    train_math.main(_cli())  # `make demo` twice: the finished run in the default folder is replaced
    assert read_manifest(default)["run_id"] != first

    named = ["--output-dir", str(tmp_path / "mine"), "--save-steps", "1"]
    train_math.main(_cli(*named))
    kept = read_manifest(tmp_path / "mine")["run_id"]
    with pytest.raises(RunExistsError, match="--overwrite"):
        train_math.main(_cli(*named))
    assert read_manifest(tmp_path / "mine")["run_id"] == kept
    train_math.main(_cli(*named, "--overwrite"))
    assert read_manifest(tmp_path / "mine")["run_id"] != kept
