"""The store protocol, run against every store: the same behaviour from memory, SQLite and Redis.

The Redis tests start a real `redis-server` (see `tests/redis_server.py`) and are skipped, with
the reason printed, when it is not installed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from streamchat.conversations import Turn
from streamchat.events import ToolCall
from streamchat.providers.base import Message
from streamchat.stores import LeaseLost, Store, StoreError, StoreUnavailable, make_store
from streamchat.stores.base import BegunTurn
from streamchat.stores.memory import MemoryStore
from streamchat.stores.sqlite import MIGRATIONS, SqliteStore, migrate
from tests.redis_server import RedisServer, free_port

Factory = Callable[[], Store]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes a store; every store made in a test sees the same conversations (for SQLite the
    same file, for Redis the same key prefix, one per test)."""
    clock = Clock()
    if request.param == "memory":
        made = MemoryStore(ttl_seconds=3600, max_conversations=100, clock=clock)
        return lambda: made
    if request.param == "sqlite":
        return lambda: SqliteStore(str(tmp_path / "chat.db"), clock=clock)
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex}:"
    return lambda: redis_store(server, prefix=prefix, clock=clock)


def redis_store(server: RedisServer, **options: Any) -> Store:
    """A Redis store on the test server (redis-py is imported only by the tests that need it)."""
    pytest.importorskip("redis", reason="the redis package is not installed")
    from streamchat.stores.redis import RedisStore

    options.setdefault("prefix", f"test-{uuid.uuid4().hex}:")
    return RedisStore(server.url, **options)


@pytest.fixture
async def store(factory: Factory) -> AsyncIterator[Store]:
    made = factory()
    await made.open()
    yield made
    await made.close()


async def run_turn(store: Store, cid: str, text: str, reply: str = "ok", owner: str = "me") -> int:
    async with store.lock(owner, cid):
        begun = await store.begin_turn(owner, cid, "be brief", text)
        turn = Turn(store, owner, cid, begun)
        turn.add_text(reply)
        await turn.end("completed")
        return begun.number


async def test_a_new_conversation_stores_the_system_prompt_once(store: Store) -> None:
    await run_turn(store, "c", "one")
    await run_turn(store, "c", "two")

    stored = await store.load("me", "c")

    assert stored is not None
    assert [m["role"] for m in stored.messages] == [
        "system", "user", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert stored.messages[0] == {"role": "system", "content": "be brief"}
    assert stored.turns == 2
    assert stored.running_turn is None
    assert stored.title == "one"


async def test_a_turn_is_written_as_it_goes_and_history_is_what_goes_upstream(
    store: Store,
) -> None:
    await run_turn(store, "c", "first")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "be brief", "What is 2 + 2?")
        turn = Turn(store, "me", "c", begun)
        assert begun.number == 2
        assert [m["role"] for m in turn.history()] == [
            "system", "user", "assistant", "user",
        ]  # fmt: skip
        running = await store.load("me", "c")
        assert running is not None and running.running_turn == 2

        turn.add_text("Let me add. ")
        await turn.add_tool_round([ToolCall("t1", "add", '{"a":2,"b":2}')], ["4"])
        assert [m["role"] for m in turn.history()][-2:] == ["assistant", "tool"]
        midway = await store.load("me", "c")
        assert midway is not None
        assert midway.messages[-2]["tool_calls"][0]["id"] == "t1"  # stored when the round ended
        assert midway.messages[-2]["content"] == "Let me add. "

        turn.add_text("2 + 2 = 4")
        turn.artifacts.append({"artifactId": "a1", "title": "x", "content": "y", "turn": 2})
        await turn.end("completed")

    stored = await store.load("me", "c")
    assert stored is not None
    assert stored.messages[-1] == {"role": "assistant", "content": "2 + 2 = 4"}
    assert stored.artifacts == [{"artifactId": "a1", "title": "x", "content": "y", "turn": 2}]
    assert stored.running_turn is None


async def test_a_turn_cut_short_mid_round_never_stores_tool_calls_without_results(
    store: Store,
) -> None:
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "go")
        turn = Turn(store, "me", "c", begun)
        turn.add_text("partial answer")
        # The tool round never completed: only text was streamed when the turn stopped.
        await turn.end("cancelled")

    stored = await store.load("me", "c")
    assert stored is not None
    assert stored.messages == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "partial answer"},
    ]
    assert all("tool_calls" not in m for m in stored.messages)


