"""Nothing a client sends gets a 5xx, a stack trace or an internal address, or holds the server.

Each test sends exactly what a hostile or careless client would: JSON nested 100,000 deep, an
integer of thousands of digits, a static file name of 5,000 characters, a body announced and
never sent, odd methods and content types, bytes that are not UTF-8, and edge values of every
query parameter and header. Storage is bounded by bytes: one conversation by
`MAX_CONVERSATION_BYTES`, the memory store by `MEMORY_STORE_MAX_BYTES`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamchat.events import Finish, TextChunk
from streamchat.providers.base import ModelRequest, Stream
from streamchat.settings import Settings, SettingsError
from streamchat.stores import Store
from streamchat.stores.base import stored_size
from streamchat.stores.memory import MemoryStore
from streamchat.stores.sqlite import MIGRATIONS, SqliteStore, migrate
from streamchat.web import STORE
from tests.conftest import MakeClient, parse_events, stream
from tests.fake_upstream import FakeUpstream, text_reply
from tests.test_stores import Clock, factory, run_turn  # noqa: F401 (factory: a fixture)

Client = TestClient[Any, Any]


class Echo:
    """A provider that answers at once with the length of what it was sent."""

    name = "echo"

    async def stream(self, request: ModelRequest) -> Stream[list[Any]]:
        yield [TextChunk(f"got {len(request.messages)} messages")]
        yield [Finish("stop", request.model)]


async def error_of(response: Any) -> dict[str, Any]:
    """The JSON error of a response, checking that it leaks nothing of the server."""
    assert 400 <= response.status < 500, response.status
    assert response.content_type == "application/json"
    raw = await response.text()
    for leak in ("Traceback", 'File "', "/streamchat/", "127.0.0.1", "localhost"):
        assert leak not in raw
    error: dict[str, Any] = json.loads(raw)["error"]
    assert error["message"] and error["code"]
    return error


# --- the chat body -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"message": "x", "n": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deeply"),
        (b'{"message": "x", "n": ' + b"9" * 5_000 + b"}", "too many digits"),
        (b'{"message": "x", "model": ' + b"1" * 5_000 + b"}", "too many digits"),
        (b'{"message": "x", "n": -' + b"1" * 100_000 + b"}", "too many digits"),
        (b'{"message": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"message": "a\x00b"}', "not valid JSON"),
        (b"\x00\x00\x00", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
    ids=[
        "nested-100k",
        "nested-5k-in-an-unknown-field",
        "5000-digit-integer",
        "5000-digit-model",
        "100000-digit-negative",
        "not-utf8",
        "raw-nul",
        "only-nuls",
        "empty",
    ],
)
async def test_hostile_json_is_a_400_before_any_stream(
    client: Client, upstream: FakeUpstream, body: bytes, words: str
) -> None:
    response = await client.post("/api/stream", data=body)

    error = await error_of(response)
    assert response.status == 400
    assert error["code"] == "invalid_json"
    assert words in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"message": "\\ud800"}', "message"),
        ('{"message": "hi \\udfff there"}', "message"),
        ('{"message": "hi", "model": "x\\ud800"}', "model"),
        ('{"message": {"message": "hi"}}', "message"),
        ('{"message": ["hi"]}', "message"),
        ('{"message": "hi", "regenerate": "yes"}', "regenerate"),
        ('{"message": "hi", "conversationId": "../etc/passwd"}', "conversationId"),
        ('{"message": "hi", "conversationId": "a\\u0000b"}', "conversationId"),
        ('{"message": "hi", "model": "%s"}' % ("m" * 257), "model"),
    ],
)
async def test_wrong_types_and_text_that_is_not_unicode_name_the_field(
    client: Client, upstream: FakeUpstream, body: str, param: str
) -> None:
    response = await client.post("/api/stream", data=body)

    error = await error_of(response)
    assert response.status == 400
    assert error["param"] == param
    assert upstream.requests == []


USER = '{"role":"user","content":"hi"}'
AISDK_USER = '{"id":"u1","role":"user","parts":[{"type":"text","text":"hi"}]}'
AGUI = '"threadId":"t1","messages":[{"id":"u1","role":"user","content":"hi"}],"tools":[]'


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", f'{{"model":"m\\ud800","messages":[{USER}]}}', "model"),
        (
            "/v1/chat/completions",
            f'{{"model":"m\\ud800","stream":true,"messages":[{USER}]}}',
            "model",
        ),
        ("/v1/chat/completions", f'{{"model":"{"m" * 257}","messages":[{USER}]}}', "model"),
        ("/api/chat", f'{{"id":"a1","model":"m\\udfff","messages":[{AISDK_USER}]}}', "model"),
        ("/api/agui", f'{{{AGUI},"runId":"r\\ud800"}}', "runId"),
        (
            "/api/agui",
            f'{{{AGUI},"runId":"r1","forwardedProps":{{"model":"m\\ud800"}}}}',
            "forwardedProps.model",
        ),
        (
            "/api/agui",
            f'{{{AGUI},"runId":"r1","forwardedProps":{{"model":7}}}}',
            "forwardedProps.model",
        ),
    ],
    ids=[
        "openai",
        "openai-stream",
        "openai-long-model",
        "aisdk",
        "agui-run-id",
        "agui-model",
        "agui-model-not-a-string",
    ],
)
async def test_every_protocol_refuses_a_model_or_id_it_could_not_send_back(
    make_client: MakeClient, upstream: FakeUpstream, path: str, body: str, param: str
) -> None:
    # A lone surrogate has no UTF-8: taken in, it broke the stream off before its first frame,
    # and as a metrics label it failed every later scrape of /metrics.
    client = await make_client(metrics=True)
    upstream.add(text_reply("ok"))

    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})

    error = await error_of(response)
    assert response.status == 400
    assert error["param"] == param
    assert upstream.requests == []
    assert (await client.get("/metrics")).status == 200


async def test_an_escaped_nul_in_a_message_is_just_a_character(make_client: MakeClient) -> None:
    client = await make_client(provider=Echo())

    reply = await stream(client, "a\x00b", conversationId="nul")
    history = await (await client.get("/api/conversation/nul")).json()

    assert reply.types[-1] == "completion"
    assert history["messages"][1]["content"] == "a\x00b"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "image/png",
        "",
        "nonsense/;;;",
    ],
)
async def test_any_content_type_is_read_as_json(make_client: MakeClient, content_type: str) -> None:
    client = await make_client(provider=Echo())

    good = await client.post(
        "/api/stream", data=b'{"message": "hi"}', headers={"Content-Type": content_type}
    )
    await good.read()
    form = await client.post(
        "/api/stream", data=b"message=hi", headers={"Content-Type": content_type}
    )

    assert good.status == 200
    assert (await error_of(form))["code"] == "invalid_json"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "PROPFIND", "TRACE", "MKCOL"])
async def test_unknown_methods_are_a_json_405(client: Client, method: str) -> None:
    for path in ("/api/stream", "/api/conversation/c", "/health", "/openapi.json"):
        response = await client.request(method, path)

        assert response.status == 405
        assert (await error_of(response))["code"] == "method_not_allowed"


# --- a body that never arrives --------------------------------------------------------------------


async def raw_exchange(client: Client, data: bytes, wait: float) -> tuple[bytes, float]:
    """Send bytes on a fresh connection; everything the server says until it closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    ("path", "sent"),
    [("/api/stream", b""), ("/api/stream", b'{"mess'), ("/api/conversation/c/stop", b"{")],
)
async def test_a_stalled_body_is_a_408_and_the_connection_is_closed(
    make_client: MakeClient, upstream: FakeUpstream, path: str, sent: bytes
) -> None:
    client = await make_client(request_body_timeout_seconds=0.5)
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode()

    # reader.read() returns only once the server has closed the connection.
    answer, took = await raw_exchange(client, head + sent, wait=10)

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_timeout"
    assert 0.4 < took < 8
    assert upstream.requests == []


