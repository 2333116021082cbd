"""Scale-out: the accelerate configs in ``configs/accelerate``, 2-process training against 1 process, vLLM settings.

Two processes vs one (``slow``): for grpo, rloo and ppo, ``accelerate launch`` with ``cpu_2proc.yaml`` starts two
CPU processes (gloo) with ``per_device_train_batch_size`` B; the baseline is one plain process with 2B, same seed,
same data, two optimizer steps. What must agree, and why it can:

- the prompts of each step: TRL's sampler and our PPO draw one seeded permutation of the dataset and hand each
  process a contiguous slice, so the global batch is the same prompts in the same groups;
- the completions: TRL seeds every process differently and samples a batch from one random stream, so by default
  they differ between the runs. The worker replaces sampling with per-sample seeded sampling from the policy's own
  distribution (``distributed_worker.seeded_sampling``): the completions are then identical token for token and
  every later stage is the real code (log-probs, rewards, advantages, loss, gradient all-reduce, clipping, AdamW);
- everything logged (reward and its components, lengths, KL, entropy, losses, clip fractions, gradient norms,
  explained variance, evaluation accuracy) and the final weights then agree up to float32 rounding: the runs sum
  the same numbers in a different order (batched matmuls over B vs 2B rows, two partial gradients added by gloo).
  Measured: metrics to within 5e-6 relative, weight updates to within 3e-5 relative (norm of the difference of
  the two updates / norm of the update). Tolerances: metrics rtol 1e-4 + atol 1e-6, updates 1e-3 — two orders
  of magnitude above rounding, two below what a real fault gives (per-process advantage whitening in PPO, the
  behaviour before this test, differed by 31% in the update and 1% in the first step's policy loss).

Timing keys (``step_time``, ``timing/*``, ``train_runtime``, ...) are not compared. The same runs check that only the main process
evaluates and writes files (a ``sys.addaudithook`` in each process records its writes under the output folder).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from tests.builders import plus_one_rows

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs" / "accelerate"
WORKER = REPO / "tests" / "training" / "distributed_worker.py"
ACCELERATE = Path(sys.executable).with_name("accelerate")
ALGOS = ("grpo", "rloo", "ppo")
PER_PROCESS_BATCH = 8
MAX_COMPLETION = 16  # distributed_worker's max_completion_length
METRIC_RTOL, METRIC_ATOL = 1e-4, 1e-6
UPDATE_RTOL = 1e-3
TIMING_KEYS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")

# What each shipped config must make `accelerate launch` do: (launcher, processes, extra expectations).
EXPECTED_CONFIGS = {
    "cpu_2proc.yaml": ("multi_gpu", 2, {}),
    "ddp.yaml": ("multi_gpu", 8, {}),
    "deepspeed_zero2.yaml": ("deepspeed", 8, {"zero_stage": 2}),
    "deepspeed_zero3.yaml": ("deepspeed", 8, {"zero_stage": 3, "gather_16bit_on_save": True}),
    "fsdp.yaml": ("fsdp", 8, {"fsdp_version": 2}),
}


# ------------------------------------------------------------------------------------------ accelerate configs
def launch_args(path: Path):
    """What `accelerate launch --config_file path train.py` resolves to, through accelerate's own parser and checks.

    Raises on an unknown top-level key (accelerate's ClusterConfig) and on a key of ``deepspeed_config`` or
    ``fsdp_config`` that no launch argument reads (accelerate copies those silently, so a typo would be ignored).
    """
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    nested = [*config.deepspeed_config, *(k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config)]
    unknown = [k for k in nested if k not in known]
    if unknown:
        raise ValueError(f"{path.name}: keys no accelerate launch argument reads: {unknown}")
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    return args, defaults


def plugin_for(args, defaults):
    """Build the DeepSpeed or FSDP plugin the launched processes would build, from the launcher's environment."""
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            return DeepSpeedPlugin()
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        return FullyShardedDataParallelPlugin()


def test_the_documented_configs_are_shipped():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED_CONFIGS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIGS))
def test_config_is_accepted_by_accelerate_launch(name):
    launcher, processes, extra = EXPECTED_CONFIGS[name]
    args, defaults = launch_args(CONFIG_DIR / name)
    chosen = [k for k, flag in (("multi_gpu", args.multi_gpu), ("deepspeed", args.use_deepspeed),
                                ("fsdp", args.use_fsdp)) if flag]
    assert chosen == [launcher]
    assert args.num_processes == processes and args.num_machines == 1
    # Precision belongs to TrainerConfig.bf16; a config that forced it would override bf16=False for TRL only.
    assert args.mixed_precision == "no"
    if launcher == "multi_gpu":
        return
    plugin = plugin_for(args, defaults)
    if launcher == "deepspeed":
        assert plugin.zero_stage == extra["zero_stage"]
        zero = plugin.deepspeed_config["zero_optimization"]
        assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
        assert zero["stage3_gather_16bit_weights_on_model_save"] is extra.get("gather_16bit_on_save", False)
    else:
        from torch.distributed.fsdp import StateDictType

        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
        assert plugin.auto_wrap_policy is not None  # transformer-layer wrapping, not one flat unit


