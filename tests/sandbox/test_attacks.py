"""The adversarial suite of the code sandbox: one property per test for each attack a reward-optimised program
might try (issue 4's list).

Every attack runs once, in parallel, in the strongest mode this machine offers (fixture ``attacks``); each test then
checks one property of one attack: it scored 0, it finished within the limit, it left no process behind, it
changed nothing outside. Properties that a weaker mode does not claim (file system, network) are skipped there
with the reason. The function under test is always ``f(x) == 2 * x + 1``; every attack defines a wrong ``f`` (or
none, or a right one it never gets to serve), so any passed test means the attack fooled the judge.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer.core.sandbox import Sandbox, SandboxConfig, TestSuite

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 2.0
SLACK = 3.0  # kill + reap + scheduling on a loaded 2-core machine
# ONLINE_RL_SANDBOX_TEST_MODE=unshare|none runs the whole suite in a weaker mode (what it does not claim is skipped).
LIMITS = SandboxConfig(timeout_seconds=TIMEOUT, memory_mb=512, max_processes=16, max_output_bytes=4096,
                       max_file_size_mb=4, tmp_size_mb=16, mode=os.environ.get("ONLINE_RL_SANDBOX_TEST_MODE", "auto"))
F_TESTS = TestSuite(statements=("assert f(1) == 3", "assert f(2) == 5"))
CORRECT_F = "def f(x):\n    return 2 * x + 1\n"
TOKEN = "hf_" + uuid.uuid4().hex


# ----------------------------------------------------------------------------------------------- helpers


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, comm, cmdline) of every process on the host."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_text = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        comm = stat_text[stat_text.index("(") + 1: stat_text.rindex(")")]
        out[int(entry)] = (int(stat_text[stat_text.rindex(")") + 2:].split()[1]), comm, cmdline)
    return out


def _with_marker(marker: str) -> list[int]:
    return [pid for pid, (_, comm, cmd) in _processes().items() if marker in comm or marker in cmd]


def _descendants(root: int) -> set[int]:
    procs = _processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in procs.items() if ppid in frontier} - found
        found |= frontier
    return found


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _server_tree(sandbox: Sandbox) -> set[int]:
    pids = set()
    for server in sandbox._all:
        pids |= {server.proc.pid} | _descendants(server.proc.pid)
    return pids


# ----------------------------------------------------------------------------------------------- the attacks

ATTACKS = {
    "infinite_loop": "def f(x):\n    while True:\n        pass\n",
    "sleep": "import time\ntime.sleep(100)\n" + CORRECT_F,
    "hang_in_c_code": "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')\n" + CORRECT_F,
    "memory_bomb": "hog = [bytearray(1 << 26) for _ in range(10_000)]\n" + CORRECT_F,
    "fork_bomb": "import os, ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    try:\n        os.fork()\n"
                 "        libc.prctl(15, b'{marker}', 0, 0, 0)\n    except OSError:\n        pass\n",
    "orphaned_background_process": (
        "import os, sys, subprocess\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}-popen'],\n"
        "                 start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{marker}-double'])\n"
        "    os._exit(0)\n"
        "def f(x):\n    return 0\n"),
    "delete_and_write_outside": (
        "import os, shutil\n"
        "for action in (lambda: os.remove('{victim}/keep.txt'), lambda: shutil.rmtree('{victim}'),\n"
        "               lambda: open('{victim}/new.txt', 'w').write('x'),\n"
        "               lambda: open('{victim}/keep.txt', 'a').write('tampered'),\n"
        "               lambda: open('{repo}/sandbox_escape.txt', 'w').write('x'),\n"
        "               lambda: open('/var/tmp/{marker}', 'w').write('x')):\n"
        "    try:\n        action()\n    except OSError:\n        pass\n"
        "def f(x):\n    return 0\n"),
    "read_secret_file": "def f(x):\n    return open('{secret}').read()\n",
    "read_user_file": "def f(x):\n    return open('{repo}/pyproject.toml').read()\n",
    "tokens_from_environment": (
        "import os\ndef f(x):\n    return os.environ.get('HF_TOKEN') or open('/proc/1/environ').read()\n"),
    "connect_to_local_server": (
        "import socket\ndef f(x):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "    return s.recv(64).decode()\n"),
    "kill_parent_and_group": (
        "import os\nfor target in (os.getppid() or 1, -1):\n    try:\n        os.kill(target, 9)\n"
        "    except OSError:\n        pass\nos.killpg(os.getpgid(0), 9)\ndef f(x):\n    return 0\n"),
    "sys_exit_before_tests": "import sys\nsys.exit(0)\n" + CORRECT_F,
    "os_exit_before_tests": "import os\nos._exit(0)\n" + CORRECT_F,
    "exit_inside_function": "import os\ndef f(x):\n    os._exit(0)\n",
    "print_passed": "print('PASSED')\nprint('All tests passed!')\nprint('OK')\ndef f(x):\n    return 0\n",
    "eq_always_true": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Yes()\n"),
    "int_subclass": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return Int(0)\n"),
    "patch_the_harness": (
        "import builtins, sys, os\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {{}})\n"
        "for name in ('_program', '_testrunner', '_server'):\n    m = sys.modules.get(name)\n"
        "    if m is not None:\n        m._handle = lambda *a: ['ok', True, []]\n"
        "        m.run_tests = lambda *a, **k: None\n"
        "c = sys.modules.get('_codec')\nif c is not None:\n    c.encode = lambda *a, **k: True\n"
        "for fd in range(5, 64):\n    try:\n        os.write(fd, b'\\x00\\x00\\x00\\x06[\"end\"]')\n"
        "    except OSError:\n        pass\n"
        "def f(x):\n    return 0\n"),
    "huge_stdout": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "huge_file": "with open('big.bin', 'wb') as fh:\n    while True:\n        fh.write(b'x' * (1 << 20))\n",
    "deep_recursion_crash": "import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1)\nr(0)\n",
    "read_stdin": "data = input()\ndef f(x):\n    return int(data)\n",
    "thread_never_ends": (
        "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()\n"
        "def spin():\n    while True:\n        pass\nthreading.Thread(target=spin).start()\n"
        "def f(x):\n    return 0\n"),
}
NEEDS_FS_ISOLATION = {"delete_and_write_outside", "read_secret_file", "read_user_file"}
NEEDS_NET_ISOLATION = {"connect_to_local_server"}
#: Without namespaces and without root, a program runs as the test runner's own uid: kill(-1) would kill pytest.
NEEDS_UID_OR_NAMESPACES = {"kill_parent_and_group"}


def _contained(mode: str) -> bool:
    return mode != "none" or os.geteuid() == 0


def _runnable(name: str, mode: str) -> bool:
    """Whether to run an attack at all: in mode none, attacks on the file system or network would really
    change the host, and without root killing the group would kill pytest."""
    if mode == "none" and name in NEEDS_FS_ISOLATION | NEEDS_NET_ISOLATION:
        return False
    return _contained(mode) or name not in NEEDS_UID_OR_NAMESPACES


@pytest.fixture(scope="module")
def world():
    """Host-side bait: a world-readable secret, a world-writable victim folder, a listening local server."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-bait-"))
    base.chmod(0o755)
    secret = base / "secret.txt"
    secret.write_text("SECRET-" + uuid.uuid4().hex)
    secret.chmod(0o644)
    victim = base / "victim"
    victim.mkdir()
    victim.chmod(0o777)
    (victim / "keep.txt").write_text("original")
    (victim / "keep.txt").chmod(0o666)
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.sendall(b"hello-from-host")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield {"secret": secret, "victim": victim, "port": server.getsockname()[1], "accepted": accepted,
           "marker": "adv" + uuid.uuid4().hex[:10]}
    server.close()
    for p in sorted(base.rglob("*"), reverse=True):
        p.chmod(stat.S_IRWXU)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def attacks(world):
    """Run every attack once (in parallel) and record results, bait state before/after, the servers' trees."""
    os.environ["HF_TOKEN"] = TOKEN  # the host has a token; the program must not see it
    sandbox = Sandbox(LIMITS, workers=2)
    sandbox.run("x = 1\n")  # start and pick the mode
    values = {"marker": world["marker"], "victim": world["victim"], "secret": world["secret"],
              "repo": REPO_ROOT, "port": world["port"]}
    programs = {name: code.format(**values) for name, code in ATTACKS.items()}
    before = _snapshot(world["victim"])
    names = [n for n in programs if _runnable(n, sandbox.mode)]
    results = dict(zip(names, sandbox.run_many([(programs[n], F_TESTS) for n in names])))
    time.sleep(0.2)
    state = {"results": results, "mode": sandbox.mode, "before": before, "after": _snapshot(world["victim"]),
             "leftover_marked": _with_marker(world["marker"]),
             "server_trees": [_descendants(s.proc.pid) for s in sandbox._all],
             "sandbox": sandbox}
    yield state
    os.environ.pop("HF_TOKEN", None)
    sandbox.close()


