"""A small OpenAI-compatible chat server for the LLM-judge tests: a real causal LM, greedy, one request at a time.

    python tests/rewards/judge_server.py --model DIR|builtin:tiny-char-llama [--port 0] [--delay S] [--fail-first N]
    python tests/rewards/judge_server.py --fault hang|trickle|slow_body|garbage|no_choices|not_http
    python tests/rewards/judge_server.py --scripted-reply "Score: 7"

Prints ``READY <port>`` on stdout once it listens (``--port 0``: a free port chosen by the system).

- ``POST /v1/chat/completions``: with ``--model``, the messages go through the model's chat template and the reply is
  the model's greedy continuation (``max_tokens`` new tokens at most; the prompt is cut from the left to fit the
  model's context). ``--delay`` holds each request that long before answering (so overlapping requests can be seen);
  ``--fail-first N`` answers the first N requests with 503, as an overloaded server does.
- ``--fault``: ``hang`` reads the request and never answers; ``trickle`` sends a status line and then one header
  byte every 0.2 s forever (defeats per-read socket timeouts); ``slow_body`` sends
  the headers, then one body byte every 0.2 s; ``garbage`` answers 200 with HTML; ``no_choices``
  answers 200 with JSON that has no ``choices``; ``not_http`` answers bytes that are not HTTP at all.
- ``--scripted-reply TEXT``: no model; every reply is TEXT. It is a script, not a judge: tests use it only where the
  reply's content does not matter (cache, concurrency, score normalisation end to end) and say so.
- ``GET /stats``: what the server saw: ``requests`` (chat POSTs), ``max_in_flight``, ``authorization`` (each
  request's ``Authorization`` header, or null), ``last_request`` (the last JSON body); ``/stats?reset=1`` then
  zeroes the counts. Any other path answers 404.

This is a test fixture, not a serving stack (no batching, no streaming, no sampling): use vLLM, llama.cpp's server
or TGI to serve a judge. Torch runs on one thread (``OMP_NUM_THREADS=1``): the test machine is small.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TINY = "builtin:tiny-char-llama"
FAULTS = ("hang", "trickle", "slow_body", "garbage", "no_choices", "not_http")


class State:
    """Counters shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.authorization: list[str | None] = []
        self.last_request: dict | None = None


class Generator:
    """The model, behind a lock: one generation at a time, greedy."""

    def __init__(self, model_dir: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        if model_dir == TINY:  # built here, in the server's own process: the test process need not import torch
            from posttrain_llm.online_rl_trainer.core.models.tiny import ensure_tiny_model

            model_dir = str(ensure_tiny_model())
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.lock = threading.Lock()

    def reply(self, messages: list[dict], max_tokens: int) -> tuple[str, str, int, int]:
        """(text, finish_reason, prompt tokens, completion tokens)."""
        max_new = max(1, min(int(max_tokens), self.context // 2))
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        ids = ids[:, -(self.context - max_new):]  # keep the end: the rubric's instructions come last
        with self.lock, self.torch.no_grad():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=max_new,
                                      do_sample=False, pad_token_id=self.tokenizer.pad_token_id
                                      if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= max_new else "stop"
        return text, finish, int(ids.shape[1]), int(len(new))


def make_handler(args: argparse.Namespace, state: State, generator: Generator | None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path not in ("/stats", "/stats?reset=1"):
                return self._json(404, {"error": {"message": f"no route {self.path}"}})
            with state.lock:
                self._json(200, {"requests": state.requests, "max_in_flight": state.max_in_flight,
                                 "authorization": state.authorization, "last_request": state.last_request})
                if self.path.endswith("reset=1"):
                    state.requests = state.max_in_flight = 0
                    state.authorization = []

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": {"message": f"no route {self.path}"}})
            with state.lock:
                state.requests += 1
                number = state.requests
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.authorization.append(self.headers.get("Authorization"))
            try:
                request = json.loads(body)
                with state.lock:
                    state.last_request = request
                self._answer(request, number)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, request: dict, number: int) -> None:
            if args.fault:
                return self._fault(args.fault)
            time.sleep(args.delay)
            if number <= args.fail_first:
                return self._json(503, {"error": {"message": "overloaded, try again"}})
            if generator is None:
                text, finish, n_prompt, n_new = args.scripted_reply, "stop", 0, 0
            else:
                text, finish, n_prompt, n_new = generator.reply(request["messages"], request.get("max_tokens", 64))
            self._json(200, {
                "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
            })

        def _fault(self, fault: str) -> None:
            if fault == "hang":
                while True:
                    time.sleep(3600)
            if fault == "trickle":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(0.2)
            if fault == "slow_body":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while True:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            if fault == "garbage":
                return self._raw(200, b"<html><body>502 Bad Gateway (not really)</body></html>", "text/html")
            if fault == "no_choices":
                return self._json(200, {"id": "x", "object": "chat.completion", "model": "m"})
            self.wfile.write(b"\x00\x01garbage that is not HTTP\r\n\r\n")  # not_http
            self.close_connection = True

        def _json(self, status: int, payload: dict) -> None:
            self._raw(status, json.dumps(payload).encode(), "application/json")

        def _raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=f"folder of a causal LM with a chat template, or {TINY!r}")
    source.add_argument("--fault", choices=FAULTS)
    source.add_argument("--scripted-reply")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    generator = Generator(args.model) if args.model else None
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, State(), generator))
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
