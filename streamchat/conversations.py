"""One turn's side of a conversation: the history it sends upstream and the writes it makes.

The store is written as the turn goes (see `stores.base`): the user message when it begins, each
tool round as one group (an assistant `tool_calls` message with all its `tool` results) when
the round completes, and the final assistant text, or what streamed before a stop or a failure,
when it ends. So a turn that fails, is stopped, or dies with its process leaves a history the
next turn can send upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from streamchat.events import ToolCall, Usage
from streamchat.providers.base import Message, ToolCallMessage
from streamchat.stores.base import BegunTurn, Outcome, Store


class Turn:
    def __init__(self, store: Store, owner: str, conversation_id: str, begun: BegunTurn) -> None:
        self.store = store
        self.owner = owner
        self.conversation_id = conversation_id
        self.number = begun.number
        self.artifact_ids = set(begun.artifact_ids)
        self.artifacts: list[dict[str, Any]] = []
        self._history = begun.history
        self._text: list[str] = []
        # How a call that needs approval gets it; the turn runner sets it. Without one, denied.
        self.approval: Callable[[ToolCall], Awaitable[bool]] = _deny
        # What the upstream reported using, summed over the rounds so far.
        self.usage: Usage | None = None

    def history(self) -> list[Message]:
        """What goes upstream for the next model round."""
        return list(self._history)

    def add_text(self, text: str) -> None:
        self._text.append(text)

    async def add_tool_round(self, calls: list[ToolCall], results: list[str]) -> None:
        """The assistant's tool calls and every result, stored as one group."""
        assistant: Message = {
            "role": "assistant",
            "content": self._take_text() or None,
            "tool_calls": [_call_message(call) for call in calls],
        }
        group = [assistant]
        for call, result in zip(calls, results, strict=True):
            group.append({"role": "tool", "tool_call_id": call.id, "content": result})
        self._history += group
        await self.store.append(self.owner, self.conversation_id, self.number, group)

    async def end(self, outcome: Outcome) -> None:
        """Store the final assistant text (what streamed, when the turn was cut short)."""
        text = self._take_text()
        final: list[Message] = [{"role": "assistant", "content": text}] if text else []
        await self.store.end_turn(
            self.owner, self.conversation_id, self.number, final, self.artifacts, outcome
        )

    def _take_text(self) -> str:
        text = "".join(self._text)
        self._text = []
        return text


async def _deny(call: ToolCall) -> bool:
    return False


def _call_message(call: ToolCall) -> ToolCallMessage:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
