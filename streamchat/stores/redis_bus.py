"""The event bus on Redis: a turn's log as a Redis Stream, stops over pub/sub.

Each turn's events go to one stream, `<prefix>turn:<owner>:<conversation>:<turn>`, one entry per
flush (the events the turn's log gained since the last one) whose id is `0-<last chunkIndex + 1>`,
so "the events after index k" is `XREAD ... 0-<k + 1>` and a resume needs no lookup. The process
running turns sends the new events of all of them in one script call, at most every
`FLUSH_SECONDS`, read straight from their logs: no task per turn, nothing done per token but
marking the log as having news (what a failed write did not send goes with the next one; after
a flush whose answer never came, the next looks at what the stream holds first, so no event goes
in twice). The same call keeps each running turn's liveness key alive, and sets the stream to
expire `RESUME_RETENTION_SECONDS` after its terminal event. A reader on another process blocks
in `XREAD`; when the stream is quiet and the liveness key has expired, the process running the
turn died, and the reader gets `error` with `code: interrupted`. Stop requests and approvals go
out on one pub/sub channel that every process listens to with one connection.
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
from streamchat.events import ErrorEvent, Event, Terminal, from_wire
from streamchat.stores.base import StoreUnavailable

log = logging.getLogger(__name__)

# A running turn's liveness key lives this long unless refreshed; a third of it apart.
ALIVE_SECONDS = 3.0
# Readers on other processes say so this often (and the mark lasts three times as long).
READING_SECONDS = 2.0
MAX_STREAM_ENTRIES = 100_000
# How long a running turn's stream is kept past the retention, should its process die.
RUNNING_TTL_MS = 3_600_000
# Every running turn's new events go to Redis together, in one script call at most this often: a
# reader on another process sees a token at most this much later, and a paced model's token
# costs a part of a shared call rather than a round trip of its own.
FLUSH_SECONDS = 0.05
# After a refused flush, the next one waits this long; a finished turn's events that are still
# refused after GIVE_UP_SECONDS are given up (its readers elsewhere then get `interrupted`).
RETRY_SECONDS = 1.0
GIVE_UP_SECONDS = 30.0
# Mirrors a flush sends in one script call at most (a longer flush takes several).
FLUSH_MIRRORS = 500

# One flush: every mirror's new entry, its stream's expiry, and its liveness key, in one command
# (as a pipeline of several per turn, redis-py's packing and parsing of each command cost more
# than everything else a paced token costs). An entry Redis refuses is that mirror's alone.
FLUSH = """
-- KEYS: for each mirror, its stream and its liveness key
-- ARGV: max entries, retention ms, running-turn ttl ms, liveness ms, then for each mirror:
--   the entry's id ('' for none), its events' JSON, flags ('f' final, 's' first entry,
--   'a' liveness due, 'u' unsure whether an earlier entry landed), its first event's index
-- Returns for each mirror 1 (its entry stored, or none to store), 'have:<n>' (the stream
-- already holds its events before index n: send from there), or the error Redis gave.
-- Every command is a pcall: the script never stops half-way with some entries added.
local out = {}
for i = 1, #KEYS / 2 do
  local stream, alive = KEYS[2 * i - 1], KEYS[2 * i]
  local id, entry, flags = ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
  local result = 1
  if id ~= '' and string.find(flags, 'u', 1, true) then
    local top = redis.pcall('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if type(top) == 'table' and top[1] then
      local have = tonumber(string.match(top[1][1], '^0%-(%d+)$'))
      local want = tonumber(string.sub(id, 3))
      if have and have >= want then
        id = ''
      elseif have and have > tonumber(ARGV[4 * i + 4]) then
        result = 'have:' .. have
      end
    end
  end
  if result == 1 and id ~= '' then
    local added = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[1], id, 'e', entry)
    if type(added) == 'table' and added.err then result = added.err end
  end
  if result == 1 and entry ~= '' then
    if string.find(flags, 'f', 1, true) then
      redis.pcall('PEXPIRE', stream, ARGV[2])
      redis.pcall('DEL', alive)
    elseif string.find(flags, 's', 1, true) then
      redis.pcall('PEXPIRE', stream, ARGV[3])
    end
  end
  if string.find(flags, 'a', 1, true) then
    redis.pcall('SET', alive, '1', 'PX', ARGV[4])
  end
  out[i] = result
