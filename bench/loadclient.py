"""The benchmark's load client: raw HTTP/1.1 on `asyncio.Protocol`, cheap enough not to be the
bottleneck.

It never parses an event. Per network read it counts frames (`b"\\n\\n"`), notes the moment the
first token (`First`) shows up, and, for stamped upstream replies, pulls the `@<ns>#` stamps out
with one regex to measure how long each token took from the upstream's write to this read
(both sides use the system-wide monotonic clock). A response ends at the chunked terminator, at
Content-Length, or when the server closes. Connections are kept alive between requests.

Only a connection given a `Trace` (the resume scenario) reads more: the `id:` and `event:` lines
of every whole frame, with one regex per read.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"  # loopback only
_STAMP = re.compile(rb"@(\d{18})#")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_TERMINATOR = b"\r\n0\r\n\r\n"
# The head of one of streamchat's frames: `id: <turn>:<chunkIndex>` then `event: <type>`. Frames
# are written whole, so HTTP chunk sizes come between frames (`\r\n1a3\r\n`), never inside.
_FRAME_HEAD = re.compile(rb"\nid: (\d+):(\d+)\nevent: (\w+)\n")
_TERMINAL = {b"completion", b"error"}
# Tags are unique across every load of a run, so the upstream's abort records of a slow server's
# earlier streams are never taken for this trial's.
_TAGS = itertools.count(1)
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Target:
    """Where and how to ask for one streamed reply."""

    name: str
    port: int
    path: str
    # "streamchat": {"message": ...}; "openai": a chat/completions body ("openai-kept": with an
    # `X-Conversation-Id` of a new conversation, for streamchat to keep); "aisdk": the AI SDK's
    # `useChat` body (a new conversation id each time); "agui": an AG-UI `RunAgentInput` (a new
    # thread each time)
    style: str
    headers: tuple[tuple[str, str], ...] = ()

    def request(
        self, tag: int, text: str = "Tell me a long story.", conversation_id: str | None = None
    ) -> bytes:
        message = f"{text} abort-id:{tag}"
        body: dict[str, object]
        if conversation_id is not None:
            body = {"message": message, "conversationId": conversation_id}
        elif self.style in ("openai", "openai-kept"):
            body = {
                "model": "bench/model",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": message}],
            }
        elif self.style == "aisdk":
            body = {
                "id": f"bench-{tag}",
                "messages": [
                    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": message}]}
                ],
            }
        elif self.style == "agui":
            body = {
                "threadId": f"bench-{tag}",
                "runId": "r",
                "messages": [{"id": "m", "role": "user", "content": message}],
            }
        else:
            body = {"message": message}
        raw = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        if self.style == "openai-kept":  # streamchat keeps the history: a new conversation
            extra += f"X-Conversation-Id: bench-{tag}\r\n"
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n{extra}"
            f"Content-Length: {len(raw)}\r\n\r\n"
        )
        return head.encode() + raw

    def resume(self, conversation_id: str, last_event_id: str) -> bytes:
        """streamchat's reconnect: the rest of the conversation's turn after `last_event_id`."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return (
            f"GET /api/conversation/{conversation_id}/stream HTTP/1.1\r\n"
            f"Host: {HOST}:{self.port}\r\nAccept: text/event-stream\r\n"
            f"Last-Event-ID: {last_event_id}\r\n{extra}\r\n"
        ).encode()


@dataclass(slots=True)
class Exchange:
    """One request and what came back."""

    t_sent: int
    t_first: int | None = None
    t_end: int | None = None
    status: int | None = None
    frames: int = 0
    error: str | None = None


@dataclass(slots=True)
class Trace:
    """The events of one reply, by id: which arrived (to count lost and repeated ones), whether
    the last was terminal, and when the first whole frame was read. Fed each read's bytes."""

    ids: list[tuple[int, int]] = field(default_factory=list)  # (turn, chunkIndex), as read
    terminal: int | None = None  # the chunkIndex of a terminal event, once one was read
    t_first: int | None = None
    _rest: bytes = b"\n"

    def feed(self, data: bytes, now: int) -> None:
        buf = self._rest + data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._rest = buf[-MAX_HEAD:]
            return
        # Only whole frames count; the rest keeps the blank line's last "\n" for the next match.
        whole, self._rest = buf[: end + 1], buf[end + 1 :]
        for match in _FRAME_HEAD.finditer(whole):
            index = int(match[2])
            self.ids.append((int(match[1]), index))
            if match[3] in _TERMINAL:
                self.terminal = index
        if self.t_first is None and self.ids:
            self.t_first = now