async def test_regenerate_drops_the_last_turn_and_its_artifacts(store: Store) -> None:
    await run_turn(store, "c", "one", "first answer")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "s", "two")
        turn = Turn(store, "me", "c", begun)
        turn.artifacts.append({"artifactId": "old", "title": "t", "content": "c", "turn": 2})
        turn.add_text("bad answer")
        await turn.end("completed")

    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "s", "two, again", regenerate=True)
        assert "old" not in begun.artifact_ids
        await Turn(store, "me", "c", begun).end("completed")

    stored = await store.load("me", "c")
    assert stored is not None
    assert [m.get("content") for m in stored.messages] == [
        "be brief", "one", "first answer", "two, again",
    ]  # fmt: skip
    assert stored.artifacts == []
    assert stored.turns == 3  # turn numbers are never reused


async def test_owners_never_see_each_others_conversations(store: Store) -> None:
    await run_turn(store, "shared-id", "mine", owner="alice")
    await run_turn(store, "shared-id", "theirs", owner="bob")

    alice = await store.load("alice", "shared-id")
    assert alice is not None
    assert [m.get("content") for m in alice.messages][1] == "mine"
    assert await store.delete("carol", "shared-id") is False
    assert await store.load("alice", "shared-id") is not None
    page, _ = await store.recent("bob", 10)
    assert [(c.id, c.title) for c in page] == [("shared-id", "theirs")]


async def test_the_list_is_most_recent_first_and_pages_with_a_cursor(store: Store) -> None:
    for n in range(5):
        await run_turn(store, f"c{n}", f"message {n}")
    await run_turn(store, "c1", "used again")

    first, cursor = await store.recent("me", 2)
    assert [c.id for c in first] == ["c1", "c4"]
    assert cursor is not None
    second, cursor = await store.recent("me", 2, cursor)
    assert [c.id for c in second] == ["c3", "c2"]
    third, cursor = await store.recent("me", 2, cursor)
    assert [c.id for c in third] == ["c0"]
    assert cursor is None
    assert first[0].turns == 2
    assert first[0].title == "message 1"


async def test_owners_and_ids_that_would_join_to_one_key_stay_apart(store: Store) -> None:
    await run_turn(store, "c", "first", owner="a:b")
    await run_turn(store, "b:c", "second", owner="a")
    await run_turn(store, "x", "third", owner="{a}:%3A")

    first = await store.load("a:b", "c")
    second = await store.load("a", "b:c")
    assert first is not None and first.title == "first"
    assert second is not None and second.title == "second"
    assert await store.load("a", "c") is None
    assert [c.id for c in (await store.recent("a", 10))[0]] == ["b:c"]
    assert [c.title for c in (await store.recent("{a}:%3A", 10))[0]] == ["third"]


async def test_regenerating_the_only_turn_takes_the_new_message_as_title(store: Store) -> None:
    await run_turn(store, "c", "first try")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "s", "second try", regenerate=True)
        await Turn(store, "me", "c", begun).end("completed")

    stored = await store.load("me", "c")
    assert stored is not None
    assert stored.title == "second try"
    assert [m.get("content") for m in stored.messages] == ["be brief", "second try"]


async def test_delete_forgets_and_is_idempotent(store: Store) -> None:
    await run_turn(store, "c", "hi")

    assert await store.delete("me", "c") is True
    assert await store.delete("me", "c") is False
    assert await store.load("me", "c") is None
    assert (await store.recent("me", 10))[0] == []


async def test_writes_of_a_turn_whose_conversation_was_deleted_go_nowhere(store: Store) -> None:
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "hi")
        await store.delete("me", "c")
        turn = Turn(store, "me", "c", begun)
        await turn.add_tool_round([ToolCall("t", "add", "{}")], ["1"])
        turn.add_text("late")
        await turn.end("completed")

    assert await store.load("me", "c") is None
    # Its end let the conversation go: a new one of that id begins at once (on Redis it waited
    # out the lease, 20 s by default, before the end released it whatever became of the rest).
    number = await asyncio.wait_for(run_turn(store, "c", "again"), 5)
    assert number == 1


