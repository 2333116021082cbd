"""Tests of the GSM8K and MATH / MATH-500 loaders on upstream-format files: answers, prompts, levels and subjects,
the empty-box rows, seeded subsets and the data-folder resolution.

Each test runs on the hand-written fixture files (always) and, where the full data is found, on the real files;
counts and hand-checked rows of the real files run only there (skipped with the reason otherwise). Pure helpers
(answer normalisation, boxed extraction) need no files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer.core.data import (
    DATA_DIR_ENV,
    DEFAULT_MATH_ONE_SHOT,
    DataError,
    GSM8KLoader,
    MATHLoader,
    last_boxed_content,
    normalize_gsm8k_answer,
)


@functools.cache
def _gsm8k(folder: Path) -> dict:
    loader = GSM8KLoader(folder, use_hub=False)
    return {"train": loader.load("train"), "test": loader.load("test")}


@functools.cache
def _math(folder: Path) -> dict:
    loader = MATHLoader("full", folder, use_hub=False, skip_invalid=True)
    train = loader.load("train")
    return {"train": train, "train_skipped": loader.last_skipped, "test": loader.load("test")}


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize("data_dir, counts", [("fixture", (5, 8)), ("full", (7473, 1319))], indirect=["data_dir"])
def test_gsm8k_row_counts(data_dir, counts):
    gsm8k = _gsm8k(data_dir)
    assert (len(gsm8k["train"]), len(gsm8k["test"])) == counts


@pytest.mark.parametrize(
    "split,row,expected",
    [("test", 0, "18"), ("train", 0, "72"), ("train", 345, "1080"), ("train", 644, "109200000"),
     ("train", 5715, "-7"), ("test", 489, "-10")],
)
def test_gsm8k_answer_normalized_on_known_rows(real_data_dir, split, row, expected):
    assert _gsm8k(real_data_dir)[split][row]["answer"] == expected


def test_gsm8k_fixture_answers_normalized(fixture_data_dir):
    # thousands separators ("1,610", "1,224,000"), negatives, a decimal; every row, in file order
    gsm8k = _gsm8k(fixture_data_dir)
    assert gsm8k["train"]["answer"] == ["56", "13", "1224000", "-55", "63"]
    assert gsm8k["test"]["answer"] == ["216", "1610", "-7", "2.5", "16", "4320", "22", "210"]
    assert gsm8k["test"][4]["question"].startswith("Lena\u2019s book")  # "\u2019" escaped in the file, as upstream


def test_gsm8k_keeps_full_solution_and_question(data_dir):
    first = json.loads((data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    row = _gsm8k(data_dir)["test"][0]
    assert (row["solution"], row["question"]) == (first["answer"], first["question"])


def test_gsm8k_default_prompt_is_system_then_short_user_turn(data_dir):
    row = _gsm8k(data_dir)["test"][0]
    prompt = row["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[1]["content"].startswith(row["question"]) and "\\boxed{}" in prompt[1]["content"]
    assert len(prompt[1]["content"]) - len(row["question"]) < 80


def test_gsm8k_no_system_prompt_and_one_shot(data_dir):
    row = GSM8KLoader(data_dir, system_prompt=None, few_shot=[DEFAULT_MATH_ONE_SHOT], use_hub=False).load("test", 1)[0]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][0]["content"].startswith("What is 7 + 5?")
    assert row["prompt"][1]["content"] == DEFAULT_MATH_ONE_SHOT[1]


def test_unknown_split_lists_accepted(fixture_data_dir):
    with pytest.raises(ValueError, match=r"'validation'.*\['train', 'test'\]"):
        GSM8KLoader(fixture_data_dir).load("validation")


@pytest.mark.parametrize("text,expected", [("x\n#### 1,234", "1234"), ("#### -3", "-3"), ("#### 0.5", "0.5"),
                                           ("a #### 1 #### 2", "2")])
def test_normalize_gsm8k_answer(text, expected):
    assert normalize_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text", ["no marker 12", "#### twelve", "#### ", "#### 12 apples"])
def test_normalize_gsm8k_answer_rejects_non_numbers(text):
    with pytest.raises(ValueError):
        normalize_gsm8k_answer(text)


# ---------------------------------------------------------------------------------------------- MATH


@pytest.mark.parametrize("data_dir, row", [("fixture", 4), ("full", 5341)], indirect=["data_dir"])
def test_math_train_has_two_empty_box_rows_that_stop_a_strict_load(data_dir, row):
    where = rf"math/train\.jsonl: row {row} \(line {row + 1}\), column 'solution'"
    with pytest.raises(DataError, match=where + ".*empty.*skip_invalid"):
        MATHLoader("full", data_dir, use_hub=False).load("train")


@pytest.mark.parametrize("data_dir, skipped, train, test, math500",
                         [("fixture", [4, 6], 7, 5, 8), ("full", [5341, 5343], 7500, 5000, 500)], indirect=["data_dir"])
def test_math_row_counts(data_dir, skipped, train, test, math500):
    math_full = _math(data_dir)
    assert [ref.row for ref, _ in math_full["train_skipped"]] == skipped
    assert len(math_full["train"]) + len(math_full["train_skipped"]) == train
    assert len(math_full["test"]) == test
    assert len(MATHLoader("math500", data_dir, use_hub=False).load("test")) == math500


@pytest.mark.parametrize("row,expected", [(0, "0"), (888, "2"), (1011, "9"), (252, "17")])
def test_math_answer_is_last_boxed(real_data_dir, row, expected):
    # rows 888 and 1011 use the brace-less "\boxed 2"; 252 has a "\boxed " earlier and "\boxed{17}" last
    assert _math(real_data_dir)["train"][row]["answer"] == expected


def test_math_fixture_answers_are_last_boxed(fixture_data_dir):
    math_full = _math(fixture_data_dir)
    # train: plain, brace-less "\boxed 3", a "Level ?" row, "\boxed {10}" then "\boxed{10}" last, a fraction
    assert math_full["train"]["answer"] == ["13", "3", "2", "10", "\\frac{11}{12}"]
    assert math_full["test"]["answer"] == ["\\frac{\\sqrt{3}}{2}", "1", "7", "35", "1,2,3"]


def test_math_nested_brace_answer(data_dir):
    test = _math(data_dir)["test"]
    row = next(r for r in test.select(range(min(200, len(test)))) if "\\frac" in r["answer"])
    assert row["solution"].count("{") == row["solution"].count("}")
    assert "\\boxed{" + row["answer"] + "}" in row["solution"]


@pytest.mark.parametrize("data_dir, first, first500", [
    ("fixture", ("Level 1", "Algebra", "Algebra"), (2, "Precalculus", "test/precalculus/512.json", "(2,\\pi)")),
    ("full", ("Level 5", "Algebra", "Algebra"),
     (2, "Precalculus", "test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)")),
], indirect=["data_dir"])
def test_math_keeps_level_and_subject(data_dir, first, first500):
    row = _math(data_dir)["train"][0]
    assert (row["level"], row["type"], row["subject"]) == first
    m500 = MATHLoader("math500", data_dir, use_hub=False).load("test")[0]
    assert (m500["level"], m500["subject"], m500["unique_id"], m500["answer"]) == first500


def test_math_level_question_mark_row_is_kept(fixture_data_dir):
    row = _math(fixture_data_dir)["train"][2]
    assert (row["level"], row["subject"], row["answer"]) == ("Level ?", "Number Theory", "2")


def test_math500_has_only_test_split(fixture_data_dir):
    with pytest.raises(ValueError, match=r"\['test'\]"):
        MATHLoader("math500", fixture_data_dir).load("train")


def test_math_unknown_subset():
    with pytest.raises(ValueError, match="'gsm'.*full.*math500"):
        MATHLoader("gsm")


@pytest.mark.parametrize(
    "text,expected",
    [("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"), ("\\boxed{1} then \\boxed{2}", "2"), ("none", None),
     ("\\boxed{\\frac{1}{2}", None), ("is $\\boxed 9$.", "9"), ("\\fbox{x}", "x")],
)
def test_last_boxed_content(text, expected):
    assert last_boxed_content(text) == expected


# ---------------------------------------------------------------------------------------------- subsets

# 20 rows of the full test split; 4 of the fixture's 8
_SUBSET = [("fixture", 4), ("full", 20)]


@pytest.mark.parametrize("data_dir, n", _SUBSET, indirect=["data_dir"])
def test_seeded_subset_is_reproducible(data_dir, n):
    loader = GSM8KLoader(data_dir, use_hub=False)
    assert loader.load("test", n, seed=3)["question"] == loader.load("test", n, seed=3)["question"]


@pytest.mark.parametrize("data_dir, n", _SUBSET, indirect=["data_dir"])
def test_seeded_subset_differs_across_seeds(data_dir, n):
    loader = GSM8KLoader(data_dir, use_hub=False)
    assert loader.load("test", n, seed=3)["question"] != loader.load("test", n, seed=4)["question"]


@pytest.mark.parametrize("data_dir, n", _SUBSET, indirect=["data_dir"])
def test_subset_is_random_not_head(data_dir, n):
    sub = GSM8KLoader(data_dir, use_hub=False).load("test", n, seed=0)
    every = _gsm8k(data_dir)["test"]["question"]
    assert len(sub) == n and sub["question"] != every[:n]
    assert set(sub["question"]) <= set(every)


@pytest.mark.parametrize("data_dir, asked, rows", [("fixture", 9, 8), ("full", 2000, 1319)], indirect=["data_dir"])
def test_too_many_samples_names_both_numbers(data_dir, asked, rows):
    with pytest.raises(ValueError, match=rf"num_samples={asked}.*only {rows}"):
        GSM8KLoader(data_dir, use_hub=False).load("test", asked)


# ---------------------------------------------------------------------------------------------- folders

_TEST_ROWS = [("fixture", 8), ("full", 1319)]


@pytest.mark.parametrize("data_dir, rows", _TEST_ROWS, indirect=["data_dir"])
def test_env_var_data_dir(monkeypatch, data_dir, rows):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert len(GSM8KLoader(use_hub=False).load("test")) == rows


def test_data_dir_argument_wins_over_env(monkeypatch, data_dir, tmp_path):
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert GSM8KLoader(tmp_path, use_hub=False).load("test")["answer"] == ["2"]


@pytest.mark.parametrize("data_dir, rows", _TEST_ROWS, indirect=["data_dir"])
def test_missing_local_file_falls_back_to_env_dir(monkeypatch, data_dir, rows, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert len(GSM8KLoader(tmp_path, use_hub=False).load("test")) == rows
