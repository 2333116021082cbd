"""Multi-turn rollouts: the model writes a turn, its tool calls run, their results are appended, and it goes on.

:func:`run_rollouts` is turn-synchronous: every active rollout generates its next turn in one ``generate_fn`` call,
each finished turn is parsed (``calls.py``), its tools run (rollouts in parallel on ``tool_workers`` threads, a
rollout's own calls in order), the observation is tokenized and appended, and the rollouts still active go on.

Correct RL, by construction:

- The model's tokens are kept exactly as ``generate_fn`` returned them; model text is decoded only to find the calls,
  never re-encoded. Only observation text is tokenized (``add_special_tokens=False``).
- ``completion_ids`` interleaves model and environment tokens; ``env_mask`` is 1 on model tokens (trained on) and 0
  on environment tokens (tool results and the chat markers around them), so losses, KL, entropy and value targets
  can mask the environment out. ``logprobs`` are aligned with ``completion_ids`` (None on environment tokens).
- ``turn_end_positions[k]`` is the index in ``completion_ids`` of turn k's last model token (its end-of-turn token
  when it has one): where a per-turn reward (``turn_rewards[k]``, from the environment's ``get_turn_reward``) goes.

A turn ends at the tokenizer's end-of-turn token (``<|im_end|>`` when the vocabulary has it, and ``eos_token_id``).
How a rollout stops (``stop_reason``; each is counted by :func:`rollout_stats`):

- ``answered``: a turn ended with no tool call in it (a malformed call is a call: the model gets its reason).
- ``max_turns``: the ``max_turns``-th turn still called tools; they are not run.
- ``max_tool_calls``: a turn asked for more calls than the rollout had left; those within the budget run (so an
  environment sees them), the results are not appended.
- ``max_total_tokens``: the token budget after the prompt ran out, in a turn or because the next observation would
  not fit (it is then not appended, so a completion never exceeds ``max_total_tokens``).
- ``truncated``: a turn reached ``max_new_tokens`` without its end-of-turn token.

Not covered: streaming or asynchronous (off-policy) rollouts, a per-rollout tool wall-time budget (each call has
``tool_timeout_s``; ``Rollout.tool_time_s`` reports the total), tokens the environment injects mid-turn.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..common.errors import ConfigError
from .calls import CALL_FORMATS, MalformedCall, ParsedCall, malformed_result, parse_tool_calls, render_observation
from .environment import EnvironmentSession, start_sessions
from .tools import Tool, ToolResult, abandoned_tool_threads, call_named_tool

STOP_REASONS = ("answered", "max_turns", "max_tool_calls", "max_total_tokens", "truncated")
#: ``generate_fn(sequences, max_new_tokens) -> [(new_ids, logprobs or None), ...]``, one pair per sequence.
GenerateFn = Callable[[list[list[int]], list[int]], list[tuple[list[int], "list[float] | None"]]]


@dataclass(frozen=True)
class MultiTurnConfig:
    """Budgets and format of multi-turn rollouts, validated on construction.

    Attributes:
        max_turns: model turns per rollout (>= 1).
        max_tool_calls: tool calls run per rollout (>= 0; malformed calls are not counted against it).
        max_total_tokens: model + environment tokens after the prompt (>= 1).
        max_new_tokens: model tokens per turn (>= 1).
        tool_timeout_s: wall-clock limit of one tool call, or None for none (see ``tools.call_tool``).
        max_observation_chars: characters of one tool result shown to the model (the rest is cut, with a marker).
        call_format: how calls are written and results shown (``calls.CALL_FORMATS``).
        tool_workers: rollouts whose tools run at once (threads).
    """

    max_turns: int = 4
    max_tool_calls: int = 8
    max_total_tokens: int = 512
    max_new_tokens: int = 128
    tool_timeout_s: float | None = 10.0
    max_observation_chars: int = 2000
    call_format: str = "hermes"
    tool_workers: int = 4

    def __post_init__(self) -> None:
        for name, minimum in (("max_turns", 1), ("max_tool_calls", 0), ("max_total_tokens", 1),
                              ("max_new_tokens", 1), ("max_observation_chars", 1), ("tool_workers", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"MultiTurnConfig.{name}={value!r}; expected an int >= {minimum}")
        timeout = self.tool_timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise ConfigError(f"MultiTurnConfig.tool_timeout_s={timeout!r}; expected a number > 0 or None")
        if self.call_format not in CALL_FORMATS:
            raise ConfigError(f"MultiTurnConfig.call_format={self.call_format!r}; accepted: {list(CALL_FORMATS)}")


@dataclass(frozen=True)
class Rollout:
    """One finished multi-turn rollout (see the module docstring for the alignment of the token fields)."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    env_mask: tuple[int, ...]
    logprobs: tuple[float | None, ...] | None
    turn_end_positions: tuple[int, ...]
    turn_rewards: tuple[float | None, ...] | None
    reward: float | None
    num_turns: int
    num_tool_calls: int
    num_tool_errors: int
    num_malformed_calls: int
    stop_reason: str
    transcript: tuple[dict[str, Any], ...]
    tool_time_s: float = 0.0

    @property
    def model_token_count(self) -> int:
        return sum(self.env_mask)

    @property
    def env_token_count(self) -> int:
        return len(self.env_mask) - sum(self.env_mask)


