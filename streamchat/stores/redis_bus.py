"""The event bus on Redis: a turn's log as a Redis Stream, stops over pub/sub.

Each turn's events go to one stream, `<prefix>turn:<owner>:<conversation>:<turn>`, one entry per
batch of events (one upstream read, not one token) whose id is `0-<last chunkIndex + 1>`, so "the
events after index k" is `XREAD ... 0-<k + 1>` and a resume needs no lookup. The process running
the turn hands each batch to one pipeline shared by every turn, sent at most every `FLUSH_SECONDS`
(a batch whose write failed goes with the next one),
keeps a liveness key alive while the turn runs, and sets the stream to expire
`RESUME_RETENTION_SECONDS` after its terminal event. A reader on
another process blocks in `XREAD`; when the stream is quiet and the liveness key has expired,
the process running the turn died, and the reader gets `error` with `code: interrupted`.
Stop requests and approvals go out on one pub/sub channel that every process listens to with
one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamchat.eventbus import Batch
from streamchat.eventlog import TurnLog
from streamchat.events import ErrorEvent, Event, Terminal, from_wire, wire_json
from streamchat.stores.base import StoreUnavailable

log = logging.getLogger(__name__)

# A running turn's liveness key lives this long unless refreshed; a third of it apart.
ALIVE_SECONDS = 3.0
# Readers on other processes say so this often (and the mark lasts three times as long).
READING_SECONDS = 2.0
MAX_STREAM_ENTRIES = 100_000
# How long a running turn's stream is kept past the retention, should its process die.
RUNNING_TTL_MS = 3_600_000
# Every running turn's new events go to Redis together, in one pipeline at most this often: a
# reader on another process sees a token at most this much later, and a paced model's token
# costs a command in a shared pipeline rather than a round trip of its own.
FLUSH_SECONDS = 0.05


class RedisEventBus:
    def __init__(self, client: Redis, retention_seconds: float, prefix: str = "sc:") -> None:
        self._client = client
        self._retention_ms = max(1000, int(retention_seconds * 1000))
        self._prefix = prefix
        self._channel = prefix + "stop"
        self._listener: asyncio.Task[None] | None = None
        self._flusher = _Flusher(client, self._retention_ms)

    def turn_key(self, owner: str, conversation_id: str, turn: int) -> str:
        owner_part = quote(owner.encode("utf-8", "surrogatepass"), safe="")
        return f"{self._prefix}turn:{owner_part}:{quote(conversation_id, safe='')}:{turn}"

    # --- stops ----------------------------------------------------------------------------------

    async def listen(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self._listener = asyncio.create_task(self._listen(on_message), name="redis-bus-listener")

    async def _listen(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None:
                        data = json.loads(message["data"])
                        if isinstance(data, dict):
                            on_message(data)
            except (RedisError, OSError) as exc:
                log.warning("stop requests from Redis paused: %s; retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                # Closed here, in the task that opened it: a pub/sub left open leaks its
                # connection, and closing one from another task can hang.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 2.0)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._client.aclose()

    async def request_stop(self, owner: str, conversation_id: str) -> None:
        await self._send({"op": "stop", "owner": owner, "conversationId": conversation_id})

    async def request_approval(
        self, owner: str, conversation_id: str, tool_id: str, approved: bool
    ) -> None:
        message = {"op": "approve", "owner": owner, "conversationId": conversation_id}
        await self._send({**message, "toolId": tool_id, "approved": approved})

    async def _send(self, message: dict[str, Any]) -> None:
        await self._call(self._client.publish(self._channel, json.dumps(message)))

    # --- the turn's log -------------------------------------------------------------------------

    async def mirror(self, turn_log: TurnLog) -> None:
        key = self.turn_key(turn_log.owner, turn_log.conversation_id, turn_log.turn)
        alive = key + ":alive"
        beat = asyncio.create_task(self._heartbeat(alive))
        unsent: list[str] = []  # the events' wire JSON, not yet in the stream
        expiring = False
        try:
            async for first, events, elapsed in turn_log.follow():
                unsent += [wire_json(first + n, e, elapsed[n]) for n, e in enumerate(events)]
                last = first + len(events) - 1
                finished = isinstance(events[-1], Terminal)
                try:
                    # Waits for the next shared flush: what the log gains meanwhile goes in
                    # this turn's next entry.
                    await self._flusher.send(_Entry(key, unsent, last, finished, not expiring))
                except (RedisError, OSError) as exc:
                    # Kept, and sent with the next batch: a reader elsewhere sees it late,
                    # never a gap.
                    log.warning("could not share turn %s's events yet: %s", key, exc)
                    continue
                unsent, expiring = [], True
        finally:
            beat.cancel()

    async def _heartbeat(self, alive: str) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self._client.set(alive, "1", px=int(ALIVE_SECONDS * 1000))
            await asyncio.sleep(ALIVE_SECONDS / 3)

    async def remote(self, owner: str, conversation_id: str, turn: int) -> RedisRemoteLog | None:
        key = self.turn_key(owner, conversation_id, turn)
        found = await self._call(self._client.exists(key, key + ":alive"))
        if not found:
            return None
        return RedisRemoteLog(self._client, key, conversation_id, turn)

    async def has_readers(self, owner: str, conversation_id: str, turn: int) -> bool:
        key = self.turn_key(owner, conversation_id, turn) + ":reading"
        return bool(await self._call(self._client.exists(key)))

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from None


class _Entry:
    """One turn's events since its last entry, on their way to its stream."""

    __slots__ = ("events", "finished", "first", "key", "last")

    def __init__(self, key: str, events: list[str], last: int, finished: bool, first: bool):
        self.key, self.events, self.last = key, events, last
        self.finished, self.first = finished, first


