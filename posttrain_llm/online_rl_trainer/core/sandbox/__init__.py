"""A local sandbox for untrusted, reward-optimised Python: isolation, limits, and verdicts the program cannot forge.

Use::

    with Sandbox(SandboxConfig(timeout_seconds=5), workers=4) as sandbox:
        result = sandbox.run(code, TestSuite(statements=("assert add(1, 2) == 3",)))
        result.tests  # one TestOutcome per test, decided by the trusted test runner

No torch, no network, no service: a few long-lived *servers* (one per worker) each fork a fresh process tree per
program (see ``_server.py`` for the tree), so a program costs two forks instead of an interpreter start.

Isolation modes (``SandboxConfig.mode``; ``auto`` takes the strongest that starts and warns once otherwise):

===================  ======================================  ==========================  ==========================
                     ``bwrap`` (bubblewrap)                  ``unshare`` (util-linux)    ``none``
===================  ======================================  ==========================  ==========================
host uid             ``sandbox_uid`` (65534) when root       same                        server as host uid; the
                                                                                         program setuid to
                                                                                         ``sandbox_uid`` when root
network              new namespace, loopback only            new namespace, no link up   host network (NOT isolated)
file system          fresh root: read-only ``/usr``,         host tree read-only; every  host tree with the uid's
                     ``/lib*``, ``/bin``, the interpreter's  top-level dir but ``/usr``  permissions (NOT isolated);
                     prefix, ``/etc/ld.so.cache``; no        ``/lib*`` ``/bin`` ``/sbin`` own temporary working dir
                     ``/home``, ``/root``, ``/work``,        ``/etc`` ``/dev`` covered
                     caches, ``/etc``                        by an empty tmpfs
writable             tmpfs ``/tmp`` (``tmp_size_mb``) and    same                        its working dir, and any
                     ``/dev/shm``, empty for every program                               world-writable host dir
processes            own PID namespace per program           same                        session + subreaper;
                     (killing its init kills all); cannot                                leftovers killed by the
                     signal or trace the harness                                         server; can signal the
                                                                                         harness when not root
IPC                  new namespace per program               same                        shared
hostname             new namespace                           same                        shared
user namespaces      disabled inside (``--disable-userns``)  disabled (best effort)      allowed
===================  ======================================  ==========================  ==========================

In every mode: wall clock enforced by two trusted parents (the supervisor, then the server as backstop); rlimits
AS (``memory_mb``), CPU, NPROC (``max_processes``), FSIZE, NOFILE, CORE=0; no capabilities and ``no_new_privs``;
cleared environment; stdin ``/dev/null``; stdout/stderr kept up to ``max_output_bytes``. The kernel ignores
RLIMIT_NPROC for uid 0, so programs never run as host root; it counts per user namespace, so in the namespace
modes each server has its own budget, while in mode ``none`` all processes of the uid count (other programs', and
the host user's own when not root).

Verdicts (see ``_testrunner.py``): the program runs alone in its process; the tests run in another (trusted)
process that holds the only copy of the test source, which neither the program nor any of its ancestors ever
held in memory. Every name the tests take from the program is a proxy: calls go over a pipe and only values
come back, rebuilt as genuine built-ins by a strict codec (exact types: an ``int`` subclass or an object whose
``__eq__`` is always true never reaches a comparison). The program's exit status and output are never read.
Exiting early, printing "PASSED", patching builtins or the harness inside its own process, or killing its
parent therefore cannot turn a failing test into a passing one.

Limits, honestly: no seccomp filter (the kernel's whole system-call surface is reachable, inside namespaces); no
cgroup, so memory is capped per process (``memory_mb`` x ``max_processes`` in the worst case) and CPU is shared
with the host; ``unshare`` leaves ``/etc`` and the host ``/dev`` readable; ``none`` isolates nothing but
processes and limits, and there a program can signal every process of its uid (with root: other sandboxes
running as ``sandbox_uid``; without root: the trainer itself), so ``none`` is for trusted code and tests only
(``auto`` warns when it falls back to it). A test that passes a test-defined function or class into the program
fails (only data crosses); returned objects that are not plain data can be passed back, have attributes read,
and be asked for ``bool``/``len``/``str``/iteration, but not compared. The program is pid 1 of its namespace, so
signals it sends itself without a handler are ignored. Programs see the standard library only (``python -I -S``).
"""

from .config import DEFAULT_PREIMPORT, MODES, SandboxConfig
from .isolation import SandboxUnavailable, installed_modes
from .runner import Sandbox
from .suite import ExecutionResult, TestOutcome, TestSuite

__all__ = [
    "DEFAULT_PREIMPORT",
    "MODES",
    "ExecutionResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "TestOutcome",
    "TestSuite",
    "installed_modes",
]
