"""One call to an OpenAI-compatible ``/chat/completions`` endpoint, with a hard deadline and typed failures.

:func:`post_chat` sends one JSON request and returns the decoded JSON reply, or raises :class:`JudgeRequestError`
with a ``kind`` from :data:`REQUEST_ERROR_KINDS` and whether a retry may help. It uses the standard library only
(``http.client``), one connection per call (``Connection: close``; no pooling: a judge's reply takes far longer
than a TCP or TLS handshake).

The deadline is hard: socket timeouts alone bound each ``recv`` but not their sum, so a server that trickles one
byte every few seconds would never time out. A timer therefore shuts the socket down when ``timeout_s`` has passed,
which wakes the blocked read at once, and the call fails with kind ``timeout``. Not covered by the deadline: the
DNS lookup of a host name (the operating system's resolver has its own timeouts; an IP address or ``localhost``
needs none).

:func:`chat_reply_text` reads ``choices[0].message.content`` out of a reply. Nothing here retries, caches or logs:
that is :mod:`.llm_judge`'s work. The API key arrives in the headers and is never part of an error message.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from typing import Any, Mapping

from ..common.errors import short_repr

#: Why a call failed. ``timeout``: no complete reply within the deadline; ``connection``: refused, reset or closed
#: early; ``http_status``: a status other than 200; ``bad_response``: a 200 whose body is not the JSON of a chat
#: completion (not JSON, no ``choices``, no text).
REQUEST_ERROR_KINDS = ("timeout", "connection", "http_status", "bad_response")
#: Statuses worth retrying: the server is overloaded or restarting, not refusing the request itself.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class JudgeRequestError(Exception):
    """A failed call. ``kind`` is one of :data:`REQUEST_ERROR_KINDS`; ``retryable`` says whether to try again."""

    def __init__(self, kind: str, message: str, retryable: bool):
        if kind not in REQUEST_ERROR_KINDS:
            raise ValueError(f"JudgeRequestError kind={kind!r}; expected one of {REQUEST_ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


def chat_completions_url(base_url: str) -> urllib.parse.SplitResult:
    """``base_url`` + ``/chat/completions`` (the OpenAI client's rule: ``http://host:8000/v1`` is a base URL)."""
    parts = urllib.parse.urlsplit(base_url)
    return parts._replace(path=parts.path.rstrip("/") + "/chat/completions")


def post_chat(url: urllib.parse.SplitResult, payload: Mapping[str, Any], headers: Mapping[str, str],
              timeout_s: float, max_response_bytes: int) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url``; the decoded reply of a 200, else :class:`JudgeRequestError`."""
    body = json.dumps(payload).encode("utf-8")
    connection_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"context": ssl.create_default_context()} if url.scheme == "https" else {}
    conn = connection_type(url.hostname, url.port, timeout=timeout_s, **kwargs)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
            except OSError:
                pass

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    path = url.path + (f"?{url.query}" if url.query else "")
    all_headers = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close", **headers}
    try:
        conn.request("POST", path, body=body, headers=all_headers)
        response = conn.getresponse()
        raw = response.read(max_response_bytes + 1)
        status = response.status
    except Exception as exc:  # sorted into typed failures; anything else is re-raised as it is
        raise _request_error(exc, expired.is_set(), timeout_s) from exc
    finally:
        timer.cancel()
        conn.close()
    if expired.is_set():  # the shutdown can also look like a clean end of the headers or body: never trust them
        raise _request_error(TimeoutError(), True, timeout_s)
    if len(raw) > max_response_bytes:
        raise JudgeRequestError("bad_response", f"reply longer than max_response_bytes={max_response_bytes}", False)
    if status != 200:
        raise JudgeRequestError("http_status", f"HTTP {status}: {_error_text(raw)}", status in RETRYABLE_STATUSES)
    try:
        return _json_object(raw)
    except ValueError as exc:
        raise JudgeRequestError("bad_response", str(exc), False) from None


def _request_error(exc: Exception, expired: bool, timeout_s: float) -> Exception:
    """The typed failure for an exception raised while talking to the server (other exceptions: themselves)."""
    if expired or isinstance(exc, TimeoutError):
        return JudgeRequestError("timeout", f"no complete reply within timeout_s={timeout_s:g} s", True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return JudgeRequestError("connection", f"TLS certificate rejected: {exc}", False)
    if isinstance(exc, (OSError, http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return JudgeRequestError("connection", f"{type(exc).__name__}: {exc}", True)
    if isinstance(exc, http.client.HTTPException):  # not HTTP at all (a bad status line, broken headers)
        return JudgeRequestError("bad_response", f"{type(exc).__name__}: {short_repr(str(exc))}", False)
    return exc


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"reply is not JSON ({exc}): {short_repr(raw)}") from None
    if not isinstance(value, dict):
        raise ValueError(f"reply is JSON but not an object: {short_repr(value)}")
    return value


def _error_text(raw: bytes) -> str:
    """The server's own words about a failed request (OpenAI's ``{"error": {"message": ...}}``), shortened."""
    try:
        error = _json_object(raw).get("error")
        if isinstance(error, Mapping):
            error = error.get("message", error)
        if error is not None:
            return short_repr(str(error), 200)
    except ValueError:
        pass
    return short_repr(raw, 200)


def chat_reply_text(reply: Mapping[str, Any]) -> str:
    """``choices[0].message.content`` of a chat completion; :class:`JudgeRequestError` (``bad_response``) if absent."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        detail = f"; error: {short_repr(reply['error'], 200)}" if "error" in reply else ""
        raise JudgeRequestError("bad_response", f"reply has no 'choices' list{detail}: {short_repr(reply)}", False)
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        raise JudgeRequestError("bad_response", f"choices[0].message.content is not text: {short_repr(choices[0])}",
                                False)
    return content
