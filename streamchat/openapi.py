"""`GET /openapi.json`: the OpenAPI 3.1 document of every route, body, error and event.

Its schemas come from the models the server validates with: the request body is
`requests.ChatRequest` itself (with the length cap of this server's settings), and the events and
answers are the models of `events_schema`, which the tests hold every `to_wire()` and every body
to. The errors each route can answer are listed below, status by status, with their codes; the
document is built once per set of settings and served as bytes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streamchat import events_schema as wire
from streamchat.appkeys import SETTINGS
from streamchat.requests import (
    CONVERSATION_ID_PATTERN,
    CURSOR_PATTERN,
    EVENT_ID_PATTERN,
    LIST_LIMIT,
    MAX_MODEL_CHARS,
    NOT_BLANK_PATTERN,
    ChatRequest,
)
from streamchat.settings import Settings

REF = "#/components/schemas/{model}"

# What each status means and the codes its `{"error": {...}}` carries. Codes are for programs;
# a client should treat one it does not know by its status.
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    402: ("the upstream account has too few credits", ("insufficient_credits",)),
    502: ("the upstream failed", ("upstream_error", "upstream_unreachable", "upstream_auth")),
    504: ("the upstream did not answer in time", ("timeout",)),
    400: ("the request is malformed; `param` names the field", ()),
    401: (
        "the caller is not known: no key, or a wrong, expired or forged one (with "
        "`WWW-Authenticate: Bearer`; only when `AUTH` is not `none`)",
        ("unauthorized",),
    ),
    403: (
        "refused: a browser origin not in `CORS_ORIGINS`",
        ("forbidden_origin",),
    ),
    421: ("a `Host` the server does not answer (not in `ALLOWED_HOSTS`)", ("host_not_allowed",)),
    404: ("no such conversation for this caller, or no such route", ("not_found",)),
    408: (
        "the request body did not arrive within `REQUEST_BODY_TIMEOUT_SECONDS`",
        ("request_timeout",),
    ),
    413: (
        "too large: the request body (over `MAX_BODY_BYTES`), or, for a new turn, the "
        "conversation's stored messages (over `MAX_CONVERSATION_BYTES`: start a new conversation)",
        ("body_too_large",),
    ),
    429: (
        "a per-caller limit is reached; `Retry-After` says when to try again",
        ("quota_exceeded", "budget_exceeded"),
    ),
    500: ("a bug in streamchat, logged on the server; never a stack trace", ("internal",)),
    503: ("the server cannot serve it right now; `Retry-After` says when to try again", ()),
}
# The codes a route adds to those of the status.
STREAM_CODES: dict[int, tuple[str, ...]] = {
    400: ("invalid_json", "invalid_request", "message_too_long", "model_not_allowed"),
    413: ("conversation_too_large",),
    503: ("shutting_down", "store_unavailable"),
}
ROUTE_CODES: dict[int, tuple[str, ...]] = {
    400: ("invalid_request",),
    503: ("store_unavailable",),
}
BODY_CODES: dict[int, tuple[str, ...]] = {**ROUTE_CODES, 400: ("invalid_json", "invalid_request")}


def error_codes(status: int, route_codes: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    """The codes a route's `status` can carry."""
    return ERRORS[status][1] + route_codes.get(status, ())


def _error(status: int, route_codes: dict[int, tuple[str, ...]]) -> dict[str, Any]:
    what, _ = ERRORS[status]
    codes = error_codes(status, route_codes)
    listed = ", ".join(f"`{code}`" for code in codes)
    response: dict[str, Any] = {
        "description": f"{what}. `code`: {listed}" if codes else what,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }
    if codes:
        response["x-codes"] = list(codes)  # the same list, for programs
    if status in (429, 503):
        response["headers"] = {"Retry-After": _header("seconds to wait", {"type": "integer"})}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _header("`Bearer`", {"type": "string"})}
    return response


def _errors(
    statuses: tuple[int, ...], route_codes: dict[int, tuple[str, ...]] = ROUTE_CODES
) -> dict[str, Any]:
    # Every route may meet a bad Host or origin (403), a stalled or oversized body (408, 413),
    # and a bug (500).
    every = sorted({*statuses, 403, 408, 413, 421, 500})
    return {str(status): _error(status, route_codes) for status in every}


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


