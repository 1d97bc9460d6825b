"""OpenRouter, or any OpenAI-compatible server: `POST {base}/chat/completions` with `stream: true`.

The wire format stays in this module and its two sans-IO halves: `openai_round` turns the JSON
chunks of one streamed reply into deltas, `openai_errors` says what a person reads when it fails.
`OpenAICompatProvider` is the I/O half: it opens the request on the app's one `ClientSession`,
retries 429 and 5xx before any token, reads the reply within the bounds of the settings (one SSE
line, the tool calls of a round), and turns every failure into an `UpstreamError`: a sentence for
a person in `message` (`person_message()`), the address, exception and upstream's raw answer in
`detail`, for the server log only.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections import Counter
from typing import Any

import aiohttp

from streamchat.events import ModelDelta
from streamchat.providers.base import ModelRequest, Stream, UpstreamError
from streamchat.providers.openai_errors import (
    code_for_status,
    person_message,
    shown_to_person,
)
from streamchat.providers.openai_round import RoundAssembler, assemble, request_body
from streamchat.settings import Settings
from streamchat.sse import SSEDecoder, SSETooLarge

__all__ = [
    "OpenAICompatProvider",
    "RoundAssembler",
    "code_for_status",
    "person_message",
    "shown_to_person",
]

log = logging.getLogger(__name__)

_MAX_ERROR_BODY = 64 * 1024


class OpenAICompatProvider:
    name = "openrouter"

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self.retries = 0  # read by GET /metrics
        # Answers to the requests sent, by HTTP status ("error": none came); read by /metrics.
        self.answers: Counter[str] = Counter()
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
        self._json = {**self._headers, "Content-Type": "application/json"}

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        response = await self._open(request)
        finished = False
        watch = _StallWatch(response, self._settings.upstream_read_timeout_seconds)
        try:
            assembler = RoundAssembler(
                max_tool_calls=self._settings.max_tool_calls_per_round,
                max_tool_bytes=self._settings.max_reply_bytes,
            )
            decoder = SSEDecoder(self._settings.max_line_bytes)
            done = False
            try:
                # One batch per network read; the loop is inline (not a generator of its own)
                # because it runs once per token of every stream.
                async for data in response.content.iter_any():
                    watch.reads += 1
                    batch: list[ModelDelta] = []
                    try:
                        done = assemble(decoder.feed(data), assembler, batch)
                    except UpstreamError:
                        if batch:  # text that came before the error in the same read
                            yield batch
                        raise
                    except SSETooLarge as exc:
                        raise self._too_long(exc) from None
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
                done = assemble(decoder.flush(), assembler, tail)
                if tail:
                    yield tail
            if not done and assembler.finish_reason is None:
                raise UpstreamError(
                    "upstream_error",
                    "The model provider's reply ended before it was complete. Try again.",
                    detail="the stream ended without a finish_reason or [DONE]",
                )
            last: list[ModelDelta] = [*assembler.rest(), *assembler.tool_calls()]
            last.append(assembler.finish())
            finished = True
            yield last
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

    def _too_long(self, exc: SSETooLarge) -> UpstreamError:
        return UpstreamError(
            "upstream_error",
            "The model provider sent a reply that could not be read (a line of it was too "
            "long). Try again in a moment.",
            detail=f"{self._settings.chat_completions_url} sent {exc} (MAX_LINE_BYTES)",
        )

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
                response = await self._session.post(
                    url, data=request_body(body), headers=self._json, timeout=self._timeout
                )
        except TimeoutError:
            self.answers["error"] += 1
            seconds = self._settings.upstream_read_timeout_seconds
            raise UpstreamError(
                "timeout",
                person_message("timeout"),
                detail=f"{url} sent no response headers within {seconds:g} s",
            ) from None
        except aiohttp.ClientError as exc:
            self.answers["error"] += 1
            raise UpstreamError(
                "upstream_unreachable",
                person_message("upstream_unreachable"),
                detail=f"could not reach {url}: {type(exc).__name__}: {exc}",
            ) from None
        except asyncio.CancelledError:  # stopped while waiting for the answer
            self.answers["error"] += 1
            raise
        self.answers[str(response.status)] += 1
        return response

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
