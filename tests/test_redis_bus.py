"""The Redis mirror of running turns' logs, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamchat.appkeys import RUNNER
from streamchat.eventlog import TurnLog
from streamchat.events import Completion, TextChunk
from streamchat.stores import redis_bus
from streamchat.stores.redis_bus import RedisEventBus
from tests.conftest import MakeClient
from tests.fake_upstream import FakeUpstream, paced, text_reply
from tests.redis_server import RedisServer
from tests.test_turns import Reader

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the redis extra is not installed")


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisEventBus]:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    bus = RedisEventBus(client, retention_seconds=60, prefix=f"t{secrets.token_hex(4)}:")
    yield bus
    await bus.close()


def turn_log(conversation_id: str) -> TurnLog:
    log = TurnLog("me", conversation_id)
    log.turn = 1
    return log


async def entries(bus: RedisEventBus, log: TurnLog) -> list[tuple[str, list[dict[str, Any]]]]:
    key = bus.turn_key(log.owner, log.conversation_id, log.turn)
    found: Any = await bus._client.xrange(key)
    return [(entry_id.decode(), json.loads(fields[b"e"])) for entry_id, fields in found]


async def test_paced_turns_share_their_events_in_few_entries_each_event_once_in_order(
    bus: RedisEventBus,
) -> None:
    logs = [turn_log(f"c{n}") for n in range(20)]
    mirrors = [asyncio.create_task(bus.mirror(log)) for log in logs]
    for step in range(60):  # 60 tokens a turn, 5 ms apart: about 6 flushes' worth
        for log in logs:
            log.append([TextChunk(f"t{step} ")])
        await asyncio.sleep(0.005)
    key = bus.turn_key("me", "c0", 1)
    alive_while_running = await bus._client.exists(key + ":alive")
    for log in logs:
        log.append([Completion("stop", "m", None, log.conversation_id, None, 1)])
        log.close()
    await asyncio.wait_for(asyncio.gather(*mirrors), 5)

    assert alive_while_running == 1
    for log in logs:
        found = await entries(bus, log)
        indexes = [wire["chunkIndex"] for _, batch in found for wire in batch]
        assert indexes == list(range(61))
        assert found[-1][1][-1]["type"] == "completion"
        # Each entry's id is the index after its last event: a resume reads from there.
        assert all(entry_id == f"0-{batch[-1]['chunkIndex'] + 1}" for entry_id, batch in found)
        assert len(found) < 20  # far fewer entries than events: one a flush, not one a token
    assert await bus._client.exists(key + ":alive") == 0
    assert 0 < await bus._client.pttl(key) <= 60_000


async def test_a_flush_of_more_turns_than_one_call_takes_goes_in_several(
    bus: RedisEventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of the flush script carries at most FLUSH_MIRRORS turns: every turn's events
    still reach its own stream, each once and in order."""
    monkeypatch.setattr(redis_bus, "FLUSH_MIRRORS", 2)
    logs = [turn_log(f"many{n}") for n in range(5)]
    mirrors = [asyncio.create_task(bus.mirror(log)) for log in logs]
    for step in range(12):
        for n, log in enumerate(logs):
            if step % (n + 1) == 0:  # turns of different lengths, so the calls differ
                log.append([TextChunk(f"{log.conversation_id}:{step} ")])
        await asyncio.sleep(0.01)
    for log in logs:
        log.append([Completion("stop", "m", None, log.conversation_id, None, 1)])
        log.close()
    await asyncio.wait_for(asyncio.gather(*mirrors), 5)

    for log in logs:
        found = [wire for _, batch in await entries(bus, log) for wire in batch]
        assert [w["chunkIndex"] for w in found] == list(range(len(log.events)))
        texts = [w["content"] for w in found if w["type"] == "text"]
        assert texts and all(t.startswith(log.conversation_id + ":") for t in texts)