def test_config_checks_catch_typos_and_fsdp1_settings(tmp_path):
    """The checks above are not vacuous: each kind of mistake they look for is caught."""
    base = (CONFIG_DIR / "fsdp.yaml").read_text()
    cases = {
        "unknown top-level key": base + "num_procesess: 4\n",
        "nested typo": base.replace("fsdp_offload_params:", "fsdp_offload_param:"),
        "FSDP1 sharding name under fsdp_version 2": base.replace("fsdp_reshard_after_forward: true",
                                                                 "fsdp_reshard_after_forward: FULL_SHARD"),
    }
    for what, text in cases.items():
        assert text != base, what
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ValueError):
            args, defaults = launch_args(path)
            plugin_for(args, defaults)
            pytest.fail(f"not caught: {what}")


@pytest.mark.parametrize("kind", ["DEEPSPEED", "FSDP"])
def test_ppo_refuses_a_sharded_launch(kind, tmp_path, tiny_model_dir, monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from posttrain_llm.online_rl_trainer import ConfigError, OnlineRLTrainer, TrainerConfig
    from posttrain_llm.online_rl_trainer.core.backends.ppo import components

    launched = SimpleNamespace(distributed_type=DistributedType[kind], num_processes=2, is_main_process=True)
    monkeypatch.setattr(components, "make_accelerator", lambda cfg: launched)
    config = TrainerConfig(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), num_generations=1,
                           per_device_train_batch_size=2, output_dir=str(tmp_path))
    rows = plus_one_rows(4)
    with pytest.raises(ConfigError, match=f"data-parallel only .* launched with {kind}"):
        OnlineRLTrainer(config, lambda completions, **kw: [0.0] * len(completions), rows)


# ------------------------------------------------------------------ pooled statistics (PPO's cross-process math)
class ThreadAllReduce:
    """An all-reduce (sum) between threads standing in for processes, for the pure pooled-statistics functions."""

    def __init__(self, n: int) -> None:
        import threading

        self.barrier, self.slots = threading.Barrier(n), [None] * n

    def for_rank(self, rank: int):
        def all_reduce_sum(t):
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = sum(self.slots)
            self.barrier.wait()
            return total

        return all_reduce_sum


def _in_two_threads(fn, parts):
    from concurrent.futures import ThreadPoolExecutor

    reduce = ThreadAllReduce(len(parts))
    with ThreadPoolExecutor(len(parts)) as pool:
        return list(pool.map(lambda r: fn(*parts[r], reduce.for_rank(r)), range(len(parts))))


