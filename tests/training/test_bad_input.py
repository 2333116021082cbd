"""Bad input that used to pass silently or fail unclearly (issue 16): each test reproduces the original failure.

Config values of the wrong type, YAML quirks (duplicate keys, encodings, empty files, YAML 1.1 floats), data files
with duplicate columns or bad bytes, too few prompts for one step, rewards returning None, mismatched evaluations
handed to ``compare_results``, evaluator settings out of range, huge prompts. The CLI side (one clean line, exit
code 2) is in ``test_cli_errors.py``.
"""

from __future__ import annotations

import math
import time

import pytest

from posttrain_llm.online_rl_trainer import (
    ConfigError,
    CustomLoader,
    MathRewardFunction,
    ModelEvaluator,
    OnlineRLTrainer,
    RewardFunctionError,
    TrainerConfig,
)
from posttrain_llm.online_rl_trainer.core.common.errors import UserError
from posttrain_llm.online_rl_trainer.core.data.base import DataError
from posttrain_llm.online_rl_trainer.core.eval.compare import compare_results
from posttrain_llm.online_rl_trainer.core.eval.scoring import judge
from posttrain_llm.online_rl_trainer.core.rewards import GuardedReward
from tests.builders import plus_one_rows

# --------------------------------------------------------------------------------------------- config types

@pytest.mark.parametrize("field, value", [("bf16", "false"), ("use_gpu", "no"), ("use_peft", "False"),
                                          ("whiten_advantages", 0), ("adaptive_kl", None)])
def test_boolean_fields_take_only_booleans(field, value):
    # Before: bf16='false' and use_gpu='no' were non-empty strings, hence True.
    with pytest.raises(ConfigError, match=rf"{field}={value!r}.*must be true or false"):
        TrainerConfig(**{field: value})


@pytest.mark.parametrize("field, value, fragment", [
    ("num_generations", 1.7, "num_generations=1.7 (float) must be an integer"),
    ("max_steps", 10.0, "max_steps=10.0 (float) must be an integer"),
    ("lora_r", "8", "lora_r='8' (str) must be an integer"),
    ("seed", True, "seed=True (bool) must be an integer"),
    ("save_total_limit", 2.5, "save_total_limit=2.5 (float) must be an integer or None"),
    ("learning_rate", "1e-5", "learning_rate='1e-5' (str) must be a number"),
    ("kl_coef", False, "kl_coef=False (bool) must be a number"),
    ("run_name", 7, "run_name=7 (int) must be a string or None"),
    ("output_dir", None, "output_dir=None is not allowed"),
    ("output_dir", "  ", "output_dir='  ': give the folder"),
    ("lora_target_modules", [], "lora_target_modules=[]"),
])
def test_other_type_slips_are_errors_naming_the_field(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainerConfig(**{field: value})


def test_report_to_names_the_accepted_integrations():
    with pytest.raises(ConfigError, match=r"\['wandbx'\] not known; accepted integrations: none, all, .*tensorboard"):
        TrainerConfig(report_to="wandbx")
    assert TrainerConfig(report_to=["tensorboard"]).report_to == ["tensorboard"]


def test_config_errors_are_user_errors_and_still_value_errors():
    with pytest.raises(ValueError) as err:
        TrainerConfig(bf16="no")
    assert isinstance(err.value, UserError)


# --------------------------------------------------------------------------------------------- YAML files

def _yaml(tmp_path, text: str | bytes):
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_yaml_string_booleans_are_errors_naming_the_file(tmp_path):
    path = _yaml(tmp_path, "trainer_type: grpo\nuse_gpu: 'no'\n")
    with pytest.raises(ConfigError, match=r"config\.yaml'.*use_gpu='no'.*true or false"):
        TrainerConfig.from_yaml(path)


def test_yaml_duplicate_key_is_an_error_naming_key_and_lines(tmp_path):
    # Before: the last value won silently.
    path = _yaml(tmp_path, "seed: 1\nlearning_rate: 0.001\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"config\.yaml'.*key 'seed' appears twice \(lines 1 and 3\)"):
        TrainerConfig.from_yaml(path)
    nested = _yaml(tmp_path, "trl_kwargs:\n  top_k: 5\n  top_k: 6\n")
    with pytest.raises(ConfigError, match=r"key 'top_k' appears twice \(lines 2 and 3\)"):
        TrainerConfig.from_yaml(nested)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = _yaml(tmp_path, "trl_kwargs: &base {top_k: 5}\nreward_weights: null\nrun_name: x\n")
    assert TrainerConfig.from_yaml(path).run_name == "x"


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "null\n", "~\n"])
def test_empty_or_null_yaml_is_an_error(tmp_path, text):
    # Before: silently ran the defaults.
    with pytest.raises(ConfigError, match="is empty; expected a mapping of TrainerConfig fields"):
        TrainerConfig.from_yaml(_yaml(tmp_path, text))


