"""Faults and bad input: one test per fault, each checking its documented outcome.

The outcome is always one of: an error naming the thing and what would be accepted, or a counted, logged skip.
Never a silent 0, a hang, a bare traceback from deep inside a library, or a lost model or checkpoint.

| # | fault | outcome | enforced in |
|---|---|---|---|
| 1 | reward raises | RewardFunctionError: reward, exception, first completion | rewards/base.py GuardedReward |
| 2 | reward hangs | RewardFunctionError after reward_timeout_s (default 600 s) | GuardedReward, config |
| 3 | reward NaN / inf | RewardFunctionError: reward, value, sample | GuardedReward |
| 4 | wrong number of values | RewardFunctionError: reward, counts | GuardedReward |
| 5 | math verifier stuck, in a thread | None (judge error), counted, one warning | rewards/math_verifier.py, GuardedReward |
| 6 | empty / EOS-only completion | scored 0 (no_answer), trains (GRPO, PPO) | rewards/math.py, TRL, backends/ppo/rollout.py |
| 7 | bad row (missing / wrong type) | DataError / ConfigError / RewardFunctionError naming row+column | data/ |
| 8 | empty dataset | ConfigError / DataError | data/rows.py (as_dataset), data/base.py |
| 9 | unknown / conflicting config | ConfigError naming field, value, accepted | config.py |
| 10 | model / data path missing | ModelResolutionError / FileNotFoundError listing tried | models/, data/sources.py |
| 11 | output folder not writable | OSError when the trainer is built, naming the folder | files/output_folders.py, trainer |
| 12 | disk full: model / checkpoint | OSError ENOSPC naming the folder; old model kept, no checkpoint-N | files/ |

Related tests elsewhere: training/test_trainer.py (faults 1, 3, 4, 8 through GRPO), rewards/test_math.py (the verifier's
deadline and crash handling), data/test_data.py (bad rows in each file format), backends/ppo/test_ppo.py (a crash
mid-checkpoint).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from posttrain_llm.online_rl_trainer import (
    ConfigError,
    CustomLoader,
    MathRewardFunction,
    OnlineRLTrainer,
    RewardFunctionError,
    TrainerConfig,
)
from posttrain_llm.online_rl_trainer.core.data.base import DataError
from posttrain_llm.online_rl_trainer.core.data.math import GSM8KLoader
from posttrain_llm.online_rl_trainer.core.models import ModelResolutionError, load_model_and_tokenizer
from posttrain_llm.online_rl_trainer.core.rewards import FormatRewardFunction, GuardedReward, answers_equivalent
from tests.builders import plus_one_rows

torch.set_num_threads(1)

PATHOLOGICAL = r"9^{9^{9^{9}}}"  # math-verify would compute this tower of powers for ever


def _config(tmp_path, tiny_model_dir, **kw):
    base = dict(model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3, kl_coef=0.0,
                max_completion_length=4, num_generations=2, per_device_train_batch_size=4,
                output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1)
    if kw.get("trainer_type") == "ppo":
        base.update(ppo_epochs=1, num_mini_batches=1)
    base.update(kw)
    return TrainerConfig(**base)


def _completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


# ------------------------------------------------------------------------------------------------ 1. raises
def test_1_reward_that_raises_stops_training_naming_the_reward_and_the_error():
    # Through a GRPO step: test_trainer.py::test_misbehaving_reward_stops_training_with_its_name.
    def lookup(completions, answer, **kwargs):
        return [{"1": 1.0}[a] for a in answer]

    with pytest.raises(RewardFunctionError) as err:
        GuardedReward(lookup)(_completions("one", "two"), answer=["1", "2"])
    msg = str(err.value)
    assert "reward 'lookup' raised KeyError: '2'" in msg and "batch of 2 completions" in msg and "'one'" in msg
    assert isinstance(err.value.__cause__, KeyError)  # the original traceback is kept as the cause


# ------------------------------------------------------------------------------------------------- 2. hangs
def test_2_reward_that_hangs_stops_training_at_reward_timeout_s(tmp_path, tiny_model_dir):
    release = threading.Event()

    def stuck(completions, **kwargs):
        release.wait(60)  # a lock that is never released, a network call without a timeout...
        return [0.0] * len(completions)

    assert TrainerConfig(model_name_or_path="m").reward_timeout_s == 600.0  # a deadline by default
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, reward_timeout_s=0.5), stuck, plus_one_rows(8))
    start = time.perf_counter()
    try:
        with pytest.raises(RewardFunctionError) as err:
            trainer.train()
    finally:
        release.set()  # let the abandoned thread finish so it does not outlive the test
    assert time.perf_counter() - start < 30
    msg = str(err.value)
    assert "reward 'stuck' did not return within reward_timeout_s=0.5 s" in msg
    assert "raise reward_timeout_s (None: no deadline)" in msg
    with pytest.raises(ConfigError, match=r"reward_timeout_s=0 must be a finite number of seconds > 0, or None"):
        TrainerConfig(model_name_or_path="m", reward_timeout_s=0)


# ----------------------------------------------------------------------------------------------- 3. NaN/inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_3_reward_returning_nan_or_inf_stops_training_naming_the_sample(bad):
    # NaN through a GRPO step: test_trainer.py::test_misbehaving_reward_stops_training_with_its_name.
    def shaky(completions, **kwargs):
        return [1.0, bad]

    with pytest.raises(RewardFunctionError) as err:
        GuardedReward(shaky)(_completions("fine", "the bad one"))
    msg = str(err.value)
    assert f"reward 'shaky' returned {bad} for sample 1 ('the bad one')" in msg
    assert "rewards must be finite (return None if the judge could not decide)" in msg


# ------------------------------------------------------------------------------------------ 4. wrong length
def test_4_reward_returning_the_wrong_number_of_values_is_an_error():
    def one_per_prompt(completions, **kwargs):
        return [1.0]

    with pytest.raises(RewardFunctionError) as err:
        GuardedReward(one_per_prompt)(_completions("a", "b", "c"))
    assert ("reward 'one_per_prompt' returned 1 values for 3 completions; it must return exactly one value (a float, "
            "or None when the judge cannot decide) per completion") in str(err.value)


# ---------------------------------------------------------------------------- 5. verifier stuck in a thread
def test_5_stuck_math_verifier_in_a_worker_thread_is_a_counted_logged_judge_error(caplog):
    answers_equivalent("x+1", "1+x")  # start the checking process before the clock runs
    guarded = GuardedReward(MathRewardFunction(timeout_seconds=0.5))
    caplog.set_level(logging.WARNING, logger="posttrain_llm.online_rl_trainer.core.rewards.base")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:  # math-verify's own signal.alarm timeout cannot work here
        future = pool.submit(guarded, _completions(r"\boxed{" + PATHOLOGICAL + "}", r"\boxed{5}"), answer=["5", "5"])
        scores = future.result(timeout=30)
    assert time.perf_counter() - start < 5
    assert scores == [None, 1.0]  # None: the judge could not decide; never a 0 for the model
    assert (guarded.none_count, guarded.total_count) == (1, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "reward 'math_accuracy' could not judge 1 of 2 completions" in warnings[0]
    assert "rewards/math_accuracy/judge_errors" in warnings[0]
    verdict = MathRewardFunction(timeout_seconds=0.5).score(r"\boxed{" + PATHOLOGICAL + "}", answer="5")
    assert (verdict.score, verdict.status) == (None, "error") and "VerifierTimeout" in verdict.reason


# --------------------------------------------------------------------------------- 6. empty / EOS-only output
def _eos_only_model(tiny_model_dir):
    """The tiny model with its EOS logit pushed far up: every completion is EOS alone (empty text)."""
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    bias = torch.zeros(model.config.vocab_size)
    bias[tok.eos_token_id] = 1e4
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias.to(logits.dtype))
    return model, tok


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_6_empty_completion_is_scored_wrong_and_training_goes_on(algo, tmp_path, tiny_model_dir):
    for text in ("", "   \n"):
        verdict = MathRewardFunction().score(text, answer="5")
        assert (verdict.score, verdict.status) == (0.0, "no_answer")  # the model's fault: not a judge error
        assert FormatRewardFunction(kind="boxed").score(text).score == 0.0
    model, tok = _eos_only_model(tiny_model_dir)
    seen = []

    def math_reward(completions, **kwargs):
        seen.extend(c[0]["content"] for c in completions)
        return MathRewardFunction()(completions, **kwargs)

    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, trainer_type=algo), math_reward, plus_one_rows(8),
                              model=model, tokenizer=tok)
    trainer.train()
    assert seen and set(seen) == {""}
    logged = next(h for h in trainer.metrics_history if "reward" in h)
    assert logged["reward"] == 0.0 and logged["completions/mean_length"] == 1.0  # the EOS token alone
    assert logged["rewards/math_reward/judge_errors"] == 0.0
    assert all(torch.isfinite(p).all() for p in trainer.backend.model.parameters())


# ------------------------------------------------------------------------------- 7. bad row: missing / typed
@pytest.mark.parametrize("path, rows, error, fragment", [
    ("loader", [{"prompt": "1+1=", "answer": "2"}, {"prompt": 7, "answer": "8"}], DataError,
     "<list>: row 1, column 'prompt': expected a string, got int 7 (write it as the string \"7\")"),
    ("loader", [{"prompt": "1+1=", "answer": ["2"]}], DataError,
     "<list>: row 0, column 'answer': expected a string, got list ['2']"),
    ("loader", [{"prompt": "1+1="}], DataError,
     "<list>: row 0, column 'answer': missing value; the row has columns ['prompt']"),
    ("trainer", [{"prompt": "1+1=", "answer": "2"}, {"prompt": 7, "answer": "8"}], ConfigError,
     "train_data row 1: prompt is 7 (int); expected a non-empty string or a non-empty list of {'role': ..."),
    ("trainer", [{"prompt": "1+1=", "answer": "2"}, {"answer": "8"}], ConfigError,
     "train_data row 1: prompt is None (NoneType); expected a non-empty string"),
    ("trainer", [{"prompt": [{"role": "user"}], "answer": "2"}], ConfigError,
     "train_data row 0: prompt is [{'role': 'user'}] (list); expected"),
    ("trainer", [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": 4}], DataError,
     "train_data, column 'answer': values of mixed types ['int', 'str'] cannot form one column"),
    ("reward", [{"prompt": "1+1=", "answer": ["2"]}], RewardFunctionError,
     "reward 'math_accuracy': column 'answer' holds ['2'] (type list); expected the gold answer as a string"),
    ("reward", [{"prompt": "1+1="}], RewardFunctionError,
     "reward 'math_accuracy' needs the gold answer in column 'answer', but the row has only"),
])
def test_7_bad_row_is_an_error_naming_the_row_and_column(path, rows, error, fragment, tmp_path, tiny_model_dir):
    with pytest.raises(error) as err:
        if path == "loader":
            CustomLoader(rows).load()
        elif path == "trainer":  # checked before the model is even loaded
            OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(), rows)
        else:  # what the trainer passes a reward: the row's columns as lists
            columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
            GuardedReward(MathRewardFunction())(_completions(r"\boxed{2}"), **columns)
    assert fragment in str(err.value)


# ---------------------------------------------------------------------------------------- 8. empty dataset
@pytest.mark.parametrize("case, error, fragment", [
    ("train list", ConfigError, "train_data is empty: there is nothing to train or evaluate on"),
    ("train Dataset", ConfigError, "train_data is empty"),
    ("eval list", ConfigError, "eval_data is empty"),
    ("loader list", DataError, "CustomLoader split None: no valid rows (0 skipped as invalid); a split needs"),
    ("loader file", DataError, "empty.jsonl): no valid rows (0 skipped as invalid)"),
])
def test_8_empty_dataset_is_an_error_before_training(case, error, fragment, tmp_path, tiny_model_dir):
    from datasets import Dataset

    with pytest.raises(error) as err:
        if case == "train list":
            OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(), [])
        elif case == "train Dataset":
            OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(),
                            Dataset.from_dict({"prompt": [], "answer": []}))
        elif case == "eval list":
            OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(), plus_one_rows(8), eval_data=[])
        elif case == "loader list":
            CustomLoader([]).load()
        else:
            (tmp_path / "empty.jsonl").write_text("\n\n")
            CustomLoader(tmp_path / "empty.jsonl").load()
    assert fragment in str(err.value)


# ------------------------------------------------------------------------------------------- 9. bad config
@pytest.mark.parametrize("kwargs, yaml_text, fragment", [
    (dict(trainer_type="dpo"), None, "trainer_type='dpo' is not supported; accepted values: grpo, rloo, ppo"),
    (dict(trainer_type="rloo", loss_type="dr_grpo"), None,
     "loss_type='dr_grpo' applies to trainer_type='grpo' only (got trainer_type='rloo'); leave it at 'dapo'"),
    (dict(trainer_type="ppo", scale_rewards="none"), None, "scale_rewards='none' applies to trainer_type='grpo' only"),
    (dict(clip_range=0.2, clip_range_high=0.1), None,
     "clip_range_high=0.1 is below clip_range=0.2: the upper clip must be >= the lower one"),
    (dict(trainer_type="ppo", trl_kwargs={"top_k": 3}), None, "given with trainer_type='ppo'"),
    ({}, "model_name_or_path: m\nlearnig_rate: 0.1\n", "unknown TrainerConfig field(s) ['learnig_rate']; known fields:"),
    ({}, "- a list, not a mapping\n", "a TrainerConfig must be built from a mapping, got list"),
    ({}, "model_name_or_path: m\ntrainer_type: sft\n", "trainer_type='sft' is not supported; accepted values"),
])
def test_9_unknown_or_conflicting_config_is_an_error_naming_the_field(kwargs, yaml_text, fragment, tmp_path):
    with pytest.raises(ConfigError) as err:
        if yaml_text is None:
            TrainerConfig(model_name_or_path="m", **kwargs)
        else:
            (tmp_path / "run.yaml").write_text(yaml_text)
            TrainerConfig.from_yaml(tmp_path / "run.yaml")
    assert fragment in str(err.value)
    if yaml_text is not None:
        assert f"config file {str(tmp_path / 'run.yaml')!r}: " in str(err.value)  # which file to fix


# ---------------------------------------------------------------------------------- 10. paths that are not there
@pytest.mark.parametrize("what", ["model folder", "data file", "data folder", "data dir", "config file"])
def test_10_missing_model_or_dataset_path_is_an_error_listing_what_was_tried(what, tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    missing = tmp_path / "no-such-thing"
    # A data_dir without the file falls back to $ONLINE_RL_DATA_DIR (documented, tests/data/test_math_data.py); CI sets it,
    # so take it away: the case here is "no local copy anywhere".
    monkeypatch.delenv("ONLINE_RL_DATA_DIR", raising=False)
    with pytest.raises((FileNotFoundError, ConfigError)) as err:
        if what == "model folder":
            OnlineRLTrainer(_config(tmp_path, tiny_model_dir, model_name_or_path=str(missing)), MathRewardFunction(),
                            plus_one_rows(8))
        elif what == "data file":
            CustomLoader(missing.with_suffix(".jsonl")).load()
        elif what == "data folder":
            CustomLoader(missing).load()  # no extension: still "not found", not "cannot tell the format"
        elif what == "data dir":
            GSM8KLoader(data_dir=missing, use_hub=False).load("train")
        else:
            TrainerConfig.from_yaml(missing.with_suffix(".yaml"))
    msg = str(err.value)
    expected = {
        "model folder": [f"could not resolve model {str(missing)!r}", f"local folder {str(missing)!r}: does not exist",
                         "Give a local folder holding config.json", "'builtin:tiny-char-llama'"],
        "data file": [f"data file not found: {missing.with_suffix('.jsonl')}", "pass an existing jsonl/json/csv/parquet"],
        "data folder": [f"data file not found: {missing};"],
        "data dir": [f"local file {missing / 'gsm8k' / 'train.jsonl'} (not found)", "Fix: pass data_dir=<folder>"],
        "config file": [f"config file {str(missing.with_suffix('.yaml'))!r} does not exist"],
    }[what]
    for fragment in expected:
        assert fragment in msg
    if what == "model folder":
        assert isinstance(err.value, ModelResolutionError)


# ---------------------------------------------------------------------------- 11. output folder not writable
@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_11_unwritable_output_folder_is_an_error_before_any_work(where, tmp_path, tiny_model_dir):
    # chmod does not stop root, so use places no one can write: a folder under a regular file, or /proc.
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "out" if where == "under a file" else Path("/proc/posttrain-llm-test/out")
    with pytest.raises(OSError) as err:
        OnlineRLTrainer(_config(tmp_path, tiny_model_dir, output_dir=str(bad)), MathRewardFunction(), plus_one_rows(8))
    assert f"cannot write to output_dir {str(bad)!r}: " in str(err.value)
    assert "pass a folder that exists (or can be created) on a writable disk" in str(err.value)
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir), MathRewardFunction(), plus_one_rows(8))
    with pytest.raises(OSError) as err:
        trainer.save_model(bad / "final")
    assert f"cannot write to model folder {str(bad / 'final')!r}: its parent folder" in str(err.value)


# ------------------------------------------------------------------------------------- 12. disk full on save
def _full_disk(exc):
    """A stand-in for safetensors' save_file that fills the disk part-way through the weights file."""
    def save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)
        raise exc

    return save_file


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    "SafetensorError",  # what safetensors really raises on a full disk (checked on a full tmpfs)
])
def test_12_full_disk_while_saving_keeps_the_old_model_and_names_the_folder(failure, tmp_path, tiny_model_dir,
                                                                           monkeypatch):
    import transformers.modeling_utils as modeling_utils
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    if failure == "SafetensorError":
        failure = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_steps=2), MathRewardFunction(), plus_one_rows(8))
    final = trainer.save_model(tmp_path / "final")  # a good model, saved before the disk filled up
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    monkeypatch.setattr(modeling_utils, "safe_save_file", _full_disk(failure))
    for target in (final, tmp_path / "fresh"):
        with pytest.raises(OSError) as err:
            trainer.save_model(target)
        assert err.value.errno == errno.ENOSPC
        assert f"could not save the model folder {str(target)!r}: no space left on device" in str(err.value)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before  # untouched, byte for byte
    assert not (tmp_path / "fresh").exists()  # nothing that could pass for a saved model
    assert sorted(p.name for p in tmp_path.iterdir() if ".saving" in p.name) == []  # staging removed
    monkeypatch.undo()
    assert AutoModelForCausalLM.from_pretrained(final) is not None


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_12_full_disk_while_checkpointing_names_the_folder_and_leaves_no_checkpoint(algo, tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    import transformers.modeling_utils as modeling_utils
    from transformers.trainer_utils import get_last_checkpoint

    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, trainer_type=algo, save_steps=1), MathRewardFunction(),
                              plus_one_rows(8))
    monkeypatch.setattr(modeling_utils, "safe_save_file", _full_disk(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as err:
        trainer.train()
    out = tmp_path / "out"
    assert err.value.errno == errno.ENOSPC
    assert f"training stopped at step 1: no space left on device while writing under output_dir {str(out)!r}" in str(
        err.value)
    assert not list(out.glob("checkpoint-*")) and get_last_checkpoint(str(out)) is None  # nothing to resume wrongly
