"""LLM-as-a-judge: any OpenAI-compatible chat endpoint grades each completion against a rubric.

:class:`LLMJudgeReward` fills the rubric (:attr:`LLMJudgeConfig.rubric`, placeholders ``{prompt}``,
``{completion}``, ``{reference}``), sends it to ``<base_url>/chat/completions`` (vLLM, llama.cpp's server, TGI,
Ollama, OpenAI...), reads the last ``Score: N`` of the reply (:attr:`LLMJudgeConfig.score_pattern`) and returns
``(N - min_score) / (max_score - min_score)`` in [0, 1]: ``passed`` at the top of the scale, ``failed`` below it.

Failure semantics: every failure of the judge gives ``RewardResult(score=None, status="error")``, never 0, so a
dead or confused judge is not mistaken for a bad policy (TRL leaves such samples out; the trainer's guard counts
them as ``rewards/<name>/judge_errors``). The kind of failure is in ``details["error_kind"]``:

=================  ==========================================================  =========
kind               cause                                                       retried?
=================  ==========================================================  =========
``timeout``        no complete reply within ``timeout_s`` (a hard deadline)    yes
``connection``     refused, reset, closed early (server down or restarting)   yes
``http_status``    not 200: 408/429/5xx are retried, other 4xx are not        408/429/5xx
``bad_response``   a 200 that is not a chat completion (not JSON, no choices)  no
``unparsable``     the reply has no score matching ``score_pattern``           no
``out_of_range``   the score is outside [min_score, max_score]                 no
=================  ==========================================================  =========

Retries wait ``backoff_s * 2**(attempt - 1)`` (no jitter). Worst case per sample:
``(max_retries + 1) * timeout_s`` plus the waits; :meth:`LLMJudgeConfig.worst_case_seconds` gives the bound for
a batch, which must stay under the trainer's ``reward_timeout_s`` (the guard stops the run otherwise).

Requests of a batch run in a thread pool, at most ``max_concurrency`` in flight per reward object. With ``cache``,
a verdict (not an error) is kept per (prompt, completion, reference) so a repeated pair makes no request, also
within one batch (GRPO groups often repeat a completion). Counters (requests, retries, cache hits, errors by kind,
latencies) are in :meth:`LLMJudgeReward.stats`, and each batch logs its share through the trainer's
``log_metric`` as ``rewards/<name>/<counter>``.

The API key is read from the environment variable ``api_key_env`` names, at each request; it is never stored on
the object, in the config or in a message. Not covered: streaming, tool calls, logprob-based scores, judging
several completions in one request (pairwise or listwise ranking), ``Retry-After`` headers.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

from ..common.errors import ConfigError
from .base import RewardFunction, RewardResult, completion_text, row_kwargs
from .judge_http import JudgeRequestError, chat_completions_url, chat_reply_text, post_chat
from .llm_judge_config import (
    DEFAULT_RUBRIC,
    JUDGE_ERROR_KINDS,
    LLMJudgeConfig,
    ScoreParseError,
    fill_rubric,
    parse_score,
    prompt_text,
)

__all__ = [
    "DEFAULT_RUBRIC", "JUDGE_ERROR_KINDS", "JudgeStats", "LLMJudgeConfig", "LLMJudgeReward", "ScoreParseError",
    "fill_rubric", "parse_score", "prompt_text",
]


class JudgeStats:
    """Thread-safe counters of one judge; :meth:`snapshot` is a flat dict of numbers, ready to log."""

    COUNTERS = ("requests", "retries", "cache_hits", "judged", "errors", *(f"errors/{k}" for k in JUDGE_ERROR_KINDS))

    def __init__(self, keep_latencies: int = 4096):
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.COUNTERS, 0)
        self._latencies: deque[float] = deque(maxlen=keep_latencies)
        self._latency_total = 0.0
        self._latency_max = 0.0

    def add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counts[counter] += n

    def request(self, latency_s: float) -> None:
        with self._lock:
            self._counts["requests"] += 1
            self._latencies.append(latency_s)
            self._latency_total += latency_s
            self._latency_max = max(self._latency_max, latency_s)

    def snapshot(self) -> dict[str, float]:
        """Counts since creation; latency mean/max over all requests, p50/p95 over the last ``keep_latencies``."""
        with self._lock:
            out: dict[str, float] = dict(self._counts)
            ordered = sorted(self._latencies)
            n = self._counts["requests"]
            out["latency_mean_s"] = self._latency_total / n if n else 0.0
            out["latency_max_s"] = self._latency_max
        for label, q in (("latency_p50_s", 0.5), ("latency_p95_s", 0.95)):
            out[label] = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
        return out


class LLMJudgeReward(RewardFunction):
    """Scores completions with an LLM judge behind an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, config: LLMJudgeConfig):
        if not isinstance(config, LLMJudgeConfig):
            raise TypeError(f"LLMJudgeReward takes an LLMJudgeConfig, got {type(config).__name__}")
        if config.api_key_env is not None and not os.environ.get(config.api_key_env):
            raise ConfigError(f"environment variable {config.api_key_env!r} (LLMJudgeConfig.api_key_env) is not set or "
                              "empty; export the API key there, or set api_key_env=None for a server without a key")
        self.config = config
        self._pattern = re.compile(config.score_pattern)
        self._url = chat_completions_url(config.base_url)
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._cache: OrderedDict[tuple[str, str, str], RewardResult] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stats = JudgeStats()

    @property
    def name(self) -> str:
        return self.config.name

    def stats(self) -> dict[str, float]:
        """Counters since creation: requests (HTTP attempts), retries, cache_hits, judged (samples sent to the judge),
        errors and errors/<kind>, latency_mean_s / latency_max_s / latency_p50_s / latency_p95_s per request."""
        return self._stats.snapshot()

    def score(self, completion: str, **row: Any) -> RewardResult:
        """Judge one completion; the question is ``row["prompt"]`` (text or chat messages), if given."""
        prompt = row.pop("prompt", None)
        return self.score_batch([completion], prompts=[prompt], **{k: [v] for k, v in row.items()})[0]

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        n = len(completions)
        prompts = kwargs.get("prompts")
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} completions; pass one prompt per completion")
        keys = [(prompt_text(prompts[i] if prompts is not None else None), completion_text(c),
                 self._reference(row_kwargs(kwargs, i, n))) for i, c in enumerate(completions)]
        before = self._stats.snapshot()
        verdicts: list[RewardResult | None] = [None] * n
        job_of: list[int] = [-1] * n  # sample -> index of the request that judges it
        jobs: list[tuple[str, str, str]] = []
        first_job: dict[tuple[str, str, str], int] = {}
        for i, key in enumerate(keys):
            if self.config.cache:  # without the cache every sample is judged on its own (independent draws)
                verdicts[i] = self._cache_get(key)
                if verdicts[i] is None and key in first_job:
                    job_of[i] = first_job[key]
                if verdicts[i] is not None or job_of[i] >= 0:
                    self._stats.add("cache_hits")
                    continue
                first_job[key] = len(jobs)
            job_of[i] = len(jobs)
            jobs.append(key)
        judged: list[RewardResult] = []
        if jobs:
            with ThreadPoolExecutor(min(len(jobs), self.config.max_concurrency),
                                    thread_name_prefix=f"judge-{self.name}") as pool:
                judged = list(pool.map(self._judge, jobs))
            if self.config.cache:
                for key, verdict in zip(jobs, judged):
                    if verdict.status != "error":  # an error is retried the next time the pair comes up
                        self._cache_put(key, verdict)
        self._log_batch(kwargs.get("log_metric"), before)
        return [v if v is not None else judged[job_of[i]] for i, v in enumerate(verdicts)]

    def _reference(self, row: Mapping[str, Any]) -> str:
        if "{reference}" not in self.config.rubric:
            return ""
        column = self.config.reference_column
        if column not in row or row[column] is None:
            raise ValueError(f"the rubric uses {{reference}} but the row has no {column!r} value (columns: "
                             f"{sorted(row)}); set LLMJudgeConfig.reference_column to the column with the reference")
        return str(row[column])

    def _judge(self, key: tuple[str, str, str]) -> RewardResult:
        """One sample: request with retries, then parse. Never raises for a failure of the judge."""
        self._stats.add("judged")
        attempts = [0]
        reply = None
        try:
            reply = chat_reply_text(self._request_with_retries(key, attempts))
            raw, score = parse_score(reply, self._pattern, self.config.min_score, self.config.max_score)
        except (JudgeRequestError, ScoreParseError) as exc:
            return self._error(exc.kind, str(exc), attempts[0], reply)
        status = "passed" if score >= 1.0 else "failed"
        scale = f"[{self.config.min_score:g}, {self.config.max_score:g}]"
        return RewardResult(score, status, f"judge score {raw:g} on {scale}",
                            details={"raw_score": raw, "reply": reply[:2000], "attempts": attempts[0]})

    def _request_with_retries(self, key: tuple[str, str, str], attempts: list[int]) -> dict[str, Any]:
        cfg = self.config
        prompt, completion, reference = key
        messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        messages.append({"role": "user", "content": fill_rubric(cfg.rubric, prompt, completion, reference)})
        payload = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        while True:
            if attempts[0]:
                self._stats.add("retries")
                time.sleep(cfg.backoff_s * 2 ** (attempts[0] - 1))
            attempts[0] += 1
            with self._slots:
                start = time.monotonic()
                try:
                    return post_chat(self._url, payload, self._headers(), cfg.timeout_s, cfg.max_response_bytes)
                except JudgeRequestError as exc:
                    if not exc.retryable or attempts[0] > cfg.max_retries:
                        raise
                finally:
                    self._stats.request(time.monotonic() - start)

    def _headers(self) -> dict[str, str]:
        env = self.config.api_key_env
        key = os.environ.get(env) if env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _error(self, kind: str, message: str, attempts: int, reply: str | None) -> RewardResult:
        self._stats.add("errors")
        self._stats.add(f"errors/{kind}")
        details: dict[str, Any] = {"error_kind": kind, "attempts": attempts}
        if reply is not None:
            details["reply"] = reply[:2000]
        return RewardResult(None, "error", f"llm judge {kind}: {message}", details=details)

    def _cache_get(self, key: tuple[str, str, str]) -> RewardResult | None:
        with self._cache_lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
            return verdict

    def _cache_put(self, key: tuple[str, str, str], verdict: RewardResult) -> None:
        with self._cache_lock:
            self._cache[key] = verdict
            while len(self._cache) > self.config.cache_max_entries:
                self._cache.popitem(last=False)

    def _log_batch(self, log_metric: Callable[[str, float], Any] | None, before: Mapping[str, float]) -> None:
        """This batch's counts through the trainer's ``log_metric`` (TRL averages them over the logging interval)."""
        if not callable(log_metric):
            return
        after = self._stats.snapshot()
        for counter in JudgeStats.COUNTERS:
            log_metric(f"rewards/{self.name}/{counter}", float(after[counter] - before[counter]))
        requests = after["requests"] - before["requests"]
        if requests:
            batch_latency = after["latency_mean_s"] * after["requests"] - before["latency_mean_s"] * before["requests"]
            log_metric(f"rewards/{self.name}/latency_mean_s", batch_latency / requests)

    def __repr__(self) -> str:
        return f"LLMJudgeReward(name={self.name!r}, model={self.config.model!r}, base_url={self.config.base_url!r})"
