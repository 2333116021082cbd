"""A small training run for tests/test_resume.py, launched as a separate process.

    python tests/resume_child.py ALGO MODEL_DIR RUN_DIR [--kill-after K] [--resume]

Trains the tiny model with ALGO (grpo | rloo | ppo) into RUN_DIR/out with a fixed seed. ``--kill-after K``: the
reward function sends SIGKILL to its own process the first time it runs once checkpoint-K is complete on disk,
i.e. in the middle of a later step. ``--resume``: ``train(resume_from_checkpoint=True)``. A run that finishes
writes RUN_DIR/result.json (every logged row but the final summary) and RUN_DIR/weights.pt (policy, and critic
for PPO).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig  # noqa: E402
from posttrain_llm.online_rl_trainer.core.checkpoints import COMPLETE_MARKER  # noqa: E402

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
    return [{"prompt": [{"role": "user", "content": f"{a}+1="}], "answer": str(a + 1)} for a in range(4)]


def config(algo: str, model_dir: str, out: Path) -> TrainerConfig:
    return TrainerConfig(trainer_type=algo, model_name_or_path=model_dir, output_dir=str(out), learning_rate=1e-3,
                         kl_coef=0.05, max_completion_length=6, logging_steps=2, save_total_limit=None, seed=7,
                         torch_num_threads=1, **SETTINGS[algo])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("algo")
    parser.add_argument("model_dir")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    out = args.run_dir / "out"

    def frac7(completions, **kwargs):
        if args.kill_after is not None and (out / f"checkpoint-{args.kill_after}" / COMPLETE_MARKER).is_file():
            os.kill(os.getpid(), signal.SIGKILL)
        texts = [c[0]["content"] for c in completions]
        return [t.count("7") / max(1, len(t)) for t in texts]

    trainer = OnlineRLTrainer(config(args.algo, args.model_dir, out), frac7, rows())
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    logged = [row for row in trainer.metrics_history if "train_runtime" not in row]
    (args.run_dir / "result.json").write_text(json.dumps(logged))
    weights = {f"policy.{k}": v.clone() for k, v in trainer.backend.model.state_dict().items()}
    if args.algo == "ppo":
        weights.update({f"critic.{k}": v.clone() for k, v in trainer.backend.critic.state_dict().items()})
    torch.save(weights, args.run_dir / "weights.pt")


if __name__ == "__main__":
    main()
