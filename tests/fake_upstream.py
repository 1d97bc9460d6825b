"""A fake OpenAI/OpenRouter `/chat/completions` server for tests, on a free loopback port.

Each request plays the next scripted reply: a list of actions (send these bytes, sleep, drop the
connection) or an HTTP error. The builders below write the real streaming wire format: SSE
comments like `: OPENROUTER PROCESSING`, `data:` chunks with `choices[0].delta`, tool-call
fragments keyed by `index`, a usage chunk, and `data: [DONE]`. It records every request body and
header, and when a client goes away mid-reply (it runs with handler cancellation, so a dropped
connection cancels the reply at once).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Repeat:
    """Send the same bytes `times` times: a reply of any length without building it in memory."""

    data: bytes
    times: int
    pause: float = 0.0  # between sends: a drip


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection mid-reply, without finishing the chunked body."""


@dataclass(frozen=True)
class HttpError:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Silent:
    """Take the request and send nothing at all, not even headers, for `seconds`."""

    seconds: float


Action = Send | Sleep | Repeat | Drop
Reply = Sequence[Action] | HttpError | Silent


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    model: str = "fake/model-1",
    gen_id: str = "gen-123",
    usage: dict[str, Any] | None = None,
) -> bytes:
    """One `data:` frame of a streamed chat completion."""
    body: dict[str, Any] = {
        "id": gen_id,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["choices"] = []
        body["usage"] = usage
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def raw_chunk(json_text: str) -> bytes:
    """A `data:` frame of JSON written by hand: `1e999`, `NaN`, `"\\ud800"`, wrong shapes."""
    return b"data: " + json_text.encode() + b"\n\n"


def raw_delta(delta_json: str, finish_reason: str = "null") -> bytes:
    """A chunk whose `choices[0].delta` is JSON written by hand."""
    return raw_chunk(
        '{"id":"gen-123","model":"fake/model-1","choices":[{"index":0,'
        f'"delta":{delta_json},"finish_reason":{finish_reason}}}]}}'
    )


PROCESSING = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.0001}


def text_reply(*pieces: str, usage: dict[str, Any] | None = None, **kw: Any) -> list[Action]:
    """A plain streamed text answer, as OpenRouter sends it."""
    actions: list[Action] = [Send(PROCESSING), Send(chunk({"role": "assistant", "content": ""}))]
    actions += [Send(chunk({"content": piece}, **kw)) for piece in pieces]
    actions.append(Send(chunk({}, "stop", **kw)))
    actions.append(Send(chunk(usage=usage or USAGE, **kw)))
    actions.append(Send(DONE))
    return actions


def tool_reply(
    *calls: tuple[str, str, dict[str, Any] | str], split: int = 3, text: str = ""
) -> list[Action]:
    """A round that calls tools; arguments are cut in `split`-character fragments."""
    actions: list[Action] = [Send(chunk({"role": "assistant", "content": text or None}))]
    for index, (call_id, name, arguments) in enumerate(calls):
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        head = {"index": index, "id": call_id, "type": "function"}
        actions.append(Send(chunk({"tool_calls": [{**head, "function": {"name": name}}]})))
        for start in range(0, len(raw), split):
            piece = {"index": index, "function": {"arguments": raw[start : start + split]}}
            actions.append(Send(chunk({"tool_calls": [piece]})))
    actions.append(Send(chunk({}, "tool_calls")))
    actions.append(Send(chunk(usage=USAGE)))
    actions.append(Send(DONE))
    return actions


def paced(actions: Sequence[Action], seconds: float) -> list[Action]:
    out: list[Action] = []
    for action in actions:
        out += [action, Sleep(seconds)]
    return out


class FakeUpstream:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = asyncio.Event()
        self.disconnected_at: float | None = None
        self.active = 0
        self.most_active = 0  # the most replies in progress at once
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def add(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/api/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        reply = self.replies.pop(0) if self.replies else text_reply("(no scripted reply)")
        if isinstance(reply, Silent):
            await asyncio.sleep(reply.seconds)
            return web.Response(status=504)
        if isinstance(reply, HttpError):
            body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            return web.Response(status=reply.status, text=body, headers=reply.headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            for action in reply:
                match action:
                    case Send(data=data):
                        await response.write(data)
                    case Sleep(seconds=seconds):
                        await asyncio.sleep(seconds)
                    case Repeat(data=data, times=times, pause=pause):
                        for _ in range(times):
                            await response.write(data)
                            if pause:
                                await asyncio.sleep(pause)
                    case Drop():
                        assert request.transport is not None
                        request.transport.abort()
                        return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected_at = time.monotonic()
            self.disconnected.set()
            raise
        finally:
            self.active -= 1
        await response.write_eof()
        return response
