r"""Train a reward model on preference pairs and print its held-out pairwise accuracy before -> after.

With no arguments it runs offline: the built-in tiny model learns to prefer correct, boxed answers to the synthetic
arithmetic problems (``core/data/preference_pairs.py``: the rejected answer is a wrong number or the right number
without ``\boxed{}``), held-out pairs come from the task's test split::

    python -m posttrain_llm.online_rl_trainer.examples.train_reward_model               # tiny model, ~1 min
    online-rl train-reward-model --pairs prefs.jsonl --eval-pairs held_out.jsonl \
        --model HuggingFaceTB/SmolLM2-135M-Instruct --learning-rate 1e-5 --max-steps 200

``--pairs`` files are JSON Lines (or JSON/CSV/Parquet) rows with ``prompt``, ``chosen`` and ``rejected`` (strings or
chat conversations); without ``--eval-pairs``, ``--eval-share`` of them is held out. The folder written to
``--output-dir`` loads as a reward: ``RewardModelFunction("<output-dir>")``; ``reward_model_info.json`` in it holds
the accuracies (overall and per kind of rejected answer), the loss curve and the score statistics.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from posttrain_llm.online_rl_trainer.core.common.names import TINY_MODEL_NAME
from posttrain_llm.online_rl_trainer.core.data.preference_pairs import arithmetic_preference_pairs
from posttrain_llm.online_rl_trainer.core.training.reward_model import RewardModelTrainingConfig, train_reward_model
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli

DEFAULT_OUTPUT_DIR = "./outputs/reward_model"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=TINY_MODEL_NAME, help="starting causal LM (folder, Hub id, builtin)")
    # Data
    p.add_argument("--pairs", default=None, help="preference file (default: synthetic arithmetic pairs)")
    p.add_argument("--eval-pairs", default=None, help="held-out preference file (default: held out from --pairs)")
    p.add_argument("--eval-share", type=float, default=0.2, help="share held out when there is no --eval-pairs")
    p.add_argument("--num-pairs", type=int, default=600, help="synthetic training pairs (at most 700)")
    p.add_argument("--num-eval-pairs", type=int, default=200, help="synthetic held-out pairs (at most 300)")
    p.add_argument("--difficulty", type=int, default=1, help="synthetic arithmetic difficulty (1-3)")
    # Training
    p.add_argument("--max-steps", type=int, default=None, help="default 300 (tiny model), 100 otherwise")
    p.add_argument("--learning-rate", type=float, default=None, help="default 1e-3 (tiny model), 1e-5 otherwise")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--max-length", type=int, default=512, help="tokens per sequence (oldest dropped beyond)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    tiny = args.model == TINY_MODEL_NAME
    if args.threads or tiny:
        import torch

        torch.set_num_threads(args.threads or 1)  # the tiny model is faster on one thread than on several
    config = RewardModelTrainingConfig(
        model=args.model, output_dir=args.output_dir, max_steps=args.max_steps or (300 if tiny else 100),
        learning_rate=args.learning_rate or (1e-3 if tiny else 1e-5), batch_size=args.batch_size,
        max_length=args.max_length, eval_share=args.eval_share, seed=args.seed)
    if args.pairs is None:
        style = "bare" if tiny else "chat"
        train = arithmetic_preference_pairs(args.num_pairs, args.seed, args.difficulty, "train", style)
        held_out = arithmetic_preference_pairs(args.num_eval_pairs, args.seed, args.difficulty, "test", style)
        source = f"synthetic arithmetic pairs (difficulty {args.difficulty}, {style} prompts)"
    else:
        train, held_out, source = args.pairs, args.eval_pairs, args.pairs
    summary = train_reward_model(train, config, eval_data=held_out)
    before, after = summary["held_out_before"], summary["held_out_after"]
    print(f"\n=== reward model from {args.model} on {source} ===")
    print(f"  held-out pairwise accuracy: {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
          f"({after['n']} pairs, {config.max_steps} steps, {summary['train_seconds']:.0f} s of training)")
    for kind in sorted(after.get("by_kind", {})):
        print(f"    rejected = {kind}: {before['by_kind'][kind]:.3f} -> {after['by_kind'][kind]:.3f}")
    print(f"saved: {summary['output_dir']}  (load with RewardModelFunction({summary['output_dir']!r}))")
    return summary


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
