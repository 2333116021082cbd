"""Isolation modes: which ones this machine offers, how to launch the sandbox server in each, which interpreter.

``bwrap`` > ``unshare`` > ``none`` in strength; ``auto`` picks the strongest that actually starts (the server
checks at start that per-program PID and mount namespaces work) and warns once when that is not ``bwrap``.
What each mode isolates is tabled in the package docstring (``core/sandbox/__init__.py``).

When the host process is root, the server is started as ``SandboxConfig.sandbox_uid`` (default 65534,
``nobody``): the kernel ignores RLIMIT_NPROC for uid 0, and an unprivileged uid cannot read root's files even
where a mode leaves them mounted. The interpreter must then be readable by that uid; an interpreter under a
private directory (e.g. pyenv in ``/root``) is skipped in favour of the system ``python3``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import SandboxConfig

STRENGTH = ("bwrap", "unshare", "none")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_IN_SANDBOX_MODULES = ("_codec", "_syscalls", "_program", "_testrunner", "_unshare_fs", "_server")
_MIN_PYTHON = (3, 10)
_BOOT = (
    "import sys, json, types\n"
    "cfg = json.loads(sys.argv[1]); it = iter(sys.argv[2:])\n"
    "for name, src in zip(it, it):\n"
    "    m = types.ModuleType(name); m.__file__ = '<sandbox:' + name + '>'; sys.modules[name] = m\n"
    "    exec(compile(src, m.__file__, 'exec'), m.__dict__)\n"
    "del sys.argv[1:]\n"
    "sys.modules['_server'].main(cfg)\n"
)
_warned: set[str] = set()


class SandboxUnavailable(RuntimeError):
    """No requested isolation mode can start on this machine (names the mode and the reason)."""


@dataclass(frozen=True)
class Interpreter:
    """A Python usable inside the sandbox and the directories it needs besides the system ones."""

    executable: str
    version: tuple[int, int]
    keep_paths: tuple[str, ...]


def host_is_root() -> bool:
    return os.geteuid() == 0


def _readable_by_others(path: str) -> bool:
    """True if a uid that is neither owner nor group member can reach and read ``path``."""
    p = Path(path).resolve()
    for parent in reversed(p.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(p).st_mode
    return bool(mode & stat.S_IROTH and (mode & stat.S_IXOTH or not stat.S_ISDIR(mode)))


@functools.lru_cache(maxsize=16)
def _describe_interpreter(executable: str) -> Interpreter | None:
    probe = "import sys, json; print(json.dumps([sys.base_prefix, sys.base_exec_prefix, list(sys.version_info[:2])]))"
    try:
        out = subprocess.run([executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30,
                             check=True, env={"PATH": "/usr/bin:/bin"}).stdout
        prefix, exec_prefix, version = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    keep = {os.path.realpath(p) for p in (prefix, exec_prefix, os.path.dirname(os.path.realpath(executable)))}
    keep = tuple(sorted(p for p in keep if not any(p == d or p.startswith(d + "/") for d in _SYSTEM_DIRS)))
    return Interpreter(os.path.realpath(executable), tuple(version), keep)


def choose_interpreter(config: SandboxConfig, needs_world_readable: bool) -> Interpreter:
    """The interpreter to run in the sandbox (see ``SandboxConfig.python_executable``)."""
    if config.python_executable:
        candidates = [config.python_executable]
    else:
        candidates = [getattr(sys, "_base_executable", None), sys.executable, shutil.which("python3"),
                      "/usr/bin/python3"]
    tried = []
    for exe in dict.fromkeys(c for c in candidates if c):
        info = _describe_interpreter(os.path.realpath(exe))
        if info is None or info.version < _MIN_PYTHON:
            tried.append(f"{exe} (not a Python >= {_MIN_PYTHON[0]}.{_MIN_PYTHON[1]})")
            continue
        if needs_world_readable and not all(_readable_by_others(p) for p in (info.executable, *info.keep_paths)):
            tried.append(f"{exe} (not readable by the sandbox uid {config.sandbox_uid})")
            continue
        return info
    raise SandboxUnavailable(f"no usable interpreter for the sandbox; tried: {'; '.join(tried)}. Set "
                             "SandboxConfig.python_executable to a Python >= 3.10 that other users can read")


@functools.lru_cache(maxsize=1)
def _bwrap_features() -> frozenset[str]:
    try:
        text = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(opt for opt in ("--disable-userns", "--unshare-cgroup-try") if opt in text)


def installed_modes() -> list[str]:
    """Modes whose tools are installed here, strongest first (whether they *work* is checked at start)."""
    modes = []
    if shutil.which("bwrap"):
        modes.append("bwrap")
    if shutil.which("unshare"):
        modes.append("unshare")
    modes.append("none")
    return modes


def boot_argv(interpreter: str, server_cfg: dict) -> list[str]:
    """``python -I -S -B -c BOOT cfg name source ...``: the server's code travels in argv, so the sandbox needs
    no access to this package's files."""
    here = Path(__file__).resolve().parent
    argv = [interpreter, "-I", "-S", "-B", "-c", _BOOT, json.dumps(server_cfg)]
    for name in _IN_SANDBOX_MODULES:
        argv += [name, (here / f"{name}.py").read_text(encoding="utf-8")]
    return argv


