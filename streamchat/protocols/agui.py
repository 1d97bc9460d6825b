"""AG-UI (the Agent-User Interaction protocol, 1.0), for CopilotKit and other AG-UI front ends.

`POST /api/agui` takes a `RunAgentInput`; the `threadId` is the conversation and the last user
message of `messages` is the new one (streamchat keeps the history itself). The run streams as
`data:` lines of AG-UI events: `RUN_STARTED`; the assistant's text as `TEXT_MESSAGE_START` /
`_CONTENT` / `_END`; each tool call as `TOOL_CALL_START` / `_ARGS` / `_END` and, once the server
has run it, `TOOL_CALL_RESULT`; artifacts as `CUSTOM` events named after streamchat's event
types (`artifact_started`, `artifact_content`, `artifact_completed`) with the event as value;
then `RUN_FINISHED` (its `result` says `cancelled` after a stop) or `RUN_ERROR`.
AG-UI has no resume of its own: a reconnecting client joins through streamchat's own routes.
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
    to_wire,
)
from streamchat.protocols.stream import SSE_HEADERS

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _event(value: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(value).encode() + b"\n\n"


class AguiEncoder:
    headers = SSE_HEADERS

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._started = False
        self._message_id: str | None = None
        self._content = ""  # the start of the open message's TEXT_MESSAGE_CONTENT frames
        self._messages = 0
        self._turn = 0

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        out: list[bytes] = []
        self._turn = turn
        if not self._started:
            self._started = True
            out.append(
                _event({"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id})
            )
        for n, event in enumerate(events):
            match event:
                case TextChunk(text=text):
                    if not text:
                        continue
                    if self._message_id is None:
                        self._messages += 1
                        self._message_id = f"{self.run_id}-{self._messages}"
                        self._content = (
                            'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":'
                            f'{json_string(self._message_id)},"delta":'
                        )
                        out.append(
                            _event(
                                {
                                    "type": "TEXT_MESSAGE_START",
                                    "messageId": self._message_id,
                                    "role": "assistant",
                                }
                            )
                        )
                    # The hot path, one per token: the same bytes as _event(), without the dict.
                    out.append(f"{self._content}{json_string(text)}}}\n\n".encode())
                case ToolExecuting(tool_name=name, tool_id=tool_id, arguments=arguments):
                    parent = self._message_id
                    self._end_text(out)
                    start: dict[str, Any] = {
                        "type": "TOOL_CALL_START",
                        "toolCallId": tool_id,
                        "toolCallName": name,
                    }
                    if parent is not None:
                        start["parentMessageId"] = parent
                    out.append(_event(start))
                    if arguments:
                        out.append(
                            _event(
                                {
                                    "type": "TOOL_CALL_ARGS",
                                    "toolCallId": tool_id,
                                    "delta": arguments,
                                }
                            )
                        )
                    out.append(_event({"type": "TOOL_CALL_END", "toolCallId": tool_id}))
                case (
                    ToolCompleted(tool_id=tool_id, result=result)
                    | ToolError(tool_id=tool_id, error=result)
                ):
                    content = result if isinstance(event, ToolCompleted) else f"Error: {result}"
                    out.append(
                        _event(
                            {
                                "type": "TOOL_CALL_RESULT",
                                "messageId": f"{tool_id}-result",
                                "toolCallId": tool_id,
                                "content": content,
                                "role": "tool",
                            }
                        )
                    )
                case (
                    ArtifactStarted()
                    | ArtifactContent()
                    | ArtifactCompleted()
                    | ToolApprovalRequired()
                ):
                    self._end_text(out)
                    wire = to_wire(event, first + n, elapsed[n])
                    out.append(_event({"type": "CUSTOM", "name": wire["type"], "value": wire}))
                case Completion():
                    self._end_text(out)
                    outcome: dict[str, Any] = {
                        "conversationId": event.conversation_id,
                        "finishReason": event.finish_reason,
                    }
                    if event.turn is not None:
                        outcome["turn"] = event.turn
                    if event.usage is not None:
                        outcome["usage"] = event.usage.to_wire()
                    out.append(
                        _event(
                            {
                                "type": "RUN_FINISHED",
                                "threadId": self.thread_id,
                                "runId": self.run_id,
                                "result": outcome,
                            }
                        )
                    )
                case ErrorEvent(message=message, code=code):
                    self._end_text(out)
                    out.append(_event({"type": "RUN_ERROR", "message": message, "code": code}))
        return b"".join(out)

    def _end_text(self, out: list[bytes]) -> None:
        if self._message_id is not None:
            out.append(_event({"type": "TEXT_MESSAGE_END", "messageId": self._message_id}))
            self._message_id = None


def user_text(body: dict[str, Any]) -> str | None:
    """The text of the last user message of a `RunAgentInput`."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    c["text"]
                    for c in content
                    if isinstance(c, dict)
                    and c.get("type") == "text"
                    and isinstance(c.get("text"), str)
                )
            return None
    return None
