"""The values that flow through a turn: what a provider yields, and the events a client receives.

Providers yield `ModelDelta`s (`TextChunk`, `ToolCall`, `Finish`). Every later stage of the
pipeline yields `Event`s, the event types of the README's API reference, and `to_wire()` turns
one into the camelCase dict of its `data:` line. They are frozen, slotted dataclasses rather than
pydantic models: one is built per token, and a dataclass plus one `json.dumps` costs a fraction
of a pydantic model with aliases. This module imports nothing from the package, so cycles cannot
form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost is not None or other.cost is not None:
            cost = (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            cost,
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.total_tokens,
        }
        if self.cost is not None:
            wire["cost"] = self.cost
        return wire


# --- what a provider yields ---------------------------------------------------------------


@dataclass(slots=True)
class TextChunk:
    """A piece of the model's text; also the `text` event a client receives."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete tool call of a model round (fragments already joined by `index`)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of one model round."""

    reason: str | None
    model: str | None = None
    id: str | None = None
    usage: Usage | None = None


ModelDelta = TextChunk | ToolCall | Finish


# --- what a client receives ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolExecuting:
    tool_name: str
    tool_id: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolApprovalRequired:
    """A tool call waits for a person to approve or deny it."""

    tool_name: str
    tool_id: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCompleted:
    tool_name: str
    tool_id: str
    arguments: str
    result: str
    execution_ms: float


@dataclass(frozen=True, slots=True)
class ToolError:
    tool_name: str
    tool_id: str
    arguments: str
    error: str
    execution_ms: float


@dataclass(frozen=True, slots=True)
class ArtifactStarted:
    artifact_id: str
    artifact_type: str
    title: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ArtifactContent:
    artifact_id: str
    content_delta: str


@dataclass(frozen=True, slots=True)
class ArtifactCompleted:
    artifact_id: str
    artifact_type: str
    title: str
    language: str | None
    content: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    finish_reason: str | None
    model: str | None
    id: str | None
    conversation_id: str
    usage: Usage | None = None
    turn: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    message: str
    code: str


Event = (
    TextChunk
    | ToolApprovalRequired
    | ToolExecuting
    | ToolCompleted
    | ToolError
    | ArtifactStarted
    | ArtifactContent
    | ArtifactCompleted
    | Completion
    | ErrorEvent
)
Terminal = Completion | ErrorEvent


def event_type(event: Event) -> str:
    """The wire name of an event: the `type` field and the SSE `event:` line."""
    return _TYPE_NAMES[type(event)]


def to_wire(event: Event, chunk_index: int, elapsed_ms: float) -> dict[str, Any]:
    """The JSON object of an event's `data:` line: camelCase, null fields left out."""
    wire: dict[str, Any] = {
        "type": _TYPE_NAMES[type(event)],
        "chunkIndex": chunk_index,
        "elapsedMs": elapsed_ms,
    }
    match event:
        case TextChunk(text=text):
            wire["content"] = text
            wire["textDelta"] = text
        case ToolExecuting() | ToolCompleted() | ToolError() | ToolApprovalRequired():
            wire["toolName"] = event.tool_name
            wire["toolId"] = event.tool_id
            wire["arguments"] = event.arguments
            if isinstance(event, ToolCompleted):
                wire["result"] = event.result
                wire["executionMs"] = event.execution_ms
            elif isinstance(event, ToolError):
                wire["error"] = event.error
                wire["executionMs"] = event.execution_ms
        case ArtifactStarted() | ArtifactCompleted():
            wire["artifactId"] = event.artifact_id
            wire["artifactType"] = event.artifact_type
            wire["title"] = event.title
            if event.language is not None:
                wire["language"] = event.language
            if isinstance(event, ArtifactCompleted):
                wire["content"] = event.content
                if event.truncated:
                    wire["truncated"] = True
        case ArtifactContent(artifact_id=artifact_id, content_delta=delta):
            wire["artifactId"] = artifact_id
            wire["contentDelta"] = delta
        case Completion():
            if event.finish_reason is not None:
                wire["finishReason"] = event.finish_reason
            if event.model is not None:
                wire["model"] = event.model
            if event.id is not None:
                wire["id"] = event.id
            wire["conversationId"] = event.conversation_id
            if event.turn is not None:
                wire["turn"] = event.turn
            if event.usage is not None:
                wire["usage"] = event.usage.to_wire()
        case ErrorEvent(message=message, code=code):
            wire["message"] = message
            wire["code"] = code
    return wire


