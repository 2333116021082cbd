"""What an LLM judge is asked and how its reply is read: :class:`LLMJudgeConfig`, the rubric, the score parser.

Pure values and string work (no network): :func:`fill_rubric` fills ``{prompt}``, ``{completion}`` and
``{reference}`` in one pass, :func:`parse_score` reads the last ``Score: N`` of a reply and normalises it to [0, 1],
:func:`prompt_text` flattens a chat prompt. :class:`~.llm_judge.LLMJudgeReward` does the requests.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

from ..common.errors import ConfigError, short_repr
from .base import completion_text
from .judge_http import REQUEST_ERROR_KINDS

__all__ = [
    "DEFAULT_RUBRIC", "JUDGE_ERROR_KINDS", "PLACEHOLDERS", "LLMJudgeConfig", "ScoreParseError", "fill_rubric",
    "parse_score", "prompt_text",
]

#: Every ``details["error_kind"]`` of an error verdict, and the ``errors/<kind>`` counters of the reward's stats().
JUDGE_ERROR_KINDS = (*REQUEST_ERROR_KINDS, "unparsable", "out_of_range")
PLACEHOLDERS = ("prompt", "completion", "reference")
_PLACEHOLDER = re.compile(r"\{(prompt|completion|reference)\}")

DEFAULT_RUBRIC = """You are a strict grader. Grade the answer to the question below.

Question:
{prompt}

Reference answer:
{reference}

Answer to grade:
{completion}

Give one sentence of justification, then on the last line write "Score: N", where N is an integer from 1 \
(wrong or unusable) to 10 (correct, complete and clear)."""


@dataclass(frozen=True, kw_only=True)
class LLMJudgeConfig:
    """Where the judge is and how it is asked. Validated on construction (:class:`ConfigError` names the value).

    Attributes:
        base_url: the API root, e.g. ``http://localhost:8000/v1``; requests go to ``<base_url>/chat/completions``.
        model: the ``model`` field of each request.
        api_key_env: name of the environment variable holding the API key (sent as ``Authorization: Bearer``);
            ``None``: no key (a local server).
        rubric: the user message; ``{prompt}``, ``{completion}`` and ``{reference}`` are replaced in one pass
            (other braces are kept as written, so JSON examples need no escaping). Must contain ``{completion}``.
        system_prompt: an optional system message before the rubric.
        reference_column: the dataset column that fills ``{reference}``; required when the rubric uses it.
        score_pattern: regex with one group capturing the score; the last match in the reply counts.
        min_score, max_score: the rubric's scale; scores outside it are errors, inside it map to [0, 1].
        max_concurrency: requests in flight at once per reward object.
        max_retries: further attempts after a retryable failure (timeout, connection, 408/429/5xx).
        backoff_s: wait before the first retry; doubled before each next one.
        timeout_s: hard deadline of one request, connecting included.
        temperature, max_tokens: sampling settings sent with each request.
        cache: keep verdicts per (prompt, completion, reference) so repeats make no request.
        cache_max_entries: verdicts kept (least recently used dropped first).
        max_response_bytes: larger replies are ``bad_response`` errors.
        name: the reward's name in metrics (``rewards/<name>/...``).
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    rubric: str = DEFAULT_RUBRIC
    system_prompt: str | None = None
    reference_column: str | None = "answer"
    score_pattern: str = r"Score:\s*\**\s*(-?\d+(?:\.\d+)?)"
    min_score: float = 1.0
    max_score: float = 10.0
    max_concurrency: int = 4
    max_retries: int = 2
    backoff_s: float = 0.5
    timeout_s: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 256
    cache: bool = True
    cache_max_entries: int = 100_000
    max_response_bytes: int = 1 << 20
    name: str = "llm_judge"

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.base_url) if isinstance(self.base_url, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"LLMJudgeConfig.base_url={short_repr(self.base_url)}; expected an http:// or https:// "
                              "URL with a host, e.g. 'http://localhost:8000/v1'")
        for field in ("model", "name"):
            _require(isinstance(getattr(self, field), str) and getattr(self, field).strip(), self, field,
                     "a non-empty string")
        _require(self.api_key_env is None or (isinstance(self.api_key_env, str) and self.api_key_env.strip()
                                              and "=" not in self.api_key_env), self, "api_key_env",
                 "None or the NAME of an environment variable (not the key itself)")
        _require(isinstance(self.rubric, str) and "{completion}" in self.rubric, self, "rubric",
                 "a string containing the placeholder {completion} (and optionally {prompt}, {reference})")
        _require(self.system_prompt is None or isinstance(self.system_prompt, str), self, "system_prompt",
                 "None or a string")
        _require(self.reference_column is None or (isinstance(self.reference_column, str) and self.reference_column),
                 self, "reference_column", "None or a column name")
        if "{reference}" in self.rubric and self.reference_column is None:
            raise ConfigError("LLMJudgeConfig.rubric uses {reference} but reference_column=None; name the dataset "
                              "column holding the reference (e.g. 'answer') or drop {reference} from the rubric")
        self._check_pattern()
        for field in ("min_score", "max_score", "backoff_s", "timeout_s", "temperature"):
            _require(_is_number(getattr(self, field)), self, field, "a finite number")
        _require(self.max_score > self.min_score, self, "max_score", f"a number > min_score={self.min_score!r}")
        _require(self.timeout_s > 0, self, "timeout_s", "a number of seconds > 0")
        _require(self.backoff_s >= 0, self, "backoff_s", "a number of seconds >= 0")
        _require(self.temperature >= 0, self, "temperature", "a number >= 0")
        for field, low in (("max_concurrency", 1), ("max_retries", 0), ("max_tokens", 1), ("cache_max_entries", 1),
                           ("max_response_bytes", 1024)):
            value = getattr(self, field)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= low, self, field,
                     f"an integer >= {low}")
        _require(isinstance(self.cache, bool), self, "cache", "True or False")

    def _check_pattern(self) -> None:
        try:
            groups = re.compile(self.score_pattern).groups if isinstance(self.score_pattern, str) else 0
        except re.error as exc:
            raise ConfigError(f"LLMJudgeConfig.score_pattern={self.score_pattern!r} is not a valid regex: {exc}") from None
        _require(groups >= 1, self, "score_pattern", "a regex with one group capturing the score, e.g. r'Score:\\s*(\\d+)'")

    def worst_case_seconds(self, batch_size: int) -> float:
        """An upper bound on one batch's wall time when every attempt times out (compare with reward_timeout_s)."""
        waits = sum(self.backoff_s * 2 ** i for i in range(self.max_retries))
        waves = math.ceil(batch_size / self.max_concurrency)
        return waves * ((self.max_retries + 1) * self.timeout_s + waits)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: Any, config: LLMJudgeConfig, field: str, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"LLMJudgeConfig.{field}={short_repr(getattr(config, field))}; expected {accepted}")


