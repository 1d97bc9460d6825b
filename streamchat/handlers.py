"""The handlers of streamchat's own API: turns, join and resume, stop, history, the list.

A turn runs in a task of the turn runner (`turns.py`); every response that shows it, the `POST`
that started it, a join, a resume, is a reader of the turn's event log, written in the native
dialect by `protocols.native.serve`. When a store shares turns between processes, a turn this
process does not run is read, stopped or deleted through the store's event bus.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from streamchat.appkeys import BACKEND, LIMITER, METRICS, RUNNER, SETTINGS, STORE
from streamchat.errors import ApiError
from streamchat.eventbus import Followable
from streamchat.eventlog import TurnLog
from streamchat.ids import random_hex
from streamchat.logs import TURN_LOG
from streamchat.protocols.native import serve, tell_interrupted
from streamchat.requests import (
    check_model,
    conversation_id_of,
    last_event_id,
    no_conversation,
    owner_of,
    page_of,
    parse_chat_request,
    read_json_object,
)
from streamchat.turns import RunningTurn, TurnRequest

# How long a stop waits for a turn on another process to end before it answers anyway.
STOP_WAIT_SECONDS = 3.0


async def start_turn(request: web.Request, turn: TurnRequest, new: bool = False) -> RunningTurn:
    """Start a turn for any protocol, once the server can take it (`new`: the conversation id
    was just made, so nothing is stored under it yet)."""
    app = request.app
    runner = app[RUNNER]
    if runner.draining:
        raise ApiError(
            503,
            "shutting_down",
            "The server is restarting. Try again in a moment.",
            headers={"Retry-After": "5"},
        )
    await app[STORE].ping()
    if turn.history is None and not new:
        await refuse_if_full(request, turn.conversation_id)
    limiter = app[LIMITER]
    limiter.check_model(turn.model, app[BACKEND].model)
    await limiter.admit(turn)  # nothing awaits after this before the runner owns the turn
    running = runner.start(turn)
    request[TURN_LOG] = running.log  # the access line tells how the turn ended
    return running


def model_of(request: web.Request, asked: object, param: str = "model") -> str:
    """The model a request asked for (every protocol's, checked), or the server's default."""
    if asked is None:
        return request.app[BACKEND].model
    return check_model(asked, param).strip() or request.app[BACKEND].model


async def stream_chat(request: web.Request) -> web.StreamResponse:
    chat = await parse_chat_request(request, request.app[SETTINGS])
    conversation_id = chat.conversation_id or random_hex()
    model = model_of(request, chat.model)
    turn = await start_turn(
        request,
        TurnRequest(owner_of(request), conversation_id, chat.message, model, chat.regenerate),
        new=chat.conversation_id is None,
    )
    return await serve(request, turn.log, -1, turn)


async def running_turn(
    request: web.Request, owner: str, conversation_id: str, number: int | None
) -> tuple[Followable, RunningTurn | None] | None:
    """The conversation's running turn, run by this process or (with a shared store) another."""
    runner = request.app[RUNNER]
    running = runner.running(owner, conversation_id)
    if running is not None:
        return running.log, running
    if number and runner.bus is not None:
        remote = await runner.bus.remote(owner, conversation_id, number, running=True)
        if remote is not None:
            return remote, None
    return None


async def refuse_if_full(request: web.Request, conversation_id: str | None) -> None:
    """A conversation past `MAX_CONVERSATION_BYTES` takes no new turn (it may pass the cap by
    the one turn that crossed it)."""
    if conversation_id is None:
        return
    limit = request.app[SETTINGS].max_conversation_bytes
    size = await request.app[STORE].stored_bytes(owner_of(request), conversation_id)
    if size > limit:
        raise ApiError(
            413,
            "conversation_too_large",
            f"This conversation holds {size} bytes, over the limit of {limit}: start a new "
            "conversation",
            "conversationId",
        )


async def join_stream(request: web.Request) -> web.StreamResponse:
    """Join the running turn from its first event, or resume any turn after `Last-Event-ID`."""
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    runner = app[RUNNER]
    after = last_event_id(request)
    metrics = app[METRICS]
    if metrics is not None:
        (metrics.joins if after is None else metrics.resumes).inc()
    # A turn of this owner's conversation in memory, running or retained, proves that the
    # conversation is there: a join or a resume of it needs nothing from the store.
    running = runner.running(owner, conversation_id)
    if after is None and running is not None:
        return await serve(request, running.log, -1, running)
    if after is not None:
        log = runner.find_log(owner, conversation_id, after[0])
        if log is not None:
            return await _serve_log(request, log, after[1], running)
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise no_conversation(conversation_id)
    if after is None:
        running = runner.running(owner, conversation_id)
        if running is not None:
            return await serve(request, running.log, -1, running)
        number, index = conversation.running_turn or 0, -1
        if not number:
            return web.Response(status=204)
    else:
        number, index = after
    log = runner.find_log(owner, conversation_id, number)
    if log is not None:
        return await _serve_log(request, log, index, runner.running(owner, conversation_id))
    bus = runner.bus
    # A turn the store says is running may not have shared its first events yet: follow it.
    is_running = conversation.running_turn == number
    remote = (
        None
        if bus is None
        else await bus.remote(owner, conversation_id, number, running=is_running)
    )
    if remote is not None:
        last, finished = await remote.tail()
        if not (finished and index >= last):
            return await serve(request, remote, index, None)
    elif conversation.interrupted_turn == number and after is not None:
        return await tell_interrupted(request, conversation_id, number, index + 1)
    return web.Response(status=204)


async def _serve_log(
    request: web.Request, log: TurnLog, index: int, running: RunningTurn | None
) -> web.StreamResponse:
    """A turn's events after `index` from its log in memory; 204 when there are none left."""
    if log.finished and index >= len(log.events) - 1:
        return web.Response(status=204)
    local = running if running is not None and running.log is log else None
    return await serve(request, log, index, local)


async def stop_turn(request: web.Request) -> web.Response:
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    metrics = app[METRICS]
    if metrics is not None:
        metrics.stops.inc()
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise no_conversation(conversation_id)
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
    remote = await bus.remote(owner, conversation_id, number, running=True)
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


async def approve_tool(request: web.Request) -> web.Response:
    """`{"toolId": ..., "approved": true|false}`: run a waiting tool call, or deny it."""
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    body = await read_json_object(request, app[SETTINGS])
    tool_id, approved = body.get("toolId"), body.get("approved")
    if not isinstance(tool_id, str) or not tool_id or len(tool_id) > 256:
        raise ApiError(400, "invalid_request", "'toolId' must be a tool call's id", "toolId")
    if not isinstance(approved, bool):
        raise ApiError(400, "invalid_request", "'approved' must be true or false", "approved")
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise no_conversation(conversation_id)
    runner = app[RUNNER]
    decided = runner.approvals.decide(owner, conversation_id, tool_id, approved)
    if not decided and runner.bus is not None and conversation.running_turn is not None:
        # The turn may run on another process: the decision goes to whichever one waits.
        await runner.bus.request_approval(owner, conversation_id, tool_id, approved)
        decided = True
    if not decided:
        raise ApiError(
            404, "not_found", f"No tool call {tool_id!r} waits for approval here", "toolId"
        )
    return web.json_response({"toolId": tool_id, "approved": approved})


async def delete_conversation(request: web.Request) -> web.Response:
    app = request.app
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    await app[RUNNER].stop_all(owner, conversation_id, "deleted")
    conversation = await app[STORE].load(owner, conversation_id)
    if conversation is not None and conversation.running_turn is not None:
        await _stop_elsewhere(app, owner, conversation_id, conversation.running_turn)
    await app[STORE].delete(owner, conversation_id)
    bus = app[RUNNER].bus
    if bus is not None:  # the other processes forget the turns of it they kept
        await bus.announce_deleted(owner, conversation_id)
    return web.json_response({"message": "Conversation cleared"})


async def get_conversation(request: web.Request) -> web.Response:
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    conversation = await request.app[STORE].load(owner, conversation_id)
    if conversation is None:
        raise no_conversation(conversation_id)
    return web.json_response(conversation.to_wire())


async def list_conversations(request: web.Request) -> web.Response:
    limit, before = page_of(request)
    infos, cursor = await request.app[STORE].recent(owner_of(request), limit, before)
    return web.json_response({"conversations": [info.to_wire() for info in infos], "next": cursor})


# The page's model picker offers these after the default when the backend is OpenRouter.
