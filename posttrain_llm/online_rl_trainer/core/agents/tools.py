"""Tools an agent may call: a typed, documented Python function with the JSON schema its prompt shows, and a guarded
call that always comes back with an explicit outcome.

A :class:`Tool` is built from a plain function by :func:`tool_from_function`, which uses the same schema as TRL
(``transformers.utils.get_json_schema``: type hints plus a Google-style docstring with an ``Args:`` section), so a
tool written for TRL's ``tools=`` works here unchanged, without importing torch (:func:`json_schema`).

:func:`call_tool` never raises for what the tool or the model did; it returns a frozen :class:`ToolResult` whose
``status`` says what happened:

- ``ok``: the tool returned; ``text`` is its result (a ``str`` as is, a ``dict``/``list`` as JSON, anything else
  through ``str``).
- ``error``: the tool raised; ``text`` is ``"<ExceptionType>: <message>"`` (or the message of a :class:`ToolError`).
- ``timeout``: the tool did not return within ``timeout_s``.
- ``bad_arguments``: the arguments do not fit the signature (missing, unexpected, or of the wrong JSON type).
- ``unknown_tool``: no tool of that name (:func:`call_named_tool`).
- ``malformed``: not produced here; the rollout engine uses it for a call it could not parse (``calls.py``).

The one exception that does escape is :class:`ToolUnavailable`: the tool's own infrastructure failed (the sandbox
did not start), which says nothing about the model and must not become a silent zero reward.

Timeouts, honestly: a plain Python function cannot be interrupted, so it runs in a daemon thread joined with a
deadline. A tool that hangs is abandoned, not killed: its thread keeps running (and holding whatever it holds)
until it returns or the process exits; :func:`abandoned_tool_threads` counts them so a run can report the leak. Tools
that may hang for real (running code) should enforce their own limit in a separate process, as the ``python`` tool
does with the sandbox. Async tools (``async def``) are run to completion with ``asyncio.run`` in that thread.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

TOOL_STATUSES = ("ok", "error", "timeout", "bad_arguments", "unknown_tool", "malformed")
#: Outcomes counted as tool errors in rollout statistics (``malformed`` is counted apart).
ERROR_STATUSES = frozenset({"error", "timeout", "bad_arguments", "unknown_tool"})
DEFAULT_MAX_CHARS = 2000

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, (list, tuple)),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}

_abandoned_lock = threading.Lock()
_schema_lock = threading.Lock()
_abandoned = [0]


class ToolError(Exception):
    """Raised by a tool to report a failure the model caused, with the observation text and a status
    (``"error"`` or ``"timeout"``), e.g. the ``python`` tool when the program ran past its limit."""

    def __init__(self, message: str, status: str = "error"):
        if status not in ("error", "timeout"):
            raise ValueError(f"ToolError status={status!r}; accepted: 'error', 'timeout'")
        super().__init__(message)
        self.status = status


class ToolUnavailable(RuntimeError):
    """The tool's infrastructure failed (not the model's doing); propagates out of :func:`call_tool`."""


class ToolDefinitionError(ValueError):
    """A function cannot be a tool (no type hints or no docstring); the message names the function."""


@dataclass(frozen=True)
class Tool:
    """A callable tool: ``name``, ``description`` and JSON-schema ``parameters`` (what the prompt shows) and the
    ``function`` that runs it."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any] = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ToolDefinitionError(f"Tool.name={self.name!r}; expected a Python identifier")
        if not callable(self.function):
            raise ToolDefinitionError(f"Tool {self.name!r}: function={self.function!r} is not callable")
        if not isinstance(self.parameters, Mapping) or self.parameters.get("type") != "object":
            raise ToolDefinitionError(f"Tool {self.name!r}: parameters must be a JSON schema of type 'object', "
                                      f"got {self.parameters!r:.200}")

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI/TRL function schema, as chat templates render it in the prompt."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": dict(self.parameters)}}


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call. ``text`` is the observation shown to the model (already cut to the limit);
    ``cut_chars`` how many characters were cut from it; ``elapsed_s`` the wall time spent waiting."""

    name: str
    status: str
    text: str
    elapsed_s: float = 0.0
    cut_chars: int = 0

    def __post_init__(self) -> None:
        if self.status not in TOOL_STATUSES:
            raise ValueError(f"ToolResult.status={self.status!r}; accepted: {TOOL_STATUSES}")

    @property
    def is_error(self) -> bool:
        return self.status in ERROR_STATUSES


def tool_from_function(fn: Callable[..., Any], name: str | None = None) -> Tool:
    """A :class:`Tool` from a typed function with a Google-style docstring (the schema TRL uses).

    Bound methods work (``self`` is not a parameter). Raises :class:`ToolDefinitionError` naming the function when
    it lacks type hints, a docstring or an ``Args:`` entry for a parameter.
    """
    label = getattr(fn, "__qualname__", None) or repr(fn)
    if not callable(fn):
        raise ToolDefinitionError(f"{fn!r} is not callable, so it cannot be a tool")
    try:
        schema = json_schema(fn)["function"]
    except Exception as exc:  # noqa: BLE001 - transformers raises several types; each becomes one clear message
        raise ToolDefinitionError(
            f"cannot make a tool of {label}: {exc} (a tool needs a type hint on every parameter and a Google-style "
            "docstring: a description line, then 'Args:' with one 'name: description' line per parameter)"
        ) from None
    parameters = schema.get("parameters") or {"type": "object", "properties": {}}
    return Tool(name or schema["name"], schema.get("description", ""), parameters, fn)


def json_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """``transformers.utils.get_json_schema(fn)`` without importing torch.

    Importing ``transformers.utils`` does not import torch, but ``get_json_schema`` does on every call when torch is
    installed, only to map a ``torch.Tensor`` hint to ``{"type": "audio"}`` (no JSON argument can be a tensor). When
    torch is not loaded yet, the call runs with that probe answering False (under a lock), so building a tool stays
    torch-free; the schema of every JSON-typed parameter is the same either way.
    """
    from transformers.utils import chat_template_utils

    if "torch" in sys.modules:
        return chat_template_utils.get_json_schema(fn)
    with _schema_lock:
        probe = chat_template_utils.is_torch_available
        chat_template_utils.is_torch_available = lambda: False
        try:
            return chat_template_utils.get_json_schema(fn)
        finally:
            chat_template_utils.is_torch_available = probe


def check_arguments(tool: Tool, arguments: Any) -> str | None:
    """Why ``arguments`` do not fit ``tool`` (one line naming the argument), or None when they fit."""
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    properties = tool.parameters.get("properties", {})
    required = tool.parameters.get("required", [])
    missing = [p for p in required if p not in arguments]
    if missing:
        return f"missing required argument(s) {missing} for {tool.name}; expected {sorted(properties)}"
    extra = sorted(k for k in arguments if k not in properties)
    if extra and not _accepts_var_keywords(tool.function):
        return f"unexpected argument(s) {extra} for {tool.name}; expected {sorted(properties)}"
    for key, value in arguments.items():
        spec = properties.get(key, {})
        types = spec.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        known = [t for t in types if t in _JSON_TYPES]
        if spec.get("nullable") and value is None:  # Optional[...] parameters: get_json_schema marks them so
            continue
        if known and not any(_JSON_TYPES[t](value) for t in known):
            return f"argument {key!r} of {tool.name} must be {' or '.join(known)}, got {type(value).__name__} " \
                   f"{value!r:.60}"
        if "enum" in spec and value not in spec["enum"]:
            return f"argument {key!r} of {tool.name} must be one of {spec['enum']}, got {value!r:.60}"
    return None


def _accepts_var_keywords(fn: Callable[..., Any]) -> bool:
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def render_value(value: Any) -> str:
    """A tool's return value as observation text: ``str`` as is, ``dict``/``list`` as JSON, else ``str()``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def cut_text(text: str, max_chars: int) -> tuple[str, int]:
    """``text`` kept to its first ``max_chars`` characters plus a visible ``[... cut N chars]`` marker."""
    if len(text) <= max_chars:
        return text, 0
    cut = len(text) - max_chars
    return f"{text[:max_chars]}\n[... cut {cut} chars]", cut


