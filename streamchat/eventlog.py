"""The event log of one turn: every event is appended before any reader sees it.

A turn's task appends batches of events (one batch per upstream read); any number of readers
follow the log from an index (`follow(after)`), so the response that started the turn, a second
tab joining it, and a client resuming after a dropped connection all read the same events with
the same `chunkIndex` and `elapsedMs`. Readers wake on appends rather than polling: each waiting
reader parks one future, and an append resolves them. A reader that has caught up may instead
leave a `Push`: the append hands it the new events at once, in the turn's task, and the reader's
own task sleeps until the push declines (its connection cannot take a write without waiting) or
the log closes. With a paced model that saves a task switch per token and reader. The log holds
events, not wire bytes, so every protocol can encode it its own way.

A log keeps its text events as plain strings (`CompactEvents`), which the garbage collector
does not track, and makes them events again for a reader that reads them back. A tracked object
kept per token made the collector's young generation fill up a dozen times a second under 200
paced streams, and each of those collections walked every stream's suspended generators; and
minutes of finished turns are hundreds of thousands of events, which every full collection walked.

`RetainedLogs` keeps finished logs for late readers, bounded by age and by an estimate of their
size: the oldest go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import overload

from streamchat.events import (
    ArtifactCompleted,
    ArtifactContent,
    Event,
    TextChunk,
    text_json,
    wire_json,
)

# What an event costs beyond its text, roughly: the dataclass, its list slot, its elapsed float.
_EVENT_OVERHEAD = 120

# Delivers `(first index, events, elapsed)` on the spot and says True, or takes nothing and says
# False: the reader then reads that batch itself. It must not raise.
Push = Callable[[int, list[Event], list[float]], bool]


class TurnLog:
    def __init__(self, owner: str, conversation_id: str) -> None:
        self.owner = owner
        self.conversation_id = conversation_id
        self.turn = 0  # numbered when the turn begins, before its first event
        self.events = CompactEvents()  # text as strings: see the module's docstring
        self.elapsed_ms: list[float] = []
        self.finished = False
        self.finished_at = 0.0
        self._started = time.perf_counter()
        self._waiters: list[asyncio.Future[None]] = []
        # Readers delivered to by append, each with the future its task sleeps on: resolved with
        # the index it should read on from when its push declines or the log closes.
        self._pushers: list[tuple[Push, asyncio.Future[int]]] = []
        self._watchers: list[Callable[[], None]] = []
        self._held: list[Event] | None = None

    def start_clock(self) -> None:
        """`elapsedMs` counts from here: when the turn begins, not when it was queued."""
        self._started = time.perf_counter()

    def append(self, batch: list[Event], hold: bool = False) -> None:
        """Add a batch, delivered to the readers at once; with `hold`, at the next append or
        the loop's next turn, whichever comes first (so a round's `tool_executing` and the
        result of a call that never waits leave in one write)."""
        if hold:
            if self._held is None:
                self._held = list(batch)
                asyncio.get_running_loop().call_soon(self._release)
            else:
                self._held += batch
            return
        if self._held is not None:
            batch = self._held + batch
            self._held = None
        elapsed = round((time.perf_counter() - self._started) * 1000, 1)
        first = len(self.events)
        times = [elapsed] * len(batch)
        self.events.extend(batch)
        self.elapsed_ms += times
        if self._pushers:
            self._push(first, batch, times)
        for watcher in self._watchers:
            watcher()
        self._wake()

    def _release(self) -> None:
        if self._held is not None and not self.finished:
            self.append([])

    def close(self) -> None:
        if self._held is not None:
            self.append([])
        self.finished = True
        self.finished_at = time.monotonic()
        for watcher in self._watchers:
            watcher()
        end = len(self.events)
        for _, waiter in self._pushers:
            if not waiter.done():
                waiter.set_result(end)
        self._pushers = []
        self._wake()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` after every append and at the close, in the appending task (it
        must not raise), until the function returned is called: a reader that reads the log on
        its own schedule (the Redis mirror) needs no task waiting on it."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    async def follow(
        self, after: int = -1, push: Push | None = None
    ) -> AsyncIterator[tuple[int, list[Event], list[float]]]:
        """`(first index, events, elapsed)` for every event after index `after`, as they come,
        until the log is closed; once caught up, through `push` while it takes them."""
        cursor = after + 1
        loop = asyncio.get_running_loop()
        while True:
            end = len(self.events)
            if cursor < end:
                yield cursor, self.events[cursor:end], self.elapsed_ms[cursor:end]
                cursor = end
            elif self.finished:
                return
            elif push is not None:
                pushed: asyncio.Future[int] = loop.create_future()
                entry = (push, pushed)
                self._pushers.append(entry)
                try:
                    cursor = await pushed
                finally:
                    if entry in self._pushers:
                        self._pushers.remove(entry)
            else:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if not waiter.done():
                        self._waiters.remove(waiter)

    def size_estimate(self) -> int:
        return 256 + self.events.size_estimate()

    def _push(self, first: int, batch: list[Event], times: list[float]) -> None:
        kept: list[tuple[Push, asyncio.Future[int]]] = []
        for entry in self._pushers:
            push, pushed = entry
            if pushed.done():  # its reader was cancelled
                continue
            if push(first, batch, times):
                kept.append(entry)
            else:
                pushed.set_result(first)
        self._pushers = kept

    def _wake(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters = []


class CompactEvents(Sequence[Event]):
    """A log's events: each text event as its string (not tracked by the garbage collector),
    the few others as they are; read back as events."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[str | Event] = []

    def extend(self, events: list[Event]) -> None:
        items = self._items
        for event in events:
            items.append(event.text if type(event) is TextChunk else event)

    def __len__(self) -> int:
        return len(self._items)

    def size_estimate(self) -> int:
        size = _EVENT_OVERHEAD * len(self._items)
        for item in self._items:
            if type(item) is str:
                size += len(item)
            elif type(item) is ArtifactContent:
                size += len(item.content_delta)
            elif type(item) is ArtifactCompleted:
                size += len(item.content)
        return size

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [_event(item) for item in self._items[index]]
        return _event(self._items[index])

    def __iter__(self) -> Iterator[Event]:
        return (_event(item) for item in self._items)

    def wire_jsons(self, start: int, end: int, elapsed_ms: list[float]) -> list[str]:
        """The wire JSON of events `start` to `end - 1` (`elapsed_ms` theirs), as `wire_json`
        gives it; a text event's straight from its string."""
        wires = []
        for n, item in enumerate(self._items[start:end]):
            if isinstance(item, str):
                wires.append(text_json(start + n, item, elapsed_ms[n]))
            else:
                wires.append(wire_json(start + n, item, elapsed_ms[n]))
        return wires