@dataclass
class _State:
    """A rollout while it runs (mutable; frozen into a :class:`Rollout` at the end)."""

    prompt: list[int]
    session: EnvironmentSession
    completion: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    has_logprobs: bool = True
    turn_ends: list[int] = field(default_factory=list)
    turn_rewards: list[float | None] = field(default_factory=list)
    num_tool_calls: int = 0
    num_tool_errors: int = 0
    num_malformed: int = 0
    tool_time_s: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    pending: list[ParsedCall | MalformedCall] = field(default_factory=list)
    over_budget: bool = False

    def finish(self, reason: str) -> None:
        self.turn_rewards.append(self.session.turn_reward())
        self.stop_reason = reason

    def freeze(self) -> Rollout:
        return Rollout(
            tuple(self.prompt), tuple(self.completion), tuple(self.mask),
            tuple(self.logprobs) if self.has_logprobs else None, tuple(self.turn_ends),
            tuple(self.turn_rewards) if self.session.has_turn_rewards else None, self.session.final_reward(),
            len(self.turn_ends), self.num_tool_calls, self.num_tool_errors, self.num_malformed,
            self.stop_reason or "truncated", tuple(self.transcript), self.tool_time_s)


def end_of_turn_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids that end a turn: ``<|im_end|>`` when the vocabulary has it, and ``eos_token_id``."""
    ids = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if "<|im_end|>" in vocab:
        ids.add(vocab["<|im_end|>"])
    if not ids:
        raise ValueError(f"{type(tokenizer).__name__} has neither eos_token_id nor <|im_end|>; a turn could not end")
    return frozenset(ids)


def _check_output(output: Any, index: int, budget: int, stop_ids: frozenset[int]) -> tuple[list[int], list | None]:
    try:
        ids, logprobs = output
    except (TypeError, ValueError):
        raise ValueError(f"generate_fn output {index} is {output!r:.80}; expected (new_ids, logprobs or None)") from None
    ids = list(ids)
    if not ids or len(ids) > budget or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ValueError(f"generate_fn output {index}: {len(ids)} new token ids (must be 1..{budget} ints)")
    if any(t in stop_ids for t in ids[:-1]):
        raise ValueError(f"generate_fn output {index} continues past an end-of-turn token; cut each sequence at "
                         "its first end-of-turn token (inclusive)")
    if logprobs is not None and len(logprobs) != len(ids):
        raise ValueError(f"generate_fn output {index}: {len(logprobs)} log-probs for {len(ids)} tokens")
    return ids, (list(logprobs) if logprobs is not None else None)


def _model_turn(state: _State, ids: list[int], logprobs: list | None, budget: int, tokenizer: Any,
                stop_ids: frozenset[int], config: MultiTurnConfig) -> None:
    """Append one generated turn; decide whether the rollout stops here or which calls run next."""
    state.completion += ids
    state.mask += [1] * len(ids)
    state.has_logprobs = state.has_logprobs and logprobs is not None
    state.logprobs += logprobs if logprobs is not None else [None] * len(ids)
    state.turn_ends.append(len(state.completion) - 1)
    ended = ids[-1] in stop_ids
    text = tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=False)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    state.transcript.append(message)
    if not ended:
        cut_by_total = budget < config.max_new_tokens and len(ids) == budget
        state.finish("max_total_tokens" if cut_by_total else "truncated")
        return
    calls = parse_tool_calls(text, config.call_format)
    parsed = [c for c in calls if isinstance(c, ParsedCall)]
    if parsed:
        message["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in parsed]
    if not calls:
        state.finish("answered")
    elif len(state.turn_ends) >= config.max_turns:
        state.finish("max_turns")
    else:
        state.pending = calls
        state.over_budget = len(parsed) > config.max_tool_calls - state.num_tool_calls


def _run_tools(state: _State, config: MultiTurnConfig) -> list[ToolResult]:
    """Run the pending calls of one rollout in order (malformed ones get their reason); thread-safe per state."""
    results = []
    for call in state.pending:
        if isinstance(call, MalformedCall):
            state.num_malformed += 1
            results.append(malformed_result(call, config.call_format, config.max_observation_chars))
            continue
        if state.num_tool_calls >= config.max_tool_calls:
            state.transcript.append({"role": "tool", "name": call.name, "status": "skipped",
                                     "content": "not run: max_tool_calls reached"})
            continue
        result = call_named_tool(state.session.tools, call.name, call.arguments, config.tool_timeout_s,
                                 config.max_observation_chars)
        state.num_tool_calls += 1
        state.num_tool_errors += result.is_error
        state.tool_time_s += result.elapsed_s
        results.append(result)
    for result in results:
        state.transcript.append({"role": "tool", "name": result.name, "status": result.status,
                                 "content": result.text})
    return results


def _observe(state: _State, results: list[ToolResult], tokenizer: Any, config: MultiTurnConfig) -> None:
    """Append the observation tokens (env_mask 0), or stop when the budget forbids it."""
    state.pending = []
    if state.over_budget:
        state.finish("max_tool_calls")
        return
    obs = tokenizer.encode(render_observation(results, config.call_format), add_special_tokens=False)
    if len(state.completion) + len(obs) >= config.max_total_tokens:  # no room left for a model token after it
        state.finish("max_total_tokens")
        return
    state.completion += obs
    state.mask += [0] * len(obs)
    state.logprobs += [None] * len(obs)
    state.turn_rewards.append(state.session.turn_reward())


def run_rollouts(prompt_ids: Sequence[Sequence[int]], rows: Sequence[Mapping[str, Any]], generate_fn: GenerateFn,
                 tokenizer: Any, env_factory: Callable[[], Any] | None, config: MultiTurnConfig, *,
                 tools: Sequence[Callable[..., Any] | Tool] = (),
                 sessions: Sequence[EnvironmentSession] | None = None) -> list[Rollout]:
    """Run one multi-turn rollout per prompt, all turn-synchronously; returns them in input order.

    ``prompt_ids[i]`` is row i's templated prompt, ending with the assistant header. Environments come from
    ``env_factory`` (reset here with ``reset(**rows[i])``; ``None``: ``ToolsEnvironment(tools)``), or from
    ``sessions`` already started with :func:`~.environment.start_sessions` when ``reset`` returns text, which the
    caller must append to the prompt before tokenizing it (passing such a factory here is an error).
    """
    if len(prompt_ids) != len(rows):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(rows)} rows; pass one row per prompt")
    if sessions is None:
        sessions = start_sessions(env_factory, rows, tools)
        with_text = [i for i, s in enumerate(sessions) if s.reset_text]
        if with_text:
            raise ValueError(f"reset() returned text for rows {with_text[:5]}; it belongs in the prompt: call "
                             "start_sessions(), append each reset_text with append_to_prompt(), tokenize, then pass "
                             "sessions= to run_rollouts")
    elif len(sessions) != len(rows):
        raise ValueError(f"{len(sessions)} sessions for {len(rows)} rows")
    states = [_State(list(p), s) for p, s in zip(prompt_ids, sessions)]
    stop_ids = end_of_turn_ids(tokenizer)
    with ThreadPoolExecutor(max_workers=config.tool_workers, thread_name_prefix="rollout-tools") as pool:
        while active := [s for s in states if s.stop_reason is None]:
            budgets = [min(config.max_new_tokens, config.max_total_tokens - len(s.completion)) for s in active]
            outputs = list(generate_fn([s.prompt + s.completion for s in active], budgets))
            if len(outputs) != len(active):
                raise ValueError(f"generate_fn returned {len(outputs)} outputs for {len(active)} sequences")
            for i, (state, budget, output) in enumerate(zip(active, budgets, outputs)):
                ids, logprobs = _check_output(output, i, budget, stop_ids)
                _model_turn(state, ids, logprobs, budget, tokenizer, stop_ids, config)
            calling = [s for s in active if s.stop_reason is None]
            results = list(pool.map(lambda s: _run_tools(s, config), calling))
            for state, result in zip(calling, results):
                _observe(state, result, tokenizer, config)
    return [s.freeze() for s in states]


def rollout_stats(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """Means and counts for logs and reports: turns, tool calls, tool errors, malformed calls, tokens, and how many
    rollouts stopped for each reason (``stop/<reason>``), plus the process's abandoned tool threads."""
    n = len(rollouts)
    stats: dict[str, float] = {"rollouts": float(n)}
    for key, attr in (("turns", "num_turns"), ("tool_calls", "num_tool_calls"), ("tool_errors", "num_tool_errors"),
                      ("malformed_calls", "num_malformed_calls"), ("model_tokens", "model_token_count"),
                      ("env_tokens", "env_token_count"), ("tool_time_s", "tool_time_s")):
        total = float(sum(getattr(r, attr) for r in rollouts))
        stats[f"{key}_total"] = total
        stats[f"{key}_mean"] = total / n if n else 0.0
    for reason in STOP_REASONS:
        stats[f"stop/{reason}"] = float(sum(r.stop_reason == reason for r in rollouts))
    stats["abandoned_tool_threads"] = float(abandoned_tool_threads())
    return stats