# --- SQLite: durability, migrations, interrupted turns -----------------------------------------


async def test_sqlite_keeps_conversations_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "chat.db")
    first = SqliteStore(path)
    await first.open()
    await run_turn(first, "c", "remember me", "I will")
    await first.close()

    second = SqliteStore(path)
    await second.open()
    stored = await second.load("me", "c")
    await second.close()

    assert stored is not None
    assert [m.get("content") for m in stored.messages][1:] == ["remember me", "I will"]


async def test_sqlite_a_second_store_on_the_same_file_waits_then_refuses(tmp_path: Path) -> None:
    path = str(tmp_path / "chat.db")
    first = SqliteStore(path)
    await first.open()
    async with first.lock("me", "c"):
        begun = await first.begin_turn("me", "c", "", "hi")
        second = SqliteStore(path, claim_wait_seconds=0.3)
        started = time.monotonic()
        with pytest.raises(StoreError, match="in use by another streamchat process"):
            await second.open()
        waited = time.monotonic() - started
        turn = Turn(first, "me", "c", begun)
        turn.add_text("kept")
        await turn.end("completed")
    await first.close()
    third = SqliteStore(path, claim_wait_seconds=0.3)
    await third.open()  # the first let go of the file
    stored = await third.load("me", "c")
    await third.close()

    assert waited >= 0.3
    # The refused store marked nothing: the first's turn ended as it ran, its answer stored.
    assert stored is not None
    assert stored.interrupted_turn is None
    assert stored.messages[-1] == {"role": "assistant", "content": "kept"}


async def test_sqlite_marks_a_turn_that_died_with_its_process_interrupted(tmp_path: Path) -> None:
    path = str(tmp_path / "chat.db")
    first = SqliteStore(path)
    await first.open()
    begun = await first.begin_turn("me", "c", "", "never finished")
    await first.append("me", "c", begun.number, [{"role": "assistant", "content": None}])
    await first.close()  # no end_turn: as if the process had been killed

    second = SqliteStore(path)
    await second.open()
    stored = await second.load("me", "c")
    await second.close()

    assert stored is not None
    assert stored.running_turn is None
    assert stored.interrupted_turn == 1


async def test_sqlite_migrates_a_file_from_an_older_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    db.execute("INSERT INTO conversations VALUES ('me', 'c', 'old', 1.0, 2.0, 1, NULL)")
    db.execute(
        "INSERT INTO messages VALUES ('me', 'c', 0, 1, 'user', ?)",
        ('{"role": "user", "content": "from v1"}',),
    )
    db.close()

    store = SqliteStore(str(path))
    await store.open()
    stored = await store.load("me", "c")
    number = await run_turn(store, "c", "after the upgrade")
    await store.close()

    assert stored is not None
    assert stored.messages == [{"role": "user", "content": "from v1"}]
    assert stored.interrupted_turn is None and stored.artifacts == []
    assert number == 2
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)


async def test_sqlite_turns_begun_at_once_share_commits_and_each_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    store = SqliteStore(str(path))
    await store.open()
    commits = _count_commits(store)
    numbers = await asyncio.gather(*(run_turn(store, f"c{n}", f"question {n}") for n in range(40)))
    again = await asyncio.gather(*(run_turn(store, f"c{n}", "and again") for n in range(40)))
    listed, _ = await store.recent("me", 100)
    stored = [await store.load("me", f"c{n}") for n in range(40)]
    await store.close()

    assert numbers == [1] * 40 and again == [2] * 40
    assert len(listed) == 40
    for n, conversation in enumerate(stored):
        assert conversation is not None and conversation.running_turn is None
        assert [m.get("content") for m in conversation.messages] == [
            "be brief",
            f"question {n}",
            "ok",
            "and again",
            "ok",
        ]
    # 160 writes (a begin and an end per turn) in far fewer transactions than one each.
    assert 0 < commits[0] < 160


