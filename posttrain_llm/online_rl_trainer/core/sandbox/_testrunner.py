"""The trusted side of a judged run: run the tests against proxies of the program's names.

Runs inside the sandbox only, in the supervisor's process, loaded from source text by the server (stdlib only;
``_codec`` is a sibling top-level module there). The program's side is ``_program.py``.

Why two processes. The usual harness pastes ``program + tests`` into one interpreter and reads the exit status.
A program optimised against that harness can exit early with status 0, print what the harness greps for,
return objects whose ``__eq__`` is always true, or patch ``assert``/builtins/the harness itself, because it
shares the harness's process. Here the program runs alone in its process (``_program.serve_program``); the
tests run in a different process (:func:`run_tests`) that the program cannot see, signal, or trace. Every name
the tests take from the program is a proxy: calling it sends the arguments over a pipe, the program's process
calls its own function, and only the *value* comes back, rebuilt by the strict codec as fresh objects of the
genuine built-in types. So the comparisons in the tests always run on real ``int``/``list``/... objects in
trusted code. Objects that are not plain data (instances of the program's classes, ``re.Match``) come back as
opaque handles: they can be passed back to the program, have attributes read or written, and be asked for
``bool``/``len``/``str``/iteration (the program answers, as if it had returned that plain value), but they cannot
be compared or hashed, since that would need the expected value. A program can still lie about anything it
returns; that is no different from returning the value, so it buys nothing without knowing the expected value,
and the expected values (the test source) are never in the program's process or any of its ancestors' memory
(the server forks the program before its supervisor receives the tests).

What this does not cover: tests that pass test-defined callables or classes *into* the program (they cannot
cross the boundary; such a test fails), and identity/aliasing between values (values are copied). In-place
mutation of a top-level ``list``/``dict``/``set`` argument is copied back, so tests that check it still work.
Names the tests use that are standard-library modules always resolve to the real module in the test process,
never to an object of the program's (a program cannot hand the tests a fake ``math`` whose ``isclose`` is
always true), unless the name is the declared entry point.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
import traceback

import _codec as codec  # a sibling top-level module inside the sandbox


class ProgramGone(BaseException):
    """The program's process cannot answer any more (exited, crashed, timed out, broke the protocol).

    A BaseException so that a test's ``except Exception`` cannot swallow it.
    """


class ProgramRaised(Exception):
    """The program's code raised an exception that is not a built-in exception type."""


class ProgramClient:
    """The test runner's end of the pipes to the program's process."""

    def __init__(self, to_program: int, from_program: int, deadline: float, max_bytes: int, pump=None):
        self.to_program, self.from_program = to_program, from_program
        self.deadline, self.max_bytes, self.pump = deadline, max_bytes, pump
        self.gone: str | None = None

    def receive(self):
        try:
            return codec.recv_msg(self.from_program, self.deadline, self.max_bytes, self.pump)
        except TimeoutError:
            self.gone = "timeout"
        except EOFError:
            self.gone = "the program's process exited"
        except (codec.ProtocolError, OSError) as exc:
            self.gone = f"the program broke the protocol: {exc}"
        raise ProgramGone(self.gone)

    def request(self, msg):
        if self.gone:
            raise ProgramGone(self.gone)
        try:
            codec.send_msg(self.to_program, msg, self.deadline, self.pump)
        except TimeoutError:
            self.gone = "timeout"
            raise ProgramGone(self.gone) from None
        except OSError:
            self.gone = "the program's process exited"
            raise ProgramGone(self.gone) from None
        reply = self.receive()
        if type(reply) is list and reply and reply[0] == "ok":
            return reply
        if type(reply) is list and len(reply) == 3 and reply[0] == "raise":
            name, message = str(reply[1]), str(reply[2])
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
                raise cls(message)
            raise ProgramRaised(f"{name}: {message}")
        self.gone = f"the program sent a malformed reply {reply!r:.100}"
        raise ProgramGone(self.gone)

    def encode(self, value):
        return codec.encode(value, _ref_of)

    def decode(self, data):
        try:
            return codec.decode(data, self._proxy)
        except codec.ProtocolError as exc:
            self.gone = f"the program sent a malformed value: {exc}"
            raise ProgramGone(self.gone) from None

    def _proxy(self, ref):
        if len(ref) != 4 or type(ref[1]) is not int or type(ref[2]) is not bool or type(ref[3]) is not str:
            raise codec.ProtocolError(f"malformed reference {ref!r:.100}")
        cls = RemoteCallable if ref[2] else RemoteObject
        return cls(self, ref[1], ref[3])


