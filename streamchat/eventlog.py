"""The event log of one turn: every event is appended before any reader sees it.

A turn's task appends batches of events (one batch per upstream read); any number of readers
follow the log from an index (`follow(after)`), so the response that started the turn, a second
tab joining it, and a client resuming after a dropped connection all read the same events with
the same `chunkIndex` and `elapsedMs`. Readers wake on appends rather than polling: each waiting
reader parks one future, and an append resolves them. The log holds events, not wire bytes, so
every protocol can encode it its own way.

`RetainedLogs` keeps finished logs for late readers, bounded by age and by an estimate of their
size: the oldest go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from streamchat.events import ArtifactCompleted, ArtifactContent, Event, TextChunk

# What an event costs beyond its text, roughly: the dataclass, its list slot, its elapsed float.
_EVENT_OVERHEAD = 120


class TurnLog:
    def __init__(self, owner: str, conversation_id: str) -> None:
        self.owner = owner
        self.conversation_id = conversation_id
        self.turn = 0  # numbered when the turn begins, before its first event
        self.events: list[Event] = []
        self.elapsed_ms: list[float] = []
        self.finished = False
        self.finished_at = 0.0
        self._started = time.perf_counter()
        self._waiters: list[asyncio.Future[None]] = []

    def start_clock(self) -> None:
        """`elapsedMs` counts from here: when the turn begins, not when it was queued."""
        self._started = time.perf_counter()

    def append(self, batch: list[Event]) -> None:
        elapsed = round((time.perf_counter() - self._started) * 1000, 1)
        self.events += batch
        self.elapsed_ms += [elapsed] * len(batch)
        self._wake()

    def close(self) -> None:
        self.finished = True
        self.finished_at = time.monotonic()
        self._wake()

    async def follow(self, after: int = -1) -> AsyncIterator[tuple[int, list[Event], list[float]]]:
        """`(first index, events, elapsed)` for every event after index `after`, as they come,
        until the log is closed."""
        cursor = after + 1
        loop = asyncio.get_running_loop()
        while True:
            end = len(self.events)
            if cursor < end:
                yield cursor, self.events[cursor:end], self.elapsed_ms[cursor:end]
                cursor = end
            elif self.finished:
                return
            else:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if not waiter.done():
                        self._waiters.remove(waiter)

    def size_estimate(self) -> int:
        size = 256
        for event in self.events:
            size += _EVENT_OVERHEAD
            if type(event) is TextChunk:
                size += len(event.text)
            elif type(event) is ArtifactContent:
                size += len(event.content_delta)
            elif type(event) is ArtifactCompleted:
                size += len(event.content)
        return size

    def _wake(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters = []


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
