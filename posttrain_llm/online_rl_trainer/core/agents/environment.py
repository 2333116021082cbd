"""The environment contract of multi-turn rollouts, the one TRL 1.16's ``environment_factory`` uses.

An environment is an object made by a zero-argument factory, one per rollout:

- ``reset(**row)`` (required) is called with every column of the dataset row before the first turn. It returns
  ``None`` or a string that is appended to the content of the prompt's last message (as TRL does), so the caller
  must apply it before tokenizing the prompt: :func:`start_sessions` returns it, :func:`append_to_prompt` applies it.
- Every other public method (a function on the class whose name does not start with ``_``) is a tool the model can
  call, described to the model by its type hints and Google-style docstring (:func:`~.tools.tool_from_function`).
  Discovery is TRL's: ``inspect.getmembers(type(env), inspect.isfunction)``, so properties and attributes are not
  tools.
- ``get_reward() -> float`` (optional) is read once, when the rollout ends: the environment's own final reward.
- ``get_turn_reward() -> float | None`` (optional; ours, not TRL's) is read after every model turn, once that turn's
  tools have run: a per-turn reward placed at the turn's last model token (for PPO/GAE). TRL's own loop would list
  it as a tool, so an environment meant for TRL's ``GRPOTrainer`` directly should not define it.

State lives in the instance and is per rollout: an environment is made and reset for each rollout and thrown away
after it, so nothing carries from one batch to the next (what makes checkpoint/resume independent of environments).

:class:`ToolsEnvironment` wraps a plain list of tools (functions or :class:`~.tools.Tool`) in this contract. Not
covered: async ``reset``/``get_reward``, multimodal observations (a ``reset`` returning content blocks), the
multi-environment dict form of ``environment_factory``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..common.errors import UserError
from .tools import Tool, ToolDefinitionError, tool_from_function

#: Public methods with a role in the contract; every other public method is a tool.
RESERVED_METHODS = ("reset", "get_reward", "get_turn_reward")


class EnvironmentContractError(ValueError, UserError):
    """An environment or tool list that breaks the contract; the message names the class and method."""


class ToolsEnvironment:
    """An environment whose tools are a fixed list and whose ``reset`` does nothing (no reward of its own).

    Args:
        tools: functions (typed, with Google-style docstrings) or :class:`Tool` objects; names must be distinct.
    """

    def __init__(self, tools: Iterable[Callable[..., Any] | Tool]):
        self.tools = as_tools(tools, owner="ToolsEnvironment")

    def reset(self, **row: Any) -> None:
        return None


def as_tools(tools: Iterable[Callable[..., Any] | Tool], owner: str = "tools") -> dict[str, Tool]:
    """``{name: Tool}`` from functions or :class:`Tool` objects; a clear error for a bad entry or a repeated name."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
        raise EnvironmentContractError(f"{owner}: tools must be a list of functions or Tool objects, got {tools!r:.100}")
    out: dict[str, Tool] = {}
    for item in tools:
        try:
            tool = item if isinstance(item, Tool) else tool_from_function(item)
        except ToolDefinitionError as exc:
            raise EnvironmentContractError(f"{owner}: {exc}") from None
        if tool.name in out:
            raise EnvironmentContractError(f"{owner}: two tools are named {tool.name!r}; tool names must be distinct")
        out[tool.name] = tool
    return out


def environment_tools(env: Any) -> dict[str, Tool]:
    """The tools of an environment instance: a :class:`ToolsEnvironment`'s list, or its public methods (TRL's rule)."""
    if isinstance(env, ToolsEnvironment):
        return dict(env.tools)
    cls = type(env).__name__
    methods = []
    for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction):
        if name in RESERVED_METHODS or name.startswith("_"):
            continue
        methods.append(getattr(env, name))
    return as_tools(methods, owner=f"environment {cls}")


