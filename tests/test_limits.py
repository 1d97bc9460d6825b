"""Per-owner limits and ALLOWED_MODELS: refused before any stream, counted across processes."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from streamchat.errors import ApiError
from streamchat.limits import (
    DAY,
    MINUTE,
    PICKER_MODELS,
    Limiter,
    MemoryCounters,
    Quotas,
    Spent,
    make_limiter,
    refusal,
)
from streamchat.settings import Settings, SettingsError
from streamchat.stores.redis_limits import RedisCounters
from streamchat.turns import TurnRequest
from streamchat.web import create_app
from tests.conftest import ROOT, StartApp, make_settings, parse_events, stream
from tests.fake_upstream import USAGE, FakeUpstream, HttpError, text_reply, tool_reply
from tests.redis_server import RedisServer
from tests.test_turns import Reader, slow_text

Client = TestClient[Any, Any]
# 20 seconds into a minute, at the start of a UTC day.
START = 19_700 * DAY + 20.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limited(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, clock: Clock
) -> AsyncIterator[Any]:
    """Makes an app with these settings whose limiter reads the test's clock."""

    async def make(**overrides: Any) -> tuple[Client, Limiter]:
        settings = make_settings(openrouter_base_url=upstream.base_url, **overrides)
        limiter = make_limiter(settings, clock=clock)
        client = await aiohttp_client(create_app(settings, limiter=limiter))
        return client, limiter

    yield make


def refused_error(reply: Any) -> dict[str, Any]:
    assert reply.status == 429, reply.raw
    error: dict[str, Any] = json.loads(reply.raw)["error"]
    return error


def request(owner: str = "anonymous", cid: str = "c") -> TurnRequest:
    return TurnRequest(owner, cid, "hi", "m")


# --- each refusal, before any upstream request ------------------------------------------------