def _json(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


def _events(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "X-Conversation-Id": _header(
                "the conversation the turn belongs to", {"type": "string"}, required=True
            ),
            "Cache-Control": _header("`no-cache`", {"type": "string"}),
        },
        "content": {
            # Before OpenAPI 3.2 (which calls it `itemSchema`), the schema of an event stream is
            # read as the schema of each of its events.
            "text/event-stream": {"schema": {"$ref": REF.format(model="ServerSentEvent")}}
        },
    }


APPROVE_REQUEST = {
    "type": "object",
    "required": ["toolId", "approved"],
    "properties": {
        "toolId": {"type": "string", "minLength": 1, "maxLength": 256},
        "approved": {"type": "boolean"},
    },
}
APPROVE_RESULT = {
    "type": "object",
    "required": ["toolId", "approved"],
    "properties": {"toolId": {"type": "string"}, "approved": {"type": "boolean"}},
    "additionalProperties": False,
}
# The other protocols' bodies are their own specifications' (the AI SDK's UI messages,
# OpenAI's chat completions, AG-UI's RunAgentInput): described here only as far as streamchat
# reads them, and their answers as the frames those protocols define.
OTHER_EVENTS = {
    "type": "object",
    "description": "one frame of that protocol's event stream (`data:` JSON, or `[DONE]`)",
    "properties": {"data": {"type": "string"}},
}
LOOSE_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message"]}},
}


