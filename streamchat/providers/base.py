"""The `Provider` protocol and what it is given: OpenAI-shaped messages and a request.

A provider has one job: `stream(request)` yields `TextChunk`s as they come, then the round's
complete `ToolCall`s, then one `Finish`. It yields them in batches: a batch is what came into
being at one moment (the deltas of one upstream read), and becomes one write to the client,
which costs far less than a write per token. It raises `UpstreamError` for anything that should
reach the client as an `error` event with a code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, Required, TypeAlias, TypedDict, TypeVar

from streamchat.events import ModelDelta

T = TypeVar("T")
# Unlike AsyncIterator, an AsyncGenerator has aclose(): closing the last stage closes them all.
Stream: TypeAlias = AsyncGenerator[T, None]


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCallMessage(TypedDict):
    id: str
    type: str
    function: FunctionCall


class Message(TypedDict, total=False):
    role: Required[str]
    content: str | None
    tool_calls: NotRequired[list[ToolCallMessage]]
    tool_call_id: NotRequired[str]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str
    messages: list[Message]
    tools: list[dict[str, Any]] = field(default_factory=list)


class UpstreamError(Exception):
    """A failure to tell the client about: `code` for programs, `message` for people.

    `message` reaches the client, so it never holds a URL, host, port or exception text;
    `detail` is the internal cause (the address called, the exception, the upstream's raw
    answer) and goes only to the server log.
    """

    def __init__(
        self, code: str, message: str, status: int | None = None, *, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail or message


class Provider(Protocol):
    name: str

    def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]: ...
