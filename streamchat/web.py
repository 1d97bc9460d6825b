"""`create_app()`: the routes, the middleware, and what the app holds and opens.

The handlers of the API live in `handlers.py`; this module wires them, `/health`, and the chat
page to an app that owns one `aiohttp.ClientSession` (made in `cleanup_ctx`, reused by every
upstream call), the store, and the turn runner, and drains running turns on shutdown. Every
request gets its id and access line (`logs.py`) and, with tracing on, its span (`tracing.py`),
then passes the callers middleware of `auth.py` (host, browser origin, caller). `/metrics`
serves the app's own registry (`metrics.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from streamchat.appkeys import (
    BACKEND,
    LIMITER,
    MCP_SERVERS,
    METRICS,
    PINGER,
    PROVIDER,
    RUNNER,
    SESSION,
    SETTINGS,
    STORE,
    TOOLS,
    TRACING,
)
from streamchat.auth import add_callers
from streamchat.backends import (
    Backend,
    choose_backend,
    fences_enabled,
    make_provider,
    system_prompt,
)
from streamchat.conversations import Turn
from streamchat.errors import json_errors
from streamchat.events import Event
from streamchat.handlers import (
    approve_tool,
    delete_conversation,
    get_conversation,
    join_stream,
    list_conversations,
    stop_turn,
    stream_chat,
)
from streamchat.limits import Limiter, make_limiter, picker_models
from streamchat.logs import add_request_id, request_log
from streamchat.metrics import Metrics, TimedStore
from streamchat.openapi import openapi_json
from streamchat.page import add_page_routes
from streamchat.pipeline import compose_turn
from streamchat.protocol_routes import add_protocol_routes
from streamchat.providers.base import Provider, Stream
from streamchat.requests import read_body_within
from streamchat.settings import Settings
from streamchat.sse_writer import Pinger
from streamchat.stores import Store, StoreUnavailable, make_store
from streamchat.tools.calculator import register_calculator
from streamchat.tools.registry import ToolRegistry
from streamchat.toolsets.base import CombinedToolset, Tools
from streamchat.toolsets.functions import FunctionToolset, load_tool_modules
from streamchat.toolsets.mcp import McpToolset, load_mcp_config
from streamchat.toolsets.observed import ObservedTools
from streamchat.tracing import Tracing, make_tracing
from streamchat.turns import TurnRunner

__all__ = ["BACKEND", "PROVIDER", "RUNNER", "SESSION", "SETTINGS", "STORE", "TOOLS", "create_app"]

log = logging.getLogger(__name__)

# How long start-up waits for each MCP server before going on without it (it keeps trying).
MCP_START_SECONDS = 10.0


async def health(request: web.Request) -> web.Response:
    app = request.app
    backend = app[BACKEND]
    body: dict[str, object] = {
        "status": "ok",
        "backend": backend.kind,
        "model": backend.model,
        "models": picker_models(backend.kind, backend.model, app[LIMITER].allowed_models),
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


# The middle generation is collected after this many young collections (the interpreter's
# default is 10), and a full collection is considered after this many middle ones (default 10):
# a full collection after as many young ones as with 10 and 1,000. See _freeze_heap.
MIDDLE_COLLECTION_AFTER = 2
FULL_COLLECTION_AFTER = 5000


async def _freeze_heap(app: web.Application) -> None:
    """Leave what start-up built out of every later garbage collection, and make full
    collections rare.

    Measured under 200 streams: a full collection walked every module and object made at
    start-up and stopped the event loop for up to 82 ms, which is what every stream's p99 was.
    A full collection also walks every open stream's objects: at 10,000 streams one took 1.4 s
    (bench scenario 11: 34 of 528 `/health` probes over 50 ms, 27% CPU; with full collections
    a hundred times rarer, 3 of 601 and 22%). Almost all garbage is freed by reference counting
    or in the young generations, which still run as often; the cycles that reach the oldest one
    (a few objects per request) wait longer for theirs.

    The middle generation holds every object made since its last collection that is still
    alive: with turns of a few seconds and that collection every ~2.5 s (the default), nearly
    every open stream's objects, 34,000 of them under 200 paced streams, walked in 11 to 23 ms
    at once. Collected five times as often, it walks a fifth of them each time: the longest
    pause 8 ms, the total time the same.
    """
    gc.collect()
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_COLLECTION_AFTER, FULL_COLLECTION_AFTER)


# The young generation is also collected this often, whatever the allocation count says.
YOUNG_COLLECTION_SECONDS = 0.25


async def _young_collections(app: web.Application) -> AsyncIterator[None]:
    """Collect the young generation every `YOUNG_COLLECTION_SECONDS`.

    The interpreter collects it when allocations outnumber deallocations by 700, and a
    deallocation of any age counts. A stream that gets a token frees the coroutines, futures
    and `asend`s it waited on (old by then) and makes new ones to wait for the next: the count
    stays put while the young generation fills with every such stream's new chain. Measured at
    10,000 open streams: 66,000 young objects at the collection that finally came, 150 to 190 ms
    with the loop stopped. Collected every quarter second, the young generation holds a quarter
    second's worth, whatever the count.
    """

    async def collect() -> None:
        while True:
            await asyncio.sleep(YOUNG_COLLECTION_SECONDS)
            if gc.isenabled():
                gc.collect(0)

    task = asyncio.create_task(collect(), name="young-collections")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_tools(settings: Settings, mcp_servers: list[McpToolset]) -> CombinedToolset:
    """The calculator, the `TOOLS_MODULES` functions and the `MCP_CONFIG` servers' tools."""
    registry = ToolRegistry(settings.tool_timeout_seconds)
    register_calculator(registry)
    load_tool_modules(registry, _names(settings.tools_modules))
    if settings.mcp_config:
        for config in load_mcp_config(settings.mcp_config):
            mcp_servers.append(McpToolset(config, call_timeout=settings.tool_timeout_seconds))
    combined = CombinedToolset(
        [FunctionToolset(registry), *mcp_servers], approval=_names(settings.approval_required)
    )
    for server in mcp_servers:
        server.on_change = combined.refresh
    return combined


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def describe_tools(app: web.Application) -> list[str]:
    """What start-up prints about the tools: each MCP server with its tools, or why not."""
    tools = app[TOOLS]
    names = [schema["function"]["name"] for schema in tools.schemas()]
    lines = [f"tools: {', '.join(names) or 'none'}"]
    for server in app[MCP_SERVERS]:
        offered = tools.names(server) if isinstance(tools, CombinedToolset) else []
        listed = ", ".join(offered)
        lines.append(
            f"  MCP server {server.name}: {server.status}" + (f": {listed}" if listed else "")
        )
    waiting = [name for name in names if tools.requires_approval(name)]
    if waiting:
        lines.append(f"  waiting for approval: {', '.join(waiting)}")
    return lines