def _skip_unclaimed(name: str, mode: str) -> None:
    if not _contained(mode) and name in NEEDS_UID_OR_NAMESPACES:
        pytest.skip(f"mode 'none' without root cannot contain {name}; not run")
    if mode == "none" and name in NEEDS_FS_ISOLATION | NEEDS_NET_ISOLATION:
        pytest.skip(f"mode 'none' does not isolate the file system or the network ({name}); not run")
    if mode == "unshare" and name == "read_user_file" and REPO_ROOT.parts[1] in ("usr", "etc"):
        pytest.skip("the repository is under a directory the unshare mode keeps visible")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_scores_zero(attacks, name):
    _skip_unclaimed(name, attacks["mode"])
    result = attacks["results"][name]
    assert result.status in ("completed", "timeout"), result.error
    assert result.passed_count == 0, (name, result.tests)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_finishes_within_the_limit(attacks, name):
    _skip_unclaimed(name, attacks["mode"])
    assert attacks["results"][name].elapsed_seconds < TIMEOUT + SLACK


def test_no_attack_leaves_a_process_behind(attacks):
    assert attacks["leftover_marked"] == []
    # Each server is bwrap's/unshare's process(es) and the server itself; nothing of any program survives.
    assert all(len(tree) <= 2 for tree in attacks["server_trees"]), attacks["server_trees"]


