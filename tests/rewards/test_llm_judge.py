"""Tests of LLMJudgeReward against real server processes (``judge_server.py``), not mocks of the client.

The judge server is a real HTTP process. Where a model answers, it is a real model generating greedily: the built-in
tiny model (random weights: its replies are real but not "Score: N", so they exercise the unparsable path) and,
in the slow test, SmolLM2-135M-Instruct. Where a test needs a parsable score whose content does not matter (cache,
retries, normalisation end to end), the server runs with ``--scripted-reply``, and the test says so; the parser
itself is tested on strings. Faults (hang, trickle, garbage, a server killed mid-run) are real processes too.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer import LLMJudgeConfig, LLMJudgeReward
from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from posttrain_llm.online_rl_trainer.core.rewards.base import GuardedReward
from posttrain_llm.online_rl_trainer.core.rewards.llm_judge import (
    JUDGE_ERROR_KINDS,
    ScoreParseError,
    fill_rubric,
    parse_score,
    prompt_text,
)

SERVER_SCRIPT = Path(__file__).with_name("judge_server.py")
TINY = "builtin:tiny-char-llama"
PATTERN = re.compile(LLMJudgeConfig(base_url="http://x", model="m").score_pattern)


class JudgeServer:
    """A judge_server.py process on a free port; ``stats()`` is what it saw."""

    def __init__(self, *args: str, log_dir: Path, startup_s: float = 120.0):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1"}
        self.log = log_dir / f"judge-server-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--port", "0", *args], env=env,
                                         stdout=subprocess.PIPE, stderr=log)
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        line = b"" if not selector.select(startup_s) else self.proc.stdout.readline()
        selector.close()
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"judge server did not start: {line!r}; log:\n{self.log.read_text()[-3000:]}")
        self.port = int(line.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self, reset: bool = False) -> dict:
        url = f"http://127.0.0.1:{self.port}/stats" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def judge(server: JudgeServer, **overrides) -> LLMJudgeReward:
    fields = dict(base_url=server.base_url, model="judge-under-test", max_tokens=8, timeout_s=20.0, backoff_s=0.05)
    return LLMJudgeReward(LLMJudgeConfig(**{**fields, **overrides}))


def batch(n: int, tag: str = "") -> dict:
    """Keyword arguments as TRL passes them: chat prompts, chat completions and the dataset's answer column."""
    return dict(
        prompts=[[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(n)],
        completions=[[{"role": "assistant", "content": f"{tag}The answer is {2 * i}."}] for i in range(n)],
        answer=[str(2 * i) for i in range(n)],
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Started servers, all stopped at the end of the module."""
    started: list[JudgeServer] = []
    log_dir = tmp_path_factory.mktemp("judge-logs")

    def start(*args: str) -> JudgeServer:
        server = JudgeServer(*args, log_dir=log_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def model_server(servers) -> JudgeServer:
    """The tiny model behind the API (built in the server process); ``--delay 0.1`` so that concurrent requests
    visibly overlap."""
    return servers("--model", TINY, "--delay", "0.1")


@pytest.fixture(scope="module")
def scripted_server(servers) -> JudgeServer:
    """A script, not a judge: every reply is the same parsable text (7 on a 1-10 scale -> 6/9)."""
    return servers("--scripted-reply", "The answer matches the reference.\nScore: 7")


# ------------------------------------------------------------------------------------------ config and parsing
@pytest.mark.parametrize("field, value", [
    ("base_url", "localhost:8000/v1"), ("base_url", "ftp://host/v1"), ("base_url", "http:///v1"), ("model", " "),
    ("api_key_env", "OPENAI_API_KEY=sk-123"), ("rubric", "Grade {prompt}"), ("score_pattern", r"Score:\s*\d+"),
    ("score_pattern", "Score: ("), ("max_score", 1.0), ("timeout_s", 0), ("timeout_s", float("inf")),
    ("backoff_s", -1.0), ("temperature", -0.5), ("max_concurrency", 0), ("max_concurrency", True),
    ("max_concurrency", 2.5), ("max_retries", -1), ("max_tokens", 0), ("cache", "yes"), ("cache_max_entries", 0),
])
def test_config_rejects_a_bad_value_naming_it_and_what_is_accepted(field, value):
    with pytest.raises(ConfigError, match=rf"LLMJudgeConfig\.{field}") as info:
        LLMJudgeConfig(**{"base_url": "http://localhost:8000/v1", "model": "m", field: value})
    assert repr(value)[:20] in str(info.value) and ("expected" in str(info.value) or "regex" in str(info.value))


def test_config_rejects_a_reference_placeholder_without_a_column():
    with pytest.raises(ConfigError, match="reference_column=None"):
        LLMJudgeConfig(base_url="http://h/v1", model="m", reference_column=None)
    LLMJudgeConfig(base_url="http://h/v1", model="m", reference_column=None, rubric="Grade: {completion}")


def test_a_missing_api_key_variable_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="'JUDGE_TEST_KEY'"):
        LLMJudgeReward(LLMJudgeConfig(base_url="http://h/v1", model="m", api_key_env="JUDGE_TEST_KEY"))


def test_worst_case_seconds_by_hand():
    config = LLMJudgeConfig(base_url="http://h/v1", model="m", timeout_s=10, max_retries=2, backoff_s=1,
                            max_concurrency=4)
    # 9 samples on 4 slots -> 3 waves; each: 3 attempts x 10 s + waits 1 + 2 s = 33 s
    assert config.worst_case_seconds(9) == 99.0


@pytest.mark.parametrize("reply, raw", [
    ("The answer is correct and well explained.\nScore: 8", 8.0),
    ("Score: 3\nOn reflection, it misses a step.\nScore: 6", 6.0),  # the last one counts
    ("**Score:** 10", 10.0), ("Score: **1**", 1.0), ("Score:5.5", 5.5),
])
def test_parse_score_reads_the_last_score_and_normalises(reply, raw):
    assert parse_score(reply, PATTERN, 1, 10) == (raw, (raw - 1) / 9)


@pytest.mark.parametrize("reply, kind", [
    ("I think the answer is good.", "unparsable"), ("Score: ten", "unparsable"), ("", "unparsable"),
    ("Score: 11", "out_of_range"), ("Score: 0", "out_of_range"), ("Score: -3", "out_of_range"),
])
def test_parse_score_failures_have_a_kind(reply, kind):
    with pytest.raises(ScoreParseError) as info:
        parse_score(reply, PATTERN, 1, 10)
    assert info.value.kind == kind


def test_fill_rubric_is_one_pass_and_keeps_other_braces():
    rubric = 'Q: {prompt}\nA: {completion}\nRef: {reference}\nAnswer as {"score": N}'
    filled = fill_rubric(rubric, "2+2?", "I say {reference} and {prompt}", "4")
    assert filled == 'Q: 2+2?\nA: I say {reference} and {prompt}\nRef: 4\nAnswer as {"score": N}'


def test_prompt_text_of_chat_prompts():
    assert prompt_text("plain") == "plain"
    assert prompt_text([{"role": "user", "content": "hi"}]) == "hi"
    assert prompt_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]) == \
        "system: be brief\nuser: hi"


# ------------------------------------------------------------------------------------------ a real model server
def test_real_model_replies_are_judged_or_counted_as_errors_never_zero(model_server):
    model_server.stats(reset=True)
    reward = judge(model_server, max_concurrency=2, system_prompt="You are a careful grader.")
    results = reward.score_batch(**batch(4))
    seen = model_server.stats()
    assert seen["requests"] == 4 and reward.stats()["requests"] == 4 and reward.stats()["judged"] == 4
    for r in results:  # the tiny model's replies are real text, not "Score: N": errors, never a 0
        assert isinstance(r.details["reply"], str)
        if r.status == "error":
            assert r.score is None and r.details["error_kind"] in ("unparsable", "out_of_range")
        else:
            assert 0.0 <= r.score <= 1.0
    assert reward.stats()["errors"] == sum(r.score is None for r in results)
    sent = seen["last_request"]
    assert sent["model"] == "judge-under-test" and sent["temperature"] == 0.0 and sent["max_tokens"] == 8
    assert sent["messages"][0] == {"role": "system", "content": "You are a careful grader."}
    rubric = sent["messages"][1]["content"]  # the last sample's: question, reference and completion filled in
    assert "What is 3 + 3?\n" in rubric and "Reference answer:\n6\n" in rubric and "The answer is 6.\n" in rubric


def test_api_key_is_sent_as_bearer_from_the_environment_and_never_shown(model_server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    model_server.stats(reset=True)
    with_key = judge(model_server, api_key_env="JUDGE_TEST_KEY")
    result = with_key.score("The answer is 4.", prompt="What is 2 + 2?", answer="4")
    judge(model_server).score("The answer is 4.", prompt="What is 2 + 2?", answer="4")
    assert model_server.stats()["authorization"] == ["Bearer sk-test-123", None]
    shown = repr(with_key) + repr(with_key.config) + result.reason + json.dumps(result.details) + repr(vars(with_key))
    assert "sk-test-123" not in shown


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_limit_is_respected_and_reached(model_server, limit):
    model_server.stats(reset=True)
    reward = judge(model_server, max_concurrency=limit)
    reward.score_batch(**batch(6, tag=f"limit {limit}: "))
    assert model_server.stats()["max_in_flight"] == limit


def test_judge_errors_are_not_cached(model_server):
    model_server.stats(reset=True)
    reward = judge(model_server)
    for _ in range(2):
        assert reward.score_batch(**batch(1, tag="uncached: "))[0].score is None
    assert model_server.stats()["requests"] == 2 and reward.stats()["cache_hits"] == 0


def test_guarded_reward_passes_nones_and_the_judge_logs_its_counters(model_server):
    logged: dict[str, list[float]] = {}
    guarded = GuardedReward(judge(model_server, name="judge"), timeout_s=60)
    values = guarded(**batch(2, tag="guarded: "), log_metric=lambda k, v: logged.setdefault(k, []).append(v))
    assert len(values) == 2 and guarded.none_count == sum(v is None for v in values)
    assert logged["rewards/judge/requests"] == [2.0] and logged["rewards/judge/judged"] == [2.0]
    assert logged["rewards/judge/judge_errors"] == [float(guarded.none_count)]
    assert logged["rewards/judge/errors"] == [float(guarded.none_count)]
    assert "rewards/judge/latency_mean_s" in logged


def test_a_wrong_path_is_a_4xx_and_not_retried(model_server):
    model_server.stats(reset=True)
    reward = judge(model_server, base_url=f"http://127.0.0.1:{model_server.port}/v2", max_retries=3)
    result = reward.score_batch(**batch(1))[0]
    assert result.score is None and result.details["error_kind"] == "http_status" and "HTTP 404" in result.reason
    assert reward.stats()["retries"] == 0 and reward.stats()["requests"] == 1


# ------------------------------------------------------------------------ scripted replies: cache and retries
def test_repeated_pairs_make_no_request_within_and_across_batches(scripted_server):
    scripted_server.stats(reset=True)
    reward = judge(scripted_server)
    kwargs = batch(2)
    twice = {key: values + values[:1] for key, values in kwargs.items()}  # samples: a, b, a
    first = reward.score_batch(**twice)
    second = reward.score_batch(**kwargs)
    assert scripted_server.stats()["requests"] == 2
    assert reward.stats()["cache_hits"] == 3 and reward.stats()["requests"] == 2
    assert [r.score for r in first + second] == [6 / 9] * 5 and all(r.status == "failed" for r in first)


def test_without_the_cache_every_sample_is_a_request(scripted_server):
    scripted_server.stats(reset=True)
    reward = judge(scripted_server, cache=False)
    kwargs = batch(1)
    reward.score_batch(**{key: values * 3 for key, values in kwargs.items()})
    assert scripted_server.stats()["requests"] == 3 and reward.stats()["cache_hits"] == 0


def test_overloaded_server_is_retried_with_backoff_until_it_answers(servers):
    server = servers("--scripted-reply", "Score: 10", "--fail-first", "2")
    reward = judge(server, max_retries=2, backoff_s=0.1)
    start = time.monotonic()
    result = reward.score_batch(**batch(1))[0]
    assert time.monotonic() - start >= 0.1 + 0.2  # two waits: 0.1 s, then 0.2 s
    assert (result.score, result.status, result.details["attempts"]) == (1.0, "passed", 3)
    assert reward.stats()["retries"] == 2 and server.stats()["requests"] == 3


def test_overloaded_server_past_the_retries_is_an_http_status_error(servers):
    server = servers("--scripted-reply", "Score: 10", "--fail-first", "5")
    reward = judge(server, max_retries=1)
    result = reward.score_batch(**batch(1))[0]
    assert result.score is None and result.details["error_kind"] == "http_status" and "HTTP 503" in result.reason
    assert server.stats()["requests"] == 2 and reward.stats()["errors/http_status"] == 1


# ------------------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize("fault", ["hang", "trickle", "slow_body"])
def test_a_server_that_never_finishes_answering_times_out_within_the_deadline(servers, fault):
    server = servers("--fault", fault)
    reward = judge(server, timeout_s=0.5, max_retries=1, backoff_s=0.1, max_concurrency=2)
    start = time.monotonic()
    results = reward.score_batch(**batch(2))
    elapsed = time.monotonic() - start
    # per sample: 0.5 s + wait 0.1 s + 0.5 s; the two samples run side by side. ``trickle`` and ``slow_body`` send
    # a byte every 0.2 s, so a per-read socket timeout alone would never fire.
    assert 1.1 <= elapsed < 2.0, elapsed
    assert all(r.score is None and r.details["error_kind"] == "timeout" for r in results)
    stats = reward.stats()
    assert stats["errors/timeout"] == 2 and stats["retries"] == 2 and stats["requests"] == 4
    assert 0.5 <= stats["latency_max_s"] < 0.9


@pytest.mark.parametrize("fault", ["garbage", "no_choices", "not_http"])
def test_a_reply_that_is_not_a_chat_completion_is_a_bad_response_not_retried(servers, fault):
    server = servers("--fault", fault)
    reward = judge(server, max_retries=3)
    results = reward.score_batch(**batch(2))
    assert all(r.score is None and r.details["error_kind"] == "bad_response" for r in results)
    assert reward.stats()["errors/bad_response"] == 2 and reward.stats()["retries"] == 0
    assert server.stats()["requests"] == 2


def test_a_server_killed_between_batches_gives_connection_errors_after_retries(servers):
    server = servers("--model", TINY)
    reward = judge(server, max_retries=2, backoff_s=0.05)
    first = reward.score_batch(**batch(2))
    assert all(r.details.get("error_kind") != "connection" for r in first) and reward.stats()["requests"] == 2
    server.stop()
    start = time.monotonic()
    second = reward.score_batch(**batch(3, tag="after the crash: "))
    assert time.monotonic() - start < 3.0
    assert all(r.score is None and r.details["error_kind"] == "connection" for r in second)
    stats = reward.stats()
    assert stats["retries"] == 3 * 2 and stats["requests"] == 2 + 3 * 3 and stats["errors/connection"] == 3
    assert set(JUDGE_ERROR_KINDS) <= {k.split("/", 1)[1] for k in stats if k.startswith("errors/")}


# -------------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_as_a_judge_end_to_end(servers, smollm2_dir):
    """A real instruct model behind the API. A 135M model may or may not follow the rubric: the test checks the
    plumbing (one request per sample, every verdict either a score read from the reply or a counted error)."""
    server = servers("--model", str(smollm2_dir))
    rubric = ("Question: {prompt}\nReference answer: {reference}\nStudent answer: {completion}\n"
              "Is the student answer correct? Reply with exactly one line: \"Score: 1\" if it is wrong, "
              "\"Score: 10\" if it is correct.")
    reward = judge(server, rubric=rubric, max_tokens=24, timeout_s=120.0)
    results = reward.score_batch(
        prompts=["What is 2 + 3?"] * 2 + ["What is the capital of France?"],
        completions=["2 + 3 = 5.", "2 + 3 = 7.", "The capital of France is Paris."],
        answer=["5", "5", "Paris"],
    )
    for r in results:
        print(r.status, r.score, repr(r.details.get("reply")))
        if r.status == "error":
            assert r.score is None and r.details["error_kind"] in ("unparsable", "out_of_range")
        else:
            assert r.score == parse_score(r.details["reply"], PATTERN, 1, 10)[1]
    assert server.stats()["requests"] == 3 and reward.stats()["errors"] == sum(r.score is None for r in results)
