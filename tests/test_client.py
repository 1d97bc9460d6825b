"""`streamchat.client` against a live server on a free port, its upstream the fake one.

The resume tests put a small TCP proxy between the client and the server and cut every
connection through it mid-answer: the client must pick the turn up again by itself and hand
its caller every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from streamchat.client import (
    ConnectionLost,
    Received,
    StreamChatClient,
    StreamChatError,
)
from streamchat.events import (
    ArtifactCompleted,
    ArtifactContent,
    ArtifactStarted,
    Completion,
    ErrorEvent,
    TextChunk,
    ToolCompleted,
    ToolExecuting,
)
from tests.conftest import ROOT, free_port
from tests.fake_upstream import FakeUpstream, HttpError, paced, text_reply, tool_reply
from tests.test_readme import fenced_blocks, section

ARTIFACT = '<artifact id="hi" title="hi.py" language="python">\nprint("hi")\n</artifact>'
WORDS = [f"w{i} " for i in range(40)]


@pytest.fixture
def base(live_server: str) -> str:
    return live_server


class CuttingProxy:
    """A TCP proxy on a free port; `cut()` aborts every connection that goes through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop taking connections (what was open stays open until `cut()`)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def aclose(self) -> None:
        await self.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(base: str) -> AsyncIterator[CuttingProxy]:
    cutting = CuttingProxy(int(base.rsplit(":", 1)[1]))
    await cutting.start()
    yield cutting
    await cutting.aclose()


@pytest.fixture
async def chat(base: str) -> AsyncIterator[StreamChatClient]:
    async with StreamChatClient(base) as client:
        yield client


def text_of(received: list[Received]) -> str:
    return "".join(r.event.text for r in received if isinstance(r.event, TextChunk))


def assert_unbroken(received: list[Received]) -> None:
    """Every event of one turn, each once, in order: 0, 1, 2, ... and one terminal at the end."""
    assert [r.index for r in received] == list(range(len(received)))
    assert len({r.turn for r in received}) == 1
    assert isinstance(received[-1].event, Completion | ErrorEvent)
    elapsed = [r.elapsed_ms for r in received]
    assert elapsed == sorted(elapsed)


