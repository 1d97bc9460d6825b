"""The exact JSON of every event type, as a client parses it from a frame."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamchat.events import (
    ArtifactCompleted,
    ArtifactContent,
    ArtifactStarted,
    Completion,
    ErrorEvent,
    Event,
    TextChunk,
    ToolCompleted,
    ToolError,
    ToolExecuting,
    Usage,
    event_type,
    from_wire,
    to_wire,
    wire_json,
)
from streamchat.sse import encode_frame

COMMON = {"chunkIndex": 3, "elapsedMs": 250.4}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (TextChunk("Hello"), {"type": "text", "content": "Hello", "textDelta": "Hello"}),
        (
            ToolExecuting("add", "call_1", '{"a":25,"b":17}'),
            {
                "type": "tool_executing",
                "toolName": "add",
                "toolId": "call_1",
                "arguments": '{"a":25,"b":17}',
            },
        ),
        (
            ToolCompleted("add", "call_1", "{}", "42", 0.5),
            {
                "type": "tool_completed",
                "toolName": "add",
                "toolId": "call_1",
                "arguments": "{}",
                "result": "42",
                "executionMs": 0.5,
            },
        ),
        (
            ToolError("divide", "c", "{}", "Cannot divide by zero", 1.0),
            {
                "type": "tool_error",
                "toolName": "divide",
                "toolId": "c",
                "arguments": "{}",
                "error": "Cannot divide by zero",
                "executionMs": 1.0,
            },
        ),
        (
            ArtifactStarted("hello-py", "code", "hello.py", "python"),
            {
                "type": "artifact_started",
                "artifactId": "hello-py",
                "artifactType": "code",
                "title": "hello.py",
                "language": "python",
            },
        ),
        (
            ArtifactStarted("notes", "document", "notes.md"),
            {
                "type": "artifact_started",
                "artifactId": "notes",
                "artifactType": "document",
                "title": "notes.md",
            },
        ),
        (
            ArtifactContent("hello-py", "def "),
            {"type": "artifact_content", "artifactId": "hello-py", "contentDelta": "def "},
        ),
        (
            ArtifactCompleted("hello-py", "code", "hello.py", "python", "x = 1"),
            {
                "type": "artifact_completed",
                "artifactId": "hello-py",
                "artifactType": "code",
                "title": "hello.py",
                "language": "python",
                "content": "x = 1",
            },
        ),
        (
            ArtifactCompleted("a", "code", "a.py", None, "x", truncated=True),
            {
                "type": "artifact_completed",
                "artifactId": "a",
                "artifactType": "code",
                "title": "a.py",
                "content": "x",
                "truncated": True,
            },
        ),
        (
            Completion("stop", "m/x", "gen-1", "conv-1", Usage(10, 5, 15, 0.002)),
            {
                "type": "completion",
                "finishReason": "stop",
                "model": "m/x",
                "id": "gen-1",
                "conversationId": "conv-1",
                "usage": {
                    "promptTokens": 10,
                    "completionTokens": 5,
                    "totalTokens": 15,
                    "cost": 0.002,
                },
            },
        ),
        (
            Completion(None, None, None, "conv-1"),
            {"type": "completion", "conversationId": "conv-1"},
        ),
        (
            ErrorEvent("Rate limit exceeded", "rate_limited"),
            {"type": "error", "message": "Rate limit exceeded", "code": "rate_limited"},
        ),
    ],
)
def test_exact_json_of_every_event(event: Event, expected: dict[str, Any]) -> None:
    frame = encode_frame("2:3", event_type(event), to_wire(event, 3, 250.4))

    id_line, event_line, data_line, blank, end = frame.decode().split("\n")

    assert id_line == "id: 2:3"
    assert event_line == f"event: {expected['type']}"
    assert json.loads(data_line.removeprefix("data: ")) == {**expected, **COMMON}
    assert list(json.loads(data_line.removeprefix("data: ")))[:3] == [
        "type",
        "chunkIndex",
        "elapsedMs",
    ]
    assert (blank, end) == ("", "")


def test_data_stays_on_one_line_whatever_the_text() -> None:
    text = "line one\nline two\r\n\u2028 é 🚀"
    frame = encode_frame("1:0", "text", to_wire(TextChunk(text), 0, 0.0))

    data_lines = [line for line in frame.split(b"\n") if line.startswith(b"data: ")]

    assert len(data_lines) == 1
    assert json.loads(data_lines[0][6:])["content"] == text
    assert frame.count(b"\n\n") == 1


def test_usage_adds_up_and_keeps_cost_unknown_when_never_known() -> None:
    assert Usage(1, 2, 3) + Usage(4, 5, 9) == Usage(5, 7, 12, None)
    assert Usage(1, 2, 3, 0.5) + Usage(1, 1, 2) == Usage(2, 3, 5, 0.5)


@pytest.mark.parametrize(
    "event",
    [
        TextChunk("héllo\n"),
        ToolExecuting("add", "t1", '{"a":1}'),
        ToolCompleted("add", "t1", '{"a":1}', "2", 0.5),
        ToolError("divide", "t2", "{}", "Cannot divide by zero", 0.1),
        ArtifactStarted("a", "code", "a.py", "python"),
        ArtifactStarted("b", "document", "b.md"),
        ArtifactContent("a", "print(1)"),
        ArtifactCompleted("a", "code", "a.py", None, "x", truncated=True),
        Completion("stop", "m", "gen", "conv", Usage(1, 2, 3, 0.5), turn=4),
        Completion("cancelled", None, None, "conv"),
        ErrorEvent("boom", "upstream_error"),
    ],
)
def test_from_wire_reads_back_every_event(event: Event) -> None:
    assert from_wire(json.loads(json.dumps(to_wire(event, 3, 1.5)))) == event
    # The direct encoding (text by an f-string) is the same JSON, and reads back the same.
    assert json.loads(wire_json(3, event, 1.5)) == to_wire(event, 3, 1.5)
    assert from_wire(json.loads(wire_json(3, event, 1.5))) == event