async def test_a_quiet_running_turn_keeps_its_liveness_key(
    bus: RedisEventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn that sends nothing for a while (a long tool, an approval) is still running: the
    flusher refreshes its liveness key without an event to carry it."""
    monkeypatch.setattr(redis_bus, "ALIVE_SECONDS", 0.3)
    log = turn_log("quiet")
    mirror = asyncio.create_task(bus.mirror(log))
    log.append([TextChunk("thinking")])
    key = bus.turn_key("me", "quiet", 1) + ":alive"
    seen = []
    for _ in range(8):  # 1.2 s: four times the key's lifetime
        await asyncio.sleep(0.15)
        seen.append(await bus._client.exists(key))
    log.append([Completion("stop", "m", None, "quiet", None, 1)])
    log.close()
    await asyncio.wait_for(mirror, 5)

    assert seen == [1] * 8
    assert await bus._client.exists(key) == 0


async def test_an_entry_redis_refuses_is_that_turns_alone_and_goes_later(
    bus: RedisEventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turns' entries go in one command; one that Redis refuses (its key holds something
    else) leaves the others stored, and is sent whole, in order, once Redis takes it."""
    monkeypatch.setattr(redis_bus, "RETRY_SECONDS", 0.1)
    blocked, fine = turn_log("blocked"), turn_log("fine")
    blocked_key = bus.turn_key("me", "blocked", 1)
    await bus._client.set(blocked_key, "not a stream")
    mirrors = [asyncio.create_task(bus.mirror(log)) for log in (blocked, fine)]
    for step in range(10):
        for log in (blocked, fine):
            log.append([TextChunk(f"t{step} ")])
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert [w["chunkIndex"] for _, b in await entries(bus, fine) for w in b] == list(range(10))
    assert await bus._client.type(blocked_key) == b"string"  # refused, nothing lost yet

    await bus._client.delete(blocked_key)
    for log in (blocked, fine):
        log.append([Completion("stop", "m", None, log.conversation_id, None, 1)])
        log.close()
    await asyncio.wait_for(asyncio.gather(*mirrors), 5)

    for log in (blocked, fine):
        found = await entries(bus, log)
        assert [w["chunkIndex"] for _, b in found for w in b] == list(range(11))
        assert all(entry_id == f"0-{b[-1]['chunkIndex'] + 1}" for entry_id, b in found)


@pytest.mark.parametrize("after_the_loss", ["nothing", "the end", "more text and the end"])
async def test_a_flush_whose_answer_was_lost_adds_no_event_twice(
    bus: RedisEventBus, monkeypatch: pytest.MonkeyPatch, after_the_loss: str
) -> None:
    """The connection drops after Redis ran a flush, before its answer came: the next flush
    finds what landed and sends only the rest (nothing, if it was all there)."""
    monkeypatch.setattr(redis_bus, "RETRY_SECONDS", 0.1)
    flusher = bus._flusher
    script = flusher._script
    lost: list[int] = []

    async def answer_lost(**kwargs: Any) -> Any:
        reply = await script(**kwargs)
        if not lost:
            lost.append(len(kwargs["keys"]))
            raise ConnectionError("the connection dropped before the answer")
        return reply

    monkeypatch.setattr(flusher, "_script", answer_lost)
    log = turn_log("lost")
    end = Completion("stop", "m", None, "lost", None, 1)
    mirror = asyncio.create_task(bus.mirror(log))
    log.append([TextChunk(f"t{n} ") for n in range(5)])
    if after_the_loss == "nothing":
        log.append([end])
        log.close()
    await asyncio.sleep(0.08)  # the first flush ran, and its answer was lost
    assert lost
    if after_the_loss == "more text and the end":
        log.append([TextChunk(f"t{n} ") for n in range(5, 9)])
    if after_the_loss != "nothing":
        log.append([end])
        log.close()
    await asyncio.wait_for(mirror, 5)

    found = await entries(bus, log)
    indexes = [wire["chunkIndex"] for _, batch in found for wire in batch]
    assert indexes == list(range(len(log.events)))
    assert found[-1][1][-1]["type"] == "completion"


async def test_a_resume_elsewhere_before_the_turns_first_flush_waits_for_its_events(
    make_client: MakeClient, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """A process with a busy loop may not have shared a running turn's first events (nor its
    liveness key) when a client reconnects to another process: the conversation says the turn
    runs, so the other process follows its stream from the client's id instead of a 204."""
    one = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    other = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    flusher = one.app[RUNNER].bus._flusher
    script = flusher._script
    held = asyncio.Event()

    async def busy_at_first(**kwargs: Any) -> Any:
        if not held.is_set():  # the first flush waits, and every later one behind it
            held.set()
            await asyncio.sleep(0.8)
        return await script(**kwargs)

    flusher._script = busy_at_first
    cid = f"late-{secrets.token_hex(4)}"
    upstream.add(paced(text_reply(*[f"w{n} " for n in range(8)]), 0.1))
    started = await one.post("/api/stream", json={"message": "hi", "conversationId": cid})
    first = Reader(started)
    seen = [await first.next() for _ in range(3)]
    started.close()
    assert await other.app[RUNNER].bus.remote("anonymous", cid, 1) is None  # nothing shared yet

    resumed = await other.get(
        f"/api/conversation/{cid}/stream", headers={"Last-Event-ID": first.ids[-1]}
    )
    assert resumed.status == 200
    rest = await Reader(resumed).rest()

    indexes = [e["chunkIndex"] for e in seen + rest]
    assert indexes == list(range(len(indexes)))
    assert rest[-1]["type"] == "completion"
    assert "".join(e["content"] for e in seen + rest if e["type"] == "text") == "".join(
        f"w{n} " for n in range(8)
    )


NEW_ANSWER = [f"n{n} " for n in range(6)]


async def answer(upstream: FakeUpstream, client: Any, cid: str) -> None:
    """A first turn of the conversation, read to its end."""
    upstream.add(text_reply("the old answer, which is long"))
    old = await client.post("/api/stream", json={"message": "first", "conversationId": cid})
    await Reader(old).rest()


async def joined_from(
    upstream: FakeUpstream, runs: Any, joins: Any, cid: str
) -> list[dict[str, Any]]:
    """A new turn of the conversation run by one server, as a join on the other reads it."""
    upstream.add(paced(text_reply(*NEW_ANSWER), 0.1))
    started = await runs.post("/api/stream", json={"message": "again", "conversationId": cid})
    first = Reader(started)
    await first.next()
    joined = await joins.get(f"/api/conversation/{cid}/stream")
    assert joined.status == 200
    seen = await Reader(joined).rest()
    await first.rest()
    return seen


async def test_a_conversation_deleted_and_begun_again_shares_its_new_turns_not_the_old(
    make_client: MakeClient, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """Turn numbers start at 1 again in a new conversation of a deleted one's id: the old turns'
    event streams must be gone, or another process would read them for the new turns (whose own
    events Redis refused, as their ids came after the old ones')."""
    one = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    other = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    cid = f"again-{secrets.token_hex(4)}"
    await answer(upstream, one, cid)
    await asyncio.sleep(redis_bus.FLUSH_SECONDS * 3)  # its stream holds the whole turn
    assert (await other.delete(f"/api/conversation/{cid}")).status == 200

    seen = await joined_from(upstream, one, other, cid)

    assert "".join(e["content"] for e in seen if e["type"] == "text") == "".join(NEW_ANSWER)
    assert seen[-1]["type"] == "completion"


async def test_a_delete_elsewhere_makes_every_process_forget_the_turns_it_kept(
    make_client: MakeClient, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """The process that ran a turn keeps its log for late readers; a delete on another process
    must reach it, or a join there of the new conversation's turn 1 got the old turn 1."""
    one = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    other = await make_client(store_url=redis_server.url, resume_grace_seconds=5.0)
    cid = f"kept-{secrets.token_hex(4)}"
    await answer(upstream, other, cid)
    kept = other.app[RUNNER].retained
    assert kept.get("anonymous", cid, 1) is not None

    assert (await one.delete(f"/api/conversation/{cid}")).status == 200
    for _ in range(100):
        if kept.get("anonymous", cid, 1) is None:
            break
        await asyncio.sleep(0.02)
    assert kept.get("anonymous", cid, 1) is None

    seen = await joined_from(upstream, one, other, cid)

    assert "".join(e["content"] for e in seen if e["type"] == "text") == "".join(NEW_ANSWER)
