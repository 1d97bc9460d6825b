"""Turns that outlive their connection: join, resume after Last-Event-ID, stop, grace, list."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from streamchat.sse import SSEDecoder, SSEEvent
from streamchat.stores.memory import MemoryStore
from streamchat.stores.sqlite import SqliteStore
from streamchat.web import create_app
from tests.conftest import MakeClient, make_settings, parse_events, stream
from tests.fake_upstream import FakeUpstream, Sleep, paced, text_reply, tool_reply

Client = TestClient[Any, Any]
ARTIFACT = '<artifact id="a" title="a.py" language="python">\nprint(1)\n</artifact>'


class Reader:
    """Reads a live SSE response event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.decoder = SSEDecoder()
        self.events: list[dict[str, Any]] = []  # every event read so far
        self.ids: list[str] = []
        self.taken = 0  # how many `next()` has handed out

    async def next(self) -> dict[str, Any]:
        while self.taken == len(self.events):
            data = await asyncio.wait_for(self.response.content.readany(), 5)
            assert data, "the stream ended"
            for item in self.decoder.feed(data):
                if isinstance(item, SSEEvent):
                    self.events.append(json.loads(item.data))
                    self.ids.append(item.id or "")
        self.taken += 1
        return self.events[self.taken - 1]

    async def rest(self) -> list[dict[str, Any]]:
        """Every event not yet taken, until the terminal one."""
        out = []
        while True:
            event = await self.next()
            out.append(event)
            if event["type"] in ("completion", "error"):
                self.response.close()  # nothing follows the terminal event: free the connection
                return out


def reader(response: aiohttp.ClientResponse) -> Reader:
    return Reader(response)


def slow_text(n: int, seconds: float = 0.05) -> list[Any]:
    return paced(text_reply(*[f"w{i} " for i in range(n)]), seconds)


async def post(client: Client, message: str, cid: str) -> aiohttp.ClientResponse:
    response = await client.post("/api/stream", json={"message": message, "conversationId": cid})
    assert response.status == 200
    return response


async def join(client: Client, cid: str, **headers: str) -> aiohttp.ClientResponse:
    return await client.get(f"/api/conversation/{cid}/stream", headers=headers)


# --- resume after Last-Event-ID -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_after_every_event_of_a_finished_turn_gets_exactly_the_rest(
    client: Client, upstream: FakeUpstream, how: str
) -> None:
    upstream.add(
        tool_reply(("t1", "add", {"a": 25, "b": 17})),
        text_reply("25 + 17 = 42. ", ARTIFACT[:20], ARTIFACT[20:], " Done."),
    )
    whole = await stream(client, "What is 25 + 17?", conversationId="c")
    types = whole.types
    assert {"tool_completed", "text", "artifact_content", "completion"} <= set(types)

    for index in range(len(whole.events) - 1):
        url = "/api/conversation/c/stream"
        if how == "header":
            response = await client.get(url, headers={"Last-Event-ID": f"1:{index}"})
        else:
            response = await client.get(url, params={"lastEventId": f"1:{index}"})
        assert response.status == 200
        rest = parse_events(await response.read())
        assert rest == whole.events[index + 1 :], f"after 1:{index}"

    after_last = await join(client, "c", **{"Last-Event-ID": f"1:{len(whole.events) - 1}"})
    assert after_last.status == 204


