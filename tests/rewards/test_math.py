r"""MathRewardFunction: extraction, equivalence by value, hedging and other reward hacks, deadlines in threads,
TRL-style calls, and accuracy against TRL's accuracy_reward on dataset gold answers (the fixture files always, the
full GSM8K / MATH-500 where found)."""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer.core.rewards import (
    GuardedReward,
    MathRewardFunction,
    RewardFunctionError,
    VerifierCrashed,
    VerifierTimeout,
    VerifierUnavailable,
    answers_equivalent,
    extract_boxed_answers,
    extract_last_number,
    normalize_answer,
)
from posttrain_llm.online_rl_trainer.core.rewards.math_answers import final_answer_from_gold
from posttrain_llm.online_rl_trainer.core.rewards.math_verifier import MathVerifyPool

REPO_ROOT = Path(__file__).resolve().parents[2]
REWARDS_DIR = REPO_ROOT / "posttrain_llm" / "online_rl_trainer" / "core" / "rewards"
PATHOLOGICAL = r"9^{9^{9^{9}}}"


def _load_bench():
    path = REPO_ROOT / "benchmarks" / "bench_math_reward.py"
    if str(path.parent) not in sys.path:  # as when run as a script: its folder's helper modules are importable
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_math_reward", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_math_reward"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- extraction


def test_boxed_extraction_matches_nested_braces():
    assert extract_boxed_answers(r"so $\boxed{\frac{1}{\sqrt{2}}}$.") == [r"\frac{1}{\sqrt{2}}"]


def test_boxed_extraction_returns_every_box_and_fbox_in_order():
    assert extract_boxed_answers(r"\boxed{1} then \fbox{2} then \boxed{3}") == ["1", "2", "3"]


def test_boxed_shorthand_takes_the_token_after_the_space():
    assert extract_boxed_answers(r"The answer is \boxed 72.") == ["72"]


def test_escaped_set_braces_do_not_close_the_box():
    assert extract_boxed_answers(r"\boxed{\{1,2\}}") == [r"\{1,2\}"]


def test_unbalanced_box_is_not_an_answer():
    assert extract_boxed_answers(r"The answer is \boxed{72") == []


def test_nested_box_is_reported_once():
    assert extract_boxed_answers(r"\boxed{\boxed{7}}") == ["7"]


def test_other_commands_starting_with_boxed_are_ignored():
    assert extract_boxed_answers(r"\boxedsymbol{3}") == []


def test_last_number_skips_sentence_period_and_keeps_separators():
    assert extract_last_number("She pays $1,000.50 first, so the total is 1,080.") == "1,080"


def test_last_number_none_without_digits():
    assert extract_last_number("no numbers here") is None


def test_gold_from_gsm8k_solution_is_the_text_after_hashes():
    assert final_answer_from_gold("3 + 4 = <<3+4=7>>7 so\n#### 1,080") == "1,080"


