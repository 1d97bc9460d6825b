"""An async Python client of streamchat's own API, on aiohttp.

`StreamChatClient.stream()` sends one turn and yields its events as they come, each a
`Received`: the event (the frozen dataclasses of `streamchat.events`) with its turn, its
`chunkIndex` and its `elapsedMs`. When the connection drops mid-turn (a proxy restart, a network
switch, a read that stays silent past `read_timeout`), the stream reconnects on its own with
`Last-Event-ID` a bounded number of times, with a short back-off, so the caller sees one
unbroken sequence: no gap, no duplicate. The rest of the API (join, resume, stop, the list, the
history, delete) is one method each. A request the server refuses, or cannot be reached for, is
a `StreamChatError` with the HTTP `status`, the server's `code` and `message`; a turn that fails
once its stream has started ends with an `ErrorEvent`, as for every other client.

    async with StreamChatClient("http://127.0.0.1:5282") as chat:
        async for received in chat.stream("What is 25 + 17?"):
            if isinstance(received.event, TextChunk):
                print(received.event.text, end="", flush=True)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from streamchat.events import Completion, ErrorEvent, Event, event_type, from_wire
from streamchat.sse import SSEDecoder, SSEEvent

DEFAULT_URL = "http://127.0.0.1:5282"
# Statuses a reconnect waits out: the server or a proxy in front of it is restarting.
_RETRYABLE = frozenset({0, 502, 503, 504})
_MAX_BACKOFF = 2.0


class StreamChatError(Exception):
    """A request streamchat refused (`status` 4xx/5xx, its `code` and `message`), or a server
    that could not be reached (`status` 0, `code` `unreachable`)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status else ""
        return f"{self.message} ({where}{self.code})"


class ConnectionLost(StreamChatError):
    """A turn's stream broke and could not be picked up again: the reconnects failed, or the
    server no longer holds the rest of the turn (read the history instead)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One event of a turn, with where it stands: `turn`, `index` (`chunkIndex`), `elapsed_ms`."""

    event: Event
    turn: int
    index: int
    elapsed_ms: float

    @property
    def id(self) -> str:
        """The SSE `id:`, `<turn>:<chunkIndex>`: what `resume()` takes."""
        return f"{self.turn}:{self.index}"

    @property
    def type(self) -> str:
        """The wire name of the event: `text`, `tool_completed`, `completion`, ..."""
        return event_type(self.event)


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    conversation_id: str
    title: str
    created_at: str  # RFC 3339, UTC: 2026-11-28T05:21:38.123Z
    updated_at: str
    turns: int
    running_turn: int | None

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> ConversationInfo:
        return cls(*_info_fields(wire))


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    artifact_id: str
    artifact_type: str
    title: str
    language: str | None
    content: str
    turn: int | None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Conversation:
    """`GET /api/conversation/{id}`: the metadata, the OpenAI-shaped messages, the artifacts."""

    conversation_id: str
    title: str
    created_at: str
    updated_at: str
    turns: int
    running_turn: int | None
    messages: list[dict[str, Any]]
    artifacts: list[StoredArtifact]

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Conversation:
        artifacts = [
            StoredArtifact(
                a["artifactId"],
                a.get("artifactType", "code"),
                a.get("title", ""),
                a.get("language"),
                a.get("content", ""),
                a.get("turn"),
                a.get("truncated", False),
            )
            for a in wire.get("artifacts", [])
        ]
        return cls(*_info_fields(wire), list(wire.get("messages", [])), artifacts)


@dataclass(frozen=True, slots=True)
class ConversationPage:
    conversations: list[ConversationInfo]
    next: str | None  # pass back as `before=` for the following page; None on the last


def _info_fields(wire: dict[str, Any]) -> tuple[str, str, str, str, int, int | None]:
    return (
        wire["conversationId"],
        wire.get("title", ""),
        wire.get("createdAt", ""),
        wire.get("updatedAt", ""),
        wire.get("turns", 0),
        wire.get("runningTurn"),
    )