async def test_a_dropped_reader_resumes_a_live_turn_with_no_gap_and_no_duplicate(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(resume_grace_seconds=5.0)
    upstream.add(slow_text(30, 0.02))

    first = reader(await post(client, "count", "c"))
    seen = [await first.next() for _ in range(5)]
    last_id = first.ids[4]
    first.response.close()
    await asyncio.sleep(0.1)

    second = reader(await join(client, "c", **{"Last-Event-ID": last_id}))
    rest = await second.rest()

    everything = seen + rest
    assert [e["chunkIndex"] for e in everything] == list(range(len(everything)))
    assert everything[-1]["type"] == "completion"
    assert "".join(e["content"] for e in everything if e["type"] == "text") == "".join(
        f"w{i} " for i in range(30)
    )


async def test_resume_edges_answer_clearly(make_client: MakeClient, upstream: FakeUpstream) -> None:
    client = await make_client(resume_retention_seconds=0.0)
    upstream.add(text_reply("hi"))
    await stream(client, "hello", conversationId="c")

    nothing_running = await join(client, "c")
    not_retained = await join(client, "c", **{"Last-Event-ID": "1:0"})
    malformed = await join(client, "c", **{"Last-Event-ID": "seven"})
    unknown = await join(client, "nope")

    assert nothing_running.status == 204
    assert not_retained.status == 204
    assert malformed.status == 400
    assert (await malformed.json())["error"]["param"] == "lastEventId"
    assert unknown.status == 404
    assert len(upstream.requests) == 1  # a resume never starts a second generation


# --- join -----------------------------------------------------------------------------------------


async def test_two_readers_see_the_same_turn_and_one_leaving_does_not_disturb_the_other(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(slow_text(20, 0.02))
    starter = reader(await post(client, "go", "c"))
    await starter.next()

    watcher = reader(await join(client, "c"))
    leaver = reader(await join(client, "c"))
    await leaver.next()
    leaver.response.close()

    started = [starter.events[0], *await starter.rest()]
    watched = await watcher.rest()

    assert watched == started
    assert started[-1]["type"] == "completion"
    assert watcher.ids[0] == "1:0"


# --- stop -----------------------------------------------------------------------------------------


async def test_stop_aborts_the_upstream_stores_the_partial_text_and_tells_every_reader(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(slow_text(200, 0.02))
    starter = reader(await post(client, "go on", "c"))
    for _ in range(3):
        await starter.next()
    watcher = reader(await join(client, "c"))
    await watcher.next()

    asked = time.monotonic()
    response = await client.post("/api/conversation/c/stop")
    answer = await response.json()
    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)

    assert answer == {"stopped": True, "turn": 1}
    assert upstream.disconnected_at is not None and upstream.disconnected_at - asked < 1.0
    for one in (starter, watcher):
        terminal = (await one.rest())[-1]
        assert terminal["type"] == "completion"
        assert terminal["finishReason"] == "cancelled"
    stored = await (await client.get("/api/conversation/c")).json()
    assert stored["runningTurn"] is None
    assert stored["messages"][-1]["role"] == "assistant"
    assert stored["messages"][-1]["content"].startswith("w0 w1 w2 ")


async def test_stop_with_nothing_running_and_for_an_unknown_conversation(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("hi"))
    await stream(client, "hello", conversationId="c")

    idle = await client.post("/api/conversation/c/stop")
    unknown = await client.post("/api/conversation/nobody/stop")

    assert await idle.json() == {"stopped": False}
    assert unknown.status == 404


async def test_delete_during_a_turn_stops_it_and_forgets_the_conversation(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(slow_text(200, 0.02))
    starter = reader(await post(client, "go on", "c"))
    await starter.next()

    deleted = await client.delete("/api/conversation/c")

    assert deleted.status == 200
    assert (await starter.rest())[-1]["finishReason"] == "cancelled"
    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)
    assert (await client.get("/api/conversation/c")).status == 404


# --- the grace after the last reader leaves ----------------------------------------------------


async def test_with_no_reader_the_turn_goes_on_for_the_grace_then_stops(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(resume_grace_seconds=0.5)
    upstream.add(slow_text(200, 0.02))
    first = reader(await post(client, "go on", "c"))
    await first.next()
    first.response.close()

    await asyncio.sleep(0.3)
    assert not upstream.disconnected.is_set()  # still generating for a reader to come back
    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)

    stored = await (await client.get("/api/conversation/c")).json()
    assert stored["runningTurn"] is None
    assert stored["messages"][-1]["content"].startswith("w0 ")


async def test_a_reader_coming_back_inside_the_grace_keeps_the_turn_alive(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(resume_grace_seconds=0.3)
    upstream.add(slow_text(40, 0.02))
    first = reader(await post(client, "go on", "c"))
    await first.next()
    first.response.close()
    await asyncio.sleep(0.1)

    back = reader(await join(client, "c", **{"Last-Event-ID": first.ids[0]}))
    rest = await back.rest()

    assert rest[-1]["type"] == "completion"
    assert rest[-1]["finishReason"] == "stop"  # it ran to the end
    assert "".join(e["content"] for e in rest if e["type"] == "text").endswith("w39 ")


# --- turns one at a time, regenerate, the list --------------------------------------------------


async def test_turns_of_one_conversation_are_numbered_and_never_interleave(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(slow_text(5, 0.02), text_reply("second"))

    first, second = await asyncio.gather(
        stream(client, "one", conversationId="c"), stream(client, "two", conversationId="c")
    )

    assert first.events[-1]["turn"] == 1
    assert second.events[-1]["turn"] == 2
    assert b"id: 2:0\n" in second.raw
    stored = await (await client.get("/api/conversation/c")).json()
    roles = [(m["role"], m["content"]) for m in stored["messages"][1:]]
    assert roles == [
        ("user", "one"),
        ("assistant", "w0 w1 w2 w3 w4 "),
        ("user", "two"),
        ("assistant", "second"),
    ]
    assert stored["turns"] == 2


async def test_regenerate_replaces_the_last_turn(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(text_reply("first"), text_reply("bad"), text_reply("better"))
    await stream(client, "one", conversationId="c")
    await stream(client, "two", conversationId="c")

    again = await stream(client, "two, please", conversationId="c", regenerate=True)

    assert again.events[-1]["turn"] == 3
    assert [m["content"] for m in upstream.requests[-1]["messages"][1:]] == [
        "one",
        "first",
        "two, please",
    ]
    stored = await (await client.get("/api/conversation/c")).json()
    assert [m["content"] for m in stored["messages"][1:]] == [
        "one",
        "first",
        "two, please",
        "better",
    ]


async def test_the_conversation_list_pages_most_recent_first(
    client: Client, upstream: FakeUpstream
) -> None:
    for n in range(3):
        upstream.add(text_reply("ok"))
        await stream(client, f"message {n}", conversationId=f"c{n}")

    first = await (await client.get("/api/conversations", params={"limit": "2"})).json()
    second = await (
        await client.get("/api/conversations", params={"limit": "2", "before": first["next"]})
    ).json()
    bad_limit = await client.get("/api/conversations", params={"limit": "0"})
    bad_cursor = await client.get("/api/conversations", params={"before": "nonsense"})

    assert [c["conversationId"] for c in first["conversations"]] == ["c2", "c1"]
    assert [c["conversationId"] for c in second["conversations"]] == ["c0"]
    assert second["next"] is None
    item = first["conversations"][0]
    assert item["title"] == "message 2"
    assert item["turns"] == 1 and item["runningTurn"] is None
    assert item["createdAt"].endswith("Z")
    assert bad_limit.status == 400
    assert bad_cursor.status == 400


async def test_history_answers_with_metadata_and_artifacts(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Here: ", ARTIFACT))
    await stream(client, "write a.py", conversationId="c")

    stored = await (await client.get("/api/conversation/c")).json()

    assert set(stored) >= {
        "conversationId", "title", "createdAt", "updatedAt", "turns", "runningTurn", "messages",
    }  # fmt: skip
    assert stored["artifacts"] == [
        {
            "artifactId": "a",
            "artifactType": "code",
            "title": "a.py",
            "language": "python",
            "content": "print(1)",
            "turn": 1,
        }
    ]


# --- a turn that died with its process -----------------------------------------------------------


async def test_a_turn_that_died_with_its_process_tells_its_readers_interrupted(
    aiohttp_client: Any, tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = str(tmp_path / "chat.db")
    before = SqliteStore(path)
    await before.open()
    await before.begin_turn("anonymous", "c", "", "never answered")
    await before.close()  # no end: as if killed

    settings = make_settings(store_url=f"sqlite:///{path}", openrouter_base_url=upstream.base_url)
    client = await aiohttp_client(create_app(settings))
    stored = await (await client.get("/api/conversation/c")).json()
    resumed = await join(client, "c", **{"Last-Event-ID": "1:3"})
    raw = await resumed.read()

    assert stored["runningTurn"] is None
    assert b"id: 1:4\n" in raw
    assert parse_events(raw)[0]["code"] == "interrupted"
    upstream.add(text_reply("now I can"))
    assert (await stream(client, "again", conversationId="c")).text == "now I can"


async def test_a_queued_turn_waits_with_its_stream_open(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add([*slow_text(3, 0.1), Sleep(0.1)], text_reply("next"))
    first = reader(await post(client, "one", "c"))
    await first.next()

    second = await post(client, "two", "c")

    assert second.headers["X-Conversation-Id"] == "c"
    assert (await first.rest())[-1]["type"] == "completion"
    assert parse_events(await second.read())[-1]["turn"] == 2


async def test_health_is_503_with_a_reason_when_no_backend_can_answer(
    aiohttp_client: Any,
) -> None:
    settings = make_settings(openrouter_api_key="", backend="openrouter")
    client = await aiohttp_client(create_app(settings))

    response = await client.get("/health")
    body = await response.json()

    assert response.status == 503
    assert body["backend"] == "none"
    assert body["status"] == "unavailable"
    assert "no model backend" in body["reason"]


class SlowEndStore(MemoryStore):
    """A store whose end-of-turn write takes a while, as a busy disk's would."""

    async def end_turn(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.3)
        await super().end_turn(*args, **kwargs)


async def test_a_turn_stays_findable_while_its_end_is_stored_and_completes_only_after(
    aiohttp_client: Any, upstream: FakeUpstream
) -> None:
    settings = make_settings(openrouter_base_url=upstream.base_url)
    app = create_app(settings, store=SlowEndStore(ttl_seconds=60, max_conversations=10))
    client = await aiohttp_client(app)
    upstream.add(text_reply("all ", "done"))
    first = reader(await post(client, "go", "c"))
    await first.next()
    await first.next()  # the last text event: the end is being stored now

    resumed = await join(client, "c", **{"Last-Event-ID": first.ids[1]})
    rest = parse_events(await resumed.read())
    stored = await (await client.get("/api/conversation/c")).json()

    assert resumed.status == 200
    assert [e["type"] for e in rest] == ["completion"]
    # Whoever sees the completion finds the answer stored.
    assert stored["messages"][-1] == {"role": "assistant", "content": "all done"}
