"""`python app.py` as a user runs it: the SQLite store across restarts, SIGTERM, and kill -9."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from streamchat.web import (
    FULL_COLLECTION_AFTER,
    MIDDLE_COLLECTION_AFTER,
    YOUNG_COLLECTION_SECONDS,
)
from tests.conftest import MakeClient, StartApp, parse_events
from tests.fake_upstream import FakeUpstream, paced, text_reply

LONG_TURN = {"message": "go on", "conversationId": "c"}


@asynccontextmanager
async def mid_turn(
    session: aiohttp.ClientSession, upstream: FakeUpstream, url: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A long paced turn of conversation `c`, once its first event has been read."""
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(500)]), 0.02))
    async with session.post(f"{url}/api/stream", json=LONG_TURN) as response:
        await response.content.readuntil(b"\n\n")
        yield response


async def turn(session: aiohttp.ClientSession, url: str, message: str) -> list[dict[str, Any]]:
    body = {"message": message, "conversationId": "c"}
    async with session.post(f"{url}/api/stream", json=body) as response:
        return parse_events(await response.read())


async def test_conversations_survive_a_restart(
    start_app: StartApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    first = await start_app()
    assert b"store: sqlite (streamchat.db)" in first.output
    upstream.add(text_reply("Nice to meet you, Ada."), text_reply("Your name is Ada."))
    async with aiohttp.ClientSession() as session:
        await turn(session, first.url, "My name is Ada.")
        first.process.send_signal(signal.SIGTERM)
        assert await first.wait() == 0

        second = await start_app()
        async with session.get(f"{second.url}/api/conversation/c") as response:
            stored = await response.json()
        events = await turn(session, second.url, "What is my name?")

    assert (tmp_path / "streamchat.db").exists()
    assert [m["content"] for m in stored["messages"][1:]] == [
        "My name is Ada.",
        "Nice to meet you, Ada.",
    ]
    assert events[-1]["turn"] == 2
    sent = [m["content"] for m in upstream.requests[-1]["messages"][1:]]
    assert sent == ["My name is Ada.", "Nice to meet you, Ada.", "What is my name?"]


async def test_sigterm_drains_running_turns_then_exits_0(
    start_app: StartApp, upstream: FakeUpstream
) -> None:
    server = await start_app()
    async with (
        aiohttp.ClientSession() as session,
        mid_turn(session, upstream, server.url) as response,
    ):
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with session.get(f"{server.url}/health") as health:
            health_status, health_body = health.status, await health.json()
        async with session.post(f"{server.url}/api/stream", json=LONG_TURN) as refused:
            refused_status = refused.status
            refused_body = await refused.json()
            retry_after = refused.headers.get("Retry-After")
        rest = parse_events(await response.read())
    code = await server.wait()

    assert health_status == 503
    assert health_body["status"] == "shutting_down"
    assert refused_status == 503
    assert refused_body["error"]["code"] == "shutting_down"
    assert retry_after is not None
    assert rest[-1]["type"] == "error"
    assert rest[-1]["code"] == "shutting_down"
    assert code == 0
    assert upstream.disconnected.is_set()


async def test_a_second_server_on_the_same_file_waits_for_the_first_to_stop(
    start_app: StartApp, upstream: FakeUpstream
) -> None:
    # A rolling restart: the new process starts before the old one has drained. Opening the file
    # at once, it would have marked the old one's running turn interrupted (its answer then
    # stored nowhere) and run turns beside it.
    first = await start_app()
    async with aiohttp.ClientSession() as session:
        async with mid_turn(session, upstream, first.url) as response:
            second = await start_app(wait_for=b"in use by another streamchat process")
            assert b"listening" not in second.output
            first.process.send_signal(signal.SIGTERM)
            rest = parse_events(await response.read())
        assert await first.wait() == 0
        await second.printed(b"store:")
        async with session.get(f"{second.url}/api/conversation/c") as got:
            stored = await got.json()

    assert rest[-1]["code"] == "shutting_down"  # the first drained its turn and stored it
    assert stored["runningTurn"] is None
    assert stored["messages"][-1]["role"] == "assistant"
    assert stored["messages"][-1]["content"].startswith("w0 ")
    assert b"marked interrupted" not in second.output


async def test_kill_9_mid_turn_leaves_a_valid_history_and_the_next_start_marks_it(
    start_app: StartApp, upstream: FakeUpstream
) -> None:
    server = await start_app()
    async with aiohttp.ClientSession() as session:
        async with mid_turn(session, upstream, server.url):
            server.process.kill()
            await server.process.wait()

        again = await start_app()
        async with session.get(f"{again.url}/api/conversation/c") as got:
            stored = await got.json()
        headers = {"Last-Event-ID": "1:0"}
        async with session.get(f"{again.url}/api/conversation/c/stream", headers=headers) as got:
            told = parse_events(await got.read())
        upstream.add(text_reply("fine"))
        events = await turn(session, again.url, "still there?")

    assert stored["runningTurn"] is None
    assert [m["role"] for m in stored["messages"]] == ["system", "user"]
    assert told[0]["code"] == "interrupted"
    assert events[-1]["type"] == "completion"
    assert json.dumps(upstream.requests[-1]["messages"]).count('"role": "user"') == 2


async def test_a_started_server_collects_the_young_generation_even_when_the_count_stays_low(
    make_client: MakeClient,
) -> None:
    """Deallocations of old objects offset new allocations in the interpreter's count, so the
    server collects the young generation on a timer too."""
    client = await make_client()
    assert (await client.get("/health")).status == 200
    young: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            young.append(1)

    gc.callbacks.append(seen)
    try:
        await asyncio.sleep(YOUNG_COLLECTION_SECONDS * 4.5)
    finally:
        gc.callbacks.remove(seen)
    assert len(young) >= 3


async def test_a_started_server_runs_full_collections_rarely(make_client: MakeClient) -> None:
    """Young collections as usual; middle ones more often (each then walks fewer open streams'
    objects), a full one only after FULL_COLLECTION_AFTER of them (it walks all of them)."""
    gc.set_threshold(700, 10, 10)
    client = await make_client()
    response = await client.get("/health")
    assert response.status == 200
    assert gc.get_threshold() == (700, MIDDLE_COLLECTION_AFTER, FULL_COLLECTION_AFTER)
