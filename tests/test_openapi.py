"""`/openapi.json`: every route described, every event and body matching its model, and a
property-based run of thousands of generated requests against a live server.

The event models of `events_schema` are checked against `events.to_wire()` for every event type
(and against the fast frames of the native dialect), so the document and the wire cannot drift.
Then schemathesis reads the document the server serves and sends every operation generated
requests, valid ones and invalid ones (wrong types, strings past their limits, hostile
characters, unexpected parameters): no answer may be a 5xx, and every answer must match the
document: its status, its content type, its body and its headers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterator
from typing import Any, get_args

import pytest
import schemathesis
from aiohttp import web
from pydantic import TypeAdapter, ValidationError
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from streamchat import events
from streamchat import events_schema as wire
from streamchat.openapi import document
from streamchat.protocols.native import frame
from streamchat.requests import NOT_BLANK_PATTERN, ChatRequest
from streamchat.web import RUNNER, create_app
from tests.conftest import MakeClient, make_settings, parse_events, stream
from tests.fake_upstream import FakeUpstream, text_reply, tool_reply
from tests.test_hostile_input import Echo

EVENT = TypeAdapter(wire.StreamEvent)
USAGE = events.Usage(10, 5, 15, 0.0001)

# Every event type, with its optional fields set and left out.
EXAMPLES: list[events.Event] = [
    events.TextChunk("Hello"),
    events.TextChunk(""),
    events.ToolApprovalRequired("divide", "call_2", '{"a": 1, "b": 0}'),
    events.ToolExecuting("add", "call_1", '{"a": 25, "b": 17}'),
    events.ToolCompleted("add", "call_1", '{"a": 25, "b": 17}', "42", 0.4),
    events.ToolError("divide", "call_2", "{}", "Cannot divide by zero", 0.1),
    events.ArtifactStarted("hello-py", "code", "hello.py", "python"),
    events.ArtifactStarted("notes", "document", "notes.md"),
    events.ArtifactContent("hello-py", "print('hi')\n"),
    events.ArtifactCompleted("hello-py", "code", "hello.py", "python", "print('hi')\n"),
    events.ArtifactCompleted("notes", "document", "notes.md", None, "# Notes", truncated=True),
    events.Completion("stop", "fake/model-1", "gen-1", "conv-1", USAGE, turn=2),
    events.Completion("cancelled", None, None, "conv-1"),
    events.Completion(None, "m", None, "c", events.Usage(1, 2, 3)),
    events.ErrorEvent("The model provider could not be reached.", "upstream_unreachable"),
]


def no_nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return all(v is not None and no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(no_nulls(v) for v in value)
    return True


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_to_wire_of_every_event_matches_its_published_model(event: events.Event) -> None:
    sent = events.to_wire(event, 7, 250.4)

    model = EVENT.validate_python(sent)

    assert model.type == events.event_type(event)
    assert model.model_dump(by_alias=True, exclude_none=True) == sent
    assert no_nulls(sent)


def test_every_event_type_has_a_model_and_every_model_field_is_sent() -> None:
    types = {events.event_type(cls.__new__(cls)) for cls in get_args(events.Event)}
    modelled = {get_args(m.model_fields["type"].annotation)[0]: m for m in wire.EVENT_MODELS}
    assert types == set(modelled)
    assert {events.event_type(e) for e in EXAMPLES} == types

    # The union of what the examples send is every field the models publish.
    for kind, model in modelled.items():
        sent = set().union(
            *(events.to_wire(e, 0, 0.0) for e in EXAMPLES if events.event_type(e) == kind)
        )
        published = {field.alias or name for name, field in model.model_fields.items()}
        assert sent == published, kind


def test_a_field_the_model_does_not_know_is_refused() -> None:
    sent = events.to_wire(events.TextChunk("hi"), 0, 1.0)

    with pytest.raises(ValidationError):
        EVENT.validate_python({**sent, "surprise": 1})
    with pytest.raises(ValidationError):
        EVENT.validate_python({k: v for k, v in sent.items() if k != "textDelta"})


@pytest.mark.parametrize(
    "event",
    [events.TextChunk('quote " and \\ and \n and 🙂'), events.ArtifactContent('a"b', "\x00\u2028")],
)
def test_the_fast_frames_match_the_models_too(event: events.Event) -> None:
    raw = frame(3, 9, event, 12.5)

    (data,) = parse_events(raw)

    assert EVENT.validate_python(data).type == events.event_type(event)
    assert data == events.to_wire(event, 9, 12.5)


# --- the document --------------------------------------------------------------------------------


async def test_the_document_is_served_as_openapi_3_1(make_client: MakeClient) -> None:
    client = await make_client(max_message_chars=500)

    response = await client.get("/openapi.json")
    served = await response.json()

    assert response.status == 200
    assert response.content_type == "application/json"
    assert served["openapi"] == "3.1.0"
    assert served == json.loads(json.dumps(document(make_settings(max_message_chars=500))))
    assert (
        served["components"]["schemas"]["ChatRequest"]["properties"]["message"]["maxLength"] == 500
    )


def test_the_document_is_valid_against_the_openapi_3_1_schema() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    doc = json.loads(json.dumps(document(make_settings())))

    assert [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(doc)] == []


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    app = create_app(make_settings())
    routes = {
        (
            route.method.lower(),
            route.resource.canonical.replace("conversation_id", "conversationId"),
        )
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith("/static")
        and route.resource.canonical != "/"
    }
    described = {
        (method, path)
        for path, item in document(make_settings())["paths"].items()
        for method in item
    }

    assert routes == described


def test_every_reference_resolves() -> None:
    doc = document(make_settings())
    schemas = doc["components"]["schemas"]
    refs = [ref.removeprefix("#/components/schemas/") for ref in _refs(doc)]

    assert refs
    assert set(refs) <= set(schemas)


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "$ref":
                yield inner
            else:
                yield from _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _refs(inner)


def test_the_request_body_is_the_model_the_server_validates_with() -> None:
    published = document(make_settings())["components"]["schemas"]["ChatRequest"]
    model = ChatRequest.model_json_schema()

    assert set(published["properties"]) == set(model["properties"])
    assert published["required"] == model["required"] == ["message"]
    for name, schema in model["properties"].items():
        schema.pop("title")
        # The document adds descriptions, and the checks made after the model (message length).
        assert schema.items() <= published["properties"][name].items(), name


def test_the_published_not_blank_pattern_is_what_the_server_calls_blank() -> None:
    not_blank = re.compile(NOT_BLANK_PATTERN)

    for code in range(0x110000):
        char = chr(code)
        assert bool(not_blank.fullmatch(char)) == bool(char.strip()), hex(code)


def test_every_route_lists_its_error_codes() -> None:
    stream_post = document(make_settings())["paths"]["/api/stream"]["post"]["responses"]

    assert {"200", "400", "401", "403", "408", "413", "429", "500", "503"} <= set(stream_post)
    assert "conversation_too_large" in stream_post["413"]["description"]
    assert "Retry-After" in stream_post["429"]["headers"]
    assert "WWW-Authenticate" in stream_post["401"]["headers"]


# --- the bodies the server sends match their models ---------------------------------------------


async def test_a_real_turn_its_history_and_the_list_match_the_models(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client()
    upstream.add(
        tool_reply(("call_1", "add", {"a": 25, "b": 17}), ("call_2", "nope", "{bad")),
        text_reply(
            'Here: <artifact id="x" type="code" title="x.py" language="python">',
            'print(42)\n</artifact> and <artifact title="cut">half',
        ),
    )
    upstream.add(text_reply("again"))

    reply = await stream(client, "What is 25 + 17?", conversationId="c")
    await stream(client, "more", conversationId="c")
    history = await (await client.get("/api/conversation/c")).json()
    page = await (await client.get("/api/conversations", params={"limit": "1"})).json()
    stopped = await (await client.post("/api/conversation/c/stop")).json()
    cleared = await (await client.delete("/api/conversation/c")).json()
    missing = await client.get("/api/conversation/c")

    seen = {e["type"] for e in reply.events}
    assert {"text", "tool_executing", "tool_completed", "tool_error"} <= seen
    assert {"artifact_started", "artifact_content", "artifact_completed", "completion"} <= seen
    for event in reply.events:
        EVENT.validate_python(event)
    wire.Conversation.model_validate(history)
    assert any("tool_calls" in m for m in history["messages"])
    assert len(history["artifacts"]) == 2
    wire.ConversationList.model_validate(page)
    assert page["next"] is None
    wire.StopResult.model_validate(stopped)
    wire.Cleared.model_validate(cleared)
    wire.ErrorBody.model_validate(await missing.json())


async def test_an_error_event_and_health_match_the_models(make_client: MakeClient) -> None:
    client = await make_client(openrouter_base_url="http://127.0.0.1:9/api/v1")

    reply = await stream(client, "hi")
    ok = await (await client.get("/health")).json()
    assert client.app is not None
    client.app[RUNNER].draining = True
    draining = await client.get("/health")

    assert reply.types == ["error"]
    EVENT.validate_python(reply.events[0])
    wire.Health.model_validate(ok)
    assert draining.status == 503
    assert wire.Health.model_validate(await draining.json()).reason


# --- the property-based run -----------------------------------------------------------------------


LIVE_SETTINGS = make_settings(max_message_chars=2000)


class LiveServer:
    """The app on a free loopback port, in a thread of its own (schemathesis calls it blocking)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(20), "the live server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self.app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    app = create_app(LIVE_SETTINGS, provider=Echo())
    with LiveServer(app) as server:
        yield server


