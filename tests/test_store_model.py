"""Every store gives the same answers to the same writes: random sequences of turns (text, tool
rounds, artifacts, every outcome, regenerate) and deletes, from two owners on a few ids, run on
memory, SQLite and Redis side by side, with everything a client can read compared after each
step: the conversation, its stored size, and the list paged two at a time. On Redis also as two
processes share it: two stores on one key prefix, taking turns to write while the other reads.

The stores' own tests (`test_stores.py`) check each behaviour by example; this one looks for the
sequences nobody wrote down. Redis joins when `redis-server` is installed (skipped otherwise,
with the reason printed by `tests/conftest.py`'s fixture).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamchat.conversations import Turn
from streamchat.events import ToolCall
from streamchat.stores import Store
from streamchat.stores.base import Outcome
from streamchat.stores.memory import MemoryStore
from streamchat.stores.sqlite import SqliteStore
from tests.conftest import generated_cases
from tests.redis_server import RedisServer, redis_server_path
from tests.test_stores import Clock

OWNERS = ["ann", "bob"]
IDS = ["c1", "c2", "c3"]
SYSTEM = "be brief"

# Text as clients and models send it: any character but a lone surrogate in what a user types
# (the request parser refuses those); the model's text may carry one (an upstream's `\ud800`).
typed = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
streamed = st.text(max_size=12)


@dataclass(frozen=True)
class TurnOp:
    owner: str
    conversation_id: str
    message: str
    regenerate: bool
    before_round: str  # the text streamed before the tool round (when there is one)
    round: tuple[tuple[str, str], ...]  # (arguments, result) per tool call; () for none
    answer: str
    artifacts: tuple[str, ...]  # artifact contents
    outcome: Outcome


@dataclass(frozen=True)
class DeleteOp:
    owner: str
    conversation_id: str


turns = st.builds(
    TurnOp,
    st.sampled_from(OWNERS),
    st.sampled_from(IDS),
    typed,
    st.booleans(),
    streamed,
    st.lists(st.tuples(streamed, streamed), max_size=2).map(tuple),
    streamed,
    st.lists(streamed, max_size=2).map(tuple),
    st.sampled_from(["completed", "cancelled", "error", "interrupted"]),
)
deletes = st.builds(DeleteOp, st.sampled_from(OWNERS), st.sampled_from(IDS))


@dataclass(frozen=True)
class OverlapOp:
    """`inner` runs whole while `outer` is under way (begun, its round stored, not ended): two
    conversations' turns at once, or a delete of the conversation whose turn runs."""

    outer: TurnOp
    inner: TurnOp | DeleteOp


overlaps = st.builds(OverlapOp, turns, st.one_of(turns, deletes))
operations = st.lists(st.one_of(turns, turns, turns, deletes, overlaps), min_size=1, max_size=10)


@pytest.fixture(scope="session")
def redis_or_none(request: pytest.FixtureRequest) -> RedisServer | None:
    if redis_server_path() is None:
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@pytest.fixture(scope="module")
def folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="store-model-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _stores(folder: str, redis: RedisServer | None) -> dict[str, list[Store]]:
    """Each store, as the processes that use it: two for "redis, two processes", which share
    one key prefix (and one clock) and take turns writing, the other one reading."""
    stores: dict[str, list[Store]] = {
        "memory": [MemoryStore(ttl_seconds=3600, max_conversations=100, clock=Clock())],
        "sqlite": [SqliteStore(f"{folder}/{uuid.uuid4().hex}.db", clock=Clock())],
    }
    if redis is not None:
        from streamchat.stores.redis import RedisStore

        stores["redis"] = [RedisStore(redis.url, prefix=f"m-{uuid.uuid4().hex}:", clock=Clock())]
        prefix, clock = f"m-{uuid.uuid4().hex}:", Clock()
        stores["redis, two processes"] = [
            RedisStore(redis.url, prefix=prefix, clock=clock) for _ in range(2)
        ]
    return stores


