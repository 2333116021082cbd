"""Train a model to reach for a calculator: multi-turn RL with a tool, held-out accuracy before and after.

The task (``SyntheticArithmeticLoader(difficulty=4)``): three-digit by three-digit multiplication, ``347*829=``,
which a small model almost never gets right by itself and nearly always gets right with the ``calculator`` tool
(exact arithmetic, ``core/agents/builtin_tools.py``). Every rollout is multi-turn: the model may write a tool call
and end its turn, the tool's result is appended (masked out of the loss), and the model goes on; the reward is the
strict math reward on its final answer.

With no arguments the built-in tiny model first gets a short supervised warm-up that *shows* the call format: a
teacher answers ``--tool-share`` of the training problems with a calculator call and the rest directly (the right
answer, which the tiny model cannot compute). Greedy, the warmed-up model answers directly and is wrong; RL has to
discover that the rollouts with a call are the ones that score::

    python -m posttrain_llm.online_rl_trainer.examples.train_tools                      # tiny model, GRPO
    python -m posttrain_llm.online_rl_trainer.examples.train_tools --trainer ppo
    python -m posttrain_llm.online_rl_trainer.examples.train_tools \\
        --model HuggingFaceTB/SmolLM2-135M-Instruct --max-steps 10                      # tools described in the prompt

Writes ``<output-dir>/tools_summary.json``, the trained model, and ``before_vs_after/report.md`` (accuracy, turns,
tool calls, tool errors, budget hits, transcripts).
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

from posttrain_llm.online_rl_trainer import MathRewardFunction, OnlineRLTrainer, SyntheticArithmeticLoader, TrainerConfig
from posttrain_llm.online_rl_trainer.core.agents import ParsedCall, ToolResult, calculator, render_call, render_observation
from posttrain_llm.online_rl_trainer.core.common.names import TINY_MODEL_NAME
from posttrain_llm.online_rl_trainer.core.eval.reports import verdict
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli
from posttrain_llm.online_rl_trainer.examples.common import (
    CPU_BF16_FLAG,
    accuracy_line,
    add_cpu_bf16_flag,
    before_after_report,
    warm_up_and_save,
)

logger = logging.getLogger("train_tools")
DEFAULT_OUTPUT_DIR = "./outputs/train_tools"
END = "<|im_end|>"


def teacher_examples(rows, tool_share: float, call_format: str) -> list[tuple[Any, Any]]:
    """Warm-up examples: in each block of 10 rows the first ``round(10 * tool_share)`` are answered with a calculator
    call, its result (environment text, not trained on) and the boxed answer; the others directly, boxed."""
    if not 0.0 <= tool_share <= 1.0:
        raise ValueError(f"--tool-share {tool_share}: a share in [0, 1]")
    examples = []
    for i, row in enumerate(rows):
        answer = f"\\boxed{{{row['answer']}}}"
        if i % 10 < round(tool_share * 10):
            call = render_call(ParsedCall("calculator", {"expression": f"{row['a']}*{row['b']}"}), call_format)
            result = render_observation([ToolResult("calculator", "ok", str(row["answer"]))], call_format)
            examples.append((row["prompt"], [(call + END, True), (result, False), (answer + END, True)]))
        else:
            examples.append((row["prompt"], answer))
    return examples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=TINY_MODEL_NAME)
    p.add_argument("--trainer", choices=["grpo", "rloo", "ppo"], default="grpo")
    p.add_argument("--num-samples", type=int, default=2000, help="training problems")
    p.add_argument("--eval-samples", type=int, default=200, help="held-out problems")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=800, help="the tiny model's warm-up steps")
    p.add_argument("--tool-share", type=float, default=0.3, help="share of warm-up answers that call the tool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    add_cpu_bf16_flag(p, "off", "generation and the log-prob passes of training")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    p.add_argument("--overwrite", action="store_true", help="start fresh in an --output-dir holding an earlier run")
    add_debug_flag(p)
    return p


def build_config(args: argparse.Namespace, tiny: bool) -> TrainerConfig:
    g = 1 if args.trainer == "ppo" else args.num_generations
    return TrainerConfig(
        model_name_or_path=args.model, trainer_type=args.trainer, num_generations=g,
        per_device_train_batch_size=g * args.prompts_per_step * (4 if args.trainer == "ppo" else 1),
        max_steps=args.max_steps or (40 if tiny else 10), learning_rate=args.learning_rate or (1e-4 if tiny else 2e-5),
        lr_scheduler_type="constant", kl_coef=0.0, temperature=1.0, max_completion_length=160 if tiny else 256,
        max_prompt_length=None, max_turns=args.max_turns, max_tool_calls=args.max_turns,
        tools_in_prompt=not tiny, seed=args.seed, torch_num_threads=args.threads or (1 if tiny else None),
        cpu_bf16_autocast=CPU_BF16_FLAG[args.cpu_bf16], output_dir=args.output_dir, save_steps=10_000,
        logging_steps=5, overwrite_output_dir=args.overwrite)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    tiny = args.model == TINY_MODEL_NAME
    config = build_config(args, tiny)
    if config.torch_num_threads:
        import torch

        torch.set_num_threads(config.torch_num_threads)
    loader = SyntheticArithmeticLoader(difficulty=4, seed=args.seed, num_train=args.num_samples,
                                       num_test=args.eval_samples, prompt_style="bare" if tiny else "chat")
    train, test = loader.load("train"), loader.load("test")
    summary: dict[str, Any] = {"config": config.to_dict(), "dataset": "multiplication 3x3 digits (difficulty 4)"}
    if tiny and args.warmup_steps > 0:
        config = config.replace(model_name_or_path=str(warm_up(config, train, args)), run_name="tools after warm-up")
        summary["warmup"] = {"steps": args.warmup_steps, "tool_share": args.tool_share}
    reward = MathRewardFunction()
    trainer = OnlineRLTrainer(config, reward, train, eval_data=test, tools=[calculator])
    before = trainer.evaluate()
    logger.info("before RL: %s; tool calls per problem %.2f", accuracy_line(before), before["agent"]["tool_calls_mean"])
    trainer.train()
    out_dir = trainer.save_model(Path(config.output_dir) / "final")
    after = trainer.evaluate()
    summary.update(before={k: v for k, v in before.items() if k != "records"},
                   after={k: v for k, v in after.items() if k != "records"},
                   accuracy_gain=after["accuracy"] - before["accuracy"], steps=trainer.summary.get("global_step"))
    summary["comparison"], paths = before_after_report(
        before, after, base=config.model_name_or_path, trained=str(out_dir), dataset=summary["dataset"],
        grading="greedy multi-turn rollouts with the calculator, strict \\boxed{} answer",
        title=f"Before vs after {config.trainer_type.upper()} with a calculator tool",
        out_dir=Path(config.output_dir) / "before_vs_after", seed=config.seed)
    summary["total_seconds"] = time.perf_counter() - start
    (Path(config.output_dir) / "tools_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n=== {config.trainer_type.upper()} with a calculator tool, {Path(args.model).name} ===")
    for label, r in (("before RL", before), ("after RL", after)):
        a = r["agent"]
        print(f"  {label}: {accuracy_line(r)}; tool calls/problem {a['tool_calls_mean']:.2f}, "
              f"turns {a['turns_mean']:.2f}, tool errors {a['tool_errors_total']:g}, malformed {a['malformed_calls_total']:g}")
    print(f"  paired (A = before RL, B = after RL): {verdict(summary['comparison'])}")
    print(f"report: {paths['markdown']}\ntotal {summary['total_seconds']:.0f} s")
    return summary


def warm_up(config: TrainerConfig, train, args: argparse.Namespace) -> Path:
    """The tiny model's warm-up on the teacher's examples (:func:`teacher_examples`); returns the saved folder."""
    def report(model, tokenizer, info: dict) -> None:
        logger.info("warm-up: %d steps in %.0f s, loss %.3f", info["steps"], info["seconds"], info["final_loss"])

    return warm_up_and_save(config, lambda: teacher_examples(train, args.tool_share, "chatml"),
                            max_steps=args.warmup_steps, seed=args.seed, batch_size=32, check=report)[0]


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
