"""The sandbox server: a pre-started interpreter that forks one fresh, limited process tree per program.

Runs inside the sandbox only (stdlib only; loaded from source text by ``isolation.boot_argv``).
Process tree for one program, and who is trusted::

    server (Z, trusted, long-lived; subreaper; never reads a test; in the namespace modes it owns a mount
      │  namespace with read-only /dev and a scratch tmpfs on /tmp and /dev/shm, replaced after any program
      │  that touched it)
      └─ supervisor (C, trusted): new PID + IPC namespace (namespace modes); forks the program, *then* reads the
         │  tests, drops its capabilities, runs the tests
         └─ program (H, untrusted; pid 1 of its PID namespace): own session, rlimits, no capabilities,
            no_new_privs, cleared environment, stdin /dev/null, stdout/stderr to capped pipes, cwd /tmp; loads the
            code and answers the test runner's calls

The supervisor kills the program when the tests are done; being the init of its PID namespace, its death makes
the kernel kill everything left in that namespace, whatever it did (setsid, double fork). The server enforces
the wall clock on the supervisor as a second line and, as subreaper, kills and reaps anything left. In mode
``none`` (no namespaces) the program's whole session is killed, then its leftovers are found as the server's
orphaned descendants and killed until none remain; its working directory is a fresh temporary directory.

The program sees the server's /proc (its own processes under other pids, the server and the supervisor): it
cannot signal them (they are outside its PID namespace) nor read their memory, descriptors or environment
(non-dumpable, and they hold capabilities it lacks); their command lines are the server's public source.
The program being pid 1 has one visible quirk: signals it sends itself without installing a handler (e.g.
``os.kill(os.getpid(), SIGTERM)``) are ignored, as for any namespace init.

Protocol (see ``runner.py``): host -> server on ``channel_fd``: ``{"id", "kind", "code", limits...}``; host ->
supervisor on ``tests_fd`` (which the server never reads): ``{"id", suite...}``; supervisor -> host:
``["test", i, passed, reason]`` per test then ``["end", {...}]``; server -> host: ``["done", {...}]``.
"""

from __future__ import annotations

import gc
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

import _codec as codec
import _program as program
import _syscalls as sc
import _testrunner as testrunner

_GRACE_SECONDS = 1.0  # the server's wall clock is the supervisor's plus this, so the supervisor reports first
_NS_MODES = ("bwrap", "unshare")


def _count_tasks(uid: int | None) -> int:
    """Tasks (processes + threads) visible in /proc, optionally only those with real uid ``uid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if uid is None or int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    kids.append(int(entry))
            except (OSError, ValueError):
                continue
    return kids


# ------------------------------------------------------------------------------------------- the program


def _program(req, cfg, fds, workdir, nproc):
    """The program's process (H); pid 1 of its own PID namespace in the namespace modes. Never returns."""
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor's death ends the program (and namespace)
        if os.getppid() != fds["supervisor"] and cfg["mode"] not in _NS_MODES:
            os._exit(73)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for src, dst in ((devnull, 0), (fds["out_w"], 1), (fds["err_w"], 2), (fds["prog_in"], 3), (fds["prog_out"], 4)):
            os.dup2(src, dst)
        os.closerange(5, 1 << 16)
        os.chdir(workdir)
        if cfg.get("run_as_uid") is not None:
            os.setgroups([])
            os.setgid(cfg["run_as_gid"])
            os.setuid(cfg["run_as_uid"])
        mb = 1024 * 1024
        limits = [
            (resource.RLIMIT_AS, req["memory_mb"] * mb),
            (resource.RLIMIT_CPU, req["cpu_seconds"]),
            (resource.RLIMIT_NPROC, nproc),
            (resource.RLIMIT_FSIZE, req["max_file_size_mb"] * mb),
            (resource.RLIMIT_NOFILE, req["max_open_files"]),
            (resource.RLIMIT_CORE, 0),
        ]
        for which, value in limits:
            hard = resource.getrlimit(which)[1]
            if hard != resource.RLIM_INFINITY:  # never above what the server itself may use
                value = min(value, hard - 1 if which == resource.RLIMIT_CPU else hard)
            resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))
        if cfg["mode"] in _NS_MODES:
            sc.drop_all_capabilities()
        else:
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                           "LANG": "C.UTF-8"})
        sys.argv = ["program.py"]
        program.fresh_stdio()
        if req["kind"] == "tests":
            program.serve_program(req["code"], 3, 4)
            os._exit(0)
        os._exit(program.run_script(req["code"]))
    except BaseException:  # noqa: BLE001 - the program's own failures end here too
        try:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(70)


