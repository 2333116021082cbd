"""Train a model on math with online RL (GRPO, RLOO or PPO), then report held-out accuracy before and after.

With no arguments this is the offline demo: the built-in ~1M-parameter character-level Llama learns ``a+b`` on
CPU in a few minutes. It first gets a supervised warm-up on a sloppy teacher's answers: the format ``\\boxed{n}``
and the units digit, but most carries forgotten (``37+5=`` -> ``\\boxed{32}``), so RL starts from a policy that
sometimes succeeds and has a real mistake to fix. Then RL with the exact, strict math reward, then the same held-out
evaluation::

    python -m posttrain_llm.online_rl_trainer.examples.train_math                      # offline demo (GRPO)
    python -m posttrain_llm.online_rl_trainer.examples.train_math --trainer rloo       # same with RLOO
    python -m posttrain_llm.online_rl_trainer.examples.train_math \\
        --model HuggingFaceTB/SmolLM2-135M-Instruct --num-samples 64 --max-steps 10    # real model, offline copy
    python -m posttrain_llm.online_rl_trainer.examples.train_math \\
        --model Qwen/Qwen2.5-0.5B-Instruct --dataset gsm8k --preset gsm8k-0.5b-gpu --use-gpu
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml \\
        -m posttrain_llm.online_rl_trainer.examples.train_math --trainer ppo          # 2 CPU processes (gloo)

Under ``accelerate launch`` the main process alone warms up, evaluates, writes and prints; the others train.

Everything goes through the public API (loader -> OnlineRLTrainer -> MathRewardFunction -> ModelEvaluator);
this file only wires flags to it. Writes ``<output-dir>/demo_summary.json``, the trained model, and
``reward_curve.png`` (reward and held-out accuracy over steps).
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
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from posttrain_llm.online_rl_trainer import (
    MathRewardFunction,
    OnlineRLTrainer,
    TrainerConfig,
)
from posttrain_llm.online_rl_trainer.core.common.names import SMOLLM2_ID, TINY_MODEL_NAME
from posttrain_llm.online_rl_trainer.core.config import ConfigError
from posttrain_llm.online_rl_trainer.core.eval.reports import verdict
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli
from posttrain_llm.online_rl_trainer.examples.common import (
    CPU_BF16_FLAG,
    accuracy_line,
    add_cpu_bf16_flag,
    before_after_report,
    load_math_dataset,
    warm_up_tiny_model,
)
from posttrain_llm.online_rl_trainer.examples.runs import (
    claimed_output_dir,
    interrupted_exit,
    with_default_dir_policy,
)

logger = logging.getLogger("train_math")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    # What to train
    p.add_argument("--model", default=None, help=f"folder, Hub id, or {TINY_MODEL_NAME} (default: the preset's)")
    p.add_argument("--trainer", choices=["grpo", "rloo", "ppo"], default=None, help="algorithm (default: the preset's)")
    p.add_argument("--preset", default=None, help="a TrainerConfig preset (default: offline-demo for the tiny model, "
                                                   "smollm2-cpu for SmolLM2, else none)")
    p.add_argument("--config", default=None, help="a TrainerConfig YAML file (flags override it)")
    # Data
    p.add_argument("--dataset", default="arithmetic",
                   help="arithmetic | gsm8k | math | math500 | a .jsonl/.json/.csv/.parquet file with prompt/answer")
    p.add_argument("--data-dir", default=None,
                   help="folder with gsm8k/{train,test}.jsonl and math/{train,test,math500_test}.jsonl in their "
                        "upstream formats (default: $ONLINE_RL_DATA_DIR, else the Hugging Face Hub); not used by "
                        "arithmetic or a file")
    p.add_argument("--num-samples", type=int, default=None, help="training prompts (default: all of the split)")
    p.add_argument("--eval-samples", type=int, default=300, help="held-out problems for before/after accuracy (0: skip)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid data rows (counted, logged) instead of "
                                                               "stopping at the first")
    # Optimisation / generation
    p.add_argument("--num-generations", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="completions per device step (whole groups)")
    p.add_argument("--max-completion-length", type=int, default=None)
    p.add_argument("--eval-steps", type=int, default=None, help="held-out accuracy every N steps (default: 4 points per run)")
    p.add_argument("--dynamic-sampling", action="store_true",
                   help="GRPO/RLOO: drop groups whose rewards are all equal and refill the batch (DAPO)")
    p.add_argument("--max-sampling-rounds", type=int, default=None,
                   help="with --dynamic-sampling: generation rounds per batch at most (default 4)")
    p.add_argument("--seed", type=int, default=None)
    # Hardware
    p.add_argument("--use-gpu", action="store_true", help="train on CUDA (default: CPU)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_cpu_bf16_flag(p, None, "generation and the log-prob passes of training (held-out evaluation stays fp32)")
    # Output
    p.add_argument("--output-dir", default=None)
    p.add_argument("--no-warmup", action="store_true", help="skip the tiny model's supervised warm-up")
    p.add_argument("--warmup-steps", type=int, default=800,
                   help="the tiny model's warm-up: optimizer steps (the length of its cosine schedule)")
    add_debug_flag(p)
    p.add_argument("--save-steps", type=int, default=None, help="write a checkpoint every N steps")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest complete checkpoint in --output-dir (an error if there is none)")
    p.add_argument("--resume-mismatch-ok", action="store_true",
                   help="resume even if the checkpoint was written with other settings or data (logged)")
    p.add_argument("--overwrite", action="store_true",
                   help="start fresh in an --output-dir holding an earlier run, deleting its checkpoints")
    return p


def _preset_for(model: str | None, trainer: str | None) -> str | None:
    if model in (None, TINY_MODEL_NAME):
        return "offline-demo-ppo" if trainer == "ppo" else "offline-demo"
    if model == SMOLLM2_ID:
        return "smollm2-cpu"
    return None


def build_config(args: argparse.Namespace) -> TrainerConfig:
    overrides: dict[str, Any] = {}
    flag_map = {
        "model": "model_name_or_path", "trainer": "trainer_type", "num_generations": "num_generations",
        "max_steps": "max_steps", "learning_rate": "learning_rate", "batch_size": "per_device_train_batch_size",
        "max_completion_length": "max_completion_length", "eval_steps": "eval_steps", "seed": "seed",
        "output_dir": "output_dir", "threads": "torch_num_threads", "save_steps": "save_steps",
        "max_sampling_rounds": "max_sampling_rounds",
    }
    for flag, field_name in flag_map.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field_name] = value
    if args.use_gpu:
        overrides["use_gpu"] = True
    if args.bf16:
        overrides["bf16"] = True
    if args.dynamic_sampling:
        overrides["dynamic_sampling"] = True
    if args.cpu_bf16 is not None:
        overrides["cpu_bf16_autocast"] = CPU_BF16_FLAG[args.cpu_bf16]
    if args.overwrite:
        overrides["overwrite_output_dir"] = True
    if "num_generations" in overrides and "per_device_train_batch_size" not in overrides:
        overrides["per_device_train_batch_size"] = overrides["num_generations"] * 2
    if args.trainer == "ppo" and "num_generations" not in overrides and not args.preset and not args.config:
        overrides["num_generations"] = 1  # PPO's usual setting; its baseline is the critic, not the group
    if args.config:
        return TrainerConfig.from_yaml(args.config, **overrides)
    preset = args.preset or _preset_for(args.model, args.trainer)
    if preset:
        return TrainerConfig.from_preset(preset, **overrides)
    if args.model is None:
        raise ConfigError("give --model, --preset or --config")
    return TrainerConfig(**overrides)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet = int(os.environ.get("RANK", "0")) > 0  # under accelerate launch, only the main process narrates
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    config = build_config(args)
    # The preset's folder (no --output-dir, no --config): a finished run there is replaced (`make demo` twice).
    config = with_default_dir_policy(config, default_dir=args.output_dir is None and args.config is None,
                                     resume=args.resume)
    try:
        with claimed_output_dir(config, resume=args.resume):  # lock + fresh-run check before the warm-up
            return _run(args, config)
    except KeyboardInterrupt as exc:  # TrainingInterrupted (a signal during training) or a Ctrl-C outside it
        raise interrupted_exit(exc, "posttrain_llm.online_rl_trainer.examples.train_math", argv) from None


def _run(args: argparse.Namespace, config: TrainerConfig) -> dict[str, Any]:
    start = time.perf_counter()
    if config.torch_num_threads:  # before the warm-up too, not only inside the trainer
        import torch

        torch.set_num_threads(config.torch_num_threads)
    model_label = Path(config.model_name_or_path).name
    tiny = config.model_name_or_path == TINY_MODEL_NAME
    train_data, test_data = load_math_dataset(args.dataset, tiny=tiny, data_dir=args.data_dir,
                                              num_train=args.num_samples, num_test=args.eval_samples, seed=config.seed,
                                              skip_invalid=args.skip_invalid)
    logger.info("data: %d training prompts, %d held-out problems (%s)", len(train_data),
                len(test_data) if test_data is not None else 0, args.dataset)
    reward = MathRewardFunction()
    summary: dict[str, Any] = {"config": config.to_dict(), "dataset": args.dataset}

    if tiny and not args.no_warmup:
        warm_dir, warm_info = warm_up_tiny_model(config, train_data, reward, max_steps=args.warmup_steps)
        config = config.replace(model_name_or_path=str(warm_dir),
                                run_name=config.run_name or f"{config.trainer_type.upper()} on {model_label} (after warm-up)")
        summary["warmup"] = warm_info

    if test_data is not None and config.eval_steps is None and config.max_steps > 0:
        config = config.replace(eval_steps=max(1, config.max_steps // 4))
    trainer = OnlineRLTrainer(config, reward, train_data, eval_data=test_data)
    if test_data is not None:
        before = trainer.evaluate()
        logger.info("before RL: %s", accuracy_line(before))
    train_start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if args.resume else None, resume_mismatch_ok=args.resume_mismatch_ok)
    train_seconds = time.perf_counter() - train_start
    out_dir = trainer.save_model(Path(config.output_dir) / "final")
    summary.update(train_seconds=train_seconds, steps=trainer.summary.get("global_step"), model_dir=str(out_dir))
    after = trainer.evaluate() if test_data is not None else None  # every process: evaluation is collective
    if not trainer.is_main_process:  # under accelerate launch, the main process writes the report and prints
        return summary
    if test_data is not None:
        summary["before"] = {k: v for k, v in before.items() if k != "records"}
        summary["after"] = {k: v for k, v in after.items() if k != "records"}
        summary["accuracy_gain"] = after["accuracy"] - before["accuracy"]
        summary["comparison"], report_paths = before_after_report(
            before, after, base=config.model_name_or_path, trained=str(out_dir), dataset=args.dataset,
            grading="greedy, strict \\boxed{} headline", title=f"Before vs after {config.trainer_type.upper()} on {args.dataset}",
            out_dir=Path(config.output_dir) / "before_vs_after", seed=config.seed)
    summary["total_seconds"] = time.perf_counter() - start
    summary_path = Path(config.output_dir) / "demo_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    # The model card again, with what only this script knows: the data's name, the warm-up, the paired comparison.
    trainer.write_model_card(out_dir, dataset_name=args.dataset, base_model=summary["config"]["model_name_or_path"],
                             warmup=summary.get("warmup"), comparison=summary.get("comparison"))

    print()
    print(f"=== {config.trainer_type.upper()} on {args.dataset} with {model_label} ===")
    if test_data is not None:
        print(f"held-out accuracy ({len(test_data)} problems, greedy, strict \\boxed{{}} answer):")
        print(f"  before RL: {accuracy_line(before)}")
        print(f"  after RL:  {accuracy_line(after)}")
        print(f"  change:    {summary['accuracy_gain']:+.3f}")
        print(f"  paired (A = before RL, B = after RL): {verdict(summary['comparison'])}")
        print(f"report: {report_paths['markdown']}")
    print(f"RL steps: {summary['steps']} in {train_seconds:.0f} s; total {summary['total_seconds']:.0f} s")
    print(f"model: {out_dir}")
    print(f"curves: {out_dir / 'reward_curve.png'}")
    print(f"summary: {summary_path}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