def abandoned_tool_threads() -> int:
    """How many tool threads this process gave up on after a timeout (they may still be running)."""
    with _abandoned_lock:
        return _abandoned[0]


def _invoke(fn: Callable[..., Any], arguments: dict) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(**arguments))
    return fn(**arguments)


def call_tool(tool: Tool, arguments: Any, timeout_s: float | None = 10.0,
              max_chars: int = DEFAULT_MAX_CHARS) -> ToolResult:
    """Run ``tool(**arguments)`` with a deadline and return its outcome (see the module docstring).

    ``timeout_s=None`` runs in the calling thread with no deadline. Raises only :class:`ToolUnavailable`.
    """
    start = time.monotonic()
    problem = check_arguments(tool, arguments)
    if problem is not None:
        return _result(tool.name, "bad_arguments", f"bad arguments: {problem}", start, max_chars)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _invoke(tool.function, arguments)
        except BaseException as exc:  # noqa: BLE001 - whatever the tool raised becomes its observation
            box["error"] = exc

    if timeout_s is None:
        target()
    else:
        thread = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            with _abandoned_lock:
                _abandoned[0] += 1
            return _result(tool.name, "timeout", f"timeout: {tool.name} did not return within {timeout_s:g} s",
                           start, max_chars)
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, ToolUnavailable):
            raise exc
        if isinstance(exc, ToolError):
            return _result(tool.name, exc.status, str(exc), start, max_chars)
        return _result(tool.name, "error", f"{type(exc).__name__}: {exc}", start, max_chars)
    return _result(tool.name, "ok", render_value(box.get("value")), start, max_chars)


def call_named_tool(tools: Mapping[str, Tool], name: Any, arguments: Any, timeout_s: float | None = 10.0,
                    max_chars: int = DEFAULT_MAX_CHARS) -> ToolResult:
    """:func:`call_tool` on ``tools[name]``; an unknown name is an ``unknown_tool`` outcome listing the known ones."""
    tool = tools.get(name) if isinstance(name, str) else None
    if tool is None:
        text = f"unknown tool {name!r:.80}; available tools: {sorted(tools)}"
        return _result(str(name)[:80], "unknown_tool", text, time.monotonic(), max_chars)
    return call_tool(tool, arguments, timeout_s, max_chars)


def _result(name: str, status: str, text: str, start: float, max_chars: int) -> ToolResult:
    text, cut = cut_text(text, max_chars)
    return ToolResult(name, status, text, time.monotonic() - start, cut)