def _ref_of(obj):
    if isinstance(obj, RemoteObject):
        return ["R", object.__getattribute__(obj, "_ref")]
    raise TypeError(f"a {type(obj).__qualname__} from the tests cannot be passed to the program")


def _refuse(name):
    def method(self, *args, **kwargs):
        raise TypeError(f"an object of the program's type {object.__getattribute__(self, '_type')!r} does "
                        f"not support {name} in the tests; only plain built-in values can be compared")
    return method


class RemoteObject:
    """An opaque handle on an object living in the program's process (not plain data)."""

    __slots__ = ("_client", "_ref", "_type")

    def __init__(self, client, ref, type_name):
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        client = object.__getattribute__(self, "_client")
        reply = client.request(["getattr", ["R", object.__getattribute__(self, "_ref")], name])
        return client.decode(reply[1])

    def __setattr__(self, name, value):
        client = object.__getattribute__(self, "_client")
        client.request(["setattr", ["R", object.__getattribute__(self, "_ref")], name, client.encode(value)])

    def __repr__(self):
        return f"<program object of type {object.__getattribute__(self, '_type')}>"

    # Unary questions are answered by the program (as if it had returned the bool/int/str/list itself); they
    # reveal nothing the tests compare against. Comparisons are refused: they would need the expected value.
    def __bool__(self):
        return _unary(self, "bool", bool)

    def __len__(self):
        return _unary(self, "len", int)

    def __str__(self):
        return _unary(self, "str", str)

    def __iter__(self):
        return iter(_unary(self, "list", list))

    __eq__ = _refuse("==")
    __ne__ = _refuse("!=")
    __lt__ = _refuse("<")
    __le__ = _refuse("<=")
    __gt__ = _refuse(">")
    __ge__ = _refuse(">=")
    __hash__ = _refuse("hash()")
    __contains__ = _refuse("'in'")
    __getitem__ = _refuse("indexing")


def _unary(obj, which: str, expected: type):
    client = object.__getattribute__(obj, "_client")
    value = client.decode(client.request(["unary", ["R", object.__getattribute__(obj, "_ref")], which])[1])
    if type(value) is not expected:
        raise TypeError(f"the program's {which}() of its {object.__getattribute__(obj, '_type')} object did not "
                        f"give a plain {expected.__name__}")
    return value


