"""The floor: the least a correct streaming proxy can do, for bench/run.py to compare against.

`POST /api/stream` reads `{"message": ...}`, opens one streaming `/chat/completions` request on a
shared `aiohttp.ClientSession`, parses each upstream SSE frame (one `json.loads`) and re-encodes
its text as a streamchat `text` event (`id:`, `event: text`, one line of JSON with `chunkIndex`,
`elapsedMs`, `content`, `textDelta`), then ends with a `completion` event. Frames from one
upstream read share one write. No conversations, artifacts or validation beyond the body being
JSON: nothing that does the job correctly can be much cheaper. A client that leaves cancels the
handler (handler_cancellation), which closes the upstream response at once.

Its tool loop is the least a server with tools must do. Every upstream request offers the four
calculator tools streamchat has built in (`add`, `subtract`, `multiply`, `divide`, each
`(a: number, b: number)`; the schemas are made once, at start-up). When a reply carries
tool-call deltas, their fragments are joined by `index`, the arguments parsed with one
`json.loads`, the plain function called in the handler (no thread, no schema check), and a
`tool_executing` and a `tool_completed` event written as streamchat's (`toolName`, `toolId`,
`arguments`, `result`, `executionMs`; a call that raises is a `tool_error`). Then the next
request goes up with the history (the user message, the assistant message with its
`tool_calls`, a `tool` message per result), at most `MAX_ROUNDS` model rounds per request.

    python bench/floor.py --port 8001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
URL = web.AppKey("url", str)
MODEL = web.AppKey("model", str)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
MAX_ROUNDS = 5  # model rounds per request: a model that keeps calling tools cannot loop forever


def _add(a: float, b: float) -> float:
    return a + b


def _subtract(a: float, b: float) -> float:
    return a - b


def _multiply(a: float, b: float) -> float:
    return a * b


def _divide(a: float, b: float) -> float:
    return a / b  # by zero: ZeroDivisionError, a tool_error


FUNCTIONS: dict[str, Callable[..., float]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "divide": _divide,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    }
    for name in FUNCTIONS
]


def _frame(index: int, started: float, kind: str, fields: dict[str, Any]) -> bytes:
    event = {
        "type": kind,
        "chunkIndex": index,
        "elapsedMs": round((time.perf_counter() - started) * 1000, 1),
        **fields,
    }
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (index, kind.encode(), _dumps(event).encode())


def _call(name: str, arguments: str) -> str:
    """Run one tool: its result as the model reads it (42, not 42.0)."""
    args = json.loads(arguments or "{}")
    value = FUNCTIONS[name](**args)
    return str(int(value)) if value == int(value) else repr(value)


async def _round(
    request: web.Request,
    response: web.StreamResponse,
    body: dict[str, Any],
    started: float,
    index: int,
) -> tuple[int, str | None, dict[int, list[Any]]]:
    """One model round: its text streamed as `text` events; its tool calls, joined by index.

    Returns the next chunk index, the finish reason and the calls ({index: [id, name,
    [argument fragments]]}).
    """
    finish: str | None = None
    calls: dict[int, list[Any]] = {}
    upstream = await request.app[SESSION].post(request.app[URL], json=body)
    done = False
    try:
        pending = b""
        async for data in upstream.content.iter_any():
            frames = (pending + data).split(b"\n\n")
            pending = frames.pop()
            out = []
            for frame in frames:
                if not frame.startswith(b"data: "):
                    continue  # comments, keep-alives
                payload = frame[6:]
                if payload == b"[DONE]":
                    done = True
                    break
                choices = json.loads(payload).get("choices")
                if not choices:
                    continue
                choice = choices[0]
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                content = delta.get("content")
                if content:
                    elapsed = round((time.perf_counter() - started) * 1000, 1)
                    event = {
                        "type": "text",
                        "chunkIndex": index,
                        "elapsedMs": elapsed,
                        "content": content,
                        "textDelta": content,
                    }
                    out.append(
                        b"id: %d\nevent: text\ndata: %s\n\n" % (index, _dumps(event).encode())
                    )
                    index += 1
                for part in delta.get("tool_calls") or ():
                    call = calls.setdefault(part.get("index", 0), ["", "", []])
                    call[0] = part.get("id") or call[0]
                    function = part.get("function") or {}
                    call[1] = function.get("name") or call[1]
                    if function.get("arguments"):
                        call[2].append(function["arguments"])
            if out:
                await response.write(b"".join(out))
            if done:
                break
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()  # the client left (or the upstream broke): drop the connection now
    return index, finish, calls


async def stream(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        body = json.loads(await request.read())
        message = body["message"]
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"error": {"message": "bad body", "code": "invalid_request"}}, status=400
        )
    app = request.app
    messages: list[dict[str, Any]] = [{"role": "user", "content": message}]
    upstream_body = {
        "model": body.get("model") or app[MODEL],
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": TOOLS,
    }
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    index = 0
    finish: str | None = None
    for _ in range(MAX_ROUNDS):
        index, finish, calls = await _round(request, response, upstream_body, started, index)
        if not calls:
            break
        ordered = [calls[i] for i in sorted(calls)]
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": tool_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "".join(fragments)},
                    }
                    for tool_id, name, fragments in ordered
                ],
            }
        )
        out = []
        for tool_id, name, fragments in ordered:
            arguments = "".join(fragments)
            named = {"toolName": name, "toolId": tool_id, "arguments": arguments}
            out.append(_frame(index, started, "tool_executing", named))
            index += 1
            t0 = time.perf_counter()
            try:
                result = _call(name, arguments)
                kind, outcome = "tool_completed", {"result": result}
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                result = f"Error: {type(exc).__name__}: {exc}"
                kind, outcome = "tool_error", {"error": result}
            ms = round((time.perf_counter() - t0) * 1000, 3)
            out.append(_frame(index, started, kind, {**named, **outcome, "executionMs": ms}))
            index += 1
            messages.append({"role": "tool", "tool_call_id": tool_id, "content": result})
        await response.write(b"".join(out))
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    completion = {
        "type": "completion",
        "chunkIndex": index,
        "elapsedMs": elapsed,
        "finishReason": finish or "stop",
    }
    await response.write(
        b"id: %d\nevent: completion\ndata: %s\n\n" % (index, _dumps(completion).encode())
    )
    return response


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(upstream_base: str, model: str) -> web.Application:
    app = web.Application()
    app[URL] = upstream_base.rstrip("/") + "/chat/completions"
    app[MODEL] = model

    async def session(app: web.Application) -> AsyncIterator[None]:
        # limit=0: no cap on upstream connections, so 1,000 open streams are 1,000 requests.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    app.router.add_post("/api/stream", stream)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the benchmark's floor server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000/v1")
    parser.add_argument("--model", default="bench/model")
    args = parser.parse_args(argv)
    web.run_app(
        create_app(args.upstream, args.model),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