async def test_a_slow_but_steady_body_within_the_timeout_is_served(
    make_client: MakeClient,
) -> None:
    client = await make_client(provider=Echo(), request_body_timeout_seconds=5)
    body = b'{"message": "hi", "conversationId": "slow"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    for start in range(0, len(body), 10):
        writer.write(body[start : start + 10])
        await writer.drain()
        await asyncio.sleep(0.05)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"event: completion" in answer


async def test_a_body_over_the_cap_is_a_413_on_any_route(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1000)

    for path in ("/api/stream", "/api/conversation/c/stop"):
        response = await client.post(path, data=b"x" * 5000)

        assert response.status == 413
        assert (await error_of(response))["code"] == "body_too_large"


async def test_huge_headers_are_refused_without_a_5xx(client: Client) -> None:
    one_big = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    many = b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
    many += b"".join(b"X-%d: a\r\n" % n for n in range(500)) + b"\r\n"

    for request in (one_big, many):
        answer, _ = await raw_exchange(client, request, wait=5)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
        assert b"Traceback" not in answer


# --- static files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a" * 5000,
        "nope.js",
        "vendor",
        "vendor/",
        "%2e%2e/%2e%2e/pyproject.toml",
        "..%2f..%2fpyproject.toml",
        "app.js%00.png",
        "%ff%fe",
        "app.js/",
        "./app.js/../../settings.py",
    ],
    ids=lambda name: name[:20],
)
async def test_a_static_file_that_is_not_there_is_a_json_404(client: Client, name: str) -> None:
    response = await client.get("/static/" + name)

    assert response.status == 404
    assert (await error_of(response))["code"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [
        {"Range": "bytes=99999999-"},
        {"Range": "bytes=garbage"},
        {"Range": "bytes=5-2"},
        {"If-Match": '"nothing-like-it"'},
        {"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"},
        {"If-Range": "Mon, 01 Jan 1990 00:00:00 GMT", "Range": "bytes=0-3"},
    ],
)
async def test_range_and_precondition_headers_get_the_whole_file(
    client: Client, headers: dict[str, str]
) -> None:
    for path in ("/static/app.js", "/"):
        response = await client.get(path, headers=headers)

        assert response.status == 200
        assert len(await response.read()) == response.content_length