def _other_events(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/event-stream": {"schema": OTHER_EVENTS}}}


def _loose_errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    every = sorted({*statuses, 403, 408, 413, 421, 500})
    return {
        str(status): {
            "description": ERRORS.get(status, ("an error of the upstream or the turn", ()))[0],
            "content": {"application/json": {"schema": LOOSE_ERROR}},
        }
        for status in every
    }


def _protocol_paths() -> dict[str, Any]:
    messages = {"type": "array", "minItems": 1, "items": {"type": "object"}}
    id_schema = {"type": "string", "pattern": CONVERSATION_ID_PATTERN}
    model = {"type": "string", "maxLength": MAX_MODEL_CHARS}
    return {
        "/api/chat": {
            "post": {
                "operationId": "aiSdkChat",
                "summary": "The Vercel AI SDK's UI message stream, for `useChat`",
                "description": "`id` is the conversation; only the last user message of "
                "`messages` is used (streamchat keeps the history).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["id", "messages"],
                                "properties": {
                                    "id": id_schema,
                                    "messages": messages,
                                    "trigger": {"type": "string"},
                                    "model": model,
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _other_events("UI message stream parts, then `[DONE]`"),
                    **_errors((400, 401, 429, 503), STREAM_CODES),
                },
            }
        },
        "/api/chat/{conversationId}/stream": {
            "get": {
                "operationId": "aiSdkResume",
                "summary": "`useChat({resume: true})`: the running turn, replayed from its start",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": _other_events("UI message stream parts, then `[DONE]`"),
                    "204": {"description": "no turn is running"},
                    **_errors((400, 401, 503)),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "chatCompletions",
                "summary": "OpenAI's chat completions, streamed or not; tools run on the server",
                "description": "With `X-Conversation-Id` the server keeps the history and uses "
                "the last user message; without it `messages` is the whole history.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["messages"],
                                "properties": {
                                    "model": model,
                                    "messages": messages,
                                    "stream": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "a `chat.completion`, or `chat.completion.chunk`s",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": OTHER_EVENTS},
                        },
                    },
                    **_loose_errors((400, 401, 402, 429, 502, 503, 504)),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The models a request may name, as OpenAI lists them",
                "responses": {
                    "200": {
                        "description": "`{object: list, data: [{id, object, owned_by}]}`",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors((401,)),
                },
            }
        },
        "/api/agui": {
            "post": {
                "operationId": "aguiRun",
                "summary": "AG-UI: `RunAgentInput` in, AG-UI events out; `threadId` is the "
                "conversation",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["threadId", "runId", "messages"],
                                "properties": {
                                    "threadId": id_schema,
                                    "runId": {"type": "string", "minLength": 1, "maxLength": 128},
                                    "messages": messages,
                                    "forwardedProps": {
                                        "type": "object",
                                        "properties": {"model": model},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _other_events("AG-UI events: RUN_STARTED ... RUN_FINISHED or RUN_ERROR"),
                    **_errors((400, 401, 429, 503), STREAM_CODES),
                },
            }
        },
    }


CONVERSATION_ID = {
    "name": "conversationId",
    "in": "path",
    "required": True,
    "description": "1-128 characters of `A-Z a-z 0-9 . _ : -` (`.` and `..` cannot be used in "
    "a URL)",
    # The server's pattern, less `.` and `..`, which a URL cannot carry as a path segment.
    "schema": {"type": "string", "pattern": r"^(?!\.\.?$)" + CONVERSATION_ID_PATTERN[1:]},
}


def _paths() -> dict[str, Any]:
    by_id = "/api/conversation/{conversationId}"
    delete = {
        "summary": "Forget a conversation (a running turn is stopped first)",
        "description": "Answers the same when the conversation does not exist: the call is "
        "idempotent.",
        "parameters": [CONVERSATION_ID],
        "responses": {
            "200": _json("Cleared", "forgotten (or never there)"),
            **_errors((400, 401, 503)),
        },
    }
    return {
        "/api/stream": {
            "post": {
                "operationId": "streamChat",
                "summary": "One chat turn, answered as Server-Sent Events",
                "description": "Bad requests are answered before any stream starts, with a "
                "JSON error. The body is read as JSON whatever its `Content-Type`; unknown "
                "fields are ignored.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ChatRequest")}}
                    },
                },
                "responses": {
                    "200": _events("the turn's events, live, until its terminal event"),
                    **_errors((400, 401, 429, 503), STREAM_CODES),
                },
            }
        },
        by_id: {
            "get": {
                "operationId": "getConversation",
                "summary": "The stored history and the conversation's metadata",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": _json("Conversation", "the conversation"),
                    **_errors((400, 401, 404, 503)),
                },
            },
            "delete": {**delete, "operationId": "deleteConversation"},
        },
        by_id + "/stream": {
            "get": {
                "operationId": "joinStream",
                "summary": "Join the running turn, or resume a turn after `Last-Event-ID`",
                "parameters": [
                    CONVERSATION_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "the `id:` of the last event the client has: exactly "
                        "the events after it follow",
                        "schema": {"type": "string", "pattern": f"(^$)|({EVENT_ID_PATTERN})"},
                        "example": "2:15",
                    },
                    {
                        "name": "lastEventId",
                        "in": "query",
                        "required": False,
                        "description": "the same as `Last-Event-ID`, for a fresh page load (the "
                        "header wins; both are checked)",
                        "schema": {"type": "string", "pattern": f"(^$)|({EVENT_ID_PATTERN})"},
                        "example": "2:15",
                    },
                ],
                "responses": {
                    "200": _events(
                        "the turn's events after the given one (all of them "
                        "without one), live, until its terminal event"
                    ),
                    "204": {
                        "description": "no turn is running and none is retained after that "
                        "id: read the history instead"
                    },
                    **_errors((400, 401, 404, 503)),
                },
            }
        },
        by_id + "/stop": {
            "post": {
                "operationId": "stopTurn",
                "summary": "Stop the conversation's running turn, whichever process runs it",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": _json("StopResult", "stopped, or nothing was running"),
                    **_errors((400, 401, 404, 503)),
                },
            }
        },
        "/conversation/{conversationId}": {
            "delete": {**delete, "operationId": "deleteConversationLegacy"}
        },
        "/api/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "The caller's conversations, most recently used first, paged",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": LIST_LIMIT,
                            "default": 20,
                        },
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "the `next` of the previous page",
                        # Empty is the same as absent: the first page.
                        "schema": {"type": "string", "pattern": f"(^$)|({CURSOR_PATTERN})"},
                        "example": "1764312345.123~conv-1",
                    },
                ],
                "responses": {
                    "200": _json("ConversationList", "one page"),
                    **_errors((400, 401, 503)),
                },
            }
        },
        by_id + "/approve": {
            "post": {
                "operationId": "approveTool",
                "summary": "Run or deny a tool call that waits for a person's approval",
                "parameters": [CONVERSATION_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": APPROVE_REQUEST}},
                },
                "responses": {
                    "200": {
                        "description": "decided; the turn goes on",
                        "content": {"application/json": {"schema": APPROVE_RESULT}},
                    },
                    **_errors((400, 401, 404, 503), BODY_CODES),
                },
            }
        },
        **_protocol_paths(),
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (with `METRICS_TOKEN` set, as a bearer token)",
                "responses": {
                    "200": {
                        "description": "the Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors((401,)),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "For load balancers and container checks",
                "responses": {
                    "200": _json("Health", "ready"),
                    "503": _json(
                        "Health",
                        "shutting down, the store cannot be reached, or no backend can answer; "
                        "`reason` says which",
                    ),
                    **_errors(()),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(()),
                },
            }
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ChatRequest,
        *wire.EVENT_MODELS,
        wire.ErrorBody,
        wire.Conversation,
        wire.ConversationList,
        wire.StopResult,
        wire.Cleared,
        wire.Health,
    ]
    _, found = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    schemas: dict[str, Any] = found["$defs"]
    for name, schema in schemas.items():
        if name != "ChatRequest":  # a request may send null for an optional field
            wire.omit_nulls(schema)
        for field in schema.get("properties", {}).values():
            field.pop("title", None)
    message = schemas["ChatRequest"]["properties"]["message"]
    # What parse_chat_request checks after the model: not blank, and at most the cap.
    message.update(
        description="the user's message: not blank, at most MAX_MESSAGE_CHARS characters",
        minLength=1,
        maxLength=settings.max_message_chars,
        pattern=NOT_BLANK_PATTERN,
    )
    schemas["ChatRequest"]["properties"]["conversationId"]["description"] = (
        "the conversation to continue or start; a new id is made when absent"
    )
    schemas["ChatRequest"]["properties"]["regenerate"]["description"] = (
        "replace the conversation's last turn: its last user message and all after it go first"
    )
    schemas["StreamEvent"] = {
        "description": "The JSON of one event's `data:` line; `type` is also its `event:` line.",
        "oneOf": [{"$ref": REF.format(model=model.__name__)} for model in wire.EVENT_MODELS],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                model.model_fields["type"].annotation.__args__[0]: REF.format(  # type: ignore[union-attr]
                    model=model.__name__
                )
                for model in wire.EVENT_MODELS
            },
        },
    }
    schemas["ServerSentEvent"] = {
        "description": "One frame of an event stream, as OpenAPI 3.2 describes Server-Sent "
        "Events: `id: <turn>:<chunkIndex>` (send it back as `Last-Event-ID` to resume), "
        "`event: <type>`, and one `data:` line holding a `StreamEvent`. `: ping` comments keep "
        "an idle stream open. A turn ends with exactly one `completion` or `error` event.",
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
            "event": {"type": "string", "description": "the event's `type`"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF.format(model="StreamEvent")},
            },
        },
    }
    return dict(sorted(schemas.items()))


def document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamchat",
            "version": "1",
            "description": "A streaming chat API: conversations, server-side tools and "
            'artifacts over Server-Sent Events. Every error is `{"error": {"message", '
            '"code", "param"}}`; no input gets a 5xx or a stack trace.',
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (`AUTH=keys`) or a JWT (`AUTH=jwt`); not needed "
                    "with `AUTH=none`",
                }
            },
        },
        # No auth is a choice of the server's settings: none, or a bearer token.
        "security": [{}, {"bearer": []}],
    }


@functools.lru_cache(maxsize=4)
def document_bytes(settings: Settings) -> bytes:
    return json.dumps(document(settings), ensure_ascii=False).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(request.app[SETTINGS]), content_type="application/json")
