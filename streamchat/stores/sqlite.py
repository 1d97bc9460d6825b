"""`sqlite:///path`: conversations in one SQLite file, the durable default with nothing to install.

The stdlib `sqlite3` runs on one worker thread that owns the only connection, so the event loop
never waits on the disk and every write goes through one writer. The calls the event loop makes
in one pass go to the worker together, at the start of its next pass, and the worker takes all
the calls waiting for it as one batch: one transaction with a savepoint per call (a call that
fails is rolled back alone), one commit, and one wake-up of the event loop for all their results.
Under many turns a second, that is a fraction of the commits and thread hops of a call each.
WAL lets readers run beside it; `synchronous=NORMAL` in WAL mode survives a crash of the process
(only a power cut can lose the last commits). The writer does not checkpoint: copying the WAL
back into the database ends with an fsync, and in the writer that held up every call queued
behind it (a new turn's first event with them). A thread of its own with its own connection
checkpoints every `CHECKPOINT_SECONDS` instead, passively, beside the writer; should it fall far
behind, the writer checkpoints itself past `WRITER_CHECKPOINT_PAGES`. Schema changes are
migrations, applied in order at start-up and counted in `PRAGMA user_version`; a file written
by a newer streamchat stops start-up rather than being misread. A turn that was running when its
process died is marked interrupted on the next start.

The bytes each conversation holds, which a turn that continues it checks first, are kept in
memory as well for the conversations this process wrote or read lately: the file has one writer
process, so what its own committed writes left is the count, and a turn in a conversation does
not wait on the worker thread for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from streamchat.eventbus import EventBus
from streamchat.providers.base import Message
from streamchat.stores.base import (
    BegunTurn,
    ConversationInfo,
    LocalLocks,
    Outcome,
    StoredConversation,
    StoreError,
    cursor_of,
    make_title,
    parse_cursor,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The most calls one transaction takes; more wait for the next.
MAX_BATCH = 64
# How often the checkpoint thread copies the WAL back into the database file.
CHECKPOINT_SECONDS = 1.0
# The WAL's size, in pages, past which the writer checkpoints itself (the backstop).
WRITER_CHECKPOINT_PAGES = 20_000
# Conversations whose byte count is kept in memory, the least recently used forgotten first.
SIZES_KEPT = 10_000

# Applied in order; the file's `user_version` is how many have been applied. Never edit one
# that has shipped: add the next.
MIGRATIONS: list[str] = [
    # 1: conversations and their messages, each under its owner.
    """
    CREATE TABLE conversations (
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0,
        running_turn INTEGER,
        PRIMARY KEY (owner, id)
    );
    CREATE TABLE messages (
        owner TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        role TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (owner, conversation_id, seq)
    );
    """,
    # 2: artifacts, interrupted turns, and an index for the most-recent-first list.
    """
    ALTER TABLE conversations ADD COLUMN interrupted_turn INTEGER;
    CREATE TABLE artifacts (
        owner TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        artifact_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (owner, conversation_id, seq)
    );
    CREATE INDEX conversations_recent ON conversations (owner, updated_at, id);
    """,
    # 3: the bytes each conversation holds (its message and artifact bodies), so a full one is
    # refused a new turn without reading it.
    """
    ALTER TABLE conversations ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET bytes =
        (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM messages
         WHERE messages.owner = conversations.owner AND messages.conversation_id = conversations.id)
        + (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM artifacts
         WHERE artifacts.owner = conversations.owner
           AND artifacts.conversation_id = conversations.id);
    """,
]


def migrate(db: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Apply the migrations the file lacks; return how many were applied."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise StoreError(
            f"the database was written by a newer streamchat (schema version {version}; this "
            f"version knows up to {len(migrations)}): upgrade streamchat or use another STORE_URL"
        )
    for number in range(version, len(migrations)):
        # executescript commits first; the migration and its version bump are one transaction.
        db.executescript(
            f"BEGIN;\n{migrations[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )
    return len(migrations) - version


# How long a start waits for another process to let go of the file: in a rolling restart the
# old process drains its turns (SHUTDOWN_GRACE_SECONDS) and exits while the new one waits.
CLAIM_WAIT_SECONDS = 60.0


class SqliteStore:
    def __init__(
        self,
        path: str,
        clock: Callable[[], float] = time.time,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        claim_wait_seconds: float = CLAIM_WAIT_SECONDS,
    ) -> None:
        self.path = path
        self._claim_wait = claim_wait_seconds
        self._claim: BinaryIO | None = None
        self.description = f"sqlite ({path})"
        self._clock = clock
        self._worker = _Worker(lambda: self.db)
        self._db: sqlite3.Connection | None = None
        self._locks = LocalLocks()
        self._checkpoints = _Checkpointer(path, checkpoint_seconds)
        # (owner, id) -> the bytes it holds, as of this store's last committed write or read.
        self._sizes: OrderedDict[tuple[str, str], int] = OrderedDict()

    async def open(self) -> None:
        self._sizes.clear()  # the file may have been written by another process meanwhile
        await self._worker.call(self._open, alone=True)
        if self.path != ":memory:":
            self._checkpoints.start()

    async def close(self) -> None:
        await asyncio.to_thread(self._checkpoints.stop)
        if self._db is not None:
            await self._worker.call(self._db.close, alone=True)
            self._db = None
        await self._worker.stop()
        if self._claim is not None:
            self._claim.close()  # and with it the lock: the next process may open the file
            self._claim = None

    async def ping(self) -> None:
        return None  # a local file: if it opened, it answers

    def event_bus(self) -> EventBus | None:
        return None  # one process: the turn runner's logs in memory are all there is

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(owner, conversation_id)

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        return await self._run(self._load, owner, conversation_id)

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        return await self._counted(
            self._begin_turn, owner, conversation_id, system_prompt, user_message, regenerate
        )

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None:
        await self._counted(self._append, owner, conversation_id, turn, messages, [], None)

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        await self._counted(
            self._append, owner, conversation_id, turn, messages, artifacts, outcome
        )

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        return await self._run(self._recent, owner, limit, before)

    async def delete(self, owner: str, conversation_id: str) -> bool:
        try:
            return await self._run(self._delete, owner, conversation_id)
        finally:
            self._sizes.pop((owner, conversation_id), None)

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        key = (owner, conversation_id)
        size = self._sizes.get(key)
        if size is None:
            size = await self._run(self._stored_bytes, owner, conversation_id)
            self._note_size(key, size)
        else:
            self._sizes.move_to_end(key)
        return size

    async def _counted(self, fn: Callable[..., tuple[T, int | None]], *args: Any) -> T:
        """`fn(owner, conversation_id, ...)` on the worker, and the bytes it reports the
        conversation holds once it committed kept; a call that failed or whose caller was
        cancelled (it may have been written all the same) leaves the count to be read again."""
        key = (args[0], args[1])
        try:
            value, size = await self._run(fn, *args)
        except BaseException:
            self._sizes.pop(key, None)
            raise
        self._note_size(key, size)
        return value

    def _note_size(self, key: tuple[str, str], size: int | None) -> None:
        """What a committed call left the conversation holding (None: unchanged)."""
        if size is not None:
            self._sizes[key] = size
            self._sizes.move_to_end(key)
            if len(self._sizes) > SIZES_KEPT:
                self._sizes.popitem(last=False)

    # --- on the worker thread -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the worker, atomically, in the transaction of its batch."""
        return await self._worker.call(fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is not open")
        return self._db

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            if self._claim is None:
                self._claim = _claim(self.path, self._claim_wait)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA foreign_keys = ON")
            applied = migrate(db)
            if applied:
                log.info("SQLite store %s: applied %d migration(s)", self.path, applied)
            with _transaction(db):
                found = db.execute(
                    "UPDATE conversations SET interrupted_turn = running_turn, running_turn = NULL"
                    " WHERE running_turn IS NOT NULL"
                ).rowcount
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"cannot use the SQLite database {self.path}: {exc}") from None
        except StoreError:
            db.close()
            raise
        if found:
            log.warning(
                "%d turn(s) were running when the server stopped: marked interrupted", found
            )
        self._db = db

    def _load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        db = self.db
        row = db.execute(
            "SELECT title, created_at, updated_at, turns, running_turn, interrupted_turn"
            " FROM conversations WHERE owner = ? AND id = ?",
            (owner, conversation_id),
        ).fetchone()
        if row is None:
            return None
        messages = [
            json.loads(body)
            for (body,) in db.execute(
                "SELECT body FROM messages WHERE owner = ? AND conversation_id = ? ORDER BY seq",
                (owner, conversation_id),
            )
        ]
        artifacts = [
            json.loads(body)
            for (body,) in db.execute(
                "SELECT body FROM artifacts WHERE owner = ? AND conversation_id = ? ORDER BY seq",
                (owner, conversation_id),
            )
        ]
        title, created, updated, turns, running, interrupted = row
        return StoredConversation(
            conversation_id,
            title,
            created,
            updated,
            turns,
            running,
            messages,
            artifacts,
            interrupted,
        )

    def _begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        regenerate: bool,
    ) -> tuple[BegunTurn, int]:
        """The turn begun, and the bytes the conversation holds now."""
        db, key, now = self.db, (owner, conversation_id), self._clock()
        row = db.execute(
            "SELECT turns FROM conversations WHERE owner = ? AND id = ?", key
        ).fetchone()
        if row is None:
            # A new conversation: its whole history is what this call writes.
            history: list[Message] = [{"role": "system", "content": system_prompt}]
            history = history if system_prompt else []
            history.append({"role": "user", "content": user_message})
            size = self._insert(db, key, 1, history, start=0, turns=[0] * (len(history) - 1) + [1])
            db.execute(
                "INSERT INTO conversations (owner, id, title, created_at, updated_at, turns,"
                " running_turn, bytes) VALUES (?, ?, ?, ?, ?, 1, 1, ?)",
                (*key, make_title(user_message), now, now, size),
            )
            return BegunTurn(1, history, frozenset()), size
        turn = row[0] + 1
        if regenerate:
            self._drop_last_turn(db, key)
        if not db.execute(
            "SELECT 1 FROM messages WHERE owner = ? AND conversation_id = ? AND role = 'user'",
            key,
        ).fetchone():
            db.execute(
                "UPDATE conversations SET title = ? WHERE owner = ? AND id = ?",
                (make_title(user_message), *key),
            )
        size = self._insert(db, key, turn, [{"role": "user", "content": user_message}])
        ((total,),) = db.execute(
            "UPDATE conversations SET turns = ?, running_turn = ?, interrupted_turn = NULL,"
            " updated_at = ?, bytes = bytes + ? WHERE owner = ? AND id = ? RETURNING bytes",
            (turn, turn, now, size, *key),
        ).fetchall()
        history = [
            json.loads(body)
            for (body,) in db.execute(
                "SELECT body FROM messages WHERE owner = ? AND conversation_id = ? ORDER BY seq",
                key,
            )
        ]
        ids = frozenset(
            artifact_id
            for (artifact_id,) in db.execute(
                "SELECT artifact_id FROM artifacts WHERE owner = ? AND conversation_id = ?",
                key,
            )
        )
        return BegunTurn(turn, history, ids), total

    def _drop_last_turn(self, db: sqlite3.Connection, key: tuple[str, str]) -> None:
        last = db.execute(
            "SELECT seq, turn FROM messages WHERE owner = ? AND conversation_id = ?"
            " AND role = 'user' ORDER BY seq DESC LIMIT 1",
            key,
        ).fetchone()
        if last is None:
            return
        seq, turn = last
        db.execute(
            "DELETE FROM messages WHERE owner = ? AND conversation_id = ? AND seq >= ?",
            (*key, seq),
        )
        db.execute(
            "DELETE FROM artifacts WHERE owner = ? AND conversation_id = ? AND turn >= ?",
            (*key, turn),
        )
        db.execute(
            "UPDATE conversations SET bytes ="
            " (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM messages"
            "  WHERE owner = ?1 AND conversation_id = ?2)"
            " + (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM artifacts"
            "  WHERE owner = ?1 AND conversation_id = ?2)"
            " WHERE owner = ?1 AND id = ?2",
            key,
        )

    def _append(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome | None,
    ) -> tuple[None, int | None]:
        """Nothing, and the bytes the conversation holds after the call (None: unchanged)."""
        db, key = self.db, (owner, conversation_id)
        row = db.execute(
            "SELECT running_turn FROM conversations WHERE owner = ? AND id = ?", key
        ).fetchone()
        if row is None:
            return None, 0  # deleted while the turn ran: nothing to add to
        if row[0] != turn:
            return None, None  # deleted while the turn ran, and a new one began: not added
        size = self._insert(db, key, turn, messages)
        if artifacts:
            start = db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM artifacts"
                " WHERE owner = ? AND conversation_id = ?",
                key,
            ).fetchone()[0]
            bodies = [json.dumps(a, ensure_ascii=False) for a in artifacts]
            db.executemany(
                "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (*key, start + n, turn, a["artifactId"], body)
                    for n, (a, body) in enumerate(zip(artifacts, bodies, strict=True))
                ],
            )
            size += _utf8_bytes(bodies)
        if outcome is not None:
            ((total,),) = db.execute(
                "UPDATE conversations SET running_turn = NULL, updated_at = ?, bytes = bytes + ?"
                " WHERE owner = ? AND id = ? RETURNING bytes",
                (self._clock(), size, *key),
            ).fetchall()
            return None, int(total)
        if size:
            ((total,),) = db.execute(
                "UPDATE conversations SET bytes = bytes + ? WHERE owner = ? AND id = ?"
                " RETURNING bytes",
                (size, *key),
            ).fetchall()
            return None, int(total)
        return None, None

    def _insert(
        self,
        db: sqlite3.Connection,
        key: tuple[str, str],
        turn: int,
        messages: list[Message],
        *,
        start: int | None = None,
        turns: list[int] | None = None,
    ) -> int:
        """Append `messages` (of turn `turn`, or of `turns` one each) after the last one, or
        from seq `start` when the caller knows it; their bytes, for the conversation's count."""
        if not messages:
            return 0
        if start is None:
            start = db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM messages"
                " WHERE owner = ? AND conversation_id = ?",
                key,
            ).fetchone()[0]
        bodies = [json.dumps(m, ensure_ascii=False) for m in messages]
        of = turns or [turn] * len(messages)
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
            [
                (*key, start + n, of[n], m["role"], body)
                for n, (m, body) in enumerate(zip(messages, bodies, strict=True))
            ],
        )
        return _utf8_bytes(bodies)

    def _stored_bytes(self, owner: str, conversation_id: str) -> int:
        row = self.db.execute(
            "SELECT bytes FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _recent(
        self, owner: str, limit: int, before: str | None
    ) -> tuple[list[ConversationInfo], str | None]:
        query = (
            "SELECT id, title, created_at, updated_at, turns, running_turn FROM conversations"
            " WHERE owner = ?"
        )
        args: list[Any] = [owner]
        mark = parse_cursor(before) if before is not None else None
        if mark is not None:
            query += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
            args += [mark[0], mark[0], mark[1]]
        query += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        rows = self.db.execute(query, (*args, limit + 1)).fetchall()
        infos = [ConversationInfo(*row) for row in rows[:limit]]
        return infos, (cursor_of(infos[-1]) if len(rows) > limit else None)

    def _delete(self, owner: str, conversation_id: str) -> bool:
        db, key = self.db, (owner, conversation_id)
        for table in ("messages", "artifacts"):
            db.execute(f"DELETE FROM {table} WHERE owner = ? AND conversation_id = ?", key)
        return db.execute("DELETE FROM conversations WHERE owner = ? AND id = ?", key).rowcount > 0


