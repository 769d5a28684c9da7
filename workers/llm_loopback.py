"""An OpenAI-compatible chat-completions API on loopback: try the ``llm`` agent with no
provider, and test or benchmark against it.

    python -m workers.llm_loopback --port 8000      # http://127.0.0.1:8000/v1, key sk-loopback

Real HTTP (tornado, one event loop, no thread per request), listening on 127.0.0.1 only.
``POST /v1/chat/completions`` answers as OpenAI does, whole or streamed as server-sent
events. The reply is no model's: it is a digest of the last user message (:func:`reply_for`:
how many words and numbers, their range, sum and mean, the most frequent words), so what a
workflow gets back can be computed. Each key (``--key KEY`` or ``KEY=QUOTA``, repeatable;
default ``sk-loopback``) has a quota of requests in any sliding second, beyond which it
answers 429 with ``Retry-After``; any other key gets 401. ``GET /stats`` says per key what it
saw; ``POST /reset`` clears that. Its first line on stdout is the port it listens on
(``--port 0``: any free port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

DEFAULT_KEY = "sk-loopback"
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
_WORD = re.compile(r"[A-Za-z][A-Za-z_]{2,}")
_TOKEN = re.compile(r"\s*\S+")


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The server's answer: the words and numbers of the last user message, digested."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = str(users[-1].get("content", "")) if users else ""
    numbers = [float(x) for x in _NUMBER.findall(text)]
    words = Counter(w.lower() for w in _WORD.findall(text))
    parts = [f"The input has {sum(words.values())} words and {len(numbers)} numbers."]
    if numbers:
        parts.append(
            f"The numbers run from {min(numbers):g} to {max(numbers):g}, "
            f"sum {sum(numbers):g}, mean {sum(numbers) / len(numbers):g}."
        )
        parts.append("The first are " + ", ".join(f"{x:g}" for x in numbers[:12]) + ".")
    if words:
        top = ", ".join(f"{w} ({n})" for w, n in words.most_common(8))
        parts.append(f"The most frequent words are {top}.")
    return " ".join(parts)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def tokens_of(text: str) -> list[str]:
    """The reply's tokens as streamed: each word with the whitespace before it."""
    return _TOKEN.findall(text)