async def test_sqlite_the_wal_is_checkpointed_beside_the_writer_and_stays_small(
    tmp_path: Path,
) -> None:
    """The writer never checkpoints (its fsync would hold up every call queued behind it): the
    checkpoint thread does, so the WAL is reused instead of growing with every turn."""
    path = tmp_path / "chat.db"
    store = SqliteStore(str(path), checkpoint_seconds=0.05)
    await store.open()
    sizes = []
    for round_ in range(8):
        await asyncio.gather(*(run_turn(store, f"c{round_}-{n}", "x" * 2000) for n in range(20)))
        sizes.append(await asyncio.to_thread(os.path.getsize, f"{path}-wal"))
        await asyncio.sleep(0.2)
    checkpoints = store._checkpoints.done
    await store.close()

    assert checkpoints >= 8
    # One round writes ~40 pages; without checkpoints the WAL would hold all eight rounds.
    assert max(sizes) < 3 * sizes[0], sizes
    reopened = SqliteStore(str(path))
    await reopened.open()
    listed, _ = await reopened.recent("me", 500)
    await reopened.close()
    assert len(listed) == 160


async def test_sqlite_a_call_that_fails_is_undone_alone_in_its_batch(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "chat.db"))
    await store.open()

    def half_then_fail() -> None:
        store.db.execute(
            "INSERT INTO conversations (owner, id, title, created_at, updated_at)"
            " VALUES ('me', 'half', 't', 1, 1)"
        )
        raise sqlite3.OperationalError("disk I/O error")

    outcomes = await asyncio.gather(
        run_turn(store, "before", "one"),
        store._run(half_then_fail),
        run_turn(store, "after", "two"),
        return_exceptions=True,
    )
    half = await store.load("me", "half")
    before, after = await store.load("me", "before"), await store.load("me", "after")
    await store.close()

    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], sqlite3.OperationalError)
    assert half is None  # its write was rolled back, and only its own
    assert before is not None and after is not None


async def test_sqlite_calls_made_in_one_pass_of_the_loop_share_one_transaction(
    tmp_path: Path,
) -> None:
    """The calls of one pass of the loop reach the writer together (one wake of its thread,
    one commit), however quickly the thread would have taken the first of them alone."""
    store = SqliteStore(str(tmp_path / "chat.db"))
    await store.open()
    commits = _count_commits(store)

    def other_work() -> None:
        time.sleep(0.002)  # a socket write, say: the writer's thread may run meanwhile

    async def begin(n: int) -> BegunTurn:
        other_work()
        return await store.begin_turn("me", f"c{n}", "", f"question {n}")

    async def end(n: int) -> None:
        other_work()
        answer: list[Message] = [{"role": "assistant", "content": "a"}]
        await store.end_turn("me", f"c{n}", 1, answer, [], "completed")

    begun = await asyncio.gather(*(begin(n) for n in range(10)))
    after_begins = commits[0]
    await asyncio.gather(*(end(n) for n in range(10)))
    after_ends = commits[0]
    loaded = [await store.load("me", f"c{n}") for n in range(10)]
    await store.close()

    assert [b.number for b in begun] == [1] * 10
    assert (after_begins, after_ends) == (1, 2)
    assert all(c is not None and c.running_turn is None for c in loaded)
    assert [c.messages[-1]["content"] for c in loaded if c is not None] == ["a"] * 10


def _bytes_in_file(path: str, cid: str) -> int:
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT bytes FROM conversations WHERE owner = 'me' AND id = ?", (cid,)
        ).fetchone()
        return 0 if row is None else int(row[0])
    finally:
        db.close()


async def test_sqlite_knows_a_conversations_bytes_without_a_transaction(tmp_path: Path) -> None:
    """A turn that continues a conversation checks its size first: what the store's own
    committed writes left is kept, so the check asks the writer nothing, and it is the file's
    count after every kind of write."""
    path = str(tmp_path / "chat.db")
    store = SqliteStore(path)
    await store.open()
    commits = _count_commits(store)
    asked: list[int] = []  # transactions each check made

    async def check(cid: str) -> None:
        before = commits[0]
        size = await store.stored_bytes("me", cid)
        asked.append(commits[0] - before)
        assert size == _bytes_in_file(path, cid)

    await run_turn(store, "c", "hello", "a reply with ünïcödé")  # a new conversation
    await check("c")
    await run_turn(store, "c", "again")  # continued
    await check("c")
    call: Message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
        ],
    }
    result: Message = {"role": "tool", "tool_call_id": "t1", "content": "42"}
    answer: Message = {"role": "assistant", "content": "42 it is"}
    artifact = {"artifactId": "a", "artifactType": "code", "title": "t", "content": "x" * 99}
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "add them")
        await store.append("me", "c", begun.number, [call, result])  # a tool round
        await check("c")
        await store.end_turn("me", "c", begun.number, [answer], [artifact], "completed")
    await check("c")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "add them again", regenerate=True)
        await store.end_turn("me", "c", begun.number, [answer], [], "completed")
    await check("c")
    await check("never written")
    await check("never written")
    async with store.lock("me", "d"):  # deleted while its turn ran: its end adds nothing
        begun = await store.begin_turn("me", "d", "", "x" * 500)
        await store.delete("me", "d")
        await store.end_turn("me", "d", begun.number, [answer], [], "completed")
    await check("d")
    await store.close()

    # Read from the file only for a conversation it knew nothing of, and once.
    assert asked == [0, 0, 0, 0, 0, 1, 0, 0]


