"""Tests of CodeRewardFunction: code extraction, program assembly, row validation, verdicts and scores, and the
reference corpora (every HumanEval canonical solution, every MBPP reference that passes in a plain interpreter,
do-nothing bodies) judged in the sandbox: the hand-written fixture tasks always, the full corpora where the data is
found (skipped with the reason otherwise)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import datasets
import pytest

from posttrain_llm.online_rl_trainer.core.data.code import HumanEvalLoader, MBPPLoader
from posttrain_llm.online_rl_trainer.core.rewards.base import GuardedReward
from posttrain_llm.online_rl_trainer.core.rewards.code import CodeRewardFunction, build_program, extract_code
from posttrain_llm.online_rl_trainer.core.sandbox import SandboxConfig

ROW = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": ""}
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"


@pytest.fixture(scope="module")
def reward():
    fn = CodeRewardFunction(sandbox=SandboxConfig(timeout_seconds=30), max_workers=2)  # task 123 needs ~4 s
    yield fn
    fn.close()


# ----------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("text, expected", [
    ("```python\na = 1\n```\ntext\n```python\nb = 2\n```", "b = 2"),
    ("```py\nx = 1\n```", "x = 1"),
    ("```\nx = 1\n```", "x = 1"),
    ("```Python3\nx = 1\n```", "x = 1"),
    ("```python\nx = 1\n```\n```bash\nls\n```", "x = 1"),
    ("intro\n```python\ndef f():\n    return 1", "def f():\n    return 1"),  # unclosed: ran out of tokens
    ("def f():\n    return 1\n", "def f():\n    return 1"),  # no fence: the whole text
    ("  ```python\n  x = 1\n  ```", "x = 1"),  # indented fence (inside a list)
])
def test_extract_code_takes_the_last_python_block(text, expected):
    assert extract_code(text) == expected


@pytest.mark.parametrize("text", ["", "   \n", "```python\n\n```", "```bash\nls -la\n```"])
def test_extract_code_finds_no_code(text):
    assert extract_code(text) is None


def test_build_program_keeps_prompt_helpers_when_model_writes_the_whole_function():
    prompt = "import math\n\ndef helper(x):\n    return x + 1\n\ndef f(x):\n    \"\"\"doc\"\"\"\n"
    program = build_program("def f(x):\n    return helper(math.floor(x))", prompt, "f")
    namespace: dict = {}
    exec(program, namespace)
    assert namespace["f"](2.5) == 3


@pytest.mark.parametrize("body", ["    return x * 2\n", "return x * 2\n"])
def test_build_program_accepts_a_body_indented_or_not(body):
    namespace: dict = {}
    exec(build_program(body, "def f(x):\n    \"\"\"doc\"\"\"\n", "f"), namespace)
    assert namespace["f"](3) == 6


# ----------------------------------------------------------------------------------------------- rows, verdicts


def test_row_without_tests_names_the_accepted_columns(reward):
    with pytest.raises(ValueError, match=r"'tests' column.*'test' \+ 'entry_point'.*\['answer'\]"):
        reward.score(GOOD, answer="x")


@pytest.mark.parametrize("tests", ["assert True", [], [1], [""]])
def test_bad_tests_column_is_rejected_with_its_value(reward, tests):
    with pytest.raises(ValueError, match="column 'tests'"):
        reward.score(GOOD, tests=tests)


def test_correct_code_passes(reward):
    result = reward.score(GOOD, **ROW)
    assert (result.score, result.status) == (1.0, "passed") and result.details["passed"] == 2


def test_partial_credit_and_all_or_nothing(reward):
    code = "```python\ndef add(a, b):\n    return 3\n```"  # right for (1, 2) only
    assert reward.score(code, **ROW).score == 0.5
    strict = CodeRewardFunction(all_or_nothing=True, max_workers=1)
    result = strict.score(code, **ROW)
    strict.close()
    assert (result.score, result.status) == (0.0, "failed")


def test_pathological_code_is_judged_not_raised_on_the_host(reward, humaneval):
    deep = "```python\nx = " + "-" * 100_000 + "1\n```"
    row = {k: v[0] for k, v in humaneval[1].items()}
    result = reward.score(deep, **row)
    assert (result.score, result.status) == (0.0, "failed")


def test_no_code_is_no_answer_scored_zero(reward):
    result = reward.score("I don't know.\n```bash\necho hi\n```", **ROW)
    assert (result.score, result.status) == (0.0, "no_answer")


def test_judge_failure_is_none_not_zero():
    broken = CodeRewardFunction(sandbox=SandboxConfig(timeout_seconds=1, python_executable="/bin/true"),
                                max_workers=1)
    result = broken.score(GOOD, **ROW)
    broken.close()
    assert (result.score, result.status) == (None, "error")
    assert GuardedReward(broken)([GOOD], **{k: [v] for k, v in ROW.items()}) == [None]


def test_timeout_scores_zero_with_reason():
    slow = CodeRewardFunction(sandbox=SandboxConfig(timeout_seconds=0.5), max_workers=1)
    result = slow.score("```python\ndef add(a, b):\n    while True:\n        pass\n```", **ROW)
    slow.close()
    assert (result.score, result.status) == (0.0, "failed") and "timeout" in result.reason


def test_batch_call_takes_trl_columns_and_conversational_completions(reward):
    completions = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "no code"}],
                   [{"role": "assistant", "content": "```python\ndef add(a, b):\n    return 3\n```"}]]
    scores = reward(completions=completions, tests=[ROW["tests"]] * 3, test_setup_code=[""] * 3)
    assert scores == [1.0, 0.0, 0.5]


def test_reward_pickles_without_its_servers(reward):
    import pickle

    clone = pickle.loads(pickle.dumps(reward))
    assert clone.score(GOOD, **ROW).score == 1.0
    clone.close()


# ----------------------------------------------------------------------------------------------- corpora


def _columns(ds: datasets.Dataset) -> dict[str, list]:
    return {c: list(ds[c]) for c in ds.column_names if c != "prompt"}


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


#: HumanEval tasks, and how many of them the body-only test takes, per data folder (fixture: tests/fixture_*.py).
HUMANEVAL_TASKS = {"fixture": (5, 5), "full": (164, 40)}


@pytest.fixture(scope="module")
def humaneval(data_dir, fixture_data_dir):
    which = "fixture" if data_dir == fixture_data_dir else "full"
    return which, _columns(HumanEvalLoader(data_dir, use_hub=False).load("test"))


@pytest.fixture(scope="module", params=["full", "sanitized"])
def mbpp(request, data_dir):
    loader = MBPPLoader(request.param, data_dir, use_hub=False)
    return request.param, _columns(datasets.concatenate_datasets([loader.load(s) for s in loader.splits]))


def test_every_humaneval_canonical_solution_passes(reward, humaneval):
    which, humaneval = humaneval
    results = reward.score_batch([_fenced(a) for a in humaneval["answer"]], **humaneval)
    failed = [(t, r.reason) for t, r in zip(humaneval["task_id"], results) if r.status != "passed"]
    assert len(results) == HUMANEVAL_TASKS[which][0] and failed == []


def test_humaneval_body_only_completions_pass_too(reward, humaneval):
    which, humaneval = humaneval
    n = HUMANEVAL_TASKS[which][1]
    bodies = [_fenced(s.strip("\n")) for s in humaneval["canonical_solution"][:n]]
    results = reward.score_batch(bodies, **{k: v[:n] for k, v in humaneval.items()})
    assert [r.status for r in results] == ["passed"] * n


_PLAIN_RUNNER = r"""
import json, os, signal, sys
out = []
for program in json.load(sys.stdin):
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        os.setsid()
        signal.alarm(30)
        try:
            exec(compile(program, "<program>", "exec"), {"__name__": "__main__"})
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    out.append(status == 0)
print(json.dumps(out))
"""


def _passes_in_plain_interpreter(programs: list[str]) -> list[bool]:
    """Run each program (code + setup + asserts) as the usual harness would: one plain interpreter, no sandbox."""
    def run(chunk):
        proc = subprocess.run([sys.executable, "-c", _PLAIN_RUNNER], input=json.dumps(chunk), capture_output=True,
                              text=True, timeout=600, check=True)
        return json.loads(proc.stdout)

    half = len(programs) // 2
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, [programs[:half], programs[half:]])
    return first + second


def test_every_mbpp_reference_that_passes_plainly_passes_in_the_sandbox(reward, mbpp, capsys):
    variant, cols = mbpp
    plain = _passes_in_plain_interpreter(
        [f"{code}\n{setup}\n" + "\n".join(tests)
         for code, setup, tests in zip(cols["answer"], cols["test_setup_code"], cols["tests"])])
    results = reward.score_batch([_fenced(a) for a in cols["answer"]], **cols)
    failed = [(t, r.reason) for t, r, ok in zip(cols["task_id"], results, plain) if ok and r.status != "passed"]
    with capsys.disabled():
        print(f"\n[MBPP {variant}] {sum(plain)}/{len(plain)} reference solutions pass in a plain interpreter; "
              f"{sum(ok and r.status == 'passed' for r, ok in zip(results, plain))} of them pass in the sandbox")
    assert sum(plain) > 0.95 * len(plain) and failed == []


@pytest.fixture(scope="module")
def do_nothing_humaneval(reward, humaneval):
    which, humaneval = humaneval
    return which, reward.score_batch([_fenced(p + "    pass\n") for p in humaneval["code_prompt"]], **humaneval)


@pytest.fixture(scope="module")
def do_nothing_mbpp(reward, mbpp):
    _, cols = mbpp
    completions = [_fenced(f"def {e}(*args, **kwargs):\n    pass\n") for e in cols["entry_point"]]
    return cols, reward.score_batch(completions, **cols)


def test_do_nothing_bodies_fail_every_humaneval_task(do_nothing_humaneval):
    which, results = do_nothing_humaneval
    assert [r.score for r in results] == [0.0] * HUMANEVAL_TASKS[which][0]


def test_do_nothing_bodies_never_pass_a_whole_mbpp_task(do_nothing_mbpp):
    _, results = do_nothing_mbpp
    assert [r.status for r in results] == ["failed"] * len(results)


def test_do_nothing_bodies_only_pass_tests_that_expect_nothing(do_nothing_mbpp):
    cols, results = do_nothing_mbpp
    expects_nothing = re.compile(r"(==\s*None\s*$)|(^assert\s+not\s)")
    passed = [test for r, tests in zip(results, cols["tests"]) for ok, test in zip(r.details["per_test"], tests) if ok]
    assert passed and all(expects_nothing.search(t.strip()) for t in passed), passed
