"""Tests of the HumanEval and MBPP loaders on upstream-format files: counts, split ranges, columns, prompts, errors.

Each runs on the hand-written fixture files (always) and on the full files where they are found (skipped with the
reason otherwise); counts and known rows of the full files run only there.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer.core.data.base import DATA_DIR_ENV, DataError
from posttrain_llm.online_rl_trainer.core.data.code import (
    MBPP_SPLIT_RANGES,
    HumanEvalLoader,
    MBPPLoader,
    mbpp_entry_point,
)


@functools.cache
def _humaneval(folder: Path):
    return HumanEvalLoader(folder, use_hub=False).load("test")


@functools.cache
def _mbpp(folder: Path, variant: str) -> dict:
    loader = MBPPLoader(variant, folder, use_hub=False)
    return {split: loader.load(split) for split in loader.splits}


@pytest.mark.parametrize("data_dir, tasks, first", [("fixture", 5, "running_max"), ("full", 164, "has_close_elements")],
                         indirect=["data_dir"])
def test_humaneval_tasks_carry_the_reward_columns(data_dir, tasks, first):
    humaneval = _humaneval(data_dir)
    assert len(humaneval) == tasks and len(set(humaneval["task_id"])) == tasks
    row = humaneval[0]
    assert row["task_id"] == "HumanEval/0" and row["entry_point"] == first
    assert row["answer"] == row["code_prompt"] + row["canonical_solution"]
    assert "def check(candidate)" in row["test"]


@pytest.mark.parametrize("data_dir, signature", [("fixture", "running_max(numbers: List[int])"),
                                                 ("full", "has_close_elements(")], indirect=["data_dir"])
def test_humaneval_prompt_shows_the_signature_and_asks_for_one_python_block(data_dir, signature):
    messages = _humaneval(data_dir)[0]["prompt"]
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    assert "```python\nfrom typing import List\n\n\ndef " + signature in user
    assert "single ```python code block" in user


_FIXTURE_SPLITS = {"prompt": [3, 7], "test": [14, 58, 133, 420], "validation": [530, 577],
                   "train": [604, 641, 701, 812, 903]}


@pytest.mark.parametrize("split, count", [("prompt", 10), ("test", 500), ("validation", 90), ("train", 374)])
def test_mbpp_full_splits_follow_the_task_id_ranges(real_data_dir, split, count):
    ids = _mbpp(real_data_dir, "full")[split]["task_id"]
    low, high = MBPP_SPLIT_RANGES[split]
    assert len(ids) == count and min(ids) == low and max(ids) == high


@pytest.mark.parametrize("split", list(MBPP_SPLIT_RANGES))
def test_mbpp_fixture_splits_follow_the_task_id_ranges(fixture_data_dir, split):
    assert _mbpp(fixture_data_dir, "full")[split]["task_id"] == _FIXTURE_SPLITS[split]
    sanitized = _mbpp(fixture_data_dir, "sanitized")[split]["task_id"]
    assert sanitized and set(sanitized) <= set(_FIXTURE_SPLITS[split])


@pytest.mark.parametrize("split, count", [("prompt", 7), ("test", 257), ("validation", 43), ("train", 120)])
def test_mbpp_sanitized_split_sizes_match_the_readme(real_data_dir, split, count):
    assert len(MBPPLoader("sanitized", real_data_dir, use_hub=False).load(split)) == count


@pytest.mark.parametrize("data_dir, first, builtin, tree, reference", [
    ("fixture", (3, "assert is_Even(4) == True", "is_Even"), (133, "max"), 420,
     (420, "class Node: \n\tdef __init__(self, data): \n")),
    ("full", (2, "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)", "similar_elements"), (126, "sum"),
     367, (1, "R = 3\nC = 3\ndef min_cost(")),
], indirect=["data_dir"])
def test_mbpp_rows_carry_tests_setup_and_entry_point(data_dir, first, builtin, tree, reference):
    rows = {r["task_id"]: r for split in _mbpp(data_dir, "full").values() for r in split}
    assert rows[first[0]]["tests"][0] == first[1]
    assert rows[first[0]]["entry_point"] == first[2] and rows[builtin[0]]["entry_point"] == builtin[1]
    assert rows[tree]["test_setup_code"].startswith("root = Node(1)") and "\r" not in rows[tree]["test_setup_code"]
    assert "\r" not in rows[reference[0]]["answer"] and rows[reference[0]]["answer"].startswith(reference[1])
    assert all(len(r["tests"]) == 3 for r in rows.values())


def test_mbpp_fixture_challenge_tests_are_kept(fixture_data_dir):
    row = _mbpp(fixture_data_dir, "full")["validation"][0]
    assert (row["task_id"], row["challenge_tests"]) == (530, ["assert rectangle_area(0,5)==0",
                                                               "assert rectangle_area(3,3)==9"])


def test_mbpp_sanitized_turns_test_imports_into_setup(data_dir):
    rows = MBPPLoader("sanitized", data_dir, use_hub=False).load("test")
    setups = {r["task_id"]: r["test_setup_code"] for r in rows}
    assert setups[14] == "" and "import math" in set(setups.values())


@pytest.mark.parametrize("show, shown, hidden", [(0, [], [0]), (1, [0], [1, 2]), (3, [0, 1, 2], [])])
def test_mbpp_prompt_shows_only_the_first_tests(data_dir, show, shown, hidden):
    row = MBPPLoader("full", data_dir, show_tests=show, use_hub=False).load("prompt")[1]
    user = row["prompt"][-1]["content"]
    assert row["text"] in user and "```python" in user
    assert all(row["tests"][i] in user for i in shown)
    assert not any(row["tests"][i] in user for i in hidden)


def test_num_samples_is_a_seeded_subset(data_dir):
    loader = MBPPLoader("full", data_dir, use_hub=False)
    a, b = loader.load("train", num_samples=5, seed=1), loader.load("train", num_samples=5, seed=1)
    assert a["task_id"] == b["task_id"] and len(set(a["task_id"])) == 5
    assert a["task_id"] != loader.load("train", num_samples=5, seed=2)["task_id"]


@pytest.mark.parametrize("data_dir, tasks", [("fixture", 5), ("full", 164)], indirect=["data_dir"])
def test_data_dir_can_come_from_the_environment(data_dir, tasks, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert len(HumanEvalLoader(use_hub=False).load("test")) == tasks


def test_missing_files_name_the_paths_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mbpp/mbpp\.jsonl"):
        MBPPLoader("full", tmp_path, use_hub=False).load("train")


def test_bad_row_names_the_file_row_and_column(tmp_path):
    (tmp_path / "mbpp").mkdir()
    good = {"task_id": 601, "text": "t", "code": "def f(): pass", "test_list": ["assert f() is None"],
            "test_setup_code": "", "challenge_test_list": []}
    bad = {**good, "task_id": 602, "test_list": "assert True"}
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text("\n".join(json.dumps(r) for r in (good, bad)) + "\n")
    with pytest.raises(DataError, match=r"mbpp\.jsonl: row 1 \(line 2\), column 'test_list'"):
        MBPPLoader("full", tmp_path, use_hub=False).load("train")
    loader = MBPPLoader("full", tmp_path, use_hub=False, skip_invalid=True)
    assert loader.load("train")["task_id"] == [601] and len(loader.last_skipped) == 1


@pytest.mark.parametrize("kwargs, fragment", [({"variant": "plus"}, "variant='plus'"),
                                              ({"show_tests": 4}, "show_tests=4")])
def test_mbpp_loader_rejects_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MBPPLoader(**kwargs)


def test_mbpp_entry_point_is_the_first_called_reference_function():
    code = "class Node:\n    pass\ndef helper(x):\n    return x\ndef height(n):\n    return helper(n)\n"
    assert mbpp_entry_point(code, ["assert height(Node()) == 1"]) == "height"
    assert mbpp_entry_point("x = 1", ["assert x == 1"]) is None
