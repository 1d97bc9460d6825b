"""A local OTLP/HTTP trace sink for the benchmark: what `streamchat-otel` exports its spans to.

It accepts `POST /v1/traces` (a protobuf `ExportTraceServiceRequest`, gzip-encoded or not) and
answers at once `200` with an empty `application/x-protobuf` body: an empty
`ExportTraceServiceResponse`, which is full success in the OTLP/HTTP specification. So the
exporter in the server under test never waits on the collector and never retries, and what the
benchmark reads is the cost of making and sending spans, not of a slow collector.

It counts requests and bytes received; with `opentelemetry-proto` importable it also decodes each
request, after the reply is on its way, and counts the spans by name and by the 10 ms in which
each ended (its `end_time_unix_nano`), so that the harness can ask how many spans the turns of one
trial's window made, once the exporter has sent them (its batches lag by up to 5 s).

Control routes: `GET /_bench/stats` (totals), `GET /_bench/spans?start_ns=&end_ns=` (spans by
name that ended in that window, wall-clock nanoseconds), `GET /health`.

    python bench/otlpsink.py --port 4318
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import sys
import time
import zlib
from collections import Counter
from typing import Any

from aiohttp import web

BIN_NS = 10_000_000  # spans are counted per 10 ms of their end time


def _decoder() -> Any:
    """opentelemetry-proto's `ExportTraceServiceRequest`, or None when it is not installed."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        return None
    return trace_service_pb2.ExportTraceServiceRequest


class Sink:
    """The counts: requests and bytes always; spans when the protobuf can be decoded."""

    def __init__(self) -> None:
        self.request_type = _decoder()
        self.requests = 0
        self.bytes = 0  # request bodies as received (compressed, if the exporter compresses)
        self.spans = 0
        self.undecoded = 0  # requests whose body could not be decoded
        self.by_name: Counter[str] = Counter()
        self.bins: Counter[tuple[str, int]] = Counter()  # (span name, end time // BIN_NS)
        self.last_request = 0.0  # time.time() of the latest export

    def count(self, body: bytes, encoding: str) -> None:
        """Decode one request's spans (called after the reply is sent)."""
        if self.request_type is None:
            return
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = self.request_type.FromString(body)
        except Exception:  # a body this sink cannot read is counted, never fatal
            self.undecoded += 1
            return
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans += 1
                    self.by_name[span.name] += 1
                    self.bins[(span.name, span.end_time_unix_nano // BIN_NS)] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "decoding": self.request_type is not None,
            "requests": self.requests,
            "bytes": self.bytes,
            "spans": self.spans if self.request_type is not None else None,
            "undecoded": self.undecoded,
            "by_name": dict(self.by_name),
            "last_request": self.last_request,
        }

    def window(self, start_ns: int, end_ns: int) -> dict[str, int]:
        """Spans by name whose end time falls in [start_ns, end_ns), to the 10 ms."""
        first, last = start_ns // BIN_NS, end_ns // BIN_NS
        found: Counter[str] = Counter()
        for (name, slot), n in self.bins.items():
            if first <= slot < last:
                found[name] += n
        return dict(found)


def make_app(sink: Sink) -> web.Application:
    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        sink.requests += 1
        sink.bytes += len(body)
        sink.last_request = time.time()
        encoding = request.headers.get("Content-Encoding", "")
        asyncio.get_running_loop().call_soon(sink.count, body, encoding)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(sink.stats())

    async def spans(request: web.Request) -> web.Response:
        try:
            start, end = int(request.query["start_ns"]), int(request.query["end_ns"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="start_ns and end_ns, integers") from None
        return web.json_response(sink.window(start, end))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/spans", spans)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        print("otlpsink: loopback addresses only", file=sys.stderr)
        return 2
    sink = Sink()
    print(f"OTLP/HTTP sink; decoding spans: {sink.request_type is not None}", flush=True)
    web.run_app(make_app(sink), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
