"""Turns across processes: what one process's turns show the others, when a store shares them.

With one process (the SQLite and memory stores) a turn's `TurnLog` in memory is all there is.
With several (Redis), the process running a turn mirrors its log to the shared store as it goes
(`mirror`), and a reader that lands on another process follows that copy (`remote`); a stop
asked for on any process reaches the one running the turn (`request_stop`, `listen`), and a
reader on another process keeps the turn from being abandoned (`has_readers`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from streamchat.eventlog import TurnLog
from streamchat.events import Event

Batch = tuple[int, list[Event], list[float]]


class Followable(Protocol):
    """What a response reads: a turn's events from an index on, live until the terminal one."""

    turn: int
    conversation_id: str

    def follow(self, after: int = -1) -> AsyncIterator[Batch]: ...


class RemoteLog(Followable, Protocol):
    async def tail(self) -> tuple[int, bool]:
        """The index of the last event so far, and whether it was the terminal one."""
        ...


class EventBus(Protocol):
    async def listen(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        """Start taking requests (stops, approvals) for turns this process may run."""

    async def close(self) -> None: ...

    async def mirror(self, log: TurnLog) -> None:
        """Copy the log to the shared store as it grows, until it closes."""

    async def remote(
        self, owner: str, conversation_id: str, turn: int, *, running: bool = False
    ) -> RemoteLog | None:
        """The shared copy of a turn's log, while it runs or is retained. `running`: the store
        says the turn runs on a live process, which may not have shared its first events yet:
        the copy is followed all the same (and ends `interrupted` if that process dies)."""

    async def request_stop(self, owner: str, conversation_id: str) -> None: ...

    async def request_approval(
        self, owner: str, conversation_id: str, tool_id: str, approved: bool
    ) -> None: ...

    async def announce_deleted(self, owner: str, conversation_id: str) -> None:
        """Tell every process the conversation was deleted: they forget the turns of it they
        kept for late readers (a new conversation of that id numbers its turns from 1 again)."""

    async def has_readers(self, owner: str, conversation_id: str, turn: int) -> bool:
        """Whether a reader on another process follows the turn."""
