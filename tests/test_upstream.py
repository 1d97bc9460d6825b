"""Upstream handling through the whole app, against the fake upstream: the wire format,
errors mapped to codes and to messages a person can read, retries, time-outs and aborts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from streamchat.events import TextChunk, ToolCall
from streamchat.providers.openai_compat import (
    RoundAssembler,
    code_for_status,
    person_message,
    shown_to_person,
)
from streamchat.providers.unconfigured import UnconfiguredProvider
from tests.conftest import MakeClient, StreamReply, parse_events, stream
from tests.fake_upstream import (
    DONE,
    PROCESSING,
    Drop,
    FakeUpstream,
    HttpError,
    Send,
    Silent,
    Sleep,
    chunk,
    paced,
    text_reply,
)

# Every test here runs with the typed chunk decoder and with json.loads alone.
pytestmark = pytest.mark.usefixtures("chunk_decoder")

Client = TestClient[Any, Any]

LOGGED = "upstream failed in conversation"


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(LOGGED)]


def assert_nothing_internal_reaches_the_client(reply: StreamReply, *secrets: str) -> None:
    """No address, port, exception name or raw body in what the client received."""
    raw = reply.raw.decode()
    for secret in secrets:
        assert secret not in raw
    for marker in ("http://", "https://", "127.0.0.1", "Traceback", "Error(", "errno", "<html"):
        assert marker not in raw


async def test_comments_are_skipped_and_done_ends_the_round(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        [
            Send(PROCESSING),
            Send(chunk({"content": "Hi"})),
            Send(PROCESSING),
            Send(chunk({"content": "!"}, "stop")),
            Send(DONE),
            Send(chunk({"content": "after DONE is ignored"})),
        ]
    )

    reply = await stream(client, "hello")

    assert reply.types == ["text", "text", "completion"]
    assert reply.text == "Hi!"


async def test_utf8_character_split_across_reads_survives(
    client: Client, upstream: FakeUpstream
) -> None:
    frame = chunk({"content": "héllo 🚀 日本"})
    cut = frame.index("🚀".encode()) + 2  # inside the four bytes of the rocket
    upstream.add(
        [
            Send(frame[:cut]),
            Sleep(0.05),
            Send(frame[cut:]),
            Sleep(0.05),
            Send(chunk({}, "stop")),
            Send(DONE),
        ]
    )

    reply = await stream(client, "unicode")

    assert reply.text == "héllo 🚀 日本"
    assert "\ufffd" not in reply.text


async def test_crlf_framed_upstream_is_understood(client: Client, upstream: FakeUpstream) -> None:
    frames = [chunk({"content": "a"}), chunk({"content": "b"}, "stop"), DONE]
    upstream.add([Send(f.replace(b"\n", b"\r\n")) for f in frames])

    reply = await stream(client, "crlf")

    assert reply.text == "ab"
    assert reply.types[-1] == "completion"


async def test_mid_stream_error_object_becomes_error_event(
    client: Client, upstream: FakeUpstream
) -> None:
    error = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "error": {"code": 502, "message": "Provider returned error: overloaded"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    upstream.add(
        [Send(chunk({"content": "Par"})), Send(b"data: " + json.dumps(error).encode() + b"\n\n")]
    )

    reply = await stream(client, "fail midway", conversationId="mid")

    assert reply.types == ["text", "error"]
    # The provider's own explanation is safe (no address, no internals): it is shown.
    assert reply.events[-1]["message"].endswith(
        "The provider said: Provider returned error: overloaded"
    )
    assert reply.events[-1]["code"] == "upstream_error"


async def test_invalid_model_400_becomes_invalid_model(
    client: Client, upstream: FakeUpstream
) -> None:
    message = "nope/model is not a valid model ID"
    upstream.add(HttpError(400, {"error": {"message": message, "code": 400}}))

    reply = await stream(client, "hi", model="nope/model")

    assert reply.status == 200
    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "invalid_model"
    assert reply.events[0]["message"] == "The model 'nope/model' is not available."


async def test_401_becomes_upstream_auth(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found", "code": 401}}))

    reply = await stream(client, "hi")

    assert reply.events[0]["code"] == "upstream_auth"
    assert reply.events[0]["message"] == "The model provider rejected the API key."
    assert len(upstream.requests) == 1  # never retried


async def test_402_becomes_insufficient_credits_with_the_upstreams_words(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(402, {"error": {"message": "Insufficient credits", "code": 402}}))

    reply = await stream(client, "hi")

    assert reply.events[0]["code"] == "insufficient_credits"
    assert reply.events[0]["message"].endswith("The provider said: Insufficient credits")


async def test_402_whose_text_holds_a_url_shows_only_our_sentence(
    client: Client, upstream: FakeUpstream
) -> None:
    said = "Insufficient credits. To increase, visit https://openrouter.ai/settings/credits"
    upstream.add(HttpError(402, {"error": {"message": said, "code": 402}}))

    reply = await stream(client, "hi")

    assert reply.events[0]["code"] == "insufficient_credits"
    assert reply.events[0]["message"] == person_message("insufficient_credits")


async def test_429_is_retried_after_retry_after(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(
        HttpError(429, {"error": {"message": "Rate limit exceeded"}}, {"Retry-After": "0.3"}),
        text_reply("finally"),
    )
    started = time.monotonic()

    reply = await stream(client, "hi")

    assert time.monotonic() - started >= 0.3
    assert reply.types == ["text", "completion"]
    assert len(upstream.requests) == 2


async def test_429_beyond_retries_becomes_rate_limited(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(upstream_max_retries=1)
    limited = HttpError(429, {"error": {"message": "Rate limit exceeded"}}, {"Retry-After": "0"})
    upstream.add(limited, limited, text_reply("never"))

    reply = await stream(client, "hi")

    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "rate_limited"
    assert reply.events[0]["message"] == (
        "The model provider is busy (rate limited). Try again in a moment."
    )
    assert len(upstream.requests) == 2


async def test_retry_after_longer_than_the_cap_is_not_waited_for(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(429, {"error": {"message": "slow down"}}, {"Retry-After": "3600"}))

    reply = await stream(client, "hi")

    assert reply.events[0]["code"] == "rate_limited"
    assert len(upstream.requests) == 1


async def test_502_is_retried_then_reported(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(upstream_max_retries=1)
    bad = HttpError(502, "<html>Bad Gateway</html>", {"Retry-After": "0"})
    upstream.add(bad, bad)

    reply = await stream(client, "hi")

    assert len(upstream.requests) == 2
    assert reply.events[0]["code"] == "upstream_error"
    assert reply.events[0]["message"] == person_message("upstream_error")


async def test_dropped_connection_becomes_error_event(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add([Send(chunk({"content": "Hello"})), Sleep(0.05), Drop()])

    reply = await stream(client, "hi", conversationId="drop")

    assert reply.types == ["text", "error"]
    assert reply.events[-1]["code"] == "upstream_error"
    assert "dropped" in reply.events[-1]["message"]


async def test_stream_that_ends_without_finish_is_an_error(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add([Send(chunk({"content": "Hel"}))])

    reply = await stream(client, "hi")

    assert reply.types == ["text", "error"]
    assert reply.events[-1]["code"] == "upstream_error"


async def test_stalled_upstream_times_out(make_client: MakeClient, upstream: FakeUpstream) -> None:
    client = await make_client(upstream_read_timeout_seconds=0.3)
    upstream.add([Send(chunk({"content": "Hel"})), Sleep(5)])
    started = time.monotonic()

    reply = await stream(client, "hi")

    assert reply.types == ["text", "error"]
    assert reply.events[-1]["code"] == "timeout"
    assert 0.3 <= time.monotonic() - started < 2
    assert await asyncio.wait_for(upstream.disconnected.wait(), 1)


async def test_upstream_that_never_sends_headers_times_out(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(upstream_read_timeout_seconds=0.3)
    upstream.add(Silent(5))
    started = time.monotonic()

    reply = await stream(client, "hi")

    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "timeout"
    assert time.monotonic() - started < 2


async def test_unreachable_upstream_is_reported(make_client: MakeClient) -> None:
    client = await make_client(openrouter_base_url="http://127.0.0.1:9/api/v1")

    reply = await stream(client, "hi")

    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "upstream_unreachable"
    assert reply.events[0]["message"] == (
        "The model provider could not be reached. Try again in a moment."
    )


async def test_failed_turn_leaves_a_history_the_next_turn_can_send(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        [Send(chunk({"content": "Partial"})), Drop()],
        text_reply("ok"),
    )

    await stream(client, "first", conversationId="after-fail")
    await stream(client, "second", conversationId="after-fail")

    messages = upstream.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Partial"


async def test_client_disconnect_aborts_the_upstream_within_a_second(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*[f"token{i} " for i in range(200)]), 0.05))

    response = await client.post("/api/stream", json={"message": "long", "conversationId": "gone"})
    first = await response.content.readuntil(b"\n\n")
    assert b"event: text" in first
    response.close()
    left = time.monotonic()

    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)

    assert upstream.disconnected_at is not None
    assert upstream.disconnected_at - left < 1.0
    # the abandoned turn still left a valid history behind
    await asyncio.sleep(0.05)
    history = await (await client.get("/api/conversation/gone")).json()
    assert [m["role"] for m in history["messages"]] == ["system", "user", "assistant"]


async def test_client_disconnect_while_upstream_is_silent_aborts_it(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add([Send(PROCESSING), Sleep(10)])

    async with aiohttp.ClientSession() as session:
        url = client.make_url("/api/stream")
        response = await session.post(url, json={"message": "slow"})
        assert response.status == 200
        await asyncio.sleep(0.2)
        response.close()
        left = time.monotonic()

        await asyncio.wait_for(upstream.disconnected.wait(), 1.0)

    assert upstream.disconnected_at is not None
    assert upstream.disconnected_at - left < 1.0


def test_round_assembler_joins_tool_call_fragments_by_index() -> None:
    assembler = RoundAssembler()
    fragments: list[dict[str, Any]] = [
        {"index": 1, "id": "c2", "function": {"name": "divide", "arguments": ""}},
        {"index": 0, "id": "c1", "function": {"name": "add", "arguments": '{"a"'}},
        {"index": 1, "function": {"arguments": '{"a":1,'}},
        {"index": 0, "function": {"arguments": ":1,"}},
        {"index": 1, "function": {"arguments": '"b":0}'}},
        {"index": 0, "function": {"arguments": '"b":2}'}},
    ]
    for fragment in fragments:
        assembler.feed({"choices": [{"delta": {"tool_calls": [fragment]}}]})

    assert assembler.tool_calls() == [
        ToolCall("c1", "add", '{"a":1,"b":2}'),
        ToolCall("c2", "divide", '{"a":1,"b":0}'),
    ]


def test_round_assembler_reads_text_usage_model_and_id() -> None:
    assembler = RoundAssembler()

    text = assembler.feed({"id": "g1", "model": "m/x", "choices": [{"delta": {"content": "hi"}}]})
    assembler.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    assembler.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    assert text == TextChunk("hi")
    finish = assembler.finish()
    assert (finish.reason, finish.model, finish.id) == ("stop", "m/x", "g1")
    assert finish.usage is not None
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (3, 2)
    assert finish.usage.cost is None


def test_status_codes_map_to_error_codes() -> None:
    assert code_for_status(400, "x is not a valid model ID") == "invalid_model"
    assert code_for_status(404, "No endpoints found for model y") == "invalid_model"
    assert code_for_status(400, "messages: bad") == "invalid_request"
    assert code_for_status(401) == "upstream_auth"
    assert code_for_status(429) == "rate_limited"
    assert code_for_status(503) == "upstream_error"


def test_parse_events_reads_our_own_frames() -> None:
    raw = (
        b'id: 1:0\nevent: text\ndata: {"type":"text","chunkIndex":0,"elapsedMs":1,"content":"a",'
        b'"textDelta":"a"}\n\n: ping\n\n'
    )

    assert parse_events(raw)[0]["content"] == "a"


async def test_more_concurrent_streams_than_aiohttps_default_connection_limit(
    client: Client, upstream: FakeUpstream
) -> None:
    streams = 120  # aiohttp's connector allows 100 connections by default
    upstream.add(*(paced(text_reply("a", "b"), 0.2) for _ in range(streams)))
    url = client.make_url("/api/stream")

    async def one(session: aiohttp.ClientSession, i: int) -> bytes:
        async with session.post(url, json={"message": f"n{i}"}) as response:
            return await response.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        bodies = await asyncio.gather(*(one(session, i) for i in range(streams)))

    assert upstream.most_active == streams
    assert all(body.count(b"event: completion") == 1 for body in bodies)


INTERNAL = "connect ECONNREFUSED 10.0.0.7:443 (https://internal.example/v1) ConnectionRefusedError"

# Each failure: the fake upstream's replies, settings, and what the server log must say.
FAILURES: dict[str, tuple[list[Any], dict[str, Any], str]] = {
    "unreachable": ([], {"openrouter_base_url": "http://127.0.0.1:9/api/v1"}, "127.0.0.1:9"),
    "401": (
        [HttpError(401, {"error": {"message": "No auth credentials found", "code": 401}})],
        {},
        "No auth credentials found",
    ),
    "502-page": (
        [HttpError(502, f"<html>Traceback: {INTERNAL}</html>")],
        {"upstream_max_retries": 0},
        INTERNAL,
    ),
    "400-internal-text": (
        [HttpError(400, {"error": {"message": INTERNAL}})],
        {},
        INTERNAL,
    ),
    "error-object": (
        [
            [
                Send(chunk({"content": "Hi"})),
                Send(b'data: {"error": {"message": "%s"}}\n\n' % INTERNAL.encode()),
            ]
        ],
        {},
        INTERNAL,
    ),
    "not-json": ([[Send(b"data: <html>" + INTERNAL.encode() + b"\n\n")]], {}, "10.0.0.7:443"),
    "dropped": ([[Send(chunk({"content": "Hi"})), Sleep(0.05), Drop()]], {}, "{upstream}"),
    "stalled": (
        [[Send(chunk({"content": "Hi"})), Sleep(5)]],
        {"upstream_read_timeout_seconds": 0.3},
        "{upstream}",
    ),
    "no-headers": ([Silent(5)], {"upstream_read_timeout_seconds": 0.3}, "{upstream}"),
}


@pytest.mark.parametrize("failure", FAILURES)
async def test_an_upstream_failure_shows_a_person_no_internals_and_logs_them_once(
    failure: str,
    make_client: MakeClient,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies, overrides, logged = FAILURES[failure]
    upstream.add(*replies)
    client = await make_client(**overrides)
    address = urlsplit(upstream.base_url).netloc

    with caplog.at_level(logging.WARNING):
        reply = await stream(client, "hi", conversationId="conv-err")

    assert reply.types[-1] == "error"
    assert "model provider" in reply.events[-1]["message"]
    assert_nothing_internal_reaches_the_client(reply, address, "10.0.0.7", "ECONNREFUSED")
    logs = failure_logs(caplog)
    assert len(logs) == 1
    assert "conv-err" in logs[0]
    assert reply.events[-1]["code"] in logs[0]
    assert logged.format(upstream=address) in logs[0]


def test_upstream_words_are_shown_only_when_safe() -> None:
    assert shown_to_person("Insufficient credits") == "Insufficient credits"
    assert shown_to_person("  Provider returned\terror:  overloaded ") == (
        "Provider returned error: overloaded"
    )
    for unsafe in (
        "see https://openrouter.ai/settings/credits",
        "upstream at localhost:8080 failed",
        "from 192.168.1.20",
        "bound to [::1]",
        "ClientConnectorError: cannot connect",
        "[Errno 111] Connection refused",
        "Traceback (most recent call last)",
        "<html>Bad Gateway</html>",
        "line one\nline two",
        "x" * 400,
    ):
        assert shown_to_person(unsafe) == "", unsafe


def test_person_messages_name_the_model_and_keep_the_401_text_out() -> None:
    assert person_message("invalid_model", model="x/y") == "The model 'x/y' is not available."
    assert person_message("upstream_auth", said="Bad key abc", status=401) == (
        "The model provider rejected the API key."
    )
    assert person_message("upstream_auth", said="Input was flagged", status=403) == (
        "The model provider refused this request. The provider said: Input was flagged"
    )
    assert person_message("rate_limited", said="Slow down", status=429) == (
        "The model provider is busy (rate limited). Try again in a moment."
    )


async def test_no_key_in_a_container_says_docker_run_e(make_client: MakeClient) -> None:
    client = await make_client(UnconfiguredProvider(in_container=True))

    reply = await stream(client, "Hello!")

    assert reply.events[0]["code"] == "no_api_key"
    assert "-e OPENROUTER_API_KEY=" in reply.events[0]["message"]
    assert ".env" not in reply.events[0]["message"]


async def test_no_key_outside_a_container_points_at_env(make_client: MakeClient) -> None:
    client = await make_client(UnconfiguredProvider(in_container=False))

    reply = await stream(client, "Hello!")

    assert "OPENROUTER_API_KEY" in reply.events[0]["message"]
    assert ".env" in reply.events[0]["message"]
