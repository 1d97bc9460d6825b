"""What a request says: the chat body, the conversation id, `Last-Event-ID`, the list's page, and
who is calling.

Everything here is checked before any stream starts, and a bad value is an `ApiError` that names
the field. No input, however hostile, gets further than that: a body that never arrives, JSON
nested past the parser's depth, a number of thousands of digits and text that is not Unicode are
all answered with a JSON error, never a `500`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamchat.auth import OWNER
from streamchat.errors import ApiError, error_response
from streamchat.events import LONE_SURROGATE
from streamchat.protocols.native import parse_event_id
from streamchat.settings import Settings

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# A cursor is `<updated_at>~<conversation id>`: the repr of a (finite) float, `~`, an id.
CURSOR_PATTERN = r"^-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?~[A-Za-z0-9._:-]{1,128}$"
_CURSOR = re.compile(CURSOR_PATTERN)
EVENT_ID_PATTERN = r"^[0-9]{1,9}:[0-9]{1,9}$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
# A character that is not whitespace as Python's str.strip() sees it, written out for
# /openapi.json: a JSON Schema `\S` has other whitespace (U+0085 is text to it, U+FEFF space).
NOT_BLANK_PATTERN = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)


# The longest model name a request may ask for, in any protocol.
MAX_MODEL_CHARS = 256


class ChatRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    message: str
    model: str | None = Field(None, max_length=MAX_MODEL_CHARS)
    conversation_id: str | None = Field(
        None, alias="conversationId", pattern=CONVERSATION_ID_PATTERN
    )
    # Replace the conversation's last turn: regenerate, edit and resend, retry after an error.
    regenerate: bool = False


LIST_LIMIT = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def read_body_within(
    seconds: float, max_bytes: int
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: a request's body is read whole, within `seconds`, before any handler runs.

    A client that sends headers and then a body slower than that (or none at all, with a
    `Content-Length` it never fills) would otherwise hold its connection and a handler forever:
    it gets `408` and the connection is closed. Handlers then find the body already read.
    """

    @web.middleware
    async def read_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            # A body that came whole with the headers (most do) has nothing left to wait for.
            within = None if request.content.is_eof() else seconds
            try:
                async with asyncio.timeout(within):
                    await request.read()
            except TimeoutError:
                response = error_response(
                    408,
                    "request_timeout",
                    f"The request body did not arrive within {seconds:g} seconds",
                )
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                # The rest of the body may never come: close now (once the answer is flushed)
                # rather than wait to read and discard it, as aiohttp would for ten seconds.
                request.protocol.force_close()
                return response
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(
                    413, "body_too_large", f"The request body is over {max_bytes} bytes"
                ) from None
        return await handler(request)

    return read_body


async def read_json_object(request: web.Request, settings: Settings) -> dict[str, Any]:
    """The request body as a JSON object, or an `ApiError` that says what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, "body_too_large", f"The request body is over {settings.max_body_bytes} bytes"
        ) from None
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object")
    return body


def check_unicode(value: str, param: str) -> None:
    """Refuse a string with a lone surrogate (JSON's `\\ud800` escape): it has no UTF-8, so
    it could not be stored, sent back in a frame, or be a metrics label."""
    if LONE_SURROGATE.search(value) is not None:
        raise ApiError(
            400, "invalid_request", f"'{param}' is not valid Unicode (a lone surrogate)", param
        )


def check_model(model: object, param: str = "model") -> str:
    """A model name asked for in any protocol: it is sent back in events, logged, and labels
    the metrics."""
    if not isinstance(model, str):
        raise ApiError(400, "invalid_request", f"'{param}' must be a string", param)
    if len(model) > MAX_MODEL_CHARS:
        raise ApiError(
            400, "invalid_request", f"'{param}' is over {MAX_MODEL_CHARS} characters", param
        )
    check_unicode(model, param)
    return model


def check_message(message: str, settings: Settings, param: str = "message") -> None:
    check_unicode(message, param)
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
    if not isinstance(value, str) or not _CONVERSATION_ID.fullmatch(value):
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


def parse_json(raw: bytes) -> object:
    """The JSON of a body, or a `400` that says what is wrong with it (never a `500`)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not valid UTF-8") from None
    except RecursionError:
        raise ApiError(
            400, "invalid_json", "The request body is JSON nested too deeply to read"
        ) from None
    except ValueError:
        # Python refuses to convert integers of more than 4,300 digits (a CPU-time guard).
        raise ApiError(
            400, "invalid_json", "The request body has a number with too many digits"
        ) from None


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
    """`Last-Event-ID`, or `?lastEventId=` for a fresh page load: the header wins, an empty
    value is no value, and a malformed one is a `400` wherever it is."""
    found = None
    for raw in (request.query.get("lastEventId", ""), request.headers.get("Last-Event-ID", "")):
        if not raw:
            continue
        # ASCII digits only, no spaces: `\d` and int() would also take other scripts' digits.
        parsed = parse_event_id(raw) if _EVENT_ID.fullmatch(raw) else None
        if parsed is None:
            raise ApiError(
                400,
                "invalid_request",
                "Last-Event-ID must be an event id this server sent, like 2:15 (turn:chunkIndex)",
                "lastEventId",
            )
        found = parsed
    return found


def page_of(request: web.Request) -> tuple[int, str | None]:
    """`?limit=` (1-100, default 20) and `?before=` (a cursor of an earlier page) of the list."""
    raw_limit = request.query.get("limit", "20")
    # ASCII digits only: int() also takes full-width digits, and refuses thousands of them.
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3) or not (
        1 <= int(raw_limit) <= LIST_LIMIT
    ):
        raise ApiError(
            400,
            "invalid_request",
            f"'limit' must be a whole number from 1 to {LIST_LIMIT}",
            "limit",
        )
    before = request.query.get("before") or None
    if before is not None and not _CURSOR.fullmatch(before):
        raise ApiError(
            400, "invalid_request", "'before' is not a cursor this server made", "before"
        )
    return int(raw_limit), before


def no_conversation(conversation_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No conversation with id {conversation_id!r}")
