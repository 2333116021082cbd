"""Difficulty 4 of the synthetic loader, the tool task: three-digit multiplication drawn from a space too large to
list, with disjoint, seeded splits."""

from __future__ import annotations

import time

import pytest

from posttrain_llm.online_rl_trainer.core.data.synthetic import (
    ArithmeticProblem,
    SyntheticArithmeticLoader,
    arithmetic_problems,
    problem_space,
)


def test_tool_task_rows_are_three_digit_products():
    rows = SyntheticArithmeticLoader(4).load("train").to_list()
    assert len(rows) == 700
    assert all(r["operator"] == "*" and 100 <= r["a"] <= 999 and 100 <= r["b"] <= 999 for r in rows)
    assert all(r["answer"] == str(r["a"] * r["b"]) and r["question"] == f"{r['a']}*{r['b']}=" for r in rows)
    assert all(5 <= len(r["answer"]) <= 6 for r in rows)


def test_tool_task_splits_are_disjoint_distinct_and_seeded():
    loader = SyntheticArithmeticLoader(4, seed=3, num_train=5000, num_test=2000)
    train = {(p.a, p.b) for p in loader.problems("train")}
    test = {(p.a, p.b) for p in loader.problems("test")}
    assert len(train) == 5000 and len(test) == 2000 and not train & test
    again = SyntheticArithmeticLoader(4, seed=3, num_train=5000, num_test=2000)
    assert again.problems("test") == loader.problems("test")
    assert SyntheticArithmeticLoader(4, seed=4, num_train=5000, num_test=2000).problems("test") != loader.problems("test")


def test_tool_task_space_is_lazy_and_complete():
    space = problem_space(4)
    assert len(space) == 810_000 == SyntheticArithmeticLoader(4).num_distinct
    assert (space[0], space[899], space[900], space[-1]) == (
        ArithmeticProblem(100, "*", 100), ArithmeticProblem(100, "*", 999), ArithmeticProblem(101, "*", 100),
        ArithmeticProblem(999, "*", 999))
    assert space[1:3] == [ArithmeticProblem(100, "*", 101), ArithmeticProblem(100, "*", 102)]
    assert SyntheticArithmeticLoader(4).all_problems is not None and len(SyntheticArithmeticLoader(4).all_problems) == 810_000
    with pytest.raises(IndexError):
        space[810_000]
    start = time.monotonic()
    SyntheticArithmeticLoader(4, num_train=100_000, num_test=10_000)
    assert time.monotonic() - start < 5  # never lists the 810,000 problems


def test_tool_task_chat_prompt_and_refusals():
    row = SyntheticArithmeticLoader(4, prompt_style="chat").load("test", 1)[0]
    assert row["question"] == f"What is {row['a']} * {row['b']}?"
    user = row["prompt"][-1]
    assert user["role"] == "user" and user["content"] == (
        f"What is {row['a']} * {row['b']}? You may use the calculator tool. Put the final answer in \\boxed{{}}.")
    shot = "What is 7 + 5? You may use the calculator tool. Put the final answer in \\boxed{}."  # same template
    assert [m["content"] for m in row["prompt"][:2]] == [shot, "7 + 5 = 12. The answer is \\boxed{12}."]
    other = SyntheticArithmeticLoader(3, prompt_style="chat").load("test", 1)[0]["prompt"][-1]["content"]
    assert "calculator" not in other and other.endswith("Put the final answer in \\boxed{}.")  # 1-3 unchanged
    bare = SyntheticArithmeticLoader(4).load("test", 1)[0]
    assert bare["prompt"] == [{"role": "user", "content": f"{bare['a']}*{bare['b']}="}]
    with pytest.raises(ValueError, match="too many to list"):
        arithmetic_problems(4)
    with pytest.raises(ValueError, match="only 810000 distinct"):
        SyntheticArithmeticLoader(4, num_train=800_000, num_test=10_001)
    with pytest.raises(ValueError, match="accepted: \\[1, 2, 3, 4\\]"):
        SyntheticArithmeticLoader(5)