def test_attacks_change_nothing_outside(attacks, world):
    _skip_unclaimed("delete_and_write_outside", attacks["mode"])
    assert attacks["after"] == attacks["before"]
    assert not (REPO_ROOT / "sandbox_escape.txt").exists()
    assert not Path(f"/var/tmp/{world['marker']}").exists()


def test_local_server_saw_no_connection(attacks, world):
    _skip_unclaimed("connect_to_local_server", attacks["mode"])
    assert world["accepted"] == []


def test_huge_stdout_is_truncated_at_the_cap(attacks):
    result = attacks["results"]["huge_stdout"]
    assert result.output_truncated and len(result.stdout) <= LIMITS.max_output_bytes


def test_infinite_loop_is_reported_as_timeout(attacks):
    result = attacks["results"]["infinite_loop"]
    assert result.status == "timeout" and all(t.reason == "timeout" for t in result.tests)


def test_eq_cheat_is_refused_with_a_reason(attacks):
    assert "only plain built-in values can be compared" in attacks["results"]["eq_always_true"].tests[0].reason


def test_pool_still_judges_correctly_after_the_attacks(attacks):
    result = attacks["sandbox"].run(CORRECT_F, F_TESTS)
    assert result.all_passed, result



@pytest.mark.parametrize("mode", ["unshare", "none"])
def test_weaker_modes_still_contain_processes_and_verdicts(mode):
    # A uid of its own: in mode none a program may signal every process of its uid (see the package docs).
    config = SandboxConfig(mode=mode, timeout_seconds=TIMEOUT, memory_mb=512, max_processes=16, sandbox_uid=64321,
                           sandbox_gid=64321)
    marker = "wk" + uuid.uuid4().hex[:10]
    with Sandbox(config, workers=2) as sb:
        probe = sb.run("x = 1\n")
        if probe.status == "error":
            pytest.skip(f"mode {mode!r} cannot start here: {probe.error[:200]}")
        names = ["orphaned_background_process", "fork_bomb", "sys_exit_before_tests", "eq_always_true"]
        names += [n for n in NEEDS_UID_OR_NAMESPACES if _contained(mode)]
        programs = [ATTACKS[n].format(marker=marker) for n in names]
        results = sb.run_many([(p, F_TESTS) for p in programs])
        time.sleep(0.2)
        leftovers = _with_marker(marker)
        good = sb.run(CORRECT_F, F_TESTS)
    assert [r.passed_count for r in results] == [0] * len(programs)
    assert all(r.elapsed_seconds < TIMEOUT + SLACK for r in results)
    assert leftovers == []
    assert good.all_passed
