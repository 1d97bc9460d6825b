"""POST /api/stream end to end: the app on a test server, the fake upstream on a free port."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from streamchat.settings import DEFAULT_SYSTEM_PROMPT
from streamchat.tools.registry import ToolRegistry
from streamchat.toolsets.base import CombinedToolset
from streamchat.toolsets.functions import FunctionToolset
from streamchat.web import create_app
from tests.conftest import MakeClient, make_settings, stream
from tests.fake_upstream import FakeUpstream, Sleep, paced, text_reply, tool_reply

Client = TestClient[Any, Any]


async def test_calculator_round_trip(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(
        tool_reply(("call_1", "add", {"a": 25, "b": 17}), split=2),
        text_reply("25 + 17 ", "= 42"),
    )

    reply = await stream(client, "What is 25 + 17?")

    assert reply.status == 200
    assert reply.types == ["tool_executing", "tool_completed", "text", "text", "completion"]
    executing, completed = reply.events[0], reply.events[1]
    assert executing["toolName"] == "add"
    assert executing["toolId"] == "call_1"
    assert json.loads(executing["arguments"]) == {"a": 25, "b": 17}
    assert completed["result"] == "42"
    assert completed["executionMs"] >= 0
    assert reply.text == "25 + 17 = 42"
    completion = reply.events[-1]
    assert completion["finishReason"] == "stop"
    assert completion["model"] == "fake/model-1"
    assert completion["id"] == "gen-123"
    # usage is summed over both model rounds
    assert completion["usage"] == {
        "promptTokens": 20,
        "completionTokens": 10,
        "totalTokens": 30,
        "cost": 0.0002,
    }


async def test_upstream_receives_tools_and_tool_results(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "add", {"a": 25, "b": 17}), split=1), text_reply("42"))

    await stream(client, "What is 25 + 17?", model="some/model")

    first, second = upstream.requests
    assert first["model"] == "some/model"
    assert first["stream"] is True
    names = [tool["function"]["name"] for tool in first["tools"]]
    assert names == ["add", "subtract", "multiply", "divide"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    assert upstream.headers[0]["Authorization"] == "Bearer test-key"
    assert upstream.headers[0]["X-Title"] == "streamchat"
    assert "HTTP-Referer" in upstream.headers[0]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 25, "b": 17}'},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "42"}


async def test_divide_by_zero_becomes_tool_error_and_turn_completes(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("c1", "divide", {"a": 1, "b": 0})), text_reply("You cannot divide by zero.")
    )

    reply = await stream(client, "What is 1 / 0?")

    assert reply.types == ["tool_executing", "tool_error", "text", "completion"]
    assert reply.events[1]["error"] == "Cannot divide by zero"
    assert reply.events[1]["toolName"] == "divide"
    assert upstream.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "Error: Cannot divide by zero",
    }


async def test_unknown_tool_and_malformed_arguments_are_fed_back(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("c1", "power", {"a": 2, "b": 8}), ("c2", "add", '{"a": 1, "b":')),
        text_reply("Sorry."),
    )

    reply = await stream(client, "2 ** 8, and 1 + ?")

    assert reply.types == [
        "tool_executing",
        "tool_executing",
        "tool_error",
        "tool_error",
        "text",
        "completion",
    ]
    unknown, malformed = reply.of("tool_error")
    assert "Unknown tool 'power'" in unknown["error"]
    assert "not valid JSON" in malformed["error"]
    results = [m for m in upstream.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["c1", "c2"]
    assert all(m["content"].startswith("Error: ") for m in results)


async def test_arguments_that_fail_the_schema_are_a_tool_error(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("c1", "add", {"a": "two", "b": 2})), text_reply("Hmm."))

    reply = await stream(client, "two plus 2")

    error = reply.of("tool_error")[0]["error"]
    assert "Invalid arguments for add" in error
    assert "a:" in error


async def test_two_tool_calls_in_one_round_report_in_model_order(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("c1", "multiply", {"a": 6, "b": 7}), ("c2", "subtract", {"a": 10, "b": 4.5})),
        text_reply("42 and 5.5"),
    )

    reply = await stream(client, "6*7 and 10-4.5")

    completed = reply.of("tool_completed")
    assert [(e["toolId"], e["result"]) for e in completed] == [("c1", "42"), ("c2", "5.5")]
    assert reply.types[:4] == [
        "tool_executing",
        "tool_executing",
        "tool_completed",
        "tool_completed",
    ]


async def test_two_tool_rounds_in_a_row(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(
        tool_reply(("c1", "multiply", {"a": 12, "b": 4})),
        tool_reply(("c2", "divide", {"a": 48, "b": 5})),
        text_reply("9.6"),
    )

    reply = await stream(client, "12 * 4, then / 5")

    assert [e["result"] for e in reply.of("tool_completed")] == ["48", "9.6"]
    assert reply.types[-1] == "completion"
    assert len(upstream.requests) == 3
    roles = [m["role"] for m in upstream.requests[2]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    indexes = [e["chunkIndex"] for e in reply.events]
    assert indexes == list(range(len(reply.events)))


async def test_tool_round_limit_ends_the_turn(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_tool_rounds=2)
    upstream.add(*(tool_reply((f"c{i}", "add", {"a": i, "b": 1})) for i in range(5)))

    reply = await stream(client, "loop forever", conversationId="loop")

    assert len(upstream.requests) == 3
    assert len(reply.of("tool_completed")) == 2
    assert reply.events[-1]["type"] == "error"
    assert reply.events[-1]["code"] == "tool_loop_limit"
    history = (await (await client.get("/api/conversation/loop")).json())["messages"]
    assert [m["role"] for m in history] == [
        "system", "user", "assistant", "tool", "assistant", "tool",
    ]  # fmt: skip


async def test_every_event_is_numbered_timed_and_ends_with_one_terminal(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("c1", "add", {"a": 1, "b": 2})),
        text_reply("Three.\n<artifact title='x.txt' type='document'>3</artifact>"),
    )

    reply = await stream(client, "1+2 in a file")

    assert [e["chunkIndex"] for e in reply.events] == list(range(len(reply.events)))
    elapsed = [e["elapsedMs"] for e in reply.events]
    assert elapsed == sorted(elapsed)
    assert all(isinstance(value, float | int) and value >= 0 for value in elapsed)
    terminals = [t for t in reply.types if t in ("completion", "error")]
    assert terminals == ["completion"]
    assert reply.types[-1] == "completion"


async def test_stream_headers(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(text_reply("hi"))

    reply = await stream(client, "hi", conversationId="conv-h")

    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["X-Accel-Buffering"] == "no"
    assert reply.headers["X-Conversation-Id"] == "conv-h"
    assert reply.events[-1]["conversationId"] == "conv-h"


async def test_generated_conversation_id_is_usable(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(text_reply("hi"), text_reply("again"))

    first = await stream(client, "hi")
    conversation_id = first.headers["X-Conversation-Id"]
    await stream(client, "again", conversationId=conversation_id)

    assert first.events[-1]["conversationId"] == conversation_id
    assert [m["role"] for m in upstream.requests[1]["messages"]] == [
        "system", "user", "assistant", "user",
    ]  # fmt: skip


async def test_artifact_end_to_end_and_markup_kept_in_history(
    client: Client, upstream: FakeUpstream
) -> None:
    reply_text = (
        "Here it is:\n"
        '<artifact id="hello-py" type="code" title="hello.py" language="python">\n'
        "def hello():\n    print('Hello, World!')\n"
        "</artifact>\nEnjoy!"
    )
    pieces = [reply_text[i : i + 5] for i in range(0, len(reply_text), 5)]
    upstream.add(text_reply(*pieces), text_reply("ok"))

    reply = await stream(client, "Create a Python hello world function", conversationId="art")

    assert reply.types[0] == "text"
    assert "artifact_started" in reply.types
    started = reply.of("artifact_started")[0]
    assert started["artifactId"] == "hello-py"
    assert started["title"] == "hello.py"
    assert started["language"] == "python"
    done = reply.of("artifact_completed")[0]
    assert done["content"] == "def hello():\n    print('Hello, World!')"
    assert "".join(e["contentDelta"] for e in reply.of("artifact_content")) == done["content"]
    assert reply.text == "Here it is:\n\nEnjoy!"
    assert "<artifact" not in reply.text
    await stream(client, "thanks", conversationId="art")
    assert upstream.requests[1]["messages"][2] == {"role": "assistant", "content": reply_text}


async def test_second_turn_sends_exactly_the_history(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hello", " there"), text_reply("50"))

    await stream(client, "Hello!", conversationId="conv-1")
    await stream(client, "Calculate 10 * 5", conversationId="conv-1")

    assert upstream.requests[1]["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Calculate 10 * 5"},
    ]


async def test_regenerate_replaces_the_last_turn_in_the_history(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hi!"), text_reply("2 + 2 = 5"), text_reply("2 + 2 = 4"))
    await stream(client, "Hello!", conversationId="re")
    await stream(client, "What is 2 + 2?", conversationId="re")

    reply = await stream(client, "What is 2 + 2, exactly?", conversationId="re", regenerate=True)

    assert reply.text == "2 + 2 = 4"
    expected = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "What is 2 + 2, exactly?"},
    ]
    assert upstream.requests[2]["messages"] == expected
    stored = await (await client.get("/api/conversation/re")).json()
    assert stored["messages"] == [*expected, {"role": "assistant", "content": "2 + 2 = 4"}]


async def test_both_delete_routes_clear_and_the_next_turn_starts_fresh(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("a"), text_reply("b"), text_reply("c"))
    for route in ("/conversation/c1", "/api/conversation/c1"):
        await stream(client, "remember me", conversationId="c1")

        response = await client.delete(route)

        assert response.status == 200
        assert await response.json() == {"message": "Conversation cleared"}
        assert (await client.get("/api/conversation/c1")).status == 404
    await stream(client, "who am I?", conversationId="c1")
    assert [m["role"] for m in upstream.requests[-1]["messages"]] == ["system", "user"]


async def test_delete_of_an_unknown_conversation_is_idempotent(client: Client) -> None:
    response = await client.delete("/api/conversation/never-was")

    assert response.status == 200
    assert await response.json() == {"message": "Conversation cleared"}


async def test_get_conversation_returns_history_or_404(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("hi"))
    await stream(client, "hello", conversationId="g1")

    found = await client.get("/api/conversation/g1")
    missing = await client.get("/api/conversation/nope")

    assert found.status == 200
    body = await found.json()
    assert body["conversationId"] == "g1"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


async def test_concurrent_turns_on_one_conversation_do_not_interleave(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        paced(text_reply("first ", "answer"), 0.05),
        paced(text_reply("second ", "answer"), 0.05),
    )

    one, two = await asyncio.gather(
        stream(client, "one", conversationId="race"),
        stream(client, "two", conversationId="race"),
    )

    assert {one.text, two.text} == {"first answer", "second answer"}
    history = (await (await client.get("/api/conversation/race")).json())["messages"]
    roles = [m["role"] for m in history]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    # the second turn saw the whole first turn
    assert len(upstream.requests[1]["messages"]) == 4
    first_user = history[1]["content"]
    expected_answer = "first answer"
    assert history[2]["content"] == expected_answer
    assert first_user in ("one", "two")


async def test_ping_comment_is_sent_during_silence(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(ping_interval_seconds=0.1)
    upstream.add([Sleep(0.45), *text_reply("late")])

    reply = await stream(client, "slow")

    assert b": ping\n\n" in reply.raw
    assert reply.raw.index(b": ping") < reply.raw.index(b"event: text")
    assert reply.types == ["text", "completion"]


async def test_a_ping_interval_of_0_sends_no_ping_and_leaves_the_loop_idle(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    # 0 once made the pinger's loop sleep(0) forever: a core at 100% with nothing to do.
    client = await make_client(ping_interval_seconds=0)
    upstream.add([Sleep(0.3), *text_reply("late")])
    loop = asyncio.get_running_loop()
    started, cpu = loop.time(), time.process_time()

    reply = await stream(client, "slow")

    assert time.process_time() - cpu < 0.5 * (loop.time() - started)
    assert b": ping" not in reply.raw
    assert reply.types == ["text", "completion"]


async def test_no_key_answers_with_an_error_event_that_says_how(make_client: MakeClient) -> None:
    client = await make_client(openrouter_api_key="", backend="openrouter")

    reply = await stream(client, "Hello!")

    assert reply.status == 200
    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "no_api_key"
    assert "OPENROUTER_API_KEY" in reply.events[0]["message"]


async def test_health(client: Client) -> None:
    response = await client.get("/health")

    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["backend"] == "openrouter"


async def test_fences_inside_an_artifact_stay_content_and_outside_become_artifacts(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(artifact_fences="on")
    body = "# Usage\n```bash\npython hello.py\n```"
    reply_text = (
        f'<artifact id="readme" type="document" title="README.md">\n{body}\n</artifact>\n'
        "And the script:\n```python\nprint('hi')\n```\n"
    )
    upstream.add(text_reply(*[reply_text[i : i + 3] for i in range(0, len(reply_text), 3)]))

    reply = await stream(client, "docs and code")

    first, second = reply.of("artifact_completed")
    assert (first["artifactId"], first["content"]) == ("readme", body)
    assert (second["title"], second["language"], second["content"]) == (
        "snippet.py",
        "python",
        "print('hi')",
    )
    assert "```" not in reply.text
    assert reply.text == "\nAnd the script:\n"


async def test_fences_stay_text_when_artifact_fences_is_off(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("```python\nprint('hi')\n```"))

    reply = await stream(client, "code")

    assert reply.types == ["text", "completion"]
    assert reply.text == "```python\nprint('hi')\n```"


async def test_a_tool_that_waits_has_its_tool_executing_sent_while_it_runs(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream
) -> None:
    # `tool_executing` leaves with the result of a call that never waits, in one write; a call
    # that waits must not hold it back until it ends.
    release = asyncio.Event()
    registry = ToolRegistry(timeout_seconds=10)

    async def lookup(name: str) -> str:
        """Looks a name up somewhere slow."""
        await release.wait()
        return f"{name}: found"

    registry.register(lookup)
    tools = CombinedToolset([FunctionToolset(registry)])
    settings = make_settings(openrouter_base_url=upstream.base_url)
    client = await aiohttp_client(create_app(settings, tools=tools))
    upstream.add(tool_reply(("call_1", "lookup", {"name": "ada"})), text_reply("done"))

    response = await client.post("/api/stream", json={"message": "look up ada"})
    seen = b""
    while b"event: tool_executing" not in seen:
        seen += await asyncio.wait_for(response.content.readany(), 5)
    assert b"tool_completed" not in seen  # the tool is still waiting
    release.set()
    seen += await response.content.read()
    assert seen.index(b"event: tool_completed") > seen.index(b"event: tool_executing")
    assert b'"result":"ada: found"' in seen


async def test_a_tool_whose_text_has_a_lone_surrogate_still_ends_its_turn(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream
) -> None:
    # A file name read with `surrogateescape`, or an MCP server's `\udcff` escape: a frame is
    # UTF-8, so the character becomes U+FFFD rather than the stream breaking off unterminated.
    registry = ToolRegistry(timeout_seconds=10)

    def list_folder(path: str) -> str:
        """Lists a folder."""
        return f"{path}: caf\udce9.txt"

    def open_file(path: str) -> str:
        """Opens a file."""
        raise PermissionError(f"{path}/caf\udce9.txt is locked")

    registry.register(list_folder)
    registry.register(open_file)
    tools = CombinedToolset([FunctionToolset(registry)])
    settings = make_settings(openrouter_base_url=upstream.base_url)
    client = await aiohttp_client(create_app(settings, tools=tools))
    upstream.add(
        tool_reply(("c1", "list_folder", {"path": "/tmp"}), ("c2", "open_file", {"path": "/x"})),
        text_reply("done"),
    )

    reply = await stream(client, "what is there?", conversationId="files")

    reply.raw.decode("utf-8")  # strict: every frame is UTF-8
    assert reply.types[-1] == "completion"
    assert reply.of("tool_completed")[0]["result"] == "/tmp: caf\ufffd.txt"
    assert "/x/caf\ufffd.txt" in reply.of("tool_error")[0]["error"]
    stored = await (await client.get("/api/conversation/files")).json()
    results = [m["content"] for m in stored["messages"] if m["role"] == "tool"]
    assert results[0] == "/tmp: caf\ufffd.txt"
    assert "/x/caf\ufffd.txt" in results[1]
