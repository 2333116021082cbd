"""Evaluation you can trust: strict vs lenient side by side, the paired comparison, reports, vLLM, eval in training."""

from __future__ import annotations

import math

import pytest

from posttrain_llm.online_rl_trainer import (
    MathRewardFunction,
    ModelEvaluator,
    OnlineRLTrainer,
    TrainerConfig,
    compare,
    compare_results,
    write_eval_report,
)
from posttrain_llm.online_rl_trainer.core.eval.reports import markdown_summary, verdict
from posttrain_llm.online_rl_trainer.core.eval.vllm_generation import vllm_unavailable_reason
from tests.builders import chat, plus_one_rows


def _canned_evaluator(tiny_model_dir, completions):
    """A real ModelEvaluator whose generation returns fixed completions (one list per prompt)."""
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    ev = ModelEvaluator(model, tok, show_progress=False)
    ev.generate = lambda prompts, num_return_sequences=1: (
        [list(c) for c in completions], [[len(x) for x in c] for c in completions])
    return ev


ROWS = [{"prompt": chat(f"q{i}"), "answer": a, "level": lvl}
        for i, (a, lvl) in enumerate([("4", "Level 1"), ("7", "Level 2"), ("9", "Level 2")])]


def test_strict_and_lenient_are_reported_side_by_side(tiny_model_dir):
    ev = _canned_evaluator(tiny_model_dir, [["\\boxed{4}"], ["so it is 7"], ["\\boxed{5}"]])
    res = ev.evaluate(ROWS, MathRewardFunction(), breakdown_by=["level"])
    strict, lenient = res["by_extraction"]["strict"], res["by_extraction"]["lenient"]
    assert (strict["num_correct"], lenient["num_correct"]) == (1, 2)
    assert res["accuracy"] == strict["accuracy"] == pytest.approx(1 / 3)  # the headline follows the reward's mode
    assert [r["status_by_extraction"] for r in res["records"]] == [
        {"strict": "passed", "lenient": "passed"}, {"strict": "no_answer", "lenient": "passed"},
        {"strict": "failed", "lenient": "failed"}]
    # Per-sample records carry the gold final answer, what was extracted, and why.
    rec = res["records"][2]
    assert (rec["gold"], rec["extracted"], rec["status"]) == ("9", "5", "failed") and "differs" in rec["reason"]
    assert res["breakdowns"]["level"]["Level 2"]["n"] == 2
    lenient_headline = ev.evaluate(ROWS, MathRewardFunction(mode="lenient"))
    assert lenient_headline["accuracy"] == pytest.approx(2 / 3)


def test_pass_and_maj_at_k_with_several_samples(tiny_model_dir):
    completions = [["\\boxed{4}", "\\boxed{3}", "\\boxed{4}", "\\boxed{1}"],   # 2 of 4 right; majority 4 is right
                   ["\\boxed{1}", "\\boxed{1}", "\\boxed{7}", "\\boxed{2}"],   # 1 of 4 right; majority 1 is wrong
                   ["\\boxed{0}", "\\boxed{0}", "\\boxed{0}", "\\boxed{0}"]]   # none right
    ev = _canned_evaluator(tiny_model_dir, completions)
    ev.temperature = 1.0
    res = ev.evaluate(ROWS, MathRewardFunction(), num_samples_per_problem=4)
    # pass@1 = mean c/n; pass@2 = mean 1 - C(n-c,2)/C(n,2) = (1 - 1/6 + 1 - 3/6 + 0) / 3; pass@4 = 2/3
    assert res["pass_at_k"][1] == pytest.approx((2 / 4 + 1 / 4) / 3)
    assert res["pass_at_k"][2] == pytest.approx((5 / 6 + 3 / 6) / 3)
    assert res["pass_at_k"][4] == pytest.approx(2 / 3)
    assert res["maj_at_k"][4] == pytest.approx(1 / 3)
    assert res["maj_at_k"][1] == pytest.approx(1 / 3)  # first samples: right, wrong, wrong
    # Samples of one problem are correlated: the intervals resample problems, and say so.
    assert res["accuracy_ci_method"] == "bootstrap over problems"
    lo, hi = res["pass_at_k_ci"][4]
    assert lo <= 2 / 3 <= hi and hi <= 1.0 and lo >= 0.0
    assert res["maj_at_k_ci"][4][0] < 1 / 3 < res["maj_at_k_ci"][4][1]


