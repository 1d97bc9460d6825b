"""Turns under random use: posts read to the end or left early, joins, resumes from ids seen
before, approvals of tool calls that wait for one, stops and deletes, on two conversations at
once, with short pauses between them, on one server with SQLite and on two servers sharing
Redis (each action sent to either). Every response a client opened must end, and whatever
happened:

- each reader's events are one turn's, numbered on from where it started without a gap, and a
  reader that read to the end got exactly one terminal event, last; each tool call ended once;
- two readers of the same turn got the same event at the same index;
- once all is quiet, no turn runs, and each conversation is either gone or has no running turn;
- nothing was logged as an error, and no request got a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import event as tally
from hypothesis import given
from hypothesis import strategies as st

from streamchat.appkeys import RUNNER
from streamchat.sse import SSEDecoder, SSEEvent
from streamchat.web import create_app
from tests.conftest import generated_cases, make_settings
from tests.fake_upstream import FakeUpstream, paced, text_reply, tool_reply
from tests.redis_server import RedisServer

IDS = ["c1", "c2"]
TERMINAL = ("completion", "error")
EXAMPLES = int(os.environ.get("TURN_EXAMPLES", "25"))

conversation = st.sampled_from(IDS)
posts = st.tuples(st.just("post"), conversation, st.none() | st.integers(0, 6))
approvals = st.tuples(st.just("approve"), conversation, st.integers(0, 1000), st.booleans())
actions = st.lists(
    st.tuples(
        st.integers(0, 1),  # which server, when two share the store
        st.one_of(
            posts,
            posts,
            st.tuples(st.just("join"), conversation),
            st.tuples(st.just("resume"), conversation, st.integers(0, 1000)),
            st.tuples(st.just("stop"), conversation),
            st.tuples(st.just("delete"), conversation),
            approvals,
            approvals,
            st.tuples(st.just("sleep"), st.integers(0, 40)),
        ),
    ),
    min_size=1,
    max_size=12,
)


@dataclass
class Read:
    """What one response showed: its events' ids and data, and whether it was read to its end."""

    kind: str
    cid: str
    generation: int  # how many deletes of the conversation came before it
    after: int = -1  # a resume's Last-Event-ID index
    status: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)
    left: bool = False
    # Deletes of the conversation before it ended: a post queued on the other server when its
    # conversation was deleted there begins the conversation anew, in the next generation.
    generation_at_end: int = -1


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="turn-property-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@generated_cases(EXAMPLES)
@given(script=actions)
def test_any_use_of_turns_leaves_every_reader_whole_and_nothing_running(
    script: list[tuple[int, tuple[Any, ...]]], folder: str
) -> None:
    _run(script, f"sqlite:///{folder}/{os.urandom(6).hex()}.db", servers=1)


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest) -> str:
    pytest.importorskip("redis", reason="the redis package is not installed")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@generated_cases(EXAMPLES)
@given(script=actions)
def test_two_servers_on_redis_leave_every_reader_whole_and_nothing_running(
    script: list[tuple[int, tuple[Any, ...]]], redis_url: str
) -> None:
    # Each action goes to one of two servers sharing the store: a turn read, joined, resumed,
    # stopped or deleted from the server that does not run it goes through Redis.
    _run(script, redis_url, servers=2)


def _run(script: list[tuple[int, tuple[Any, ...]]], store_url: str, servers: int) -> None:
    errors = ErrorLog()
    logging.getLogger("streamchat").addHandler(errors)
    try:
        asyncio.run(_play(script, store_url, servers))
    finally:
        logging.getLogger("streamchat").removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []


async def _read(
    response: aiohttp.ClientResponse,
    read: Read,
    leave_after: int | None,
    generation: dict[str, int],
) -> None:
    decoder = SSEDecoder()
    read.status = response.status
    try:
        async for chunk in response.content.iter_any():
            for item in decoder.feed(chunk):
                if isinstance(item, SSEEvent):
                    read.events.append((item.id or "", item.data))
                    if leave_after is not None and len(read.events) > leave_after:
                        read.left = True
                        return
    finally:
        read.generation_at_end = generation[read.cid]
        response.close()