async def test_sqlite_a_write_that_failed_or_lost_its_caller_has_the_count_read_again(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "chat.db")
    store = SqliteStore(path)
    await store.open()
    await run_turn(store, "c", "hello")
    answer: Message = {"role": "assistant", "content": "a long answer " * 50}
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "two")
        with pytest.raises(KeyError):  # an artifact without its id: the call is undone
            await store.end_turn("me", "c", begun.number, [answer], [{"x": 1}], "completed")
        commits = _count_commits(store)
        failed = await store.stored_bytes("me", "c")
        read_after_failure = commits[0]
        # Its caller gone before the result came back: written all the same.
        ending = asyncio.create_task(
            store.end_turn("me", "c", begun.number, [answer], [], "completed")
        )
        await asyncio.sleep(0)
        ending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ending
        await asyncio.sleep(0.2)  # the writer commits it meanwhile
        before = commits[0]
        cancelled = await store.stored_bytes("me", "c")
        read_after_cancel = commits[0] - before
        conversation = await store.load("me", "c")
    await store.close()

    assert conversation is not None and conversation.messages[-1] == answer
    assert failed < cancelled == _bytes_in_file(path, "c")
    assert (read_after_failure, read_after_cancel) == (1, 1)


def _count_commits(store: SqliteStore) -> list[int]:
    """Counts the store's transactions from here on (a trace of its connection's statements)."""
    count = [0]

    def trace(statement: str) -> None:
        if statement == "COMMIT":
            count[0] += 1

    store.db.set_trace_callback(trace)
    return count


async def test_sqlite_refuses_a_file_from_a_newer_streamchat(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()

    store = SqliteStore(str(path))
    with pytest.raises(StoreError, match="newer streamchat"):
        await store.open()
    await store.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///x.db", SqliteStore),
        ("sqlite:////tmp/x.db", SqliteStore),
        ("memory://", MemoryStore),
    ],
)
def test_store_urls_name_their_store(url: str, kind: Any) -> None:
    made = make_store(url, ttl_seconds=1, max_conversations=1)
    assert isinstance(made, kind)
    if isinstance(made, SqliteStore):
        assert made.path == url.removeprefix("sqlite:///")


@pytest.mark.parametrize("url", ["postgres://x", "sqlite:///", "nonsense"])
def test_a_bad_store_url_is_one_clear_error(url: str) -> None:
    with pytest.raises(StoreError, match="STORE_URL"):
        make_store(url, ttl_seconds=1, max_conversations=1)


# --- memory: bounded ----------------------------------------------------------------------------


async def test_the_memory_store_evicts_the_least_recently_used_past_its_cap() -> None:
    store = MemoryStore(ttl_seconds=3600, max_conversations=2, clock=Clock())
    for cid in ("a", "b", "c"):
        await run_turn(store, cid, "hi")

    assert await store.load("me", "a") is None
    assert len(store) == 2


async def test_the_memory_store_never_evicts_a_conversation_with_a_turn_running() -> None:
    store = MemoryStore(ttl_seconds=3600, max_conversations=1, clock=Clock())
    async with store.lock("me", "busy"):
        await store.begin_turn("me", "busy", "", "long")
        await run_turn(store, "other", "hi")
        assert await store.load("me", "busy") is not None


# --- Redis: several processes on one Redis, the lease, an unreachable server -------------------


