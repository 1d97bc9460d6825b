"""What a request says: the chat body, the conversation id, `Last-Event-ID`, and who is calling.

Everything here is checked before any stream starts, and a bad value is an `ApiError` that names
the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamchat.auth import OWNER
from streamchat.errors import ApiError
from streamchat.protocols.native import parse_event_id
from streamchat.settings import Settings

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)


class ChatRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    message: str
    model: str | None = Field(None, max_length=256)
    conversation_id: str | None = Field(
        None, alias="conversationId", pattern=CONVERSATION_ID_PATTERN
    )
    # Replace the conversation's last turn: regenerate, edit and resend, retry after an error.
    regenerate: bool = False


async def read_json_object(request: web.Request, settings: Settings) -> dict[str, Any]:
    """The request body as a JSON object, or an `ApiError` that says what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, "body_too_large", f"The request body is over {settings.max_body_bytes} bytes"
        ) from None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object")
    return body


def check_message(message: str, settings: Settings, param: str = "message") -> None:
    if not message.strip():
        raise ApiError(400, "invalid_request", f"'{param}' must not be empty", param)
    if len(message) > settings.max_message_chars:
        raise ApiError(
            400,
            "message_too_long",
            f"'{param}' is {len(message)} characters; the limit is {settings.max_message_chars}",
            param,
        )


def check_conversation_id(value: object, param: str) -> str:
    if not isinstance(value, str) or not _CONVERSATION_ID.match(value):
        raise ApiError(
            400,
            "invalid_request",
            f"'{param}' must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            param,
        )
    return value


async def parse_chat_request(request: web.Request, settings: Settings) -> ChatRequest:
    body = await read_json_object(request, settings)
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    check_message(chat.message, settings)
    return chat


def _validation_error(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "body"
    if error["type"] == "missing":
        return ApiError(400, "invalid_request", f"'{field}' is required", field)
    if error["type"] == "string_pattern_mismatch":
        message = f"'{field}' must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        return ApiError(400, "invalid_request", message, field)
    return ApiError(400, "invalid_request", f"'{field}': {error['msg']}", field)


def owner_of(request: web.Request) -> str:
    """Who is calling, as the callers middleware (`auth.py`) found out; a request it did not
    see has no caller, and is refused rather than served as anyone."""
    owner = request.get(OWNER)
    if not isinstance(owner, str):
        raise ApiError(
            401,
            "unauthorized",
            "This route needs a known caller.",
            headers={"WWW-Authenticate": 'Bearer realm="streamchat"'},
        )
    return owner


def conversation_id_of(request: web.Request) -> str:
    return check_conversation_id(request.match_info["conversation_id"], "conversationId")


def last_event_id(request: web.Request) -> tuple[int, int] | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if raw is None or not raw.strip():
        return None
    parsed = parse_event_id(raw)
    if parsed is None:
        raise ApiError(
            400,
            "invalid_request",
            "Last-Event-ID must be an event id this server sent, like 2:15 (turn:chunkIndex)",
            "lastEventId",
        )
    return parsed


def no_conversation(conversation_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No conversation with id {conversation_id!r}")