@dataclass
class KeyStats:
    quota: float
    requests: int = 0
    accepted: int = 0
    rejected_429: int = 0
    bad_request: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    accepted_at: list[float] = field(default_factory=list)
    window: deque[float] = field(default_factory=deque)  # accepted in the last second
    last_request: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        most, first = 0, 0  # the most accepted in any [t, t + 1 s)
        for last, t in enumerate(self.accepted_at):
            while t - self.accepted_at[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return {k: v for k, v in vars(self).items() if k != "window"} | {"max_per_second": most}


class State:
    def __init__(self, quotas: Mapping[str, float], delay: float, token_delay: float) -> None:
        self.quotas, self.delay, self.token_delay = dict(quotas), delay, token_delay
        self.reset()

    def reset(self) -> None:
        self.keys = {k: KeyStats(q) for k, q in self.quotas.items()}
        self.unauthorized = 0
        self.served = 0


class Completions(tornado.web.RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def fail(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        self.set_status(status)
        self.finish({"error": {"message": message, "type": kind, "param": None, "code": code}})

    async def post(self) -> None:
        s = self.state
        auth = self.request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if key not in s.keys:  # echoed whole, as a careless server might: clients must hide it
            s.unauthorized += 1
            msg = f"Incorrect API key provided: {key or '(none)'}."
            return self.fail(401, msg, "invalid_request_error", "invalid_api_key")
        st = s.keys[key]
        st.requests += 1
        try:
            body = json.loads(self.request.body)
            messages, model = body["messages"], body["model"]
            max_tokens = int(body.get("max_tokens") or 4096)
            if not (isinstance(messages, list) and messages and model and max_tokens > 0):
                raise ValueError("messages must be a non-empty list, model set, max_tokens > 0")
        except (ValueError, KeyError, TypeError) as exc:
            st.bad_request += 1
            return self.fail(400, f"Invalid request: {exc!r}", "invalid_request_error")
        now = time.time()
        while st.window and st.window[0] <= now - 1.0:
            st.window.popleft()
        if len(st.window) >= st.quota:
            st.rejected_429 += 1
            wait = st.window[0] + 1.0 - now
            self.set_header("Retry-After", str(max(1, math.ceil(wait))))
            self.set_header("retry-after-ms", str(max(1, math.ceil(wait * 1000))))
            msg = f"Rate limit reached: {st.quota:g} requests per second. Try again in {wait:.3f}s."
            return self.fail(429, msg, "requests", "rate_limit_exceeded")
        st.window.append(now)
        st.accepted_at.append(now)
        st.accepted += 1
        st.last_request = {k: body.get(k) for k in ("model", "messages", "max_tokens", "stream")}
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            await self.answer(body, model, max_tokens)
        except tornado.iostream.StreamClosedError:
            pass  # the client went away
        finally:
            st.in_flight -= 1

    async def answer(self, body: dict[str, Any], model: str, max_tokens: int) -> None:
        s = self.state
        await asyncio.sleep(s.delay)
        every = tokens_of(reply_for(body["messages"]))
        tokens, finish = every[:max_tokens], "length" if len(every) > max_tokens else "stop"
        prompt = sum(len(tokens_of(str(m.get("content", "")))) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }
        s.served += 1
        created, name = int(time.time()), f"chatcmpl-{s.served}"
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(tokens)}
            choices = [{"index": 0, "message": message, "finish_reason": finish}]
            head = {"id": name, "object": "chat.completion", "created": created, "model": model}
            self.finish({**head, "choices": choices, "usage": usage})
            return
        head = {"id": name, "object": "chat.completion.chunk", "created": created, "model": model}
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")

        async def send(delta: dict[str, Any], reason: str | None = None) -> None:
            choices = [{"index": 0, "delta": delta, "finish_reason": reason}]
            self.write(f"data: {compact({**head, 'choices': choices})}\n\n")
            await self.flush()

        await send({"role": "assistant", "content": ""})
        for token in tokens:
            await asyncio.sleep(s.token_delay)
            await send({"content": token})
        await send({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            self.write(f"data: {compact({**head, 'choices': [], 'usage': usage})}\n\n")
        self.write("data: [DONE]\n\n")
        self.finish()


class Stats(tornado.web.RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def get(self) -> None:
        keys = {k: st.as_json() for k, st in self.state.keys.items()}
        self.finish({"keys": keys, "unauthorized": self.state.unauthorized})

    def post(self) -> None:  # /reset
        self.state.reset()
        self.finish({"reset": True})


def make_app(state: State) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/v1/chat/completions", Completions, {"state": state}),
            (r"/(?:stats|reset)", Stats, {"state": state}),
        ],
        log_function=lambda handler: None,  # no line per request (429s come in thousands)
    )


async def serve(port: int, state: State) -> None:
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1", backlog=4096)
    tornado.httpserver.HTTPServer(make_app(state)).add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    print(port, flush=True)  # the port, for whoever started it
    keys = ", ".join(state.quotas)
    print(
        f"an OpenAI-compatible chat API on http://127.0.0.1:{port}/v1 (keys: {keys})",
        file=sys.stderr,
        flush=True,
    )
    await asyncio.Event().wait()


def quotas_of(keys: Iterable[str], default: float) -> dict[str, float]:
    """``KEY`` or ``KEY=QUOTA`` (requests per sliding second) each."""
    pairs = (item.partition("=") for item in keys)
    return {key: float(quota) if quota else default for key, _, quota in pairs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m workers.llm_loopback",
        description="An OpenAI-compatible chat-completions API on 127.0.0.1 (replies: a digest "
        "of the last user message).",
    )
    ap.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    ap.add_argument(
        "--key",
        action="append",
        default=[],
        help=f"KEY or KEY=QUOTA, repeatable (default: {DEFAULT_KEY})",
    )
    ap.add_argument("--quota-per-second", type=float, default=20.0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    a = ap.parse_args(argv)
    state = State(quotas_of(a.key or [DEFAULT_KEY], a.quota_per_second), a.delay, a.token_delay)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, state))


if __name__ == "__main__":
    main()
