"""Checkpoints and resume for every algorithm: a run killed with SIGKILL and resumed in a new process reproduces
the uninterrupted run bit for bit (CPU, fixed seed), as one process and as two under ``accelerate launch``;
checkpoint writes are atomic; resume picks the latest *complete* checkpoint. Training runs use the tiny built-in
model (tests/training/resume_child.py for the subprocesses)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.files import checkpoints as ckpt
from tests.builders import plus_one_rows

torch.set_num_threads(1)
CHILD = Path(__file__).with_name("resume_child.py")
#: The checkpoint each algorithm's child run is killed after (see SETTINGS in resume_child.py).
KILL_AFTER = {"grpo": 5, "rloo": 5, "ppo": 3}


def _launch(algo: str, run_dir: Path, model_dir: Path, *extra: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f"log{len(list(run_dir.glob('log*')))}.txt", "w") as log:
        return subprocess.Popen([sys.executable, str(CHILD), algo, str(model_dir), str(run_dir), *extra],
                                stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=600)


def _tail(run_dir: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(run_dir.glob("log*.txt")))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _assert_same_steps_after(k: int, straight_dir: Path, resumed_dir: Path) -> None:
    """The resumed run logged exactly the uninterrupted run's steps after k, every key, every value but the wall-clock
    ones (``step_time`` and ``timing/*``)."""
    expected = {row["step"]: row for row in json.loads((straight_dir / "result.json").read_text())}
    got = {row["step"]: row for row in json.loads((resumed_dir / "result.json").read_text())}
    assert sorted(got) == [s for s in sorted(expected) if s > k] and got, (sorted(expected), sorted(got))
    for step, row in got.items():
        assert set(row) == set(expected[step]), (step, set(row) ^ set(expected[step]))
        for key, value in row.items():
            if key != "step_time" and not key.startswith("timing/"):  # wall-clock times may differ, nothing else
                assert _same(value, expected[step][key]), (step, key, expected[step][key], value)


# --------------------------------------------------------------------------------------- resume after SIGKILL
@pytest.mark.parametrize("algo", ["grpo", "rloo", "ppo"])
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(algo, tmp_path, tiny_model_dir):
    k = KILL_AFTER[algo]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = _launch(algo, straight_dir, tiny_model_dir)
    killed = _launch(algo, killed_dir, tiny_model_dir, "--kill-after", str(k))
    assert _finish(straight) == 0, _tail(straight_dir)
    assert _finish(killed) == -signal.SIGKILL, _tail(killed_dir)
    # Killed in the middle of a later step: checkpoint k is the newest complete one, and the run wrote no result.
    assert ckpt.latest_checkpoint(killed_dir / "out") == killed_dir / "out" / f"checkpoint-{k}"
    assert not (killed_dir / "result.json").exists()

    resumed = _launch(algo, killed_dir, tiny_model_dir, "--resume")
    assert _finish(resumed) == 0, _tail(killed_dir)

    _assert_same_steps_after(k, straight_dir, killed_dir)
    want, have = torch.load(straight_dir / "weights.pt"), torch.load(killed_dir / "weights.pt")
    assert want.keys() == have.keys()
    assert all(torch.equal(want[name], have[name]) for name in want), [n for n in want if not torch.equal(want[n], have[n])][:5]


# ------------------------------------------------------------------------ resume after SIGKILL, 2 processes
# Two CPU processes (gloo) under `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml`, with the one
# process run's global batch (resume_child.py halves the per-process batch), so checkpoint k falls at the same
# place: in epoch 1, inside a GRPO generation cycle, inside a logging window. The reward is `variety` (share of
# distinct characters): with the default share of 7s every 2-process GRPO group scored 0, no weight ever moved and
# the comparison would have been vacuous.
#
# The crash: the first process whose reward function runs after checkpoint-k is complete SIGKILLs both workers
# (the other first, itself last), i.e. the whole job is killed at once and nothing gets to clean up; the launcher
# (torchrun inside accelerate) sees both die, reaps them and exits with an error. The resumed run is a new launch.
# Ports: cpu_2proc.yaml's main_process_port 0 makes every launch pick a free port; after the crash nothing may still
# listen on the killed launch's port, and no worker may be left running or as a zombie.
ACCELERATE = Path(sys.executable).with_name("accelerate")
CPU_2PROC = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "cpu_2proc.yaml"
TWO_PROC_REWARD = ("--reward", "variety")


def _launch_two(algo: str, run_dir: Path, model_dir: Path, *extra: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CPU_2PROC), str(CHILD), algo, str(model_dir),
           str(run_dir), *TWO_PROC_REWARD, *extra]
    with open(run_dir / f"log{len(list(run_dir.glob('log*')))}.txt", "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _worker_pids(run_dir: Path) -> dict[int, dict]:
    return {rank: json.loads((run_dir / "pids" / f"rank{rank}.json").read_text()) for rank in (0, 1)
            if (run_dir / "pids" / f"rank{rank}.json").is_file()}


def _leftover(pid: int, run_dir: Path) -> str | None:
    """'zombie' or 'running' if process ``pid`` is still there as a worker of the run in ``run_dir``, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return "zombie"
    return "running" if os.fsencode(str(run_dir)) in cmdline else None


def _listening(port: int) -> bool:
    """Whether a TCP socket (IPv4 or IPv6) of this network namespace listens on ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _stop(proc: subprocess.Popen, run_dir: Path) -> None:
    """Kill what is left of a launch (its workers, then the launcher) and reap it: nothing after a normal end,
    everything after a failed assertion or a timeout."""
    if proc.poll() is None:
        for info in _worker_pids(run_dir).values():
            if _leftover(info["pid"], run_dir) == "running":
                os.kill(info["pid"], signal.SIGKILL)
        proc.kill()
    proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks leftover processes and ports in /proc")
@pytest.mark.parametrize("algo", ["grpo", "rloo", "ppo"])
def test_two_process_resume_after_sigkill_reproduces_the_uninterrupted_run(algo, tmp_path, tiny_model_dir):
    k = KILL_AFTER[algo]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    launches = [(_launch_two(algo, straight_dir, tiny_model_dir), straight_dir),
                (_launch_two(algo, killed_dir, tiny_model_dir, "--kill-after", str(k)), killed_dir)]
    try:
        (straight, _), (killed, _) = launches
        assert _finish(straight) == 0, _tail(straight_dir)
        assert _finish(killed) != 0, _tail(killed_dir)
        # Both workers died by SIGKILL (torchrun's failure report: "exitcode : -9 (pid: N)"), none is left running
        # or unreaped, and the killed launch's rendezvous port is free again.
        workers, log = _worker_pids(killed_dir), (killed_dir / "log0.txt").read_text()
        assert sorted(workers) == [0, 1], log
        for rank, info in workers.items():
            assert re.search(rf"exitcode\s*:\s*-9 \(pid: {info['pid']}\)", log), (rank, log)
            assert _leftover(info["pid"], killed_dir) is None, (rank, _leftover(info["pid"], killed_dir))
        assert not _listening(workers[0]["master_port"])
        assert ckpt.latest_checkpoint(killed_dir / "out") == killed_dir / "out" / f"checkpoint-{k}"
        assert not list(killed_dir.glob("result*.json")) and not list(killed_dir.glob("weights*.pt"))

        launches.append((_launch_two(algo, killed_dir, tiny_model_dir, "--resume"), killed_dir))
        assert _finish(launches[-1][0]) == 0, _tail(killed_dir)
    finally:
        for proc, run_dir in launches:
            _stop(proc, run_dir)

    _assert_same_steps_after(k, straight_dir, killed_dir)
    want = torch.load(straight_dir / "weights.pt")
    for name in ("weights.pt", "weights_rank1.pt"):  # rank 0 and rank 1: the same replica as the straight run's
        have = torch.load(killed_dir / name)
        assert want.keys() == have.keys()
        differ = [p for p in want if not torch.equal(want[p], have[p])]
        assert not differ, (name, differ[:5])
    # The resumed steps really trained: the policy moved away from checkpoint k's.
    from safetensors.torch import load_file

    saved = ckpt.checkpoint_dir(killed_dir / "out", k)
    at_k = load_file(str((saved / "policy" if algo == "ppo" else saved) / "model.safetensors"))
    assert at_k and any(not torch.equal(at_k[p], want[f"policy.{p}"]) for p in at_k)


def test_epoch_seeded_sampler_yields_trl_sampler_order_and_restarts_in_any_epoch():
    from trl.trainer.utils import RepeatSampler

    from posttrain_llm.online_rl_trainer.core.backends.trl.trainers import EpochSeededRepeatSampler

    kw = dict(data_source=list(range(10)), mini_repeat_count=2, batch_size=3, repeat_count=2, shuffle=True, seed=5)
    trl_sampler = RepeatSampler(**kw)
    trl_epochs = [list(trl_sampler) for _ in range(3)]  # TRL: one draw per pass over the sampler
    ours = EpochSeededRepeatSampler(**kw)
    for epoch in (2, 0, 1):  # any order, e.g. a fresh process resuming in epoch 2
        ours.set_epoch(epoch)
        assert list(ours) == trl_epochs[epoch]
    assert trl_epochs[0] != trl_epochs[1]


def test_the_trainer_hands_the_epoch_to_the_sampler_itself(tmp_path, tiny_model_dir, monkeypatch):
    """accelerate's DataLoaderShard.set_epoch does not reach the sampler of a multi-process run resumed mid-epoch
    (three wrappers deep), so a resumed epoch replayed epoch 0's prompt order on 2 processes (caught by the
    2-process test above). Here, in one process, set_epoch is made a no-op: the sampler must still iterate each
    epoch with that epoch's number."""
    from accelerate.data_loader import DataLoaderShard

    from posttrain_llm.online_rl_trainer.core.backends.trl.trainers import EpochSeededRepeatSampler

    monkeypatch.setattr(DataLoaderShard, "set_epoch", lambda self, epoch: None)
    seen, iterate = [], EpochSeededRepeatSampler.__iter__

    def recording_iter(self):
        seen.append(self.epoch)
        return iterate(self)

    monkeypatch.setattr(EpochSeededRepeatSampler, "__iter__", recording_iter)
    _grpo(tmp_path, tiny_model_dir, max_steps=5, save_steps=100).train()  # 8 prompts, 2 per step: epoch 1 at step 5
    assert seen == [0, 1]


# ------------------------------------------------------------------------------------------ atomic checkpoints
def frac7(completions, **kwargs):
    return [c[0]["content"].count("7") / max(1, len(c[0]["content"])) for c in completions]


def _grpo(tmp_path, tiny_model_dir, **kw):
    base = dict(model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3, kl_coef=0.0,
                max_completion_length=5, num_generations=4, per_device_train_batch_size=8,
                output_dir=str(tmp_path / "out"), save_steps=1, save_total_limit=None, torch_num_threads=1)
    base.update(kw)
    return OnlineRLTrainer(TrainerConfig(**base), frac7, plus_one_rows(8))


def test_a_crash_while_saving_a_grpo_checkpoint_leaves_nothing_to_resume_from(tmp_path, tiny_model_dir):
    trainer = _grpo(tmp_path, tiny_model_dir, max_steps=1)

    def disk_full(*args, **kwargs):
        raise OSError("simulated write failure")

    # transformers saves the model first, then the optimizer: fail in between.
    trainer.backend._save_optimizer_and_scheduler = disk_full
    with pytest.raises(OSError, match="simulated write failure"):
        trainer.train()
    out = tmp_path / "out"
    assert (out / ".tmp-checkpoint-1" / "checkpoint-1" / "model.safetensors").is_file()  # the save was under way
    assert not list(out.glob("checkpoint-*"))
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(out)) is None and ckpt.latest_checkpoint(out) is None
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        _grpo(tmp_path, tiny_model_dir).train(resume_from_checkpoint=True)


def test_resume_skips_a_newer_incomplete_checkpoint(tmp_path, tiny_model_dir):
    _grpo(tmp_path, tiny_model_dir).train()  # checkpoint-1 and checkpoint-2, both complete
    out = tmp_path / "out"
    # A newer folder that has every file of a checkpoint but the marker (as an in-place save cut short would):
    # a copy of checkpoint-1, so resuming from it would redo step 2.
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-7")
    (out / "checkpoint-7" / ckpt.COMPLETE_MARKER).unlink()
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-7")  # transformers would pick it
    resumed = _grpo(tmp_path, tiny_model_dir, max_steps=3)
    resumed.train(resume_from_checkpoint=True)
    assert [h["step"] for h in resumed.metrics_history if "reward" in h] == [3]  # continued from checkpoint-2


def test_resuming_from_an_explicit_incomplete_folder_is_refused(tmp_path, tiny_model_dir):
    half = tmp_path / "out" / "checkpoint-3"
    half.mkdir(parents=True)
    (half / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a complete checkpoint"):
        _grpo(tmp_path, tiny_model_dir).train(resume_from_checkpoint=str(half))


def test_resume_with_no_checkpoint_is_an_error_for_every_algorithm(tmp_path, tiny_model_dir):
    ppo = OnlineRLTrainer(TrainerConfig(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), max_steps=1,
                                        num_generations=2, per_device_train_batch_size=4,
                                        output_dir=str(tmp_path / "ppo")), frac7, plus_one_rows(8))
    for trainer in (_grpo(tmp_path, tiny_model_dir), ppo):
        with pytest.raises(ValueError, match="holds no complete checkpoint"):
            trainer.train(resume_from_checkpoint=True)
