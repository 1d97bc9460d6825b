"""The conversation store: bounded, serialized per conversation, valid after failures."""

from __future__ import annotations

import asyncio

from streamchat.conversations import ConversationStore, Turn
from streamchat.events import ToolCall


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_system_prompt_is_stored_once() -> None:
    store = ConversationStore("be brief", ttl_seconds=60, max_conversations=10)
    for text in ("one", "two"):
        async with store.use("c") as conversation:
            turn = Turn(conversation, text)
            turn.add_text("ok")
            turn.commit()

    stored = store.get("c")
    assert stored is not None
    assert [m["role"] for m in stored.messages] == [
        "system", "user", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert stored.messages[0] == {"role": "system", "content": "be brief"}


async def test_idle_conversations_expire() -> None:
    clock = Clock()
    store = ConversationStore("s", ttl_seconds=60, max_conversations=10, clock=clock)
    async with store.use("old"):
        pass
    clock.now = 30
    async with store.use("young"):
        pass

    clock.now = 61

    assert store.get("old") is None
    assert store.get("young") is not None


async def test_cap_evicts_the_least_recently_used_but_never_one_in_use() -> None:
    store = ConversationStore("s", ttl_seconds=600, max_conversations=2)
    async with store.use("a"):
        async with store.use("b"):
            pass
        async with store.use("c"):  # "b" goes: "a" is in use
            pass
        assert store.get("a") is not None
        assert store.get("b") is None
        assert store.get("c") is not None
    assert len(store) == 2


async def test_second_user_waits_for_the_first() -> None:
    store = ConversationStore("s", ttl_seconds=600, max_conversations=10)
    order: list[str] = []

    async def turn(name: str) -> None:
        async with store.use("shared"):
            order.append(f"{name} in")
            await asyncio.sleep(0.02)
            order.append(f"{name} out")

    await asyncio.gather(turn("one"), turn("two"))

    assert order == ["one in", "one out", "two in", "two out"]


async def test_turn_stores_tool_rounds_whole_and_partial_text_last() -> None:
    store = ConversationStore("s", ttl_seconds=600, max_conversations=10)
    async with store.use("t") as conversation:
        turn = Turn(conversation, "6*7?")
        turn.add_text("Let me compute.")
        turn.add_tool_round([ToolCall("c1", "multiply", '{"a":6,"b":7}')], ["42"])
        turn.add_text("It is ")
        turn.commit()  # e.g. the client left here

    assert conversation.messages[1:] == [
        {"role": "user", "content": "6*7?"},
        {
            "role": "assistant",
            "content": "Let me compute.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "multiply", "arguments": '{"a":6,"b":7}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "It is "},
    ]
