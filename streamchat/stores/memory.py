"""`memory://`: conversations in this process only, bounded by idle time, count and bytes.

For tests and throwaway servers. The least recently used conversations go first once the count
cap (`MAX_CONVERSATIONS`) or the byte cap (`MEMORY_STORE_MAX_BYTES`, counted as the JSON of
every stored message and artifact) is reached, and idle ones after `CONVERSATION_TTL_SECONDS`; a
conversation with a turn in flight is never evicted. Everything is gone when the process stops.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from streamchat.eventbus import EventBus
from streamchat.providers.base import Message
from streamchat.stores.base import (
    BegunTurn,
    ConversationInfo,
    LocalLocks,
    Outcome,
    StoredConversation,
    drop_last_turn,
    make_title,
    page,
    stored_size,
)


@dataclass(slots=True)
class _Record(StoredConversation):
    # The turn of each stored user message, in order: what `regenerate` drops.
    user_turns: list[int] = field(default_factory=list)
    # The bytes of its messages and artifacts (`stored_size`).
    size: int = 0


class MemoryStore:
    description = "memory (nothing survives a restart)"

    def __init__(
        self,
        ttl_seconds: float,
        max_conversations: int,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_conversations
        self._max_bytes = max_bytes
        self._bytes = 0  # of every conversation held
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._locks = LocalLocks()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total_bytes(self) -> int:
        """The bytes of every stored message and artifact, as `stored_size` counts them."""
        return self._bytes

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()
        self._bytes = 0

    async def ping(self) -> None:
        return None

    def event_bus(self) -> EventBus | None:
        return None  # one process: the turn runner's logs in memory are all there is

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(owner, conversation_id)

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        self._evict(room=0)
        found = self._items.get((owner, conversation_id))
        if found is None:
            return None
        # A copy: what a caller does with it never reaches the store.
        return StoredConversation(
            found.id,
            found.title,
            found.created_at,
            found.updated_at,
            found.turns,
            found.running_turn,
            copy.deepcopy(found.messages),
            copy.deepcopy(found.artifacts),
            found.interrupted_turn,
        )

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        key = (owner, conversation_id)
        now = self._clock()
        conversation = self._items.get(key)
        if conversation is None:
            self._evict(room=1)
            messages: list[Message] = []
            if system_prompt:
                messages.append({"role": "system", "content": system_prompt})
            conversation = _Record(
                conversation_id, make_title(user_message), now, now, 0, None, messages
            )
            self._items[key] = conversation
            self._grow(conversation, messages)
        elif regenerate and conversation.user_turns:
            dropped = conversation.user_turns.pop()
            conversation.messages = drop_last_turn(conversation.messages)
            conversation.artifacts = [a for a in conversation.artifacts if a["turn"] < dropped]
            self._bytes -= conversation.size
            conversation.size = 0
            self._grow(conversation, [*conversation.messages, *conversation.artifacts])
        if not any(m["role"] == "user" for m in conversation.messages):
            conversation.title = make_title(user_message)
        self._items.move_to_end(key)
        conversation.turns += 1
        conversation.running_turn = conversation.turns
        conversation.interrupted_turn = None
        conversation.updated_at = now
        user: Message = {"role": "user", "content": user_message}
        conversation.messages.append(user)
        self._grow(conversation, [user])
        conversation.user_turns.append(conversation.turns)
        ids = frozenset(a["artifactId"] for a in conversation.artifacts)
        self._evict(room=0)
        return BegunTurn(conversation.turns, list(conversation.messages), ids)

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None:
        conversation = self._items.get((owner, conversation_id))
        if conversation is not None and conversation.running_turn == turn:
            conversation.messages.extend(messages)
            self._grow(conversation, messages)
            self._evict(room=0)

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        conversation = self._items.get((owner, conversation_id))
        if conversation is None or conversation.running_turn != turn:
            return  # deleted while the turn ran
        conversation.messages.extend(messages)
        conversation.artifacts.extend(artifacts)
        self._grow(conversation, [*messages, *artifacts])
        conversation.running_turn = None
        conversation.updated_at = self._clock()
        self._evict(room=0)

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        found = self._items.get((owner, conversation_id))
        return 0 if found is None else found.size

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        self._evict(room=0)
        mine = sorted(
            (c for (who, _), c in self._items.items() if who == owner),
            key=lambda c: (c.updated_at, c.id),
            reverse=True,
        )
        return page(mine, limit, before)

    async def delete(self, owner: str, conversation_id: str) -> bool:
        found = self._items.pop((owner, conversation_id), None)
        if found is not None:
            self._bytes -= found.size
        return found is not None

    def _grow(self, conversation: _Record, added: list[Any]) -> None:
        size = sum(stored_size(value) for value in added)
        conversation.size += size
        self._bytes += size

    def _evict(self, room: int) -> None:
        """Drop idle conversations past the TTL, then the least recently used past the caps."""
        now = self._clock()
        excess = len(self._items) + room - self._max
        over = self._bytes - self._max_bytes
        victims = []
        # Oldest first; stop at the first one to keep (the rest were used more recently), so
        # a request looks at a few entries, not the whole store.
        for key, conversation in self._items.items():
            expired = now - conversation.updated_at > self._ttl
            in_use = conversation.running_turn is not None or self._locks.busy(*key)
            if not in_use and (expired or excess > 0 or over > 0):
                victims.append(key)
                excess -= 1
                over -= conversation.size
            elif not expired and excess <= 0 and over <= 0:
                break
        for key in victims:
            self._bytes -= self._items.pop(key).size
