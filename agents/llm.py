"""The llm agent: a chat model, over an OpenAI-compatible API, writes from earlier results.

``llm.summarise`` sends its instructions and one shared_data value (as compact JSON) to
``BATON_LLM_BASE_URL``'s ``/chat/completions``, streamed: tokens reach watchers with
``step.emit`` in batches as they arrive. The API key comes from the settings
(``BATON_LLM_API_KEY``, or ``BATON_LLM_API_KEY_<ID>`` for ``api_key_id`` ID) and never
appears in a log line or an error; the key's id is the rate limit's key. An event loop's
HTTP session (aiohttp: about 0.6 ms of CPU per call at 1,000 in flight, a quarter of
httpx's) serves every step on it, and closes with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agents.base import StepInput
from agents.registry import Agent
from orchestration.errors import RateLimited, StepError
from orchestration.settings import get_settings

if TYPE_CHECKING:  # (imported by the first call: every `baton` command loads this module)
    import aiohttp

log = logging.getLogger("baton.agents.llm")

llm = Agent(
    "llm",
    description="A chat model (OpenAI-compatible API) writing from earlier results",
    concurrency_limit=50,
)

DEFAULT_INSTRUCTIONS = (
    "Summarise these results for an executive in a short paragraph: the main figures, "
    "what stands out, and anything that needs attention."
)
#: The most of the input (JSON bytes) a prompt carries; a longer one is cut, and says so.
MAX_INPUT_BYTES = 12 * 1024
#: A batch of tokens is emitted at this many tokens, or this many seconds after the last.
BATCH_TOKENS = 20
BATCH_SECONDS = 0.1
#: Text per emit at most (a whole non-streamed answer is emitted in pieces this long).
EMIT_CHARS = 2000
#: Statuses worth trying again (as OpenAI's own clients do); any other 4xx is not.
RETRYABLE = {408, 409, 429}
#: Connect in 10 s; then the model may think up to 120 s between two chunks.
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 120
#: Connections a loop's session keeps open at most (the agent's concurrency_limit and
#: the API's own limits are what bound the calls in flight).
MAX_CONNECTIONS = 1000


class SummariseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = Field(min_length=1)
    instructions: str = Field(default=DEFAULT_INSTRUCTIONS, min_length=1)
    model: str | None = Field(default=None, min_length=1)  # default: BATON_LLM_MODEL
    max_tokens: int = Field(default=256, ge=1, le=32768)
    api_key_id: str = Field(default="default", pattern=r"^[A-Za-z0-9_]{1,64}$")
    temperature: float = Field(default=0.2, ge=0, le=2)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    source: Literal["server", "counted"]  # counted: chunks received, prompt bytes / 4


class SummaryOutput(BaseModel):
    summary: str
    model: str
    finish_reason: str
    usage: Usage
    input_key: str


def api_key(key_id: str) -> tuple[str, SecretStr]:
    """The env var that holds ``key_id``'s key, and the key; none set: a clear error."""
    if key_id == "default":
        var, key = "BATON_LLM_API_KEY", get_settings().llm_api_key
    else:
        var = f"BATON_LLM_API_KEY_{key_id.upper()}"
        key = SecretStr(os.environ[var]) if os.environ.get(var) else None
    if key is None or not key.get_secret_value():
        raise StepError(f"no API key for api_key_id {key_id!r}: set {var}", retryable=False)
    return var, key


def prompt_messages(p: SummariseParams, value: Any) -> list[dict[str, str]]:
    """The instructions, then the input as compact JSON (cut at ``MAX_INPUT_BYTES``)."""
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    text = data[:MAX_INPUT_BYTES].decode(errors="ignore")
    if len(data) > MAX_INPUT_BYTES:
        shown = len(text.encode())
        text += f"\n[cut: the input is {len(data):,} bytes of JSON; the first {shown:,} shown]"
    return [
        {"role": "system", "content": p.instructions},
        {"role": "user", "content": f"{p.input_key} (JSON):\n{text}"},
    ]


#: Each event loop's session, and the async generator that closes it with the loop.
_loops: dict[
    asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]
] = {}


async def session() -> aiohttp.ClientSession:
    """The running event loop's HTTP session (made on the first call on a loop, kept for
    every step on it, closed as the loop shuts down: ``asyncio.run``'s end, a worker's)."""
    loop = asyncio.get_running_loop()
    if loop in _loops:
        return _loops[loop][0]
    for gone in [other for other in _loops if other.is_closed()]:
        del _loops[gone]
    import aiohttp

    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    held = aiohttp.ClientSession(connector=connector, timeout=timeout)
    closer = _close_with_loop(loop, held)
    await anext(closer)  # started: the loop finalises it in shutdown_asyncgens
    _loops[loop] = (held, closer)
    return held


