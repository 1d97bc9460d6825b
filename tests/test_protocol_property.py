"""The other protocols under random replies (the replies of `test_reply_property.py`: artifact
tags, code fences, split characters, lone surrogates, an optional tool round, bytes cut
anywhere), each checked by the rules of its own clients:

- AG-UI: `RUN_STARTED` first and `RUN_FINISHED` last, once; every message's and tool call's
  content between its start and its end; every event accepted by the protocol package's models.
- OpenAI: the `openai` client reads the stream to `finish_reason: stop`; each artifact's block,
  read as CommonMark reads a fenced block, holds exactly the artifact's content.
- The AI SDK: its own client (`ai`, run by node) reads the stream without an error to `finish`.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.conftest import generated_cases
from tests.fake_upstream import FakeUpstream, tool_reply
from tests.test_aisdk import node, sdk  # noqa: F401 (node: a fixture)
from tests.test_protocols import agui, client
from tests.test_reply_property import _answer_bytes, _cut, replies

EXAMPLES = int(os.environ.get("REPLY_EXAMPLES", "60"))
CASES = generated_cases(EXAMPLES)
NUMBERS = itertools.count()


@pytest.fixture
def base(live_server: str) -> str:
    return live_server


def _add(upstream: FakeUpstream, reply: dict[str, Any]) -> None:
    if reply["tool_round"]:
        upstream.add(tool_reply(("t1", "add", {"a": 2, "b": 3})))
    upstream.add(_cut(_answer_bytes(reply["pieces"], reply["escaped"]), reply["cuts"]))


@CASES
@given(reply=replies)
async def test_agui_any_reply_keeps_the_event_order_its_clients_expect(
    reply: dict[str, Any], base: str, upstream: FakeUpstream
) -> None:
    _add(upstream, reply)

    events = await agui(base, "go", f"agui-{next(NUMBERS)}")  # validated by the AG-UI models

    kinds = [e["type"] for e in events]
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED", kinds
    assert kinds.count("RUN_FINISHED") == 1 and "RUN_ERROR" not in kinds
    messages: set[str] = set()
    calls: set[str] = set()
    for event in events:
        kind = event["type"]
        if kind == "TEXT_MESSAGE_START":
            assert event["messageId"] not in messages
            messages.add(event["messageId"])
        elif kind == "TEXT_MESSAGE_CONTENT":
            assert event["messageId"] in messages and event["delta"], kinds
        elif kind == "TEXT_MESSAGE_END":
            messages.remove(event["messageId"])
        elif kind == "TOOL_CALL_START":
            calls.add(event["toolCallId"])
        elif kind == "TOOL_CALL_ARGS":
            assert event["toolCallId"] in calls
        elif kind == "TOOL_CALL_END":
            calls.remove(event["toolCallId"])
    assert not messages and not calls, kinds


_FENCE = re.compile(r" {0,3}(`{3,})")


def _blocks(content: str, titles: list[str]) -> list[str | None]:
    """The text of each artifact's fenced block, in order, as CommonMark reads it (None: its
    block never ends, or ends somewhere the artifact did not)."""
    found: list[str | None] = []
    at = 0
    for title in titles:
        start = content.index(f"**{title}**\n", at) + len(title) + 5
        lines = content[start:].split("\n")
        opening = _FENCE.match(lines[0])
        assert opening is not None, content[start : start + 40]
        fence = opening[1]
        for n, line in enumerate(lines[1:], 1):
            closing = _FENCE.match(line)
            if closing and len(closing[1]) >= len(fence) and not line.strip().strip("`"):
                found.append("\n".join(lines[1:n]))
                at = start + len("\n".join(lines[: n + 1]))
                break
        else:
            found.append(None)
    return found


MARKDOWN = {
    "pieces": ['<artifact id="b" type="document" title="notes.md">', "```", "\n", "</artifact>"],
    "escaped": False,
    "tool_round": False,
    "fences": "off",
    "cuts": [],
    "resume_at": 0,
}


@CASES
@given(reply=replies, stream=st.booleans())
@example(reply=MARKDOWN, stream=True)
@example(reply=MARKDOWN, stream=False)
async def test_openai_any_reply_keeps_each_artifact_in_its_block(
    reply: dict[str, Any], stream: bool, base: str, upstream: FakeUpstream
) -> None:
    _add(upstream, reply)
    events: list[dict[str, Any]] = []

    async with client(base) as api:
        if stream:
            chunks = await api.chat.completions.create(
                model="fake/model-1", messages=[{"role": "user", "content": "go"}], stream=True
            )
            pieces, finishes = [], []
            async for chunk in chunks:
                extension = (chunk.model_extra or {}).get("streamchat")
                if extension:
                    events.append(extension)
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
            content = "".join(pieces)
            assert finishes == ["stop"]
        else:
            answer = await api.chat.completions.create(
                model="fake/model-1", messages=[{"role": "user", "content": "go"}]
            )
            content = answer.choices[0].message.content or ""
            events = (answer.model_extra or {})["streamchat"]["events"]
            assert answer.choices[0].finish_reason == "stop"

    artifacts = [e for e in events if e["type"] == "artifact_completed"]
    blocks = _blocks(content, [a["title"] for a in artifacts])
    for artifact, block in zip(artifacts, blocks, strict=True):
        if stream and re.search(r"(?m)^ {0,3}````", artifact["content"]):
            continue  # a streamed block opens before its content: four backticks end it
        assert block == artifact["content"], (artifact, content)


@generated_cases(max(EXAMPLES // 3, 1))
@given(reply=replies)
async def test_the_ai_sdk_client_reads_any_reply_without_an_error(
    reply: dict[str, Any],
    node: str,  # noqa: F811 (the fixture imported above)
    base: str,
    upstream: FakeUpstream,
) -> None:
    _add(upstream, reply)

    result = await sdk(node, base, "send", f"aisdk-{next(NUMBERS)}", "go")

    assert result["errors"] == [], result
    assert result["chunks"][-1] == "finish", result["chunks"]