@pytest.fixture
async def two_stores(redis_server: RedisServer) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one Redis, as two streamchat processes would have (a short lease)."""
    prefix = f"test-{uuid.uuid4().hex}:"
    first = redis_store(redis_server, prefix=prefix, lease_seconds=0.3)
    second = redis_store(redis_server, prefix=prefix, lease_seconds=0.3)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


async def test_redis_a_conversation_written_by_one_process_is_read_by_another(
    two_stores: tuple[Store, Store],
) -> None:
    one, other = two_stores
    await run_turn(one, "c", "started here", "héllo ✓ \ud800")  # a lone surrogate survives
    await run_turn(other, "c", "continued there", "hi again")

    stored = await one.load("me", "c")
    assert stored is not None
    assert [m.get("content") for m in stored.messages] == [
        "be brief", "started here", "héllo ✓ \ud800", "continued there", "hi again",
    ]  # fmt: skip
    assert stored.turns == 2
    listed, _ = await one.recent("me", 10)
    assert [(c.id, c.turns) for c in listed] == [("c", 2)]


async def test_redis_the_lease_makes_a_second_holder_wait_until_the_first_releases(
    two_stores: tuple[Store, Store],
) -> None:
    one, other = two_stores
    order: list[str] = []

    async def second_turn() -> None:
        async with other.lock("me", "c"):
            # The lease is taken with the turn's begin, which waits for it.
            begun = await other.begin_turn("me", "c", "", "two")
            order.append("second holds")
            await Turn(other, "me", "c", begun).end("completed")

    async with one.lock("me", "c"):
        begun = await one.begin_turn("me", "c", "", "one")
        waiting = asyncio.create_task(second_turn())
        # Longer than the lease: renewal keeps it, so the other process still waits.
        await asyncio.sleep(0.8)
        assert order == []
        running = await other.load("me", "c")
        assert running is not None and running.running_turn == 1
        await Turn(one, "me", "c", begun).end("completed")
        order.append("first releases")
    await asyncio.wait_for(waiting, timeout=2)

    assert order == ["first releases", "second holds"]
    stored = await one.load("me", "c")
    assert stored is not None
    assert [m.get("content") for m in stored.messages] == ["one", "two"]


async def test_redis_the_end_of_a_turn_releases_its_lease_in_the_same_script(
    two_stores: tuple[Store, Store], redis_server: RedisServer
) -> None:
    """One command fewer per turn: the script that stores the end deletes the lease, so the
    lock's exit sends nothing; a turn whose end was not stored still releases at the exit."""
    import redis.asyncio

    one, other = two_stores
    watch = redis.asyncio.Redis.from_url(redis_server.url)
    lease_key = one._keys("me", "c").lease  # type: ignore[attr-defined]
    async with one.lock("me", "c"):
        begun = await one.begin_turn("me", "c", "", "hi")
        held = await watch.exists(lease_key)
        await Turn(one, "me", "c", begun).end("completed")
        after_end = await watch.exists(lease_key)
        kept = set(one._kept)  # type: ignore[attr-defined]
    async with other.lock("me", "c"):  # at once: nothing holds it
        # This turn's end is never stored: its lease is released at the lock's exit.
        await other.begin_turn("me", "c", "", "again")
    after_exit = await watch.exists(lease_key)
    await watch.aclose()

    assert (held, after_end, after_exit) == (1, 0, 0)
    assert len(kept) == 1 and not one._kept  # type: ignore[attr-defined]
    stored = await one.load("me", "c")
    assert stored is not None and stored.turns == 2


async def _begin_then_stop_renewing(
    store: Store,
) -> tuple[AbstractAsyncContextManager[None], BegunTurn]:
    """Conversation "c" held and a turn begun on `store`, whose process then dies: nothing
    renews its lease any more (the lease runs out 0.3 s after its last renewal)."""
    holding = store.lock("me", "c")
    await holding.__aenter__()
    begun = await store.begin_turn("me", "c", "", "never finished")
    store._kept.clear()  # type: ignore[attr-defined]
    return holding, begun


