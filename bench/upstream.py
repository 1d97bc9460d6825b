"""A fast fake OpenAI-compatible upstream for the benchmark: `POST .../chat/completions`.

It speaks the real streaming wire format (`data: {chat.completion.chunk}` frames, a usage chunk,
`data: [DONE]`) over plain HTTP/1.1 with keep-alive, written on a raw `asyncio.Protocol` so that
it costs little CPU next to the server under test. Replies are encoded once per configuration:
with no pacing the whole chunked body goes out in one write; with pacing a timer sends one token
every N ms (no coroutine per stream, so 1,000 slow streams cost almost nothing).

Modes: `text` (N tokens of prose; the first token is `First`, which the load client looks for),
`artifact` (an `<artifact ...>` block spanning most of the N tokens), `tools` (a request whose last
message is the user's gets a tool call to `add` {"a":25,"b":17}; one whose last message is a `tool`
result gets the N-token text). With `stamp`, every token carries `@<monotonic ns>#`, the moment it
was written, so the client can tell how long the server under test held it.

It also records every stream that lost its connection before its reply was finished (the server
under test aborted it), with the monotonic time it noticed and the `abort-id:<n>` tag found in the
request body, so the harness can check "every upstream stream aborted within a second of its client
leaving". Control routes: `GET /_bench/stats`, `POST /_bench/config` (JSON), `POST /_bench/reset`.

    python bench/upstream.py --port 0 --tokens 500 --pace-ms 0 --mode text
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

CHAT_PATHS = {"/v1/chat/completions", "/api/v1/chat/completions", "/chat/completions"}
MODEL = "bench/model"
GEN_ID = "gen-bench"
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
_ABORT_TAG = re.compile(rb"abort-id:(\d+)")
_PROSE = (
    "the quick brown fox jumps over a lazy dog while streaming tokens arrive one after another "
    "from the model and the server relays each one to its client without delay café naïve résumé"
)
_WORDS = _PROSE.split(" ")

HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Config:
    mode: str = "text"  # text | artifact | tools
    tokens: int = 500
    pace_ms: float = 0.0
    stamp: bool = False  # put `@<monotonic ns>#` in every text token


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "id": GEN_ID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    body.update(extra)
    return (
        b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def usage_chunk(completion_tokens: int) -> bytes:
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": completion_tokens,
        "total_tokens": 50 + completion_tokens,
    }
    return sse_chunk(None, None, usage=usage).replace(
        b'"choices":[{"index":0,"delta":{},"finish_reason":null}]', b'"choices":[]'
    )


def text_tokens(n: int) -> list[str]:
    return ["First"] + [" " + _WORDS[i % len(_WORDS)] for i in range(max(0, n - 1))]


def artifact_tokens(n: int) -> list[str]:
    """Prose, an artifact whose body takes most of the tokens, prose; the tags split up."""
    head = ["First", " here", " is", " the", " file:\n", "<arti", 'fact id="main-py" ']
    head += ['type="code" title="main.py" ', 'language="python">\n']
    tail = ["\n</arti", "fact>\n", "Done", "."]
    code = ["def", " step", "(x", "):\n", "    if", " x", " <", " 3", ":\n", "        return"]
    code += [" x", " +", " 1", "\n", "    return", " x", " *", " 2", "\n\n"]
    body = [code[i % len(code)] for i in range(max(1, n - len(head) - len(tail)))]
    return head + body + tail


@dataclass(slots=True)
class Reply:
    """One reply, encoded once: `lead` goes out with the headers, then `tokens`, then `tail`."""

    lead: bytes
    tokens: list[bytes]  # chunked-encoded SSE frames, or templates split at the stamp
    stamp_parts: list[tuple[bytes, bytes]] | None
    tail: bytes
    whole: bytes  # lead + tokens + tail (unstamped replies only)


def build_text_reply(pieces: list[str], stamp: bool) -> Reply:
    lead = chunked(sse_chunk({"role": "assistant", "content": ""}))
    tail = chunked(sse_chunk({}, "stop") + usage_chunk(len(pieces)) + b"data: [DONE]\n\n")
    tail += LAST_CHUNK
    if not stamp:
        tokens = [chunked(sse_chunk({"content": piece})) for piece in pieces]
        return Reply(lead, tokens, None, tail, lead + b"".join(tokens) + tail)
    parts: list[tuple[bytes, bytes]] = []
    for piece in pieces:
        frame = sse_chunk({"content": piece + "@\x00#"})
        before, after = frame.split(b"\\u0000")
        parts.append((before, after))
    return Reply(lead, [], parts, tail, b"")


def build_tool_call_reply() -> Reply:
    arguments = '{"a": 25, "b": 17}'
    frames = [sse_chunk({"role": "assistant", "content": None})]
    head = {"index": 0, "id": "call_bench_1", "type": "function"}
    frames.append(
        sse_chunk({"tool_calls": [{**head, "function": {"name": "add", "arguments": ""}}]})
    )
    for start in range(0, len(arguments), 6):
        fragment = {"index": 0, "function": {"arguments": arguments[start : start + 6]}}
        frames.append(sse_chunk({"tool_calls": [fragment]}))
    frames.append(sse_chunk({}, "tool_calls"))
    frames.append(usage_chunk(12))
    frames.append(b"data: [DONE]\n\n")
    whole = b"".join(chunked(f) for f in frames) + LAST_CHUNK
    return Reply(whole, [], None, b"", whole)


class Replies:
    """The replies of one configuration, encoded once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        pieces = artifact_tokens(config.tokens) if config.mode == "artifact" else None
        self.text = build_text_reply(pieces or text_tokens(config.tokens), config.stamp)
        self.tool_call = build_tool_call_reply()