def _result(statuses, fingerprint="f", model="m"):
    """A minimal evaluate() result with one greedy sample per problem."""
    records = [{"status": s} for s in statuses]
    judged = [s for s in statuses if s != "error"]
    return {"model": model, "dataset_fingerprint": fingerprint, "records": records,
            "accuracy": sum(s == "passed" for s in judged) / len(judged)}


def test_compare_results_counts_discordant_pairs_and_mcnemar():
    # 10 problems: 1 solved only by A, 6 only by B, 2 by both, 1 by neither.
    a = _result(["passed"] + ["failed"] * 6 + ["passed"] * 2 + ["failed"])
    b = _result(["failed"] + ["passed"] * 6 + ["passed"] * 2 + ["failed"])
    c = compare_results(a, b, seed=0)
    assert (c["only_a"], c["only_b"], c["both"], c["neither"]) == (1, 6, 2, 1)
    assert c["mcnemar_p"] == pytest.approx(0.125)  # 2 * P[Bin(7, 1/2) <= 1] = 2 * 8/128
    assert c["difference_b_minus_a"] == pytest.approx(0.5)
    lo, hi = c["difference_ci95"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    assert verdict(c).startswith("no significant difference")  # p = 0.125: seven discordant pairs are too few


def test_compare_results_leaves_out_judge_errors_and_says_so():
    a = _result(["error", "passed", "failed"])
    b = _result(["passed", "passed", "passed"])
    c = compare_results(a, b)
    assert c["excluded_problems"] == 1 and c["n_paired"] == 2 and c["only_b"] == 1


def test_compare_results_refuses_different_problems():
    with pytest.raises(ValueError, match="not on the same problems"):
        compare_results(_result(["passed"], "x"), _result(["passed"], "y"))


def test_compare_api_same_model_is_no_difference(tiny_model_dir):
    rows = plus_one_rows(6)
    out = compare(str(tiny_model_dir), str(tiny_model_dir), rows, MathRewardFunction(), max_new_tokens=6,
                  show_progress=False)
    c = out["comparison"]
    assert out["a"]["dataset_fingerprint"] == out["b"]["dataset_fingerprint"]
    assert [r["completion"] for r in out["a"]["records"]] == [r["completion"] for r in out["b"]["records"]]
    assert c["only_a"] == c["only_b"] == 0 and c["mcnemar_p"] == 1.0 and c["difference_b_minus_a"] == 0.0
    assert set(c["by_extraction"]) == {"strict", "lenient"}


def test_report_files_for_a_comparison(tmp_path, tiny_model_dir):
    ev_a = _canned_evaluator(tiny_model_dir, [["\\boxed{4}"], ["7"], ["\\boxed{5}"]])
    ev_b = _canned_evaluator(tiny_model_dir, [["\\boxed{4}"], ["\\boxed{7}"], ["\\boxed{9}"]])
    a = ev_a.evaluate(ROWS, MathRewardFunction(), breakdown_by=["level"])
    b = ev_b.evaluate(ROWS, MathRewardFunction(), breakdown_by=["level"])
    result = {"dataset": "toy", "a": a, "b": b, "comparison": compare_results(a, b)}
    paths = write_eval_report(result, tmp_path, stem="cmp")
    assert {"json", "markdown", "accuracy", "by_level"} <= set(paths)
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    md = paths["markdown"].read_text()
    assert "| accuracy (strict) | 0.333 [" in md and "(1/3) | 1.000 [" in md  # A 1/3, B 3/3 under strict
    assert "+0.667 [" in md and "Solved only by A: **0**, only by B: **2**" in md
    assert "## By level" in md and "![by_level](cmp_by_level.png)" in md


def test_report_for_one_model_with_pass_at_k(tmp_path):
    res = {"model": "m", "n": 2, "num_samples_per_problem": 4, "reward": "r", "accuracy": 0.5,
           "accuracy_ci": (0.2, 0.8), "num_correct": 4, "num_judged": 8, "judge_errors": 0, "mean_reward": 0.5,
           "mean_completion_length": 3.0, "pass_at_k": {1: 0.5, 2: 0.7, 4: 1.0}, "records": [],
           "generation": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 1}}
    paths = write_eval_report(res, tmp_path)
    assert paths["pass_at_k"].is_file()
    md = markdown_summary(res)
    assert "| pass@2 | 0.700 |" in md and "temperature 1.0" in md and "| accuracy | 0.500 [0.200, 0.800] (4/8) |" in md


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model_dir):
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("vLLM and a GPU are present here; the error path cannot be exercised")
    with pytest.raises(ValueError, match="backend='vllm' is not available: .*use backend='hf'"):
        ModelEvaluator(str(tiny_model_dir), backend="vllm")
    with pytest.raises(ValueError, match="backend='nope'; expected one of"):
        ModelEvaluator(str(tiny_model_dir), backend="nope")