async def test_redis_a_dead_holder_frees_the_conversation_after_the_lease(
    two_stores: tuple[Store, Store],
) -> None:
    dead, alive = two_stores
    holding, begun = await _begin_then_stop_renewing(dead)
    dead_turn = Turn(dead, "me", "c", begun)
    await dead_turn.add_tool_round([ToolCall("t1", "add", "{}")], ["1"])

    seen = await alive.load("me", "c")
    assert seen is not None and (seen.running_turn, seen.interrupted_turn) == (1, None)
    started = asyncio.get_running_loop().time()
    async with alive.lock("me", "c"):
        begun = await alive.begin_turn("me", "c", "", "again")  # waits for the lease
        waited = asyncio.get_running_loop().time() - started
        with pytest.raises(LeaseLost):
            await dead.append("me", "c", 1, [{"role": "assistant", "content": "late"}])
        with pytest.raises(LeaseLost):
            await dead_turn.end("completed")
        await Turn(alive, "me", "c", begun).end("completed")
    await holding.__aexit__(None, None, None)

    assert 0.1 < waited < 2.0
    stored = await alive.load("me", "c")
    assert stored is not None
    assert (stored.turns, stored.running_turn, stored.interrupted_turn) == (2, None, 1)
    assert [m["role"] for m in stored.messages] == ["user", "assistant", "tool", "user"]
    assert all(m.get("content") != "late" for m in stored.messages)


