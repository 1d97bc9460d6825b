"""Bad input is answered before any stream starts, with a JSON error naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.fake_upstream import FakeUpstream

Client = TestClient[Any, Any]


async def error_of(client: Client, body: bytes | str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/stream", data=body)
    assert response.content_type == "application/json"
    return response.status, (await response.json())["error"]


@pytest.mark.parametrize(
    ("body", "code", "param", "words"),
    [
        ("{not json", "invalid_json", None, "not valid JSON"),
        ("[1, 2]", "invalid_request", None, "JSON object"),
        ("{}", "invalid_request", "message", "'message' is required"),
        ('{"message": ""}', "invalid_request", "message", "must not be empty"),
        ('{"message": "   "}', "invalid_request", "message", "must not be empty"),
        ('{"message": 42}', "invalid_request", "message", "valid string"),
        ('{"message": null}', "invalid_request", "message", "valid string"),
        ('{"message": "hi", "model": 7}', "invalid_request", "model", "valid string"),
        (
            '{"message": "hi", "conversationId": "a b"}',
            "invalid_request",
            "conversationId",
            "1-128",
        ),
        ('{"message": "hi", "conversationId": ""}', "invalid_request", "conversationId", "1-128"),
        (
            '{"message": "hi", "conversationId": "j\\n"}',
            "invalid_request",
            "conversationId",
            "1-128",
        ),
        ('{"message": "hi", "conversationId": 5}', "invalid_request", "conversationId", "string"),
    ],
)
async def test_bad_body_is_a_400_naming_the_problem(
    client: Client, upstream: FakeUpstream, body: str, code: str, param: str | None, words: str
) -> None:
    status, error = await error_of(client, body)

    assert status == 400
    assert error["code"] == code
    assert error.get("param") == param
    assert words in error["message"]
    assert upstream.requests == []


async def test_conversation_id_of_129_characters_is_refused(client: Client) -> None:
    status, error = await error_of(
        client, '{"message": "hi", "conversationId": "%s"}' % ("a" * 129)
    )

    assert status == 400
    assert error["param"] == "conversationId"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/conversation/{}"),
        ("DELETE", "/api/conversation/{}"),
        ("DELETE", "/conversation/{}"),
        ("GET", "/api/conversation/{}/stream"),
        ("POST", "/api/conversation/{}/stop"),
    ],
)
@pytest.mark.parametrize("cid", ["j%0A", "j%0Ak", "%0A", "j%20"])
async def test_a_conversation_id_in_the_path_is_checked_to_its_last_character(
    client: Client, method: str, path: str, cid: str
) -> None:
    """`j` then a newline is not the id `j` (a regular expression's `$` would let it by)."""
    response = await client.request(method, path.format(cid))

    assert response.status == 400
    assert (await response.json())["error"]["param"] == "conversationId"


async def test_body_over_the_cap_is_a_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1000)

    status, error = await error_of(client, '{"message": "%s"}' % ("x" * 2000))

    assert status == 413
    assert error["code"] == "body_too_large"
    assert "1000 bytes" in error["message"]


async def test_message_over_the_length_cap_is_refused(make_client: MakeClient) -> None:
    client = await make_client(max_message_chars=10)

    status, error = await error_of(client, '{"message": "%s"}' % ("x" * 11))

    assert status == 400
    assert error["code"] == "message_too_long"
    assert error["param"] == "message"


async def test_unknown_fields_are_ignored_and_no_content_type_is_needed(
    client: Client, upstream: FakeUpstream
) -> None:
    response = await client.post("/api/stream", data='{"message": "hi", "temperature": 2}')

    assert response.status == 200
    await response.read()
    assert len(upstream.requests) == 1


async def test_unknown_route_and_wrong_method_are_json(client: Client) -> None:
    missing = await client.get("/nope")
    wrong = await client.get("/api/stream")

    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"
