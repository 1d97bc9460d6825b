"""The floor: the least a correct streaming proxy can do, for bench/run.py to compare against.

`POST /api/stream` reads `{"message": ...}`, opens one streaming `/chat/completions` request on a
shared `aiohttp.ClientSession`, parses each upstream SSE frame (one `json.loads`) and re-encodes
its text as a streamchat `text` event (`id:`, `event: text`, one line of JSON with `chunkIndex`,
`elapsedMs`, `content`, `textDelta`), then ends with a `completion` event. Frames from one
upstream read share one write. No conversations, tools, artifacts or validation beyond the body
being JSON: nothing that does the job correctly can be much cheaper. A client that leaves cancels
the handler (handler_cancellation), which closes the upstream response at once.

    python bench/floor.py --port 8001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
URL = web.AppKey("url", str)
MODEL = web.AppKey("model", str)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
    upstream_body = {
        "model": body.get("model") or app[MODEL],
        "messages": [{"role": "user", "content": message}],
        "stream": True,
        "stream_options": {"include_usage": True},
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
    upstream = await app[SESSION].post(app[URL], json=upstream_body)
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
                content = (choice.get("delta") or {}).get("content")
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
            if out:
                await response.write(b"".join(out))
            if done:
                break
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()  # the client left (or the upstream broke): drop the connection now
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
