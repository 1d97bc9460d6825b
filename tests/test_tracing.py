"""OpenTelemetry traces: the span tree of a turn, its attributes, errors, and traceparent upstream.

The spans go to the SDK's in-memory exporter through a `Tracing` handed to `create_app`, as a
test swaps a transport: the code that makes them is the code that runs in production.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from streamchat.settings import Settings
from streamchat.tools.registry import ToolRegistry
from streamchat.toolsets.base import CombinedToolset
from streamchat.toolsets.functions import FunctionToolset
from streamchat.tracing import MISSING_EXTRA, Tracing, describe_tracing, make_tracing
from streamchat.web import create_app
from tests.conftest import ROOT, make_settings, stream
from tests.fake_upstream import FakeUpstream, HttpError, text_reply, tool_reply

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

Client = TestClient[Any, Any]
MODEL = Settings().default_model
MakeTraced = Callable[..., Any]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


@pytest.fixture
def make_traced(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> MakeTraced:
    async def make(tools: Any = None, **overrides: Any) -> Client:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        settings = make_settings(openrouter_base_url=upstream.base_url, **overrides)
        tracing = Tracing(provider, log_content=settings.log_content)
        return await aiohttp_client(create_app(settings, tools=tools, tracing=tracing))

    return make


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_a_tool_turn_is_request_then_turn_then_round_tool_round(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced()
    upstream.add(tool_reply(("call_1", "multiply", {"a": 6, "b": 7})), text_reply("42"))

    reply = await stream(client, "6 times 7?", conversationId="c")
    spans = list(exporter.get_finished_spans())

    assert reply.types[-1] == "completion"
    (request,) = named(spans, "POST /api/stream")
    (turn,) = named(spans, "invoke_agent streamchat")
    rounds = named(spans, f"chat {MODEL}")
    (tool,) = named(spans, "execute_tool multiply")
    assert request.kind == SpanKind.SERVER
    assert parent_of(turn) == span_id(request)
    assert len(rounds) == 2
    assert all(parent_of(span) == span_id(turn) for span in [*rounds, tool])
    first, second = sorted(rounds, key=lambda span: span.start_time or 0)
    assert (first.start_time or 0) < (tool.start_time or 0) < (second.start_time or 0)
    # One trace from the request down.
    assert len({span.context.trace_id for span in spans if span.context is not None}) == 1

    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/stream"
    assert request.attributes["http.response.status_code"] == 200
    assert turn.attributes is not None
    assert turn.attributes["gen_ai.conversation.id"] == "c"
    assert turn.attributes["streamchat.outcome"] == "completed"
    assert turn.attributes["streamchat.turn"] == 1
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["gen_ai.request.model"] == MODEL
    assert first.attributes["gen_ai.response.model"] == "fake/model-1"
    assert first.attributes["gen_ai.usage.input_tokens"] == 10
    assert first.attributes["gen_ai.usage.output_tokens"] == 5
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "multiply"
    assert tool.status.status_code == StatusCode.UNSET
    # Content stays out of the spans unless LOG_CONTENT=1.
    assert "gen_ai.tool.call.arguments" not in tool.attributes


async def test_traceparent_goes_upstream_under_the_round(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced()
    upstream.add(text_reply("hi"))

    await stream(client, "hello")
    spans = list(exporter.get_finished_spans())

    (round_span,) = named(spans, f"chat {MODEL}")
    (upstream_span,) = [
        span for span in spans if span.kind == SpanKind.CLIENT and span.name == "POST"
    ]
    assert parent_of(upstream_span) == span_id(round_span)
    traceparent = upstream.headers[0]["traceparent"]
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert upstream_span.context is not None
    assert int(trace_id, 16) == upstream_span.context.trace_id
    assert int(parent_id, 16) == upstream_span.context.span_id
    assert version == "00"
    assert int(flags, 16) & 1  # sampled


async def test_an_incoming_traceparent_parents_the_request_span(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced()
    upstream.add(text_reply("hi"))
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    response = await client.post(
        "/api/stream",
        json={"message": "hello"},
        headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
    )
    await response.read()
    (request,) = named(list(exporter.get_finished_spans()), "POST /api/stream")

    assert request.context is not None
    assert request.context.trace_id == int(caller_trace, 16)
    assert parent_of(request) == int(caller_span, 16)
    assert request.attributes is not None
    assert request.attributes["streamchat.request_id"] == response.headers["X-Request-Id"]


async def test_upstream_failure_marks_the_round_and_the_turn_as_errors(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced(upstream_max_retries=0)
    upstream.add(HttpError(429, {"error": {"message": "slow down"}}))

    reply = await stream(client, "hello")
    spans = list(exporter.get_finished_spans())

    assert reply.of("error")[0]["code"] == "rate_limited"
    (round_span,) = named(spans, f"chat {MODEL}")
    (turn,) = named(spans, "invoke_agent streamchat")
    for span in (round_span, turn):
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "rate_limited"


def broken_tools() -> CombinedToolset:
    registry = ToolRegistry()

    def explode(times: int) -> int:
        """Always fails: a tool with a bug."""
        raise RuntimeError("the tool broke")

    registry.register(explode)
    return CombinedToolset([FunctionToolset(registry)])


async def test_a_failing_tool_call_has_an_error_status_with_its_exception_type(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced(tools=broken_tools())
    upstream.add(tool_reply(("call_1", "explode", {"times": 2})), text_reply("sorry"))

    reply = await stream(client, "explode")
    (tool,) = named(list(exporter.get_finished_spans()), "execute_tool explode")

    assert reply.of("tool_error")
    assert tool.status.status_code == StatusCode.ERROR
    assert tool.attributes is not None
    assert tool.attributes["error.type"] == "RuntimeError"


async def test_with_log_content_the_tool_span_holds_arguments_and_result(
    make_traced: MakeTraced, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    client = await make_traced(log_content=True)
    upstream.add(tool_reply(("call_1", "multiply", {"a": 6, "b": 7})), text_reply("42"))

    await stream(client, "6 times 7?")
    (tool,) = named(list(exporter.get_finished_spans()), "execute_tool multiply")

    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"a": 6, "b": 7}'
    assert tool.attributes["gen_ai.tool.call.result"] == "42"


def test_tracing_is_off_without_an_endpoint_and_imports_nothing() -> None:
    code = (
        "import sys\n"
        "from streamchat.settings import Settings\n"
        "from streamchat.web import create_app\n"
        "app = create_app(Settings(store_url='memory://', openrouter_api_key='k'))\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert make_tracing(make_settings()) is None
    assert describe_tracing(make_settings(), None) == []


def test_an_endpoint_without_the_extra_is_said_once_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)

    tracing = make_tracing(settings)

    assert tracing is None
    assert describe_tracing(settings, tracing) == [f"traces: {MISSING_EXTRA}"]
