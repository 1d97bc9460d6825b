"""A conversation that is not kept: its history comes with the request, and nothing is written.

For OpenAI-style requests without a conversation id, where `messages` is the whole history, as
in OpenAI's API: the turn runs like any other (tools, artifacts, readers, stop), but the store
it writes to forgets everything.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from streamchat.eventbus import EventBus
from streamchat.providers.base import Message
from streamchat.stores.base import BegunTurn, ConversationInfo, Outcome, StoredConversation


class EphemeralStore:
    description = "ephemeral"

    def __init__(self, history: list[Message]) -> None:
        self._history = history

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def event_bus(self) -> EventBus | None:
        return None

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        return None

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        history = list(self._history)
        if system_prompt and not any(m["role"] == "system" for m in history):
            history.insert(0, {"role": "system", "content": system_prompt})
        history.append({"role": "user", "content": user_message})
        return BegunTurn(1, history, frozenset())

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None:
        return None

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        return None

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        return [], None

    async def delete(self, owner: str, conversation_id: str) -> bool:
        return False

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        return 0