async def test_a_static_file_still_revalidates(client: Client) -> None:
    first = await client.get("/static/app.js")
    again = await client.get("/static/app.js", headers={"If-None-Match": first.headers["ETag"]})

    assert first.status == 200
    assert again.status == 304
    assert first.headers["Cache-Control"] == "no-cache"


# --- query parameters and headers at their edges --------------------------------------------------


@pytest.mark.parametrize(
    "limit",
    ["0", "101", "-1", "1.5", "", "\uff11", "1_0", "9" * 5000, "0x10", " 5", "5\x00", "nan"],
)
async def test_a_bad_limit_is_a_400(client: Client, limit: str) -> None:
    response = await client.get("/api/conversations", params={"limit": limit})

    assert response.status == 400
    assert (await error_of(response))["param"] == "limit"


@pytest.mark.parametrize(
    "before",
    [
        "x",
        "~",
        "1" * 5000 + "~x",
        "~" * 300,
        "1.0",
        "abc~x",
        "nan~x",
        "inf~x",
        "-inf~",
        "1.0~a b",
        "1.0~x\n",
        "\uff11.0~x",
        "1.0~" + "a" * 129,
    ],
    ids=lambda before: repr(before[:12]),
)
async def test_a_cursor_this_server_did_not_make_is_a_400(client: Client, before: str) -> None:
    response = await client.get("/api/conversations", params={"before": before})

    assert response.status == 400
    assert (await error_of(response))["param"] == "before"


async def test_a_cursor_past_every_conversation_is_an_empty_page(make_client: MakeClient) -> None:
    client = await make_client(provider=Echo())
    await stream(client, "hi", conversationId="one")

    for before in ("0.0~a", "1e-300~a", "99999999999.5~zzz"):
        response = await client.get("/api/conversations", params={"before": before})
        page = await response.json()
        assert response.status == 200
        assert page["next"] is None
        assert len(page["conversations"]) == (1 if before.startswith("9") else 0)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("0:0", 204),
        ("999999999:999999999", 204),
        ("1:999999999", 204),
        ("1:-1", 400),
        ("1:", 400),
        (":1", 400),
        ("a:b", 400),
        ("1234567890:1", 400),
        ("1:1:1", 400),
        ("\uff11:1", 400),
        ("1" * 5000, 400),
    ],
)
async def test_last_event_id_edge_values(make_client: MakeClient, value: str, status: int) -> None:
    client = await make_client(provider=Echo())
    await stream(client, "hi", conversationId="c")
    url = "/api/conversation/c/stream"

    by_query = await client.get(url, params={"lastEventId": value})
    headers = {"Last-Event-ID": value} if value.isascii() else {}
    by_header = await client.get(url, headers=headers) if headers else by_query

    for response in (by_query, by_header):
        assert response.status == status
        if status == 400:
            assert (await error_of(response))["param"] == "lastEventId"