@dataclass
class Load:
    """Counters shared by every connection of one trial."""

    target: Target
    stamp: bool = False
    frames: int = 0
    streams: int = 0
    stream_frames: int = 0  # the frames of the streams that finished well
    errors: Counter[str] = field(default_factory=Counter)
    recording: bool = False  # stamps and TTFBs count only inside the measured window
    window_start: int = 0
    ttfb_ns: list[int] = field(default_factory=list)
    delay_ns: list[int] = field(default_factory=list)
    stopped: bool = False
    conns: set[Connection] = field(default_factory=set)
    first_tag: int = field(default_factory=lambda: next(_TAGS))
    last_tag: int = 0

    async def connect(self, limit_s: float = 10.0) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(self), HOST, self.target.port), limit_s
        )
        return conn

    def tag(self) -> int:
        self.last_tag = next(_TAGS)
        return self.last_tag

    def owns(self, tag: int) -> bool:
        return self.first_tag < tag <= self.last_tag

    def finished(self, ex: Exchange) -> None:
        if self.stopped:
            return
        if ex.error is not None:
            self.errors[ex.error] += 1
            return
        self.streams += 1
        self.stream_frames += ex.frames

    def first_token(self, ex: Exchange) -> None:
        if self.recording and not self.stopped and ex.t_sent >= self.window_start:
            assert ex.t_first is not None
            self.ttfb_ns.append(ex.t_first - ex.t_sent)

    def close_all(self) -> None:
        self.stopped = True
        for conn in list(self.conns):
            conn.abort()


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.ex: Exchange | None = None
        self.done: asyncio.Future[Exchange] | None = None
        self.first: asyncio.Future[int] | None = None
        self.goal: tuple[int, asyncio.Future[None]] | None = None
        self.trace: Trace | None = None  # set by the caller to read the ids of this reply
        self._head = bytearray()
        self._in_body = False
        self._chunked = True
        self._remaining = -1
        self._close_after = False
        self._tail = b""
        self._last_nl = False
        self._stamp_rest = b""

    # --- use -----------------------------------------------------------------------------

    def send(self, payload: bytes) -> asyncio.Future[Exchange]:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.first = loop.create_future()
        self.ex = Exchange(time.monotonic_ns())
        self._in_body, self._head = False, bytearray()
        if self.transport is None or self.closed:
            self._finish("closed before sending")
        else:
            self.transport.write(payload)
        return self.done

    def wait_frames(self, count: int) -> asyncio.Future[None]:
        """Resolved once the current reply has `count` frames (or has ended)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.ex is None or self.ex.frames >= count or self.done is None or self.done.done():
            future.set_result(None)
        else:
            self.goal = (count, future)
        return future

    def close(self) -> None:
        """Leave the way a browser tab does: FIN, no reset."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.load.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.load.conns.discard(self)
        if self.ex is not None and self.done is not None and not self.done.done():
            if self._in_body and not self._chunked and self._remaining < 0:
                self._finish(None)  # a body delimited by the end of the connection
            else:
                self._finish("connection closed mid-reply" if self._in_body else "no response")

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        ex = self.ex
        if ex is None or self.done is None or self.done.done():
            return
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._finish("response head too large")
                return
            head = bytes(self._head[:end])
            data = bytes(self._head[end + 4 :])
            self._head = bytearray()
            self._start_body(head)
            if ex.status != 200:
                self._finish(f"HTTP {ex.status}")
                self.abort()
                return
            if not data:
                return
        self._body(data, now)

    # --- parsing -------------------------------------------------------------------------

    def _start_body(self, head: bytes) -> None:
        assert self.ex is not None
        try:
            self.ex.status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.ex.status = 0
        lower = head.lower()
        self._chunked = b"transfer-encoding: chunked" in lower
        found = _CONTENT_LENGTH.search(head)
        self._remaining = int(found.group(1)) if found and not self._chunked else -1
        self._close_after = b"connection: close" in lower
        self._in_body, self._tail, self._last_nl, self._stamp_rest = True, b"\r\n", False, b""

    def _body(self, data: bytes, now: int) -> None:
        ex, load = self.ex, self.load
        assert ex is not None
        frames = data.count(b"\n\n")
        if self._last_nl and data[:1] == b"\n":
            frames += 1
        self._last_nl = data[-1:] == b"\n"
        if frames:
            ex.frames += frames
            load.frames += frames
            if self.goal is not None and ex.frames >= self.goal[0]:
                reached, self.goal = self.goal[1], None
                if not reached.done():
                    reached.set_result(None)
        if ex.t_first is None and (b"First" in data or b"First" in self._tail + data[:8]):
            ex.t_first = now
            load.first_token(ex)
            if self.first is not None and not self.first.done():
                self.first.set_result(now)
        if load.stamp:
            self._stamps(data, now)
        if self.trace is not None:
            self.trace.feed(data, now)
        tail = (self._tail + data[-16:])[-16:]
        self._tail = tail
        if self._chunked:
            if tail.endswith(_TERMINATOR):
                self._finish(None)
        elif self._remaining >= 0:
            self._remaining -= len(data)
            if self._remaining <= 0:
                self._finish(None)

    def _stamps(self, data: bytes, now: int) -> None:
        buf = self._stamp_rest + data
        last = 0
        if self.load.recording:
            previous = b""
            for match in _STAMP.finditer(buf):
                stamp = match.group(1)
                # A token shown twice in one event (streamchat's `content` and `textDelta`)
                # is one token.
                if stamp != previous:
                    self.load.delay_ns.append(now - int(stamp))
                previous = stamp
                last = match.end()
        else:
            for match in _STAMP.finditer(buf):
                last = match.end()
        self._stamp_rest = buf[max(last, len(buf) - 24) :]

    def _finish(self, error: str | None) -> None:
        ex, done = self.ex, self.done
        if ex is None or done is None or done.done():
            return
        ex.error = error
        ex.t_end = time.monotonic_ns()
        self._in_body = False
        if self.goal is not None and not self.goal[1].done():
            self.goal[1].set_result(None)
        self.goal = None
        if self.first is not None and not self.first.done():
            self.first.set_result(0)  # 0: the reply ended without a first token
        self.load.finished(ex)
        done.set_result(ex)
        if self._close_after and not self.closed:
            self.close()
