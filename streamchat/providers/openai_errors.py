"""What a person reads when an OpenAI-compatible upstream fails, and the code a program reads.

Every failure becomes an `UpstreamError`: a sentence for a person in `message`, the address,
exception and the upstream's raw answer in `detail`, for the server log only. The upstream's own
words reach a person only when `shown_to_person()` finds them safe: short, one line, without an
address, markup or exception names.
"""

from __future__ import annotations

import json
import re
from typing import Any

from streamchat.events import LONE_SURROGATE
from streamchat.providers.base import UpstreamError

# What a person reads for each error code. The upstream's raw answer goes to the log instead.
_MESSAGES = {
    "upstream_unreachable": "The model provider could not be reached. Try again in a moment.",
    "timeout": "The model provider did not answer in time. Try again in a moment.",
    "rate_limited": "The model provider is busy (rate limited). Try again in a moment.",
    "upstream_auth": "The model provider rejected the API key.",
    "insufficient_credits": "The model provider account has too few credits for this request.",
    "invalid_request": "The model provider refused the request.",
    "request_too_large": "The conversation is too long for the model. Start a new conversation.",
    "reply_too_large": "The answer grew longer than this server allows, so it was cut short. "
    "The text so far was kept.",
    "upstream_error": "The model provider had a problem. Try again in a moment.",
}
UNREADABLE = "The model provider sent a reply that could not be read. Try again in a moment."

# The upstream's own words are shown only when they cannot leak an address or an internal:
# one short line, without a URL, a host:port, an IP address, markup or exception names.
_UNSAFE = re.compile(
    r"://|www\.|\b\d{1,3}(?:\.\d{1,3}){3}\b|\[[0-9a-f:]*:[0-9a-f:]*\]|\b[\w.-]+:\d{2,5}\b"
    r"|[<>{}\\]|errno|traceback|exception",
    re.IGNORECASE,
)
_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*Error\b")
_MAX_SHOWN = 300


def shown_to_person(said: str) -> str:
    """The upstream's message when it is safe and short enough to show a person, else ''."""
    text = " ".join(said.split())
    if not text or len(text) > _MAX_SHOWN or "\n" in said.strip():
        return ""
    if _UNSAFE.search(text) or _EXCEPTION_NAME.search(text) or LONE_SURROGATE.search(text):
        return ""
    return text


def person_message(
    code: str, *, said: str = "", status: int | None = None, model: str | None = None
) -> str:
    """The `error` event's message for a person.

    The upstream's own words (`said`) are added, when `shown_to_person()` lets them through, for
    the refusals a person can act on: a bad request (400), too few credits (402), a refused one
    (403, e.g. flagged by moderation) and an error object inside the stream (`status` None).
    Never for 401 (the key is the operator's business), 429 or 5xx (proxy pages, retry noise).
    """
    if code == "invalid_model":
        name = (model or "").strip()[:100]
        base = f"The model '{name}' is not available." if name else "The model is not available."
    elif status == 403:
        base = "The model provider refused this request."
    else:
        base = _MESSAGES.get(code, _MESSAGES["upstream_error"])
    explained = status in (None, 400, 402, 403) and code != "invalid_model"
    words = shown_to_person(said) if explained else ""
    return f"{base} The provider said: {words}" if words else base


def code_for_status(status: int, message: str = "") -> str:
    """The `error` event code for an upstream HTTP status."""
    lowered = message.lower()
    if status in (400, 404) and "model" in lowered:
        return "invalid_model"
    return {
        400: "invalid_request",
        401: "upstream_auth",
        403: "upstream_auth",
        402: "insufficient_credits",
        408: "timeout",
        413: "request_too_large",
        429: "rate_limited",
    }.get(status, "upstream_error")


def stream_error(error: dict[str, Any], model: str | None) -> UpstreamError:
    """An error object inside the stream (HTTP 200): it carries the provider's explanation."""
    raw_said = error.get("message")
    said = raw_said if isinstance(raw_said, str) else ""
    raw_status = error.get("code")
    status = raw_status if type(raw_status) is int else None
    code = code_for_status(status, said) if status is not None else "upstream_error"
    message = person_message(code, said=said, model=model)
    # ensure_ascii: a lone surrogate in the object must not break the log line.
    detail = f"error object in the stream: {json.dumps(error)[:1000]}"
    return UpstreamError(code, message, status, detail=detail)


def malformed(what: str, value: object) -> UpstreamError:
    """A reply whose shape is wrong: the person reads `UNREADABLE`, the log what was wrong."""
    return UpstreamError("upstream_error", UNREADABLE, detail=f"{what}: {_preview(value)}")


def _preview(value: object) -> str:
    try:
        text = json.dumps(value)  # ascii: no lone surrogate reaches the log
    except (TypeError, ValueError, RecursionError):
        text = "(not shown)"
    return text[:300]