class RemoteCallable(RemoteObject):
    """A function or class of the program; calling it runs it in the program's process."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        client = object.__getattribute__(self, "_client")
        args_enc = [client.encode(a) for a in args]
        kwargs_enc = [[k, client.encode(v)] for k, v in kwargs.items()]
        reply = client.request(["call", ["R", object.__getattribute__(self, "_ref")], args_enc, kwargs_enc])
        if len(reply) != 3 or type(reply[2]) is not list:
            client.gone = "the program sent a malformed reply"
            raise ProgramGone(client.gone)
        for item in reply[2]:  # in-place changes to list/dict/set arguments
            if type(item) is not list or len(item) != 2 or type(item[0]) is not int or not 0 <= item[0] < len(args):
                continue
            original, new = args[item[0]], client.decode(item[1])
            if type(original) is list and type(new) is list:
                original[:] = new
            elif type(original) in (dict, set) and type(new) is type(original):
                original.clear()
                original.update(new)
        return client.decode(reply[1])


def free_names(source: str) -> set[str]:
    """Names a piece of test code reads without defining them itself (may include builtins it shadows)."""
    tree = ast.parse(source)
    loaded, stored = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stored.add(node.name)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
    return loaded - stored


def _is_stdlib_module(name: str) -> bool:
    return name in getattr(sys, "stdlib_module_names", ()) and not name.startswith("_")


def bind_program_names(client: ProgramClient, namespace: dict, names: set[str], entry_point: str | None) -> set[str]:
    """Put what the tests read from the program into the tests' namespace (see the module docstring).

    A name that is a builtin or a standard-library module resolves to the real one in this process, never to
    the program's object of that name, unless it is the declared ``entry_point`` (MBPP task 126 tests a
    function called ``sum``). Returns the names the program provided.
    """
    remote, provided = [], set()
    for name in sorted(names):
        if name != entry_point and _is_stdlib_module(name):
            namespace[name] = importlib.import_module(name)
        elif name == entry_point or not hasattr(builtins, name):
            remote.append(name)
    if not remote:
        return provided
    reply = client.request(["names", remote])
    if type(reply[1]) is not list or len(reply[1]) != len(remote):
        client.gone = "the program sent a malformed reply to 'names'"
        raise ProgramGone(client.gone)
    for name, item in zip(remote, reply[1]):
        if type(item) is list and item[:1] == ["module"] and len(item) == 2 and type(item[1]) is str:
            try:
                namespace[name] = importlib.import_module(item[1])
            except Exception:  # noqa: BLE001 - the test then fails with NameError/AttributeError
                continue
            provided.add(name)
        elif type(item) is list and item[:1] == ["value"] and len(item) == 2:
            namespace[name] = client.decode(item[1])
            provided.add(name)
    return provided


def run_tests(client: ProgramClient, suite: dict, report) -> None:
    """Run a test suite against the program; ``report(index, passed, reason)`` once per test.

    ``suite``: ``prelude`` (trusted code run first, e.g. a HumanEval prompt's imports and helpers), ``setup``
    (run after the program's names are bound), then either ``statements`` (each one test) or ``check`` +
    ``entry_point`` (one test: ``check(entry_point)``).
    """
    statements = suite.get("statements") or []
    n_tests = len(statements) if statements else 1
    try:
        load = client.receive()
    except ProgramGone as exc:
        load = ["gone", str(exc)]
    if type(load) is not list or load[:1] != ["loaded"]:
        if load[:1] == ["gone"]:
            reason = f"the program did not finish loading: {load[1]}"
        elif type(load) is list and len(load) == 3:
            reason = f"the program failed to load: {load[1]}: {load[2]}"
        else:
            reason = "the program failed to load"
        for i in range(n_tests):
            report(i, False, reason)
        return
    namespace: dict = {"__name__": "__main__"}
    try:
        if suite.get("prelude"):
            exec(compile(suite["prelude"], "<prelude>", "exec"), namespace)
        entry = suite.get("entry_point")
        test_source = "\n".join([suite.get("setup") or "", suite.get("check") or "", *statements])
        wanted = (free_names(test_source) - set(namespace)) | ({entry} if entry else set())
        provided = bind_program_names(client, namespace, wanted, entry)
        if suite.get("setup"):
            exec(compile(suite["setup"], "<setup>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - whatever stops the setup fails every test, with the reason
        for i in range(n_tests):
            report(i, False, f"test setup failed: {_summary(exc)}")
        return
    if statements:
        for i, statement in enumerate(statements):
            # bound as defaults: the lambda runs at once, but this keeps it true if that ever changes
            report(i, *_run_one(lambda s=statement, k=i: exec(compile(s, f"<test {k}>", "exec"), namespace)))
    else:
        entry = suite["entry_point"]
        def check():
            if entry not in provided:  # the prelude's stub of the same name is not the program's answer
                raise NameError(f"the program does not define {entry!r}")
            exec(compile(suite["check"], "<check>", "exec"), namespace)
            namespace["check"](namespace[entry])
        report(0, *_run_one(check))


def _run_one(fn) -> tuple[bool, str]:
    try:
        fn()
        return True, ""
    except BaseException as exc:  # noqa: BLE001 - a failing test, whatever it raised
        return False, _summary(exc)


def _summary(exc: BaseException) -> str:
    if isinstance(exc, ProgramGone):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{f.filename}:{f.lineno}" for f in reversed(tb) if f.filename.startswith("<")), "")
    text = f"{type(exc).__name__}: {exc}"[:300]
    return f"{text} ({where})" if where else text