# ------------------------------------------------------------------------------------------- the supervisor


def _scratch_state(point: str) -> tuple:
    st = os.stat(point)
    return st.st_ctime_ns, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, tuple(os.listdir(point))


def _fresh_scratch(cfg) -> None:
    """Make sure the next program finds an empty tmpfs on /tmp (its working directory) and /dev/shm.

    A tmpfs the last program changed in any way (an entry, a chmod, an xattr on it: all move its ctime) is
    detached whole and replaced, whatever it holds (odd permissions, deep trees); an untouched one is kept,
    because unmounting costs the kernel an RCU grace period (about a third of a judged run's CPU). Namespace
    modes only, in the server's own mount namespace (see ``_private_mount_namespace``).
    """
    scratch = cfg.setdefault("scratch", {})
    for point, opts in (("/tmp", f"size={cfg['tmp_size_mb']}m,nr_inodes=4096,mode=1777"),
                        ("/dev/shm", "size=16m,nr_inodes=256,mode=1777")):
        if point in scratch:
            if _scratch_state(point) == scratch[point]:
                continue
            sc.umount2(point, sc.MNT_DETACH)
        sc.mount("tmpfs", point, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, opts)
        scratch[point] = _scratch_state(point)


def _private_mount_namespace(cfg) -> None:
    """The server's own mount namespace (namespace modes): read-only /dev, scratch tmpfs mounted per program.

    One namespace for the server, not one per program: tearing down mounts costs the kernel an RCU grace
    period, and a mount namespace per program took about a third of the CPU of a whole judged run.
    """
    if cfg["mode"] == "bwrap":  # bubblewrap's mount namespace belongs to its outer user namespace: make our own
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if not os.path.isdir("/dev/shm"):
        os.mkdir("/dev/shm")
    if not sc.flags_of("/dev") & sc.MS_RDONLY:  # bubblewrap's /dev is a writable tmpfs
        sc.remount_readonly("/dev")
    _fresh_scratch(cfg)


def _kill_program(pid: int) -> None:
    """SIGKILL the program's whole session at once (in a PID namespace, killing its init alone would do)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _read_suite(fd: int, req_id: int, deadline: float):
    """The test suite for request ``req_id`` (older ones, left by a supervisor that died early, are skipped)."""
    while True:
        msg = codec.recv_msg(fd, deadline)
        if type(msg) is dict and msg.get("id") == req_id:
            return msg


def _supervise(req, cfg, pid_w: int) -> None:
    """The supervisor (C) of one program: start it, then (only then) read the tests and run them. Never returns."""
    chan, tests_fd = cfg["channel_fd"], cfg["tests_fd"]
    deadline = time.monotonic() + req["timeout"]
    ns_mode = cfg["mode"] in _NS_MODES
    if ns_mode:
        nproc = cfg["base_tasks"] + 2 + req["max_processes"]
        sc.unshare(sc.CLONE_NEWPID | sc.CLONE_NEWIPC)  # SysV IPC objects must not outlive the program either
        workdir = "/tmp"
    else:
        uid = cfg.get("run_as_uid")
        nproc = _count_tasks(os.getuid() if uid is None else uid) + 2 + req["max_processes"]
        workdir = req["workdir"]
    fds = {"supervisor": os.getpid()}
    fds["prog_in"], to_program = os.pipe()
    from_program, fds["prog_out"] = os.pipe()
    out_r, fds["out_w"] = os.pipe()
    err_r, fds["err_w"] = os.pipe()
    program_pid = os.fork()
    if program_pid == 0:
        _program(req, cfg, fds, workdir, nproc)
    os.write(pid_w, str(program_pid).encode())
    os.close(pid_w)
    for key in ("prog_in", "prog_out", "out_w", "err_w"):
        os.close(fds[key])
    if ns_mode:
        sc.drop_all_capabilities()
    pump = codec.OutputPump([out_r, err_r], req["max_output_bytes"])
    result = {"exit_code": None}
    if req["kind"] == "tests":
        suite = _read_suite(tests_fd, req["id"], deadline + _GRACE_SECONDS)
        for fd in (to_program, from_program):
            codec.set_nonblocking(fd)
        client = testrunner.ProgramClient(to_program, from_program, deadline, req["max_value_bytes"], pump)
        testrunner.run_tests(client, suite, lambda i, ok, why: codec.send_msg(chan, ["test", i, ok, why]))
        result["timed_out"] = client.gone == "timeout"
        _kill_program(program_pid)
        os.waitpid(program_pid, 0)
    else:
        pidfd = os.pidfd_open(program_pid)
        exited = False
        while not exited and time.monotonic() < deadline:
            ready, _, _ = select.select([pidfd, *pump.open], [], [], max(0.0, deadline - time.monotonic()))
            pump.service([fd for fd in ready if fd != pidfd])
            exited = pidfd in ready
        result["timed_out"] = not exited
        if not exited:
            _kill_program(program_pid)
        _, status = os.waitpid(program_pid, 0)
        result["exit_code"] = os.waitstatus_to_exitcode(status) if exited else None
    pump.finish(time.monotonic() + 0.2)
    result.update(stdout=pump.text(out_r), stderr=pump.text(err_r), output_truncated=pump.truncated)
    codec.send_msg(chan, ["end", result])
    os._exit(0)


# ------------------------------------------------------------------------------------------- the server


def _reap_everything(me: int, budget: float) -> bool:
    """Kill and reap all of the server's children (orphans land here: it is a subreaper). True if none remain."""
    end = time.monotonic() + budget
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            for kid in _children_of(me):
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)
    return False