def _event(item: str | Event) -> Event:
    return TextChunk(item) if type(item) is str else item  # type: ignore[return-value]


class RetainedLogs:
    """Finished logs kept for `retention_seconds`, and at most `max_bytes` of them, by estimate."""

    def __init__(self, retention_seconds: float, max_bytes: int) -> None:
        self.retention = retention_seconds
        self.max_bytes = max_bytes
        self.bytes = 0
        self._logs: OrderedDict[tuple[str, str, int], tuple[TurnLog, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def add(self, log: TurnLog) -> None:
        if self.retention <= 0:
            return
        size = log.size_estimate()
        key = (log.owner, log.conversation_id, log.turn)
        self._logs[key] = (log, size)
        self.bytes += size
        self.expire()

    def get(self, owner: str, conversation_id: str, turn: int) -> TurnLog | None:
        self.expire()
        found = self._logs.get((owner, conversation_id, turn))
        return found[0] if found is not None else None

    def forget(self, owner: str, conversation_id: str) -> None:
        for key in [k for k in self._logs if k[0] == owner and k[1] == conversation_id]:
            self.bytes -= self._logs.pop(key)[1]

    def expire(self) -> None:
        too_old = time.monotonic() - self.retention
        while self._logs:
            log, size = next(iter(self._logs.values()))
            if log.finished_at > too_old and self.bytes <= self.max_bytes:
                return
            self._logs.popitem(last=False)
            self.bytes -= size