class _Flusher:
    """Sends the entries of every running turn in one pipeline, at most every `FLUSH_SECONDS`.

    A turn's mirror hands its entry over and waits for the flush that carries it (or for its
    error), so each turn has at most one entry in flight and its entries stay in order. One
    entry per turn and flush is one stream entry whose id is the index of its last event.
    """

    def __init__(self, client: Redis, retention_ms: int) -> None:
        self._client = client
        self._retention_ms = retention_ms
        self._waiting: list[tuple[_Entry, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0

    async def send(self, entry: _Entry) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, future))
        if self._timer is None:
            loop = asyncio.get_running_loop()
            # A terminal event, or a first entry after a quiet spell, goes at once.
            due = 0.0 if entry.finished else max(0.0, self._last + FLUSH_SECONDS - loop.time())
            self._timer = loop.call_later(due, self._flush)
        await future

    def _flush(self) -> None:
        self._timer = None
        self._last = asyncio.get_running_loop().time()
        waiting, self._waiting = self._waiting, []
        task = asyncio.create_task(self._write(waiting))
        _flushes.add(task)
        task.add_done_callback(_flushes.discard)

    async def _write(self, waiting: list[tuple[_Entry, asyncio.Future[None]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        ends: list[int] = []  # where each entry's commands end in the pipeline's replies
        for entry, _ in waiting:
            key = entry.key
            pipe.xadd(
                key,
                {"e": "[" + ",".join(entry.events) + "]"},
                id=f"0-{entry.last + 1}",
                maxlen=MAX_STREAM_ENTRIES,
                approximate=True,
            )
            if entry.finished:
                pipe.pexpire(key, self._retention_ms)
                pipe.delete(key + ":alive")
            elif entry.first:  # a running turn's stream outlives it by the retention
                pipe.pexpire(key, self._retention_ms + RUNNING_TTL_MS)
            ends.append(len(pipe))
        try:
            # One turn's refused entry must not fail the others: each is judged by its replies.
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            replies = [exc] * len(pipe)
        start = 0
        for (_, future), end in zip(waiting, ends, strict=True):
            # The XADD decides: the expiry commands after it only tidy up.
            reply = replies[start]
            start = end
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(None)


# The flushes under way (a task is kept referenced until it is done).
_flushes: set[asyncio.Task[None]] = set()


class RedisRemoteLog:
    """A turn run by another process, read from its stream."""

    def __init__(self, client: Redis, key: str, conversation_id: str, turn: int) -> None:
        self._client = client
        self.conversation_id = conversation_id
        self.turn = turn
        self._key = key

    async def tail(self) -> tuple[int, bool]:
        # redis-py types stream replies loosely (RESP2 and RESP3 shapes): read them as Any.
        last: Any = await self._client.xrevrange(self._key, count=1)
        if not last:
            return -1, False
        entry_id, fields = last[0]
        return _index(entry_id), _wires(fields)[-1]["type"] in ("completion", "error")

    async def follow(self, after: int = -1) -> AsyncIterator[Batch]:
        cursor = f"0-{after + 1}"
        marked = 0.0
        while True:
            if time.monotonic() - marked > READING_SECONDS:
                await self._client.set(self._key + ":reading", "1", px=int(READING_SECONDS * 3000))
                marked = time.monotonic()
            reply: Any = await self._client.xread({self._key: cursor}, count=1000, block=1000)
            if not reply:
                if not await self._client.exists(self._key + ":alive"):
                    yield after + 1, [ErrorEvent(INTERRUPTED, "interrupted")], [0.0]
                    return
                continue
            entries = reply[0][1]
            events: list[Event] = []
            elapsed: list[float] = []
            for _, fields in entries:
                for wire in _wires(fields):
                    if wire["chunkIndex"] > after + len(events):  # a batch may reach back
                        events.append(from_wire(wire))
                        elapsed.append(wire["elapsedMs"])
            cursor = _text(entries[-1][0])
            first, after = after + 1, after + len(events)
            if events:
                yield first, events, elapsed
                if isinstance(events[-1], Terminal):
                    return


INTERRUPTED = "The server running this answer stopped. Send the message again."


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _index(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[2]) - 1


def _wires(fields: dict[Any, Any]) -> list[dict[str, Any]]:
    """The events of one stream entry (one batch), as their wire dicts."""
    wires: list[dict[str, Any]] = json.loads(fields[b"e"] if b"e" in fields else fields["e"])
    return wires