class StreamChatClient:
    """streamchat's API. Use as `async with StreamChatClient(url) as chat:`, or call `aclose()`.

    `api_key` is sent as `Authorization: Bearer <key>`; `headers` go with every request; a
    `session` you pass is used and left open. `read_timeout` is how long a stream may stay
    silent (the server pings every 15 s) before it counts as dropped; a dropped stream is picked
    up again at most `retries` times in a row, after `backoff`, doubling, at most 2 s.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        read_timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.25,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.retries = retries
        self.backoff = backoff
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)

    async def __aenter__(self) -> Self:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- turns ------------------------------------------------------------------------------

    def stream(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        model: str | None = None,
        regenerate: bool = False,
    ) -> TurnStream:
        """Send one turn (`POST /api/stream`); iterate the result for its events.

        The request goes out when iteration starts. Without `conversation_id` a new conversation
        is started, its id made here so that it is known (`TurnStream.conversation_id`) before
        the first event.
        """
        conversation_id = conversation_id or uuid.uuid4().hex
        body: dict[str, Any] = {"message": message, "conversationId": conversation_id}
        if model:
            body["model"] = model
        if regenerate:
            body["regenerate"] = True
        return TurnStream(self, conversation_id, body, None)

    def join(self, conversation_id: str) -> TurnStream:
        """The conversation's running turn from its first event; no events when none runs."""
        return TurnStream(self, conversation_id, None, None)

    def resume(self, conversation_id: str, last_event_id: str) -> TurnStream:
        """The events of a turn after `last_event_id` (`Received.id`), then live to its end; no
        events when the server holds none after it (the turn is over: read the history)."""
        return TurnStream(self, conversation_id, None, last_event_id)

    async def stop(self, conversation_id: str) -> int | None:
        """Stop the conversation's running turn: its number, or None when none was running."""
        answer = await self._json("POST", f"/api/conversation/{_quoted(conversation_id)}/stop")
        return int(answer["turn"]) if answer.get("stopped") else None

    # --- conversations ------------------------------------------------------------------------

    async def conversations(self, limit: int = 20, before: str | None = None) -> ConversationPage:
        """The caller's conversations, most recently used first."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = before
        answer = await self._json("GET", "/api/conversations", params=params)
        return ConversationPage(
            [ConversationInfo.from_wire(c) for c in answer["conversations"]], answer.get("next")
        )

    async def conversation(self, conversation_id: str) -> Conversation:
        """The stored history; `StreamChatError` with status 404 when there is none."""
        answer = await self._json("GET", f"/api/conversation/{_quoted(conversation_id)}")
        return Conversation.from_wire(answer)

    async def delete(self, conversation_id: str) -> None:
        """Forget a conversation (its running turn is stopped first); fine when it is unknown."""
        await self._json("DELETE", f"/api/conversation/{_quoted(conversation_id)}")

    # --- the wire -----------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """The response, once its status says it is not an error; else a `StreamChatError`."""
        try:
            response = await self._get_session().request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers={**self.headers, **(headers or {})},
                timeout=self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StreamChatError(
                0, "unreachable", f"streamchat at {self.url} could not be reached: {exc}"
            ) from exc
        if response.status >= 400:
            async with response:
                raise await _error_of(response)
        return response

    async def _json(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = await self._request(method, path, params=params)
        async with response:
            try:
                answer: dict[str, Any] = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise StreamChatError(
                    response.status, "bad_response", f"streamchat's answer was cut off: {exc}"
                ) from exc
        return answer

    async def _open_turn(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        return await self._request("POST", "/api/stream", body=body)

    async def _open_stream(
        self, conversation_id: str, last_event_id: str | None
    ) -> aiohttp.ClientResponse | None:
        """A join or a resume; None when the server has nothing to send (`204`)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else None
        response = await self._request(
            "GET", f"/api/conversation/{_quoted(conversation_id)}/stream", headers=headers
        )
        if response.status == 204:
            response.release()
            return None
        return response