# About 2,300 requests in all (the operations without parameters run out of new cases early);
# FUZZ_EXAMPLES=5000 runs a deeper search.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "300"))
fuzzed = schemathesis.openapi.from_dict(document(LIVE_SETTINGS))
fuzzed.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
)


@fuzzed.parametrize()
def test_generated_requests_get_no_5xx_and_match_the_document(
    case: Any, live_server: LiveServer
) -> None:
    excluded = []
    # Schemathesis's coverage phase makes header values of letters and digits only, so it cannot
    # make a valid `Last-Event-ID` (`2:15`): it sends an invalid one in a case it calls valid.
    if any(c.mode is GenerationMode.NEGATIVE for c in case.meta.components.values()):
        excluded.append(positive_data_acceptance)
    # The other protocols' bodies follow their own specifications (a user message with text in
    # the AI SDK's or AG-UI's shape), which the document describes only as far as their type.
    if case.operation.path in ("/api/chat", "/api/agui", "/v1/chat/completions"):
        excluded.append(positive_data_acceptance)

    case.call_and_validate(
        base_url=live_server.url,
        additional_checks=[error_code_is_documented],
        excluded_checks=excluded,
    )
    SEEN[case.operation.label] = SEEN.get(case.operation.label, 0) + 1


def error_code_is_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """An error's `code` is one the document lists for that route and status."""
    documented = case.operation.definition.raw["responses"].get(str(response.status_code), {})
    codes = documented.get("x-codes")
    if response.status_code < 400 or codes is None:
        return None
    code = response.json()["error"]["code"]
    assert code in codes, f"{case.operation.label} answered {response.status_code} {code!r}"
    return True


SEEN: dict[str, int] = {}


def test_the_generated_run_reached_every_operation_thousands_of_times_in_all() -> None:
    if len(SEEN) < len(list(fuzzed.get_all_operations())):
        pytest.skip("the generated run did not run in full here (deselected or failed)")

    assert sum(SEEN.values()) >= 2000, SEEN