@pytest.mark.skipif(vllm_unavailable_reason() is not None,
                    reason=f"vLLM backend not testable here: {vllm_unavailable_reason()}")
def test_vllm_backend_matches_transformers_greedy(smollm2_dir):  # pragma: no cover - needs a GPU
    rows = [{"prompt": chat(f"What is {i} + {i}? Put the answer in \\boxed{{}}."), "answer": str(2 * i)}
            for i in range(8)]
    hf = ModelEvaluator(str(smollm2_dir), max_new_tokens=32, show_progress=False, use_gpu=True)
    vl = ModelEvaluator(str(smollm2_dir), max_new_tokens=32, backend="vllm")
    res_hf, res_vl = hf.evaluate(rows, MathRewardFunction()), vl.evaluate(rows, MathRewardFunction())
    assert res_vl["generation"]["backend"] == "vllm" and set(res_vl) == set(res_hf)
    same = sum(a["completion"] == b["completion"] for a, b in zip(res_hf["records"], res_vl["records"]))
    assert same >= 6  # greedy agrees up to float ties between kernels


def _event_scalars(log_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_periodic_eval_accuracy_reaches_report_to_and_history(algo, tmp_path, tiny_model_dir):
    from posttrain_llm.online_rl_trainer import SyntheticArithmeticLoader

    rows = SyntheticArithmeticLoader(prompt_style="bare").load("train", num_samples=8)
    extra = {"num_generations": 1, "per_device_train_batch_size": 4} if algo == "ppo" else {}
    config = TrainerConfig(trainer_type=algo, model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path),
                           max_steps=2, eval_steps=1, max_completion_length=4, max_prompt_length=None,
                           report_to=["tensorboard"], run_name="t", logging_steps=5, save_steps=100,
                           **({"num_generations": 2, "per_device_train_batch_size": 4} | extra))
    trainer = OnlineRLTrainer(config, MathRewardFunction(), rows, eval_data=rows.select(range(4)))
    trainer.train()
    logged = [h for h in trainer.metrics_history if "eval/accuracy" in h]
    # logging_steps=5 > max_steps: the evaluation steps are logged anyway, together with that step's training metrics.
    assert [h["step"] for h in logged] == [1, 2] and all("reward" in h for h in logged)
    runs = list(tmp_path.rglob("events.out.tfevents*"))
    assert runs, "no TensorBoard event file was written"
    scalars = [s for run in {p.parent for p in runs} for tag in ("eval/accuracy", "train/eval/accuracy")
               for s in _event_scalars(run, tag)]
    assert sorted(step for step, _ in scalars) == [1, 2]
    assert all(math.isclose(v, h["eval/accuracy"], abs_tol=1e-6) for (_, v), h in zip(sorted(scalars), logged))