def watch(app: web.Application, metrics: Metrics) -> None:
    """The gauges and counts that are read only when Prometheus scrapes."""
    runner = app[RUNNER]
    metrics.watch(
        open_streams=lambda: len(app[PINGER]),
        readers=runner.readers,
        turns=lambda: len(runner),
        retries=lambda: int(getattr(app.get(PROVIDER), "retries", 0)),
        answers=lambda: getattr(app.get(PROVIDER), "answers", {}),
    )


async def drain(app: web.Application) -> None:
    """Refuse new turns, let running ones finish within the grace, then stop them."""
    await app[RUNNER].drain(app[SETTINGS].shutdown_grace_seconds)


def create_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    provider: Provider | None = None,
    tools: Tools | None = None,
    store: Store | None = None,
    limiter: Limiter | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """The application; `provider`, `tools`, `store`, `limiter` and `tracing` replace the
    defaults (tests, embedding)."""
    made_tracing = tracing is None
    if tracing is None:
        tracing = make_tracing(settings)
    metrics = Metrics() if settings.metrics else None
    middlewares = [request_log] if tracing is None else [request_log, tracing.middleware()]
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[*middlewares, json_errors]
    )
    app.on_response_prepare.append(add_request_id)
    add_callers(app, settings)
    # After the callers' checks: an unauthenticated caller's body is never read.
    app.middlewares.append(
        read_body_within(settings.request_body_timeout_seconds, settings.max_body_bytes)
    )
    if backend is None:
        backend = (
            choose_backend(settings)
            if provider is None
            else Backend(provider.name, settings.default_model)
        )
    app[SETTINGS] = settings
    app[BACKEND] = backend
    app[METRICS] = metrics
    app[TRACING] = tracing
    app[STORE] = store = (
        make_store(
            settings.store_url,
            ttl_seconds=settings.conversation_ttl_seconds,
            max_conversations=settings.max_conversations,
            memory_max_bytes=settings.memory_store_max_bytes,
            lease_seconds=settings.lease_seconds,
            retention_seconds=settings.resume_retention_seconds,
        )
        if store is None
        else store
    )
    if metrics is not None:
        app[STORE] = store = TimedStore(store, metrics.store_seconds)
    app[LIMITER] = limiter = make_limiter(settings) if limiter is None else limiter
    fences = fences_enabled(settings, backend)

    def compose(turn: Turn, model: str) -> Stream[list[Event]]:
        provider = app[PROVIDER] if tracing is None else tracing.traced(app[PROVIDER])
        return compose_turn(
            provider,
            observed_tools,
            turn,
            model,
            max_rounds=settings.max_tool_rounds,
            fences=fences,
            max_reply_bytes=settings.max_reply_bytes,
        )

    app[RUNNER] = TurnRunner(
        store,
        compose,
        system_prompt(settings, backend),
        grace_seconds=settings.resume_grace_seconds,
        retention_seconds=settings.resume_retention_seconds,
        retention_bytes=settings.resume_retention_bytes,
        bus=store.event_bus(),
        approval_timeout=settings.approval_timeout_seconds,
        on_end=limiter.turn_ended if limiter.counting else None,
        max_turn_seconds=settings.max_turn_seconds,
        metrics=metrics,
        tracing=tracing,
        log_content=settings.log_content,
    )
    app[MCP_SERVERS] = []
    app[TOOLS] = tools if tools is not None else make_tools(settings, app[MCP_SERVERS])
    observed_tools = ObservedTools(
        app[TOOLS], metrics=metrics, tracing=tracing, log_content=settings.log_content
    )
    app[PINGER] = Pinger(settings.ping_interval_seconds)
    if metrics is not None:
        watch(app, metrics)

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=settings.upstream_max_connections)
        traces: list[aiohttp.TraceConfig] = []
        if tracing is not None:
            traces.append(tracing.client_trace_config())
        async with aiohttp.ClientSession(connector=connector, trace_configs=traces) as session:
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
                if made_tracing and tracing is not None:
                    await asyncio.to_thread(tracing.shutdown)

    async def open_store(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].open()
        await app[LIMITER].open()
        bus = app[RUNNER].bus
        if bus is not None:
            await bus.listen(app[RUNNER].bus_message)
        try:
            yield
        finally:
            if bus is not None:
                await bus.close()
            await app[LIMITER].close()
            await app[STORE].close()

    async def connect_mcp(app: web.Application) -> AsyncIterator[None]:
        servers = app[MCP_SERVERS]
        # Every server at once, each given a few seconds: a slow or dead one is reported and
        # retried in the background, and never holds start-up.
        await asyncio.gather(*(server.start(MCP_START_SECONDS) for server in servers))
        refresh = getattr(app[TOOLS], "refresh", None)
        if callable(refresh):
            refresh()
        try:
            yield
        finally:
            await asyncio.gather(*(server.close() for server in servers))

    app.cleanup_ctx.append(open_store)
    app.cleanup_ctx.append(connect_mcp)
    app.cleanup_ctx.append(client_session)
    app.on_startup.append(_freeze_heap)
    app.cleanup_ctx.append(_young_collections)
    app.on_shutdown.append(drain)
    conversation = "/{conversation_id}"
    app.router.add_post("/api/stream", stream_chat)
    app.router.add_delete("/conversation" + conversation, delete_conversation)
    app.router.add_delete("/api/conversation" + conversation, delete_conversation)
    app.router.add_get("/api/conversation" + conversation, get_conversation)
    app.router.add_get("/api/conversation" + conversation + "/stream", join_stream)
    app.router.add_post("/api/conversation" + conversation + "/stop", stop_turn)
    app.router.add_post("/api/conversation" + conversation + "/approve", approve_tool)
    app.router.add_get("/api/conversations", list_conversations)
    app.router.add_get("/health", health)
    if metrics is not None:
        app.router.add_get("/metrics", metrics.handler(settings.metrics_token))
    add_protocol_routes(app)
    app.router.add_get("/openapi.json", openapi_json)
    add_page_routes(app)
    return app
