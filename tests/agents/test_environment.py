"""The environment contract (TRL's environment_factory): reset(**row), public methods as tools, get_reward, and our
get_turn_reward; errors name the class and method."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.agents import (
    EnvironmentContractError,
    ToolsEnvironment,
    append_to_prompt,
    calculator,
    environment_tools,
    start_sessions,
)


class GuessEnv:
    """A TRL-style environment: the model guesses a hidden number with the ``guess`` tool."""

    def __init__(self):
        self.secret = None
        self.guesses = 0
        self.helper_state = "not a tool"

    def reset(self, answer: str, **row) -> str:
        self.secret, self.guesses = int(answer), 0
        return " (you may guess)"

    def guess(self, number: int) -> str:
        """Guess the hidden number.

        Args:
            number: The guess.
        """
        self.guesses += 1
        return "right" if number == self.secret else ("higher" if number < self.secret else "lower")

    def get_reward(self) -> float:
        return 1.0 / self.guesses if self.guesses else 0.0

    def _private(self) -> None:
        pass

    @property
    def seen(self) -> int:
        return self.guesses


def test_public_methods_are_the_tools_as_trl_finds_them():
    env = GuessEnv()
    assert list(environment_tools(env)) == ["guess"]
    env.secret = 4
    assert environment_tools(env)["guess"].function(number=4) == "right" and env.guesses == 1  # bound to env


def test_sessions_reset_each_environment_with_its_row():
    rows = [{"prompt": "p0", "answer": "3"}, {"prompt": "p1", "answer": "8"}]
    sessions = start_sessions(GuessEnv, rows)
    assert [s.environment.secret for s in sessions] == [3, 8]
    assert [s.reset_text for s in sessions] == [" (you may guess)"] * 2
    assert sessions[0].environment is not sessions[1].environment
    sessions[1].tools["guess"].function(number=8)
    assert (sessions[0].final_reward(), sessions[1].final_reward()) == (0.0, 1.0)
    assert sessions[0].turn_reward() is None and not sessions[0].has_turn_rewards


def test_standalone_tools_join_every_session_and_clashes_are_refused():
    (session,) = start_sessions(GuessEnv, [{"answer": "1"}], tools=[calculator])
    assert sorted(session.tools) == ["calculator", "guess"]

    def guess(number: int) -> str:
        """Shadow.

        Args:
            number: n
        """
        return ""

    with pytest.raises(EnvironmentContractError, match="GuessEnv defines tool\\(s\\) \\['guess'\\]"):
        start_sessions(GuessEnv, [{"answer": "1"}], tools=[guess])


def test_tools_environment_wraps_a_plain_list():
    (session,) = start_sessions(None, [{"prompt": "x"}], tools=[calculator])
    assert isinstance(session.environment, ToolsEnvironment) and list(session.tools) == ["calculator"]
    assert session.reset_text is None and session.final_reward() is None


def test_contract_errors_name_the_class_and_method():
    class NoReset:
        pass

    class BadTool:
        def reset(self, **row):
            return None

        def lookup(self, key):
            return key

    class BadReward:
        get_reward = 3

        def reset(self, **row):
            return None

    class ListReset:
        def reset(self, **row):
            return [{"type": "text", "text": "x"}]

    for cls, fragment in ((NoReset, "NoReset has no reset()"), (BadTool, "BadTool.*lookup"),
                          (BadReward, "BadReward.get_reward is not a method"), (ListReset, "ListReset.reset.*list")):
        with pytest.raises(EnvironmentContractError, match=fragment):
            start_sessions(cls, [{}])


def test_a_reward_that_is_not_a_number_is_an_error_naming_the_hook():
    class Env:
        def reset(self, **row):
            return None

        def get_reward(self):
            return "1"

    (session,) = start_sessions(Env, [{}])
    with pytest.raises(EnvironmentContractError, match="Env.get_reward\\(\\) returned '1'"):
        session.final_reward()


def test_duplicate_tool_names_and_bad_tool_lists_are_refused():
    with pytest.raises(EnvironmentContractError, match="two tools are named 'calculator'"):
        ToolsEnvironment([calculator, calculator])
    with pytest.raises(EnvironmentContractError, match="must be a list"):
        ToolsEnvironment(calculator)


def test_append_to_prompt_extends_the_last_message_like_trl():
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "Guess."}]
    assert append_to_prompt(prompt, " (you may guess)")[-1] == {"role": "user", "content": "Guess. (you may guess)"}
    assert prompt[-1]["content"] == "Guess." and append_to_prompt(prompt, None) == prompt