async def test_a_text_turn_streams_typed_events_and_ends_with_completion(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hello ", "there!"))

    turn = chat.stream("Hello!", conversation_id="c1")
    received = [r async for r in turn]

    assert text_of(received) == "Hello there!"
    assert_unbroken(received)
    completion = received[-1].event
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "stop"
    assert completion.conversation_id == "c1"
    assert completion.usage is not None and completion.usage.total_tokens == 15
    assert received[0].id == "1:0" and received[0].type == "text"
    assert (turn.conversation_id, turn.turn, turn.last_event_id) == ("c1", 1, received[-1].id)
    assert turn.resumes == 0


async def test_without_an_id_a_new_conversation_is_made_and_known_before_the_first_event(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hi"))

    turn = chat.stream("Hello!")
    conversation_id = turn.conversation_id
    received = [r async for r in turn]

    completion = received[-1].event
    assert isinstance(completion, Completion)
    assert completion.conversation_id == conversation_id
    assert (await chat.conversation(conversation_id)).turns == 1


async def test_a_tool_turn_yields_the_tool_events_then_the_answer(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    received = [r async for r in chat.stream("What is 25 + 17?", model="fake/model-1")]

    events = [r.event for r in received]
    executing = next(e for e in events if isinstance(e, ToolExecuting))
    completed = next(e for e in events if isinstance(e, ToolCompleted))
    assert (executing.tool_name, executing.arguments) == ("add", '{"a": 25, "b": 17}')
    assert (completed.tool_id, completed.result) == ("t1", "42")
    assert text_of(received) == "25 + 17 = 42"
    assert upstream.requests[0]["model"] == "fake/model-1"
    assert_unbroken(received)


async def test_an_artifact_arrives_as_started_content_completed(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Here: ", ARTIFACT))

    received = [r async for r in chat.stream("write hi.py")]

    events = [r.event for r in received]
    started = next(e for e in events if isinstance(e, ArtifactStarted))
    completed = next(e for e in events if isinstance(e, ArtifactCompleted))
    deltas = "".join(e.content_delta for e in events if isinstance(e, ArtifactContent))
    assert (started.artifact_id, started.title, started.language) == ("hi", "hi.py", "python")
    assert completed.content == deltas == 'print("hi")'
    assert text_of(received) == "Here: "


async def test_a_refused_request_raises_stream_chat_error_with_the_servers_code(
    chat: StreamChatClient,
) -> None:
    with pytest.raises(StreamChatError) as refused:
        [r async for r in chat.stream("   ")]

    assert refused.value.status == 400
    assert refused.value.code == "invalid_request"
    assert refused.value.param == "message"
    assert "must not be empty" in refused.value.message


async def test_an_unreachable_server_raises_stream_chat_error_with_status_0() -> None:
    async with StreamChatClient(f"http://127.0.0.1:{free_port()}") as chat:
        with pytest.raises(StreamChatError) as unreachable:
            [r async for r in chat.stream("Hello?")]

    assert (unreachable.value.status, unreachable.value.code) == (0, "unreachable")


async def test_an_upstream_failure_is_an_error_event_not_an_exception(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found"}}))

    received = [r async for r in chat.stream("Hello?")]

    error = received[-1].event
    assert isinstance(error, ErrorEvent)
    assert error.code == "upstream_auth"
    assert_unbroken(received)


async def test_a_connection_cut_mid_turn_is_resumed_with_no_gap_and_no_duplicate(
    proxy: CuttingProxy, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*WORDS), 0.03))
    received: list[Received] = []

    async with StreamChatClient(proxy.url, backoff=0.05) as chat:
        turn = chat.stream("count", conversation_id="cut")
        async for r in turn:
            received.append(r)
            if len(received) == 10:
                proxy.cut()

    assert_unbroken(received)
    assert text_of(received) == "".join(WORDS)
    assert isinstance(received[-1].event, Completion)
    assert received[-1].event.finish_reason == "stop"
    assert turn.resumes == 1
    assert proxy.connections == 2


async def test_a_connection_cut_twice_is_resumed_twice(
    proxy: CuttingProxy, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*WORDS), 0.03))
    received: list[Received] = []

    async with StreamChatClient(proxy.url, backoff=0.05) as chat:
        turn = chat.stream("count", conversation_id="cut2")
        async for r in turn:
            received.append(r)
            if len(received) in (5, 20):
                proxy.cut()

    assert_unbroken(received)
    assert text_of(received) == "".join(WORDS)
    assert turn.resumes == 2


async def test_a_server_that_stays_unreachable_ends_in_connection_lost(
    proxy: CuttingProxy, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*WORDS), 0.03))
    received: list[Received] = []

    async with StreamChatClient(proxy.url, retries=2, backoff=0.05) as chat:
        with pytest.raises(ConnectionLost) as lost:
            async for r in chat.stream("count", conversation_id="gone"):
                received.append(r)
                if len(received) == 5:
                    await proxy.close()
                    proxy.cut()

    assert lost.value.code == "connection_lost"
    assert len(received) == 5


async def test_resume_sends_exactly_the_events_after_the_id_and_join_none_when_idle(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply(*WORDS[:6]))
    whole = [r async for r in chat.stream("count", conversation_id="r1")]

    rest = [r async for r in chat.resume("r1", whole[2].id)]
    joined = [r async for r in chat.join("r1")]
    after_the_end = [r async for r in chat.resume("r1", whole[-1].id)]

    assert [r.id for r in rest] == [r.id for r in whole[3:]]
    assert [r.event for r in rest] == [r.event for r in whole[3:]]
    assert joined == after_the_end == []


