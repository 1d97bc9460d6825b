"""The routes of the other dialects: the AI SDK's `useChat`, OpenAI's chat completions, AG-UI.

Each runs on the same turns as streamchat's own API (the store, tools, artifacts, the turn
runner and its event log, stop, ownership): only the request parsing and the encoder differ.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamchat.appkeys import BACKEND, LIMITER, METRICS, RUNNER, SETTINGS, STORE
from streamchat.errors import ApiError
from streamchat.events import Completion, ErrorEvent
from streamchat.handlers import model_of, running_turn, start_turn
from streamchat.ids import random_hex
from streamchat.limits import picker_models
from streamchat.protocols import agui, aisdk, openai
from streamchat.protocols.stream import serve
from streamchat.providers.base import Message
from streamchat.requests import (
    check_conversation_id,
    check_message,
    check_unicode,
    conversation_id_of,
    owner_of,
    read_json_object,
)
from streamchat.turns import TurnRequest

CONVERSATION_HEADER = "X-Conversation-Id"
_ROLES = ("system", "developer", "user", "assistant", "tool")


# --- the Vercel AI SDK ----------------------------------------------------------------------------


async def aisdk_chat(request: web.Request) -> web.StreamResponse:
    """`useChat` with `DefaultChatTransport({api: '/api/chat'})`: only the new message is used."""
    body = await read_json_object(request, request.app[SETTINGS])
    conversation_id = check_conversation_id(body.get("id"), "id")
    text = aisdk.user_text(body)
    if text is None:
        raise ApiError(
            400, "invalid_request", "'messages' must end with a user message", "messages"
        )
    check_message(text, request.app[SETTINGS], "messages")
    model = model_of(request, body.get("model"))
    regenerate = body.get("trigger") == "regenerate-message"
    turn = await start_turn(
        request, TurnRequest(owner_of(request), conversation_id, text, model, regenerate)
    )
    return await serve(request, turn.log, -1, turn, aisdk.AiSdkEncoder(conversation_id))


async def aisdk_resume(request: web.Request) -> web.StreamResponse:
    """`useChat({resume: true})`: the running turn replayed from its start, or 204."""
    owner, conversation_id = owner_of(request), conversation_id_of(request)
    metrics = request.app[METRICS]
    if metrics is not None:
        metrics.resumes.inc()
    conversation = await request.app[STORE].load(owner, conversation_id)
    if conversation is None:
        return web.Response(status=204)
    found = await running_turn(request, owner, conversation_id, conversation.running_turn)
    if found is None:
        return web.Response(status=204)
    log, local = found
    return await serve(request, log, -1, local, aisdk.AiSdkEncoder(conversation_id))


# --- OpenAI chat completions ---------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = await read_json_object(request, settings)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid_request", "'messages' must be a non-empty list", "messages")
    history = [_openai_message(m, n) for n, m in enumerate(messages)]
    last = history.pop()
    if last["role"] != "user" or not isinstance(last.get("content"), str):
        raise ApiError(
            400, "invalid_request", "the last of 'messages' must be a user message", "messages"
        )
    text = str(last["content"])
    check_message(text, settings, "messages")
    model = model_of(request, body.get("model"))
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    kept = request.headers.get(CONVERSATION_HEADER)
    owner = owner_of(request)
    if kept is not None:
        # The server keeps the history: only the new user message is taken from the request.
        conversation_id = check_conversation_id(kept, CONVERSATION_HEADER)
        turn_request = TurnRequest(owner, conversation_id, text, model)
    else:
        conversation_id = f"openai-{random_hex()}"
        turn_request = TurnRequest(owner, conversation_id, text, model, history=history)
    turn = await start_turn(request, turn_request)
    if stream:
        encoder = openai.ChunkEncoder(turn_request.model, include_usage)
        return await serve(request, turn.log, -1, turn, encoder)
    collector = openai.Collector()
    runner = request.app[RUNNER]
    runner.attach(turn)
    try:
        async for first, events, elapsed in turn.log.follow():
            collector.encode(turn.log.turn, first, events, elapsed)
    finally:
        runner.detach(turn)
    terminal = collector.terminal
    if not isinstance(terminal, Completion):
        error = terminal or ErrorEvent("The reply ended unexpectedly.", "internal")
        return web.json_response(
            openai.error_body(error.message, error.code),
            status=openai.ERROR_STATUS.get(error.code, 500),
        )
    body_out = collector.completion(turn_request.model, conversation_id if kept else None)
    return web.json_response(body_out, headers={CONVERSATION_HEADER: conversation_id})


def _openai_message(message: object, index: int) -> Message:
    param = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
        raise ApiError(
            400, "invalid_request", f"'{param}' must be an object with a known role", param
        )
    role = "system" if message["role"] == "developer" else str(message["role"])
    content = message.get("content")
    if isinstance(content, list):  # content parts: the text ones, joined
        content = "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    if content is not None and not isinstance(content, str):
        raise ApiError(400, "invalid_request", f"'{param}.content' must be a string", param)
    out: Message = {"role": role, "content": content}
    if role == "assistant" and isinstance(message.get("tool_calls"), list):
        out["tool_calls"] = message["tool_calls"]
    if role == "tool":
        out["tool_call_id"] = str(message.get("tool_call_id", ""))
    return out


async def list_models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "streamchat"}
                for model in picker_models(
                    backend.kind, backend.model, request.app[LIMITER].allowed_models
                )
            ],
        }
    )


# --- AG-UI ---------------------------------------------------------------------------------------


async def agui_run(request: web.Request) -> web.StreamResponse:
    """`RunAgentInput` in; the run as AG-UI events. `threadId` is the conversation."""
    body = await read_json_object(request, request.app[SETTINGS])
    thread_id = check_conversation_id(body.get("threadId"), "threadId")
    run_id = body.get("runId")
    if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
        raise ApiError(400, "invalid_request", "'runId' must be a string", "runId")
    check_unicode(run_id, "runId")  # every event of the run carries it
    text = agui.user_text(body)
    if text is None:
        raise ApiError(400, "invalid_request", "'messages' must hold a user message", "messages")
    check_message(text, request.app[SETTINGS], "messages")
    props: Any = body.get("forwardedProps")
    asked = props.get("model") if isinstance(props, dict) else None
    model = model_of(request, asked, "forwardedProps.model")
    turn = await start_turn(request, TurnRequest(owner_of(request), thread_id, text, model))
    return await serve(request, turn.log, -1, turn, agui.AguiEncoder(thread_id, run_id))


def add_protocol_routes(app: web.Application) -> None:
    app.router.add_post("/api/chat", aisdk_chat)
    app.router.add_get("/api/chat/{conversation_id}/stream", aisdk_resume)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/api/agui", agui_run)
