"""Routes, handlers and `create_app()`: the HTTP face of streamchat.

Bad requests are answered before any stream starts, with a JSON error naming the field. A turn
runs in a task of the turn runner (`turns.py`); every response that shows it, the `POST` that
started it, a join, a resume, is a reader of the turn's event log. The app owns one
`aiohttp.ClientSession` (made in `cleanup_ctx`) that every upstream call reuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamchat.backends import (
    Backend,
    choose_backend,
    fences_enabled,
    make_provider,
    system_prompt,
)
from streamchat.conversations import Turn
from streamchat.errors import ApiError, json_errors
from streamchat.eventbus import Followable
from streamchat.events import ErrorEvent, Event
from streamchat.page import add_page_routes
from streamchat.pipeline import compose_turn
from streamchat.protocols import native
from streamchat.providers.base import Provider, Stream
from streamchat.settings import Settings
from streamchat.sse_writer import Pinger, SSEWriter
from streamchat.stores import ANONYMOUS, Store, StoreUnavailable, make_store
from streamchat.stores.base import parse_cursor
from streamchat.tools.calculator import register_calculator
from streamchat.tools.registry import ToolRegistry
from streamchat.turns import RunningTurn, TurnRequest, TurnRunner

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
RUNNER = web.AppKey("runner", TurnRunner)
TOOLS = web.AppKey("tools", ToolRegistry)
PROVIDER = web.AppKey("provider", Provider)
SESSION = web.AppKey("session", aiohttp.ClientSession)
BACKEND = web.AppKey("backend", Backend)
PINGER = web.AppKey("pinger", Pinger)

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


async def parse_chat_request(request: web.Request, settings: Settings) -> ChatRequest:
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
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
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


def _validation_error(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "body"
    if error["type"] == "missing":
        return ApiError(400, "invalid_request", f"'{field}' is required", field)
    if error["type"] == "string_pattern_mismatch":
        message = f"'{field}' must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        return ApiError(400, "invalid_request", message, field)
    return ApiError(400, "invalid_request", f"'{field}': {error['msg']}", field)


SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
LIST_LIMIT = 100
# How long a stop waits for a turn on another process to end before it answers anyway.
STOP_WAIT_SECONDS = 3.0


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


async def stream_chat(request: web.Request) -> web.StreamResponse:
    app = request.app
    chat = await parse_chat_request(request, app[SETTINGS])
    runner = app[RUNNER]
    if runner.draining:
        raise ApiError(
            503,
            "shutting_down",
            "The server is restarting. Try again in a moment.",
            headers={"Retry-After": "5"},
        )
    await app[STORE].ping()
    conversation_id = chat.conversation_id or uuid.uuid4().hex
    model = (chat.model or "").strip() or app[BACKEND].model
    turn = runner.start(
        TurnRequest(owner_of(request), conversation_id, chat.message, model, chat.regenerate)
    )
    return await read_turn(request, turn.log, -1, turn)


async def join_stream(request: web.Request) -> web.StreamResponse:
    """Join the running turn from its first event, or resume any turn after `Last-Event-ID`."""
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    runner = app[RUNNER]
    after = _last_event_id(request)
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise _no_conversation(conversation_id)
    if after is None:
        running = runner.running(owner, conversation_id)
        if running is not None:
            return await read_turn(request, running.log, -1, running)
        number, index = conversation.running_turn or 0, -1
        if not number:
            return web.Response(status=204)
    else:
        number, index = after
    log = runner.find_log(owner, conversation_id, number)
    if log is not None:
        if log.finished and index >= len(log.events) - 1:
            return web.Response(status=204)
        running = runner.running(owner, conversation_id)
        local = running if running is not None and running.log is log else None
        return await read_turn(request, log, index, local)
    bus = runner.bus
    remote = await bus.remote(owner, conversation_id, number) if bus is not None else None
    if remote is not None:
        last, finished = await remote.tail()
        if not (finished and index >= last):
            return await read_turn(request, remote, index, None)
    elif conversation.interrupted_turn == number and after is not None:
        return await _tell_interrupted(request, conversation_id, number, index + 1)
    return web.Response(status=204)


async def read_turn(
    request: web.Request, turn_log: Followable, after: int, turn: RunningTurn | None
) -> web.StreamResponse:
    """Write the turn's events after index `after`, live until its terminal event."""
    app = request.app
    runner = app[RUNNER]
    if turn is not None:
        runner.attach(turn)
    try:
        response = web.StreamResponse(
            headers={**SSE_HEADERS, "X-Conversation-Id": turn_log.conversation_id}
        )
        try:
            await response.prepare(request)
        except ConnectionResetError:
            return response
        async with SSEWriter(response, app[PINGER]) as writer:
            try:
                async for first, events, elapsed in turn_log.follow(after):
                    await writer.write(native.encode(turn_log.turn, first, events, elapsed))
            except ConnectionResetError:
                log.info("a reader of conversation %s left mid-stream", turn_log.conversation_id)
        return response
    finally:
        if turn is not None:
            runner.detach(turn)


