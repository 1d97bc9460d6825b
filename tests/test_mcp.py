"""Tools from a real MCP server (the `mcp` SDK's own server side), over stdio and HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from streamchat.appkeys import MCP_SERVERS, TOOLS
from streamchat.web import create_app
from tests.conftest import ROOT, free_port, make_settings, stream
from tests.fake_upstream import FakeUpstream, text_reply, tool_reply

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install '.[mcp]'")

Client = TestClient[Any, Any]
STDIO = {"command": sys.executable, "args": ["-m", "tests.mcp_server"]}


class HttpServer:
    """The test MCP server on streamable HTTP, as a process the test can kill and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_server", "--http", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def mcp_app(aiohttp_client: Any, upstream: FakeUpstream, tmp_path: Path) -> Any:
    async def make(servers: dict[str, Any], **overrides: Any) -> Client:
        config = tmp_path / "mcp.json"
        config.write_text(json.dumps({"mcpServers": servers}))
        settings = make_settings(
            openrouter_base_url=upstream.base_url, mcp_config=str(config), **overrides
        )
        previous = os.getcwd()
        os.chdir(ROOT)  # `python -m tests.mcp_server` runs from the repository
        try:
            client: Client = await aiohttp_client(create_app(settings))
            return client
        finally:
            os.chdir(previous)

    return make


async def wait_connected(client: Client, name: str, seconds: float = 20) -> None:
    server = next(s for s in client.app[MCP_SERVERS] if s.name == name)
    for _ in range(int(seconds * 20)):
        if server.status.startswith("connected"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: {server.status}")


async def test_a_stdio_servers_tools_are_listed_and_called(
    mcp_app: Any, upstream: FakeUpstream
) -> None:
    client = await mcp_app({"kit": STDIO})
    await wait_connected(client, "kit")
    upstream.add(
        tool_reply(("t1", "word_count", {"text": "one two three"})), text_reply("Three words.")
    )

    reply = await stream(client, "How many words?")

    names = [s["function"]["name"] for s in upstream.requests[0]["tools"]]
    assert {"add", "word_count", "reverse", "wait", "fail", "plan_trip"} <= set(names)
    assert reply.of("tool_completed")[0]["result"] == "3"
    assert reply.text == "Three words."


async def test_a_name_clash_gets_the_servers_prefix(mcp_app: Any, upstream: FakeUpstream) -> None:
    client = await mcp_app({"kit": STDIO})
    await wait_connected(client, "kit")
    upstream.add(tool_reply(("t1", "kit_add", {"a": 2, "b": 3})), text_reply("5"))

    reply = await stream(client, "2 + 3 with the server")

    names = client.app[TOOLS].schemas()
    offered = [s["function"]["name"] for s in names]
    assert offered.count("add") == 1  # the calculator keeps its name
    assert "kit_add" in offered
    assert reply.of("tool_completed")[0]["result"] == "5.0"


async def test_failures_timeouts_and_nested_arguments(mcp_app: Any, upstream: FakeUpstream) -> None:
    client = await mcp_app({"kit": STDIO}, tool_timeout_seconds=1.0)
    await wait_connected(client, "kit")
    trip = {
        "traveller": "Ada",
        "stops": [{"city": "Rome", "nights": 2}, {"city": "Oslo", "nights": 1}],
    }
    upstream.add(
        tool_reply(
            ("t1", "fail", {"reason": "the disk is full"}),
            ("t2", "wait", {"seconds": 5}),
            ("t3", "plan_trip", {"trip": trip}),
        ),
        text_reply("done"),
    )

    reply = await stream(client, "try them all")

    errors = {e["toolId"]: e["error"] for e in reply.of("tool_error")}
    assert errors["t1"].endswith("the disk is full")  # the server's own words
    assert "longer than 1 s" in errors["t2"]
    assert reply.of("tool_completed")[0]["result"] == "Ada: Rome, Oslo by train, 3 nights"
    assert reply.types[-1] == "completion"  # the model was told, and answered


async def test_streamable_http_server_killed_mid_turn_then_back(
    mcp_app: Any, upstream: FakeUpstream, http_server: HttpServer
) -> None:
    client = await mcp_app({"web": {"url": http_server.url}})
    await wait_connected(client, "web")
    upstream.add(tool_reply(("t1", "reverse", {"text": "abc"})), text_reply("cba"))
    assert (await stream(client, "reverse abc")).of("tool_completed")[0]["result"] == "cba"

    upstream.add(tool_reply(("t2", "wait", {"seconds": 10})), text_reply("it failed"))
    turn = asyncio.create_task(stream(client, "wait a while"))
    await asyncio.sleep(1.5)
    http_server.kill()
    reply = await asyncio.wait_for(turn, 15)

    assert "unavailable" in reply.of("tool_error")[0]["error"]
    assert reply.types[-1] == "completion"
    http_server.start()  # the same port: the toolset reconnects by itself
    await wait_connected(client, "web", seconds=40)
    upstream.add(tool_reply(("t3", "reverse", {"text": "xy"})), text_reply("yx"))
    assert (await stream(client, "reverse xy")).of("tool_completed")[0]["result"] == "yx"


async def test_a_server_that_is_down_at_start_never_fails_start_up(
    mcp_app: Any, upstream: FakeUpstream
) -> None:
    broken = {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}
    client = await mcp_app({"broken": broken, "kit": STDIO})
    await wait_connected(client, "kit")
    server = next(s for s in client.app[MCP_SERVERS] if s.name == "broken")

    health = await client.get("/health")

    assert health.status == 200
    assert server.status.startswith("unavailable")
    assert server.tools() == []


async def test_app_py_prints_each_server_with_its_tools_or_why_not(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "kit": STDIO,
                    "gone": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
                }
            }
        )
    )
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": "k",
        "OPENROUTER_BASE_URL": upstream.base_url,
        "STORE_URL": "memory://",
        "MCP_CONFIG": str(config),
        "APPROVAL_REQUIRED": "fail",
        "PYTHONPATH": str(ROOT),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        "--port",
        str(free_port()),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    banner = b""
    try:
        assert process.stdout is not None
        while b"waiting for approval" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), 40)
            assert line, banner.decode()
            banner += line
    finally:
        process.terminate()
        await process.wait()
    text = banner.decode()
    assert (
        "MCP server kit: connected (6 tools): word_count, reverse, wait, fail, plan_trip, kit_add"
        in text
    )
    assert "MCP server gone: unavailable" in text
    assert "waiting for approval: fail" in text


async def test_a_bad_mcp_config_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"x": {"command": 3}}}')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        env={**os.environ, "MCP_CONFIG": str(config), "STORE_URL": "memory://"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 2
    assert err.decode().strip() == "streamchat: MCP_CONFIG: server 'x': 'command' must be a string"