async def test_redis_a_turn_is_two_commands_its_begin_taking_the_lease_and_its_end_releasing_it(
    redis_server: RedisServer,
) -> None:
    store = redis_store(redis_server)
    await store.open()
    client = store._client  # type: ignore[attr-defined]
    sent: list[str] = []
    execute = client.execute_command

    async def recorded(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute(*args, **options)

    client.execute_command = recorded
    try:
        await run_turn(store, "warm", "hi")  # the scripts loaded
        sent.clear()
        await run_turn(store, "c", "one")
        await run_turn(store, "c", "two")
    finally:
        await store.close()

    assert sent == ["EVALSHA"] * 4  # begin and end, twice: no SET of its own, no release


async def test_redis_one_task_keeps_the_leases_of_every_running_turn(
    two_stores: tuple[Store, Store],
) -> None:
    one, other = two_stores
    holds = [one.lock("me", f"c{n}") for n in range(3)]
    turns = []
    for n, hold in enumerate(holds):
        await hold.__aenter__()
        turns.append(Turn(one, "me", f"c{n}", await one.begin_turn("me", f"c{n}", "", "hi")))
        await asyncio.sleep(0.05)  # taken at different times
    await asyncio.sleep(1.0)  # more than three leases (0.3 s each)
    renewers = {t for t in one._tasks if "_renew" in repr(t.get_coro())}  # type: ignore[attr-defined]

    for turn, hold in zip(turns, holds, strict=True):
        await turn.end("completed")  # refused if its lease had run out
        await hold.__aexit__(None, None, None)
    async with other.lock("me", "c0"):
        await other.begin_turn("me", "c0", "", "at once")

    assert len(renewers) == 1
    await asyncio.sleep(0.2)
    assert not one._kept and all(t.done() for t in renewers)  # type: ignore[attr-defined]


async def test_redis_a_dead_holders_turn_reads_as_interrupted_once_its_lease_is_gone(
    two_stores: tuple[Store, Store],
) -> None:
    dead, alive = two_stores
    holding, _ = await _begin_then_stop_renewing(dead)

    seen = await alive.load("me", "c")
    assert seen is not None and (seen.running_turn, seen.interrupted_turn) == (1, None)
    await asyncio.sleep(0.6)  # the lease (0.3 s) runs out; nobody has written since
    seen = await alive.load("me", "c")
    assert seen is not None and (seen.running_turn, seen.interrupted_turn) == (None, 1)
    await holding.__aexit__(None, None, None)


async def test_redis_a_holder_whose_lease_was_taken_finds_out_at_renewal(
    two_stores: tuple[Store, Store], redis_server: RedisServer
) -> None:
    import redis.asyncio

    holder, _ = two_stores
    async with holder.lock("me", "c"):
        begun = await holder.begin_turn("me", "c", "", "hi")
        # As if its lease had expired during a long pause and another process had taken it.
        lease_key = holder._keys("me", "c").lease  # type: ignore[attr-defined]
        other = redis.asyncio.Redis.from_url(redis_server.url)
        await other.set(lease_key, "another process", px=5000)
        await other.aclose()
        await asyncio.sleep(0.3)  # a renewal (due every 0.1 s) finds the other token

        assert holder._leases[("me", "c")].lost  # type: ignore[attr-defined]
        with pytest.raises(LeaseLost):
            await Turn(holder, "me", "c", begun).end("completed")

    stored = await holder.load("me", "c")
    assert stored is not None
    assert stored.messages == [{"role": "user", "content": "hi"}]
    assert stored.running_turn is None and stored.interrupted_turn == 1


async def test_redis_writes_without_the_lease_are_refused(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    await store.open()
    try:
        with pytest.raises(LeaseLost):
            await store.begin_turn("me", "c", "", "no lock")
        assert await store.load("me", "c") is None
    finally:
        await store.close()


async def test_redis_unreachable_is_store_unavailable_until_it_comes_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    server = RedisServer(tmp_path / "own")  # its own server: this test stops it
    server.start()
    store = redis_store(server, lease_seconds=1, unavailable_after_seconds=0.3)
    try:
        await store.open()
        await run_turn(store, "c", "before")
        server.stop()

        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.load("me", "c")
        with pytest.raises(StoreUnavailable):
            await store.recent("me", 10)
        with pytest.raises(StoreUnavailable):
            await store.delete("me", "c")
        with pytest.raises(StoreUnavailable):
            async with store.lock("me", "c"):
                await store.begin_turn("me", "c", "", "while away")

        server.start()  # the same port, empty (no persistence): the pool reconnects
        await store.ping()
        assert await store.load("me", "c") is None
        assert await run_turn(store, "c", "after") == 1
    finally:
        await store.close()
        server.stop()


async def test_redis_a_server_that_stops_answering_is_store_unavailable_after_the_timeout(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    server = RedisServer(tmp_path / "own")  # its own server: this test freezes it
    server.start()
    store = redis_store(server, timeout_seconds=0.3)
    try:
        await store.open()
        await run_turn(store, "c", "kept")
        server.pause()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await store.load("me", "c")
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert loop.time() - started < 2.0  # each gave up after its timeout, without retries

        server.resume()
        stored = await store.load("me", "c")
        assert stored is not None and stored.title == "kept"
    finally:
        await store.close()
        server.stop()


async def test_redis_a_turn_whose_server_went_away_gets_store_unavailable(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    server = RedisServer(tmp_path / "own")
    server.start()
    store = redis_store(server)
    try:
        await store.open()
        async with store.lock("me", "c"):
            begun = await store.begin_turn("me", "c", "", "hi")
            server.stop()
            with pytest.raises(StoreUnavailable):
                await Turn(store, "me", "c", begun).end("completed")
        # The lease could not be released: it expires on its own (here, with the server).
    finally:
        await store.close()
        server.stop()


async def test_redis_open_stops_at_a_bad_database_but_not_at_an_absent_server(
    redis_server: RedisServer,
) -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    bad = make_store(redis_server.url.replace("/0", "/99"), ttl_seconds=1, max_conversations=1)
    with pytest.raises(StoreError, match="STORE_URL"):
        await bad.open()
    await bad.close()

    absent = make_store(f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=1, max_conversations=1)
    await absent.open()  # it may come up later: requests get 503 until then
    with pytest.raises(StoreUnavailable):
        await absent.ping()
    await absent.close()


async def test_a_redis_url_names_a_redis_store_and_its_description_hides_the_password() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    from streamchat.stores.redis import RedisStore

    made = make_store(
        "redis://user:s3cret@cache.internal:6380/2", ttl_seconds=1, max_conversations=1
    )
    try:
        assert isinstance(made, RedisStore)
        assert made.description == "redis (cache.internal:6380/2)"
        assert "s3cret" not in repr(vars(made))
    finally:
        await made.close()
    tls = make_store("rediss://:pw@localhost", ttl_seconds=1, max_conversations=1)
    assert tls.description == "redis (localhost:6379/0, TLS)"
    await tls.close()


def test_a_redis_url_without_redis_py_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "streamchat.stores.redis", raising=False)

    with pytest.raises(StoreError, match=r"pip install 'streamchat\[redis\]'"):
        make_store("redis://localhost:6379/0", ttl_seconds=1, max_conversations=1)