async def _apply(
    store: Store, op: TurnOp | DeleteOp | OverlapOp, step: int, other: Store | None = None
) -> Any:
    """The operation's own answer: what a caller of the store gets back (an overlap's inner
    operation on `other`, another process's store of the same data, when there is one)."""
    other = other or store
    if isinstance(op, DeleteOp):
        return await store.delete(op.owner, op.conversation_id)
    if isinstance(op, OverlapOp):
        inner, outer = op.inner, op.outer
        same = (inner.owner, inner.conversation_id) == (outer.owner, outer.conversation_id)
        if same and isinstance(inner, TurnOp):  # one conversation's turns wait for each other
            return [await _turn(store, outer, step), await _turn(other, inner, step + 1000)]
        inside = []

        async def meanwhile() -> None:
            inside.append(await _read(other))  # the outer turn shows as running
            inside.append(await _apply(other, inner, step + 1000))

        return [await _turn(store, outer, step, meanwhile), inside]
    return await _turn(store, op, step)


async def _turn(
    store: Store, op: TurnOp, step: int, meanwhile: Callable[[], Awaitable[None]] | None = None
) -> Any:
    async with store.lock(op.owner, op.conversation_id):
        begun = await store.begin_turn(
            op.owner, op.conversation_id, SYSTEM, op.message, regenerate=op.regenerate
        )
        turn = Turn(store, op.owner, op.conversation_id, begun)
        answer = (begun.number, begun.history, sorted(begun.artifact_ids))
        if op.round:
            turn.add_text(op.before_round)
            calls = [
                ToolCall(f"call-{step}-{n}", "add", arguments)
                for n, (arguments, _) in enumerate(op.round)
            ]
            await turn.add_tool_round(calls, [result for _, result in op.round])
        if meanwhile is not None:
            await meanwhile()
        turn.add_text(op.answer)
        for n, content in enumerate(op.artifacts):
            turn.artifacts.append(
                {"artifactId": f"a-{step}-{n}", "title": f"t{n}", "content": content,
                 "turn": begun.number}
            )  # fmt: skip
        await turn.end(op.outcome)
        return answer


async def _read(store: Store) -> Any:
    """Everything a client can read back, with the times left out (each store has its clock)."""
    seen: dict[str, Any] = {}
    for owner in OWNERS:
        listed, cursor = [], None
        while True:
            infos, cursor = await store.recent(owner, 2, cursor)
            listed += [(i.id, i.title, i.turns, i.running_turn) for i in infos]
            if cursor is None:
                break
        seen[f"{owner}: list"] = listed
        for conversation_id in IDS:
            stored = await store.load(owner, conversation_id)
            seen[f"{owner}/{conversation_id}"] = None if stored is None else (
                stored.title, stored.turns, stored.running_turn, stored.interrupted_turn,
                stored.messages, stored.artifacts, stored.created_at <= stored.updated_at,
            )  # fmt: skip
            seen[f"{owner}/{conversation_id} bytes"] = await store.stored_bytes(
                owner, conversation_id
            )
    return seen


def _tool_calls_always_with_their_results(messages: list[Any]) -> bool:
    for index, message in enumerate(messages):
        if message.get("tool_calls"):
            ids = [call["id"] for call in message["tool_calls"]]
            after = [m.get("tool_call_id") for m in messages[index + 1 : index + 1 + len(ids)]]
            if after != ids:
                return False
    return True


# STORE_MODEL_EXAMPLES=2000 runs a deeper search.
EXAMPLES = int(os.environ.get("STORE_MODEL_EXAMPLES", "60"))


@generated_cases(EXAMPLES)
@given(ops=operations)
def test_every_store_answers_the_same_sequence_of_writes_alike(
    ops: list[TurnOp | DeleteOp | OverlapOp], folder: str, redis_or_none: RedisServer | None
) -> None:
    async def run() -> None:
        stores = _stores(folder, redis_or_none)
        every = [store for group in stores.values() for store in group]
        for store in every:
            await store.open()
        try:
            for step, op in enumerate(ops):
                answers = {
                    name: await _apply(
                        group[step % len(group)], op, step, group[(step + 1) % len(group)]
                    )
                    for name, group in stores.items()
                }
                reads = {
                    name: await _read(group[(step + 1) % len(group)])
                    for name, group in stores.items()
                }
                for name in stores:
                    assert answers[name] == answers["memory"], (step, op, name)
                    for key, value in reads[name].items():
                        assert value == reads["memory"][key], (step, op, name, key)
                for key, value in reads["memory"].items():
                    if value is not None and not key.endswith(("list", "bytes")):
                        assert _tool_calls_always_with_their_results(value[4]), (step, key)
        finally:
            for store in every:
                await store.close()

    asyncio.run(run())