@dataclass(slots=True)
class Stats:
    requests: int = 0
    completed: int = 0
    aborted: int = 0
    active: int = 0
    tool_calls: int = 0


class Upstream:
    def __init__(self, config: Config) -> None:
        self.replies = Replies(config)
        self.stats = Stats()
        # (tag, monotonic ns when the lost connection was noticed, tokens sent by then)
        self.aborts: list[tuple[int | None, int, int]] = []

    def configure(self, changes: dict[str, Any]) -> Config:
        known = {k: v for k, v in changes.items() if k in Config.__dataclass_fields__}
        config = replace(self.replies.config, **known)
        if config.mode not in ("text", "artifact", "tools") or not 1 <= config.tokens <= 100_000:
            raise ValueError(f"bad config {config}")
        self.replies = Replies(config)
        return config

    def reset(self) -> None:
        self.stats = Stats(active=self.stats.active)
        self.aborts = []

    def snapshot(self) -> dict[str, Any]:
        return {
            **asdict(self.stats),
            "config": asdict(self.replies.config),
            "aborts": [{"tag": t, "at_ns": at, "sent": sent} for t, at, sent in self.aborts],
        }


class Connection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive), one reply at a time."""

    def __init__(self, upstream: Upstream) -> None:
        self.up = upstream
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a paced reply is under way
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.reply: Reply | None = None
        self.sent = 0
        self.tag: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_HEAD + MAX_BODY:
            self._close()
            return
        if not self.busy:
            self._next_request()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy:
            self.busy = False
            self.up.stats.active -= 1
            self.up.stats.aborted += 1
            self.up.aborts.append((self.tag, time.monotonic_ns(), self.sent))

    # --- requests -------------------------------------------------------------------------

    def _next_request(self) -> None:
        # Bounded: each pass consumes one whole request from the buffer, or returns.
        while not self.busy and self.transport is not None and not self.transport.is_closing():
            parsed = self._parse()
            if parsed is None:
                return
            method, path, body = parsed
            self._handle(method, path, body)

    def _parse(self) -> tuple[str, str, bytes] | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._close()
            return None
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        method, path, version = [*lines[0].split(" ", 2), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            found = _dechunk(self.buf, start)
            if found is None:
                return None
            body, consumed = found
        else:
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < start + length:
                return None
            body, consumed = bytes(self.buf[start : start + length]), start + length
        del self.buf[:consumed]
        connection = headers.get("connection", "").lower()
        self.close_after = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        return method, path.split("?", 1)[0], body

    def _handle(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path in CHAT_PATHS:
            self._chat(body)
        elif path == "/_bench/stats":
            self._json(200, self.up.snapshot())
        elif method == "POST" and path == "/_bench/config":
            try:
                config = self.up.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                self._json(400, {"error": {"message": str(exc)}})
            else:
                self._json(200, asdict(config))
        elif method == "POST" and path == "/_bench/reset":
            self.up.reset()
            self._json(200, {"ok": True})
        elif path in ("/health", "/v1/models", "/api/v1/models"):
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {method} {path}", "code": 404}})

    def _json(self, status: int, value: Any) -> None:
        assert self.transport is not None
        body = json.dumps(value).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.transport.write(head + self._connection_header() + body)
        if self.close_after:
            self._close()

    def _connection_header(self) -> bytes:
        return b"Connection: close\r\n\r\n" if self.close_after else b"\r\n"

    # --- streaming replies ----------------------------------------------------------------

    def _chat(self, body: bytes) -> None:
        assert self.transport is not None
        up = self.up
        up.stats.requests += 1
        replies = up.replies
        self.tag = None
        if b"abort-id:" in body:
            found = _ABORT_TAG.search(body)
            self.tag = int(found.group(1)) if found else None
        reply = replies.text
        if replies.config.mode == "tools" and _last_role(body) != "tool":
            reply = replies.tool_call
            up.stats.tool_calls += 1
        head = HEAD_SSE + self._connection_header()
        pace = replies.config.pace_ms / 1000
        if pace <= 0 and reply.stamp_parts is None:
            self.transport.write(head + reply.whole)
            up.stats.completed += 1
            if self.close_after:
                self._close()
            return
        # Paced (or stamped): the lead and the first token now, then one token per tick.
        self.busy, self.reply, self.sent = True, reply, 0
        up.stats.active += 1
        self.transport.write(head + reply.lead)
        self._tick(pace)

    def _tick(self, pace: float) -> None:
        self.timer = None
        reply, transport = self.reply, self.transport
        if reply is None or transport is None or transport.is_closing():
            return
        count = len(reply.stamp_parts) if reply.stamp_parts is not None else len(reply.tokens)
        if self.sent < count:
            if reply.stamp_parts is not None:
                before, after = reply.stamp_parts[self.sent]
                data = b"%s%018d%s" % (before, time.monotonic_ns(), after)
                transport.write(chunked(data))
            else:
                transport.write(reply.tokens[self.sent])
            self.sent += 1
        if self.sent < count:
            if pace > 0:
                self.timer = self.loop.call_later(pace, self._tick, pace)
            else:
                self.timer = self.loop.call_soon(self._tick, pace)  # type: ignore[assignment]
            return
        transport.write(reply.tail)
        self.busy, self.reply = False, None
        self.up.stats.active -= 1
        self.up.stats.completed += 1
        if self.close_after:
            self._close()
        elif self.buf:
            self._next_request()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _last_role(body: bytes) -> str | None:
    try:
        messages = json.loads(body).get("messages") or []
        return str(messages[-1].get("role")) if messages else None
    except (ValueError, AttributeError, TypeError):
        return None


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """A complete chunked request body from `start`: (body, bytes consumed), or None for more."""
    out = bytearray()
    pos = start
    for _ in range(100_000):  # bounded: a body is far fewer chunks than this
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0] or b"0", 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if trailer_end == eol:
                return bytes(out), eol + 4
            if trailer_end < 0:
                return None
            return bytes(out), trailer_end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    return None


async def serve(host: str, port: int, config: Config) -> None:
    upstream = Upstream(config)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(upstream), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"upstream listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--mode", default="text", choices=["text", "artifact", "tools"])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    parser.add_argument("--stamp", action="store_true")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        print("upstream: loopback addresses only", file=sys.stderr)
        return 2
    config = Config(args.mode, args.tokens, args.pace_ms, args.stamp)
    asyncio.run(serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
