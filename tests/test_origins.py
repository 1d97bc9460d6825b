"""Where requests come from: CORS for the origins of CORS_ORIGINS, every other browser origin
refused, and the Host allow-list that closes DNS rebinding."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamchat.origins import make_gate, normal_origin, same_origin, split_host
from streamchat.settings import SettingsError
from tests.conftest import MakeClient, make_settings, parse_events
from tests.fake_upstream import FakeUpstream, text_reply

Client = TestClient[Any, Any]
APP = "https://app.example.com"
EVIL = "https://evil.example"
# What a browser sends with a cross-site form post of enctype text/plain, made to look like JSON.
FORM_BODY = '{"message": "spend the operator\'s credit", "x": "="}'


def own_origin(client: Client) -> str:
    return f"http://127.0.0.1:{client.port}"


async def test_a_preflight_from_an_allowed_origin_is_answered(make_client: MakeClient) -> None:
    client = await make_client(cors_origins=f"{APP}, https://other.example.com")

    response = await client.options(
        "/api/stream",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "last-event-id"} <= allowed
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in headers["Vary"]


async def test_a_preflight_from_any_other_origin_is_refused(make_client: MakeClient) -> None:
    client = await make_client(cors_origins=APP)

    response = await client.options(
        "/api/stream",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )

    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await response.json())["error"]["code"] == "forbidden_origin"


async def test_no_origin_is_allowed_by_default(make_client: MakeClient) -> None:
    client = await make_client()

    response = await client.options(
        "/api/conversations", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )

    assert response.status == 403


async def test_an_allowed_origin_can_read_a_stream_and_its_conversation_id(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(cors_origins=APP)
    upstream.add(text_reply("hi"))

    response = await client.post(
        "/api/stream",
        json={"message": "hello", "conversationId": "c"},
        headers={"Origin": APP, "Sec-Fetch-Site": "cross-site"},
    )

    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "X-Conversation-Id" in exposed and "X-Request-Id" in exposed
    assert response.headers["X-Conversation-Id"] == "c"
    assert parse_events(await response.read())[-1]["type"] == "completion"


async def test_an_allowed_origin_can_read_a_refusal(make_client: MakeClient) -> None:
    # A page on another origin must see the 401 to know it should ask for a key.
    client = await make_client(cors_origins=APP, auth="keys", api_keys="alice:" + "k" * 20)

    response = await client.get("/api/conversations", headers={"Origin": APP})

    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_a_cross_site_form_post_is_refused_and_starts_no_turn(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client()
    form = {"Content-Type": "text/plain"}

    from_a_browser = await client.post(
        "/api/stream",
        data=FORM_BODY,
        headers={**form, "Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    )
    from_an_old_browser = await client.post(
        "/api/stream", data=FORM_BODY, headers={**form, "Origin": EVIL}
    )
    no_cors_without_origin = await client.post(
        "/api/stream", data=FORM_BODY, headers={**form, "Sec-Fetch-Site": "cross-site"}
    )

    for response in (from_a_browser, from_an_old_browser, no_cors_without_origin):
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
        assert (await response.json())["error"]["code"] == "forbidden_origin"
    assert upstream.requests == []


async def test_the_pages_own_origin_and_clients_without_one_are_served(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client()
    upstream.add(text_reply("a"), text_reply("b"))

    same = await client.post(
        "/api/stream",
        json={"message": "hi"},
        headers={"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"},
    )
    curl = await client.post("/api/stream", json={"message": "hi"})
    typed = await client.get("/api/conversations", headers={"Sec-Fetch-Site": "none"})

    assert (same.status, curl.status, typed.status) == (200, 200, 200)
    await same.read()
    await curl.read()


@pytest.mark.parametrize(
    "origin",
    ["null", "http://127.0.0.1:1", "http://localhost.evil.example", "file://", "ftp://127.0.0.1"],
)
async def test_origins_that_are_not_the_pages_own_are_refused(
    make_client: MakeClient, origin: str
) -> None:
    client = await make_client()

    response = await client.delete("/api/conversation/c", headers={"Origin": origin})

    assert response.status == 403


async def test_a_rebinding_host_name_is_refused(make_client: MakeClient) -> None:
    client = await make_client()  # listening on loopback: loopback names only
    port = client.port

    rebound = await client.get("/api/conversations", headers={"Host": f"evil.example:{port}"})
    page = await client.get("/", headers={"Host": f"evil.example:{port}"})
    health = await client.get("/health", headers={"Host": f"10.0.0.7:{port}"})
    served = [
        (await client.get("/api/conversations", headers={"Host": host})).status
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST")
    ]

    assert rebound.status == 421
    assert (await rebound.json())["error"]["code"] == "host_not_allowed"
    assert page.status == 421
    assert health.status == 200
    assert served == [200, 200, 200, 200]


async def test_allowed_hosts_names_the_hosts_and_their_subdomains(
    make_client: MakeClient,
) -> None:
    client = await make_client(allowed_hosts="chat.example.com, .example.org")

    def status_for(host: str) -> Any:
        return client.get("/api/conversations", headers={"Host": host})

    assert (await status_for("chat.example.com")).status == 200
    assert (await status_for("a.example.org:8443")).status == 200
    assert (await status_for("example.org")).status == 200
    assert (await status_for("localhost")).status == 421
    assert (await status_for("chat.example.com.evil.example")).status == 421


def test_off_loopback_any_host_name_is_answered_by_default() -> None:
    assert make_gate(make_settings(host="0.0.0.0")).hosts is None
    assert make_gate(make_settings(host="127.0.0.1")).hosts == ("localhost", "127.0.0.1", "::1")
    assert make_gate(make_settings(host="0.0.0.0", allowed_hosts="::1, x.test")).hosts == (
        "::1",
        "x.test",
    )
    assert make_gate(make_settings(allowed_hosts="*")).hosts is None


def test_origins_and_hosts_are_compared_in_their_normal_form() -> None:
    assert normal_origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert normal_origin("http://[::1]:5282") == "http://[::1]:5282"
    assert normal_origin("null") is None
    assert normal_origin("https://app.example.com/path") is None
    assert split_host("[::1]:5282") == ("::1", 5282)
    assert split_host("Example.COM.") == ("example.com", None)
    # A proxy may drop the port from Host (nginx's $host): then any port of that name matches.
    assert same_origin("http://chat.example.com:8080", "chat.example.com")
    assert same_origin("https://chat.example.com", "chat.example.com:443")
    assert not same_origin("http://chat.example.com:8080", "chat.example.com:5282")
    assert not same_origin("http://other.example.com", "chat.example.com")


def test_a_cors_origin_must_be_an_exact_origin() -> None:
    for bad in ("*", "app.example.com", "https://app.example.com/path"):
        with pytest.raises(SettingsError, match="CORS_ORIGINS"):
            make_gate(make_settings(cors_origins=bad))