_TYPE_NAMES: dict[type, str] = {
    TextChunk: "text",
    ToolApprovalRequired: "tool_approval_required",
    ToolExecuting: "tool_executing",
    ToolCompleted: "tool_completed",
    ToolError: "tool_error",
    ArtifactStarted: "artifact_started",
    ArtifactContent: "artifact_content",
    ArtifactCompleted: "artifact_completed",
    Completion: "completion",
    ErrorEvent: "error",
}


def from_wire(wire: dict[str, Any]) -> Event:
    """The event of a `to_wire()` dict: how another process reads a turn's shared log."""
    kind = wire["type"]
    if kind == "text":
        return TextChunk(wire["content"])
    if kind in ("tool_executing", "tool_completed", "tool_error", "tool_approval_required"):
        name, tool_id, arguments = wire["toolName"], wire["toolId"], wire["arguments"]
        if kind == "tool_executing":
            return ToolExecuting(name, tool_id, arguments)
        if kind == "tool_approval_required":
            return ToolApprovalRequired(name, tool_id, arguments)
        if kind == "tool_completed":
            return ToolCompleted(name, tool_id, arguments, wire["result"], wire["executionMs"])
        return ToolError(name, tool_id, arguments, wire["error"], wire["executionMs"])
    if kind == "artifact_started":
        return ArtifactStarted(
            wire["artifactId"], wire["artifactType"], wire["title"], wire.get("language")
        )
    if kind == "artifact_content":
        return ArtifactContent(wire["artifactId"], wire["contentDelta"])
    if kind == "artifact_completed":
        return ArtifactCompleted(
            wire["artifactId"],
            wire["artifactType"],
            wire["title"],
            wire.get("language"),
            wire["content"],
            wire.get("truncated", False),
        )
    if kind == "completion":
        usage = wire.get("usage")
        return Completion(
            wire.get("finishReason"),
            wire.get("model"),
            wire.get("id"),
            wire["conversationId"],
            Usage(
                usage["promptTokens"],
                usage["completionTokens"],
                usage["totalTokens"],
                usage.get("cost"),
            )
            if usage is not None
            else None,
            wire.get("turn"),
        )
    if kind == "error":
        return ErrorEvent(wire["message"], wire["code"])
    raise ValueError(f"not an event type: {kind!r}")


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (and pairs written as two halves
    joined): what an event may carry, since a frame is UTF-8 and a lone surrogate has none.
    Text from outside (an upstream's `\\ud800` escape, a tool's result) goes through here."""
    if text.isascii() or LONE_SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


# What json.dumps(text, ensure_ascii=False) gives for a string, without its Python frames (the
# C function where the interpreter has it, as json.dumps itself uses).
json_string = encode_basestring


def text_json(index: int, text: str, elapsed: float) -> str:
    """A text event's `data:` JSON from its text, built directly: what json.dumps(to_wire(...))
    gives, compact."""
    text = json_string(text)
    return (
        f'{{"type":"text","chunkIndex":{index},"elapsedMs":{elapsed!r},'
        f'"content":{text},"textDelta":{text}}}'
    )


def wire_json(index: int, event: Event, elapsed: float) -> str:
    """Any event's wire JSON, text by the direct path."""
    if type(event) is TextChunk:
        return text_json(index, event.text, elapsed)
    return json.dumps(to_wire(event, index, elapsed), ensure_ascii=False, separators=(",", ":"))