def _run_one(req, cfg) -> dict:
    start = time.monotonic()
    if cfg["mode"] not in _NS_MODES:
        req["workdir"] = tempfile.mkdtemp(prefix="program-", dir=cfg["workdir_base"])
        if cfg.get("run_as_uid") is not None:
            os.chown(req["workdir"], cfg["run_as_uid"], cfg["run_as_gid"])
    pid_r, pid_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(pid_r)
            _supervise(req, cfg, pid_w)
        except BaseException:  # noqa: BLE001 - reported to the host through the server's stderr
            import traceback

            traceback.print_exc()
        finally:
            os._exit(72)
    os.close(pid_w)
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], req["timeout"] + _GRACE_SECONDS)
    os.close(pidfd)
    program_pid = os.read(pid_r, 32) if select.select([pid_r], [], [], 0)[0] else b""
    os.close(pid_r)
    if not ready:  # the supervisor overran: kill it and the program (in a PID namespace: all of it)
        os.kill(pid, signal.SIGKILL)
        if program_pid:
            _kill_program(int(program_pid))
    _, status = os.waitpid(pid, 0)
    clean = _reap_everything(os.getpid(), budget=5.0)
    if "workdir" in req:
        shutil.rmtree(req["workdir"], ignore_errors=True)
    elif clean:
        _fresh_scratch(cfg)
    return {"supervisor_status": os.waitstatus_to_exitcode(status), "killed": not ready, "clean": clean,
            "elapsed": time.monotonic() - start}


def _probe_namespaces() -> str:
    """Check, in a throwaway child, that per-program PID + IPC namespaces work here. '' when they do."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        msg = b""
        try:
            sc.unshare(sc.CLONE_NEWPID | sc.CLONE_NEWIPC)
        except OSError as exc:
            msg = str(exc).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    msg = os.read(r, 4096).decode()
    os.close(r)
    return msg


def main(cfg: dict) -> None:
    """Serve run requests on ``cfg['channel_fd']`` until the host closes it (never reads ``tests_fd``)."""
    chan = cfg["channel_fd"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg["mode"] == "unshare":
        import _unshare_fs

        _unshare_fs.setup(cfg)
    if cfg["mode"] in _NS_MODES:
        _private_mount_namespace(cfg)
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    problem = _probe_namespaces() if cfg["mode"] in _NS_MODES else ""
    for name in cfg.get("preimport", ()):
        try:
            __import__(name)
        except ImportError:
            pass
    cfg["base_tasks"] = _count_tasks(None)
    gc.freeze()  # the forked children then do not touch (and copy) the server's objects when they collect
    codec.send_msg(chan, ["hello", {"pid": os.getpid(), "python": sys.version.split()[0], "problem": problem}])
    if problem:
        return
    while True:
        try:
            req = codec.recv_msg(chan)
        except EOFError:
            return
        codec.send_msg(chan, ["done", _run_one(req, cfg)])
