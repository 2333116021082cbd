"""FormatRewardFunction (boxed / think_answer / regex) and CompositeRewardFunction (weighted sum, breakdown,
None propagation, validation, TRL-style calls)."""

from __future__ import annotations

import math

import pytest

from posttrain_llm.online_rl_trainer.core.rewards import (
    CallableReward,
    CompositeRewardFunction,
    FormatRewardFunction,
    GuardedReward,
    MathRewardFunction,
    RewardFunction,
    RewardFunctionError,
    RewardResult,
)

# ---------------------------------------------------------------- format: boxed


def test_boxed_exactly_one_box_is_full_credit():
    assert FormatRewardFunction().score(r"so \boxed{\frac{1}{2}}.") == RewardResult(
        1.0, "passed", "exactly one \\boxed{}", extracted=r"\frac{1}{2}")


def test_boxed_several_boxes_get_nothing():
    result = FormatRewardFunction().score(r"\boxed{1} or \boxed{2}")
    assert (result.score, result.status) == (0.0, "failed")


def test_boxed_repeated_identical_boxes_still_get_nothing():
    assert FormatRewardFunction().score(r"\boxed{1} so \boxed{1}").score == 0.0


def test_boxed_no_box_is_no_answer():
    assert FormatRewardFunction().score("the answer is 3").status == "no_answer"


def test_boxed_empty_box_fails():
    result = FormatRewardFunction().score(r"\boxed{ }")
    assert (result.score, result.status) == (0.0, "failed")


def test_boxed_unbalanced_box_is_no_answer():
    assert FormatRewardFunction().score(r"\boxed{3").status == "no_answer"


# ---------------------------------------------------------------- format: think_answer

THINK = FormatRewardFunction(kind="think_answer")


def test_think_answer_full_structure_with_whitespace():
    result = THINK.score("  <think>\nadd them\n</think>\n\n<answer> 5 </answer>\n")
    assert (result.score, result.status, result.extracted) == (1.0, "passed", "5")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>add</think> the answer is 5", 0.5),  # answer tags missing: 2 of 4 tags
        ("<answer>5</answer><think>add</think>", 0.75),  # all tags, wrong order: capped below full credit
        ("<think>add</think><answer>5</answer> and more text", 0.75),  # trailing text breaks the structure
        ("<think></think><answer>5</answer>", 0.75),  # empty thinking
        ("<think>a</think><think>b</think><answer>5</answer>", 0.5),  # duplicated think tags earn nothing
    ],
)
def test_think_answer_partial_credit(text, expected):
    result = THINK.score(text)
    assert (result.score, result.status) == (expected, "failed")


def test_think_answer_without_tags_is_no_answer():
    assert THINK.score("5").score == 0.0 and THINK.score("5").status == "no_answer"


# ---------------------------------------------------------------- format: regex


def test_regex_fullmatch_needs_the_whole_stripped_completion():
    reward = FormatRewardFunction(kind="regex", pattern=r"Answer: \d+")
    assert [reward.score(t).score for t in ("  Answer: 12\n", "So. Answer: 12")] == [1.0, 0.0]


def test_regex_search_matches_anywhere():
    reward = FormatRewardFunction(kind="regex", pattern=r"Answer: \d+", match="search")
    assert reward.score("So. Answer: 12 done").score == 1.0


def test_regex_dot_crosses_lines():
    reward = FormatRewardFunction(kind="regex", pattern=r"Steps:.*Answer: \d+")
    assert reward.score("Steps:\n1\n2\nAnswer: 3").score == 1.0


def test_bad_regex_is_rejected_naming_the_pattern():
    with pytest.raises(ValueError, match=r"'\(unclosed'"):
        FormatRewardFunction(kind="regex", pattern="(unclosed")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"kind": "xml"}, "kind"),
        ({"kind": "regex"}, "pattern"),
        ({"kind": "boxed", "pattern": "x"}, "pattern"),
        ({"kind": "regex", "pattern": "x", "match": "prefix"}, "match"),
        ({"name": "  "}, "name"),
    ],
)
def test_invalid_format_config_is_rejected(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FormatRewardFunction(**kwargs)


def test_format_names_default_to_kind_and_can_be_set():
    assert [FormatRewardFunction(kind="think_answer").name, FormatRewardFunction(name="fmt").__name__] == [
        "format_think_answer", "fmt"]


def test_format_batch_call_with_conversational_completions_and_trl_kwargs():
    completions = [[{"role": "assistant", "content": r"\boxed{1}"}], [{"role": "assistant", "content": "1"}]]
    scores = FormatRewardFunction()(completions=completions, prompts=["p", "p"], completion_ids=[[1], [2]],
                                    trainer_state=None, log_metric=lambda *a: None, answer=["1", "1"])
    assert scores == [1.0, 0.0]


# ---------------------------------------------------------------- composite


def _constant(value, name):
    def fn(completions, **kwargs):
        return [value] * len(completions)

    fn.__name__ = name
    return fn


def test_composite_is_the_weighted_sum_with_breakdown():
    composite = CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction()], weights=[1.0, 0.25])
    result = composite.score(r"\boxed{7}", answer="7")
    assert (result.score, result.status, dict(result.details)) == (
        1.25, "passed", {"math_accuracy": 1.0, "format_boxed": 1.0})


