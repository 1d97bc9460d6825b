"""The store protocol: where conversations live, written explicitly, one turn at a time.

A store keeps each conversation under its owner (`"anonymous"` until callers authenticate), so
another owner's conversation with the same id is simply a different key. A turn's writes are
explicit and happen as the turn goes: `begin_turn` stores the user message and numbers the turn,
`append` stores each complete tool round (an assistant `tool_calls` message together with all
its `tool` results, never one without the other), and `end_turn` stores the final or partial
text and the turn's artifacts. `lock` keeps a conversation's turns one at a time. Each store
counts the bytes a conversation holds (its messages and artifacts as stored), so a conversation
past `MAX_CONVERSATION_BYTES` can be refused a new turn without being read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from streamchat.eventbus import EventBus
from streamchat.providers.base import Message

ANONYMOUS = "anonymous"
TITLE_CHARS = 80

# How a turn ended, as the store records it.
Outcome = Literal["completed", "cancelled", "error", "interrupted"]


class StoreError(Exception):
    """The store cannot be used: a bad URL, a file from a newer version, an unreachable server."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the request is answered `503 store_unavailable`."""


class LeaseLost(StoreError):
    """A turn's write was refused: its process no longer holds the conversation's lease.

    Stores shared by several processes hand a conversation to one turn at a time with a lease
    that expires; a holder that was paused or cut off past it may find another process running
    the conversation, and must not write over that turn.
    """


@dataclass(slots=True)
class ConversationInfo:
    """What the conversation list shows of one conversation."""

    id: str
    title: str
    created_at: float  # seconds since the epoch
    updated_at: float
    turns: int  # the number of the last turn begun
    running_turn: int | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "conversationId": self.id,
            "title": self.title,
            "createdAt": iso_time(self.created_at),
            "updatedAt": iso_time(self.updated_at),
            "turns": self.turns,
            "runningTurn": self.running_turn,
        }


@dataclass(slots=True)
class StoredConversation(ConversationInfo):
    messages: list[Message] = field(default_factory=list)
    # Every artifact the conversation's turns produced: `artifact_completed` payloads.
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    # The turn that died with its process, if the last one did.
    interrupted_turn: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = ConversationInfo.to_wire(self)
        wire["messages"] = self.messages
        wire["artifacts"] = self.artifacts
        return wire


@dataclass(frozen=True, slots=True)
class BegunTurn:
    """What a turn starts from: its number, the history to send upstream, the artifact ids."""

    number: int
    history: list[Message]
    artifact_ids: frozenset[str]


class Store(Protocol):
    """Conversations by `(owner, id)`. Every method may raise `StoreUnavailable`."""

    description: str  # for the start-up banner, without secrets

    async def open(self) -> None:
        """Connect, migrate, and mark turns that died with their process as interrupted."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Held for the whole of a turn: a conversation's turns run one at a time. A store
        shared by several processes may take the conversation in `begin_turn`, the first call
        of a turn under the lock (Redis: in the same round trip)."""
        ...

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None: ...

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        """Create the conversation if new (with the system prompt), drop the last turn first
        when `regenerate`, store the user message, and mark the new turn running."""
        ...

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None: ...

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None: ...

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        """Most recently used first; the second value is the cursor of the next page."""
        ...

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        """The bytes of the conversation's stored messages and artifacts; 0 when unknown."""
        ...

    async def delete(self, owner: str, conversation_id: str) -> bool: ...

    def event_bus(self) -> EventBus | None:
        """How turns reach other processes; None for a store that serves one process."""
        ...


def stored_size(value: Any) -> int:
    """The bytes of a message or an artifact as JSON, the measure of what a conversation holds."""
    # surrogatepass: a lone surrogate from an upstream's `\ud800` escape is counted, not fatal.
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def iso_time(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-28T05:21:38.123Z`."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


def make_title(user_message: str) -> str:
    line = " ".join(user_message.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def drop_last_turn(messages: list[Message]) -> list[Message]:
    """The history without its last user message and everything after it (regenerate)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "user":
            return messages[:index]
    return messages


class LocalLocks:
    """One `asyncio.Lock` per conversation, for stores that serve one process.

    Entries are dropped when no turn holds or waits for them, so the table stays as small as
    the number of conversations with a turn in flight.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def busy(self, owner: str, conversation_id: str) -> bool:
        return (owner, conversation_id) in self._locks

    @asynccontextmanager
    async def hold(self, owner: str, conversation_id: str) -> AsyncIterator[None]:
        key = (owner, conversation_id)
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock_now, users_now = self._locks[key]
            if users_now <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, users_now - 1)


def cursor_of(info: ConversationInfo) -> str:
    return f"{info.updated_at!r}~{info.id}"


def parse_cursor(cursor: str) -> tuple[float, str] | None:
    when, sep, conversation_id = cursor.partition("~")
    try:
        return (float(when), conversation_id) if sep else None
    except ValueError:
        return None


def page(
    newest_first: Sequence[StoredConversation], limit: int, before: str | None
) -> tuple[list[ConversationInfo], str | None]:
    """One page of a list sorted newest first, after the cursor `before`."""
    start = 0
    if before is not None and (mark := parse_cursor(before)) is not None:
        start = len(newest_first)
        for index, conversation in enumerate(newest_first):
            if (conversation.updated_at, conversation.id) < mark:
                start = index
                break
    chosen = newest_first[start : start + limit]
    infos = [
        ConversationInfo(c.id, c.title, c.created_at, c.updated_at, c.turns, c.running_turn)
        for c in chosen
    ]
    more = start + limit < len(newest_first)
    return infos, (cursor_of(infos[-1]) if more and infos else None)
