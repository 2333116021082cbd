"""Limits and isolation settings of the code sandbox (:class:`SandboxConfig`), validated on construction."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

MODES = ("auto", "bwrap", "unshare", "none")

#: Standard-library modules the server imports once, so programs that use them start faster (fork keeps them).
#: Kept small: every module here makes each fork (two per program) slower.
DEFAULT_PREIMPORT = (
    "math", "cmath", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "operator",
    "typing", "random", "copy", "json", "decimal", "fractions", "datetime",
)


@dataclass(frozen=True)
class SandboxConfig:
    """How one program is isolated and limited.

    Attributes:
        timeout_seconds: wall-clock limit for the whole run (loading the program and all its tests), enforced
            by the parent processes; on expiry everything the program started is killed.
        memory_mb: address-space limit (RLIMIT_AS) of the program's process, in MiB.
        max_processes: processes + threads the program may have at once beyond the harness's own (enforced
            with RLIMIT_NPROC, counted per user namespace; see the package docstring for mode ``none``).
        max_output_bytes: bytes of stdout and of stderr kept (the rest is read and dropped).
        max_file_size_mb: largest file the program may write (RLIMIT_FSIZE), in MiB.
        tmp_size_mb: size of the writable tmpfs on /tmp (the program's working directory), in MiB; fixed when
            a server starts (namespace modes; in mode ``none`` the working directory is a plain temporary
            directory).
        max_open_files: RLIMIT_NOFILE of the program's process.
        max_value_bytes: largest single message (a returned value) the program may send to the test runner.
        cpu_seconds: RLIMIT_CPU of the program's process; default ``ceil(timeout_seconds) + 1``.
        mode: ``auto`` (strongest that works here: bwrap, then unshare, then none), or one of those names.
        python_executable: interpreter to run inside the sandbox; default: the host's base interpreter when
            the sandbox uid can read it, else the system ``python3`` (>= 3.10, standard library only).
        sandbox_uid: host uid that runs the sandbox when the host process is root (so that the kernel applies
            RLIMIT_NPROC and ordinary file permissions); ignored when not root.
        sandbox_gid: host gid paired with ``sandbox_uid``.
        startup_timeout_seconds: how long to wait for a sandbox server to start before calling it a failure.
        preimport: standard-library modules imported once by the server before forking programs.
    """

    timeout_seconds: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024
    max_file_size_mb: int = 16
    tmp_size_mb: int = 64
    max_open_files: int = 256
    max_value_bytes: int = 8 * 1024 * 1024
    cpu_seconds: int | None = None
    mode: str = "auto"
    python_executable: str | None = None
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    startup_timeout_seconds: float = 20.0
    preimport: tuple[str, ...] = field(default=DEFAULT_PREIMPORT)

    def __post_init__(self) -> None:
        def positive(name: str, minimum: float = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < minimum:
                raise ValueError(f"SandboxConfig.{name}={value!r}; expected a finite number >= {minimum}")

        positive("timeout_seconds", 0.05)
        positive("startup_timeout_seconds", 0.5)
        for name, minimum in (("memory_mb", 64), ("max_processes", 1), ("max_output_bytes", 0),
                              ("max_file_size_mb", 1), ("tmp_size_mb", 1), ("max_open_files", 16),
                              ("max_value_bytes", 1024)):
            positive(name, minimum)
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"SandboxConfig.{name}={getattr(self, name)!r}; expected an int >= {minimum}")
        if self.cpu_seconds is not None:
            positive("cpu_seconds", 1)
            if not isinstance(self.cpu_seconds, int):
                raise ValueError(f"SandboxConfig.cpu_seconds={self.cpu_seconds!r}; expected an int or None")
        if self.mode not in MODES:
            raise ValueError(f"SandboxConfig.mode={self.mode!r}; expected one of {MODES}")
        if self.python_executable is not None and not (
            os.path.isfile(self.python_executable) and os.access(self.python_executable, os.X_OK)
        ):
            raise ValueError(f"SandboxConfig.python_executable={self.python_executable!r} is not an executable file")
        for name in ("sandbox_uid", "sandbox_gid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32 - 1:
                raise ValueError(f"SandboxConfig.{name}={value!r}; expected a non-root id in 1..2**32-2")
        if isinstance(self.preimport, str) or not all(isinstance(m, str) and m.isidentifier() for m in self.preimport):
            raise ValueError(f"SandboxConfig.preimport={self.preimport!r}; expected a tuple of module names")

    @property
    def effective_cpu_seconds(self) -> int:
        """RLIMIT_CPU actually applied."""
        return self.cpu_seconds if self.cpu_seconds is not None else math.ceil(self.timeout_seconds) + 1
