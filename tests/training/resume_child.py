"""A small training run for tests/training/test_resume.py, launched as a separate process (or as N under ``accelerate launch``).

    python tests/training/resume_child.py ALGO MODEL_DIR RUN_DIR [--kill-after K | --stall-after K] [--resume]
        [--reward frac7|variety]
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml tests/training/resume_child.py ALGO MODEL_DIR RUN_DIR ...

Trains the tiny model with ALGO (grpo | rloo | ppo) into RUN_DIR/out with a fixed seed. ``--kill-after K``: the
reward function sends SIGKILL to its own process the first time it runs once checkpoint-K is complete on disk,
i.e. in the middle of a later step. ``--stall-after K``: instead, the reward then touches RUN_DIR/stalled and
sleeps 120 s (a step too long to wait for: tests/training/test_interrupts.py signals it twice); a ``TrainingInterrupted``
is printed as its one line and exits with its code. ``--resume``: ``train(resume_from_checkpoint=True)``. ``--reward``: the share
of 7s (default) or of distinct characters (``variety``: non-zero for nearly every completion of the tiny model, so
every GRPO group has advantages and every step moves the weights). A run that finishes
writes RUN_DIR/result.json (every logged row but the final summary) and RUN_DIR/weights.pt (policy, and critic
for PPO).

Under ``accelerate launch`` (``WORLD_SIZE`` > 1): the per-process batch is SETTINGS' batch / WORLD_SIZE, so the
global batch, and with it the schedule (steps per epoch, generation cycles, where checkpoint K falls), is the one
process's. Each process writes ``RUN_DIR/pids/rank<r>.json`` (its pid and the rendezvous port) at start. With
``--kill-after K`` the first process whose reward function sees checkpoint-K complete SIGKILLs every process of
the job, the others first and itself last (a job OOM-killed or ``kill -9``-ed as a whole: no process gets to
clean up or write anything; the launcher stays, reaps them and reports the failure). Rank 0 writes result.json
and weights.pt as above; rank r > 0 writes ``result_rank<r>.json`` and ``weights_rank<r>.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

# Run by path (python tests/training/resume_child.py): the repository root is not on sys.path, and the rows come
# from the tests' shared builders.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.files.checkpoints import COMPLETE_MARKER
from posttrain_llm.online_rl_trainer.core.training.interrupts import TrainingInterrupted
from tests.builders import plus_one_rows

# 4 prompts, 2 per step. GRPO/RLOO: one generation serves 2 updates (num_iterations=2), so 4 steps per epoch;
# checkpoint 5 is in epoch 1, in the middle of a generation cycle and of a logging window (logging_steps=2).
# PPO: 2 steps per epoch; checkpoint 3 is in epoch 1 and in the middle of a logging window.
SETTINGS = {
    "grpo": dict(num_generations=4, per_device_train_batch_size=8, num_iterations=2, max_steps=8, save_steps=5),
    "rloo": dict(num_generations=4, per_device_train_batch_size=8, num_iterations=2, max_steps=8, save_steps=5),
    "ppo": dict(num_generations=2, per_device_train_batch_size=4, ppo_epochs=2, num_mini_batches=2, max_steps=6,
                save_steps=3),
}


def rows() -> list[dict]:
    return plus_one_rows(4)


def world() -> tuple[int, int]:
    """(rank, number of processes) as set by torchrun / accelerate launch; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def config(algo: str, model_dir: str, out: Path) -> TrainerConfig:
    settings = dict(SETTINGS[algo])
    _, processes = world()
    if settings["per_device_train_batch_size"] % processes:
        raise SystemExit(f"{algo}: batch {settings['per_device_train_batch_size']} does not split over {processes}")
    settings["per_device_train_batch_size"] //= processes  # the same global batch as one process
    return TrainerConfig(trainer_type=algo, model_name_or_path=model_dir, output_dir=str(out), learning_rate=1e-3,
                         kl_coef=0.05, max_completion_length=6, logging_steps=2, save_total_limit=None, seed=7,
                         torch_num_threads=1, **settings)


def kill_job(run_dir: Path) -> None:
    """SIGKILL every process of this run (their pid files), the others first, then this one."""
    rank, processes = world()
    if processes > 1:
        for other in range(processes):
            if other != rank:
                pid = json.loads((run_dir / "pids" / f"rank{other}.json").read_text())["pid"]
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it got here first and is already gone
                    pass
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("algo")
    parser.add_argument("model_dir")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--stall-after", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--reward", choices=["frac7", "variety"], default="frac7")
    args = parser.parse_args()
    out = args.run_dir / "out"
    rank, processes = world()
    if processes > 1:
        (args.run_dir / "pids").mkdir(parents=True, exist_ok=True)
        (args.run_dir / "pids" / f"rank{rank}.json").write_text(
            json.dumps({"pid": os.getpid(), "master_port": int(os.environ["MASTER_PORT"])}))

    def frac7(completions, **kwargs):
        if args.kill_after is not None and (out / f"checkpoint-{args.kill_after}" / COMPLETE_MARKER).is_file():
            kill_job(args.run_dir)
        if args.stall_after is not None and (out / f"checkpoint-{args.stall_after}" / COMPLETE_MARKER).is_file():
            (args.run_dir / "stalled").touch()
            time.sleep(120)
        texts = [c[0]["content"] for c in completions]
        if args.reward == "variety":
            return [len(set(t)) / max(1, len(t)) for t in texts]
        return [t.count("7") / max(1, len(t)) for t in texts]

    trainer = OnlineRLTrainer(config(args.algo, args.model_dir, out), frac7, rows())
    try:
        trainer.train(resume_from_checkpoint=True if args.resume else None)
    except TrainingInterrupted as exc:
        print(exc, flush=True)
        raise SystemExit(exc.exit_code) from None
    logged = [row for row in trainer.metrics_history if "train_runtime" not in row]
    suffix = f"_rank{rank}" if rank else ""
    (args.run_dir / f"result{suffix}.json").write_text(json.dumps(logged))
    weights = {f"policy.{k}": v.clone() for k, v in trainer.backend.model.state_dict().items()}
    if args.algo == "ppo":
        weights.update({f"critic.{k}": v.clone() for k, v in trainer.backend.critic.state_dict().items()})
    torch.save(weights, args.run_dir / f"weights{suffix}.pt")


if __name__ == "__main__":
    main()