async def test_a_malformed_last_event_id_is_refused_even_beside_a_good_one(
    make_client: MakeClient,
) -> None:
    client = await make_client(provider=Echo())
    await stream(client, "hi", conversationId="c")
    url = "/api/conversation/c/stream"

    both = await client.get(url, params={"lastEventId": "x"}, headers={"Last-Event-ID": "1:0"})
    empty = await client.get(url, params={"lastEventId": ""}, headers={"Last-Event-ID": "1:0"})
    spaced = await client.get(url, params={"lastEventId": " 1:0"})

    assert (await error_of(both))["param"] == "lastEventId"
    assert empty.status == 200  # empty is absent: the header's id, then the rest of the turn
    assert parse_events(await empty.read())[-1]["type"] == "completion"
    assert spaced.status == 400


@pytest.mark.parametrize(
    "conversation_id", ["a" * 129, "a%20b", "%00", "a%2Fb", "%C3%A9", "..%2F..", "%ff"]
)
async def test_bad_conversation_ids_in_the_path_are_a_4xx(
    client: Client, conversation_id: str
) -> None:
    for method, suffix in (("GET", ""), ("GET", "/stream"), ("POST", "/stop"), ("DELETE", "")):
        response = await client.request(method, f"/api/conversation/{conversation_id}{suffix}")

        assert response.status in (400, 404)
        await error_of(response)


# --- storage bounded by bytes ---------------------------------------------------------------------


@pytest.fixture
async def store(factory: Any) -> Any:  # noqa: F811 (factory comes from test_stores)
    made: Store = factory()
    await made.open()
    yield made
    await made.close()


async def test_every_store_counts_the_bytes_a_conversation_holds(store: Store) -> None:
    assert await store.stored_bytes("me", "c") == 0
    await run_turn(store, "c", "hello", "a reply with ünïcödé")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "be brief", "and a file")
        artifact = {"artifactId": "a", "title": "café", "content": "naïve \x7f 🚀", "turn": 2}
        await store.end_turn("me", "c", begun.number, [], [artifact], "completed")
    conversation = await store.load("me", "c")
    assert conversation is not None

    counted = await store.stored_bytes("me", "c")

    # Every store gives the same count: the messages and artifacts as JSON, in UTF-8.
    values = [*conversation.messages, *conversation.artifacts]
    assert counted == sum(stored_size(value) for value in values)
    assert await store.stored_bytes("someone else", "c") == 0


async def test_a_regenerated_turn_gives_back_its_bytes(store: Store) -> None:
    await run_turn(store, "c", "one", "ok")
    await run_turn(store, "c", "two", "a much longer reply " * 100)
    await run_turn(store, "same", "one", "ok")
    await run_turn(store, "same", "two", "ok")

    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "be brief", "two", regenerate=True)
        await store.end_turn(
            "me", "c", begun.number, [{"role": "assistant", "content": "ok"}], [], "completed"
        )

    assert await store.stored_bytes("me", "c") == await store.stored_bytes("me", "same")


async def test_artifacts_count_and_a_delete_forgets_the_bytes(store: Store) -> None:
    await run_turn(store, "c", "one", "ok")
    before = await store.stored_bytes("me", "c")
    async with store.lock("me", "c"):
        begun = await store.begin_turn("me", "c", "", "two")
        artifact = {"artifactId": "a", "artifactType": "code", "title": "t", "content": "x" * 999}
        await store.end_turn("me", "c", begun.number, [], [{**artifact, "turn": 2}], "completed")

    assert await store.stored_bytes("me", "c") > before + 1000
    await store.delete("me", "c")
    assert await store.stored_bytes("me", "c") == 0


