"""OpenRouter, or any OpenAI-compatible server: `POST {base}/chat/completions` with `stream: true`.

The wire format stays in this module. `RoundAssembler` is its sans-IO half: it takes the decoded
JSON chunks of one streamed reply and gives back text deltas, the round's tool calls (fragments
joined by `index`) and its `Finish`. `OpenAICompatProvider` is the I/O half: it opens the request
on the app's one `ClientSession`, retries 429 and 5xx before any token, and turns every failure
into an `UpstreamError`: a sentence for a person in `message` (`person_message()`), the address,
exception and upstream's raw answer in `detail`, for the server log only.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from streamchat.events import Finish, ModelDelta, TextChunk, ToolCall, Usage
from streamchat.providers.base import ModelRequest, Stream, UpstreamError
from streamchat.settings import Settings
from streamchat.sse import SSEComment, SSEDecoder, SSEEvent

log = logging.getLogger(__name__)

_MAX_ERROR_BODY = 64 * 1024

# What a person reads for each error code. The upstream's raw answer goes to the log instead.
_MESSAGES = {
    "upstream_unreachable": "The model provider could not be reached. Try again in a moment.",
    "timeout": "The model provider did not answer in time. Try again in a moment.",
    "rate_limited": "The model provider is busy (rate limited). Try again in a moment.",
    "upstream_auth": "The model provider rejected the API key.",
    "insufficient_credits": "The model provider account has too few credits for this request.",
    "invalid_request": "The model provider refused the request.",
    "request_too_large": "The conversation is too long for the model. Start a new conversation.",
    "upstream_error": "The model provider had a problem. Try again in a moment.",
}
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
    if _UNSAFE.search(text) or _EXCEPTION_NAME.search(text):
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


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class RoundAssembler:
    """The JSON chunks of one streamed reply in; deltas, tool calls and a `Finish` out."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.usage: Usage | None = None

    def feed(self, chunk: dict[str, Any]) -> TextChunk | None:
        """One decoded `data:` object; the text it adds, if any. Raises for an error object."""
        if isinstance(chunk.get("error"), dict):
            raise _stream_error(chunk["error"], chunk.get("model") or self.model)
        self.model = chunk.get("model") or self.model
        self.id = chunk.get("id") or self.id
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            if self.finish_reason == "error":
                raise UpstreamError(
                    "upstream_error",
                    "The model stopped with an error. Try again in a moment.",
                    detail="finish_reason 'error' without an error object",
                )
        delta = choice.get("delta") or {}
        for fragment in delta.get("tool_calls") or []:
            self._add_fragment(fragment)
        content = delta.get("content")
        return TextChunk(content) if isinstance(content, str) and content else None

    def _add_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            # A few servers leave `index` out: a new id starts a new call, else it continues.
            last = max(self._calls, default=-1)
            new_id = fragment.get("id")
            index = last + 1 if last < 0 or (new_id and new_id != self._calls[last].id) else last
        call = self._calls.setdefault(index, _PartialCall())
        call.id = fragment.get("id") or call.id
        function = fragment.get("function") or {}
        name = function.get("name")
        if name and name != call.name:
            call.name += name
        if function.get("arguments"):
            call.arguments.append(function["arguments"])

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(c.id or f"call_{uuid.uuid4().hex[:24]}", c.name, "".join(c.arguments))
            for _, c in sorted(self._calls.items())
        ]

    def finish(self) -> Finish:
        return Finish(self.finish_reason, self.model, self.id, self.usage)


def _usage(raw: dict[str, Any]) -> Usage:
    def number(key: str) -> int:
        value = raw.get(key)
        return int(value) if isinstance(value, int | float) else 0

    cost = raw.get("cost")
    return Usage(
        number("prompt_tokens"),
        number("completion_tokens"),
        number("total_tokens"),
        float(cost) if isinstance(cost, int | float) else None,
    )


def _stream_error(error: dict[str, Any], model: str | None) -> UpstreamError:
    said = str(error.get("message") or "")
    raw_status = error.get("code")
    status = raw_status if isinstance(raw_status, int) else None
    code = code_for_status(status, said) if status is not None else "upstream_error"
    # An error object in the stream carries the provider's explanation: shown when it is safe.
    message = person_message(code, said=said, model=model)
    detail = f"error object in the stream: {json.dumps(error, ensure_ascii=False)[:1000]}"
    return UpstreamError(code, message, status, detail=detail)


