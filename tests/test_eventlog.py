"""The turn's event log: readers that follow it, by waking on appends or by taking pushes."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamchat.eventlog import RetainedLogs, TurnLog
from streamchat.events import (
    Completion,
    Event,
    TextChunk,
    ToolCompleted,
    ToolExecuting,
    wire_json,
)
from streamchat.sse_writer import SSEWriter
from tests.conftest import parse_events
from tests.fake_upstream import FakeUpstream, paced, text_reply

Client = TestClient[Any, Any]


def text(n: int) -> list[Event]:
    return [TextChunk(f"t{n}")]


async def test_a_caught_up_reader_takes_appends_by_push_until_the_log_closes() -> None:
    log = TurnLog("me", "c")
    log.append(text(0))
    pushed: list[tuple[int, list[Event]]] = []

    def push(first: int, events: list[Event], elapsed: list[float]) -> bool:
        pushed.append((first, events))
        return True

    async def read() -> list[int]:
        return [first async for first, _, _ in log.follow(-1, push)]

    reading = asyncio.create_task(read())
    await asyncio.sleep(0)
    log.append(text(1))
    log.append(text(2))
    log.append([Completion("stop", "m", None, "c", None)])
    log.close()

    assert await reading == [0]  # what was there already; the rest went by push
    assert [first for first, _ in pushed] == [1, 2, 3]


async def test_a_declined_push_leaves_that_batch_and_the_next_ones_to_the_reader() -> None:
    log = TurnLog("me", "c")
    taking = [True]
    pushed: list[int] = []

    def push(first: int, events: list[Event], elapsed: list[float]) -> bool:
        if taking[0]:
            pushed.append(first)
        return taking[0]

    read: list[int] = []

    async def follow() -> None:
        async for first, events, _ in log.follow(-1, push):
            read.extend(range(first, first + len(events)))
            taking[0] = True  # caught up again: the next appends may be pushed

    reading = asyncio.create_task(follow())
    await asyncio.sleep(0)
    log.append(text(0))
    taking[0] = False
    log.append(text(1))
    log.append(text(2))  # the reader has not run yet: this one is read, not pushed
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    log.append(text(3))
    log.close()
    await reading

    assert pushed == [0, 3]
    assert read == [1, 2]
    assert sorted(pushed + read) == [0, 1, 2, 3]  # every event once


async def test_a_cancelled_reader_leaves_no_push_behind() -> None:
    log = TurnLog("me", "c")
    calls: list[int] = []

    def push(first: int, events: list[Event], elapsed: list[float]) -> bool:
        calls.append(first)
        return True

    async def read() -> None:
        async for _ in log.follow(-1, push):
            pass

    reading = asyncio.create_task(read())
    await asyncio.sleep(0)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    log.append(text(0))

    assert calls == []


async def test_a_reader_that_does_not_read_gets_every_event_once_in_order_when_it_does(
    client: Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled client fills its connection: writes then wait for it (flow control) instead
    of being pushed, and nothing is lost, doubled or reordered; a reader beside it streams on."""
    pieces = [f"{n:05d}" + "x" * 2000 for n in range(450)]  # about 900 KB
    upstream.add(paced(text_reply(*pieces), 0.001))
    answers: list[bool] = []
    can_write_now = SSEWriter.can_write_now

    def recorded(writer: SSEWriter) -> bool:
        answers.append(can_write_now(writer))
        return answers[-1]

    monkeypatch.setattr(SSEWriter, "can_write_now", recorded)
    made = SSEWriter.__init__

    def small_send_buffer(writer: SSEWriter, *args: Any) -> None:
        made(writer, *args)
        if writer._transport is not None:  # the kernel's buffer would hide the stall
            sock = writer._transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    monkeypatch.setattr(SSEWriter, "__init__", small_send_buffer)
    host, port = client.server.host, client.server.port
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, port))
    stalled.setblocking(False)
    body = b'{"message": "go", "conversationId": "c"}'
    stalled.sendall(
        b"POST /api/stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await asyncio.sleep(0.3)
    watcher = await client.get("/api/conversation/c/stream")
    watched = parse_events(await watcher.read())

    loop = asyncio.get_running_loop()
    raw = b""
    while chunk := await loop.sock_recv(stalled, 65536):
        raw += chunk
    stalled.close()
    head, _, chunked = raw.partition(b"\r\n\r\n")
    events = parse_events(_unchunk(chunked))

    assert b"200 OK" in head.split(b"\r\n")[0]
    assert [e["chunkIndex"] for e in events] == list(range(len(events)))
    assert "".join(e["content"] for e in events if e["type"] == "text") == "".join(pieces)
    assert events[-1]["type"] == "completion"
    assert watched == events
    assert True in answers and False in answers  # pushed while it could, then waited


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            break
        out += body[:length]
        body = body[length + 2 :]
    return out


async def test_a_log_keeps_its_text_out_of_the_collectors_way_and_reads_the_same() -> None:
    """Text events are kept as strings, which the garbage collector does not track, while the
    turn runs and once it is retained: readers get the same events back."""
    log = TurnLog("me", "c")
    log.turn = 1
    batches: list[list[Event]] = [text(0), [TextChunk("a"), TextChunk("b")], text(3)]
    for batch in batches:
        log.append(batch)
    stored = log.events._items
    assert not any(gc.is_tracked(item) for item in stored)
    assert log.events[1:3] == [TextChunk("a"), TextChunk("b")]
    log.append([Completion("stop", "m", None, "c", None)])
    log.close()
    before = [(first, events) async for first, events, _ in log.follow(-1)]
    assert before == [(0, [*batches[0], *batches[1], *batches[2], log.events[4]])]
    retained = RetainedLogs(60, 10_000_000)
    retained.add(log)

    after = [(first, events) async for first, events, _ in log.follow(-1)]
    resumed = [(first, events) async for first, events, _ in log.follow(1)]

    assert after == before
    assert resumed == [(2, before[0][1][2:])]
    assert list(log.events) == before[0][1] and len(log.events) == 5
    assert sum(gc.is_tracked(item) for item in stored) == 1  # the completion only


def test_wire_json_of_a_stretch_of_the_log_is_each_events_own() -> None:
    """What the Redis mirror sends: text from the log's strings, the rest as wire_json has it."""
    log = TurnLog("me", "c")
    events: list[Event] = [
        TextChunk('say "hi"\n'),
        ToolExecuting("add", "t1", '{"a":1}'),
        TextChunk("ünïcode \ud800"),
        Completion("stop", "m", None, "c", None, 1),
    ]
    log.append(events)
    elapsed = log.elapsed_ms[1:4]
    assert log.events.wire_jsons(1, 4, elapsed) == [
        wire_json(1 + n, event, elapsed[n]) for n, event in enumerate(events[1:4])
    ]


async def followed() -> tuple[TurnLog, list[tuple[int, list[str]]], asyncio.Task[Any]]:
    """A log, what a caught-up reader of it is pushed (each event by its type), its task."""
    log = TurnLog("me", "c")
    pushed: list[tuple[int, list[str]]] = []

    def push(first: int, events: list[Event], elapsed: list[float]) -> bool:
        pushed.append((first, [type(e).__name__ for e in events]))
        return True

    reading = asyncio.create_task(alist(log.follow(-1, push)))
    await asyncio.sleep(0)
    return log, pushed, reading


async def test_a_held_batch_goes_out_with_the_next_append_in_one_push() -> None:
    log, pushed, reading = await followed()

    log.append([ToolExecuting("add", "t1", "{}")], hold=True)
    assert pushed == [] and len(log.events) == 0  # not yet visible to anyone
    log.append([ToolCompleted("add", "t1", "{}", "42", 0.1)])
    await asyncio.sleep(0)  # the held batch's own release finds nothing left to do
    log.close()
    await reading

    assert pushed == [(0, ["ToolExecuting", "ToolCompleted"])]
    assert [type(e).__name__ for e in log.events] == ["ToolExecuting", "ToolCompleted"]


async def test_a_held_batch_goes_out_on_the_loops_next_turn_when_nothing_follows() -> None:
    # A tool that waits (I/O, a thread) must not keep its `tool_executing` from the readers.
    log, pushed, reading = await followed()

    log.append([ToolExecuting("search", "t1", "{}")], hold=True)
    await asyncio.sleep(0)
    assert pushed == [(0, ["ToolExecuting"])]
    log.append([ToolCompleted("search", "t1", "{}", "found", 5.0)])
    log.close()
    await reading
    assert pushed == [(0, ["ToolExecuting"]), (1, ["ToolCompleted"])]


async def test_closing_a_log_delivers_what_it_held_first() -> None:
    log = TurnLog("me", "c")
    log.append([ToolExecuting("add", "t1", "{}")], hold=True)
    log.close()
    await asyncio.sleep(0)

    assert [first async for first, _, _ in log.follow(-1)] == [0]
    assert len(log.events) == 1


async def alist(items: Any) -> list[Any]:
    return [item async for item in items]
