"""Tests of the code sandbox: the strict value codec, config validation, verdicts, isolation details, judge errors.

The adversarial suite (one property per attack) is in ``test_sandbox_attacks.py``.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import threading
import uuid

import pytest

from posttrain_llm.online_rl_trainer.core.sandbox import Sandbox, SandboxConfig, TestSuite
from posttrain_llm.online_rl_trainer.core.sandbox import _codec as codec
from posttrain_llm.online_rl_trainer.core.sandbox.runner import _descendants

LIMITS = SandboxConfig(timeout_seconds=2.0, memory_mb=512, max_processes=16, max_output_bytes=4096,
                       max_file_size_mb=4, tmp_size_mb=16)
F_TESTS = TestSuite(statements=("assert f(1) == 3", "assert f(2) == 5"))
CORRECT_F = "def f(x):\n    return 2 * x + 1\n"


# ----------------------------------------------------------------------------------------------- codec, config


@pytest.mark.parametrize("value", [
    None, True, 0, -(2**80), 1.5, float("-inf"), -0.0, 3 + 4j, "é\ud800", b"\x00\xff", bytearray(b"ab"),
    [1, [2, (3, {4: frozenset({5})})]], {"a": (1, 2)}, set(), range(2, 9, 3),
    collections.OrderedDict(a=1), collections.Counter("abca"), collections.defaultdict(list, a=[1]),
    collections.deque([1, 2], maxlen=3), int, type(None),
])
def test_codec_round_trip_keeps_exact_type_and_value(value):
    back = codec.decode(codec.encode(value))
    assert type(back) is type(value) and back == value and repr(back) == repr(value)


def test_codec_rejects_int_subclass_without_reference_support():
    class Sneaky(int):
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError, match="Sneaky"):
        codec.encode([Sneaky(3)])


def test_codec_turns_unknown_objects_into_references_only_when_asked():
    refs = []
    encoded = codec.encode([object()], make_ref=lambda o: refs.append(o) or ["R", 1, False, "object"])
    assert encoded == ["l", ["R", 1, False, "object"]] and len(refs) == 1


@pytest.mark.parametrize("bad", [1.5, ["zz", 1], ["f"], ["l", 2.0], ["d", 1], ["T", "eval"], ["i", 5], [], {"a": 1}])
def test_codec_decode_rejects_malformed_values(bad):
    with pytest.raises(codec.ProtocolError):
        codec.decode(bad)


def test_codec_rejects_cycles_and_deep_nesting():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="cycle"):
        codec.encode(cyclic)
    deep: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        codec.encode(deep)


def test_recv_msg_refuses_oversized_message():
    r, w = os.pipe()
    os.write(w, codec.HEADER.pack(10_000) + b"x" * 10)
    with pytest.raises(codec.ProtocolError, match="over the limit"):
        codec.recv_msg(r, max_bytes=100)
    os.close(r), os.close(w)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"timeout_seconds": 0}, "timeout_seconds=0"), ({"memory_mb": 10}, "memory_mb=10"),
    ({"mode": "docker"}, "mode='docker'"), ({"sandbox_uid": 0}, "sandbox_uid=0"),
    ({"max_processes": 2.5}, "max_processes=2.5"), ({"python_executable": "/nonexistent"}, "/nonexistent"),
])
def test_config_rejects_bad_values_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        SandboxConfig(**kwargs)


def test_test_suite_needs_statements_or_check():
    with pytest.raises(ValueError, match="exactly one"):
        TestSuite()
    with pytest.raises(ValueError, match="entry_point"):
        TestSuite(check="def check(c): pass")


# ----------------------------------------------------------------------------------------------- more properties


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS, workers=2) as sb:
        yield sb


def test_correct_program_passes_and_wrong_one_fails(sandbox):
    good, bad = sandbox.run_many([(CORRECT_F, F_TESTS), ("def f(x):\n    return x\n", F_TESTS)])
    assert [t.passed for t in good.tests] == [True, True]
    assert [t.passed for t in bad.tests] == [False, False]


def test_partial_credit_is_per_test(sandbox):
    result = sandbox.run("def f(x):\n    return 3 if x == 1 else 0\n", F_TESTS)
    assert [t.passed for t in result.tests] == [True, False]


def test_fork_bomb_is_capped_by_max_processes(sandbox):
    code = ("import os, time\ndef spawned():\n    n = 0\n    for _ in range(200):\n        try:\n"
            "            if os.fork() == 0:\n                time.sleep(30)\n                os._exit(0)\n"
            "            n += 1\n        except OSError:\n            break\n    return n\n")
    result = sandbox.run(code, TestSuite(statements=(f"assert 0 < spawned() <= {LIMITS.max_processes}",)))
    assert result.all_passed, result.tests


def test_program_has_only_its_own_descriptors(sandbox):
    code = ("import fcntl\ndef fds():\n    out = []\n    for fd in range(1024):\n        try:\n"
            "            fcntl.fcntl(fd, fcntl.F_GETFD)\n            out.append(fd)\n        except OSError:\n"
            "            pass\n    return out\n")
    result = sandbox.run(code, TestSuite(statements=("assert fds() == [0, 1, 2, 3, 4]",)))
    assert result.all_passed, result.tests


def test_tests_never_reach_the_programs_memory():
    """Earlier suites and this one carry SECRET-<hex> tokens; a program scanning all of its memory finds none."""
    scan = (
        "import ctypes, re\ndef found():\n    hits = set()\n"
        "    for line in open('/proc/self/maps').read().splitlines():\n"
        "        span, perms, *rest = line.split()\n"
        "        start, end = (int(x, 16) for x in span.split('-'))\n"
        "        path = rest[3] if len(rest) > 3 else ''\n"  # anonymous memory, heap and stack hold all data
        "        if 'r' not in perms or end - start > 1 << 29 or path not in ('', '[heap]', '[stack]'):\n"
        "            continue\n"
        "        data = ctypes.string_at(start, end - start)\n"
        "        hits.update(m.group(0) for m in re.finditer(rb'SECRET-[0-9a-f]{16}', data))\n"
        "    return sorted(h.decode() for h in hits)\n")
    with Sandbox(LIMITS, workers=1) as sb:
        planted = "kept = ''.join(['SECRET-', '0123456789abcdef'])\n"  # control: the scan does see its own memory
        control = sb.run(planted + scan, TestSuite(statements=("assert found() == ['SECRET-0123456789abcdef']",)))
        assert control.all_passed, control.tests
        for _ in range(3):
            secret = f"SECRET-{uuid.uuid4().hex[:16]}"
            sb.run(CORRECT_F, TestSuite(statements=(f"assert f(1) == 3, '{secret}'",)))
        result = sb.run(scan, TestSuite(statements=(f"assert found() == [], 'SECRET-{uuid.uuid4().hex[:16]}'",)))
    assert result.all_passed, result.tests


def test_non_plain_return_values_answer_unary_questions_only(sandbox):
    code = "import re\ndef m(s):\n    return re.match('a+', s)\n"
    suite = TestSuite(statements=("assert m('aa')", "assert not m('b')", "assert m('aa') == m('aa')"))
    assert [t.passed for t in sandbox.run(code, suite).tests] == [True, True, False]


def test_builtin_shadowing_needs_the_entry_point(sandbox):
    code = "def abs(x):\n    return 0\ndef f(x):\n    return 2 * x\n"
    suite = TestSuite(statements=("assert abs(f(1) - 3) < 1e-9",))  # program's abs would hide f's error
    assert not sandbox.run(code, suite).all_passed
    summed = TestSuite(statements=("assert sum(2, 3) == 5",), entry_point="sum")
    assert sandbox.run("def sum(a, b):\n    return a + b\n", summed).all_passed


def test_fake_stdlib_module_is_not_used_by_the_tests(sandbox):
    code = "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef f(x):\n    return 0\n"
    result = sandbox.run(code, TestSuite(statements=("assert math.isclose(f(1), 3)",)))
    assert not result.all_passed


def test_script_run_reports_exit_code_and_output(sandbox):
    result = sandbox.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_dead_server_is_a_judge_error_not_a_failure():
    with Sandbox(LIMITS, workers=1) as sb:
        sb.run(CORRECT_F, F_TESTS)
        server = sb._all[0]

        def infrastructure_failure():
            for pid in _descendants(server.proc.pid):
                os.kill(pid, signal.SIGKILL)

        threading.Timer(0.5, infrastructure_failure).start()
        result = sb.run("import time\ntime.sleep(1.5)\n" + CORRECT_F, F_TESTS)
        assert result.status == "error" and result.tests == ()
        assert sb.run(CORRECT_F, F_TESTS).all_passed  # a fresh server replaced it


def test_unstartable_sandbox_is_a_judge_error():
    broken = SandboxConfig(timeout_seconds=1, python_executable="/bin/true")
    with Sandbox(broken, workers=1) as sb:
        result = sb.run(CORRECT_F, F_TESTS)
    assert result.status == "error" and "no usable interpreter" in result.error


def test_check_suite_does_not_fall_back_to_the_prelude_stub(sandbox):
    suite = TestSuite(check="def check(candidate):\n    assert candidate(1) is None\n", entry_point="f",
                      prelude='def f(x):\n    """doc"""\n')
    result = sandbox.run("def g(x):\n    return None\n", suite)
    assert not result.all_passed and "does not define 'f'" in result.tests[0].reason


def test_oversized_program_fails_without_running(sandbox):
    from posttrain_llm.online_rl_trainer.core.sandbox.runner import MAX_CODE_CHARS

    result = sandbox.run("x = 1\n" * (MAX_CODE_CHARS // 6 + 1), F_TESTS)
    assert result.passed_count == 0 and "over the limit" in result.tests[0].reason


def test_auto_mode_warns_once_when_only_a_weaker_mode_starts(monkeypatch):
    from posttrain_llm.online_rl_trainer.core.sandbox import isolation, runner

    monkeypatch.setattr(isolation, "_warned", set())
    monkeypatch.setattr(runner, "installed_modes", lambda: ["none"])
    with pytest.warns(RuntimeWarning, match="mode 'none', weaker than 'bwrap'"):
        with Sandbox(LIMITS, workers=1) as first:
            assert first.run(CORRECT_F, F_TESTS).all_passed and first.mode == "none"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Sandbox(LIMITS, workers=1) as second:
            assert second.run(CORRECT_F, F_TESTS).all_passed


def test_scratch_space_and_ipc_are_fresh_for_every_program():
    dirty = ("import os, ctypes\nopen('/tmp/left', 'w').write('x')\nopen('/dev/shm/left', 'w').write('x')\n"
             "os.makedirs('/tmp/a/b')\nos.chmod('/tmp/a', 0)\nos.chmod('/tmp', 0o700)\n"
             "assert ctypes.CDLL(None).shmget(1234, 4096, 0o1666) >= 0\n")
    probe = ("import os\ndef state():\n    return [os.listdir('/tmp'), os.listdir('/dev/shm'),\n"
             "            oct(os.stat('/tmp').st_mode & 0o7777), open('/proc/sysvipc/shm').read().count('\\n')]\n")
    with Sandbox(LIMITS, workers=1) as sb:
        wrote = sb.run(dirty)
        if sb.mode == "none":
            pytest.skip("mode 'none' gives a fresh working directory only, not a private /tmp, /dev/shm or IPC")
        result = sb.run(probe, TestSuite(statements=("assert state() == [[], [], '0o1777', 1]",)))
    assert wrote.exit_code == 0, wrote.stderr
    assert result.all_passed, result.tests