def _whiten_whole_batch(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference: whitening with the mean and unbiased variance of every real entry of the batch at once."""
    real = x[mask].double()
    out = (x.double() - real.mean()) / torch.sqrt(real.var(unbiased=True) + 1e-8)
    return torch.where(mask, out, torch.zeros_like(out)).to(x.dtype)


def test_pooled_whitening_over_two_processes_equals_whitening_the_whole_batch():
    from posttrain_llm.online_rl_trainer.core.algorithms import masked_whiten_pooled

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, generator=gen) * 3 + 1
    mask = torch.rand(5, 6, generator=gen) > 0.3
    mask[4] = False  # a completion without a decided reward
    whole = _whiten_whole_batch(x, mask)
    halves = _in_two_threads(masked_whiten_pooled, [(x[:2], mask[:2]), (x[2:], mask[2:])])
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-5, atol=1e-6)
    per_process = torch.cat([_whiten_whole_batch(x[:2], mask[:2]), _whiten_whole_batch(x[2:], mask[2:])])
    assert not torch.allclose(per_process, whole, atol=1e-3)  # what PPO computed before: not the same thing
    torch.testing.assert_close(masked_whiten_pooled(x, mask), whole, rtol=1e-5, atol=1e-6)  # one process
    # a process without a single valid token still joins, and gets zeros
    empty = _in_two_threads(masked_whiten_pooled, [(x[:2], mask[:2]), (x[2:], torch.zeros_like(mask[2:]))])
    torch.testing.assert_close(empty[0], _whiten_whole_batch(x[:2], mask[:2]), rtol=1e-5, atol=1e-6)
    assert not empty[1].any()


def test_pooled_explained_variance_over_two_processes_equals_the_whole_batch():
    from posttrain_llm.online_rl_trainer.core.algorithms import explained_variance_pooled

    gen = torch.Generator().manual_seed(1)
    returns = torch.randn(6, 4, generator=gen)
    values = returns + 0.5 * torch.randn(6, 4, generator=gen)
    mask = torch.rand(6, 4, generator=gen) > 0.2
    residual, real_returns = (returns - values)[mask].double(), returns[mask].double()
    whole = float(1 - residual.var(unbiased=False) / real_returns.var(unbiased=False))
    parts = [(values[:1], returns[:1], mask[:1]), (values[1:], returns[1:], mask[1:])]
    assert _in_two_threads(explained_variance_pooled, parts) == pytest.approx([whole, whole], rel=1e-6)
    assert explained_variance_pooled(values, returns, mask) == pytest.approx(whole, rel=1e-6)  # one process
    assert math.isnan(explained_variance_pooled(values, torch.full_like(returns, 2.0), mask))


def test_ppo_gradient_accumulation_does_not_change_the_update(tmp_path, tiny_model_dir):
    """One process, minibatch of 8 completions as 1 micro-batch or as 2: the same losses, statistics and weights
    (token means over the whole minibatch, not means of per-micro-batch means)."""
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer, SyntheticArithmeticLoader, TrainerConfig

    from .distributed_worker import digit_share

    rows = SyntheticArithmeticLoader(num_train=64, num_test=8).load("train", seed=0)
    runs = {}
    for accumulation in (1, 2):
        config = TrainerConfig(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), seed=0, max_steps=2,
                               learning_rate=3e-4, kl_coef=0.05, max_completion_length=MAX_COMPLETION,
                               num_generations=2, per_device_train_batch_size=8, ppo_epochs=2, num_mini_batches=1,
                               gradient_accumulation_steps=accumulation, save_steps=1000, torch_num_threads=1,
                               output_dir=str(tmp_path / f"ga{accumulation}"))
        trainer = OnlineRLTrainer(config, digit_share, rows)
        start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        runs[accumulation] = (_rows(trainer.metrics_history, "train"), trainer.model.state_dict())
    (one, w_one), (two, w_two) = runs[1], runs[2]
    assert any(row["completions/mean_length"] < MAX_COMPLETION for row in one.values())
    for step in (1, 2):
        _assert_metrics_close(one[step], two[step], f"ppo step {step}, 1 vs 2 micro-batches")
    _assert_same_update(start, w_one, w_two, "ppo policy, 1 vs 2 micro-batches")


# ------------------------------------------------------------------------------- 2 processes against 1 process
@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """``runs(algo)`` -> {"one": reports, "two": reports}; each run happens once per module."""
    cache: dict[tuple[str, tuple[str, ...]], dict] = {}

    def get(algo: str, *flags: str) -> dict:
        if (algo, flags) not in cache:
            root = tmp_path_factory.mktemp(f"dist-{algo}{''.join(flags)}")
            # Both at once: the one-process run uses one core of the two, the launch's processes fill the other.
            started = {"one": _start(algo, tiny_model_dir, root / "one", 1, flags),
                       "two": _start(algo, tiny_model_dir, root / "two", 2, flags)}
            cache[algo, flags] = {name: _collect(*run) for name, run in started.items()}
        return cache[algo, flags]

    return get


def _start(algo: str, model_dir: Path, root: Path, processes: int, flags: tuple[str, ...] = ()) -> tuple:
    worker_args = [str(WORKER), "--algo", algo, "--model", str(model_dir), "--output-dir", str(root / "out"),
                   "--report-dir", str(root / "report"), "--batch", str(PER_PROCESS_BATCH * (3 - processes)),
                   "--seeded-sampling", *flags]
    if processes == 1:
        cmd = [sys.executable, *worker_args]
    else:
        cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIG_DIR / "cpu_2proc.yaml"), *worker_args]
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "log.txt").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # its own group: killed whole
    log.close()  # the child holds its own copy
    return proc, cmd, root, processes


def _collect(proc: subprocess.Popen, cmd: list[str], root: Path, processes: int) -> dict:
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:  # timed out (or the test was interrupted): the launcher and its workers go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (root / "log.txt").read_text()
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-8000:]}"
    reports = {}
    for rank in range(processes):
        data = json.loads((root / "report" / f"rank{rank}.json").read_text())
        data["weights"] = torch.load(root / "report" / f"rank{rank}_weights.pt")
        reports[rank] = data
    return {"root": root, "out": root / "out", "reports": reports}


def _rows(history, kind: str) -> dict[int, dict]:
    """Training rows ('reward' logged), evaluation rows ('eval/accuracy') or the final summary, by step."""
    key = {"train": "reward", "eval": "eval/accuracy", "summary": "train_runtime"}[kind]
    return {row["step"]: row for row in history if key in row}


def _assert_metrics_close(one: dict, two: dict, where: str) -> None:
    assert sorted(one) == sorted(two), f"{where}: different metrics logged: {sorted(set(one) ^ set(two))}"
    for key, a in one.items():
        b = two[key]
        if key in TIMING_KEYS or key.startswith(("timing/", "agent/tool_time_s")) or not isinstance(a, (int, float)) \
                or isinstance(a, bool):
            continue
        if isinstance(a, float) and math.isnan(a):
            assert isinstance(b, float) and math.isnan(b), f"{where} {key}: nan vs {b}"
            continue
        assert abs(a - b) <= METRIC_ATOL + METRIC_RTOL * abs(a), f"{where} {key}: 1 process {a!r}, 2 processes {b!r}"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_two_processes_train_like_one_process_with_the_same_global_batch(algo, runs, tiny_model_dir):
    result = runs(algo)
    one, two = result["one"]["reports"][0], result["two"]["reports"]
    assert [two[r]["world_size"] for r in (0, 1)] == [2, 2] and one["world_size"] == 1
    train_one, train_two = _rows(one["history"], "train"), _rows(two[0]["history"], "train")
    assert sorted(train_one) == sorted(train_two) == [1, 2]
    # Completions of different lengths, so token-weighted means (PPO, TRL's losses) are really exercised.
    assert any(row["completions/mean_length"] < MAX_COMPLETION for row in train_one.values())
    for step in (1, 2):
        _assert_metrics_close(train_one[step], train_two[step], f"{algo} step {step}")
    _assert_metrics_close(_rows(one["history"], "summary")[2], _rows(two[0]["history"], "summary")[2], f"{algo} summary")
    eval_one, eval_two = _rows(one["history"], "eval"), _rows(two[0]["history"], "eval")
    assert sorted(eval_one) == sorted(eval_two) == [0, 1, 2]
    for step in eval_one:
        _assert_metrics_close(eval_one[step], eval_two[step], f"{algo} eval at step {step}")

    from safetensors.torch import load_file

    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    _assert_same_update(start, one["weights"]["policy"], two[0]["weights"]["policy"], f"{algo} policy")
    if algo == "ppo":
        w_one, w_two = one["weights"], two[0]["weights"]
        assert all(torch.equal(w_one["critic_start"][k], w_two["critic_start"][k]) for k in w_one["critic_start"])
        _assert_same_update(w_one["critic_start"], w_one["critic"], w_two["critic"], "ppo critic")


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_two_processes_train_multi_turn_rollouts_like_one_process(algo, runs, tiny_model_dir):
    """Issue 13: with an environment (tool results inside the completions, masked out of the loss) a 2-process run
    still trains like one process with the same global batch, and the replicas stay identical."""
    result = runs(algo, "--tools")
    one, two = result["one"]["reports"][0], result["two"]["reports"]
    train_one, train_two = _rows(one["history"], "train"), _rows(two[0]["history"], "train")
    assert sorted(train_one) == sorted(train_two) == [1, 2]
    for step in (1, 2):
        assert train_one[step]["agent/tool_calls_total"] > 0 and train_one[step]["agent/env_tokens_total"] > 0
        _assert_metrics_close(train_one[step], train_two[step], f"{algo} with tools, step {step}")
    from safetensors.torch import load_file

    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    _assert_same_update(start, one["weights"]["policy"], two[0]["weights"]["policy"], f"{algo} policy with tools")
    rank0, rank1 = two[0]["weights"]["policy"], two[1]["weights"]["policy"]
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the processes' policies differ"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_two_processes_draw_and_train_like_one_process_with_the_curriculum(algo, runs, tiny_model_dir):
    """Issue 14: the curriculum's global draw and its record (from every process's rewards) make a 2-process run
    draw the same prompts and train like one process."""
    result = runs(algo, "--curriculum")
    one, two = result["one"]["reports"][0], result["two"]["reports"]
    train_one, train_two = _rows(one["history"], "train"), _rows(two[0]["history"], "train")
    assert sorted(train_one) == sorted(train_two) == [1, 2]
    assert train_one[2]["curriculum/seen_share"] > train_one[1]["curriculum/seen_share"] > 0
    for step in (1, 2):
        _assert_metrics_close(train_one[step], train_two[step], f"{algo} with the curriculum, step {step}")
    from safetensors.torch import load_file

    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    _assert_same_update(start, one["weights"]["policy"], two[0]["weights"]["policy"], f"{algo} with the curriculum")


def _assert_same_update(start: dict, one: dict, two: dict, what: str) -> None:
    """The two runs moved the weights the same way: |w_one - w_two| <= UPDATE_RTOL * |w_one - w_start| (L2 over all)."""
    update = sum(float(((one[k] - start[k]).double() ** 2).sum()) for k in start) ** 0.5
    gap = sum(float(((one[k] - two[k]).double() ** 2).sum()) for k in start) ** 0.5
    assert update > 1e-2, f"{what}: two steps hardly moved the weights ({update:.2e}); the comparison would be vacuous"
    assert gap <= UPDATE_RTOL * update, f"{what}: the runs differ by {gap:.3e}, {gap / update:.2%} of the update"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_replicas_stay_identical_and_the_saved_model_is_the_trained_one(algo, runs):
    result = runs(algo)["two"]
    rank0, rank1 = result["reports"][0]["weights"], result["reports"][1]["weights"]
    for part in rank0:
        assert all(torch.equal(rank0[part][k], rank1[part][k]) for k in rank0[part]), f"the processes' {part} differ"
    rank0 = rank0["policy"]
    from safetensors.torch import load_file

    saved = load_file(str(result["out"] / "final" / "model.safetensors"))
    assert saved and all(torch.equal(saved[k], rank0[k]) for k in saved)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_only_the_main_process_evaluates_and_writes(algo, runs):
    result = runs(algo)["two"]
    main, other = result["reports"][0], result["reports"][1]
    # before training + after each of the 2 steps (eval_steps=1), on rank 0 only; rank 1 received the results
    assert main["evaluations"] == 3 and other["evaluations"] == 0
    evaluated = {step: {k: v for k, v in row.items() if k.startswith("eval/")}
                 for step, row in _rows(main["history"], "eval").items()}
    received = {step: {k: v for k, v in row.items() if k.startswith("eval/")}
                for step, row in _rows(other["history"], "eval").items()}
    assert sorted(evaluated) == [0, 1, 2] and received == evaluated
    out = result["out"]
    main_writes = {path for event, path in main["writes"] if event == "open"}
    for name in ("training_metrics.json", "reward_curve.png"):
        assert (out / name).is_file() and (out / "final" / name).is_file()
    assert any(p.endswith("reward_curve.png") for p in main_writes), "the audit hook saw none of rank 0's writes"
    assert (out / "final" / "online_rl_config.yaml").is_file()
    # Rank 1 may create folders (idempotent) and prove the folder writable with a uniquely named probe file; it
    # must write, rename or delete nothing else: no report, no model file, no staging folder content.
    stray = [(event, path) for event, path in other["writes"]
             if event != "os.mkdir" and not Path(path).name.startswith(".write-test-") and not Path(path).is_dir()]
    assert stray == [], f"rank 1 wrote under the output folder: {stray}"
    history = json.loads((out / "training_metrics.json").read_text())["history"]
    assert len(_rows(history, "train")) == 2 and len(_rows(history, "eval")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_train_math_runs_under_accelerate_launch(algo, tmp_path):
    """The example entry point as 2 CPU processes: trains, evaluates, saves; one report, printed once."""
    out = tmp_path / "run"
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIG_DIR / "cpu_2proc.yaml"),
           "-m", "posttrain_llm.online_rl_trainer.examples.train_math", "--trainer", algo, "--no-warmup",
           "--max-steps", "2", "--num-samples", "64", "--eval-samples", "8", "--num-generations", "2",
           "--batch-size", "8", "--max-completion-length", "8", "--output-dir", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.stdout.count(f"=== {algo.upper()} on arithmetic") == 1  # the main process reports, once
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["trainer_type"] == algo
    assert (out / "final" / "model.safetensors").is_file() and (out / "before_vs_after" / "report.md").is_file()


# ------------------------------------------------------------------------------------------------------ vLLM
def _gpu_config(**kw):
    """A TrainerConfig with use_gpu=True (values only: it builds whether or not this machine has CUDA and vLLM)."""
    from posttrain_llm.online_rl_trainer import TrainerConfig

    return TrainerConfig(use_gpu=True, **kw)


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_vllm_colocate_settings_reach_trl(algo):
    from posttrain_llm.online_rl_trainer.core.trl_arguments import to_trl_args

    config = _gpu_config(trainer_type=algo, use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.45,
                         trl_kwargs={"vllm_tensor_parallel_size": 1, "vllm_enable_sleep_mode": True})
    args = to_trl_args(config, [1.0])
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (True, "colocate", 0.45)
    assert args.vllm_tensor_parallel_size == 1 and args.vllm_enable_sleep_mode is True
    assert args.use_cpu is False


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_vllm_server_settings_reach_trl(algo):
    from posttrain_llm.online_rl_trainer.core.trl_arguments import to_trl_args

    config = _gpu_config(trainer_type=algo, use_vllm=True, vllm_mode="server",
                         trl_kwargs={"vllm_server_host": "10.0.0.7", "vllm_server_port": 8123,
                                     "vllm_server_timeout": 600.0})
    args = to_trl_args(config, [1.0])
    assert (args.use_vllm, args.vllm_mode) == (True, "server")
    assert (args.vllm_server_host, args.vllm_server_port, args.vllm_server_timeout) == ("10.0.0.7", 8123, 600.0)


def test_vllm_settings_that_cannot_work_are_rejected_with_the_reason():
    from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig

    with pytest.raises(ConfigError, match="use_vllm=True needs use_gpu=True"):
        TrainerConfig(use_vllm=True)
    with pytest.raises(ConfigError, match="not 'ppo'"):
        _gpu_config(trainer_type="ppo", num_generations=1, use_vllm=True)
    with pytest.raises(ConfigError, match="vllm_mode='remote' is not supported; accepted values: colocate, server"):
        TrainerConfig(vllm_mode="remote")
    with pytest.raises(ConfigError, match="'vllm_server_prot' is not an argument of TRL's GRPOConfig"):
        TrainerConfig(trl_kwargs={"vllm_server_prot": 8000})
    from posttrain_llm.online_rl_trainer.core.common.machine import Machine, check_machine

    gpu_without_vllm = Machine(cuda=True, cuda_bf16=True)
    with pytest.raises(ConfigError, match="use_vllm=True but vLLM is not installed here \\(vllm_mode='server' needs"):
        check_machine(_gpu_config(use_vllm=True, vllm_mode="server"), gpu_without_vllm)
    check_machine(_gpu_config(use_vllm=False), gpu_without_vllm)  # without use_vllm, vLLM is not needed
    check_machine(_gpu_config(use_vllm=True), Machine(cuda=True, vllm=True))


def _vllm_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (vLLM generates on GPU only)"
    if importlib.util.find_spec("vllm") is None:
        return "needs vLLM installed (pip install 'trl[vllm]'; TRL 1.16 supports vLLM 0.22-0.31)"
    return None


@pytest.mark.skipif(_vllm_skip_reason() is not None, reason=str(_vllm_skip_reason()))
def test_one_grpo_step_with_vllm_colocate(tmp_path, tiny_model_dir):
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig

    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), use_gpu=True, use_vllm=True, vllm_mode="colocate",
                           vllm_gpu_memory_utilization=0.2, max_steps=1, num_generations=4,
                           per_device_train_batch_size=8, max_completion_length=8, kl_coef=0.0, learning_rate=1e-3,
                           output_dir=str(tmp_path / "out"), save_steps=1000,
                           trl_kwargs={"vllm_max_model_length": 128})
    rows = plus_one_rows(16)
    trainer = OnlineRLTrainer(config, lambda completions, **kw: [float(len(c[0]["content"])) for c in completions], rows)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logged = [h for h in trainer.metrics_history if "reward" in h]
    assert len(logged) == 1 and logged[0]["completions/mean_length"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
