"""Logs: request ids on every line of a request and its turn, the access line, JSON lines, and
no key, prompt, answer or tool argument in any line unless LOG_CONTENT=1."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from streamchat.logs import make_handler, request_id_from
from streamchat.settings import Settings, SettingsError
from streamchat.tools.calculator import register_calculator
from streamchat.tools.registry import ToolRegistry
from streamchat.toolsets.base import CombinedToolset
from streamchat.toolsets.functions import FunctionToolset
from streamchat.web import create_app
from tests.conftest import StartApp, make_settings
from tests.fake_upstream import FakeUpstream, HttpError, text_reply, tool_reply

Client = TestClient[Any, Any]
UPSTREAM_KEY = "sk-or-v1-upstream-KEY-4242"
API_KEY = "caller-key-ABCDEF-0123456789"
PROMPT = "my PRIVATE question about zebras"
ANSWER = "a SECRET answer about zebras"
TOOL_ARGUMENT = "CONFIDENTIAL-ARGUMENT"


class Captured:
    """What the app logged, through the same handler, filter and formatter `app.py` installs."""

    def __init__(self, log_format: str) -> None:
        self.buffer = io.StringIO()
        self.handler = make_handler(log_format, self.buffer)

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == logger]


@pytest.fixture
def capture() -> Iterator[Callable[[str], Captured]]:
    root = logging.getLogger()
    level = root.level
    made: list[Captured] = []

    def start(log_format: str = "json") -> Captured:
        captured = Captured(log_format)
        root.addHandler(captured.handler)
        made.append(captured)
        return captured

    root.setLevel(logging.INFO)
    yield start
    for captured in made:
        root.removeHandler(captured.handler)
    root.setLevel(level)


def tools_with_a_bug() -> CombinedToolset:
    registry = ToolRegistry()
    register_calculator(registry)

    def lookup(name: str) -> str:
        """Looks a name up; has a bug."""
        raise KeyError("no such entry")

    registry.register(lookup)
    return CombinedToolset([FunctionToolset(registry)])


async def make(aiohttp_client: AiohttpClient, upstream: FakeUpstream, **overrides: Any) -> Client:
    settings = make_settings(
        openrouter_base_url=upstream.base_url,
        openrouter_api_key=UPSTREAM_KEY,
        auth="keys",
        api_keys=f"alice:{API_KEY}",
        **overrides,
    )
    return await aiohttp_client(create_app(settings, tools=tools_with_a_bug()))


async def chat(client: Client, message: str, request_id: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    body = {"message": message, "conversationId": "c"}
    response = await client.post("/api/stream", json=body, headers=headers)
    await response.read()
    return response


def a_tool_turn(upstream: FakeUpstream) -> None:
    upstream.add(
        tool_reply(
            ("call_1", "lookup", {"name": TOOL_ARGUMENT}),
            ("call_2", "multiply", {"a": 6, "b": 7}),
        ),
        text_reply(ANSWER),
    )


async def test_json_lines_parse_and_every_line_of_a_request_and_its_turn_has_its_id(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream)
    captured = capture("json")
    a_tool_turn(upstream)

    response = await chat(client, PROMPT, request_id="req-1234")
    # The test server and the fake upstream keep aiohttp's own access log; app.py turns it off.
    lines = [line for line in captured.lines() if line["logger"].startswith("streamchat")]

    assert response.headers["X-Request-Id"] == "req-1234"
    assert {"streamchat.access", "streamchat.turns", "streamchat.tools"} <= {
        line["logger"] for line in lines
    }
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message", "request_id"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["request_id"] == "req-1234", line


async def test_the_access_line_tells_method_path_status_duration_owner_conversation_outcome(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream)
    captured = capture("json")
    upstream.add(text_reply("fine"))

    await chat(client, "hello")
    missing = await client.get(
        "/api/conversation/nope", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    (turn_line, missing_line) = captured.of("streamchat.access")

    assert turn_line["method"] == "POST"
    assert turn_line["path"] == "/api/stream"
    assert turn_line["status"] == 200
    assert turn_line["duration_ms"] >= 0
    assert turn_line["owner"] == "alice"
    assert turn_line["conversation_id"] == "c"
    assert turn_line["outcome"] == "completed"
    assert turn_line["level"] == "INFO"
    assert missing.status == 404
    assert missing_line["status"] == 404
    assert missing_line["conversation_id"] == "nope"
    assert "outcome" not in missing_line
    assert missing_line["request_id"] == missing.headers["X-Request-Id"]
    (end,) = captured.of("streamchat.turns")
    assert end["outcome"] == "completed"
    assert end["turn"] == 1
    assert end["prompt_tokens"] == 10


async def test_a_tool_bug_is_logged_with_its_exception(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream)
    captured = capture("json")
    a_tool_turn(upstream)

    await chat(client, PROMPT)
    (bug,) = [line for line in captured.of("streamchat.tools") if line["level"] == "ERROR"]

    assert bug["tool"] == "lookup"
    assert bug["error_type"] == "KeyError"
    assert "Traceback" in bug["exception"] and "no such entry" in bug["exception"]


async def test_an_upstream_failure_is_logged_with_its_cause(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream, upstream_max_retries=0)
    captured = capture("json")
    upstream.add(HttpError(503, "proxy says no"))

    response = await chat(client, PROMPT)
    warnings = [line for line in captured.lines() if line["level"] == "WARNING"]

    assert any("answered 503" in line["message"] for line in warnings), warnings
    assert all(line["request_id"] == response.headers["X-Request-Id"] for line in warnings)
    (end,) = captured.of("streamchat.turns")
    assert end["outcome"] == "error:upstream_error"


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_no_key_prompt_answer_or_tool_argument_reaches_a_log_line(
    aiohttp_client: AiohttpClient,
    upstream: FakeUpstream,
    capture: Callable[[str], Captured],
    log_format: str,
) -> None:
    client = await make(aiohttp_client, upstream)
    captured = capture(log_format)
    a_tool_turn(upstream)

    await chat(client, PROMPT)
    await client.get("/api/conversations", headers={"Authorization": "Bearer wrong-key-xyz"})
    text = captured.text

    assert "streamchat.access" in text and "streamchat.turns" in text
    for secret in (UPSTREAM_KEY, API_KEY, "wrong-key-xyz", "PRIVATE", "SECRET", TOOL_ARGUMENT):
        assert secret not in text


async def test_log_content_puts_prompt_answer_and_tool_calls_in_the_logs(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream, log_content=True)
    captured = capture("json")
    a_tool_turn(upstream)

    await chat(client, PROMPT)
    (end,) = captured.of("streamchat.turns")
    calls = {line["tool"]: line for line in captured.of("streamchat.tools") if "arguments" in line}

    assert end["prompt"] == PROMPT
    assert end["answer"] == ANSWER
    assert TOOL_ARGUMENT in calls["lookup"]["arguments"]
    assert calls["multiply"]["result"] == "42"
    # Keys stay out even then.
    assert UPSTREAM_KEY not in captured.text and API_KEY not in captured.text


async def test_text_lines_carry_the_request_id_after_the_logger(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, capture: Callable[[str], Captured]
) -> None:
    client = await make(aiohttp_client, upstream)
    captured = capture("text")
    upstream.add(text_reply("fine"))

    response = await chat(client, "hello")
    access = [line for line in captured.text.splitlines() if "streamchat.access" in line]

    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO streamchat\.access "
        rf"\[{request_id}\] POST /api/stream 200 \d+\.\dms owner=alice conversation=c "
        r"outcome=completed",
        access[0],
    ), access


@pytest.mark.parametrize(
    "sent", [None, "", "has space", "x" * 129, "caf\u00e9", "new\nline", "trailing\n"], ids=repr
)
def test_an_insane_request_id_is_replaced(sent: str | None) -> None:
    made = request_id_from(sent)

    assert made != sent
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_a_sane_request_id_is_kept() -> None:
    for sent in ("a", "req-1234", "x" * 128, "4bf92f35:77b3/4da6"):
        assert request_id_from(sent) == sent


async def test_every_response_has_a_request_id(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream
) -> None:
    client = await make(aiohttp_client, upstream)

    responses = [
        await client.get("/health"),
        await client.get("/static/nowhere.js"),
        await client.get("/api/conversations"),  # 401
    ]
    ids = [response.headers.get("X-Request-Id") for response in responses]

    assert [r.status for r in responses] == [200, 404, 401]
    assert all(ids) and len(set(ids)) == 3


async def test_app_py_writes_json_lines_and_replaces_aiohttps_access_log(
    start_app: StartApp, upstream: FakeUpstream
) -> None:
    server = await start_app(LOG_FORMAT="json")
    upstream.add(text_reply("fine"))
    async with aiohttp.ClientSession() as session:
        body = {"message": PROMPT, "conversationId": "c"}
        headers = {"X-Request-Id": "from-the-proxy-7"}
        async with session.post(f"{server.url}/api/stream", json=body, headers=headers) as r:
            await r.read()
    server.process.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
    output = server.output.decode()

    assert "metrics: GET /metrics" in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "streamchat.access"]
    assert access and access[0]["request_id"] == "from-the-proxy-7"
    assert not [line for line in lines if line["logger"] == "aiohttp.access"]
    assert '"POST /api/stream HTTP/1.1"' not in output  # aiohttp's own access line
    assert PROMPT not in output


def test_log_settings_are_checked_at_start_up() -> None:
    assert Settings.from_env({"LOG_FORMAT": "JSON", "LOG_CONTENT": "1"}).log_format == "json"
    assert Settings.from_env({"LOG_CONTENT": "yes"}).log_content is True
    assert Settings.from_env({}).log_content is False
    for env, named in (
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_CONTENT": "maybe"}, "LOG_CONTENT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ):
        with pytest.raises(SettingsError, match=named):
            Settings.from_env(env)