class OpenAICompatProvider:
    name = "openrouter"

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self.retries = 0  # read by GET /metrics
        # No sock_read: aiohttp re-arms a timer on every read for it (~10% of the CPU under
        # 200 paced streams). _StallWatch does the same job with a timer per quarter timeout.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.upstream_connect_timeout_seconds
        )
        self._headers = {
            "Authorization": f"Bearer {settings.openrouter_api_key}",
            "Accept": "text/event-stream",
            # OpenRouter asks apps to name themselves; other servers ignore these.
            "HTTP-Referer": settings.app_url,
            "X-Title": settings.app_title,
        }

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        response = await self._open(request)
        finished = False
        watch = _StallWatch(response, self._settings.upstream_read_timeout_seconds)
        try:
            assembler = RoundAssembler()
            decoder = SSEDecoder()
            done = False
            try:
                # One batch per network read; the loop is inline (not a generator of its own)
                # because it runs once per token of every stream.
                async for data in response.content.iter_any():
                    watch.reads += 1
                    batch: list[ModelDelta] = []
                    try:
                        done = _assemble(decoder.feed(data), assembler, batch)
                    except UpstreamError:
                        if batch:  # text that came before the error in the same read
                            yield batch
                        raise
                    if batch:
                        yield batch
                    if done:
                        break
            except aiohttp.ClientError as exc:
                if watch.fired:
                    raise self._stalled() from None
                raise UpstreamError(
                    "upstream_error",
                    "The connection to the model provider dropped before the reply was "
                    "complete. Try again in a moment.",
                    detail=f"{self._settings.chat_completions_url} dropped mid-stream: "
                    f"{type(exc).__name__}: {exc}",
                ) from None
            if not done:
                tail: list[ModelDelta] = []
                done = _assemble(decoder.flush(), assembler, tail)
                if tail:
                    yield tail
            if not done and assembler.finish_reason is None:
                raise UpstreamError(
                    "upstream_error",
                    "The model provider's reply ended before it was complete. Try again.",
                    detail="the stream ended without a finish_reason or [DONE]",
                )
            finished = True
            yield [*assembler.tool_calls(), assembler.finish()]
        finally:
            watch.cancel()
            # close() drops the connection at once: that is what stops an abandoned generation
            # (and its billing). A finished response goes back to the pool instead.
            if finished:
                response.release()
            else:
                response.close()

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
        return body

    async def _open(self, request: ModelRequest) -> aiohttp.ClientResponse:
        """POST the request; retry 429 and 5xx (honouring Retry-After) before any token."""
        body = self._body(request)
        attempt = 0
        while True:
            response = await self._post(body)
            if response.status == 200:
                return response
            try:
                async with asyncio.timeout(self._settings.upstream_read_timeout_seconds):
                    said, raw = await _error_body(response)
            except TimeoutError:
                said, raw = "", "(the error body did not arrive in time)"
            response.release()
            status = response.status
            delay = self._retry_delay(response, attempt)
            if delay is None:
                code = code_for_status(status, said or raw)
                message = person_message(code, said=said, status=status, model=request.model)
                detail = f"{self._settings.chat_completions_url} answered {status}: {raw}"
                raise UpstreamError(code, message, status, detail=detail)
            log.warning("upstream answered %s; retrying in %.2f s", status, delay)
            self.retries += 1
            await asyncio.sleep(delay)
            attempt += 1

    def _stalled(self) -> UpstreamError:
        seconds = self._settings.upstream_read_timeout_seconds
        return UpstreamError(
            "timeout",
            f"The model provider stopped sending for {seconds:g} s, so the reply was cut "
            "short. Try again in a moment.",
            detail=f"{self._settings.chat_completions_url} sent nothing for {seconds:g} s",
        )

    async def _post(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = self._settings.chat_completions_url
        try:
            # Waiting for the headers is a silence like any other.
            async with asyncio.timeout(self._settings.upstream_read_timeout_seconds):
                return await self._session.post(
                    url, json=body, headers=self._headers, timeout=self._timeout
                )
        except TimeoutError:
            seconds = self._settings.upstream_read_timeout_seconds
            raise UpstreamError(
                "timeout",
                person_message("timeout"),
                detail=f"{url} sent no response headers within {seconds:g} s",
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                "upstream_unreachable",
                person_message("upstream_unreachable"),
                detail=f"could not reach {url}: {type(exc).__name__}: {exc}",
            ) from None

    def _retry_delay(self, response: aiohttp.ClientResponse, attempt: int) -> float | None:
        if response.status != 429 and response.status < 500:
            return None
        if attempt >= self._settings.upstream_max_retries:
            return None
        delay = _retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = 0.5 * 2**attempt
        # A wait longer than the cap is worse for the user than the error itself.
        return delay if delay <= self._settings.upstream_max_retry_wait_seconds else None


class _StallWatch:
    """Closes an upstream response that sends nothing for `seconds`.

    A read costs one integer increment; a timer looks every quarter of `seconds` whether reads
    went on, and after four quarters without one closes the response, which ends the pending
    read with a `ClientError` (`fired` tells that one apart from a real drop). So a stall is
    caught after between 1 and 1.25 times `seconds` of silence.
    """

    QUARTERS = 4

    def __init__(self, response: aiohttp.ClientResponse, seconds: float) -> None:
        self.reads = 0
        self.fired = False
        self._response = response
        self._seen = 0
        self._silent = 0
        self._interval = seconds / self.QUARTERS
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        if self.reads != self._seen:
            self._seen, self._silent = self.reads, 0
        else:
            self._silent += 1
        if self._silent >= self.QUARTERS:
            self.fired = True
            self._response.close()
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


def _assemble(
    events: list[SSEEvent | SSEComment], assembler: RoundAssembler, batch: list[ModelDelta]
) -> bool:
    """Feed one read's events to the assembler, collecting text; True at `[DONE]`."""
    for event in events:
        if isinstance(event, SSEComment):
            continue  # `: OPENROUTER PROCESSING` and other keep-alives
        if event.data.strip() == "[DONE]":
            return True
        text = assembler.feed(_json_object(event.data))
        if text is not None:
            batch.append(text)
    return False


def _json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except json.JSONDecodeError:
        raise UpstreamError(
            "upstream_error", _UNREADABLE, detail=f"a chunk is not JSON: {data[:300]!r}"
        ) from None
    if not isinstance(value, dict):
        raise UpstreamError(
            "upstream_error", _UNREADABLE, detail=f"a chunk is not an object: {data[:300]!r}"
        )
    return value


_UNREADABLE = "The model provider sent a reply that could not be read. Try again in a moment."


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _error_body(response: aiohttp.ClientResponse) -> tuple[str, str]:
    """The upstream's own words (`error.message` of a JSON body, else ''), and the body's start."""
    try:
        data = await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        data = b""
    text = data.decode("utf-8", errors="replace").strip()
    raw = f"{response.reason or ''} {text[:500]}".strip()
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return "", raw
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]), raw
        if isinstance(error, str) and error:
            return error, raw
        if body.get("message"):
            return str(body["message"]), raw
    return "", raw
