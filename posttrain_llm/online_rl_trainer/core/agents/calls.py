"""Tool-call formats: find the calls in an assistant turn, and write the tool results the model reads next.

Every format here is ChatML: a turn ends with ``<|im_end|>`` and the chat template then writes ``"\\n"``. The
observation text (:func:`render_observation`) is therefore what comes after the model's ``<|im_end|>`` up to and
including the next ``<|im_start|>assistant\\n``, so generation continues from exactly the tokens the model produced.

=============  ==========================================================  =============================================
format         a call, inside the assistant turn                           the results, after the turn
=============  ==========================================================  =============================================
``hermes``     ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n        one user turn: ``<|im_start|>user\\n<tool_
(= ``qwen``)   </tool_call>`` (one block per call), as Qwen2.5's template  response>\\n...\\n</tool_response>`` per result
               renders ``tool_calls``                                      (joined by ``\\n``), then ``<|im_end|>``;
                                                                           Qwen2.5's template for ``tool`` messages
``smollm2``    ``<tool_call>[{"name": "f", "arguments": {...}}, ...]       the same user turn of ``<tool_response>``
               </tool_call>``: a JSON list, as SmolLM2-Instruct's           blocks (SmolLM2's own chat template has no
               function-calling system prompt (model card) asks; a bare     tool role; this is what Ollama's SmolLM2
               object is accepted too                                       template renders)
``chatml``     the ``hermes`` call syntax                                  a ``tool`` role turn per result:
                                                                           ``<|im_start|>tool\\n...<|im_end|>\\n``
=============  ==========================================================  =============================================

``chatml`` is the fallback for a ChatML model without a tool template (the built-in tiny model): it is what its
template renders for ``{"role": "tool", "content": ...}`` messages, so a warm-up written with ``apply_chat_template``
matches what the model sees during rollouts. Whitespace around the JSON inside ``<tool_call>`` is free in every
format (the model need not reproduce the template's newlines exactly).

A call the parser cannot read (bad JSON, no ``name``, ``arguments`` not an object, a ``<tool_call>`` never
closed, a list where an object is expected) is a :class:`MalformedCall` with the reason; the rollout engine shows
the reason to the model as that call's result. Parsing never raises for the model's text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .tools import DEFAULT_MAX_CHARS, ToolResult, cut_text

CALL_FORMATS = ("hermes", "qwen", "smollm2", "chatml")
OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
END_OF_TURN = "<|im_end|>"
_BLOCK = re.compile(re.escape(OPEN_TAG) + r"(.*?)" + re.escape(CLOSE_TAG), re.DOTALL)


@dataclass(frozen=True)
class ParsedCall:
    """A well-formed call: the tool ``name``, its ``arguments`` object, and the ``raw`` text it was read from."""

    name: str
    arguments: dict[str, Any] = field(hash=False)
    raw: str = ""


@dataclass(frozen=True)
class MalformedCall:
    """A call the parser could not read: ``reason`` (shown to the model) and the ``raw`` text."""

    reason: str
    raw: str = ""


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known format, else a ValueError listing them."""
    if fmt not in CALL_FORMATS:
        raise ValueError(f"call_format={fmt!r}; accepted: {list(CALL_FORMATS)}")
    return fmt


def _call_from_object(obj: Any, raw: str) -> ParsedCall | MalformedCall:
    if not isinstance(obj, dict):
        return MalformedCall(f"a tool call must be a JSON object, got {type(obj).__name__}", raw)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return MalformedCall('the tool call has no "name" string', raw)
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):  # some models emit the arguments as a JSON string, as the OpenAI API does
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return MalformedCall(f'"arguments" of {name!r} is a string that is not JSON', raw)
    if not isinstance(arguments, dict):
        return MalformedCall(f'"arguments" of {name!r} must be a JSON object, got {type(arguments).__name__}', raw)
    return ParsedCall(name, arguments, raw)


def _load(body: str) -> tuple[Any, str | None]:
    try:
        return json.loads(body), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON in the tool call ({exc.msg} at character {exc.pos})"
    except RecursionError:
        return None, "invalid JSON in the tool call (nested too deeply)"


def parse_tool_calls(text: str, fmt: str) -> list[ParsedCall | MalformedCall]:
    """Every tool call in one assistant turn's ``text`` (without its end-of-turn marker), in order.

    An empty list means the turn calls no tool (it is an answer). ``<tool_call>`` blocks are found left to right;
    an opening tag without its closing tag yields one :class:`MalformedCall` for the rest of the text.
    """
    check_format(fmt)
    text = text.replace(END_OF_TURN, "")
    calls: list[ParsedCall | MalformedCall] = []
    end = 0
    for match in _BLOCK.finditer(text):
        end = match.end()
        raw = match.group(0)
        value, problem = _load(match.group(1).strip())
        if problem:
            calls.append(MalformedCall(problem, raw))
        elif fmt == "smollm2" and isinstance(value, list):
            if not value:
                continue  # the model card's "no call needed": an empty list
            calls.extend(_call_from_object(item, raw) for item in value)
        else:
            calls.append(_call_from_object(value, raw))
    rest = text[end:]
    if OPEN_TAG in rest:
        calls.append(MalformedCall(f"{OPEN_TAG} is not closed by {CLOSE_TAG}", rest[rest.index(OPEN_TAG):]))
    return calls


def render_call(call: ParsedCall, fmt: str) -> str:
    """How the format writes one call inside an assistant turn (for warm-up data and tests)."""
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    if check_format(fmt) == "smollm2":
        return f"{OPEN_TAG}[{body}]{CLOSE_TAG}"
    return f"{OPEN_TAG}\n{body}\n{CLOSE_TAG}"


def render_observation(results: Sequence[ToolResult], fmt: str) -> str:
    """The text after the model's ``<|im_end|>``: the results of one turn's calls, in call order, and the next
    assistant header. Tokenizer-independent; the engine tokenizes it with ``add_special_tokens=False``."""
    check_format(fmt)
    if not results:
        raise ValueError("render_observation needs at least one result")
    if fmt == "chatml":
        turns = "".join(f"<|im_start|>tool\n{r.text}<|im_end|>\n" for r in results)
        return f"\n{turns}<|im_start|>assistant\n"
    blocks = "\n".join(f"<tool_response>\n{r.text}\n</tool_response>" for r in results)
    return f"\n<|im_start|>user\n{blocks}<|im_end|>\n<|im_start|>assistant\n"


def malformed_result(call: MalformedCall, fmt: str, max_chars: int = DEFAULT_MAX_CHARS) -> ToolResult:
    """The observation a malformed call gets: its reason and the shape the format expects (cut to ``max_chars``)."""
    body = '{"name": ..., "arguments": {...}}'
    shape = f"{OPEN_TAG}[{body}]{CLOSE_TAG}" if check_format(fmt) == "smollm2" else f"{OPEN_TAG}{body}{CLOSE_TAG}"
    text, cut = cut_text(f"malformed tool call: {call.reason}; expected {shape}", max_chars)
    return ToolResult("", "malformed", text, cut_chars=cut)
