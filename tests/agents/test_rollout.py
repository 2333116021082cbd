"""The multi-turn engine with a scripted generator: exact model tokens, env_mask/log-prob/turn-end alignment,
every budget ending cleanly with its stop reason, tools that hang or raise counted, environments' rewards."""

from __future__ import annotations

import threading

import pytest

from posttrain_llm.online_rl_trainer.core.agents import (
    MultiTurnConfig,
    ParsedCall,
    ToolResult,
    calculator,
    render_call,
    render_observation,
    rollout_stats,
    run_rollouts,
    start_sessions,
)
from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from posttrain_llm.online_rl_trainer.core.models.tiny import build_char_tokenizer

TOK = build_char_tokenizer()
EOS = TOK.eos_token_id


def enc(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


def turn(text: str, end: bool = True) -> list[int]:
    return enc(text) + ([EOS] if end else [])


def call(name: str, fmt: str = "chatml", **arguments) -> str:
    return render_call(ParsedCall(name, arguments), fmt)


def prompt(text: str) -> list[int]:
    return TOK.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                   return_dict=False)


class Scripted:
    """A generate_fn that plays a fixed list of turns per prompt and records what it was asked."""

    def __init__(self, scripts: dict[str, list[list[int]]]):
        self.scripts = {tuple(prompt(k)): list(v) for k, v in scripts.items()}
        self.asked: list[tuple[list[int], int]] = []

    def __call__(self, sequences, budgets):
        out = []
        for seq, budget in zip(sequences, budgets):
            key = next(k for k in self.scripts if tuple(seq[: len(k)]) == k)
            ids = self.scripts[key].pop(0)[:budget]
            self.asked.append((list(seq), budget))
            out.append((ids, [-(i + 1) / 100 for i in range(len(ids))]))
        return out


def rollouts(scripts, config=None, tools=(calculator,), env_factory=None):
    gen = Scripted(scripts)
    rows = [{"prompt": k} for k in scripts]
    result = run_rollouts([prompt(k) for k in scripts], rows, gen, TOK, env_factory, config or MultiTurnConfig(
        call_format="chatml"), tools=tools)
    return result, gen


def observation(*texts: str, status: str = "ok") -> list[int]:
    return enc(render_observation([ToolResult("calculator", status, t) for t in texts], "chatml"))


