"""RewardModelFunction (core/models/reward_model.py) on a tiny reward model: scores, batching and padding,
rendering, truncation, normalisation, settings and folder errors, and its place among other rewards."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from posttrain_llm.online_rl_trainer import (
    CompositeRewardFunction,
    ConfigError,
    FormatRewardFunction,
    ModelResolutionError,
    RewardModelConfig,
    RewardModelFunction,
)
from posttrain_llm.online_rl_trainer.core.eval.scoring import judge
from posttrain_llm.online_rl_trainer.core.models.reward_model import (
    INFO_FILENAME,
    encode_for_reward_model,
    load_sequence_classifier,
)
from posttrain_llm.online_rl_trainer.core.rewards.base import GuardedReward
from tests.builders import chat

torch.set_num_threads(1)

PROMPTS = [chat("12+7="), chat("3+4="), chat("99+9="), chat("5+5=")]
COMPLETIONS = [[{"role": "assistant", "content": c}] for c in ("\\boxed{19}", "7", "\\boxed{108} and more", "1")]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with a (seeded, untrained) score head, saved as a reward-model folder."""
    torch.manual_seed(0)
    model, tokenizer = load_sequence_classifier(str(tiny_model_dir), require_trained_head=False)
    with torch.no_grad():  # a head large enough that scores differ clearly between inputs
        model.score.weight.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("rm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm(rm_dir):
    return RewardModelFunction(str(rm_dir), batch_size=3)


def test_one_finite_float_per_completion(rm):
    values = rm(COMPLETIONS, prompts=PROMPTS)
    assert len(values) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert len(set(values)) == 4  # the inputs differ, so do the scores
    assert rm(COMPLETIONS, prompts=PROMPTS) == values  # deterministic


@pytest.mark.parametrize("batch_size", [1, 2, 4, 16])
def test_a_score_does_not_depend_on_its_batch_or_padding(rm_dir, batch_size):
    alone = [RewardModelFunction(str(rm_dir), batch_size=1)([c], prompts=[p])[0] for p, c in zip(PROMPTS, COMPLETIONS)]
    batched = RewardModelFunction(str(rm_dir), batch_size=batch_size)(COMPLETIONS, prompts=PROMPTS)
    assert batched == pytest.approx(alone, abs=1e-5)


def test_string_and_message_forms_score_the_same(rm):
    as_messages = rm([COMPLETIONS[0]], prompts=[PROMPTS[0]])
    as_strings = rm(["\\boxed{19}"], prompts=["12+7="])
    assert as_strings == pytest.approx(as_messages, abs=1e-6)


def test_the_chat_template_renders_prompt_and_completion_as_one_conversation(rm):
    tok = rm.tokenizer
    ids, cut = encode_for_reward_model(tok, PROMPTS[0], COMPLETIONS[0], 512, use_chat_template=True)
    text = tok.apply_chat_template(PROMPTS[0] + COMPLETIONS[0], tokenize=False)
    assert text == "<|im_start|>user\n12+7=<|im_end|>\n<|im_start|>assistant\n\\boxed{19}<|im_end|>\n"
    assert ids == tok(text, add_special_tokens=False)["input_ids"] and not cut
    plain, _ = encode_for_reward_model(tok, PROMPTS[0], COMPLETIONS[0], 512, use_chat_template=False)
    assert tok.decode(plain) == "12+7=\\boxed{19}<|im_end|>"  # plain text ends with EOS, as TRL trains it


def test_a_tokenizer_without_chat_template_is_read_as_plain_text(rm_dir, tmp_path):
    folder = tmp_path / "plain"
    shutil.copytree(rm_dir, folder)
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config.pop("chat_template", None)
    config_path.write_text(json.dumps(tok_config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    plain = RewardModelFunction(str(folder))
    assert not plain.use_chat_template
    forced = RewardModelFunction(str(rm_dir), use_chat_template=False)
    assert plain(COMPLETIONS, prompts=PROMPTS) == pytest.approx(forced(COMPLETIONS, prompts=PROMPTS), abs=1e-6)
    with pytest.raises(ConfigError, match="has no chat template"):
        RewardModelFunction(str(folder), use_chat_template=True)


def test_long_inputs_lose_their_oldest_tokens_and_are_counted(rm_dir):
    rm = RewardModelFunction(str(rm_dir), max_length=12, name="short_rm")
    logged = []
    long_prompt = chat("1+1+1+1+1+1+1+1+1+1+1+1=")
    values = rm(["\\boxed{12}", "7"], prompts=[long_prompt, chat("1=")], log_metric=lambda k, v: logged.append((k, v)))
    ids, cut = encode_for_reward_model(rm.tokenizer, long_prompt, "\\boxed{12}", 12, True)
    assert cut and len(ids) == 12 and rm.tokenizer.decode(ids).endswith("\\boxed{12}<|im_end|>\n")
    assert rm.truncated_count == 2 and rm.scored_count == 2  # "1=" with its chat markers is 20 tokens too
    assert logged == [("rewards/short_rm/truncated", 2.0)]
    assert all(math.isfinite(v) for v in values)


def test_normalisations(rm_dir, rm):
    raw = rm(COMPLETIONS, prompts=PROMPTS)
    sig = RewardModelFunction(str(rm_dir), normalize="sigmoid")(COMPLETIONS, prompts=PROMPTS)
    assert sig == pytest.approx([1 / (1 + math.exp(-x)) for x in raw], abs=1e-6)
    z = RewardModelFunction(str(rm_dir), normalize="batch_z")(COMPLETIONS, prompts=PROMPTS)
    assert sum(z) == pytest.approx(0.0, abs=1e-6) and sum(v * v for v in z) / len(z) == pytest.approx(1.0, abs=1e-5)
    assert RewardModelFunction(str(rm_dir), normalize="batch_z")(COMPLETIONS[:1], prompts=PROMPTS[:1]) == [0.0]
    fixed = RewardModelFunction(str(rm_dir), normalize="fixed", mean=1.0, std=2.0)(COMPLETIONS, prompts=PROMPTS)
    # a fresh model instance scores the same batch to a few fp32 ulps (1.4e-6 on -5.92 seen on an AVX2 CPU): relative
    assert fixed == pytest.approx([(x - 1.0) / 2.0 for x in raw], rel=1e-6, abs=1e-6)


def test_fixed_normalisation_reads_the_training_statistics(rm_dir, rm, tmp_path):
    folder = tmp_path / "with_stats"
    shutil.copytree(rm_dir, folder)
    (folder / INFO_FILENAME).write_text(json.dumps({"score_stats": {"mean": -0.5, "std": 4.0, "n": 10}}))
    raw = rm(COMPLETIONS, prompts=PROMPTS)
    fixed = RewardModelFunction(str(folder), normalize="fixed")(COMPLETIONS, prompts=PROMPTS)
    assert fixed == pytest.approx([(x + 0.5) / 4.0 for x in raw], rel=1e-6, abs=1e-6)
    with pytest.raises(ConfigError, match="normalize='fixed' without mean/std needs the score statistics"):
        RewardModelFunction(str(rm_dir), normalize="fixed")


def test_verdicts_are_passed_above_the_neutral_point(rm_dir, rm):
    results = rm.score_batch(COMPLETIONS, prompts=PROMPTS)
    assert [r.status for r in results] == ["passed" if r.score > 0 else "failed" for r in results]
    assert all(r.details["raw"] == r.score and r.details["truncated"] is False for r in results)
    sig = RewardModelFunction(str(rm_dir), normalize="sigmoid").score_batch(COMPLETIONS, prompts=PROMPTS)
    assert [r.status for r in sig] == [r.status for r in results]
    assert rm.score("\\boxed{19}", prompt=PROMPTS[0]).score == pytest.approx(results[0].score, abs=1e-6)


@pytest.mark.parametrize("fields, fragment", [
    (dict(device="gpu"), "device='gpu'"), (dict(batch_size=0), "batch_size=0"), (dict(max_length=1), "max_length=1"),
    (dict(normalize="zscore"), "normalize='zscore'"), (dict(normalize="fixed", std=0.0), "std=0.0"),
    (dict(mean=1.0), "only used with normalize='fixed'"), (dict(dtype="fp8"), "dtype='fp8'"),
    (dict(name=""), "name=''"), (dict(mean=float("nan"), normalize="fixed"), "mean=nan"),
    (dict(use_chat_template="yes"), "use_chat_template='yes'"),
])
def test_bad_settings_name_the_value(fields, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RewardModelConfig(model="somewhere", **fields)


def test_a_missing_folder_a_causal_lm_and_an_offline_hub_id_are_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ModelResolutionError, match="does not exist"):
        RewardModelFunction(str(tmp_path / "no_such_rm"))
    with pytest.raises(ModelResolutionError, match="has no config.json"):
        RewardModelFunction(str(tmp_path))
    with pytest.raises(ConfigError, match=r"LlamaForCausalLM.*not a trained reward model"):
        RewardModelFunction(str(tiny_model_dir))
    with pytest.raises(ModelResolutionError, match="nobody/no-such-reward-model"):
        RewardModelFunction("nobody/no-such-reward-model")


def test_prompts_are_required(rm):
    with pytest.raises(ValueError, match="needs the prompts of the 4 completions"):
        rm(COMPLETIONS)


def test_under_the_trainers_guard_with_trl_keywords(rm):
    logged = {}
    guarded = GuardedReward(rm, timeout_s=60)
    values = guarded(completions=COMPLETIONS, prompts=PROMPTS, completion_ids=[[1]] * 4, trainer_state=None,
                     log_extra=None, log_metric=lambda k, v: logged.setdefault(k, v), answer=["19", "7", "108", "10"])
    assert values == pytest.approx(rm(COMPLETIONS, prompts=PROMPTS), abs=1e-6)
    assert guarded.name == "reward_model" and logged["rewards/reward_model/truncated"] == 0.0


def test_inside_a_composite_next_to_a_rule_reward(rm):
    fmt = FormatRewardFunction(kind="boxed")
    composite = CompositeRewardFunction([rm, fmt], weights=[0.5, 2.0])
    results = composite.score_batch(COMPLETIONS, prompts=PROMPTS)
    raw = rm(COMPLETIONS, prompts=PROMPTS)
    boxed = fmt(COMPLETIONS)
    assert [r.score for r in results] == pytest.approx([0.5 * r + 2.0 * b for r, b in zip(raw, boxed)], abs=1e-6)
    assert results[0].details == {"reward_model": pytest.approx(raw[0], abs=1e-6), "format_boxed": boxed[0]}


def test_the_evaluator_hands_it_the_prompts(rm):
    rows = [{"prompt": p, "answer": "1"} for p in PROMPTS]
    texts = [c[0]["content"] for c in COMPLETIONS]
    assert [r.score for r in judge(rm, texts, rows)] == pytest.approx(rm(COMPLETIONS, prompts=PROMPTS), abs=1e-6)


def test_auto_device_is_the_cpu_without_a_gpu_or_trainer(rm_dir):
    rm = RewardModelFunction(RewardModelConfig(model=str(rm_dir), device="auto"))
    rm(COMPLETIONS[:1], prompts=PROMPTS[:1])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert rm.device.type == expected and next(rm.model.parameters()).device.type == expected
    assert not rm.model.training and not any(p.requires_grad and p.grad is not None for p in rm.model.parameters())
