"""OpenTelemetry traces, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and the `otel` extra installed.

The tree of one turn with a tool:

    POST /api/stream                 (SERVER: the request, parent from an incoming traceparent)
      invoke_agent streamchat        (the turn, in its own task: it copies the request's context)
        chat <model>                 (a model round, with the GenAI attributes)
          POST                       (CLIENT: the upstream request; it sends traceparent)
        execute_tool <tool>          (a tool call; ERROR when it failed)
        chat <model>                 (the round that reads the result)

Off (the default), nothing here imports OpenTelemetry: the app holds `None` instead of a
`Tracing`, and each place that would start a span checks that once. The aiohttp client
instrumentation makes the upstream span and injects `traceparent`; the server span is made by
`Tracing.middleware`, not by the server instrumentation, whose `instrument()` swaps
`web.Application` for the whole process and misses an app built before it is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from streamchat.events import Finish, ModelDelta, Usage
from streamchat.logs import REQUEST_ID
from streamchat.providers.base import ModelRequest, Provider, Stream, UpstreamError
from streamchat.settings import Settings

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Status

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MISSING_EXTRA = (
    "OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not installed: no traces "
    "(pip install 'streamchat[otel]')"
)


def make_tracing(settings: Settings) -> Tracing | None:
    """Traces to `OTEL_EXPORTER_OTLP_ENDPOINT` over OTLP/HTTP; None when unset or not installed."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config  # noqa: F401
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Global too, so libraries that make spans of their own (the MCP client) join the traces.
    trace.set_tracer_provider(provider)
    return Tracing(provider, log_content=settings.log_content)


def describe_tracing(settings: Settings, tracing: Tracing | None) -> list[str]:
    """The start-up banner's line on traces, if any."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return []
    if tracing is None:
        return [f"traces: {MISSING_EXTRA}"]
    return [f"traces: OTLP/HTTP to {endpoint} as {settings.otel_service_name}"]


class Tracing:
    """The app's tracer and the spans of requests, turns, model rounds and tool calls."""

    def __init__(self, provider: TracerProvider, *, log_content: bool = False) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider = provider
        self.log_content = log_content
        self.tracer = provider.get_tracer("streamchat")
        self._context = context
        self._extract = propagate.extract
        self._in_context: Callable[[Span], Context] = trace.set_span_in_context
        self._kind = SpanKind
        self._status, self._error_code = Status, StatusCode.ERROR

    def _error(self, description: str) -> Status:
        return self._status(self._error_code, description)

    def client_trace_config(self) -> aiohttp.TraceConfig:
        """For the app's client session: a span per upstream request, and its `traceparent`."""
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        return create_trace_config(tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Send what is buffered (at app cleanup)."""
        self.provider.shutdown()

    # --- requests --------------------------------------------------------------------------

    def middleware(self) -> Any:
        tracer, extract, kind = self.tracer, self._extract, self._kind.SERVER
        error = self._error

        @web.middleware
        async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else None
            attributes: dict[str, Any] = {
                "http.request.method": request.method,
                "url.path": request.path,
            }
            if route is not None:
                attributes["http.route"] = route
            request_id = REQUEST_ID.get()
            if request_id is not None:
                attributes["streamchat.request_id"] = request_id
            name = f"{request.method} {route}" if route is not None else request.method
            with tracer.start_as_current_span(
                name,
                context=extract(request.headers),
                kind=kind,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                status = 500
                try:
                    response = await handler(request)
                    status = response.status
                    return response
                except web.HTTPException as exc:
                    status = exc.status
                    raise
                except asyncio.CancelledError:
                    status = 499  # the client left; a stream's status was already sent
                    span.set_attribute("streamchat.client_left", True)
                    raise
                except Exception as exc:
                    span.record_exception(exc)
                    raise
                finally:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(error(str(status)))

        return traced

    # --- turns -----------------------------------------------------------------------------

    def start_turn(self, conversation_id: str, model: str) -> TurnSpan:
        """The turn's span, made current in the turn's task (call it there, first thing)."""
        span = self.tracer.start_span(
            "invoke_agent streamchat",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "streamchat",
                "gen_ai.conversation.id": conversation_id,
                "gen_ai.request.model": model,
            },
        )
        token = self._context.attach(self._in_context(span))
        return TurnSpan(self, span, token)

    # --- model rounds ----------------------------------------------------------------------

    def traced(self, provider: Provider) -> Provider:
        """The provider, each of its rounds in a `chat <model>` span."""
        return _TracedProvider(self, provider)

    async def round(self, provider: Provider, request: ModelRequest) -> Stream[list[ModelDelta]]:
        span = self.tracer.start_span(
            f"chat {request.model}",
            kind=self._kind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider.name,
                "gen_ai.request.model": request.model,
            },
        )
        # Current while the round runs, so the upstream request's span and its traceparent
        # hang under it. Only this task reads the pipeline, so it is detached where attached.
        token = self._context.attach(self._in_context(span))
        finish: Finish | None = None
        try:
            async with aclosing(provider.stream(request)) as batches:
                async for batch in batches:
                    if batch and type(batch[-1]) is Finish:  # one look per batch, not per delta
                        finish = batch[-1]
                    yield batch
        except UpstreamError as exc:
            span.set_attribute("error.type", exc.code)
            span.set_status(self._error(exc.code))
            raise
        finally:
            if finish is not None:
                _set_finish(span, finish)
            span.end()
            self._context.detach(token)

    # --- tool calls ------------------------------------------------------------------------

    def start_tool(self, name: str, arguments: str) -> ToolSpan:
        """A tool call's span, current in the task the tool runs in."""
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        if self.log_content:
            attributes["gen_ai.tool.call.arguments"] = arguments
        span = self.tracer.start_span(f"execute_tool {name}", attributes=attributes)
        token = self._context.attach(self._in_context(span))
        return ToolSpan(self, span, token)


class TurnSpan:
    def __init__(self, tracing: Tracing, span: Span, token: Token[Context]) -> None:
        self._tracing, self._span, self._token = tracing, span, token

    def end(self, number: int, outcome: str, usage: Usage | None) -> None:
        span = self._span
        if number:
            span.set_attribute("streamchat.turn", number)
        span.set_attribute("streamchat.outcome", outcome)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if outcome.startswith("error:"):
            code = outcome.removeprefix("error:")
            span.set_attribute("error.type", code)
            span.set_status(self._tracing._error(code))
        span.end()
        self._tracing._context.detach(self._token)


class ToolSpan:
    def __init__(self, tracing: Tracing, span: Span, token: Token[Context]) -> None:
        self._tracing, self._span, self._token = tracing, span, token

    def end(self, outcome: str, error_type: str | None, result: str | None) -> None:
        span = self._span
        if result is not None and self._tracing.log_content:
            span.set_attribute("gen_ai.tool.call.result", result)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(self._tracing._error(outcome))
        span.end()
        self._tracing._context.detach(self._token)


def _set_finish(span: Span, finish: Finish) -> None:
    if finish.model:
        span.set_attribute("gen_ai.response.model", finish.model)
    if finish.id:
        span.set_attribute("gen_ai.response.id", finish.id)
    if finish.reason:
        span.set_attribute("gen_ai.response.finish_reasons", [finish.reason])
    if finish.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", finish.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", finish.usage.completion_tokens)


class _TracedProvider:
    def __init__(self, tracing: Tracing, provider: Provider) -> None:
        self._tracing = tracing
        self._provider = provider
        self.name = provider.name

    def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        return self._tracing.round(self._provider, request)