def test_migration_3_counts_the_conversations_already_stored(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrate(db, MIGRATIONS[:2])
    db.execute(
        "INSERT INTO conversations (owner, id, title, created_at, updated_at) VALUES"
        " ('me', 'c', 't', 1, 1)"
    )
    bodies = [json.dumps({"role": "user", "content": "héllo"}, ensure_ascii=False), "{}"]
    for seq, body in enumerate(bodies):
        db.execute("INSERT INTO messages VALUES ('me', 'c', ?, 1, 'user', ?)", (seq, body))
    db.execute("INSERT INTO artifacts VALUES ('me', 'c', 0, 1, 'a', '{\"x\": 1}')")

    assert migrate(db) == len(MIGRATIONS) - 2

    (counted,) = db.execute("SELECT bytes FROM conversations").fetchone()
    assert counted == sum(len(body.encode()) for body in bodies) + len(b'{"x": 1}')
    db.close()


async def test_sqlite_keeps_its_count_across_a_restart(tmp_path: Path) -> None:
    first = SqliteStore(str(tmp_path / "chat.db"))
    await first.open()
    await run_turn(first, "c", "hello", "there")
    counted = await first.stored_bytes("me", "c")
    await first.close()

    second = SqliteStore(str(tmp_path / "chat.db"))
    await second.open()
    assert await second.stored_bytes("me", "c") == counted > 0
    await second.close()


async def test_the_memory_store_forgets_the_least_recently_used_past_its_bytes() -> None:
    store = MemoryStore(ttl_seconds=3600, max_conversations=1000, max_bytes=5000, clock=Clock())
    for cid in ("a", "b", "c", "d"):
        await run_turn(store, cid, "x" * 1500)

    assert await store.load("me", "a") is None
    assert await store.load("me", "d") is not None
    assert store.total_bytes <= 5000
    assert store.total_bytes == sum([await store.stored_bytes("me", c) for c in "abcd"])


async def test_the_memory_store_keeps_a_conversation_whose_turn_runs_even_past_its_bytes() -> None:
    store = MemoryStore(ttl_seconds=3600, max_conversations=1000, max_bytes=1000, clock=Clock())
    async with store.lock("me", "busy"):
        await store.begin_turn("me", "busy", "", "y" * 5000)
        await run_turn(store, "other", "hi")

        assert await store.load("me", "busy") is not None
    await store.delete("me", "busy")
    assert store.total_bytes == await store.stored_bytes("me", "other")


async def test_many_large_requests_stay_within_the_memory_bound(make_client: MakeClient) -> None:
    client = await make_client(provider=Echo(), memory_store_max_bytes=1_000_000)
    for n in range(60):
        reply = await stream(client, "🙂" * 15_000, conversationId=f"c{n}")
        assert reply.types[-1] == "completion"

    assert client.app is not None
    memory = getattr(client.app[STORE], "timed", client.app[STORE])  # under the metrics' timing
    assert isinstance(memory, MemoryStore)
    assert memory.total_bytes <= 1_000_000
    assert 5 <= len(memory) < 60


async def test_a_conversation_over_its_byte_cap_is_refused_before_any_stream(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_conversation_bytes=20_000)
    first = await stream(client, "x" * 15_000, conversationId="big")
    second = await stream(client, "y" * 15_000, conversationId="big")
    sent = len(upstream.requests)

    refused = await client.post("/api/stream", json={"message": "more", "conversationId": "big"})
    error = await error_of(refused)
    fresh = await stream(client, "hello", conversationId="small")

    assert first.status == second.status == 200  # the turn that crossed the cap runs
    assert refused.status == 413
    assert error["code"] == "conversation_too_large"
    assert error["param"] == "conversationId"
    assert "start a new conversation" in error["message"]
    assert len(upstream.requests) == sent + 1  # only the fresh conversation's turn
    assert fresh.types[-1] == "completion"


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"REQUEST_BODY_TIMEOUT_SECONDS": "0"}, "REQUEST_BODY_TIMEOUT_SECONDS must be more"),
        ({"MAX_CONVERSATION_BYTES": "0"}, "MAX_CONVERSATION_BYTES must be at least 1"),
        ({"MEMORY_STORE_MAX_BYTES": "-5"}, "MEMORY_STORE_MAX_BYTES must be at least 1"),
    ],
)
def test_the_bounds_refuse_values_that_would_disable_them(
    environ: dict[str, str], words: str
) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(environ)


def test_the_bounds_default_to_the_documented_values() -> None:
    settings = Settings.from_env({})

    assert settings.request_body_timeout_seconds == 10
    assert settings.max_conversation_bytes == 2 * 1024 * 1024
    assert settings.memory_store_max_bytes == 256 * 1024 * 1024