def fill_rubric(rubric: str, prompt: str, completion: str, reference: str) -> str:
    """The rubric with its placeholders replaced in one pass (a completion containing ``{prompt}`` stays as is)."""
    values = {"prompt": prompt, "completion": completion, "reference": reference}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], rubric)


class ScoreParseError(ValueError):
    """The reply holds no usable score; ``kind`` is ``unparsable`` or ``out_of_range``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def parse_score(reply: str, pattern: re.Pattern[str], min_score: float, max_score: float) -> tuple[float, float]:
    """``(raw, normalised)`` from the last match of ``pattern`` in ``reply``, normalised to [0, 1] by the scale;
    :class:`ScoreParseError` when there is no match, the match is no number, or it lies outside the scale."""
    matches = list(pattern.finditer(reply))
    if not matches:
        raise ScoreParseError("unparsable", f"no match for {pattern.pattern!r} in the reply {short_repr(reply)}")
    text = matches[-1].group(1)
    try:
        raw = float(text)
    except (TypeError, ValueError):
        raise ScoreParseError("unparsable", f"score {short_repr(text)} is not a number") from None
    if not math.isfinite(raw) or not min_score <= raw <= max_score:
        raise ScoreParseError("out_of_range", f"score {raw:g} outside [{min_score:g}, {max_score:g}]")
    return raw, (raw - min_score) / (max_score - min_score)


def prompt_text(prompt: Any) -> str:
    """A prompt as text: a string as is; chat messages as their content (one) or ``role: content`` lines (several)."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    messages = [prompt] if isinstance(prompt, Mapping) else list(prompt)
    if len(messages) == 1:
        return completion_text(messages[0])
    return "\n".join(f"{m.get('role', 'user')}: {completion_text(m)}" for m in messages)