async def _close_with_loop(
    loop: asyncio.AbstractEventLoop, held: aiohttp.ClientSession
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        _loops.pop(loop, None)
        await held.close()


class _Batcher:
    """Tokens to ``step.emit`` in batches: every ``BATCH_TOKENS``, or ``BATCH_SECONDS``
    after the last batch (a timer, armed while tokens wait, sees to it when they
    trickle), and what is left."""

    def __init__(self, step: StepInput[Any], total: int) -> None:
        self.step, self.total, self.count = step, total, 0
        self.pending: list[str] = []
        self.parts: list[str] = []  # every token, for the output
        self.last = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, token: str) -> None:
        self.pending.append(token)
        self.parts.append(token)
        self.count += 1
        due = self.last + BATCH_SECONDS
        if len(self.pending) >= BATCH_TOKENS or time.monotonic() >= due:
            self.flush()
        elif self.timer is None:  # the batch goes out at its deadline if no token comes
            self.timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + due - time.monotonic(), self.flush
            )

    def flush(self) -> None:
        self.last = time.monotonic()
        self.close()
        if self.pending:
            text = "".join(self.pending)
            for i in range(0, len(text), EMIT_CHARS):
                self.step.emit(text[i : i + EMIT_CHARS])
            self.pending.clear()
            self.step.progress(self.count, self.total, f"{self.count} tokens")

    def close(self) -> None:
        """Disarm the timer (the step is done with the batcher, or a batch went out)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def _error(resp: aiohttp.ClientResponse, key: SecretStr, var: str) -> StepError:
    """The API's refusal as a StepError: its status and message, never the key."""
    raw = await resp.read()
    try:
        body = json.loads(raw)
        said = body["error"]["message"] if isinstance(body.get("error"), dict) else str(body)
    except (ValueError, KeyError, TypeError, AttributeError):
        said = raw[:500].decode(errors="replace")
    said = str(said).replace(key.get_secret_value(), "***")
    where = f"{resp.url.host} answered {resp.status}"
    if resp.status == 429:
        after = resp.headers.get("retry-after")
        try:
            seconds = float(after) if after is not None else None
        except ValueError:
            seconds = None
        return RateLimited(
            f"rate limited: {where} (Retry-After: {after or '?'} s): {said}", seconds
        )
    retryable = resp.status in RETRYABLE or resp.status >= 500
    hint = f" (check {var})" if resp.status in (401, 403) else ""
    return StepError(f"{where}{hint}: {said}", retryable=retryable)


@llm.task(
    params=SummariseParams,
    output=SummaryOutput,
    reads=lambda p: [p.input_key],
    rate_limit="60/m",
    limit_key=lambda p: p.api_key_id,
)
async def summarise(step: StepInput[SummariseParams]) -> SummaryOutput:
    """A chat model's summary of one earlier result, streamed to watchers as it comes."""
    import aiohttp

    p = step.parameters
    settings = get_settings()
    var, key = api_key(p.api_key_id)
    messages = prompt_messages(p, step.require(p.input_key))
    body = {
        "model": p.model or settings.llm_model,
        "messages": messages,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    batcher = _Batcher(step, p.max_tokens)
    state: dict[str, Any] = {"model": body["model"], "finish_reason": None, "usage": None}
    try:
        async with (await session()).post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise await _error(resp, key, var)
            if resp.content_type == "application/json":
                # A server that does not stream: the whole answer at once.
                _take(json.loads(await resp.read()), state, batcher)
            else:
                async for raw in resp.content:  # one line at a time
                    line = raw.decode()
                    if line.startswith("data:"):
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        _take(json.loads(data), state, batcher)
    except (aiohttp.ClientError, TimeoutError) as exc:  # refused, reset, timed out: retry
        raise StepError(f"llm API at {url} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        batcher.close()
    batcher.flush()
    text = "".join(batcher.parts)
    usage = state["usage"] or {
        "prompt_tokens": math.ceil(sum(len(m["content"].encode()) for m in messages) / 4),
        "completion_tokens": batcher.count,
    }
    total = usage.get("total_tokens") or usage["prompt_tokens"] + usage["completion_tokens"]
    log.info("llm %s: %d tokens from %s", step.step_id, batcher.count, state["model"])
    return SummaryOutput(
        summary=text,
        model=state["model"],
        finish_reason=state["finish_reason"] or "unknown",
        usage=Usage(
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            total_tokens=total,
            source="server" if state["usage"] else "counted",
        ),
        input_key=p.input_key,
    )


def _take(chunk: dict[str, Any], state: dict[str, Any], batcher: _Batcher) -> None:
    """One streamed chunk (or a whole non-streamed answer): its text, model, end, usage."""
    if isinstance(chunk.get("error"), dict):
        raise StepError(f"llm API error mid-stream: {chunk['error'].get('message')}")
    state["model"] = chunk.get("model") or state["model"]
    if chunk.get("usage"):
        state["usage"] = chunk["usage"]
    for choice in chunk.get("choices") or []:
        part = choice.get("delta") or choice.get("message") or {}
        if part.get("content"):
            batcher.add(part["content"])
        state["finish_reason"] = choice.get("finish_reason") or state["finish_reason"]
