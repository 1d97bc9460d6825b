"""Two `python app.py` processes on one real Redis: one service, whichever process answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import AppProcess, StartApp, parse_events
from tests.fake_upstream import FakeUpstream, paced, text_reply, tool_reply
from tests.redis_server import RedisServer
from tests.test_turns import Reader


@pytest.fixture
async def pair(start_app: StartApp, own_redis: RedisServer) -> tuple[AppProcess, AppProcess]:
    env = {"STORE_URL": own_redis.url, "LEASE_SECONDS": "2", "RESUME_GRACE_SECONDS": "10"}
    return await start_app(**env), await start_app(**env)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


def slow(n: int, seconds: float = 0.03) -> list[Any]:
    return paced(text_reply(*[f"w{i} " for i in range(n)]), seconds)


async def post(
    session: aiohttp.ClientSession, app: AppProcess, message: str, cid: str = "c"
) -> aiohttp.ClientResponse:
    body = {"message": message, "conversationId": cid}
    return await session.post(f"{app.url}/api/stream", json=body)


async def test_a_conversation_started_on_one_process_continues_on_the_other(
    pair: tuple[AppProcess, AppProcess], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    a, b = pair
    upstream.add(text_reply("Hello, Ada."), text_reply("You are Ada."))

    first = parse_events(await (await post(session, a, "I am Ada.")).read())
    second = parse_events(await (await post(session, b, "Who am I?")).read())
    listed = await (await session.get(f"{a.url}/api/conversations")).json()

    assert first[-1]["turn"] == 1 and second[-1]["turn"] == 2
    sent = [m["content"] for m in upstream.requests[-1]["messages"][1:]]
    assert sent == ["I am Ada.", "Hello, Ada.", "Who am I?"]
    assert [c["conversationId"] for c in listed["conversations"]] == ["c"]


async def test_resume_and_join_on_the_other_process_miss_nothing_and_repeat_nothing(
    pair: tuple[AppProcess, AppProcess], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    a, b = pair
    upstream.add(slow(40))
    first = Reader(await post(session, a, "count"))
    seen = [await first.next() for _ in range(4)]
    watcher = Reader(await session.get(f"{b.url}/api/conversation/c/stream"))
    first.response.close()

    headers = {"Last-Event-ID": first.ids[3]}
    resumed = Reader(await session.get(f"{b.url}/api/conversation/c/stream", headers=headers))
    rest = await resumed.rest()
    watched = await watcher.rest()

    everything = seen + rest
    assert [e["chunkIndex"] for e in everything] == list(range(len(everything)))
    assert everything[-1]["type"] == "completion"
    assert watched == everything  # the joiner on the other process saw it from the start
    text = "".join(e["content"] for e in everything if e["type"] == "text")
    assert text == "".join(f"w{i} " for i in range(40))


async def test_stop_on_the_other_process_aborts_the_upstream_within_a_second(
    pair: tuple[AppProcess, AppProcess], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    a, b = pair
    upstream.add(slow(500, 0.02))
    reader = Reader(await post(session, a, "go on"))
    await reader.next()

    asked = time.monotonic()
    answer = await (await session.post(f"{b.url}/api/conversation/c/stop")).json()
    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)

    assert answer == {"stopped": True, "turn": 1}
    assert upstream.disconnected_at is not None and upstream.disconnected_at - asked < 1.0
    assert (await reader.rest())[-1]["finishReason"] == "cancelled"
    stored = await (await session.get(f"{b.url}/api/conversation/c")).json()
    assert stored["runningTurn"] is None
    assert stored["messages"][-1]["content"].startswith("w0 ")


async def test_concurrent_turns_on_one_conversation_across_processes_run_one_at_a_time(
    pair: tuple[AppProcess, AppProcess], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    for n in range(10):
        upstream.add(paced(text_reply(f"answer {n}"), 0.01))

    async def one(n: int) -> list[dict[str, Any]]:
        return parse_events(await (await post(session, pair[n % 2], f"question {n}")).read())

    results = await asyncio.gather(*(one(n) for n in range(10)))
    stored = await (await session.get(f"{pair[0].url}/api/conversation/c")).json()

    assert sorted(r[-1]["turn"] for r in results) == list(range(1, 11))
    assert upstream.most_active == 1  # never two turns of one conversation upstream at once
    roles = [m["role"] for m in stored["messages"][1:]]
    assert roles == ["user", "assistant"] * 10
    for request in upstream.requests:
        # Every request carried a complete, alternating history ending with its question.
        history = [m["role"] for m in request["messages"][1:]]
        assert history == ["user", "assistant"] * (len(history) // 2) + ["user"]


async def test_a_killed_holder_frees_its_conversation_after_the_lease_and_readers_learn_it(
    pair: tuple[AppProcess, AppProcess], upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    a, b = pair
    upstream.add(slow(1000, 0.02))
    starter = Reader(await post(session, a, "go on"))
    await starter.next()
    watcher = Reader(await session.get(f"{b.url}/api/conversation/c/stream"))
    await watcher.next()

    a.process.kill()
    await a.process.wait()
    starter.response.close()
    killed = time.monotonic()
    terminal = (await asyncio.wait_for(watcher.rest(), 15))[-1]
    upstream.add(text_reply("back again"))
    after = parse_events(await (await post(session, b, "still there?")).read())

    assert terminal["type"] == "error"
    assert terminal["code"] == "interrupted"
    assert after[-1]["type"] == "completion"
    assert after[-1]["turn"] == 2
    assert time.monotonic() - killed < 12
    stored = await (await session.get(f"{b.url}/api/conversation/c")).json()
    assert [m["role"] for m in stored["messages"][1:]] == ["user", "user", "assistant"]


async def test_without_redis_requests_get_503_and_service_resumes_when_it_returns(
    pair: tuple[AppProcess, AppProcess],
    own_redis: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    a, _ = pair
    own_redis.stop()

    refused = await post(session, a, "hello?")
    health = await session.get(f"{a.url}/health")
    history = await session.get(f"{a.url}/api/conversation/c")
    refused_body, health_body = await refused.json(), await health.json()

    assert refused.status == 503
    assert refused_body["error"]["code"] == "store_unavailable"
    assert health.status == 503
    assert "store" in health_body["reason"]
    assert history.status == 503

    own_redis.start()
    upstream.add(text_reply("I am back."))
    again = parse_events(await (await post(session, a, "hello?")).read())
    assert again[-1]["type"] == "completion"


async def test_a_tool_call_started_on_one_process_is_approved_on_the_other(
    start_app: StartApp,
    own_redis: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    env = {"STORE_URL": own_redis.url, "APPROVAL_REQUIRED": "divide"}
    a, b = await start_app(**env), await start_app(**env)
    upstream.add(tool_reply(("t1", "divide", {"a": 84, "b": 2})), text_reply("42"))
    reader = Reader(await post(session, a, "84 / 2?"))
    while (await reader.next())["type"] != "tool_approval_required":
        pass

    body = {"toolId": "t1", "approved": True}
    answer = await session.post(f"{b.url}/api/conversation/c/approve", json=body)
    rest = await reader.rest()

    assert answer.status == 200
    assert [e["type"] for e in rest] == ["tool_executing", "tool_completed", "text", "completion"]