async def _tell_interrupted(
    request: web.Request, conversation_id: str, number: int, index: int
) -> web.StreamResponse:
    """The turn died with its process: its readers learn so instead of waiting forever."""
    response = web.StreamResponse(headers={**SSE_HEADERS, "X-Conversation-Id": conversation_id})
    await response.prepare(request)
    error = ErrorEvent("The server stopped during this answer.", "interrupted")
    await response.write(native.frame(number, index, error, 0.0))
    return response


def _last_event_id(request: web.Request) -> tuple[int, int] | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if raw is None or not raw.strip():
        return None
    parsed = native.parse_event_id(raw)
    if parsed is None:
        raise ApiError(
            400,
            "invalid_request",
            "Last-Event-ID must be an event id this server sent, like 2:15 (turn:chunkIndex)",
            "lastEventId",
        )
    return parsed


def _no_conversation(conversation_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No conversation with id {conversation_id!r}")


async def stop_turn(request: web.Request) -> web.Response:
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise _no_conversation(conversation_id)
    number = await app[RUNNER].stop(owner, conversation_id)
    if number is None and conversation.running_turn is not None:
        number = await _stop_elsewhere(app, owner, conversation_id, conversation.running_turn)
    if number is None:
        return web.json_response({"stopped": False})
    return web.json_response({"stopped": True, "turn": number})


async def _stop_elsewhere(
    app: web.Application, owner: str, conversation_id: str, number: int
) -> int | None:
    """Ask the process running the turn to stop it; wait (a little) for its terminal event."""
    bus = app[RUNNER].bus
    if bus is None:
        return None
    remote = await bus.remote(owner, conversation_id, number)
    if remote is None:
        return None
    await bus.request_stop(owner, conversation_id)
    last, finished = await remote.tail()
    if not finished:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_SECONDS):
                async for _ in remote.follow(last):
                    pass
    return number


async def delete_conversation(request: web.Request) -> web.Response:
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    await app[RUNNER].stop_all(owner, conversation_id, "deleted")
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is not None and conversation.running_turn is not None:
        await _stop_elsewhere(app, owner, conversation_id, conversation.running_turn)
    await app[STORE].delete(owner, conversation_id)
    return web.json_response({"message": "Conversation cleared"})


async def get_conversation(request: web.Request) -> web.Response:
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    conversation = await request.app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise _no_conversation(conversation_id)
    return web.json_response(conversation.to_wire())


