"""The program's side of a judged run: load the untrusted code, then answer the test runner's calls.

Runs inside the sandbox only, in the program's own process (stdlib only; ``_codec`` is a sibling top-level module
there). Nothing here is trusted by the other side: the program can patch any of it, which only changes what it
answers, never how its answers are judged (see ``_testrunner.py``).
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import traceback

import _codec as codec  # a sibling top-level module inside the sandbox

_PROGRAM_FILE = "<program>"


def _describe_exception(exc: BaseException) -> list:
    try:
        message = str(exc)[:1000]
    except BaseException:  # noqa: BLE001 - the program's own __str__ may misbehave
        message = "<unprintable>"
    return ["raise", type(exc).__name__[:100], message]


def serve_program(code: str, rpc_in: int, rpc_out: int) -> None:
    """Load the program and answer the test runner's requests until told to exit (the program's process).

    Messages (test runner -> program): ``["names", [name, ...]]``, ``["call", ref, args, kwargs]``,
    ``["unary", ref, "bool"|"len"|"str"|"repr"|"list"]``, ``["getattr", ref, name]``,
    ``["setattr", ref, name, value]``, ``["exit"]``. Replies: ``["ok", ...]`` or ``["raise", type_name, message]``.
    A ``call`` reply also lists the top-level list/dict/set arguments the call changed, so the tests see in-place
    mutation. Nothing here is trusted by the other side.
    """
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    handles: dict[int, object] = {}

    def make_ref(obj):
        handles[len(handles) + 1] = obj
        return ["R", len(handles), callable(obj), type(obj).__qualname__[:100]]

    def resolve(ref):
        if type(ref) is not list or len(ref) < 2 or type(ref[1]) is not int or ref[1] not in handles:
            raise codec.ProtocolError(f"unknown reference {ref!r:.100}")
        return handles[ref[1]]

    try:
        exec(compile(code, _PROGRAM_FILE, "exec"), namespace)
        status = ["loaded"]
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: a program that exits early is not loaded
        status = ["load_error", type(exc).__name__, _describe_exception(exc)[2]]
        traceback.print_exc()
    codec.send_msg(rpc_out, status)

    while True:
        msg = codec.recv_msg(rpc_in)
        try:
            reply = _handle(msg, namespace, make_ref, resolve)
        except BaseException as exc:  # noqa: BLE001 - any failure of the program's code is its answer
            reply = _describe_exception(exc)
        try:
            codec.send_msg(rpc_out, reply)
        except TypeError:
            codec.send_msg(rpc_out, ["raise", "TypeError", "reply is not serialisable"])


def _handle(msg, namespace, make_ref, resolve):
    op = msg[0]
    if op == "exit":
        sys.stdout.flush()
        os._exit(0)
    if op == "names":
        out = []
        for name in msg[1]:
            if name not in namespace:
                out.append(["missing"])
            elif type(namespace[name]) is type(sys):
                out.append(["module", namespace[name].__name__])
            else:
                out.append(["value", codec.encode(namespace[name], make_ref)])
        return ["ok", out]
    if op == "call":
        _, ref, args_enc, kwargs_enc = msg
        target = resolve(ref)
        args = [codec.decode(a, resolve) for a in args_enc]
        kwargs = {k: codec.decode(v, resolve) for k, v in kwargs_enc}
        result = target(*args, **kwargs)
        mutated = []
        for i, (before, arg) in enumerate(zip(args_enc, args)):
            if type(arg) in (list, dict, set):
                after = codec.encode(arg, make_ref)
                if after != before:
                    mutated.append([i, after])
        return ["ok", codec.encode(result, make_ref), mutated]
    if op == "unary":
        fn = _UNARY[msg[2]]
        return ["ok", codec.encode(fn(resolve(msg[1])), make_ref)]
    if op == "getattr":
        return ["ok", codec.encode(getattr(resolve(msg[1]), msg[2]), make_ref)]
    if op == "setattr":
        setattr(resolve(msg[1]), msg[2], codec.decode(msg[3], resolve))
        return ["ok", None]
    raise codec.ProtocolError(f"unknown request {op!r:.50}")


_UNARY = {"bool": bool, "len": len, "str": str, "repr": repr, "list": list}


def run_script(code: str) -> int:
    """Run ``code`` as ``python program.py`` would and return its exit status (no tests attached)."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, _PROGRAM_FILE, "exec"), namespace)
        return 0
    except SystemExit as exc:
        if exc.code is None or type(exc.code) is int:
            return (exc.code or 0) & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - anything the untrusted program raises is its failure, reported as such
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the program may have closed or replaced its streams; exit anyway
                pass


def fresh_stdio() -> None:
    """Re-open sys.stdin/stdout/stderr on fds 0-2 (write-through, so output survives os._exit)."""
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
