"""The Vercel AI SDK's UI message stream (`x-vercel-ai-ui-message-stream: v1`), for `useChat`.

Each part is one `data:` line of JSON; the stream ends with `data: [DONE]`. A turn becomes one
assistant message: `start`, then a step per model round (`start-step` ... `finish-step`), its
text as `text-start` / `text-delta` / `text-end`, each tool call as `tool-input-start` and
`tool-input-available` with the parsed input, then `tool-output-available` (or
`tool-output-error`) once the server has run it; then `finish` (or `abort` after a stop, or
`error`). Artifacts are `data-artifact` parts with the artifact's id as the part id, so the
client replaces the part in place: one when it starts (empty, `status: "streaming"`) and one
when it completes (the whole content); the content in between goes out as transient
`data-artifact-delta` parts, which `useChat` hands to `onData` without keeping them.
"""

from __future__ import annotations

import json
from typing import Any

from streamchat.events import (
    ArtifactCompleted,
    ArtifactContent,
    ArtifactStarted,
    Completion,
    ErrorEvent,
    Event,
    TextChunk,
    ToolApprovalRequired,
    ToolCompleted,
    ToolError,
    ToolExecuting,
    json_string,
)
from streamchat.protocols.stream import SSE_HEADERS

HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
DONE = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter"}


def part(value: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(value).encode() + b"\n\n"


class AiSdkEncoder:
    headers = HEADERS

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self._started = False
        self._in_step = False
        self._text_id: str | None = None
        self._delta = ""  # the start of the open text part's text-delta frames
        self._texts = 0
        self._pending: set[str] = set()
        self._announced: set[str] = set()  # tool calls whose input went out with an approval

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            message_id = f"{self.conversation_id}-{turn}"
            out.append(part({"type": "start", "messageId": message_id}))
        for event in events:
            if type(event) is TextChunk:
                if not event.text:
                    continue
                self._step(out)
                if self._text_id is None:
                    self._texts += 1
                    self._text_id = f"text-{self._texts}"
                    out.append(part({"type": "text-start", "id": self._text_id}))
                    self._delta = f'data: {{"type":"text-delta","id":"{self._text_id}","delta":'
                # The hot path, one per token: the same bytes as part(), without the dict.
                out.append(f"{self._delta}{json_string(event.text)}}}\n\n".encode())
            else:
                self._other(event, out)
        return b"".join(out)

    def _other(self, event: Event, out: list[bytes]) -> None:
        match event:
            case ToolApprovalRequired(tool_name=name, tool_id=tool_id, arguments=arguments):
                self._step(out)
                self._end_text(out)
                self._pending.add(tool_id)
                self._announced.add(tool_id)
                self._tool_input(out, tool_id, name, arguments)
                out.append(
                    part(
                        {
                            "type": "tool-approval-request",
                            "approvalId": tool_id,
                            "toolCallId": tool_id,
                        }
                    )
                )
            case ToolExecuting(tool_id=tool_id) if tool_id in self._announced:
                pass  # its input went out with the approval request
            case ToolExecuting(tool_name=name, tool_id=tool_id, arguments=arguments):
                self._step(out)
                self._end_text(out)
                self._pending.add(tool_id)
                self._tool_input(out, tool_id, name, arguments)
            case ToolCompleted(tool_id=tool_id, result=result):
                out.append(
                    part({"type": "tool-output-available", "toolCallId": tool_id, "output": result})
                )
                self._tool_done(tool_id, out)
            case ToolError(tool_id=tool_id, error=error):
                out.append(
                    part({"type": "tool-output-error", "toolCallId": tool_id, "errorText": error})
                )
                self._tool_done(tool_id, out)
            case ArtifactStarted():
                self._step(out)
                self._end_text(out)
                out.append(
                    _artifact(
                        event.artifact_id,
                        event.artifact_type,
                        event.title,
                        event.language,
                        "",
                        "streaming",
                    )
                )
            case ArtifactContent(artifact_id=artifact_id, content_delta=delta):
                out.append(
                    part(
                        {
                            "type": "data-artifact-delta",
                            "data": {"artifactId": artifact_id, "delta": delta},
                            "transient": True,
                        }
                    )
                )
            case ArtifactCompleted():
                status = "truncated" if event.truncated else "done"
                out.append(
                    _artifact(
                        event.artifact_id,
                        event.artifact_type,
                        event.title,
                        event.language,
                        event.content,
                        status,
                    )
                )
            case Completion():
                self._end_text(out)
                self._end_step(out)
                metadata: dict[str, Any] = {"conversationId": event.conversation_id}
                if event.turn is not None:
                    metadata["turn"] = event.turn
                if event.model is not None:
                    metadata["model"] = event.model
                if event.usage is not None:
                    metadata["usage"] = event.usage.to_wire()
                if event.finish_reason == "cancelled":
                    out.append(part({"type": "abort", "reason": "cancelled"}))
                else:
                    reason = _FINISH_REASONS.get(event.finish_reason or "stop", "other")
                    out.append(
                        part(
                            {"type": "finish", "finishReason": reason, "messageMetadata": metadata}
                        )
                    )
                out.append(DONE)
            case ErrorEvent(message=message):
                self._end_text(out)
                out.append(part({"type": "error", "errorText": message}))
                out.append(DONE)

    def _tool_input(self, out: list[bytes], tool_id: str, name: str, arguments: str) -> None:
        out.append(part({"type": "tool-input-start", "toolCallId": tool_id, "toolName": name}))
        out.append(
            part(
                {
                    "type": "tool-input-available",
                    "toolCallId": tool_id,
                    "toolName": name,
                    "input": _parsed(arguments),
                }
            )
        )

    def _step(self, out: list[bytes]) -> None:
        if not self._in_step:
            self._in_step = True
            out.append(part({"type": "start-step"}))

    def _end_step(self, out: list[bytes]) -> None:
        if self._in_step:
            self._in_step = False
            out.append(part({"type": "finish-step"}))

    def _end_text(self, out: list[bytes]) -> None:
        if self._text_id is not None:
            out.append(part({"type": "text-end", "id": self._text_id}))
            self._text_id = None

    def _tool_done(self, tool_id: str, out: list[bytes]) -> None:
        """A model round ends when every tool it called has its result: so does its step."""
        self._pending.discard(tool_id)
        if not self._pending:
            self._end_step(out)


def _artifact(
    artifact_id: str,
    artifact_type: str,
    title: str,
    language: str | None,
    content: str,
    status: str,
) -> bytes:
    data: dict[str, Any] = {
        "artifactId": artifact_id,
        "artifactType": artifact_type,
        "title": title,
        "content": content,
        "status": status,
    }
    if language is not None:
        data["language"] = language
    return part({"type": "data-artifact", "id": artifact_id, "data": data})


def _parsed(arguments: str) -> Any:
    """The tool's input as the model meant it: JSON when it parses, else the raw string."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def user_text(body: dict[str, Any]) -> str | None:
    """The text of the last user message of a `useChat` request body (`messages[].parts`)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            texts = [
                p["text"]
                for p in parts
                if isinstance(p, dict)
                and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            ]
            return "".join(texts)
        content = message.get("content")
        return content if isinstance(content, str) else None
    return None