async def list_conversations(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_LIMIT:
        raise ApiError(
            400,
            "invalid_request",
            f"'limit' must be a whole number from 1 to {LIST_LIMIT}",
            "limit",
        )
    before = request.query.get("before") or None
    if before is not None and parse_cursor(before) is None:
        raise ApiError(
            400, "invalid_request", "'before' is not a cursor this server made", "before"
        )
    infos, cursor = await request.app[STORE].recent(owner_of(request), int(raw_limit), before)
    return web.json_response({"conversations": [info.to_wire() for info in infos], "next": cursor})


# The page's model picker offers these after the default when the backend is OpenRouter.
PICKER_MODELS = (
    "google/gemini-2.5-flash",
    "openai/gpt-4o-mini",
    "anthropic/claude-3.5-haiku",
    "meta-llama/llama-3.3-70b-instruct",
)


def picker_models(backend: Backend) -> list[str]:
    """The models the page offers: the default first."""
    models = [backend.model]
    if backend.kind == "openrouter":
        models += [model for model in PICKER_MODELS if model != backend.model]
    return models


async def health(request: web.Request) -> web.Response:
    app = request.app
    backend = app[BACKEND]
    body: dict[str, object] = {
        "status": "ok",
        "backend": backend.kind,
        "model": backend.model,
        "models": picker_models(backend),
        "store": app[STORE].description.split(" ")[0],
        "turns": len(app[RUNNER]),
    }
    problem = ""
    if app[RUNNER].draining:
        body["status"], problem = "shutting_down", "the server is shutting down"
    elif backend.kind == "none":
        body["status"], problem = "unavailable", f"no model backend can answer: {backend.why_none}"
    else:
        try:
            await app[STORE].ping()
        except StoreUnavailable:
            body["status"], problem = "unavailable", "the conversation store cannot be reached"
    if problem:
        body["reason"] = problem
    return web.json_response(body, status=503 if problem else 200)


async def _freeze_heap(app: web.Application) -> None:
    """Leave what start-up built out of every later garbage collection.

    Measured under 200 streams: a full collection walked every module and object made at
    start-up and stopped the event loop for up to 82 ms, which is what every stream's p99 was.
    """
    gc.collect()
    gc.freeze()


async def drain(app: web.Application) -> None:
    """Refuse new turns, let running ones finish within the grace, then stop them."""
    await app[RUNNER].drain(app[SETTINGS].shutdown_grace_seconds)


def create_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    provider: Provider | None = None,
    tools: ToolRegistry | None = None,
    store: Store | None = None,
) -> web.Application:
    """The application; `provider`, `tools` and `store` replace the defaults (tests, embedding)."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors])
    if backend is None:
        backend = (
            choose_backend(settings)
            if provider is None
            else Backend(provider.name, settings.default_model)
        )
    app[SETTINGS] = settings
    app[BACKEND] = backend
    app[STORE] = store = (
        make_store(
            settings.store_url,
            ttl_seconds=settings.conversation_ttl_seconds,
            max_conversations=settings.max_conversations,
            lease_seconds=settings.lease_seconds,
            retention_seconds=settings.resume_retention_seconds,
        )
        if store is None
        else store
    )
    fences = fences_enabled(settings, backend)

    def compose(turn: Turn, model: str) -> Stream[list[Event]]:
        return compose_turn(
            app[PROVIDER],
            app[TOOLS],
            turn,
            model,
            max_rounds=settings.max_tool_rounds,
            fences=fences,
        )

    app[RUNNER] = TurnRunner(
        store,
        compose,
        system_prompt(settings, backend),
        grace_seconds=settings.resume_grace_seconds,
        retention_seconds=settings.resume_retention_seconds,
        retention_bytes=settings.resume_retention_bytes,
        bus=store.event_bus(),
    )
    if tools is None:
        tools = ToolRegistry(settings.tool_timeout_seconds)
        register_calculator(tools)
    app[TOOLS] = tools
    app[PINGER] = Pinger(settings.ping_interval_seconds)

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=settings.upstream_max_connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            app[SESSION] = session
            # Loading a local model reads a large file: keep the loop free meanwhile.
            made = provider
            if made is None:
                made = await asyncio.to_thread(make_provider, settings, backend, session)
            app[PROVIDER] = made
            app[PINGER].start()
            try:
                yield
            finally:
                await app[PINGER].stop()
                close = getattr(made, "close", None)
                if provider is None and callable(close):
                    close()

    async def open_store(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].open()
        bus = app[RUNNER].bus
        if bus is not None:
            await bus.listen(app[RUNNER].stop_requested)
        try:
            yield
        finally:
            if bus is not None:
                await bus.close()
            await app[STORE].close()

    app.cleanup_ctx.append(open_store)
    app.cleanup_ctx.append(client_session)
    app.on_startup.append(_freeze_heap)
    app.on_shutdown.append(drain)
    conversation = "/{conversation_id}"
    app.router.add_post("/api/stream", stream_chat)
    app.router.add_delete("/conversation" + conversation, delete_conversation)
    app.router.add_delete("/api/conversation" + conversation, delete_conversation)
    app.router.add_get("/api/conversation" + conversation, get_conversation)
    app.router.add_get("/api/conversation" + conversation + "/stream", join_stream)
    app.router.add_post("/api/conversation" + conversation + "/stop", stop_turn)
    app.router.add_get("/api/conversations", list_conversations)
    app.router.add_get("/health", health)
    add_page_routes(app)
    return app