class TurnStream:
    """One turn's events, `Received` by `Received`: `async for received in turn_stream`.

    It ends after the turn's terminal event (`Completion` or `ErrorEvent`). While it runs,
    `conversation_id`, `turn` (once the first event came), `last_event_id` and `resumes` (how
    many times a dropped connection was picked up again) say where it stands. Leaving the loop
    early closes the connection (`aclose()`, or `async with`); the turn itself goes on on the
    server until it ends or is stopped (`StreamChatClient.stop`).
    """

    def __init__(
        self,
        client: StreamChatClient,
        conversation_id: str,
        body: dict[str, Any] | None,
        last_event_id: str | None,
    ) -> None:
        self.conversation_id = conversation_id
        self.turn: int | None = None
        self.last_event_id = last_event_id
        self.resumes = 0
        self._client = client
        self._last: tuple[int, int] | None = _parse_id(last_event_id) if last_event_id else None
        self._events = self._run(body)

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> Received:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, body: dict[str, Any] | None) -> AsyncGenerator[Received, None]:
        client = self._client
        response: aiohttp.ClientResponse | None
        if body is not None:
            response = await client._open_turn(body)
        else:
            response = await client._open_stream(self.conversation_id, self.last_event_id)
            if response is None:
                return  # nothing running, or nothing held after that id: see the history
        failures = 0
        while True:
            cause: BaseException | None = None
            if response is not None:
                progressed = False
                try:
                    async with response:
                        async for received in self._read(response):
                            progressed = True
                            yield received
                            if isinstance(received.event, Completion | ErrorEvent):
                                return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    cause = exc
                if progressed:
                    failures = 0
            # The connection broke (or ended) before the terminal event: pick the turn up again.
            failures += 1
            if failures > client.retries:
                raise ConnectionLost(
                    0,
                    "connection_lost",
                    f"The connection to {client.url} broke during the answer and could not be "
                    f"restored after {client.retries} tries.",
                ) from cause
            await asyncio.sleep(min(client.backoff * 2 ** (failures - 1), _MAX_BACKOFF))
            try:
                # Before the first event the turn's number is unknown: join it from its start.
                response = await client._open_stream(self.conversation_id, self.last_event_id)
            except StreamChatError as exc:
                if exc.status not in _RETRYABLE:
                    raise
                response = None
                continue
            if response is None:
                raise _not_retained(self.conversation_id)
            self.resumes += 1

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncGenerator[Received, None]:
        decoder = SSEDecoder()
        # At the end of the body nothing is flushed: an event the connection cut off before its
        # blank line is incomplete, and the SSE rules discard it (the resume sends it again).
        async for chunk in response.content.iter_any():
            for item in decoder.feed(chunk):
                if isinstance(item, SSEEvent):
                    received = self._received(item)
                    if received is not None:
                        yield received

    def _received(self, item: SSEEvent) -> Received | None:
        position = _parse_id(item.id) if item.id else None
        if position is None:
            return None
        if self._last is not None and position <= self._last:
            return None  # already seen: a resume never repeats, but a join might
        self._last, self.turn, self.last_event_id = position, position[0], item.id
        try:
            wire = json.loads(item.data)
            event = from_wire(wire)
        except (ValueError, KeyError, TypeError):
            return None  # an event type newer than this client: skipped, its place kept
        return Received(event, position[0], position[1], float(wire.get("elapsedMs", 0.0)))


def _parse_id(value: str) -> tuple[int, int] | None:
    turn, sep, index = value.strip().partition(":")
    if not (sep and turn.isdigit() and index.isdigit()):
        return None
    return int(turn), int(index)


def _quoted(conversation_id: str) -> str:
    return quote(conversation_id, safe="")


def _not_retained(conversation_id: str) -> ConnectionLost:
    return ConnectionLost(
        204,
        "not_retained",
        f"The rest of this turn is no longer held by the server; read the history of "
        f"conversation {conversation_id!r} instead.",
    )


async def _error_of(response: aiohttp.ClientResponse) -> StreamChatError:
    """The server's `{"error": {"message", "code", "param"}}`, or what the status says."""
    try:
        body = await response.json(content_type=None)
        error = body["error"]
        return StreamChatError(
            response.status, str(error["code"]), str(error["message"]), error.get("param")
        )
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        reason = response.reason or "error"
        return StreamChatError(response.status, "http_error", f"HTTP {response.status} {reason}")