def test_completion_env_mask_logprobs_and_turn_ends_align_exactly():
    t1, t2 = turn("Let me check. " + call("calculator", expression="123*456")), turn("56088")
    (a, b), gen = rollouts({"123*456=": [t1, t2], "1+1=": [turn("2")]})
    obs = observation("56088")
    assert list(a.completion_ids) == t1 + obs + t2
    assert list(a.env_mask) == [1] * len(t1) + [0] * len(obs) + [1] * len(t2)
    assert list(a.logprobs) == [-(i + 1) / 100 for i in range(len(t1))] + [None] * len(obs) + \
        [-(i + 1) / 100 for i in range(len(t2))]
    assert a.turn_end_positions == (len(t1) - 1, len(t1) + len(obs) + len(t2) - 1)
    assert a.completion_ids[a.turn_end_positions[0]] == EOS == a.completion_ids[-1]
    assert (a.stop_reason, a.num_turns, a.num_tool_calls, a.num_tool_errors) == ("answered", 2, 1, 0)
    assert (b.stop_reason, list(b.completion_ids), b.env_mask) == ("answered", turn("2"), (1, 1))
    # the model's second turn was generated from exactly prompt + its first turn + the observation
    assert gen.asked[-1][0] == prompt("123*456=") + t1 + obs
    assert [m["role"] for m in a.transcript] == ["assistant", "tool", "assistant"]
    assert a.transcript[0]["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "123*456"}}]
    assert a.transcript[1] == {"role": "tool", "name": "calculator", "status": "ok", "content": "56088"}


def test_model_tokens_are_kept_even_when_re_encoding_would_change_them():
    # "<|im_start|>" spelled character by character: decode + encode would fold it into one special token
    spelled = [TOK.convert_tokens_to_ids(c) for c in "<|im_start|>"]
    t1 = spelled + turn(call("calculator", expression="2*3"))
    assert enc(TOK.decode(t1)) != t1  # the drift this engine must not introduce
    ((r,), _) = rollouts({"2*3=": [t1, turn("6")]})
    assert list(r.completion_ids[: len(t1)]) == t1 and r.num_tool_calls == 1


def test_max_turns_stops_cleanly_without_running_the_last_calls():
    always = [turn(call("calculator", expression="1+1"))] * 5
    ((r,), _) = rollouts({"loop": always}, MultiTurnConfig(max_turns=2, call_format="chatml"))
    assert (r.stop_reason, r.num_turns, r.num_tool_calls) == ("max_turns", 2, 1)
    assert r.env_mask[-1] == 1 and r.completion_ids[-1] == EOS


def test_max_tool_calls_runs_what_fits_and_stops():
    two = turn(call("calculator", expression="1+1") + call("calculator", expression="2+2"))
    ((r,), _) = rollouts({"two": [two]}, MultiTurnConfig(max_tool_calls=1, max_new_tokens=300, call_format="chatml"))
    assert (r.stop_reason, r.num_tool_calls, r.env_token_count) == ("max_tool_calls", 1, 0)
    assert [m.get("status") for m in r.transcript[1:]] == ["skipped", "ok"]


def test_max_total_tokens_when_the_observation_would_not_fit():
    t1 = turn(call("calculator", expression="9**99"))
    limit = len(t1) + len(observation(calculator("9**99")))  # the observation would leave no room
    ((r,), _) = rollouts({"big": [t1, turn("x")]}, MultiTurnConfig(max_total_tokens=limit, call_format="chatml"))
    assert (r.stop_reason, list(r.completion_ids), r.num_tool_calls) == ("max_total_tokens", t1, 1)


def test_max_total_tokens_cuts_a_turn_at_the_remaining_budget():
    t1, long_answer = turn(call("calculator", expression="1+1")), turn("y" * 200)
    limit = len(t1) + len(observation("2")) + 10
    ((r,), gen) = rollouts({"cut": [t1, long_answer]},
                           MultiTurnConfig(max_total_tokens=limit, max_new_tokens=100, call_format="chatml"))
    assert gen.asked[-1][1] == 10 and len(r.completion_ids) == limit
    assert r.stop_reason == "max_total_tokens" and r.completion_ids[-1] != EOS


def test_a_turn_without_its_end_token_is_truncated():
    ((r,), _) = rollouts({"t": [turn("z" * 50, end=False)]}, MultiTurnConfig(max_new_tokens=8, call_format="chatml"))
    assert (r.stop_reason, len(r.completion_ids), r.num_turns) == ("truncated", 8, 1)


def test_a_hanging_tool_and_a_raising_tool_are_counted_and_the_rollout_goes_on():
    release = threading.Event()

    def wait(seconds: int) -> str:
        """Wait.

        Args:
            seconds: how long
        """
        release.wait(30)
        return "done"

    def fail(x: int) -> str:
        """Fail.

        Args:
            x: anything
        """
        raise RuntimeError("tool broke")

    t1 = turn(call("wait", seconds=99) + call("fail", x=1) + call("nope") + "<tool_call>{oops</tool_call>")
    ((r,), _) = rollouts({"hang": [t1, turn("gave up")]},
                         MultiTurnConfig(tool_timeout_s=0.2, max_new_tokens=300, max_total_tokens=2000,
                                         call_format="chatml"), tools=[wait, fail])
    release.set()
    statuses = [m["status"] for m in r.transcript if m["role"] == "tool"]
    assert statuses == ["timeout", "error", "unknown_tool", "malformed"]
    assert (r.num_tool_calls, r.num_tool_errors, r.num_malformed_calls, r.stop_reason) == (3, 3, 1, "answered")
    assert "RuntimeError: tool broke" in TOK.decode([t for t, m in zip(r.completion_ids, r.env_mask) if m == 0])


class CountdownEnv:
    """TRL-style: ``reset`` reads the row, ``step`` is the tool, rewards per turn and at the end."""

    def reset(self, target: int, **row) -> None:
        self.left, self.turns = target, 0

    def step(self) -> str:
        """Count down by one."""
        self.left -= 1
        return str(self.left)

    def get_turn_reward(self) -> float:
        self.turns += 1
        return -0.1 * self.turns

    def get_reward(self) -> float:
        return 1.0 if self.left == 0 else 0.0


def test_environment_rewards_per_turn_and_final():
    step = turn(call("step"))
    gen = Scripted({"go": [step, step, turn("done")]})
    (r,) = run_rollouts([prompt("go")], [{"prompt": "go", "target": 2}], gen, TOK, CountdownEnv,
                        MultiTurnConfig(call_format="chatml"))
    assert r.reward == 1.0 and r.turn_rewards == pytest.approx((-0.1, -0.2, -0.3))
    assert len(r.turn_rewards) == len(r.turn_end_positions) == r.num_turns == 3


def test_reset_text_must_go_into_the_prompt_first():
    class Hint(CountdownEnv):
        def reset(self, target: int, **row) -> str:
            super().reset(target)
            return " hint"

    rows = [{"prompt": "go", "target": 1}]
    with pytest.raises(ValueError, match="reset\\(\\) returned text for rows \\[0\\]"):
        run_rollouts([prompt("go")], rows, Scripted({"go": []}), TOK, Hint, MultiTurnConfig())
    sessions = start_sessions(Hint, rows)
    (r,) = run_rollouts([prompt("go")], rows, Scripted({"go": [turn("ok")]}), TOK, None, MultiTurnConfig(),
                        sessions=sessions)
    assert r.stop_reason == "answered"


def test_generate_fn_contract_violations_are_errors():
    def past_eos(sequences, budgets):
        return [(turn("a") + enc("b"), None) for _ in sequences]

    def too_few(sequences, budgets):
        return []

    for gen, fragment in ((past_eos, "past an end-of-turn"), (too_few, "0 outputs for 1")):
        with pytest.raises(ValueError, match=fragment):
            run_rollouts([prompt("x")], [{}], gen, TOK, None, MultiTurnConfig(), tools=[calculator])


def test_logprobs_are_none_when_the_generator_gives_none():
    (r,) = run_rollouts([prompt("x")], [{}], lambda s, b: [(turn("1"), None)], TOK, None, MultiTurnConfig(),
                        tools=[calculator])
    assert r.logprobs is None and r.stop_reason == "answered"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_turns": 0}, "max_turns=0"), ({"max_total_tokens": 1.5}, "max_total_tokens=1.5"),
    ({"tool_timeout_s": -1}, "tool_timeout_s=-1"), ({"call_format": "xml"}, "call_format='xml'"),
    ({"max_tool_calls": True}, "max_tool_calls=True"),
])
def test_config_rejects_bad_values_naming_them(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", "\\(")):
        MultiTurnConfig(**kwargs)


def test_rollout_stats_counts_every_stop_reason():
    (a, b), _ = rollouts({"a": [turn(call("calculator", expression="1/0")), turn("x")], "b": [turn("y")]})
    ((c,), _) = rollouts({"c": [turn("z" * 10, end=False)]}, MultiTurnConfig(max_new_tokens=4, call_format="chatml"))
    stats = rollout_stats([a, b, c])
    assert (a.stop_reason, b.stop_reason, c.stop_reason) == ("answered", "answered", "truncated")
    assert (stats["stop/answered"], stats["stop/truncated"], stats["stop/max_turns"], stats["rollouts"]) == (2, 1, 0, 3)
    assert stats["tool_calls_total"] == 1 and stats["tool_errors_total"] == 1 and stats["turns_mean"] == 4 / 3
    assert stats["env_tokens_total"] == len(observation("ZeroDivisionError: division by zero", status="error"))
    assert stats["model_tokens_total"] == sum(r.model_token_count for r in (a, b, c))
