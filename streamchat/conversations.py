"""The in-memory conversation store: bounded, with one lock per conversation.

A turn works on a `Turn` (its own list of new messages) and only `commit()`s them into the
conversation when it ends, under the conversation's lock, so two requests for one conversation
run one after the other and never interleave. A turn's messages are appended in whole groups
(an assistant `tool_calls` message together with all its `tool` results), so a failed or
abandoned turn still leaves a history the next turn can send upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from streamchat.events import ToolCall
from streamchat.providers.base import Message, ToolCallMessage


@dataclass
class Conversation:
    id: str
    messages: list[Message]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    artifact_ids: set[str] = field(default_factory=set)
    last_used: float = 0.0
    # Requests holding or waiting for the lock: such a conversation is never evicted.
    users: int = 0

    def drop_last_turn(self) -> None:
        """Forget the last user message and all that followed it (regenerate, edit, retry)."""
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index]["role"] == "user":
                del self.messages[index:]
                return


class Turn:
    """The messages one turn adds, in the order they are sent upstream."""

    def __init__(self, conversation: Conversation, user_message: str) -> None:
        self.conversation = conversation
        self.messages: list[Message] = [{"role": "user", "content": user_message}]
        self._text: list[str] = []

    def history(self) -> list[Message]:
        """What goes upstream for the next model round."""
        return [*self.conversation.messages, *self.messages]

    def add_text(self, text: str) -> None:
        self._text.append(text)

    def add_tool_round(self, calls: list[ToolCall], results: list[str]) -> None:
        """The assistant's tool calls and every result, as one group."""
        assistant: Message = {
            "role": "assistant",
            "content": self._take_text() or None,
            "tool_calls": [_call_message(call) for call in calls],
        }
        self.messages.append(assistant)
        for call, result in zip(calls, results, strict=True):
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    def finish(self) -> None:
        """The final assistant text; also what a failed turn keeps of the text it streamed."""
        text = self._take_text()
        if text:
            self.messages.append({"role": "assistant", "content": text})

    def commit(self) -> None:
        self.finish()
        self.conversation.messages.extend(self.messages)
        self.messages = []

    def _take_text(self) -> str:
        text = "".join(self._text)
        self._text = []
        return text


def _call_message(call: ToolCall) -> ToolCallMessage:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


class ConversationStore:
    def __init__(
        self,
        system_prompt: str,
        ttl_seconds: float,
        max_conversations: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._system_prompt = system_prompt
        self._ttl = ttl_seconds
        self._max = max_conversations
        self._clock = clock
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, conversation_id: str) -> Conversation | None:
        self._evict(room=0)
        return self._items.get(conversation_id)

    @asynccontextmanager
    async def use(self, conversation_id: str) -> AsyncIterator[Conversation]:
        """Hold a conversation (made, with the system prompt, when new) for one turn."""
        conversation = self._open(conversation_id)
        conversation.users += 1
        try:
            async with conversation.lock:
                yield conversation
        finally:
            conversation.users -= 1
            conversation.last_used = self._clock()

    def delete(self, conversation_id: str) -> bool:
        return self._items.pop(conversation_id, None) is not None

    def _open(self, conversation_id: str) -> Conversation:
        conversation = self._items.get(conversation_id)
        if conversation is None:
            self._evict(room=1)
            messages: list[Message] = []
            if self._system_prompt:
                messages.append({"role": "system", "content": self._system_prompt})
            conversation = Conversation(conversation_id, messages)
            self._items[conversation_id] = conversation
        conversation.last_used = self._clock()
        self._items.move_to_end(conversation_id)
        return conversation

    def _evict(self, room: int) -> None:
        """Drop idle conversations past the TTL, then the least recently used past the cap."""
        now = self._clock()
        excess = len(self._items) + room - self._max
        victims = []
        # Oldest first; stop at the first one to keep (the rest were used more recently), so
        # a request looks at a few entries, not the whole store.
        for key, conversation in self._items.items():
            expired = now - conversation.last_used > self._ttl
            if conversation.users == 0 and (expired or excess > 0):
                victims.append(key)
                excess -= 1
            elif not expired and excess <= 0:
                break
        for key in victims:
            del self._items[key]