end
return out
"""


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

    async def announce_deleted(self, owner: str, conversation_id: str) -> None:
        await self._send({"op": "deleted", "owner": owner, "conversationId": conversation_id})

    async def _send(self, message: dict[str, Any]) -> None:
        await self._call(self._client.publish(self._channel, json.dumps(message)))

    # --- the turn's log -------------------------------------------------------------------------

    async def mirror(self, turn_log: TurnLog) -> None:
        """Share the turn's log until its terminal event is in Redis (or the turn is dropped,
        should it never be)."""
        key = self.turn_key(turn_log.owner, turn_log.conversation_id, turn_log.turn)
        mirror = _Mirror(turn_log, key, asyncio.get_running_loop().create_future())
        self._flusher.add(mirror)
        try:
            await mirror.done
        finally:
            self._flusher.remove(mirror)

    async def remote(
        self, owner: str, conversation_id: str, turn: int, *, running: bool = False
    ) -> RedisRemoteLog | None:
        key = self.turn_key(owner, conversation_id, turn)
        if not running and not await self._call(self._client.exists(key, key + ":alive")):
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


class _Mirror:
    """One running turn's log and how much of it is in its stream."""

    __slots__ = ("alive_at", "done", "failing_since", "key", "log", "sent", "unsure", "unwatch")

    def __init__(self, turn_log: TurnLog, key: str, done: asyncio.Future[None]) -> None:
        self.log, self.key, self.done = turn_log, key, done
        self.sent = 0  # the events before this index are in the stream
        self.alive_at = -ALIVE_SECONDS  # when the liveness key was last set
        self.failing_since: float | None = None  # its entries refused since then
        # A flush failed without an answer: its entry may be in the stream, or not.
        self.unsure = False
        self.unwatch: Callable[[], None] = _nothing


def _nothing() -> None:
    return None


