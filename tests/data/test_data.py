"""Tests of the dataset loaders that need no dataset files: the offline error, the custom loader per format, every
bad-row message, prompts, and the synthetic task. GSM8K / MATH on upstream-format files: tests/data/test_math_data.py."""

from __future__ import annotations

import json
import logging
import time

import datasets
import pytest

from posttrain_llm.online_rl_trainer.core.data import (
    DATA_DIR_ENV,
    CustomLoader,
    DataError,
    GSM8KLoader,
    MATHLoader,
    SyntheticArithmeticLoader,
    make_prompt,
)


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- subsets, Hub


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_num_samples(bad):
    with pytest.raises(ValueError, match="num_samples"):
        CustomLoader([{"prompt": "q", "answer": "a"}]).load(None, bad)


def test_offline_without_local_data_lists_everything_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import; patch the live value too
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        GSM8KLoader(tmp_path).load("train")
    assert time.monotonic() - start < 20
    message = str(info.value)
    assert str(tmp_path / "gsm8k" / "train.jsonl") in message and "openai/gsm8k" in message
    assert DATA_DIR_ENV in message and "data_dir" in message


def test_use_hub_false_says_hub_skipped(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)math500_test\.jsonl.*use_hub=False"):
        MATHLoader("math500", tmp_path, use_hub=False).load("test")


# ---------------------------------------------------------------------------------------------- custom loader

CUSTOM_ROWS = [{"prompt": "What is 2+3?", "answer": "5", "topic": "add"},
               {"prompt": "What is 4*4?", "answer": "16", "topic": "mul"}]


