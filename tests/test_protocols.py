"""The other dialects against their real client libraries: `openai` and `ag-ui-protocol`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from ag_ui.core import Event as AguiEvent
from markdown_it import MarkdownIt
from pydantic import TypeAdapter

from streamchat.sse import SSEDecoder, SSEEvent
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, HttpError, paced, text_reply, tool_reply

ARTIFACT = '<artifact id="hi" title="hi.py" language="python">\nprint("hi")\n</artifact>'


@pytest.fixture
def base(live_server: str) -> str:
    return live_server


def client(base: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=headers or None
    )


# --- OpenAI --------------------------------------------------------------------------------------


async def test_openai_streaming_runs_the_tools_on_the_server(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    async with client(base) as api:
        stream = await api.chat.completions.create(
            model="fake/model-1",
            messages=[{"role": "user", "content": "What is 25 + 17?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "25 + 17 = 42"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    activity = [
        c.model_extra["streamchat"]
        for c in chunks
        if c.model_extra and "streamchat" in c.model_extra
    ]
    assert [a["type"] for a in activity] == ["tool_executing", "tool_completed", "completion"]
    assert activity[1]["result"] == "42"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30


async def test_openai_without_stream_gets_the_whole_answer_and_artifacts_as_text(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Here it is:", ARTIFACT))

    async with client(base) as api:
        completion = await api.chat.completions.create(
            model="fake/model-1",
            messages=[{"role": "user", "content": "Write hi.py"}],
        )

    content = completion.choices[0].message.content
    assert content is not None
    assert content.startswith("Here it is:")
    assert '**hi.py**\n````python\nprint("hi")\n````' in content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 15
    extra = completion.model_extra or {}
    assert [e["type"] for e in extra["streamchat"]["events"]] == [
        "artifact_started",
        "artifact_completed",
    ]


README = (
    '<artifact id="readme" type="document" title="__init__.py docs" language="markdown">\n'
    "# Use\n```sh\npip install x\n```\n</artifact>"
)
DEEPER = '<artifact id="deep" type="document" title="notes_[1].md">\n````\n```\n````\n</artifact>'


def artifact_blocks(content: str) -> dict[str, tuple[str, str]]:
    """What a CommonMark client shows of each artifact: a paragraph that is one bold span (its
    text), then a fenced block (its fence and content)."""
    tokens = MarkdownIt("commonmark").parse(content)
    blocks = {}
    for at, token in enumerate(tokens):
        if token.type != "fence" or tokens[at - 1].type != "paragraph_close":
            continue
        inline = [c for c in tokens[at - 2].children or [] if c.type != "text" or c.content]
        if inline and [inline[0].type, inline[-1].type] == ["strong_open", "strong_close"]:
            title = "".join(child.content for child in inline[1:-1])
            blocks[title] = (token.markup, token.content)
    return blocks


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_openai_an_artifact_reads_as_its_title_then_one_block_of_its_content(
    base: str, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.add(text_reply("Here:", README, " and ", DEEPER, " done."))

    async with client(base) as api:
        if stream:
            chunks = await api.chat.completions.create(
                model="fake/model-1", messages=[{"role": "user", "content": "docs"}], stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
            content = "".join(pieces)
        else:
            answer = await api.chat.completions.create(
                model="fake/model-1", messages=[{"role": "user", "content": "docs"}]
            )
            content = answer.choices[0].message.content or ""

    blocks = artifact_blocks(content)
    # Markup in a title is shown as written; a document's code blocks stay inside its block.
    assert blocks["__init__.py docs"] == ("````", "# Use\n```sh\npip install x\n```\n")
    assert content.endswith(" done.")
    if not stream:  # the whole answer knows the content, and fences it past its four backticks
        assert blocks["notes_[1].md"] == ("`````", "````\n```\n````\n")


async def test_openai_messages_are_the_whole_history_without_a_conversation_header(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Ada."))

    async with client(base) as api:
        await api.chat.completions.create(
            model="fake/model-1",
            messages=[
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "I am Ada."},
                {"role": "assistant", "content": "Hello Ada."},
                {"role": "user", "content": "Who am I?"},
            ],
        )

    sent = upstream.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "Be terse."),
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
    ]


async def test_openai_with_a_conversation_header_the_server_keeps_the_history(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hello Ada."), text_reply("You are Ada."))

    async with client(base, **{"X-Conversation-Id": "kept"}) as api:
        await api.chat.completions.create(
            model="fake/model-1", messages=[{"role": "user", "content": "I am Ada."}]
        )
        await api.chat.completions.create(
            model="fake/model-1", messages=[{"role": "user", "content": "Who am I?"}]
        )

    sent = [m["content"] for m in upstream.requests[-1]["messages"][1:]]
    assert sent == ["I am Ada.", "Hello Ada.", "Who am I?"]


async def test_openai_errors_map_to_the_clients_exceptions(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}))
    upstream.add(HttpError(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}))
    upstream.add(HttpError(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}))

    async with client(base) as api:
        with pytest.raises(openai.RateLimitError):
            await api.chat.completions.create(
                model="fake/model-1", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError) as bad:
            await api.chat.completions.create(model="fake/model-1", messages=[])
    assert "messages" in str(bad.value)


async def test_openai_streaming_error_raises_in_the_client(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found"}}))

    async with client(base) as api:
        stream = await api.chat.completions.create(
            model="fake/model-1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="rejected the API key"):
            async for _ in stream:
                pass


async def test_openai_models_lists_the_default(base: str) -> None:
    async with client(base) as api:
        models = [model.id async for model in api.models.list()]

    assert models[0] == make_settings().default_model


# --- AG-UI ---------------------------------------------------------------------------------------

AGUI_EVENT: TypeAdapter[Any] = TypeAdapter(AguiEvent)


async def agui(base: str, text: str, thread: str = "thread-1") -> list[dict[str, Any]]:
    import aiohttp

    body: dict[str, Any] = {
        "threadId": thread,
        "runId": "run-1",
        "state": None,
        "messages": [{"id": "m1", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/api/agui", json=body) as response,
    ):
        assert response.status == 200
        raw = await response.read()
    decoder = SSEDecoder()
    events = [
        json.loads(item.data)
        for item in decoder.feed(raw) + decoder.flush()
        if isinstance(item, SSEEvent)
    ]
    for event in events:  # the protocol package's own models accept every event
        AGUI_EVENT.validate_python(event)
    return events


async def test_agui_streams_text_tools_and_finishes(base: str, upstream: FakeUpstream) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("It is ", "42."))

    events = await agui(base, "What is 25 + 17?")

    kinds = [e["type"] for e in events]
    assert kinds == [
        "RUN_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert events[4]["content"] == "42"
    assert events[-1]["threadId"] == "thread-1"
    assert events[-1]["result"]["turn"] == 1


async def test_agui_artifacts_are_custom_events_and_errors_are_run_error(
    base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Sure. ", ARTIFACT), HttpError(500, {"error": {"message": "boom"}}))
    upstream.add(HttpError(500, {"error": {"message": "boom"}}))
    upstream.add(HttpError(500, {"error": {"message": "boom"}}))

    first = await agui(base, "write hi.py")
    failed = await agui(base, "again")

    customs = [e for e in first if e["type"] == "CUSTOM"]
    assert customs[0]["name"] == "artifact_started"
    assert customs[-1]["value"]["content"] == 'print("hi")'
    assert failed[-1]["type"] == "RUN_ERROR"
    assert failed[-1]["code"] == "upstream_error"


async def test_a_turn_of_any_protocol_is_stoppable_from_the_native_route(
    base: str, upstream: FakeUpstream
) -> None:
    import aiohttp

    upstream.add(paced(text_reply(*[f"w{i} " for i in range(300)]), 0.02))
    async with aiohttp.ClientSession() as session:
        body = {
            "threadId": "t2",
            "runId": "r",
            "messages": [{"id": "m", "role": "user", "content": "go"}],
        }
        async with session.post(f"{base}/api/agui", json=body) as response:
            await response.content.readuntil(b"TEXT_MESSAGE_CONTENT")
            async with session.post(f"{base}/api/conversation/t2/stop") as stop:
                assert (await stop.json())["stopped"] is True
            rest = await asyncio.wait_for(response.read(), 5)
    assert b'"finishReason":"cancelled"' in rest


TEXTS = ["Hello", 'quote " and \\ backslash', "line\nbreak\r\ttab", "é 🚀 日本 \u2028 \x00 \x1f"]


def frames(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]


@pytest.mark.parametrize("text", TEXTS)
def test_the_fast_text_frames_are_byte_for_byte_the_general_ones(text: str) -> None:
    from streamchat.events import TextChunk
    from streamchat.protocols import agui as agui_protocol
    from streamchat.protocols import aisdk as aisdk_protocol
    from streamchat.protocols import openai as openai_protocol

    sdk = aisdk_protocol.AiSdkEncoder("c").encode(1, 0, [TextChunk(text)], [0.0])
    assert sdk.endswith(aisdk_protocol.part({"type": "text-delta", "id": "text-1", "delta": text}))
    ag = agui_protocol.AguiEncoder("t", "r").encode(1, 0, [TextChunk(text)], [0.0])
    assert ag.endswith(
        agui_protocol._event({"type": "TEXT_MESSAGE_CONTENT", "messageId": "r-1", "delta": text})
    )
    chunks = openai_protocol.ChunkEncoder("m", False)
    oa = chunks.encode(1, 0, [TextChunk(text)], [0.0])
    assert oa.endswith(chunks._chunk({"content": text}))
    assert [f["choices"][0]["delta"] for f in frames(oa)] == [
        {"role": "assistant", "content": ""},
        {"content": text},
    ]
