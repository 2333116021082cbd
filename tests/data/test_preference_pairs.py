"""Preference pairs from the arithmetic task (core/data/preference_pairs.py) and the preference-row reader."""

from __future__ import annotations

import json
import re

import datasets
import pytest

from posttrain_llm.online_rl_trainer import MathRewardFunction
from posttrain_llm.online_rl_trainer.core.data.base import DataError
from posttrain_llm.online_rl_trainer.core.data.preference_pairs import (
    arithmetic_preference_pairs,
    pairs_from_graded_samples,
    read_preference_rows,
    wrong_result,
)


@pytest.mark.parametrize("style", ["bare", "chat"])
def test_chosen_earns_full_math_credit_and_rejected_none(style):
    reward = MathRewardFunction()
    pairs = arithmetic_preference_pairs(40, seed=3, difficulty=2, prompt_style=style)
    for p in pairs:
        chosen = reward.score(p["chosen"][0]["content"], answer=p["answer"])
        rejected = reward.score(p["rejected"][0]["content"], answer=p["answer"])
        assert chosen.status == "passed", p
        assert rejected.score == 0.0 and rejected.status in ("failed", "no_answer"), p
        assert rejected.status == ("failed" if p["rejected_kind"] == "wrong_number" else "no_answer")


def test_rejected_kinds_are_dealt_alternately_and_unformatted_keeps_the_number():
    pairs = arithmetic_preference_pairs(10, seed=0)
    assert [p["rejected_kind"] for p in pairs] == ["wrong_number", "unformatted"] * 5
    for p in pairs[1::2]:
        assert p["rejected"][0]["content"] == p["answer"]  # the right number, no box
    only = arithmetic_preference_pairs(4, seed=0, rejected_kinds=("unformatted",))
    assert {p["rejected_kind"] for p in only} == {"unformatted"}


def test_wrong_number_is_the_forgotten_carry_when_units_carry():
    import random

    assert wrong_result(37, "+", 5, 42, random.Random(0)) == 32
    moved = {wrong_result(12, "+", 3, 15, random.Random(s)) for s in range(50)}
    assert 15 not in moved and moved <= set(range(5, 26))


def test_train_and_test_pairs_share_no_problem_and_are_seeded():
    train = arithmetic_preference_pairs(300, seed=1, split="train")
    test = arithmetic_preference_pairs(100, seed=1, split="test")
    assert not {p["prompt"][-1]["content"] for p in train} & {p["prompt"][-1]["content"] for p in test}
    assert arithmetic_preference_pairs(20, seed=1) == arithmetic_preference_pairs(20, seed=1)
    assert arithmetic_preference_pairs(20, seed=1) != arithmetic_preference_pairs(20, seed=2)


def test_pairs_are_in_trls_conversational_preference_format():
    p = arithmetic_preference_pairs(1, seed=0)[0]
    assert p["prompt"] == [{"role": "user", "content": p["prompt"][0]["content"]}]
    assert p["chosen"] == [{"role": "assistant", "content": f"\\boxed{{{p['answer']}}}"}]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n=0), "n=0"), (dict(n=701), "n=701 pairs but the 'train' split"), (dict(n=301, split="test"), "has 300"),
    (dict(n=5, split="dev"), "split='dev'"), (dict(n=5, prompt_style="fancy"), "prompt_style='fancy'"),
    (dict(n=5, rejected_kinds=("typo",)), "rejected_kinds=('typo',)"),
])
def test_bad_arguments_name_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        arithmetic_preference_pairs(**kwargs)


# ------------------------------------------------------------------------------------------- reading rows
def test_rows_read_from_jsonl_a_dataset_and_a_list_alike(tmp_path):
    rows = [{"prompt": "1+1=", "chosen": "2", "rejected": "3"},
            {"prompt": [{"role": "user", "content": "2+2="}], "chosen": [{"role": "assistant", "content": "4"}],
             "rejected": [{"role": "assistant", "content": "5"}]}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_preference_rows(path) == rows
    assert read_preference_rows(rows) == rows
    assert read_preference_rows(datasets.Dataset.from_list(rows[:1])) == rows[:1]
    assert read_preference_rows([{"chosen": "a", "rejected": "b"}]) == [{"chosen": "a", "rejected": "b"}]


@pytest.mark.parametrize("row, fragment", [
    ({"prompt": "q", "chosen": "a"}, "row 1, column 'rejected': no 'rejected' column"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "row 1, column 'chosen': chosen is an empty string"),
    ({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant"}]}, "column 'rejected': rejected message 0"),
    ({"prompt": 7, "chosen": "a", "rejected": "b"}, "column 'prompt': prompt is 7"),
])
def test_a_bad_row_is_named_with_its_column(row, fragment):
    with pytest.raises(DataError, match=fragment):
        read_preference_rows([{"prompt": "q", "chosen": "a", "rejected": "b"}, row])


def test_a_missing_file_is_a_user_error(tmp_path):
    from posttrain_llm.online_rl_trainer.core.common.errors import UserError

    with pytest.raises(UserError):
        read_preference_rows(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------ pairs from a policy's own graded samples
def _record(completions, statuses, prompt="1+1=", answer="2"):
    return {"prompt": [{"role": "user", "content": prompt}], "answer": answer, "completions": completions,
            "statuses": statuses}


def test_graded_samples_pair_the_first_correct_with_the_first_wrong_in_sampling_order():
    rec = _record(["\\boxed{3}", "\\boxed{2}", "\\boxed{4}", "\\boxed{2}"], ["failed", "passed", "failed", "passed"])
    (row,) = pairs_from_graded_samples([rec])
    assert row["chosen"] == [{"role": "assistant", "content": "\\boxed{2}"}]
    assert row["rejected"] == [{"role": "assistant", "content": "\\boxed{3}"}]
    assert row["prompt"] == rec["prompt"] and row["answer"] == "2" and row["rejected_kind"] == "failed"


def test_several_pairs_use_distinct_wrong_answers_and_cycle_the_right_ones():
    # distinct passing: [A, B]; distinct failing (first seen): [x, y(no_answer), z]; repeats of x are one
    rec = _record(["x", "A", "x", "y", "B", "z", "A"], ["failed", "passed", "failed", "no_answer", "passed", "failed", "passed"])
    rows = pairs_from_graded_samples([rec], max_pairs_per_prompt=5)
    got = [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["rejected_kind"]) for r in rows]
    assert got == [("A", "x", "failed"), ("B", "y", "no_answer"), ("A", "z", "failed")]
    assert len(pairs_from_graded_samples([rec], max_pairs_per_prompt=2)) == 2


def test_prompts_without_both_outcomes_and_judge_errors_give_no_pair():
    records = [_record(["a", "b"], ["passed", "passed"]), _record(["a", "b"], ["failed", "no_answer"]),
               _record(["a", "b"], ["passed", "error"])]
    assert pairs_from_graded_samples(records) == []


@pytest.mark.parametrize("records, kwargs, fragment", [
    ([_record(["a"], ["passed", "failed"])], {}, "1 completions but 2 statuses"),
    ([_record(["a", "b"], ["passed", "wrong"])], {}, "statuses ['wrong']"),
    ([], {"max_pairs_per_prompt": 0}, "max_pairs_per_prompt=0"),
])
def test_bad_graded_records_name_the_problem(records, kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        pairs_from_graded_samples(records, **kwargs)
