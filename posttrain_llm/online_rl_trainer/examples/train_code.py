"""Train a model to write Python with online RL: MBPP train tasks, rewarded by running their tests in the sandbox.

    python -m posttrain_llm.online_rl_trainer.examples.train_code                       # SmolLM2 offline, GRPO, a few steps
    python -m posttrain_llm.online_rl_trainer.examples.train_code --trainer rloo --num-samples 64 --max-steps 20
    python -m posttrain_llm.online_rl_trainer.examples.train_code --model Qwen/Qwen2.5-0.5B-Instruct --use-gpu \\
        --max-steps 200 --max-completion-length 512

The reward is :class:`CodeRewardFunction` (fraction of the task's asserts passed; ``--all-or-nothing`` for 1/0):
each completion's last fenced python block runs in an isolated, resource-limited process and the verdict is
decided outside it. Judge failures (the sandbox could not run) are reported, never scored as wrong answers.
Before and after training the script reports pass@1 (greedy) on held-out MBPP test tasks. Expect little on CPU:
a 135M model solves very few MBPP tasks, and each step generates code for every sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from posttrain_llm.online_rl_trainer import CodeRewardFunction, OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.names import SMOLLM2_ID
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli
from posttrain_llm.online_rl_trainer.examples.common import CPU_BF16_FLAG, accuracy_line, add_cpu_bf16_flag, load_code_dataset
from posttrain_llm.online_rl_trainer.examples.runs import (
    claimed_output_dir,
    interrupted_exit,
    with_default_dir_policy,
)

logger = logging.getLogger("train_code")
DEFAULT_MODEL = SMOLLM2_ID


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--trainer", choices=["grpo", "rloo", "ppo"], default="grpo")
    p.add_argument("--dataset", choices=["mbpp", "mbpp-sanitized"], default="mbpp")
    p.add_argument("--data-dir", default=None,
                   help="folder with mbpp/mbpp.jsonl (mbpp-sanitized: mbpp/sanitized-mbpp.json) in the upstream "
                        "format (default: $ONLINE_RL_DATA_DIR, else the Hugging Face Hub)")
    p.add_argument("--num-samples", type=int, default=32, help="training tasks (MBPP train split, tasks 601-974)")
    p.add_argument("--eval-samples", type=int, default=20, help="held-out MBPP test tasks for pass@1 (0: skip)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid data rows (counted, logged) instead of "
                                                               "stopping at the first")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None, help="completions per step (default 2 groups)")
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--max-completion-length", type=int, default=128)
    p.add_argument("--all-or-nothing", action="store_true", help="reward 1 only when every test passes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    add_cpu_bf16_flag(p, "off", "generation and the log-prob passes of training")
    p.add_argument("--config", default=None, help="a TrainerConfig YAML (flags above still apply)")
    add_debug_flag(p)
    p.add_argument("--output-dir", default=None, help="default ./outputs/online_rl_code, where a finished earlier "
                   "run is replaced")
    p.add_argument("--overwrite", action="store_true", help="start fresh in an --output-dir holding an earlier run")
    return p


DEFAULT_OUTPUT_DIR = "./outputs/online_rl_code"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    fields = dict(
        model_name_or_path=args.model, trainer_type=args.trainer, num_generations=args.num_generations,
        per_device_train_batch_size=args.batch_size or 2 * args.num_generations, max_steps=args.max_steps,
        learning_rate=args.learning_rate, max_completion_length=args.max_completion_length, seed=args.seed,
        use_gpu=args.use_gpu, bf16=args.bf16, torch_num_threads=args.threads,
        cpu_bf16_autocast=CPU_BF16_FLAG[args.cpu_bf16],
        output_dir=args.output_dir or DEFAULT_OUTPUT_DIR, kl_coef=0.0, save_steps=10_000,
        overwrite_output_dir=args.overwrite,
    )
    config = TrainerConfig.from_yaml(args.config, **fields) if args.config else TrainerConfig(**fields)
    config = with_default_dir_policy(config, default_dir=args.output_dir is None, resume=False)
    try:
        with claimed_output_dir(config, resume=False):  # lock + fresh-run check before the model loads
            return _run(args, config)
    except KeyboardInterrupt as exc:  # a signal during training (TrainingInterrupted) or a Ctrl-C outside it
        raise interrupted_exit(exc, "posttrain_llm.online_rl_trainer.examples.train_code", argv,
                               can_resume=False) from None


def _run(args: argparse.Namespace, config: TrainerConfig) -> dict[str, Any]:
    train, test = load_code_dataset(args.dataset, data_dir=args.data_dir, num_train=args.num_samples,
                                    num_test=args.eval_samples, seed=config.seed, skip_invalid=args.skip_invalid)
    reward = CodeRewardFunction(all_or_nothing=args.all_or_nothing)
    trainer = OnlineRLTrainer(config, reward, train, eval_data=test)
    summary: dict[str, Any] = {"config": config.to_dict(), "dataset": args.dataset}
    try:
        if test is not None:
            before = trainer.evaluate()
            logger.info("before RL: pass@1 %s", accuracy_line(before))
        start = time.perf_counter()
        trainer.train()
        summary["train_seconds"] = time.perf_counter() - start
        out = trainer.save_model(Path(config.output_dir) / "final")
        summary["model_dir"] = str(out)
        summary["judge_errors"] = sum(f.none_count for f in trainer.reward_funcs)
        if test is not None:
            after = trainer.evaluate()
            summary["before"] = {k: v for k, v in before.items() if k != "records"}
            summary["after"] = {k: v for k, v in after.items() if k != "records"}
        if trainer.is_main_process:  # the model card again: the data's name, the before/after evaluation
            trainer.write_model_card(out, dataset_name=args.dataset)
    finally:
        reward.close()
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "code_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n=== {config.trainer_type.upper()} on {args.dataset} with {args.model} ===")
    if test is not None:
        print(f"held-out pass@1 ({len(test)} MBPP test tasks, greedy):")
        print(f"  before RL: {accuracy_line(before)}")
        print(f"  after RL:  {accuracy_line(after)}")
    print(f"judge errors during training (not counted as wrong): {summary['judge_errors']}")
    print(f"model: {summary['model_dir']}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
