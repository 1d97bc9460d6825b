"""Who is calling: each AUTH mode against a live server, the keys file and its command, secrets
kept out of logs, and the owner boundary on every route with every store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from streamchat.api_keys import ApiKeys, hash_key
from streamchat.auth import describe_auth, make_backend
from streamchat.errors import ApiError
from streamchat.requests import owner_of
from streamchat.settings import Settings, SettingsError
from streamchat.web import create_app
from tests.conftest import ROOT, MakeClient, StartApp, make_settings, parse_events
from tests.fake_upstream import FakeUpstream, paced, text_reply
from tests.redis_server import RedisServer

Client = TestClient[Any, Any]
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret-42"  # an HS256 secret for the JWT tests


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def history(
    client: Client, headers: dict[str, str], cid: str = "c"
) -> aiohttp.ClientResponse:
    return await client.get(f"/api/conversation/{cid}", headers=headers)


async def refused(response: aiohttp.ClientResponse, invalid_token: bool) -> None:
    """A 401 that says what a client needs and nothing about which check failed."""
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) is invalid_token
    body = await response.json()
    assert body["error"]["code"] == "unauthorized"
    for detail in ("expired", "signature", "audience", "issuer", "algorithm", "hash"):
        assert detail not in body["error"]["message"].lower()


# --- AUTH=none ---------------------------------------------------------------------------


async def test_with_auth_none_every_caller_is_the_one_anonymous_owner(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client()
    upstream.add(text_reply("hi"))
    response = await client.post("/api/stream", json={"message": "hello", "conversationId": "c"})
    await response.read()

    seen = await history(client, bearer("anything at all"))

    assert seen.status == 200
    assert (await seen.json())["turns"] == 1


async def test_the_page_health_and_static_files_need_no_credentials(
    make_client: MakeClient,
) -> None:
    client = await make_client(auth="keys", api_keys="alice:" + "k" * 20)

    for path in ("/", "/health", "/static/streamchat.js"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/api/conversations")).status == 401
    assert (await client.delete("/conversation/c")).status == 401


# --- AUTH=keys ---------------------------------------------------------------------------

KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}
API_KEYS = ",".join(f"{owner}:{key}" for owner, key in KEYS.items())


async def test_api_keys_missing_wrong_and_right(make_client: MakeClient) -> None:
    client = await make_client(auth="keys", api_keys=API_KEYS)

    await refused(await client.get("/api/conversations"), invalid_token=False)
    await refused(await client.get("/api/conversations", headers=bearer("nope")), True)
    await refused(await client.get("/api/conversations", headers=bearer(KEYS["alice"] + "x")), True)
    basic = {"Authorization": "Basic " + base64.b64encode(b"alice:x").decode()}
    await refused(await client.get("/api/conversations", headers=basic), True)
    ok = await client.get("/api/conversations", headers=bearer(KEYS["alice"]))
    assert ok.status == 200


async def test_a_refused_stream_request_starts_no_turn(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(auth="keys", api_keys=API_KEYS)

    response = await client.post("/api/stream", json={"message": "hi"}, headers=bearer("no"))

    assert response.status == 401
    assert upstream.requests == []


def run_keys(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m streamchat keys ...` as a user runs it (this checkout's package)."""
    env = {k: v for k, v in os.environ.items() if k != "API_KEYS_FILE"}
    return subprocess.run(
        [sys.executable, "-m", "streamchat", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_keys_add_prints_a_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys"

    added = run_keys("add", "alice", "--file", str(path))

    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("sc-") and len(key) > 40
    assert key not in added.stderr
    assert path.read_text() == f"alice {hash_key(key)}\n"
    assert key not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


def test_keys_list_shows_owners_and_remove_takes_every_key_of_one(tmp_path: Path) -> None:
    path = str(tmp_path / "keys")
    for owner in ("alice", "bob", "alice"):
        assert run_keys("add", owner, "--file", path).returncode == 0

    listed = run_keys("list", "--file", path)
    removed = run_keys("remove", "alice", "--file", path)
    again = run_keys("remove", "alice", "--file", path)

    assert listed.stdout.splitlines() == ["alice\t2 keys", "bob\t1 key"]
    assert "sha256" not in listed.stdout
    assert removed.returncode == 0
    assert run_keys("list", "--file", path).stdout.splitlines() == ["bob\t1 key"]
    assert again.returncode == 1
    assert "alice has no key" in again.stderr


@pytest.mark.parametrize("owner", ["alice smith", "alice\n", "alice\nbob"])
def test_keys_add_refuses_an_owner_that_is_not_one_word(tmp_path: Path, owner: str) -> None:
    added = run_keys("add", owner, "--file", str(tmp_path / "keys"))

    assert added.returncode == 2
    assert not (tmp_path / "keys").exists()


async def test_a_key_made_by_the_command_is_accepted_and_the_file_is_reread(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ApiKeys, "RECHECK_SECONDS", 0.0)
    path = str(tmp_path / "keys")
    alice = run_keys("add", "alice", "--file", path).stdout.strip()
    client = await make_client(auth="keys", api_keys_file=path)
    assert (await client.get("/api/conversations", headers=bearer(alice))).status == 200

    bob = run_keys("add", "bob", "--file", path).stdout.strip()
    assert (await client.get("/api/conversations", headers=bearer(bob))).status == 200
    assert run_keys("remove", "alice", "--file", path).returncode == 0

    await refused(await client.get("/api/conversations", headers=bearer(alice)), True)


# --- AUTH=jwt ----------------------------------------------------------------------------


def token(
    key: Any = SECRET, algorithm: str = "HS256", kid: str | None = None, **claims: Any
) -> str:
    """A signed JWT for alice, good for five minutes; a claim given as None is left out."""
    body = {"sub": "alice", "exp": int(time.time()) + 300, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def unsigned(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    body = {"sub": "alice", "exp": int(time.time()) + 300, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


async def test_jwt_with_a_secret_checks_signature_expiry_audience_and_issuer(
    make_client: MakeClient,
) -> None:
    client = await make_client(
        auth="jwt", jwt_secret=SECRET, jwt_audience="streamchat", jwt_issuer="https://id.test"
    )
    good = {"aud": "streamchat", "iss": "https://id.test"}
    past = int(time.time()) - 3600

    async def status(headers: dict[str, str]) -> int:
        return (await client.get("/api/conversations", headers=headers)).status

    assert await status(bearer(token(**good))) == 200
    await refused(await client.get("/api/conversations"), invalid_token=False)
    for bad in (
        token(**good, exp=past),  # expired
        token("another-secret-another-secret-another", **good),  # forged
        token(aud="someone-else", iss="https://id.test"),  # wrong audience
        token(aud="streamchat", iss="https://evil.test"),  # wrong issuer
        token(aud="streamchat"),  # no issuer
        token(**good, exp=None),  # no expiry
        token(**good, sub=None),  # no subject
        token(**good, sub="alice\n"),  # a subject that would start a line of its own in a log
        unsigned(**good),  # alg: none
        "not.a.jwt",
    ):
        await refused(await client.get("/api/conversations", headers=bearer(bad)), True)


async def test_jwt_allows_a_little_clock_skew(make_client: MakeClient) -> None:
    client = await make_client(auth="jwt", jwt_secret=SECRET, jwt_leeway_seconds=30)
    just_expired = token(exp=int(time.time()) - 5)
    long_expired = token(exp=int(time.time()) - 120)

    ok = await client.get("/api/conversations", headers=bearer(just_expired))
    late = await client.get("/api/conversations", headers=bearer(long_expired))

    assert ok.status == 200
    await refused(late, invalid_token=True)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_jwt_with_a_public_key_refuses_an_hmac_made_with_that_key(
    make_client: MakeClient, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    pem = public_pem(rsa_key)
    (tmp_path / "public.pem").write_text(pem)
    client = await make_client(auth="jwt", jwt_public_key=str(tmp_path / "public.pem"))

    ok = await client.get("/api/conversations", headers=bearer(token(rsa_key, "RS256")))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = await client.get("/api/conversations", headers=bearer(token(other, "RS256")))

    assert ok.status == 200
    await refused(forged, invalid_token=True)
    # The "algorithm confusion" attack: the public key used as an HS256 secret.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(
        json.dumps({"sub": "mallory", "exp": int(time.time()) + 300}).encode()
    ).rstrip(b"=")
    signature = hmac.new(pem.encode(), header + b"." + body, hashlib.sha256).digest()
    confused = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")])
    response = await client.get("/api/conversations", headers=bearer(confused.decode()))
    await refused(response, invalid_token=True)


class Jwks:
    """A tiny identity provider: its key set at /jwks.json, counting the fetches."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.body = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        self.fetches = 0
        self.up = True
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self.up:
            return web.Response(status=503)
        return web.json_response(self.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/jwks.json"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def jwks(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[Jwks]:
    provider = Jwks(rsa_key)
    await provider.start()
    yield provider
    await provider.close()


async def test_jwt_from_a_jwks_url_fetched_once_and_kept(
    make_client: MakeClient, jwks: Jwks, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = await make_client(auth="jwt", jwt_jwks_url=jwks.url, jwt_audience="streamchat")
    good = token(rsa_key, "RS256", kid="k1", aud="streamchat")

    statuses = [
        (await client.get("/api/conversations", headers=bearer(good))).status for _ in range(3)
    ]
    # Made-up key ids cannot make the server fetch the key set on every request.
    for n in range(5):
        made_up = token(rsa_key, "RS256", kid=f"nope-{n}", aud="streamchat")
        await refused(await client.get("/api/conversations", headers=bearer(made_up)), True)
    wrong_audience = token(rsa_key, "RS256", kid="k1", aud="another-app")
    await refused(await client.get("/api/conversations", headers=bearer(wrong_audience)), True)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(other, "RS256", kid="k1", aud="streamchat")
    await refused(await client.get("/api/conversations", headers=bearer(forged)), True)

    assert statuses == [200, 200, 200]
    assert jwks.fetches == 1


async def test_an_unreachable_jwks_is_503_not_a_refused_token(
    make_client: MakeClient, jwks: Jwks, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.up = False
    client = await make_client(auth="jwt", jwt_jwks_url=jwks.url, jwt_audience="streamchat")

    response = await client.get(
        "/api/conversations", headers=bearer(token(rsa_key, "RS256", kid="k1", aud="streamchat"))
    )

    assert response.status == 503
    assert (await response.json())["error"]["code"] == "auth_unavailable"


async def test_the_jwks_is_fetched_off_the_event_loop(
    make_client: MakeClient, jwks: Jwks, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = await make_client(auth="jwt", jwt_jwks_url=jwks.url, jwt_audience="streamchat")
    threads: list[str] = []
    original = jwt.PyJWKClient.get_signing_keys

    def spy(self: Any, refresh: bool = False) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, refresh)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jwt.PyJWKClient, "get_signing_keys", spy)
        good = token(rsa_key, "RS256", kid="k1", aud="streamchat")
        assert (await client.get("/api/conversations", headers=bearer(good))).status == 200

    assert threads and "MainThread" not in threads


# --- AUTH=header -------------------------------------------------------------------------


async def test_auth_header_trusts_the_proxy_header(make_client: MakeClient) -> None:
    client = await make_client(auth="header", auth_header="X-Forwarded-User")

    await refused(await client.get("/api/conversations"), invalid_token=False)
    await refused(await client.get("/api/conversations", headers={"X-Forwarded-User": " "}), False)
    ok = await client.get("/api/conversations", headers={"X-Forwarded-User": "alice@example.com"})

    assert ok.status == 200


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"auth": "keys"}, "AUTH=keys, but no key"),
        ({"auth": "keys", "api_keys": "alice:short"}, "shorter than 16"),
        ({"auth": "keys", "api_keys": "alice smith:" + "k" * 20}, "API_KEYS entry 1"),
        ({"auth": "keys", "api_keys": "alice\n:" + "k" * 20}, "API_KEYS entry 1"),
        ({"auth": "keys", "api_keys_file": "/nonexistent/keys"}, "API_KEYS_FILE"),
        ({"auth": "jwt"}, "exactly one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL"),
        ({"auth": "jwt", "jwt_secret": SECRET, "jwt_jwks_url": "https://x"}, "exactly one"),
        ({"auth": "jwt", "jwt_secret": "short"}, "JWT_SECRET must be at least 32"),
        ({"auth": "jwt", "jwt_public_key": "-----BEGIN nonsense"}, "not a PEM public key"),
        ({"auth": "jwt", "jwt_jwks_url": "https://id.test/jwks"}, "needs JWT_AUDIENCE"),
        ({"auth": "header", "auth_header": "not a header"}, "AUTH_HEADER"),
        ({"cors_origins": "*"}, "CORS_ORIGINS lists exact origins"),
    ],
)
def test_a_bad_auth_setting_names_itself(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        create_app(make_settings(**overrides))


def test_a_bad_keys_file_line_is_named_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"alice {hash_key('k' * 20)}\nbob sk-plain-text-key\n")

    with pytest.raises(SettingsError, match="line 2") as caught:
        make_backend(make_settings(auth="keys", api_keys_file=str(path)))
    assert "sk-plain" not in str(caught.value)


def test_an_unknown_auth_mode_is_refused() -> None:
    with pytest.raises(SettingsError, match="AUTH must be none, keys, jwt or header"):
        Settings.from_env({"AUTH": "magic"})


def test_a_bad_auth_setting_stops_app_py_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AUTH": "keys", "OPENROUTER_API_KEY": "sk-test"}
    env.pop("API_KEYS", None)
    env.pop("API_KEYS_FILE", None)

    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "streamchat: AUTH=keys, but no key is configured: set API_KEYS or API_KEYS_FILE "
        "(python -m streamchat keys add <owner> makes one)"
    ]


def test_the_banner_says_who_may_call_and_warns_when_anyone_may_on_the_network() -> None:
    loopback = describe_auth(make_settings())
    exposed = describe_auth(make_settings(host="0.0.0.0"))
    keys = describe_auth(make_settings(auth="keys", api_keys=API_KEYS, host="0.0.0.0"))
    jwts = describe_auth(make_settings(auth="jwt", jwt_secret=SECRET, jwt_audience="sc"))

    assert loopback[0] == "callers: anyone (AUTH=none)"
    assert not any("WARNING" in line for line in loopback)
    assert exposed[1].startswith("WARNING: AUTH=none on 0.0.0.0: anyone who can reach port")
    assert "read every conversation" in exposed[1]
    assert keys[0] == "callers: API keys (2 owners)"
    assert not any("WARNING" in line for line in keys)
    assert jwts[0] == "callers: JWTs (HS256 with JWT_SECRET, audience sc)"


# --- secrets stay secret -----------------------------------------------------------------


async def test_keys_and_secrets_never_reach_logs_reprs_or_responses(
    make_client: MakeClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(auth="keys", api_keys=API_KEYS, jwt_secret=SECRET)
    client = await make_client(auth="keys", api_keys=API_KEYS)
    upstream.add(text_reply("fine"))
    bodies = []

    for headers in (bearer(KEYS["alice"]), bearer(KEYS["bob"] + "-wrong"), {}):
        response = await client.post(
            "/api/stream", json={"message": "hi", "conversationId": "c"}, headers=headers
        )
        bodies.append(await response.text() + str(response.headers))
        response = await client.get("/api/conversation/c", headers=headers)
        bodies.append(await response.text() + str(response.headers))

    everything = caplog.text + repr(settings) + str(settings) + "".join(bodies)
    for secret in (*KEYS.values(), SECRET, KEYS["bob"] + "-wrong"):
        assert secret not in everything
    assert "refused the credentials" in caplog.text


async def test_app_py_never_prints_a_key(start_app: StartApp) -> None:
    server = await start_app(AUTH="keys", API_KEYS=API_KEYS, LOG_LEVEL="DEBUG")
    async with aiohttp.ClientSession() as session:
        for key in (KEYS["alice"], "wrong-key-0123456789"):
            async with session.get(f"{server.url}/api/conversations", headers=bearer(key)) as r:
                await r.read()
    server.process.terminate()
    await server.wait()

    output = server.output.decode()
    assert "callers: API keys (2 owners)" in output
    assert KEYS["alice"] not in output and "wrong-key-0123456789" not in output


# --- the owner boundary ------------------------------------------------------------------


async def first_event(response: aiohttp.ClientResponse) -> bytes:
    """Read a stream up to the end of its first event; the bytes read."""
    head = b""
    while not head.endswith(b"\n\n"):
        line = await response.content.readline()
        assert line, "the stream ended"
        head += line
    return head


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/chat.db"
    pytest.importorskip("redis", reason="the redis package is not installed")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


async def test_another_owner_finds_nothing_on_any_route(
    make_client: MakeClient, upstream: FakeUpstream, store_url: str
) -> None:
    # Owners and ids of their own: the Redis server is shared by the whole session.
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    keys = {alice: f"{alice}-key-0123456789", bob: f"{bob}-key-0123456789"}
    client = await make_client(
        auth="keys",
        api_keys=",".join(f"{o}:{k}" for o, k in keys.items()),
        store_url=store_url,
        resume_grace_seconds=5.0,
    )
    as_alice, as_bob = bearer(keys[alice]), bearer(keys[bob])
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    secrets = ("launch code 4417", "answer 9981")
    upstream.add(paced(text_reply("the ", "answer ", "9981"), 0.15))

    # Alice's turn is running while Bob tries every route on her conversation.
    started = await client.post(
        "/api/stream",
        json={"message": "what is the launch code 4417?", "conversationId": cid},
        headers=as_alice,
    )
    assert started.status == 200
    head = await first_event(started)
    bob_saw: list[str] = []

    async def bob_gets(method: str, path: str, status: int, **headers: str) -> None:
        response = await client.request(method, path, headers={**as_bob, **headers})
        text = await response.text()
        bob_saw.append(text)
        assert response.status == status, (method, path, headers, text)

    base = f"/api/conversation/{cid}"
    await bob_gets("GET", base, 404)
    await bob_gets("GET", base + "/stream", 404)
    await bob_gets("GET", base + "/stream", 404, **{"Last-Event-ID": "1:0"})
    await bob_gets("POST", base + "/stop", 404)
    await bob_gets("DELETE", base, 200)
    await bob_gets("DELETE", f"/conversation/{cid}", 200)
    listed = await client.get("/api/conversations", headers=as_bob)
    assert (await listed.json())["conversations"] == []

    # Alice's turn went on untouched, and her conversation is all there.
    events = parse_events(head + await started.read())
    assert events[-1]["type"] == "completion"
    mine = await (await history(client, as_alice, cid)).json()
    assert mine["turns"] == 1 and "launch code 4417" in json.dumps(mine)

    # After it ended: resume, join and stop still find nothing for Bob.
    await bob_gets("GET", base + "/stream", 404, **{"Last-Event-ID": "1:0"})
    await bob_gets("GET", base + "/stream", 404)
    await bob_gets("POST", base + "/stop", 404)
    unknown = await client.delete("/api/conversation/never-was", headers=as_bob)
    assert bob_saw[4] == await unknown.text()  # a DELETE of hers answers as for no conversation

    # The same id from Bob is a conversation of his own.
    upstream.add(text_reply("hello bob"))
    his = await client.post(
        "/api/stream", json={"message": "hi, I am bob", "conversationId": cid}, headers=as_bob
    )
    assert parse_events(await his.read())[-1]["type"] == "completion"
    bobs = await (await history(client, as_bob, cid)).json()
    hers = await (await history(client, as_alice, cid)).json()
    assert bobs["turns"] == 1 and hers["turns"] == 1
    assert "bob" in json.dumps(bobs) and not any(s in json.dumps(bobs) for s in secrets)
    assert "bob" not in json.dumps(hers["messages"])
    listed = await (await client.get("/api/conversations", headers=as_bob)).json()
    assert [c["title"] for c in listed["conversations"]] == ["hi, I am bob"]
    assert upstream.requests[-1]["messages"][-1]["content"] == "hi, I am bob"
    assert not any(s in json.dumps(upstream.requests[-1]) for s in secrets)

    for text in bob_saw:
        assert not any(s in text for s in secrets), text
        assert "launch" not in text


async def test_a_stop_from_another_owner_stops_nothing(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(auth="keys", api_keys=API_KEYS)
    upstream.add(paced(text_reply("one ", "two ", "three"), 0.15))
    started = await client.post(
        "/api/stream",
        json={"message": "count", "conversationId": "c"},
        headers=bearer(KEYS["alice"]),
    )
    head = await first_event(started)

    stop = await client.post("/api/conversation/c/stop", headers=bearer(KEYS["bob"]))
    events = parse_events(head + await started.read())

    assert stop.status == 404
    assert events[-1]["type"] == "completion"
    assert "".join(e["content"] for e in events if e["type"] == "text") == "one two three"


def test_a_request_the_middleware_did_not_see_has_no_caller() -> None:
    request = make_mocked_request("GET", "/api/conversations")

    with pytest.raises(ApiError) as caught:
        owner_of(request)

    assert caught.value.status == 401
