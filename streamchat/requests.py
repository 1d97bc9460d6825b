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

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamchat.errors import ApiError, error_response
from streamchat.protocols.native import parse_event_id
from streamchat.settings import Settings
from streamchat.stores import ANONYMOUS

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


class ChatRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    message: str
    model: str | None = Field(None, max_length=256)
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
            try:
                async with asyncio.timeout(seconds):
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


async def parse_chat_request(request: web.Request, settings: Settings) -> ChatRequest:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, "body_too_large", f"The request body is over {settings.max_body_bytes} bytes"
        ) from None
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object")
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    for field, value in (("message", chat.message), ("model", chat.model)):
        if value is not None and not _is_unicode(value):
            raise ApiError(
                400, "invalid_request", f"'{field}' is not valid Unicode (a lone surrogate)", field
            )
    if not chat.message.strip():
        raise ApiError(400, "invalid_request", "'message' must not be empty", "message")
    if len(chat.message) > settings.max_message_chars:
        raise ApiError(
            400,
            "message_too_long",
            f"'message' is {len(chat.message)} characters; the limit is "
            f"{settings.max_message_chars}",
            "message",
        )
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


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    """Who is calling: every caller is one anonymous owner until callers authenticate."""
    return ANONYMOUS


def conversation_id_of(request: web.Request) -> str:
    conversation_id = request.match_info["conversation_id"]
    if not _CONVERSATION_ID.match(conversation_id):
        raise ApiError(
            400,
            "invalid_request",
            "the conversation id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            "conversationId",
        )
    return conversation_id


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