async def _play(script: list[tuple[int, tuple[Any, ...]]], store_url: str, servers: int) -> None:
    upstream = FakeUpstream()
    await upstream.start()
    answer = paced(text_reply(*[f"w{i} " for i in range(12)]), 0.01)
    for n in range(len(script) + 2):
        # Every other turn first asks for `divide`, which waits for a person's approval.
        upstream.add(tool_reply((f"t{n}", "divide", {"a": 6, "b": 3})), answer, answer)
    app_settings = make_settings(
        openrouter_base_url=upstream.base_url,
        store_url=store_url,
        resume_grace_seconds=0.2,
        approval_required="divide",
        approval_timeout_seconds=0.5,
    )
    clients = [TestClient(TestServer(create_app(app_settings))) for _ in range(servers)]
    for one in clients:
        await one.start_server()
    # Conversation ids of this script's own: a Redis server outlives it.
    names = {cid: f"{cid}-{os.urandom(4).hex()}" for cid in IDS}
    reads: list[Read] = []
    readers: list[asyncio.Task[None]] = []
    generation = dict.fromkeys(IDS, 0)
    try:
        for which, action in script:
            client = clients[which % servers]
            kind = action[0]
            if kind == "sleep":
                await asyncio.sleep(action[1] / 1000)
                continue
            cid = action[1]
            read = Read(kind, cid, generation[cid])
            if kind == "post":
                body = {"message": "go", "conversationId": names[cid]}
                response = await client.post("/api/stream", json=body)
                readers.append(asyncio.create_task(_read(response, read, action[2], generation)))
            elif kind == "join":
                response = await client.get(f"/api/conversation/{names[cid]}/stream")
                readers.append(asyncio.create_task(_read(response, read, None, generation)))
            elif kind == "resume":
                seen = [
                    event_id
                    for r in reads
                    if r.cid == cid and r.generation == generation[cid]
                    for event_id, _ in r.events
                ]
                if not seen:
                    continue
                event_id = seen[action[2] % len(seen)]
                read.after = int(event_id.split(":")[1])
                response = await client.get(
                    f"/api/conversation/{names[cid]}/stream", headers={"Last-Event-ID": event_id}
                )
                readers.append(asyncio.create_task(_read(response, read, None, generation)))
            elif kind == "approve":
                waiting: list[str] = []
                for _ in range(10):  # a person answers what their screen shows
                    waiting = [
                        json.loads(data)["toolId"]
                        for r in reads
                        if r.cid == cid and r.generation == generation[cid]
                        for _, data in r.events
                        if '"type":"tool_approval_required"' in data
                    ]
                    if waiting:
                        break
                    await asyncio.sleep(0.02)
                if not waiting:
                    continue
                body = {"toolId": waiting[action[2] % len(waiting)], "approved": action[3]}
                response = await client.post(f"/api/conversation/{names[cid]}/approve", json=body)
                read.status = response.status
                tally(f"an approval answered {response.status}")
                response.close()
            elif kind == "stop":
                response = await client.post(f"/api/conversation/{names[cid]}/stop")
                read.status = response.status
                response.close()
            else:
                response = await client.delete(f"/api/conversation/{names[cid]}")
                read.status = response.status
                response.close()
                generation[cid] += 1
            reads.append(read)
            await asyncio.sleep(0)
        # Every response a client opened ends: a reader waiting for ever is a turn that never
        # told it how it ended.
        done, pending = await asyncio.wait(readers, timeout=10) if readers else (set(), set())
        assert not pending, [r for r in reads if r.kind in ("post", "join", "resume")]
        for task in done:
            task.result()
        runners = [one.app[RUNNER] for one in clients]
        for _ in range(100):
            if not any(len(runner) for runner in runners):
                break
            await asyncio.sleep(0.05)
        assert not any(len(runner) for runner in runners), "a turn runs with nobody reading"
        for cid in IDS:
            for one in clients:
                response = await one.get(f"/api/conversation/{names[cid]}")
                assert response.status in (200, 404)
                if response.status == 200:
                    assert (await response.json())["runningTurn"] is None
    finally:
        for one in clients:
            await one.close()
        await upstream.close()
    _check(reads)


def _check(reads: list[Read]) -> None:
    by_id: dict[tuple[str, int, str], str] = {}
    for read in reads:
        assert read.status < 500, read
        # 204: nothing runs, or nothing is held after that id; 404: no such conversation (yet).
        if read.kind not in ("post", "join", "resume") or read.status in (204, 404):
            assert read.kind != "post" or read.status == 200, read
            continue
        assert read.status == 200, read
        turns = {event_id.split(":")[0] for event_id, _ in read.events}
        assert len(turns) <= 1, read
        indices = [int(event_id.split(":")[1]) for event_id, _ in read.events]
        first = read.after + 1 if read.kind == "resume" else 0
        assert indices == list(range(first, first + len(indices))), read
        kinds = [data.split('"type":"', 1)[1].split('"', 1)[0] for _, data in read.events]
        if not read.left:
            assert kinds and kinds[-1] in TERMINAL, read
        assert sum(kind in TERMINAL for kind in kinds) <= 1, read
        outcomes = [
            json.loads(data)["toolId"]
            for _, data in read.events
            if '"type":"tool_completed"' in data or '"type":"tool_error"' in data
        ]
        assert len(outcomes) == len(set(outcomes)), read  # each call ends once
        if read.generation_at_end != read.generation:
            continue  # its turn may be of either conversation: the old one or the new
        for event_id, data in read.events:
            if event_id.startswith("0:"):
                continue  # a turn stopped while it queued never had a number: each its own
            key = (read.cid, read.generation, event_id)
            assert by_id.setdefault(key, data) == data, (key, read)
