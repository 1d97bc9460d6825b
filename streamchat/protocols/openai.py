"""OpenAI's chat completions, streamed (`chat.completion.chunk`s, then `data: [DONE]`) or whole.

Any OpenAI client gets streamchat's answer with its tools already run on the server: the client
sees the final text; artifacts are written into it as Markdown (a bold title, then a fenced
block). What the server did on the way (tool calls and their results, artifacts, the
conversation and turn) is in an extension field, `streamchat`, on the chunks where it happened
(streaming: a chunk with an empty `delta`) or on the completion (not streaming), which OpenAI's
clients keep as an extra attribute and otherwise ignore.
"""

from __future__ import annotations

import json
import re
import time
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
    Usage,
    json_string,
    to_wire,
)
from streamchat.protocols.stream import SSE_HEADERS

DONE = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
# The HTTP status of a turn's error, when the whole answer is awaited before responding.
ERROR_STATUS = {
    "rate_limited": 429,
    "quota_exceeded": 429,
    "budget_exceeded": 429,
    "timeout": 504,
    "upstream_unreachable": 502,
    "upstream_error": 502,
    "upstream_auth": 502,
    "insufficient_credits": 402,
    "invalid_model": 400,
    "invalid_request": 400,
    "request_too_large": 413,
    "no_api_key": 503,
    "shutting_down": 503,
    "store_unavailable": 503,
}


_CONTENT_END = '},"finish_reason":null}]}\n\n'


# An artifact's fence: longer than the ``` of the code blocks a Markdown document (or a
# docstring) inside it holds, since a fence is closed by any line of as many backticks or more.
FENCE = "````"
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,})", re.MULTILINE)


# What could start markup inside the bold title (`__init__.py` would lose its underscores).
_TITLE_MARKUP = re.compile(r"([\\`*_\[\]<>~&])")


def artifact_opening(event: ArtifactStarted, fence: str = FENCE) -> str:
    title = _TITLE_MARKUP.sub(r"\\\1", " ".join(event.title.split()))
    return f"\n\n**{title}**\n{fence}{event.language or ''}\n"


def artifact_closing(fence: str = FENCE) -> str:
    return f"\n{fence}\n\n"


def fence_for(content: str) -> str:
    """The shortest fence, `FENCE` at least, that no line of `content` closes (a whole answer
    knows its artifacts' content; a streamed one opens each before it has any)."""
    longest = max((len(run) for run in _FENCE_LINE.findall(content)), default=0)
    return "`" * max(len(FENCE), longest + 1)


def _usage(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cost is not None:
        wire["cost"] = usage.cost
    return wire


def _extension(event: Event, index: int, elapsed: float) -> dict[str, Any]:
    wire = to_wire(event, index, elapsed)
    wire.pop("chunkIndex", None)
    wire.pop("elapsedMs", None)
    return wire


class ChunkEncoder:
    """`stream: true`: one `chat.completion.chunk` per text delta, as OpenAI sends them."""

    headers = SSE_HEADERS

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self._id = ""
        self._started = False
        self._content = ""  # a text chunk's frame up to its content

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + _dumps(body).encode() + b"\n\n"

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self._id = f"chatcmpl-{turn}-{int(time.time() * 1000):x}"
            out.append(self._chunk({"role": "assistant", "content": ""}))
            head = self._chunk({"content": ""}).decode()
            self._content = head[: head.index('"content":') + len('"content":')]
        for n, event in enumerate(events):
            match event:
                case TextChunk(text=text):
                    if text:
                        # The hot path, one per token: the same bytes as _chunk(), no dict.
                        out.append(f"{self._content}{json_string(text)}{_CONTENT_END}".encode())
                case ArtifactStarted():
                    out.append(
                        self._chunk(
                            {"content": artifact_opening(event)},
                            streamchat=_extension(event, first + n, elapsed[n]),
                        )
                    )
                case ArtifactContent(content_delta=delta):
                    out.append(self._chunk({"content": delta}))
                case ArtifactCompleted():
                    out.append(
                        self._chunk(
                            {"content": artifact_closing()},
                            streamchat=_extension(event, first + n, elapsed[n]),
                        )
                    )
                case ToolExecuting() | ToolCompleted() | ToolError() | ToolApprovalRequired():
                    out.append(self._chunk({}, streamchat=_extension(event, first + n, elapsed[n])))
                case Completion():
                    finish = _FINISH.get(event.finish_reason or "stop", "stop")
                    out.append(
                        self._chunk({}, finish, streamchat=_extension(event, first + n, elapsed[n]))
                    )
                    if self.include_usage:
                        usage = _usage(event.usage or Usage())
                        body = {
                            "id": self._id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": usage,
                        }
                        out.append(b"data: " + _dumps(body).encode() + b"\n\n")
                    out.append(DONE)
                case ErrorEvent(message=message, code=code):
                    # OpenAI's clients raise an APIError on a chunk with an `error` key.
                    error = {"message": message, "type": "server_error", "code": code}
                    out.append(b"data: " + _dumps({"error": error}).encode() + b"\n\n")
        return b"".join(out)


class Collector:
    """Without `stream`: the whole answer, gathered from the turn's events."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.activity: list[dict[str, Any]] = []
        self.terminal: Completion | ErrorEvent | None = None
        self.turn = 0
        # Each open artifact's start, and where its opening goes in `content` once its fence
        # is known (at its end).
        self._opened: dict[str, tuple[int, ArtifactStarted]] = {}

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        self.turn = turn
        for n, event in enumerate(events):
            match event:
                case TextChunk(text=text):
                    self.content.append(text)
                case ArtifactStarted(artifact_id=artifact_id):
                    self._opened[artifact_id] = (len(self.content), event)
                    self.content.append(artifact_opening(event))
                    self.activity.append(_extension(event, first + n, elapsed[n]))
                case ArtifactContent(content_delta=delta):
                    self.content.append(delta)
                case ArtifactCompleted(artifact_id=artifact_id, content=content):
                    fence = fence_for(content)
                    if artifact_id in self._opened:
                        at, started = self._opened.pop(artifact_id)
                        self.content[at] = artifact_opening(started, fence)
                    self.content.append(artifact_closing(fence))
                    self.activity.append(_extension(event, first + n, elapsed[n]))
                case ToolExecuting() | ToolCompleted() | ToolError() | ToolApprovalRequired():
                    self.activity.append(_extension(event, first + n, elapsed[n]))
                case Completion() | ErrorEvent():
                    self.terminal = event
        return b""

    def completion(self, model: str, conversation_id: str | None) -> dict[str, Any]:
        assert isinstance(self.terminal, Completion)
        done = self.terminal
        extension: dict[str, Any] = {"turn": self.turn, "events": self.activity}
        if conversation_id is not None:
            extension["conversationId"] = conversation_id
        if done.finish_reason == "cancelled":
            extension["finishReason"] = "cancelled"
        return {
            "id": f"chatcmpl-{self.turn}-{int(time.time() * 1000):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": done.model or model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.content)},
                    "finish_reason": _FINISH.get(done.finish_reason or "stop", "stop"),
                }
            ],
            "usage": _usage(done.usage or Usage()),
            "streamchat": extension,
        }


def error_body(message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body: `{"error": {"message", "type", "param", "code"}}`."""
    kind = "invalid_request_error" if code in ("invalid_request", "invalid_json") else "api_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