class _Flusher:
    """Sends what every running turn's log gained, in one script call, at most every
    `FLUSH_SECONDS`, and keeps their liveness keys alive.

    An append only marks its log as having news and arms the timer if it is not armed; a
    terminal event arms it to fire at once. One flush is in flight at a time, so each turn's
    entries reach its stream in order; a mirror whose entry was refused keeps its events for
    the next flush.
    """

    def __init__(self, client: Redis, retention_ms: int) -> None:
        self._client = client
        self._script = client.register_script(FLUSH)
        self._retention_ms = retention_ms
        self._mirrors: set[_Mirror] = set()
        self._news: set[_Mirror] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._beat: asyncio.TimerHandle | None = None
        self._writing = False
        self._last = 0.0
        self._retry_at = 0.0

    def add(self, mirror: _Mirror) -> None:
        self._mirrors.add(mirror)
        mirror.unwatch = mirror.log.watch(lambda: self._noted(mirror))
        self._noted(mirror)  # its liveness key goes out with the next flush
        if self._beat is None:
            self._beat = asyncio.get_running_loop().call_later(ALIVE_SECONDS / 3, self._heartbeat)

    def remove(self, mirror: _Mirror) -> None:
        mirror.unwatch()
        self._mirrors.discard(mirror)
        self._news.discard(mirror)

    def _noted(self, mirror: _Mirror) -> None:
        """The log has news (an append), or has closed: its terminal event goes at once."""
        self._news.add(mirror)
        if self._writing or (self._timer is not None and not mirror.log.finished):
            return  # the flush under way, or the one armed, takes it
        self._arm(mirror.log.finished)

    def _arm(self, at_once: bool) -> None:
        loop = asyncio.get_running_loop()
        # A terminal event goes at once, and so does a first entry after a quiet spell; after
        # a refused write, not before RETRY_SECONDS.
        due = 0.0 if at_once else max(0.0, self._last + FLUSH_SECONDS - loop.time())
        due = max(due, self._retry_at - loop.time())
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(due, self._flush)

    def _heartbeat(self) -> None:
        """Running turns that sent nothing lately still need their liveness keys refreshed."""
        self._beat = None
        if not self._mirrors:
            return
        stale = asyncio.get_running_loop().time() - ALIVE_SECONDS / 3
        for mirror in self._mirrors:
            if mirror.alive_at <= stale:
                self._noted(mirror)
        self._beat = asyncio.get_running_loop().call_later(ALIVE_SECONDS / 3, self._heartbeat)

    def _flush(self) -> None:
        self._timer = None
        if self._writing or not self._news:
            return
        self._writing = True
        self._last = asyncio.get_running_loop().time()
        news, self._news = self._news, set()
        task = asyncio.create_task(self._write(news))
        _flushes.add(task)
        task.add_done_callback(_flushes.discard)

    async def _write(self, news: set[_Mirror]) -> None:
        try:
            await self._send(news)
        finally:
            self._writing = False
            self._arm_after_write()

    def _arm_after_write(self) -> None:
        if self._news and self._timer is None:
            self._arm(any(m.log.finished for m in self._news))

    async def _send(self, news: set[_Mirror]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now - ALIVE_SECONDS / 3
        # mirror, its events sent up to, final, and its four arguments of the script
        sent: list[tuple[_Mirror, int, bool, tuple[str, str, str, int]]] = []
        for mirror in news:
            turn_log = mirror.log
            end = len(turn_log.events)
            first = mirror.sent
            entry_id = entry = flags = ""
            final = False
            if end > first:
                wires = turn_log.events.wire_jsons(first, end, turn_log.elapsed_ms[first:end])
                entry_id, entry = f"0-{end}", "[" + ",".join(wires) + "]"
                final = isinstance(turn_log.events[end - 1], Terminal)
                flags = "f" if final else "s" if first == 0 else ""
                if mirror.unsure:
                    flags += "u"
            if not final and mirror.alive_at <= due:
                flags += "a"
                mirror.alive_at = now
            if entry_id or flags:
                sent.append((mirror, end, final, (entry_id, entry, flags, first)))
        common = [
            MAX_STREAM_ENTRIES,
            self._retention_ms,
            self._retention_ms + RUNNING_TTL_MS,
            int(ALIVE_SECONDS * 1000),
        ]
        refused: BaseException | str | None = None
        for at in range(0, len(sent), FLUSH_MIRRORS):
            part = sent[at : at + FLUSH_MIRRORS]
            try:
                replies = await self._script(
                    keys=[key for m, *_ in part for key in (m.key, m.key + ":alive")],
                    args=common + [arg for *_, own in part for arg in own],
                )
            except Exception as exc:  # no answer: each entry may have landed, or not
                replies = [exc] * len(part)
                for mirror, *_ in part:
                    mirror.unsure = True
            for (mirror, end, final, _), reply in zip(part, replies, strict=True):
                have = _have(reply)
                if have is not None:  # an earlier entry did land: the rest goes next time
                    mirror.sent, mirror.unsure = have, False
                    self._refused(mirror, now)
                    continue
                if reply != 1:
                    refused = reply
                    self._refused(mirror, now)
                    continue
                mirror.sent, mirror.failing_since, mirror.unsure = end, None, False
                if final and not mirror.done.done():
                    mirror.done.set_result(None)
        if refused is not None:
            log.warning("could not share the events of running turns yet: %s", refused)
            self._retry_at = loop.time() + RETRY_SECONDS

    def _refused(self, mirror: _Mirror, now: float) -> None:
        """Its events stay for a later flush: a reader elsewhere sees them late, never with a
        gap. A finished turn's are given up after `GIVE_UP_SECONDS` of refusals."""
        if mirror.failing_since is None:
            mirror.failing_since = now
        mirror.alive_at = -ALIVE_SECONDS
        if mirror.log.finished and now - mirror.failing_since > GIVE_UP_SECONDS:
            log.warning("turn %s's last events could not be shared: given up", mirror.key)
            if not mirror.done.done():
                mirror.done.set_result(None)
        elif mirror in self._mirrors:
            self._news.add(mirror)


def _have(reply: object) -> int | None:
    """`have:<n>` from the flush script: the stream holds the events before index n."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    if isinstance(text, str) and text.startswith("have:") and text[5:].isdigit():
        return int(text[5:])
    return None


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
            reply: Any
            if time.monotonic() - marked > READING_SECONDS:
                # The mark goes with the read: one round trip, not two, before the first events.
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.set(self._key + ":reading", "1", px=int(READING_SECONDS * 3000))
                    pipe.xread({self._key: cursor}, count=1000, block=1000)
                    _, reply = await pipe.execute()
                marked = time.monotonic()
            else:
                reply = await self._client.xread({self._key: cursor}, count=1000, block=1000)
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