def _bwrap_prefix(interp: Interpreter) -> list[str]:
    features = _bwrap_features()
    argv = ["bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    argv += [opt for opt in ("--unshare-cgroup-try", "--disable-userns") if opt in features]
    argv += ["--new-session", "--cap-add", "CAP_SYS_ADMIN", "--uid", "65534", "--gid", "65534",
             "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for d in _SYSTEM_DIRS[1:]:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for p in interp.keep_paths:
        argv += ["--ro-bind", p, p]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "HOME", "/tmp", "--"]
    return argv


_UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount", "--net",
            "--ipc", "--uts", "--propagation", "private", "--"]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one sandbox server."""

    mode: str
    argv: list[str]
    popen_kwargs: dict
    interpreter: Interpreter
    server_cfg: dict


def plan_launch(mode: str, config: SandboxConfig, channel_fd: int, tests_fd: int,
                workdir_base: str | None = None) -> LaunchPlan:
    """How to start a server in ``mode`` that talks on ``channel_fd`` and receives tests on ``tests_fd``
    (both inherited by the child)."""
    if mode not in STRENGTH:
        raise ValueError(f"mode={mode!r}; expected one of {STRENGTH}")
    root = host_is_root()
    interp = choose_interpreter(config, needs_world_readable=root)
    server_cfg = {"mode": mode, "channel_fd": channel_fd, "tests_fd": tests_fd, "preimport": list(config.preimport),
                  "keep_paths": list(interp.keep_paths), "tmp_size_mb": config.tmp_size_mb}
    popen_kwargs: dict = {"env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}, "cwd": "/"}
    if mode == "none":
        prefix: list[str] = []
        if root:
            server_cfg.update(run_as_uid=config.sandbox_uid, run_as_gid=config.sandbox_gid)
        server_cfg["workdir_base"] = workdir_base
    else:
        prefix = _bwrap_prefix(interp) if mode == "bwrap" else list(_UNSHARE)
        if root:
            popen_kwargs.update(user=config.sandbox_uid, group=config.sandbox_gid, extra_groups=[])
    return LaunchPlan(mode, prefix + boot_argv(interp.executable, server_cfg), popen_kwargs, interp, server_cfg)


def warn_if_weak(mode: str, reasons: dict[str, str]) -> None:
    """Warn once per process and mode when the sandbox runs weaker than bubblewrap."""
    if mode == "bwrap" or mode in _warned:
        return
    _warned.add(mode)
    why = "; ".join(f"{m}: {r}" for m, r in reasons.items()) or "not requested"
    warnings.warn(
        f"code sandbox running in mode {mode!r}, weaker than 'bwrap' ({why}). Install bubblewrap "
        "(scripts/install_system_deps.sh) and allow unprivileged user namespaces for full isolation; see "
        "posttrain_llm.online_rl_trainer.core.sandbox for what each mode isolates",
        RuntimeWarning,
        stacklevel=3,
    )