async def test_join_follows_a_running_turn_from_its_first_event(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*WORDS[:20]), 0.03))
    first = chat.stream("count", conversation_id="j1")
    started = await anext(first)

    joined = [r async for r in chat.join("j1")]
    rest = [r async for r in first]

    assert [r.id for r in joined] == [started.id] + [r.id for r in rest]
    assert text_of(joined) == "".join(WORDS[:20])


async def test_stop_ends_the_turn_as_cancelled_and_says_which_turn(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(300)]), 0.02))
    received: list[Received] = []
    stopped: int | None = None

    async for r in chat.stream("go on", conversation_id="s1"):
        received.append(r)
        if len(received) == 3:
            stopped = await chat.stop("s1")

    completion = received[-1].event
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "cancelled"
    assert stopped == 1
    assert await chat.stop("s1") is None
    assert text_of(received).startswith("w0 w1 ")


async def test_conversations_are_listed_paged_read_and_deleted(
    chat: StreamChatClient, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("One."), text_reply("Two."), text_reply("Here: ", ARTIFACT))
    for conversation_id, message in [("a", "first"), ("b", "second"), ("b", "write hi.py")]:
        [r async for r in chat.stream(message, conversation_id=conversation_id)]

    page = await chat.conversations(limit=1)
    rest = await chat.conversations(limit=1, before=page.next)
    stored = await chat.conversation("b")
    await chat.delete("b")
    await chat.delete("b")  # idempotent, as the server's route is

    assert [c.conversation_id for c in page.conversations] == ["b"]
    assert [c.conversation_id for c in rest.conversations] == ["a"]
    assert page.conversations[0].turns == 2 and page.conversations[0].title == "second"
    assert page.conversations[0].running_turn is None
    assert [m["role"] for m in stored.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [(a.artifact_id, a.content, a.turn) for a in stored.artifacts] == [
        ("hi", 'print("hi")', 2)
    ]
    assert [c.conversation_id for c in (await chat.conversations()).conversations] == ["a"]
    with pytest.raises(StreamChatError) as missing:
        await chat.conversation("b")
    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_the_api_key_and_headers_go_with_every_request() -> None:
    seen: list[dict[str, Any]] = []

    async def conversations(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"conversations": [], "next": None})

    app = web.Application()
    app.router.add_get("/prefix/api/conversations", conversations)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/prefix/"
    try:
        async with StreamChatClient(url, api_key="sk-1", headers={"X-Trace": "t"}) as chat:
            page = await chat.conversations()
    finally:
        await runner.cleanup()

    assert page.conversations == [] and page.next is None
    assert seen[0]["Authorization"] == "Bearer sk-1"
    assert seen[0]["X-Trace"] == "t"


# --- the README's example -------------------------------------------------------------------------


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = fenced_blocks(section(readme, "Python client and terminal chat"), "python")
    assert len(blocks) == 1
    return blocks[0]


async def run_example(url: str) -> str:
    """The README's example as printed, its address pointed at `url`; what it printed."""
    script = readme_example()
    assert 'StreamChatClient("http://127.0.0.1:5282")' in script
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script.replace("http://127.0.0.1:5282", url),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert err == b""
    return out.decode()


async def test_the_readme_example_runs_as_printed(base: str, upstream: FakeUpstream) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    out = await run_example(base)

    lines = out.splitlines()
    assert lines[0] == '[add {"a": 25, "b": 17} -> 42]'
    assert lines[1] == "25 + 17 = 42"
    assert lines[2].startswith("(stop; event 1:")
    assert lines[3] == "5 messages stored"


async def test_the_readme_example_reports_a_server_it_cannot_reach() -> None:
    out = await run_example(f"http://127.0.0.1:{free_port()}")

    assert out.startswith("request failed: 0 unreachable: streamchat at http://127.0.0.1:")