def test_non_utf8_yaml_names_the_file_and_line(tmp_path):
    # Before: a raw UnicodeDecodeError without the file.
    path = _yaml(tmp_path, "seed: 1\nrun_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config\.yaml' is not UTF-8 text: cannot decode line 2, column 14 "
                                          r"\(byte 0xe9\)"):
        TrainerConfig.from_yaml(path)
    assert TrainerConfig.from_yaml(_yaml(tmp_path, "\ufeffrun_name: caf\xe9\n".encode())).run_name == "caf\xe9"


@pytest.mark.parametrize("text, expected", [("learning_rate: 1e-5", 1e-5), ("learning_rate: '2E-4'", 2e-4),
                                            ("critic_learning_rate: +3e-6", 3e-6), ("temperature: 7e-1", 0.7)])
def test_yaml_11_float_strings_are_read_as_numbers_for_float_fields(tmp_path, text, expected):
    # Before: PyYAML (YAML 1.1) reads 1e-5 as a string, rejected as "'1e-5' must be a finite number > 0".
    config = TrainerConfig.from_yaml(_yaml(tmp_path, text + "\n"))
    assert getattr(config, text.split(":")[0]) == expected


@pytest.mark.parametrize("text, fragment", [("max_steps: 1e3", "max_steps='1e3' (str) must be an integer"),
                                            ("learning_rate: fast", "learning_rate='fast' (str) must be a number"),
                                            ("kl_coef: nan", "kl_coef='nan' (str) must be a number")])
def test_yaml_strings_other_than_float_numbers_stay_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainerConfig.from_yaml(_yaml(tmp_path, text + "\n"))


# --------------------------------------------------------------------------------------------- data files

def test_csv_with_a_duplicate_column_is_an_error_naming_file_and_column(tmp_path):
    # Before: csv.DictReader silently kept the last 'answer' column.
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer,answer\nQ1,1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: the CSV header names column\(s\) \['answer'\] more than once"):
        CustomLoader(path).load()


@pytest.mark.parametrize("name, text, where", [
    ("d.jsonl", '{"prompt": "Q1", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n', "line 2, column 16"),
    ("d.csv", "prompt,answer\nQ1,1\ncaf\xe9,2\n", "line 3, column 4"),
    ("d.jsonl.gz", '{"prompt": "\xe9", "answer": "1"}\n', "line 1, column 13"),
])
def test_non_utf8_data_file_names_the_file_and_line(tmp_path, name, text, where):
    # Before: a raw UnicodeDecodeError without file, row or line.
    import gzip

    path = tmp_path / name
    raw = text.encode("latin-1")
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(DataError, match=rf"{path}: not UTF-8 text: cannot decode {where} \(byte 0xe9\)"):
        CustomLoader(path).load()


def test_missing_data_file_is_a_user_error_and_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found") as err:
        CustomLoader(tmp_path / "nope.jsonl").load()
    assert isinstance(err.value, UserError)


def test_more_samples_than_rows_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "Q", "answer": "1"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl\).*num_samples=5 but .* has only 1 valid rows"):
        CustomLoader(path).load(num_samples=5)


# --------------------------------------------------------------------------------------------- rewards

@pytest.mark.parametrize("returned, fragment", [(None, r"returned None .* is a `return` missing\?"),
                                                (0.5, r"returned 0\.5 \(type float\)"),
                                                ("1.0", r"returned '1\.0' \(type str\)")])
def test_reward_returning_no_list_is_an_error_naming_the_reward(returned, fragment):
    # Before: None gave a raw TypeError ("'NoneType' object is not iterable") that named no reward.
    def forgetful(completions, **kwargs):
        return returned

    with pytest.raises(RewardFunctionError, match=rf"reward 'forgetful' {fragment}"):
        GuardedReward(forgetful)([[{"role": "assistant", "content": "1"}]], answer=["1"])
    with pytest.raises(RewardFunctionError, match=rf"reward 'forgetful' {fragment}"):
        judge(forgetful, ["1"], [{"prompt": "p", "answer": "1"}])  # the evaluator's path


# --------------------------------------------------------------------------------------------- evaluator

@pytest.mark.parametrize("kwargs, fragment", [
    ({"temperature": math.nan}, r"temperature=nan must be a finite number >= 0"),
    ({"temperature": -1.0}, r"temperature=-1\.0 must be a finite number >= 0"),
    ({"top_p": 0.0}, r"top_p=0\.0 must be in \(0, 1\]"),
    ({"top_p": 2}, r"top_p=2 must be in \(0, 1\]"),
    ({"max_new_tokens": 1.5}, r"max_new_tokens=1\.5 must be an integer >= 1"),
    ({"backend": "onnx"}, r"backend='onnx'"),
])
def test_evaluator_settings_are_checked_before_the_model_loads(kwargs, fragment):
    # Before: temperature=nan and top_p 0 or 2 were accepted and failed (or sampled oddly) inside generate().
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=fragment):
        ModelEvaluator("no/such-model-is-loaded", **kwargs)
    assert time.perf_counter() - start < 1.0  # the model name was never resolved