def test_composite_default_weights_are_one():
    composite = CompositeRewardFunction([_constant(0.5, "a"), _constant(0.25, "b")])
    assert composite(completions=["x", "y"]) == [0.75, 0.75]


def test_composite_components_expose_rewards_and_weights():
    math_reward, fn = MathRewardFunction(), _constant(1.0, "bonus")
    components = CompositeRewardFunction([math_reward, fn], weights=[2, 0.5]).components
    assert components[0] == (math_reward, 2.0)
    assert isinstance(components[1][0], CallableReward) and components[1][0].name == "bonus" and components[1][1] == 0.5


def test_callable_component_is_called_with_whole_batches_like_trl():
    seen = {}

    def fn(completions, prompts, answer, **kwargs):
        seen.update(n=len(completions), prompts=prompts, answer=answer)
        return [1.0] * len(completions)

    CompositeRewardFunction([fn])(completions=["a", "b"], prompts=["p1", "p2"], answer=["1", "2"])
    assert seen == {"n": 2, "prompts": ["p1", "p2"], "answer": ["1", "2"]}


def test_composite_is_none_when_any_component_cannot_decide():
    composite = CompositeRewardFunction([_constant(1.0, "ok"), _constant(None, "judge")])
    result = composite.score("x")
    assert (result.score, result.status, dict(result.details)) == (None, "error", {"ok": 1.0, "judge": None})


def test_composite_status_is_failed_when_components_disagree():
    composite = CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction()])
    result = composite.score(r"\boxed{8}", answer="7")
    assert (result.score, result.status) == (1.0, "failed")


def test_composite_status_is_no_answer_when_all_components_found_none():
    composite = CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction()])
    assert composite.score("seven", answer="7").status == "no_answer"


def test_composite_accepts_rewards_that_only_implement_call():
    class Shouty(RewardFunction):
        @property
        def name(self):
            return "shouty"

        def __call__(self, completions, **kwargs):
            return [1.0 if c.isupper() else 0.0 for c in completions]

    assert CompositeRewardFunction([Shouty(), _constant(0.5, "half")])(completions=["YES", "no"]) == [1.5, 0.5]


def test_composite_reports_a_component_returning_the_wrong_count():
    composite = CompositeRewardFunction([lambda completions, **kw: [1.0]])
    with pytest.raises(RewardFunctionError, match="1 values for 2 completions"):
        composite(completions=["a", "b"])


@pytest.mark.parametrize(
    "rewards,weights,message",
    [
        ([], None, "non-empty"),
        ([_constant(1.0, "a")], [1.0, 2.0], "1 rewards"),
        ([_constant(1.0, "a"), _constant(1.0, "b")], [1.0, -0.5], "-0.5"),
        ([_constant(1.0, "a")], [math.nan], "nan"),
        ([_constant(1.0, "a")], [math.inf], "inf"),
        ([_constant(1.0, "a")], [0.0], "zero"),
        ([MathRewardFunction(), MathRewardFunction()], None, "math_accuracy"),
    ],
)
def test_invalid_composite_is_rejected(rewards, weights, message):
    with pytest.raises(ValueError, match=message):
        CompositeRewardFunction(rewards, weights=weights)


def test_composite_of_strict_and_lenient_math_is_allowed():
    composite = CompositeRewardFunction([MathRewardFunction(), MathRewardFunction(mode="lenient")])
    assert composite.score("it is 7", answer="7").details == {"math_accuracy": 0.0, "math_accuracy_lenient": 1.0}


def test_guarded_composite_with_trl_kwargs():
    logged = {}
    guarded = GuardedReward(CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction()], name="total"))
    completions = [[{"role": "assistant", "content": r"\boxed{7}"}], [{"role": "assistant", "content": "7"}]]
    scores = guarded(completions=completions, prompts=["p", "p"], answer=["7", "7"], completion_ids=[[1], [2]],
                     trainer_state=None, log_metric=lambda k, v: logged.update({k: v}))
    assert scores == [2.0, 0.0] and logged == {"rewards/total/judge_errors": 0.0} and guarded.name == "total"
