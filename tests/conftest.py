"""Shared fixtures: a fake upstream on a free port, and a streamchat app pointed at it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, settings
from playwright.async_api import Browser, async_playwright
from pytest_aiohttp import AiohttpClient

from streamchat.providers.base import Provider
from streamchat.providers.openai_round import CHUNK_DECODER, use_typed_decoder
from streamchat.settings import Settings
from streamchat.sse import SSEDecoder, SSEEvent
from streamchat.web import create_app
from tests.chunking import CHUNK_SIZES
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer, redis_server_path

ROOT = Path(__file__).resolve().parent.parent


def find_chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


# Debian's Chromium, which the browser tests drive (they skip, saying why, without it).
CHROMIUM = find_chromium()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium for one test, closed after it."""
    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


# A missed injection fails fast instead of reaching a real network.
UNREACHABLE = "http://upstream.invalid/api/v1"

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def generated_cases(examples: int) -> settings:
    """Hypothesis's settings for the tests whose every case is a whole exchange with the server
    (a script of requests, a sequence of store calls): no deadline, no example database, and the
    test's fixtures (a folder, a Redis server) shared by its cases."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def make_settings(**overrides: Any) -> Settings:
    base = Settings(
        openrouter_api_key="test-key",
        openrouter_base_url=UNREACHABLE,
        upstream_max_retry_wait_seconds=2.0,
        upstream_read_timeout_seconds=5.0,
        store_url="memory://",
        shutdown_grace_seconds=0.0,
        # A turn stops the moment its last reader leaves, unless a test gives it a grace.
        resume_grace_seconds=0.0,
    )
    return base.with_overrides(**overrides)


@pytest.fixture(params=CHUNK_SIZES, ids=lambda size: f"chunk-{size or 'whole'}")
def size(request: pytest.FixtureRequest) -> int | None:
    """The chunk size a parser test is fed at (None: whole)."""
    value: int | None = request.param
    return value


@pytest.fixture(params=["typed", "json"], ids=lambda path: f"decoder-{path}")
def chunk_decoder(request: pytest.FixtureRequest) -> Iterator[str]:
    """Upstream chunks read by msgspec's typed decoder, then by `json.loads` only: the upstream
    tests must pass on both paths. The typed run is skipped when msgspec is not installed."""
    path: str = request.param
    if path == "typed" and CHUNK_DECODER is None:
        pytest.skip("msgspec is not installed (the `fast` extra): the typed decoder is untested")
    use_typed_decoder(path == "typed")
    try:
        yield path
    finally:
        use_typed_decoder(CHUNK_DECODER is not None)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real `redis-server` for the session; tests keep apart by key prefix."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, upstream: FakeUpstream) -> MakeClient:
    async def make(provider: Provider | None = None, **overrides: Any) -> TestClient[Any, Any]:
        overrides.setdefault("openrouter_base_url", upstream.base_url)
        app = create_app(make_settings(**overrides), provider=provider)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


def parse_events(raw: bytes) -> list[dict[str, Any]]:
    """The events of a response, checking that `id:` and `event:` agree with the data."""
    decoder = SSEDecoder()
    items = decoder.feed(raw) + decoder.flush()
    events: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, SSEEvent):
            data = json.loads(item.data)
            assert item.event == data["type"]
            assert item.id is not None
            turn, _, index = item.id.partition(":")
            assert index == str(data["chunkIndex"])
            assert turn.isdigit()
            events.append(data)
    return events


@dataclass
class StreamReply:
    status: int
    headers: dict[str, str]
    raw: bytes
    events: list[dict[str, Any]]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def text(self) -> str:
        return "".join(e["content"] for e in self.of("text"))


async def stream(client: TestClient[Any, Any], message: str, **fields: Any) -> StreamReply:
    response = await client.post("/api/stream", json={"message": message, **fields})
    raw = await response.read()
    events = parse_events(raw) if response.status == 200 else []
    return StreamReply(response.status, dict(response.headers), raw, events)


StartApp = Callable[..., Awaitable["AppProcess"]]


class AppProcess:
    """`python app.py`, started as a user starts it."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.output = b""

    async def printed(self, marker: bytes) -> None:
        """Read its output until `marker` is in it (20 s a line at most)."""
        assert self.process.stdout is not None
        while marker not in self.output:
            line = await asyncio.wait_for(self.process.stdout.readline(), 20)
            assert line, self.output.decode()
            self.output += line

    async def wait(self) -> int:
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), 15)
        self.output += rest
        return await self.process.wait()


@pytest.fixture
async def start_app(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[StartApp]:
    """Starts `python app.py` in tmp_path (its SQLite file lives there) against the fake."""
    servers: list[AppProcess] = []

    async def run(wait_for: bytes = b"store:", **env: str) -> AppProcess:
        """The server once it printed `wait_for` (by default: once it listens and says how)."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "app.py"),
            "--port",
            str(port),
            cwd=tmp_path,
            env={
                **os.environ,
                "OPENROUTER_API_KEY": "sk-test",
                "OPENROUTER_BASE_URL": upstream.base_url,
                "SHUTDOWN_GRACE_SECONDS": "1",
                **env,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        server = AppProcess(process, f"http://127.0.0.1:{port}")
        servers.append(server)
        await server.printed(wait_for)
        return server

    yield run
    for server in servers:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The app on a free loopback port, as a user's client reaches it; its base URL."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def live_server(upstream: FakeUpstream) -> AsyncIterator[str]:
    """streamchat on a free port, talking to the fake upstream; turns outlive a drop by 10 s."""
    settings = make_settings(openrouter_base_url=upstream.base_url, resume_grace_seconds=10.0)
    async with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may stop and start again."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