def validate_environment(env: Any) -> None:
    """Raise :class:`EnvironmentContractError` naming the class when ``env`` lacks ``reset`` or has a hook that is
    not a method."""
    cls = type(env).__name__
    if not callable(getattr(env, "reset", None)):
        raise EnvironmentContractError(f"environment {cls} has no reset() method; every environment needs "
                                       "reset(**row), returning None or text appended to the prompt")
    for hook in ("get_reward", "get_turn_reward"):
        if hasattr(env, hook) and not callable(getattr(env, hook)):
            raise EnvironmentContractError(f"environment {cls}.{hook} is not a method")
        if inspect.iscoroutinefunction(getattr(env, hook, None)):
            raise EnvironmentContractError(f"environment {cls}.{hook} is async; only plain methods are supported")


@dataclass
class EnvironmentSession:
    """One rollout's environment after ``reset``: the instance, its tools (standalone ones first) and the text
    ``reset`` returned (``None`` when nothing is to be appended to the prompt)."""

    environment: Any
    tools: dict[str, Tool] = field(default_factory=dict)
    reset_text: str | None = None

    def final_reward(self) -> float | None:
        """``get_reward()`` when the environment defines it, else None."""
        hook = getattr(self.environment, "get_reward", None)
        return None if hook is None else _as_reward(hook(), type(self.environment).__name__, "get_reward")

    def turn_reward(self) -> float | None:
        """``get_turn_reward()`` when the environment defines it, else None."""
        hook = getattr(self.environment, "get_turn_reward", None)
        return None if hook is None else _as_reward(hook(), type(self.environment).__name__, "get_turn_reward",
                                                   allow_none=True)

    @property
    def has_turn_rewards(self) -> bool:
        return callable(getattr(self.environment, "get_turn_reward", None))


def _as_reward(value: Any, cls: str, hook: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EnvironmentContractError(f"environment {cls}.{hook}() returned {value!r:.80}; expected a float")
    return float(value)


def start_sessions(env_factory: Callable[[], Any] | None, rows: Sequence[Mapping[str, Any]],
                   tools: Iterable[Callable[..., Any] | Tool] = ()) -> list[EnvironmentSession]:
    """Make and reset one environment per row (``reset(**row)``); ``env_factory=None`` uses
    ``ToolsEnvironment(tools)``. Standalone ``tools`` are offered in every session next to the environment's own."""
    standalone = as_tools(tools, owner="tools")
    if env_factory is not None and not callable(env_factory):
        raise EnvironmentContractError(f"env_factory={env_factory!r:.80} is not callable; pass a class or a "
                                       "zero-argument function returning an environment")
    sessions = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise EnvironmentContractError(f"row {i} is a {type(row).__name__}, expected a dict of columns")
        env = env_factory() if env_factory is not None else ToolsEnvironment(standalone.values())
        validate_environment(env)
        own = environment_tools(env)
        clash = sorted(set(own) & set(standalone)) if env_factory is not None else []
        if clash:
            raise EnvironmentContractError(f"environment {type(env).__name__} defines tool(s) {clash} that are also "
                                           "passed as standalone tools; rename one")
        text = env.reset(**dict(row))
        if text is not None and not isinstance(text, str):
            raise EnvironmentContractError(f"environment {type(env).__name__}.reset() returned a "
                                           f"{type(text).__name__}; expected None or a string")
        merged = own if env_factory is None else {**standalone, **own}
        sessions.append(EnvironmentSession(env, merged, text or None))
    return sessions


def append_to_prompt(prompt: Sequence[Mapping[str, Any]], text: str | None) -> list[dict[str, Any]]:
    """A copy of a chat ``prompt`` with ``text`` appended to its last message's content (TRL's use of ``reset``)."""
    messages = [dict(m) for m in prompt]
    if text:
        if not messages:
            raise ValueError("cannot append reset() text to an empty prompt")
        messages[-1]["content"] = f"{messages[-1].get('content') or ''}{text}"
    return messages