def _utf8_bytes(bodies: list[str]) -> int:
    """What SQLite stores of these TEXT values: their UTF-8 (LENGTH(CAST(body AS BLOB)))."""
    return sum(len(body.encode("utf-8", "surrogatepass")) for body in bodies)


class _Checkpointer:
    """Copies the WAL back into the database every `seconds`, on a thread and a connection of
    its own. A passive checkpoint takes no lock the writer waits for; what it cannot copy yet
    (a read in progress) it copies next time."""

    def __init__(self, path: str, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.done = 0  # checkpoints run, for the tests
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("SQLite store %s: no checkpoint thread: %s", self.path, exc)
            return
        try:
            while not self._stop.wait(self.seconds):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1
                except sqlite3.Error as exc:  # the writer checkpoints itself past its bound
                    log.warning("SQLite store %s: checkpoint failed: %s", self.path, exc)
        finally:
            db.close()


def _claim(path: str, wait_seconds: float) -> BinaryIO | None:
    """Lock `<path>.lock` for as long as the store is open: the file has one streamchat process.

    A second process on the same file would mark the first one's running turns interrupted as
    it opened (their answers then stored nowhere), run turns of one conversation beside the
    other's, and count bytes the other wrote as unchanged. It waits instead, `wait_seconds` at
    most, for the first to stop (a rolling restart), then refuses to start. Where the platform or
    the file system has no advisory locks, nothing is locked and a warning says so.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        log.warning("SQLite store %s: cannot lock it here; run one process on it", path)
        return None
    lock_path = f"{path}.lock"
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 (held open for the store's life)
    except OSError as exc:
        raise StoreError(f"cannot open {lock_path}: {exc.strerror}") from None
    deadline = time.monotonic() + wait_seconds
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(32).decode("ascii", "replace").strip() or "?"
            if time.monotonic() >= deadline:
                handle.close()
                raise StoreError(
                    f"the SQLite database {path} is in use by another streamchat process "
                    f"(pid {holder}): stop it first, or use one STORE_URL=redis://... for "
                    "several processes"
                ) from None
            if not told:
                log.warning(
                    "SQLite store %s is in use by another streamchat process (pid %s): "
                    "waiting up to %g s for it to stop",
                    path,
                    holder,
                    wait_seconds,
                )
                told = True
            time.sleep(0.1)
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("SQLite store %s: cannot lock it (%s); run one process on it", path, exc)
            handle.close()
            return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode("ascii"))
    handle.flush()
    return handle


class _transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class _Call:
    """One queued call and where its result goes."""

    __slots__ = ("alone", "args", "fn", "future", "loop", "ok", "value")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        alone: bool,
    ) -> None:
        self.fn, self.args, self.future, self.alone = fn, args, future, alone
        self.loop = future.get_loop()
        self.ok = False
        self.value: Any = None

    def run(self) -> None:
        try:
            self.value, self.ok = self.fn(*self.args), True
        except Exception as exc:  # handed to the caller and raised there
            self.value = exc


class _Worker:
    """The thread that owns the connection. The calls an event loop makes in one pass of its
    loop go to the thread together, and the calls waiting when the thread is free run as one
    batch: one transaction with a savepoint each; a call marked `alone` (open, close) runs by
    itself, outside any transaction. Results go back with one wake-up of the loop per batch."""

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection
        self._queue: queue.SimpleQueue[list[_Call] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Calls made in the loop's current pass, sent on at its next (one wake of the thread
        # for all of them, rather than one each as they come): per loop, as a test may use
        # one store from two.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Call]] = {}

    async def call(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._send, loop)
        pending.append(_Call(fn, args, future, alone))
        return await future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        calls = self._pending.pop(loop, None)
        if calls:
            self._queue.put(calls)

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            for loop in list(self._pending):
                self._send(loop)
            self._queue.put(None)
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        waiting: list[_Call] = []  # taken from the queue, not run yet
        stopping = False
        while True:
            if not waiting:
                if stopping:
                    return
                sent = self._queue.get()
                if sent is None:
                    return
                waiting = sent
            while not stopping:  # whatever else was sent meanwhile joins the batch
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    waiting += more
            if waiting[0].alone:
                first = waiting.pop(0)
                first.run()
                _deliver([first])
                continue
            end = 1
            while end < len(waiting) and end < MAX_BATCH and not waiting[end].alone:
                end += 1
            batch, waiting = waiting[:end], waiting[end:]
            self._run_batch(batch)
            _deliver(batch)

    def _run_batch(self, batch: list[_Call]) -> None:
        """Every call in one transaction, each in a savepoint of its own (a call alone needs
        none): a call that raises is undone alone and gets its exception; a failed commit fails
        them all."""
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            for call in batch:
                call.value = exc
            return
        try:
            if len(batch) == 1:  # alone: undoing the transaction undoes the call
                call = batch[0]
                call.run()
                if call.ok:
                    db.execute("COMMIT")
                else:
                    with contextlib.suppress(sqlite3.Error):  # the call's own error is the one
                        db.execute("ROLLBACK")
                return
            for call in batch:
                db.execute("SAVEPOINT call")
                call.run()
                if not call.ok:
                    db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
            db.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed (a full disk, say)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for call in batch:
                call.value, call.ok = exc, False


def _deliver(batch: list[_Call]) -> None:
    """Wake each loop that waits on the batch once, with all of its results."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
    for call in batch:
        by_loop.setdefault(call.loop, []).append(call)
    for loop, calls in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, calls)


def _settle(calls: list[_Call]) -> None:
    for call in calls:
        if call.future.done():  # its caller was cancelled meanwhile
            continue
        if call.ok:
            call.future.set_result(call.value)
        else:
            call.future.set_exception(call.value)