@pytest.fixture(scope="module")
def tiny_evaluator_parts(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


ROWS = [{"prompt": [{"role": "user", "content": f"{i}+1="}], "answer": str(i + 1)} for i in range(4)]


def test_num_samples_per_problem_must_be_an_integer(tiny_evaluator_parts):
    # Before: 1.7 silently became 1 sample per problem.
    ev = ModelEvaluator(*tiny_evaluator_parts, max_new_tokens=2, temperature=1.0, show_progress=False)
    with pytest.raises(ConfigError, match=r"num_samples_per_problem=1\.7 must be an integer >= 1"):
        ev.evaluate(ROWS, MathRewardFunction(), num_samples_per_problem=1.7)


@pytest.mark.parametrize("change, fragment", [
    ({"reward": MathRewardFunction(mode="lenient")}, r"reward: A 'math_accuracy', B 'math_accuracy_lenient'; "
                                                     r"reward_settings mode: A 'strict', B 'lenient'"),
    ({"max_new_tokens": 3}, r"max_new_tokens: A 2, B 3"),
    ({"temperature": 1.0}, r"temperature: A 0\.0, B 1\.0"),
    ({"success_threshold": 0.5}, r"success_threshold: A 1\.0, B 0\.5"),
])
def test_compare_results_refuses_evaluations_produced_differently(tiny_evaluator_parts, change, fragment):
    # Before: happily reported "B is better, p = 1.9e-09" for a strict-vs-lenient or greedy-vs-sampled pair.
    def run(reward=None, max_new_tokens=2, temperature=0.0, success_threshold=1.0):
        ev = ModelEvaluator(*tiny_evaluator_parts, max_new_tokens=max_new_tokens, temperature=temperature,
                            show_progress=False)
        return ev.evaluate(ROWS, reward or MathRewardFunction(), success_threshold=success_threshold)

    a, b = run(), run(**change)
    with pytest.raises(ConfigError, match=rf"not produced alike: {fragment}.*allow_mismatch=True"):
        compare_results(a, b)
    c = compare_results(a, b, allow_mismatch=True)
    assert c["setting_mismatches"] and c["n_paired"] == len(ROWS)
    assert "setting_mismatches" not in compare_results(a, run())  # the same settings compare as before


# --------------------------------------------------------------------------------------------- trainer input

def _rows(n):
    return plus_one_rows(n)


def _config(tmp_path, tiny_model_dir, **kw):
    return TrainerConfig(**{**dict(model_name_or_path=str(tiny_model_dir), max_steps=1, kl_coef=0.0,
                                   max_completion_length=4, num_generations=2, per_device_train_batch_size=8,
                                   output_dir=str(tmp_path / "out"), torch_num_threads=1), **kw})


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_too_few_prompts_for_one_step_is_an_error_before_training(algo, tmp_path, tiny_model_dir):
    # Before: 3 prompts where a step needs 4 trained 0 steps, saved a "final" model and returned normally.
    config = _config(tmp_path, tiny_model_dir, trainer_type=algo)
    with pytest.raises(ConfigError, match=rf"train_data has 3 prompts but one {algo} step needs 4: "
                                          r"generation_batch_size=8 completions .* / num_generations=2"):
        OnlineRLTrainer(config, MathRewardFunction(), _rows(3))
    with pytest.raises(ConfigError, match=r"has 11 prompts but one .* step needs 12.*steps_per_generation=3"):
        OnlineRLTrainer(config.replace(gradient_accumulation_steps=3), MathRewardFunction(), _rows(11))
    assert OnlineRLTrainer(config, MathRewardFunction(), _rows(4)).train_dataset.num_rows == 4  # exactly enough


def test_huge_prompt_is_rejected_by_its_length_before_tokenizing(tmp_path, tiny_model_dir):
    # Before: a 10 MB prompt was tokenized whole (about 4 GB with a real tokenizer) just to be rejected.
    rows = _rows(4)
    rows[2]["prompt"] = [{"role": "user", "content": "1+" * 5_000_000 + "1="}]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"prompt of row 2 has 10000002 characters, more than "
                                          r"max_prompt_length=512 tokens can hold"):
        OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(), rows)
    assert time.perf_counter() - start < 30


def test_prompt_length_bound_never_rejects_a_prompt_that_fits(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.common.tokens import encode_prompt, max_chars_per_token, question_chars
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    _, tok = load_model_and_tokenizer(str(tiny_model_dir))
    bound = max_chars_per_token(tok)
    for text in ("1+1=", "  12+30=  ", "x" * 300):
        prompt = [{"role": "system", "content": "s" * 50}, {"role": "user", "content": text}]
        assert len(encode_prompt(tok, prompt)) >= question_chars(prompt) / bound
