"""The wire shapes of what the API answers, as pydantic models: the events of SPEC section 2 and
the JSON bodies (errors, a conversation, the list, stop, delete, health).

The server does not build its answers with these: an event is a frozen dataclass that
`events.to_wire()` turns into a dict (one per token, so it must be cheap), and the bodies are
dicts written by their handlers. These models are what `/openapi.json` publishes, and the tests
validate every `to_wire()` and every body the server sends against them, so the document and the
server cannot drift apart. Fields that are left out when null are plain optional fields here,
and the document shows them as absent-or-a-value (never `null`), as the wire has them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    """A camelCase JSON object with exactly these fields."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True
    )


# --- events ----------------------------------------------------------------------------------


class EventBase(Wire):
    chunk_index: int = Field(
        ge=0, description="0, 1, 2, ... across the whole turn; `<turn>:<chunkIndex>` is the SSE id"
    )
    elapsed_ms: float = Field(
        ge=0, description="milliseconds since the turn started; never decreasing"
    )


class TextEvent(EventBase):
    type: Literal["text"]
    content: str = Field(description="the text delta")
    text_delta: str = Field(description="the same string, for clients of OpenRouter.NET")


class ToolApprovalRequiredEvent(EventBase):
    type: Literal["tool_approval_required"]
    tool_name: str
    tool_id: str = Field(description="what `POST /api/conversation/{id}/approve` names")
    arguments: str = Field(description="the raw JSON string the model produced")


class ToolExecutingEvent(EventBase):
    type: Literal["tool_executing"]
    tool_name: str
    tool_id: str
    arguments: str = Field(description="the raw JSON string the model produced")


class ToolCompletedEvent(EventBase):
    type: Literal["tool_completed"]
    tool_name: str
    tool_id: str
    arguments: str
    result: str
    execution_ms: float = Field(ge=0)


class ToolErrorEvent(EventBase):
    type: Literal["tool_error"]
    tool_name: str
    tool_id: str
    arguments: str
    error: str = Field(description="what went wrong, for a person; also what the model receives")
    execution_ms: float = Field(ge=0)


class ArtifactStartedEvent(EventBase):
    type: Literal["artifact_started"]
    artifact_id: str
    artifact_type: str = Field(description="`code`, `document`, `data`, ...")
    title: str
    language: str | None = Field(None, description="left out when unknown")


class ArtifactContentEvent(EventBase):
    type: Literal["artifact_content"]
    artifact_id: str
    content_delta: str


class ArtifactCompletedEvent(EventBase):
    type: Literal["artifact_completed"]
    artifact_id: str
    artifact_type: str
    title: str
    language: str | None = Field(None, description="left out when unknown")
    content: str = Field(description="the whole body: the `contentDelta`s joined")
    truncated: Literal[True] | None = Field(
        None, description="present (and true) only when the reply ended inside the artifact"
    )


class Usage(Wire):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    cost: float | None = Field(None, description="in US dollars, when the upstream reports it")


class CompletionEvent(EventBase):
    type: Literal["completion"]
    finish_reason: str | None = Field(None, description="`stop`, `length`, `cancelled`, ...")
    model: str | None = None
    id: str | None = Field(None, description="the upstream's generation id")
    conversation_id: str
    turn: int | None = Field(None, ge=1, description="the turn's number in its conversation")
    usage: Usage | None = Field(None, description="summed over the turn's model rounds")


class ErrorEvent(EventBase):
    type: Literal["error"]
    message: str = Field(description="for a person; never a stack trace, address or URL")
    code: str = Field(
        description="for a program: `upstream_error`, `rate_limited`, `invalid_model`, "
        "`upstream_auth`, `timeout`, `tool_loop_limit`, `interrupted`, `shutting_down`, "
        "`store_unavailable`, `internal`, ..."
    )


StreamEvent = Annotated[
    TextEvent
    | ToolApprovalRequiredEvent
    | ToolExecutingEvent
    | ToolCompletedEvent
    | ToolErrorEvent
    | ArtifactStartedEvent
    | ArtifactContentEvent
    | ArtifactCompletedEvent
    | CompletionEvent
    | ErrorEvent,
    Field(discriminator="type"),
]

EVENT_MODELS: tuple[type[EventBase], ...] = (
    TextEvent,
    ToolApprovalRequiredEvent,
    ToolExecutingEvent,
    ToolCompletedEvent,
    ToolErrorEvent,
    ArtifactStartedEvent,
    ArtifactContentEvent,
    ArtifactCompletedEvent,
    CompletionEvent,
    ErrorEvent,
)


# --- JSON bodies -----------------------------------------------------------------------------


class ErrorDetail(Wire):
    message: str = Field(description="for a person")
    code: str = Field(description="for a program; the codes of each status are listed with it")
    param: str | None = Field(None, description="the field or parameter at fault, when one is")


class ErrorBody(Wire):
    error: ErrorDetail


class ConversationSummary(Wire):
    conversation_id: str
    title: str = Field(description="the first user message, cut to 80 characters")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    turns: int = Field(ge=0, description="the number of the last turn begun")
    running_turn: int | None = Field(description="the number of the running turn, or null")


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    arguments: str


class ToolCallMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(BaseModel):
    """An OpenAI-shaped message, as the history is sent upstream."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(description="null for an assistant message that only calls tools")
    tool_calls: list[ToolCallMessage] | None = Field(
        None, description="an assistant message's tool calls; left out otherwise"
    )
    tool_call_id: str | None = Field(None, description="a tool message's call; left out otherwise")


class StoredArtifact(Wire):
    artifact_id: str
    artifact_type: str
    title: str
    language: str | None = Field(None, description="left out when unknown")
    content: str
    turn: int = Field(ge=1, description="the turn that made it")
    truncated: Literal[True] | None = None


class Conversation(ConversationSummary):
    messages: list[Message] = Field(description="the whole history, system prompt first")
    artifacts: list[StoredArtifact]


class ConversationList(Wire):
    conversations: list[ConversationSummary] = Field(description="most recently used first")
    next: str | None = Field(
        description="pass it as `before` for the next page; null on the last page"
    )


class StopResult(Wire):
    stopped: bool
    turn: int | None = Field(None, ge=1, description="the stopped turn; left out when none ran")


class Cleared(Wire):
    message: Literal["Conversation cleared"]


class Health(BaseModel):
    """What `/health` says; more fields may be added."""

    model_config = ConfigDict(strict=True)
    status: Literal["ok", "shutting_down", "unavailable"]
    backend: str
    model: str = Field(description="the default model")
    models: list[str] = Field(description="the models the chat page offers, the default first")
    store: str
    turns: int = Field(ge=0, description="turns in flight in this process")
    reason: str | None = Field(None, description="why the status is not ok; left out when it is")


def omit_nulls(schema: dict[str, Any]) -> None:
    """Show `X | None = None` fields as what the wire has: absent, or an X (never null).

    Applied to the models whose null fields are left out; a field that is required and
    nullable (`runningTurn`, `next`, a message's `content`) keeps its null.
    """
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        if name in required or "anyOf" not in field or field.get("default", 0) is not None:
            continue
        kept = [choice for choice in field["anyOf"] if choice != {"type": "null"}]
        del field["anyOf"], field["default"]
        if len(kept) == 1:
            field.update(kept[0])
        else:
            field["anyOf"] = kept
