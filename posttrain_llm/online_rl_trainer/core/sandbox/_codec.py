"""Wire format of the sandbox: message framing and a strict codec for the values that cross the boundary.

This module is loaded in three places: the host (the reward function's process), the trusted test runner inside
the sandbox, and the program's own process. It therefore imports only the standard library and nothing from
this package (inside the sandbox it is loaded from its source text, see ``isolation.sandbox_boot_argv``).

Framing: every message is a 4-byte big-endian length and that many bytes of JSON. Reads and writes take an
absolute deadline (``time.monotonic()``) and work on non-blocking descriptors, so a peer that stops reading or
writing can never block the trusted side past its deadline.

Values: :func:`encode` turns a value made only of *exact* built-in types (``type(x) is int``, never a subclass)
into JSON; :func:`decode` rebuilds genuine built-ins from it and rejects anything malformed. Anything else
(instances of user classes, functions, subclasses of built-ins) can only cross as an opaque reference
(``["R", id, callable, type name]``) when the caller supplies ``make_ref``. Because the receiving side always
builds fresh objects of the real built-in types, an object whose ``__eq__`` always answers True, or an ``int``
subclass, can never reach the code that compares values.

Departures: shared or cyclic references are not preserved (cycles are rejected, shared parts are copied);
iterators and generators are materialised (at most ``MAX_ITEMS`` items) and come back as an iterator over the
values; ``defaultdict`` keeps its factory only when it is a built-in type.
"""

from __future__ import annotations

import base64
import collections
import decimal
import errno
import fractions
import json
import os
import select
import struct
import time
import types

HEADER = struct.Struct(">I")
#: Default cap on one message (a program's return value included).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 200
MAX_ITEMS = 1_000_000

_SMALL_INT = 2**53
_FACTORIES = {t.__name__: t for t in (list, dict, set, frozenset, tuple, int, float, str, bytes, bool, complex)}
#: Built-in types that may cross as values themselves (``remove_datatype(t, int)``), by name.
_TYPES = {t.__name__: t for t in (*_FACTORIES.values(), bytearray, range, object, type, type(None))}
_ITERATOR_TYPES = frozenset(
    {
        types.GeneratorType,
        map,
        filter,
        zip,
        enumerate,
        reversed,
        type(iter([])),
        type(iter(())),
        type(iter("")),
        type(iter(range(0))),
        type(iter({})),
        type(iter({}.values())),
        type(iter({}.items())),
        type(iter(set())),
        type(reversed([])),
    }
)
_CONTAINER_TYPES = frozenset(
    {list, tuple, set, frozenset, dict, collections.OrderedDict, collections.Counter, collections.defaultdict,
     collections.deque}
)
_VIEW_TAGS = {type({}.keys()): "K", type({}.values()): "V", type({}.items()): "E"}


class ProtocolError(Exception):
    """A peer sent something that is not a valid message or value."""


# ---------------------------------------------------------------------------------------------------- framing


def set_nonblocking(fd: int) -> None:
    """Put ``fd`` in non-blocking mode (all framed I/O here waits with ``select`` instead)."""
    os.set_blocking(fd, False)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class OutputPump:
    """Keeps the first ``limit`` bytes written to each of some non-blocking pipes and drops the rest.

    Framed reads and writes service it while they wait, so a program that floods stdout while the test runner
    talks to it can neither block (its pipe is always emptied) nor grow the runner's memory past the cap.
    """

    def __init__(self, fds: list[int], limit: int):
        self.limit = limit
        self.chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
        self.kept = dict.fromkeys(fds, 0)
        self.truncated = False
        self.open = list(fds)
        for fd in fds:
            set_nonblocking(fd)

    def service(self, ready) -> None:
        for fd in ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.open.remove(fd)
                os.close(fd)
                continue
            room = self.limit - self.kept[fd]
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            if chunk:
                self.chunks[fd].append(chunk)
                self.kept[fd] += len(chunk)

    def finish(self, deadline: float) -> None:
        """Read until every pipe is closed by its writers or the deadline passes."""
        while self.open:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(self.open, [], [], left)
            self.service(ready)

    def text(self, fd: int) -> str:
        return b"".join(self.chunks[fd]).decode("utf-8", "replace")


def _wait(read: list[int], write: list[int], deadline: float | None, pump: OutputPump | None):
    extra = pump.open if pump else []
    ready_r, ready_w, _ = select.select(read + extra, write, [], _remaining(deadline))
    if pump:
        pump.service([fd for fd in ready_r if fd in extra])
    return ready_r, ready_w


