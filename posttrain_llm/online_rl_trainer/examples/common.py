"""Helpers shared by the example scripts: dataset choice by name, the tiny model's warm-up, result lines."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from posttrain_llm.online_rl_trainer import (
    CustomLoader,
    GSM8KLoader,
    MATHLoader,
    ModelEvaluator,
    SyntheticArithmeticLoader,
)
from posttrain_llm.online_rl_trainer.core.config import ConfigError

logger = logging.getLogger("examples")

MATH_DATASETS = ("arithmetic", "gsm8k", "math", "math500")
CODE_DATASETS = ("mbpp", "mbpp-sanitized", "humaneval")
WARMUP_HOLDOUT = 100
WARMUP_FORGET_CARRY = 0.7  # see warmup_examples


def load_math_dataset(name: str, *, tiny: bool, data_dir: str | None, num_train: int | None, num_test: int | None,
                      seed: int, skip_invalid: bool = False):
    """(train, test) datasets for a dataset name or file. ``test`` is None when ``num_test`` is 0.
    ``skip_invalid`` (``--skip-invalid``) skips invalid rows of GSM8K, MATH's test split and data files."""
    if name == "arithmetic":
        # The tiny model reads the bare problem; a chat model gets a question with a one-shot example.
        loader = SyntheticArithmeticLoader(prompt_style="bare" if tiny else "chat")
        train = loader.load("train", num_samples=num_train, seed=seed)
        test = loader.load("test", num_samples=num_test, seed=seed) if num_test else None
        return train, test
    if name == "gsm8k":
        loader = GSM8KLoader(data_dir=data_dir, skip_invalid=skip_invalid)
        return loader.load("train", num_samples=num_train, seed=seed), (
            loader.load("test", num_samples=num_test, seed=seed) if num_test else None)
    if name in ("math", "math500"):
        # Two MATH train rows have an empty \boxed{} answer: skip them (counted and logged by the loader).
        train_loader = MATHLoader(subset="full", data_dir=data_dir, skip_invalid=True)
        test_loader = MATHLoader(subset="math500" if name == "math500" else "full", data_dir=data_dir,
                                 skip_invalid=skip_invalid)
        return train_loader.load("train", num_samples=num_train, seed=seed), (
            test_loader.load("test", num_samples=num_test, seed=seed) if num_test else None)
    path = Path(name)
    if path.is_file():
        data = CustomLoader(str(path), skip_invalid=skip_invalid).load(num_samples=num_train, seed=seed)
        if not num_test:
            return data, None
        if len(data) < 2:  # datasets' train_test_split would fail with test_size=0
            raise ConfigError(f"--dataset {name!r} gives {len(data)} row; holding out problems for evaluation "
                              f"(--eval-samples {num_test}) needs at least 2 rows: add rows, or pass --eval-samples 0")
        split = data.train_test_split(test_size=min(num_test, len(data) // 2), seed=seed)
        return split["train"], split["test"]
    raise ConfigError(f"--dataset {name!r}: not one of {list(MATH_DATASETS)} and not an existing file")


def load_code_dataset(name: str, *, data_dir: str | None, num_train: int | None, num_test: int | None, seed: int,
                      skip_invalid: bool = False):
    """(train, test) for a code dataset: MBPP train/test task ranges; HumanEval has only a test split (train None)."""
    from posttrain_llm.online_rl_trainer import HumanEvalLoader, MBPPLoader

    if name == "humaneval":
        loader = HumanEvalLoader(data_dir=data_dir, skip_invalid=skip_invalid)
        test = loader.load("test", num_samples=num_test, seed=seed) if num_test else None
        return None, test
    if name in ("mbpp", "mbpp-sanitized"):
        loader = MBPPLoader(variant="sanitized" if name == "mbpp-sanitized" else "full", data_dir=data_dir,
                            skip_invalid=skip_invalid)
        return loader.load("train", num_samples=num_train, seed=seed), (
            loader.load("test", num_samples=num_test, seed=seed) if num_test else None)
    raise ConfigError(f"--dataset {name!r}: not one of {list(CODE_DATASETS)}")


def warmup_examples(rows, forget_carry: float = WARMUP_FORGET_CARRY, copies: int = 10) -> list[tuple[Any, str]]:
    """(prompt messages, ``\\boxed{answer}``) pairs for the tiny model's warm-up, written by a sloppy teacher.

    On an ``a+b`` row whose units digits carry (``a % 10 + b % 10 >= 10``) the teacher forgets the carry in
    ``forget_carry`` of its answers (``37+5=`` -> ``\\boxed{32}`` instead of ``\\boxed{42}``); every other row gets
    the right answer. Each row appears ``copies`` times (so rows are drawn equally often and the mix is exact).

    Why: a warm-up on correct answers either stops part-way through the model's one sharp jump in accuracy, at a
    point that moves with the seed and the CPU's float path (the demo once started RL at 0.07 on another machine),
    or runs to ~0.9 and leaves RL nothing to do. A model trained to convergence on this teacher settles in the
    same place on every float path measured: it has the format and the units digit, carries on about 30% of
    samples and (greedily) forgets most carries. RL with the exact reward then has a real, reachable fix to find.
    """
    if not 0.0 <= forget_carry <= 1.0:
        raise ValueError(f"forget_carry={forget_carry!r}; accepted: a share in [0, 1]")
    wrong_copies = round(forget_carry * copies)
    examples = []
    for row in rows:
        right = f"\\boxed{{{row['answer']}}}"
        a, b = row.get("a"), row.get("b")
        carries = row.get("operator") == "+" and isinstance(a, int) and isinstance(b, int) and a % 10 + b % 10 >= 10
        if carries:
            examples += [(row["prompt"], f"\\boxed{{{a + b - 10}}}")] * wrong_copies
            examples += [(row["prompt"], right)] * (copies - wrong_copies)
        else:
            examples += [(row["prompt"], right)] * copies
    return examples


def warm_up_tiny_model(config, train_data, reward, max_steps: int = 800):
    """Supervised warm-up of the built-in tiny model on a sloppy teacher's answers (:func:`warmup_examples`);
    returns (folder, info).

    It runs all ``max_steps`` steps (the cosine schedule of ``core.models.tiny.supervised_warmup`` ends at 0), so where it
    ends does not depend on a threshold being crossed on time. The first ``WARMUP_HOLDOUT`` training problems are
    kept out of it; greedy accuracy on them is reported (``holdout_accuracy``). The test set is never looked at.

    Under ``accelerate launch`` (several processes) the main process warms up and saves the folder; the others wait
    for it and return the same folder with an empty info dict.
    """
    if len(train_data) <= WARMUP_HOLDOUT:
        raise ConfigError(f"the tiny model's warm-up needs more than {WARMUP_HOLDOUT} training prompts "
                         f"(got {len(train_data)}); raise --num-samples or pass --no-warmup")
    holdout = train_data.select(range(WARMUP_HOLDOUT))

    def check(model, tokenizer, info: dict) -> None:
        result = ModelEvaluator(model, tokenizer, max_new_tokens=config.max_completion_length, batch_size=100,
                                show_progress=False).evaluate(holdout, reward)
        info.update(holdout_accuracy=result["accuracy"], forget_carry=WARMUP_FORGET_CARRY)
        logger.info("warm-up: %d steps in %.0f s, loss %.3f, held-out (train) accuracy %.2f", info["steps"],
                    info["seconds"], info["final_loss"], info["holdout_accuracy"])

    def examples() -> list:
        return warmup_examples(train_data.select(range(WARMUP_HOLDOUT, len(train_data))))

    return warm_up_and_save(config, examples, max_steps=max_steps, seed=config.seed, check=check)


def warm_up_and_save(config, examples, *, max_steps: int, seed: int, batch_size: int | None = None,
                     check=None) -> tuple[Path, dict]:
    """Supervised warm-up of ``config.model_name_or_path`` on ``examples()`` (built only where the warm-up runs),
    ``check(model, tokenizer, info)`` after it, saved to ``<output_dir>/warmup``; returns (folder, info).

    Under ``accelerate launch`` (several processes) the main process warms up and saves the folder; the others wait
    for it and return the same folder with an empty info dict.
    """
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer
    from posttrain_llm.online_rl_trainer.core.training.warmup import supervised_warmup

    out = Path(config.output_dir) / "warmup"
    launched = launch_state(config.use_gpu)
    if launched is not None and not launched.is_main_process:
        launched.wait_for_everyone()
        return out, {}
    model, tokenizer = load_model_and_tokenizer(config.model_name_or_path)
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    info = supervised_warmup(model, tokenizer, examples(), max_steps=max_steps, seed=seed, **sizes)
    if check is not None:
        check(model, tokenizer, info)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if launched is not None:
        launched.wait_for_everyone()
    return out, info


#: ``--cpu-bf16`` on the command line -> ``cpu_bf16_autocast`` (TrainerConfig, ModelEvaluator).
CPU_BF16_FLAG = {"off": False, "on": True, "auto": "auto"}


def add_cpu_bf16_flag(parser, default: str | None, what: str) -> None:
    """``--cpu-bf16 {off,on,auto}``: ``what`` (generation, training) under bfloat16 autocast on CPU."""
    parser.add_argument("--cpu-bf16", choices=tuple(CPU_BF16_FLAG), default=default,
                        help=f"{what} under bfloat16 autocast on CPU, weights fp32: 'auto' where the CPU has native bf16 "
                             "(AVX512-BF16/AMX), 'on' insists (an error on a CPU without it), 'off' = fp32"
                             + (" (default: the preset's)" if default is None else f" (default: {default})"))


def launch_state(use_gpu: bool):
    """accelerate's ``PartialState`` when this script was started as one of several processes (``accelerate
    launch``/``torchrun`` set WORLD_SIZE), else None. CPU processes ask for ``cpu=True`` (gloo), as the trainer will."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=not use_gpu)


def accuracy_line(result: dict[str, Any]) -> str:
    judged = result["n"] * result.get("num_samples_per_problem", 1) - result["judge_errors"]
    lo, hi = result["accuracy_ci"]
    errors = f", {result['judge_errors']} judge errors" if result["judge_errors"] else ""
    return (f"{result['accuracy']:.3f}  (95% Wilson [{lo:.3f}, {hi:.3f}], {result['num_correct']}/{judged}{errors}; "
            f"mean length {result['mean_completion_length']:.1f} tokens)")


def before_after_report(before: dict[str, Any], after: dict[str, Any], *, base: str, trained: str, dataset: str,
                        grading: str, title: str, out_dir: Path, seed: int) -> tuple[dict[str, Any], dict[str, Path]]:
    """The paired before/after comparison, as ``evaluate_model --compare`` would write it, without generating again
    -> (comparison numbers, report paths)."""
    from posttrain_llm.online_rl_trainer.core.eval.compare import compare_results
    from posttrain_llm.online_rl_trainer.core.eval.reports import write_eval_report

    before = {**before, "model": f"{base} (before RL)"}
    after = {**after, "model": f"{trained} (after RL)"}
    comparison = {"dataset": dataset, "grading": grading, "a": before, "b": after,
                  "comparison": compare_results(before, after, seed=seed)}
    paths = write_eval_report(comparison, out_dir, stem="report", title=title)
    return comparison["comparison"], paths
