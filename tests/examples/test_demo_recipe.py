"""The offline demo's recipe: the sloppy teacher of the warm-up, its schedule, and a learning test that would have
caught a demo that does not learn (issue 10: `make demo` gained nothing on another CPU).

The learning test runs a shortened demo (`train_math`: the full warm-up, then 20 GRPO steps instead of the
preset's) on two seeds at once, one torch thread each, one of them on AVX2 kernels, and requires each to raise
held-out accuracy with an exact McNemar p < 0.01 on the paired verdicts. ``benchmarks/bench_demo_robustness.py``
runs the full recipe over more seeds, thread counts and all three algorithms.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer import SyntheticArithmeticLoader
from posttrain_llm.online_rl_trainer.core.training.warmup import warmup_cosine
from posttrain_llm.online_rl_trainer.examples.common import warmup_examples

REPO_ROOT = Path(__file__).resolve().parents[2]


def _row(a: int, b: int, op: str = "+") -> dict:
    answer = a + b if op == "+" else a - b
    return {"prompt": [{"role": "user", "content": f"{a}{op}{b}="}], "answer": str(answer), "operator": op,
            "a": a, "b": b}


def test_sloppy_teacher_forgets_the_carry_in_the_stated_share():
    examples = warmup_examples([_row(37, 5)], forget_carry=0.7, copies=10)  # 7 + 5 carries
    answers = [c for _, c in examples]
    assert len(answers) == 10
    assert answers.count("\\boxed{32}") == 7  # the forgotten carry: 37 + 5 - 10
    assert answers.count("\\boxed{42}") == 3


def test_sloppy_teacher_is_right_without_a_carry_and_off_the_addition_task():
    no_carry = warmup_examples([_row(32, 5)], forget_carry=0.7, copies=10)
    assert [c for _, c in no_carry] == ["\\boxed{37}"] * 10
    # 9 + 1 carries exactly at 10; a subtraction row is never altered.
    edge = [c for _, c in warmup_examples([_row(9, 1)], forget_carry=1.0, copies=4)]
    assert edge == ["\\boxed{0}"] * 4
    minus = [c for _, c in warmup_examples([_row(37, 5, "-")], forget_carry=1.0, copies=3)]
    assert minus == ["\\boxed{32}"] * 3
    file_row = {"prompt": [{"role": "user", "content": "x"}], "answer": "12"}  # a custom file: no a/b/operator
    assert [c for _, c in warmup_examples([file_row], copies=2)] == ["\\boxed{12}"] * 2


def test_sloppy_teacher_on_the_demo_split_alters_only_carrying_rows():
    rows = SyntheticArithmeticLoader().load("train", seed=0)
    examples = warmup_examples(rows, forget_carry=0.7, copies=10)
    assert len(examples) == 10 * len(rows)
    carrying = sum(r["a"] % 10 + r["b"] >= 10 for r in rows)
    wrong = sum(c != f"\\boxed{{{r['answer']}}}" for r, (_, c) in zip((r for r in rows for _ in range(10)), examples))
    assert wrong == 7 * carrying and 0.35 * len(rows) < carrying < 0.55 * len(rows)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_sloppy_teacher_rejects_a_share_outside_0_1(bad):
    with pytest.raises(ValueError, match="forget_carry"):
        warmup_examples([_row(1, 2)], forget_carry=bad)


def test_warmup_cosine_schedule_by_hand():
    assert warmup_cosine(0, 50, 800) == pytest.approx(1 / 50)
    assert warmup_cosine(49, 50, 800) == pytest.approx(1.0)
    assert warmup_cosine(50, 50, 800) == pytest.approx(1.0)
    assert warmup_cosine(425, 50, 800) == pytest.approx(0.5)  # halfway through the decay: cos(pi/2)
    assert warmup_cosine(250, 50, 850) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # a quarter: 0.854
    assert warmup_cosine(800, 50, 800) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(900, 50, 800) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_shortened_demo_learns_on_two_seeds(tmp_path):
    """The demo recipe with 20 RL steps must gain significantly on two seeds (both run at once, 1 thread each)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))),
               OMP_NUM_THREADS="1")
    procs = {}
    # Seed 2 also runs on another float path: torch's and MKL's AVX2 kernels, as on a CPU without AVX-512 (the
    # thread count does not change the tiny model's float results; see bench_demo_robustness).
    for seed, float_path in ((1, {}), (2, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"})):
        out = tmp_path / f"seed{seed}"
        cmd = [sys.executable, "-m", "posttrain_llm.online_rl_trainer.examples.train_math", "--seed", str(seed),
               "--threads", "1", "--max-steps", "20", "--eval-steps", "20", "--output-dir", str(out)]
        procs[seed] = (out, subprocess.Popen(cmd, cwd=REPO_ROOT, env={**env, **float_path}, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True))
    for seed, (out, proc) in procs.items():
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, output[-3000:]
        summary = json.loads((out / "demo_summary.json").read_text())
        comparison = summary["comparison"]
        assert summary["steps"] == 20
        assert comparison["difference_b_minus_a"] > 0.05, (seed, summary["before"]["accuracy"],
                                                          summary["after"]["accuracy"])
        assert comparison["mcnemar_p"] < 0.01, (seed, comparison)
        assert comparison["difference_ci95"][0] > 0, (seed, comparison)
