"""ModelEvaluator with several samples per problem: pass@k, maj@k, intervals."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer import MathRewardFunction, ModelEvaluator, RewardResult
from posttrain_llm.online_rl_trainer.core.eval.scoring import maj_at_k as _maj_at_k
from posttrain_llm.online_rl_trainer.core.eval.scoring import powers_of_two_up_to as _ks
from tests.builders import plus_one_rows


def _r(status, extracted):
    return RewardResult(1.0 if status == "passed" else 0.0, status, extracted=extracted)


def test_ks_are_powers_of_two_then_n():
    assert _ks(1) == [1] and _ks(5) == [1, 2, 4, 5] and _ks(8) == [1, 2, 4, 8]


def test_maj_at_k_votes_on_normalized_answers():
    problems = [
        # "1/2" and "0.5" normalize alike and outvote "3"; they are right -> a win at k=3
        [_r("failed", "3"), _r("passed", "1/2"), _r("passed", "0.5")],
        # the majority is wrong although one sample is right -> no win
        [_r("failed", "7"), _r("failed", "7"), _r("passed", "8")],
        # no answers at all -> no win
        [_r("no_answer", None), _r("no_answer", None), _r("no_answer", None)],
    ]
    assert _maj_at_k(problems, 3) == pytest.approx(1 / 3)
    # k=1: only the first sample votes: wrong, wrong, none
    assert _maj_at_k(problems, 1) == 0.0


def test_sampling_several_completions_per_problem(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    rows = [{**row, "answer": str(a % 3)} for a, row in enumerate(plus_one_rows(6))]

    def first_char_digit(completions, answer, **kw):
        # A reward whose success rate is well inside (0, 1) on a random model: any digit among the first 3 chars.
        return [1.0 if any(ch.isdigit() for ch in c[:3]) else 0.0 for c in completions]

    ev = ModelEvaluator(model, tok, temperature=1.0, max_new_tokens=3, show_progress=False, seed=1)
    res = ev.evaluate(rows, first_char_digit, num_samples_per_problem=4)
    assert res["num_samples_per_problem"] == 4 and all(len(r["completions"]) == 4 for r in res["records"])
    correct = sum(r["num_correct"] for r in res["records"])
    assert res["pass_at_k"][1] == pytest.approx(correct / 24) == pytest.approx(res["accuracy"])
    assert res["pass_at_k"][4] == pytest.approx(sum(r["num_correct"] > 0 for r in res["records"]) / 6)
    lo, hi = res["accuracy_ci"]
    assert lo <= res["accuracy"] <= hi


def test_greedy_refuses_several_samples(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match="temperature > 0"):
        ModelEvaluator(model, tok, show_progress=False).evaluate(
            plus_one_rows(2)[1:], MathRewardFunction(),  # 1+1=
            num_samples_per_problem=2)


def test_breakdown_by_a_row_field(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    rows = [{**row, "answer": "x", "level": "odd" if a % 2 else "even"} for a, row in enumerate(plus_one_rows(6))]

    def even_rows_pass(completions, level, **kw):
        return [1.0 if lv == "even" else 0.0 for lv in level]

    res = ModelEvaluator(model, tok, max_new_tokens=2, show_progress=False).evaluate(rows, even_rows_pass,
                                                                                  breakdown_by=["level"])
    by = res["breakdowns"]["level"]
    assert by["even"]["n"] == by["odd"]["n"] == 3
    assert (by["even"]["accuracy"], by["odd"]["accuracy"]) == (1.0, 0.0)
    assert by["odd"]["accuracy_ci"][0] == 0.0 and by["even"]["accuracy_ci"][1] == 1.0
    with pytest.raises(ValueError, match="breakdown_by field 'subject'"):
        ModelEvaluator(model, tok, max_new_tokens=2, show_progress=False).evaluate(rows, even_rows_pass,
                                                                               breakdown_by=["subject"])


def test_fingerprint_tracks_problems_and_order():
    from posttrain_llm.online_rl_trainer.core.eval.scoring import dataset_fingerprint

    a = [{"prompt": "p1", "answer": "1"}, {"prompt": "p2", "answer": "2"}]
    assert dataset_fingerprint(a) == dataset_fingerprint([dict(r, extra=1) for r in a])
    assert dataset_fingerprint(a) != dataset_fingerprint(a[::-1])
    assert dataset_fingerprint(a) != dataset_fingerprint([a[0], {"prompt": "p2", "answer": "3"}])


def test_cpu_bf16_generation_runs_under_autocast_and_says_so(tiny_model_dir, monkeypatch):
    import torch

    from posttrain_llm.online_rl_trainer.core.common import machine
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    seen = []
    original = model.generate

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    monkeypatch.setattr(machine, "_cpu_supports_bf16", lambda: True)
    rows = plus_one_rows(4)
    on = ModelEvaluator(model, tok, max_new_tokens=3, show_progress=False, cpu_bf16_autocast="auto").evaluate(
        rows, MathRewardFunction())
    off = ModelEvaluator(model, tok, max_new_tokens=3, show_progress=False).evaluate(rows, MathRewardFunction())
    assert seen == [True, False]
    assert on["generation"]["cpu_bf16_autocast"] is True and off["generation"]["cpu_bf16_autocast"] is False
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32


def test_cpu_bf16_settings_are_checked(tiny_model_dir, monkeypatch):
    from posttrain_llm.online_rl_trainer.core.common import machine
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"cpu_bf16_autocast='yes': use True, False or 'auto'"):
        ModelEvaluator(model, tok, cpu_bf16_autocast="yes")
    monkeypatch.setattr(machine, "_cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        ModelEvaluator(model, tok, cpu_bf16_autocast=True)
    assert ModelEvaluator(model, tok, cpu_bf16_autocast="auto").cpu_bf16 is False