def _write_custom(path, fmt):
    if fmt == "jsonl":
        _write_jsonl(path, CUSTOM_ROWS)
    elif fmt == "json":
        path.write_text(json.dumps(CUSTOM_ROWS), encoding="utf-8")
    elif fmt == "csv":
        lines = [f"{r['prompt']},{r['answer']},{r['topic']}\n" for r in CUSTOM_ROWS]
        path.write_text("prompt,answer,topic\n" + "".join(lines), encoding="utf-8")
    else:
        datasets.Dataset.from_list(CUSTOM_ROWS).to_parquet(str(path))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_custom_loader_reads_each_format(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    _write_custom(path, fmt)
    ds = CustomLoader(path, system_prompt="Be brief.").load()
    assert ds["answer"] == ["5", "16"] and ds["topic"] == ["add", "mul"]
    assert ds[1]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 4*4?"}]


def test_custom_file_format_overrides_extension(tmp_path):
    path = _write_jsonl(tmp_path / "data.txt", CUSTOM_ROWS)
    assert len(CustomLoader(path, file_format="jsonl").load()) == 2
    with pytest.raises(ValueError, match=r"data\.txt.*file_format"):
        CustomLoader(path).load()


def test_custom_json_lines_in_json_file(tmp_path):
    assert len(CustomLoader(_write_jsonl(tmp_path / "d.json", CUSTOM_ROWS)).load()) == 2


def test_custom_other_columns_and_renamed_prompt():
    rows = [{"question": "Q?", "sol": "7", "prompt": "old", "answer": "x"}]
    row = CustomLoader(rows, prompt_column="question", answer_column="sol").load()[0]
    assert (row["answer"], row["source_prompt"], row["source_answer"], row["question"]) == ("7", "old", "x", "Q?")
    assert row["prompt"] == [{"role": "user", "content": "Q?"}]


def test_custom_message_list_prompt_and_dataset_source():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    ds = CustomLoader(datasets.Dataset.from_list([{"prompt": msgs, "answer": "1"}]), system_prompt="other").load()
    assert ds[0]["prompt"] == msgs


@pytest.mark.parametrize("msgs", [[{"role": "robot", "content": "x"}], [{"role": "user"}], [],
                                  [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]])
def test_custom_bad_message_list(msgs):
    with pytest.raises(DataError, match=r"<list>: row 1, column 'prompt'"):
        CustomLoader([{"prompt": "ok", "answer": "1"}, {"prompt": msgs, "answer": "1"}]).load()


def test_custom_splits_from_mapping():
    loader = CustomLoader({"train": CUSTOM_ROWS, "test": CUSTOM_ROWS[:1]})
    assert len(loader.load("test")) == 1
    with pytest.raises(ValueError, match=r"None.*\['train', 'test'\]"):
        loader.load()


def test_custom_mixed_type_column_is_named():
    with pytest.raises(DataError, match="column 'extra'.*mixed types"):
        CustomLoader([{"prompt": "a", "answer": "1", "extra": "s"}, {"prompt": "b", "answer": "2", "extra": 3}]).load()


# ---------------------------------------------------------------------------------------------- bad rows

BAD_ROWS = {
    "missing_answer": ({"prompt": "Q"}, "answer", "missing"),
    "missing_prompt": ({"answer": "1"}, "prompt", "missing"),
    "empty_prompt": ({"prompt": "", "answer": "1"}, "prompt", "empty"),
    "blank_prompt": ({"prompt": "  \n", "answer": "1"}, "prompt", "empty"),
    "int_answer": ({"prompt": "Q", "answer": 3}, "answer", "expected a string, got int"),
    "empty_answer": ({"prompt": "Q", "answer": " "}, "answer", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_message_names_file_row_line_column(tmp_path, case):
    record, column, problem = BAD_ROWS[case]
    path = tmp_path / "d.jsonl"
    # a blank line before the bad row: row (0-based record) and line (1-based) differ
    path.write_text(json.dumps(CUSTOM_ROWS[0]) + "\n\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=problem) as info:
        CustomLoader(path).load()
    assert f"{path}: row 1 (line 3), column '{column}'" in str(info.value)


def test_bad_csv_row_names_row_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer\nQ1,1\nQ2,\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: row 1 \(line 3\), column 'answer'.*empty"):
        CustomLoader(path).load()


def test_gsm8k_unparseable_answer(tmp_path):
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "Q", "answer": "#### 2"},
                                                     {"question": "Q", "answer": "so #### two"}])
    with pytest.raises(DataError, match=r"gsm8k/test\.jsonl: row 1 \(line 2\), column 'answer'.*'two'"):
        GSM8KLoader(tmp_path, use_hub=False).load("test")


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(CUSTOM_ROWS[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: row 1 \(line 2\).*invalid JSON"):
        CustomLoader(path).load()


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.jsonl")):
        CustomLoader(tmp_path / "nope.jsonl").load()


def test_skip_invalid_counts_and_warns_once(tmp_path, caplog):
    records = [CUSTOM_ROWS[0], {"prompt": ""}, CUSTOM_ROWS[1], {"prompt": "Q", "answer": 1}, CUSTOM_ROWS[0]]
    loader = CustomLoader(_write_jsonl(tmp_path / "d.jsonl", records), skip_invalid=True)
    with caplog.at_level(logging.WARNING):
        ds = loader.load()
    assert len(ds) == 3
    assert [(ref.row, ref.line) for ref, _ in loader.last_skipped] == [(1, 2), (3, 4)]
    assert "column 'answer'" in loader.last_skipped[1][1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 invalid rows" in warnings[0]


def test_last_skipped_resets_between_loads(tmp_path):
    bad = [{"prompt": "", "answer": "1"}, CUSTOM_ROWS[0]]
    loader = CustomLoader({"bad": bad, "good": CUSTOM_ROWS}, skip_invalid=True)
    loader.load("bad")
    assert len(loader.last_skipped) == 1
    loader.load("good")
    assert loader.last_skipped == []


# ---------------------------------------------------------------------------------------------- prompts


def test_make_prompt_template_keeps_latex_braces():
    msgs = make_prompt("x^{2}", None, None, "Solve {question} in \\boxed{}.")
    assert msgs == [{"role": "user", "content": "Solve x^{2} in \\boxed{}."}]


@pytest.mark.parametrize("kwargs", [{"prompt_template": "no placeholder"}, {"system_prompt": ""},
                                    {"few_shot": [("q", "")]}, {"few_shot": [("only one",)]}])
def test_bad_prompt_options(kwargs):
    with pytest.raises(ValueError):
        GSM8KLoader(**kwargs)


# ---------------------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_synthetic_splits_are_disjoint(difficulty):
    loader = SyntheticArithmeticLoader(difficulty)
    train, test = set(loader.load("train")["question"]), set(loader.load("test")["question"])
    assert len(train) == 700 and len(test) == 300 and not train & test


def _synthetic_test_rows(seed):
    return SyntheticArithmeticLoader(2, seed=seed).load("test").to_list()


def test_synthetic_deterministic_for_seed():
    assert _synthetic_test_rows(5) == _synthetic_test_rows(5)


def test_synthetic_split_depends_on_seed():
    assert _synthetic_test_rows(5) != _synthetic_test_rows(6)


def test_synthetic_difficulty_1_is_the_measured_task():
    loader = SyntheticArithmeticLoader(1)
    rows = loader.load("train").to_list() + loader.load("test").to_list()
    assert loader.num_distinct == 1000 == len({r["question"] for r in rows})
    assert all(r["operator"] == "+" and 0 <= r["a"] <= 99 and 0 <= r["b"] <= 9 for r in rows)
    assert all(r["answer"] == str(r["a"] + r["b"]) and r["question"] == f"{r['a']}+{r['b']}=" for r in rows)


def test_synthetic_prompt_is_the_bare_problem():
    row = SyntheticArithmeticLoader(1).load("test", 1)[0]
    assert row["prompt"] == [{"role": "user", "content": row["question"]}]


@pytest.mark.parametrize("difficulty,ops,distinct", [(2, {"+", "-"}, 20000), (3, {"+", "-", "*"}, 21000)])
def test_synthetic_higher_difficulties(difficulty, ops, distinct):
    loader = SyntheticArithmeticLoader(difficulty)
    rows = loader.load("train").to_list()
    assert {r["operator"] for r in rows} == ops and loader.num_distinct == distinct == len(loader.all_problems)
    assert any(r["answer"].startswith("-") for r in rows)
    assert all(r["b"] <= 9 for r in rows if r["operator"] == "*")
    assert all(int(r["answer"]) == {"+": r["a"] + r["b"], "-": r["a"] - r["b"], "*": r["a"] * r["b"]}[r["operator"]]
               for r in rows)


def test_synthetic_too_many_problems():
    with pytest.raises(ValueError, match=r"1001.*only 1000"):
        SyntheticArithmeticLoader(1, num_train=701)


@pytest.mark.parametrize("kwargs", [{"difficulty": 5}, {"difficulty": 0}, {"num_train": 0}, {"seed": "a"}])
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticArithmeticLoader(**kwargs)