def test_gold_from_math_solution_is_the_last_box():
    assert final_answer_from_gold(r"First $\boxed{2}$ is wrong; in fact $x = \boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"


# ---------------------------------------------------------------- equivalence by value

EQUIVALENT = [
    (r"\frac43", "4/3"),
    (r"\dfrac{1}{2}", "0.5"),
    (r"\tfrac12", r"\frac{1}{2}"),
    ("1,000", "1000"),
    ("1{,}000", "1000"),
    (r"\$5", "5"),
    ("$5$", "5"),
    (r"10\%", "10"),
    (r"\text{(C)}", "C"),
    ("x=5", "5"),
    ("5.00", "5"),
    ("5.", "5"),
    (r"90^\circ", "90"),
    (r"864 \mbox{ inches}^2", "864"),
    ("18 dollars", "18"),
    (r"\text{18 dollars}", "18"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    ("0.333333", r"\frac13"),
    (r"3\sqrt{2}", r"\sqrt{18}"),  # needs math-verify
    ("-q + p", "p - q"),  # needs math-verify
    (r"\begin{pmatrix}-1/3\\2/3\end{pmatrix}", r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}"),
]
NOT_EQUIVALENT = [
    (r"0.1", r"10\%"),  # percent is a unit, not a factor 1/100 (documented choice)
    ("72 or 73", "72"),
    (r"5 \text{ or 6}", "5"),
    (r"\text{seat}", r"\text{east}"),  # math-verify alone would equate these anagrams
    ("[1,2)", "(1,2)"),
    ("0.33", r"\frac13"),
    ("1,2", "12"),  # a tuple, not a thousands separator
    ("1000001", "1000000"),
    ("2x", "x^2"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent_answers(pred, gold):
    assert answers_equivalent(pred, gold, timeout_seconds=5)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_different_answers(pred, gold):
    assert not answers_equivalent(pred, gold, timeout_seconds=5)


def test_normalize_gives_one_vote_key_per_value():
    assert {normalize_answer(a) for a in ("0.5", r"\dfrac{1}{2}", "1/2", r"\frac12", "$0.50$")} == {"1/2"}


def test_normalize_keeps_space_between_command_and_letter():
    assert normalize_answer(r"2\pi r") != normalize_answer(r"2\pir")


def test_equivalence_rejects_non_positive_timeout():
    with pytest.raises(ValueError, match="timeout_seconds"):
        answers_equivalent("1", "1", timeout_seconds=0)


# ---------------------------------------------------------------- the reward: verdicts and hacks


def test_correct_boxed_answer_passes():
    result = MathRewardFunction().score(r"So the total is \boxed{1,000} dollars.", answer="1000")
    assert (result.score, result.status, result.extracted) == (1.0, "passed", "1,000")


def test_wrong_boxed_answer_fails_with_zero():
    result = MathRewardFunction().score(r"\boxed{71}", answer="72")
    assert (result.score, result.status) == (0.0, "failed")


def test_strict_without_box_is_no_answer_even_if_the_number_appears():
    result = MathRewardFunction().score("Question: Janet has 72 eggs. How many? Answer: 72", answer="72")
    assert (result.score, result.status) == (0.0, "no_answer")


def test_empty_box_is_no_answer():
    result = MathRewardFunction().score(r"The answer is \boxed{}.", answer="72")
    assert (result.score, result.status) == (0.0, "no_answer")


def test_disagreeing_boxes_are_hedging():
    result = MathRewardFunction().score(r"\boxed{1}\boxed{2}\boxed{72}\boxed{4}", answer="72")
    assert (result.score, result.status) == (0.0, "failed") and result.reason.startswith("hedged")


def test_agreeing_boxes_in_different_forms_pass():
    result = MathRewardFunction().score(r"First \boxed{0.5}, i.e. \boxed{\frac{1}{2}}.", answer=r"\frac12")
    assert result.status == "passed"


def test_disjunction_inside_one_box_fails():
    assert MathRewardFunction().score(r"\boxed{72 or 73}", answer="72").score == 0.0


def test_unbalanced_box_gets_no_credit():
    assert MathRewardFunction().score(r"\boxed{72", answer="72").status == "no_answer"


def test_long_output_with_final_box_is_graded_quickly():
    text = "Let me think. " * 20_000 + r"\boxed{72}"
    start = time.perf_counter()
    result = MathRewardFunction().score(text, answer="72")
    assert result.status == "passed" and time.perf_counter() - start < 2.0


@pytest.mark.parametrize("text", [r"\boxed{" * 20_000, r"\boxed{\boxed{" * 5_000 + "}" * 10_000, "9" * 50_000])
def test_adversarial_shapes_are_graded_in_linear_time(text):
    start = time.perf_counter()
    result = MathRewardFunction(mode="lenient").score(text, answer="72")
    assert result.score == 0.0 and time.perf_counter() - start < 1.0


def test_huge_boxed_expression_fails_without_symbolic_work():
    result = MathRewardFunction().score(r"\boxed{" + "1+" * 3000 + "1}", answer="72")
    assert result.status == "failed" and "characters" in result.reason


def test_lenient_falls_back_to_the_last_number():
    result = MathRewardFunction(mode="lenient").score("16 - 3 - 4 = 9 eggs, 9 * 2 = $18.", answer="18")
    assert (result.score, result.extracted) == (1.0, "18")


def test_lenient_prefers_the_box_over_later_numbers():
    assert MathRewardFunction(mode="lenient").score(r"\boxed{5}, checked with 7 steps", answer="5").score == 1.0


def test_lenient_still_punishes_hedging():
    assert MathRewardFunction(mode="lenient").score(r"\boxed{5} or \boxed{6}", answer="5").status == "failed"


def test_raw_gsm8k_answer_column_is_understood():
    row = {"answer": "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=540>>540 meters\n#### 540"}
    assert MathRewardFunction().score(r"\boxed{540}", **row).score == 1.0


def test_answer_column_can_name_another_column():
    reward = MathRewardFunction(answer_column="solution")
    assert reward.score(r"\boxed{\frac{14}{3}}", solution=r"... $=\boxed{\frac{14}{3}}$").score == 1.0


def test_missing_gold_column_is_an_error_naming_it():
    with pytest.raises(RewardFunctionError, match="'answer'.*question"):
        MathRewardFunction().score(r"\boxed{1}", question="What is 1?")


def test_empty_gold_is_an_error_not_zero():
    with pytest.raises(RewardFunctionError, match="empty gold"):
        MathRewardFunction().score(r"\boxed{1}", answer="  ")


@pytest.mark.parametrize(
    "kwargs", [{"mode": "loose"}, {"timeout_seconds": 0}, {"timeout_seconds": -1}, {"timeout_seconds": float("nan")},
               {"timeout_seconds": True}, {"answer_column": ""}]
)
def test_invalid_config_is_rejected_with_the_value(kwargs):
    (field, value), = kwargs.items()
    with pytest.raises(ValueError, match=field):
        MathRewardFunction(**kwargs)


def test_names_differ_by_mode():
    assert (MathRewardFunction().name, MathRewardFunction(mode="lenient").name) == (
        "math_accuracy", "math_accuracy_lenient")


def test_extract_returns_the_graded_answer_or_none():
    reward = MathRewardFunction()
    assert [reward.extract(t) for t in (r"x \boxed{3}", "3", r"\boxed{3}\boxed{4}")] == ["3", None, None]


# ---------------------------------------------------------------- TRL-style calls


def test_batch_call_with_trl_kwargs_and_conversational_completions():
    reward = MathRewardFunction()
    completions = [[{"role": "assistant", "content": r"\boxed{18}"}], [{"role": "assistant", "content": "18"}]]
    scores = reward(completions=completions, prompts=[[{"role": "user", "content": "q"}]] * 2, answer=["18", "18"],
                    question=["q1", "q2"], completion_ids=[[1, 2], [3]], trainer_state=object(), log_metric=print)
    assert scores == [1.0, 0.0]


def test_batch_call_with_plain_string_completions():
    assert MathRewardFunction()(completions=[r"\boxed{3}", r"\boxed{4}"], answer=["3", "3"]) == [1.0, 0.0]


def test_guarded_reward_passes_scores_and_logs_judge_errors():
    logged = {}
    guarded = GuardedReward(MathRewardFunction(timeout_seconds=0.5))
    scores = guarded(completions=[r"\boxed{5}", r"\boxed{" + PATHOLOGICAL + "}"], answer=["5", "5"],
                     log_metric=lambda key, value: logged.update({key: value}))
    assert scores == [1.0, None] and logged == {"rewards/math_accuracy/judge_errors": 1.0}


# ---------------------------------------------------------------- deadlines, in any thread


def _in_thread(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()))
    start = time.perf_counter()
    thread.start()
    thread.join(timeout=30)
    return box.get("value"), time.perf_counter() - start


def test_pathological_answer_is_an_error_within_the_deadline_from_a_thread():
    answers_equivalent("x+1", "1+x")  # start the checking process outside the measured time
    result, elapsed = _in_thread(lambda: MathRewardFunction(timeout_seconds=1.0).score(
        r"\boxed{" + PATHOLOGICAL + "}", answer="5"))
    assert result.score is None and result.status == "error" and "Timeout" in result.reason
    assert elapsed < 3.0


def test_undecidable_hedge_check_is_an_error_not_a_verdict():
    result = MathRewardFunction(timeout_seconds=0.5).score(r"\boxed{5} \boxed{" + PATHOLOGICAL + "}", answer="5")
    assert (result.score, result.status) == (None, "error")


def test_unresponsive_checker_is_killed_at_the_deadline_and_replaced():
    pool = MathVerifyPool(max_workers=1, grace_seconds=0.2)
    try:
        assert pool.check("x+1", "1+x", 5)
        os.kill(pool.idle_pids()[0], signal.SIGSTOP)  # stuck where its own alarm cannot help

        def stuck():
            try:
                pool.check("x+2", "2+x", 0.5)
            except VerifierTimeout as exc:
                return exc

        error, elapsed = _in_thread(stuck)
        assert isinstance(error, VerifierTimeout) and elapsed < 2.0
        assert pool.restarts == 1 and pool.check("x+2", "2+x", 5)
    finally:
        pool.close()


def test_dead_checker_is_reported_as_crash_not_as_wrong():
    pool = MathVerifyPool(max_workers=1)
    try:
        pool.check("x", "x", 5)
        os.kill(pool.idle_pids()[0], signal.SIGKILL)
        with pytest.raises(VerifierCrashed):
            pool.check("x+1", "1+x", 5)
    finally:
        pool.close()


def test_missing_math_verify_is_a_setup_error(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "math_verify").exists()])
    with pytest.raises(VerifierUnavailable, match="pip install math-verify"):
        MathVerifyPool().check("x", "x", 5)


def test_reward_modules_import_no_training_stack():
    banned = {"torch", "transformers", "trl", "accelerate", "datasets"}
    for name in ("math.py", "math_answers.py", "math_verifier.py", "format.py", "composite.py", "__init__.py"):
        tree = ast.parse((REWARDS_DIR / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & banned, f"{name} imports {imported & banned}"


# ---------------------------------------------------------------- dataset gold answers, against TRL

#: More negatives (another row's gold) than this must be built: the fixture files give 16, the full ones over 300.
MIN_NEGATIVES = {"fixture": 15, "full": 300}


@pytest.fixture(scope="module")
def gold_cases(data_dir, fixture_data_dir):
    bench = _load_bench()
    which = "fixture" if data_dir == fixture_data_dir else "full"
    return bench, which, bench.gsm8k_cases(data_dir, 200) + bench.math_cases(data_dir, 200)


def test_gold_answers_ours_at_least_as_right_as_trl(gold_cases):
    bench, _, cases = gold_cases
    ours, _ = bench.run_ours(cases)
    trl, _ = bench.run_trl(cases, form=1)  # TRL's better form: full MATH solution, numeric GSM8K gold
    ours_right, trl_right = bench.count_correct(cases, ours), bench.count_correct(cases, trl)
    for key in ours_right:
        assert ours_right[key] >= trl_right[key], (key, ours_right, trl_right)
    assert sum(s is None for s in ours) == 0


def test_negatives_are_all_rejected(gold_cases):
    bench, which, cases = gold_cases
    negatives = [c for c in cases if not c.expected]
    scores, _ = bench.run_ours(negatives)
    assert len(negatives) > MIN_NEGATIVES[which] and scores == [0.0] * len(negatives)