def write_all(fd: int, data: bytes, deadline: float | None = None, pump: OutputPump | None = None) -> None:
    """Write every byte of ``data`` to the non-blocking ``fd`` before ``deadline``; raise TimeoutError if not."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            _wait([], [fd], deadline, pump)
        except InterruptedError:
            continue


def read_exact(fd: int, n: int, deadline: float | None = None, pump: OutputPump | None = None) -> bytes:
    """Read exactly ``n`` bytes; EOFError if the peer closed first, TimeoutError at the deadline."""
    chunks = []
    while n:
        try:
            chunk = os.read(fd, min(n, 1 << 20))
        except BlockingIOError:
            _wait([fd], [], deadline, pump)
            continue
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EBADF):
                raise EOFError(str(exc)) from exc
            raise
        if not chunk:
            raise EOFError("peer closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send_msg(fd: int, obj: object, deadline: float | None = None, pump: OutputPump | None = None) -> None:
    """Send one JSON message (length-prefixed)."""
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    write_all(fd, HEADER.pack(len(data)) + data, deadline, pump)


def recv_msg(fd: int, deadline: float | None = None, max_bytes: int = MAX_MESSAGE_BYTES,
             pump: OutputPump | None = None) -> object:
    """Receive one JSON message. ProtocolError when it is over ``max_bytes`` or not JSON."""
    (length,) = HEADER.unpack(read_exact(fd, HEADER.size, deadline, pump))
    if length > max_bytes:
        raise ProtocolError(f"message of {length} bytes is over the limit of {max_bytes}")
    payload = read_exact(fd, length, deadline, pump)
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------------- values


def _pairs(mapping, enc, depth):
    out = []
    for k, v in mapping.items():
        out.append(enc(k, depth))
        out.append(enc(v, depth))
    return out


def encode(value, make_ref=None, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS):
    """Encode ``value`` (exact built-in types only) as JSON-able data.

    ``make_ref(obj) -> [\"R\", id, callable, type_name]`` handles anything else; without it such values raise
    TypeError. Cycles, nesting deeper than ``max_depth`` and iterators longer than ``max_items`` raise ValueError.
    """
    active: set[int] = set()

    def enc(x, depth):
        t = type(x)
        if x is None or t is bool or t is str:
            return x
        if t is int:
            return x if -_SMALL_INT < x < _SMALL_INT else ["i", hex(x)]
        if t is type and _TYPES.get(x.__name__) is x:
            return ["T", x.__name__]
        if t is float:
            return ["f", x.hex()]
        if depth >= max_depth:
            raise ValueError(f"value nested deeper than {max_depth} levels")
        depth += 1
        if t is complex:
            return ["c", x.real.hex(), x.imag.hex()]
        if t is bytes or t is bytearray:
            return ["b" if t is bytes else "B", base64.b64encode(x).decode("ascii")]
        if t is range:
            return ["r", enc(x.start, depth), enc(x.stop, depth), enc(x.step, depth)]
        if t is decimal.Decimal:
            return ["dec", str(x)]
        if t is fractions.Fraction:
            return ["fr", enc(x.numerator, depth), enc(x.denominator, depth)]
        if t in _CONTAINER_TYPES or t in _ITERATOR_TYPES or t in _VIEW_TAGS:
            if id(x) in active:
                raise ValueError("value contains a reference cycle")
            active.add(id(x))
            try:
                return enc_container(x, t, depth)
            finally:
                active.discard(id(x))
        if make_ref is None:
            raise TypeError(f"a {t.__module__}.{t.__qualname__} cannot cross the sandbox boundary")
        return make_ref(x)

    def enc_container(x, t, depth):
        if t is list:
            return ["l", *[enc(v, depth) for v in x]]
        if t is tuple:
            return ["t", *[enc(v, depth) for v in x]]
        if t is set:
            return ["S", *[enc(v, depth) for v in x]]
        if t is frozenset:
            return ["F", *[enc(v, depth) for v in x]]
        if t is dict:
            return ["d", *_pairs(x, enc, depth)]
        if t is collections.OrderedDict:
            return ["o", *_pairs(x, enc, depth)]
        if t is collections.Counter:
            return ["C", *_pairs(x, enc, depth)]
        if t is collections.defaultdict:
            factory = x.default_factory
            if factory is not None and _FACTORIES.get(getattr(factory, "__name__", None)) is not factory:
                raise TypeError(f"defaultdict with factory {factory!r} cannot cross the sandbox boundary")
            return ["D", None if factory is None else factory.__name__, *_pairs(x, enc, depth)]
        if t is collections.deque:
            return ["q", x.maxlen, *[enc(v, depth) for v in x]]
        if t in _VIEW_TAGS:
            tag = _VIEW_TAGS[t]
            items = list(x) if tag != "E" else [v for kv in x for v in kv]
            return [tag, *[enc(v, depth) for v in items]]
        items = []
        for v in x:  # an iterator: materialise (this runs the program's generator code, in its own process)
            if len(items) >= max_items:
                raise ValueError(f"iterator yields more than {max_items} items")
            items.append(enc(v, depth))
        return ["I", *items]

    return enc(value, 0)


def _fail(what):
    raise ProtocolError(f"malformed value: {what}")


def decode(data, resolve_ref=None, max_depth: int = MAX_DEPTH):
    """Rebuild a value from :func:`encode`'s output, as fresh objects of the genuine built-in types.

    ``resolve_ref(ref_list)`` turns ``["R", ...]`` into an object; without it references are rejected.
    Raises ProtocolError on anything malformed.
    """

    def dec(x, depth):
        t = type(x)
        if x is None or t is bool or t is str or t is int:
            return x
        if t is not list or not x or type(x[0]) is not str:
            _fail(f"unexpected {t.__name__}")
        if depth >= max_depth:
            _fail(f"nested deeper than {max_depth}")
        depth += 1
        tag, rest = x[0], x[1:]
        try:
            return _DECODERS[tag](rest, depth, dec)
        except KeyError:
            if tag == "R" and resolve_ref is not None:
                return resolve_ref(x)
            _fail(f"unknown tag {tag!r}")
        except ProtocolError:
            raise
        except (TypeError, ValueError, OverflowError, decimal.InvalidOperation, base64.binascii.Error) as exc:
            _fail(f"{tag!r}: {exc}")

    return dec(data, 0)


def _hexfloat(s):
    if type(s) is not str:
        _fail("float payload is not a string")
    return float.fromhex(s)


def _dec_pairs(rest, depth, dec):
    if len(rest) % 2:
        _fail("odd number of mapping items")
    return [(dec(rest[i], depth), dec(rest[i + 1], depth)) for i in range(0, len(rest), 2)]


def _dec_int(rest, depth, dec):
    (s,) = rest
    if type(s) is not str:
        _fail("int payload is not a string")
    return int(s, 16)


def _dec_exact_int(v, dec, depth):
    value = dec(v, depth)
    if type(value) is not int:
        _fail("expected an int")
    return value


def _dec_defaultdict(rest, depth, dec):
    name, *pairs = rest
    if name is not None and name not in _FACTORIES:
        _fail(f"defaultdict factory {name!r}")
    return collections.defaultdict(None if name is None else _FACTORIES[name], _dec_pairs(pairs, depth, dec))


def _dec_deque(rest, depth, dec):
    maxlen, *items = rest
    if maxlen is not None and type(maxlen) is not int:
        _fail("deque maxlen")
    return collections.deque([dec(v, depth) for v in items], maxlen)


def _dec_bytes(rest, kind):
    (s,) = rest
    if type(s) is not str:
        _fail("bytes payload is not a string")
    return kind(base64.b64decode(s.encode("ascii"), validate=True))


def _arity(rest, n: int, what: str) -> list:
    if len(rest) != n:
        _fail(f"{what} takes {n} fields, got {len(rest)}")
    return rest


def _dec_type(rest, depth, dec):
    (name,) = _arity(rest, 1, "type")
    if type(name) is not str or name not in _TYPES:
        _fail(f"type {name!r:.50} is not a plain built-in type")
    return _TYPES[name]


def _dec_decimal(rest, depth, dec):
    (text,) = _arity(rest, 1, "decimal")
    if type(text) is not str:
        _fail("decimal payload is not a string")
    return decimal.Decimal(text)


_DECODERS = {
    "i": _dec_int,
    "T": _dec_type,
    "f": lambda rest, depth, dec: _hexfloat(*_arity(rest, 1, "float")),
    "c": lambda rest, depth, dec: complex(*(_hexfloat(v) for v in _arity(rest, 2, "complex"))),
    "b": lambda rest, depth, dec: _dec_bytes(rest, bytes),
    "B": lambda rest, depth, dec: _dec_bytes(rest, bytearray),
    "r": lambda rest, depth, dec: range(*(_dec_exact_int(v, dec, depth) for v in _arity(rest, 3, "range"))),
    "dec": _dec_decimal,
    "fr": lambda rest, depth, dec: fractions.Fraction(*(_dec_exact_int(v, dec, depth)
                                                        for v in _arity(rest, 2, "fraction"))),
    "l": lambda rest, depth, dec: [dec(v, depth) for v in rest],
    "t": lambda rest, depth, dec: tuple(dec(v, depth) for v in rest),
    "S": lambda rest, depth, dec: {dec(v, depth) for v in rest},
    "F": lambda rest, depth, dec: frozenset(dec(v, depth) for v in rest),
    "d": lambda rest, depth, dec: dict(_dec_pairs(rest, depth, dec)),
    "o": lambda rest, depth, dec: collections.OrderedDict(_dec_pairs(rest, depth, dec)),
    "C": lambda rest, depth, dec: collections.Counter(dict(_dec_pairs(rest, depth, dec))),
    "D": _dec_defaultdict,
    "q": _dec_deque,
    "K": lambda rest, depth, dec: dict.fromkeys(dec(v, depth) for v in rest).keys(),
    "V": lambda rest, depth, dec: dict(enumerate(dec(v, depth) for v in rest)).values(),
    "E": lambda rest, depth, dec: dict(_dec_pairs(rest, depth, dec)).items(),
    "I": lambda rest, depth, dec: iter([dec(v, depth) for v in rest]),
}