async def test_turns_over_the_minute_are_refused_until_the_next_minute(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, _ = await limited(limit_turns_per_minute=2)

    first, second = await stream(client, "one"), await stream(client, "two")
    third = await stream(client, "three")

    assert first.status == second.status == 200
    error = refused_error(third)
    assert third.headers["Retry-After"] == "40"  # 20 s into the minute
    assert third.headers["Content-Type"].startswith("application/json")
    assert error["code"] == "quota_exceeded"
    assert "2 a minute" in error["message"]
    assert len(upstream.requests) == 2  # the refused turn never reached the upstream

    clock.now += 39
    assert (await stream(client, "still no")).status == 429
    clock.now += 1
    assert (await stream(client, "a new minute")).status == 200


async def test_a_turn_over_the_concurrent_limit_is_refused_while_another_runs(
    limited: Any, upstream: FakeUpstream
) -> None:
    client, limiter = await limited(limit_concurrent_turns=1)
    upstream.add(slow_text(20, 0.02))
    running = Reader(
        await client.post("/api/stream", json={"message": "long", "conversationId": "a"})
    )
    await running.next()

    other = await stream(client, "meanwhile", conversationId="b")

    error = refused_error(other)
    assert other.headers["Retry-After"] == "5"
    assert error["code"] == "quota_exceeded"
    assert "1 at once" in error["message"]
    assert len(upstream.requests) == 1
    assert (await running.rest())[-1]["type"] == "completion"
    # Counted out before its terminal event was sent: the next turn is let in at once.
    assert (await stream(client, "now", conversationId="b")).status == 200
    assert (await limiter.counters.spent("anonymous", START)).running == 0


async def test_tokens_are_counted_from_the_upstreams_usage_until_the_day_rolls_over(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, limiter = await limited(limit_tokens_per_day=40)
    # A turn of two rounds (a tool call, then the answer) counts both rounds' usage.
    add = {"a": 1, "b": 2}
    upstream.add(tool_reply(("call-1", "add", add)), text_reply("3"), text_reply("again"))

    assert (await stream(client, "1 + 2?")).status == 200
    assert (await limiter.counters.spent("anonymous", clock.now)).tokens == 30
    assert (await stream(client, "again")).status == 200  # 30 < 40: it may run, and it counts
    refused = await stream(client, "and again")

    error = refused_error(refused)
    assert error["code"] == "quota_exceeded"
    assert "45 tokens today" in error["message"]
    assert refused.headers["Retry-After"] == str(DAY - 20)  # until midnight UTC
    assert len(upstream.requests) == 3
    clock.now += DAY - 20
    assert (await stream(client, "a new day")).status == 200


async def test_cost_is_counted_from_the_upstreams_usage_and_refused_as_budget_exceeded(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, limiter = await limited(limit_cost_per_day=0.00015)

    assert (await stream(client, "one")).status == 200
    assert (await stream(client, "two")).status == 200
    refused = await stream(client, "three")

    spent = await limiter.counters.spent("anonymous", clock.now)
    assert spent.cost == pytest.approx(2 * USAGE["cost"])
    error = refused_error(refused)
    assert error["code"] == "budget_exceeded"
    assert "$0.0002" in error["message"]
    assert refused.headers["Retry-After"] == str(DAY - 20)
    assert len(upstream.requests) == 2


async def test_a_failed_turn_counts_the_rounds_it_reported_and_frees_its_place(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, limiter = await limited(limit_concurrent_turns=1, limit_tokens_per_day=1000)
    upstream.add(
        tool_reply(("call-1", "add", {"a": 1, "b": 2})),
        HttpError(400, {"error": {"message": "bad request", "code": 400}}),
    )

    failed = await stream(client, "1 + 2?")

    assert failed.types[-1] == "error"
    spent = await limiter.counters.spent("anonymous", clock.now)
    assert (spent.running, spent.tokens) == (0, USAGE["total_tokens"])  # the tool round's
    assert spent.cost == USAGE["cost"]


async def test_a_stopped_turn_frees_its_place_and_counts_nothing_unreported(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, limiter = await limited(limit_concurrent_turns=1, limit_tokens_per_day=1000)
    upstream.add(slow_text(200, 0.02))
    running = Reader(
        await client.post("/api/stream", json={"message": "go", "conversationId": "c"})
    )
    await running.next()

    await client.post("/api/conversation/c/stop")

    assert (await running.rest())[-1]["finishReason"] == "cancelled"
    assert await limiter.counters.spent("anonymous", clock.now) == Spent()


async def test_the_longest_wait_is_the_one_told() -> None:
    quotas = Quotas(turns_per_minute=1, concurrent_turns=1, tokens_per_day=10, cost_per_day=1.0)
    now = START

    busy = refusal(quotas, Spent(turns=0, running=1), now)
    minute = refusal(quotas, Spent(turns=1, running=1), now)
    day = refusal(quotas, Spent(turns=1, running=1, tokens=10, cost=1.0), now)

    assert refusal(quotas, Spent(tokens=9, cost=0.99), now) is None
    assert busy is not None and busy.headers == {"Retry-After": "5"}
    assert minute is not None and minute.headers == {"Retry-After": "40"}
    assert day is not None and day.code == "budget_exceeded"
    assert day.headers == {"Retry-After": str(DAY - 20)}


async def test_with_no_limit_set_nothing_is_counted(limited: Any, clock: Clock) -> None:
    client, limiter = await limited()

    for n in range(5):
        assert (await stream(client, f"turn {n}")).status == 200

    assert not limiter.counting
    assert await limiter.counters.spent("anonymous", clock.now) == Spent()


async def test_a_count_that_fails_never_breaks_the_turn(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(MemoryCounters):
        async def release(
            self, owner: str, turn_id: str, tokens: int, cost: float, now: float
        ) -> None:
            raise RuntimeError("the counter broke")

    settings = make_settings(openrouter_base_url=upstream.base_url, limit_turns_per_minute=10)
    limiter = Limiter(Quotas.from_settings(settings), Broken())
    client = await aiohttp_client(create_app(settings, limiter=limiter))

    with caplog.at_level(logging.ERROR, logger="streamchat.turns"):
        reply = await stream(client, "hello")

    assert reply.types[-1] == "completion"
    assert "could not be reported" in caplog.text


# --- owners, and the memory counters' bound ------------------------------------------------


async def test_two_owners_are_counted_separately() -> None:
    clock = Clock()
    limiter = Limiter(Quotas(turns_per_minute=1), MemoryCounters(), clock=clock)

    await limiter.admit(request("alice"))
    with pytest.raises(ApiError) as refused:
        await limiter.admit(request("alice"))
    await limiter.admit(request("bob"))

    assert refused.value.status == 429


async def test_the_memory_counters_drop_owners_whose_windows_have_emptied() -> None:
    counters = MemoryCounters()
    quotas = Quotas(turns_per_minute=5, concurrent_turns=5)
    assert await counters.admit("yesterday", "t1", quotas, START) is None
    await counters.release("yesterday", "t1", 100, 0.5, START)

    await counters.admit("today", "t2", quotas, START + DAY)

    assert len(counters) == 1


async def test_over_their_bound_the_memory_counters_drop_an_owner_with_nothing_running() -> None:
    counters = MemoryCounters(max_owners=2)
    quotas = Quotas(turns_per_minute=5, concurrent_turns=5)
    assert await counters.admit("running", "t1", quotas, START) is None
    assert await counters.admit("finished", "t2", quotas, START) is None
    await counters.release("finished", "t2", 0, 0.0, START)

    await counters.admit("newcomer", "t3", quotas, START)

    assert len(counters) == 2
    assert (await counters.spent("running", START)).running == 1  # kept: its turn runs
    assert len(counters) == 2  # and "finished" was the one forgotten


# --- ALLOWED_MODELS ---------------------------------------------------------------------------


async def test_a_model_not_allowed_is_refused_before_any_upstream_request(
    limited: Any, upstream: FakeUpstream
) -> None:
    client, _ = await limited(allowed_models="google/*, openai/gpt-4o-mini")

    refused = await stream(client, "hi", model="openai/gpt-4o")
    pattern = await stream(client, "hi", model="google/gemini-2.0-flash-001")
    named = await stream(client, "hi", model="openai/gpt-4o-mini")
    default = await stream(client, "hi")

    assert refused.status == 400
    error = json.loads(refused.raw)["error"]
    assert error["code"] == "model_not_allowed"
    assert error["param"] == "model"
    assert "google/*, openai/gpt-4o-mini" in error["message"]
    assert pattern.status == named.status == default.status == 200
    assert [r["model"] for r in upstream.requests] == [
        "google/gemini-2.0-flash-001",
        "openai/gpt-4o-mini",
        "google/gemini-2.5-flash",
    ]


async def test_health_lists_the_default_then_only_allowed_models(limited: Any) -> None:
    everything, _ = await limited()
    some, _ = await limited(allowed_models="openai/gpt-4o-mini,google/*,mistralai/mistral-small")

    listed_all = (await (await everything.get("/health")).json())["models"]
    listed_some = (await (await some.get("/health")).json())["models"]

    assert listed_all == list(PICKER_MODELS)
    assert listed_some == [
        "google/gemini-2.5-flash",  # the default
        "openai/gpt-4o-mini",
        "mistralai/mistral-small",  # named, so listable; a pattern only shows curated models
    ]


def test_start_up_refuses_a_default_model_that_allowed_models_does_not_allow() -> None:
    with pytest.raises(
        SettingsError, match=r"DEFAULT_MODEL google/gemini-2\.5-flash is not allowed"
    ):
        Settings.from_env({"ALLOWED_MODELS": "openai/*"})
    assert Settings.from_env({"ALLOWED_MODELS": "openai/*", "DEFAULT_MODEL": "openai/gpt-4o"})


async def test_app_py_says_in_one_line_why_it_will_not_start(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        cwd=tmp_path,
        env={"ALLOWED_MODELS": "openai/*", "PATH": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamchat: DEFAULT_MODEL"), lines


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"LIMIT_TURNS_PER_MINUTE": "-1"}, "LIMIT_TURNS_PER_MINUTE must not be negative"),
        ({"LIMIT_COST_PER_DAY": "nan"}, "LIMIT_COST_PER_DAY must be a finite number"),
        ({"LIMIT_TOKENS_PER_DAY": "lots"}, "LIMIT_TOKENS_PER_DAY must be a number"),
    ],
)
def test_bad_limits_name_the_variable(environ: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(environ)


# --- a delete while a turn is queued (one at a time, nothing lost) -----------------------------


async def test_delete_with_a_turn_queued_stops_both_and_the_conversation_starts_afresh(
    limited: Any, upstream: FakeUpstream, clock: Clock
) -> None:
    client, limiter = await limited(limit_concurrent_turns=2)
    upstream.add(slow_text(200, 0.02), text_reply("a fresh start"))
    body = {"message": "long", "conversationId": "c"}
    running = Reader(await client.post("/api/stream", json=body))
    await running.next()
    queued = Reader(await client.post("/api/stream", json={**body, "message": "queued"}))
    assert (await limiter.counters.spent("anonymous", clock.now)).running == 2

    deleted = await client.delete("/api/conversation/c")

    assert deleted.status == 200
    first, second = (await running.rest())[-1], (await queued.rest())[-1]
    assert (first["type"], first["finishReason"]) == ("completion", "cancelled")
    assert (second["type"], second["finishReason"]) == ("completion", "cancelled")
    assert (await client.get("/api/conversation/c")).status == 404
    # The queued turn never began, and still counted out.
    assert (await limiter.counters.spent("anonymous", clock.now)).running == 0
    again = await stream(client, "hello again", conversationId="c")
    assert again.text == "a fresh start"
    assert again.events[-1]["turn"] == 1
    stored = await (await client.get("/api/conversation/c")).json()
    assert [m["content"] for m in stored["messages"][1:]] == ["hello again", "a fresh start"]
    assert upstream.most_active == 1  # no turn ever ran beside another
    assert [r["messages"][-1]["content"] for r in upstream.requests] == ["long", "hello again"]


# --- Redis: one count for every process ---------------------------------------------------------


@pytest.fixture
async def redis_counters(redis_server: RedisServer) -> AsyncIterator[Any]:
    made: list[RedisCounters] = []
    prefix = f"test:{uuid.uuid4().hex}:"

    def make(**options: Any) -> RedisCounters:
        counters = RedisCounters(redis_server.url, prefix=prefix, **options)
        made.append(counters)
        return counters

    yield make
    for counters in made:
        await counters.close()


async def test_redis_counts_every_limit_and_two_processes_share_them(redis_counters: Any) -> None:
    a, b = redis_counters(), redis_counters()
    quotas = Quotas(turns_per_minute=3, concurrent_turns=2, tokens_per_day=100, cost_per_day=1.0)

    assert await a.admit("alice", "t1", quotas, START) is None
    assert await b.admit("alice", "t2", quotas, START) is None
    busy = await a.admit("alice", "t3", quotas, START)
    assert await b.admit("bob", "t4", quotas, START) is None  # another owner
    await a.release("alice", "t1", 60, 0.25, START + 1)
    await b.release("alice", "t2", 50, 0.5, START + 1)
    over = await a.admit("alice", "t5", quotas, START + 2)

    assert busy == Spent(turns=2, running=2, tokens=0, cost=0.0)
    assert over == Spent(turns=2, running=0, tokens=110, cost=0.75)
    assert await b.spent("alice", START + 2) == over
    assert await b.spent("alice", START + DAY) == Spent()  # a new day, a new minute


async def test_redis_forgets_the_running_turns_of_a_process_that_died(redis_counters: Any) -> None:
    alive, dead = redis_counters(running_expiry_seconds=60), redis_counters()
    quotas = Quotas(concurrent_turns=1)
    assert await dead.admit("alice", "t1", quotas, START) is None

    assert await alive.admit("alice", "t2", quotas, START + 59) is not None
    assert await alive.admit("alice", "t2", quotas, START + 61) is None


async def test_redis_renews_the_running_turns_of_a_live_process(redis_counters: Any) -> None:
    counters = redis_counters(running_expiry_seconds=1.5)
    await counters.open()
    quotas = Quotas(concurrent_turns=1)
    assert await counters.admit("alice", "t1", quotas, time.time()) is None

    await asyncio.sleep(3.5)  # more than twice the expiry: still counted, as it still runs

    assert await counters.admit("alice", "t2", quotas, time.time()) is not None
    await counters.release("alice", "t1", 0, 0.0, time.time())
    assert await counters.admit("alice", "t2", quotas, time.time()) is None


async def test_two_processes_on_redis_share_the_turns_a_minute(
    start_app: StartApp, own_redis: RedisServer, upstream: FakeUpstream
) -> None:
    env = {"STORE_URL": own_redis.url, "LIMIT_TURNS_PER_MINUTE": "3"}
    a, b = await start_app(**env), await start_app(**env)
    # The minute is the clock's: stay clear of its end, so all five turns fall in one.
    if MINUTE - time.time() % MINUTE < 15:
        await asyncio.sleep(MINUTE - time.time() % MINUTE + 0.5)

    async with aiohttp.ClientSession() as session:

        async def post(url: str, n: int) -> aiohttp.ClientResponse:
            body = {"message": f"turn {n}", "conversationId": f"c{n}"}
            return await session.post(f"{url}/api/stream", json=body)

        answered = [await post(app.url, n) for n, app in enumerate((a, b, a))]
        events = [parse_events(await response.read()) for response in answered]
        on_b, on_a = await post(b.url, 3), await post(a.url, 4)
        bodies = [await on_b.json(), await on_a.json()]

    assert [e[-1]["type"] for e in events] == ["completion"] * 3
    assert on_b.status == on_a.status == 429
    assert all(body["error"]["code"] == "quota_exceeded" for body in bodies)
    assert 1 <= int(on_b.headers["Retry-After"]) <= MINUTE
    assert len(upstream.requests) == 3
