"""`examples/my_tools.py`, the README's "Adding a tool" program: printed in the README as it is,
started as a user starts it, with its `.env`, and its new tool called through a turn."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest

from examples.my_tools import build_tools
from streamchat.settings import Settings
from streamchat.tools import ToolFailure
from tests.conftest import parse_events
from tests.fake_upstream import FakeUpstream, text_reply, tool_reply
from tests.test_readme import fenced_blocks, section

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_tools.py"


def test_the_readme_prints_the_example_in_full() -> None:
    blocks = fenced_blocks(section((ROOT / "README.md").read_text(), "Adding a tool"), "python")

    assert blocks == [EXAMPLE.read_text()]


def clean_environment() -> dict[str, str]:
    """This process's environment without any streamchat setting, so only `.env` counts."""
    names = {field.name.upper() for field in fields(Settings)}
    env = {key: value for key, value in os.environ.items() if key not in names}
    # Run this checkout's streamchat, whichever copy the environment has installed.
    env["PYTHONPATH"] = str(ROOT)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_my_tools_reads_env_starts_and_serves_its_new_tool(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(
        f"OPENROUTER_API_KEY=sk-or-test\nOPENROUTER_BASE_URL={upstream.base_url}\nPORT={port}\n"
    )
    upstream.add(
        tool_reply(("call_1", "weather", {"city": "Paris"})),
        text_reply("It is sunny in Paris."),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        cwd=tmp_path,
        env=clean_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        started = b""
        while b"Running on" not in started:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line, started.decode()  # it exited
            started += line
        assert f"http://127.0.0.1:{port}".encode() in started
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/api/stream",
                json={"message": "What is the weather in Paris?"},
            ) as response,
        ):
            events = parse_events(await response.read())
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), 10)

    assert [e["type"] for e in events] == ["tool_executing", "tool_completed", "text", "completion"]
    assert events[1]["result"] == "Sunny, 21 degrees celsius in Paris"
    offered = [tool["function"]["name"] for tool in upstream.requests[0]["tools"]]
    assert offered == ["add", "subtract", "multiply", "divide", "weather"]
    assert upstream.headers[0]["Authorization"] == "Bearer sk-or-test"


async def test_my_tools_stops_on_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TOOL_TIMEOUT_SECONDS=soon\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        cwd=tmp_path,
        env=clean_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)

    assert process.returncode == 2
    assert err.decode().count("\n") == 1
    assert "TOOL_TIMEOUT_SECONDS" in err.decode()


async def test_my_tools_honours_tool_timeout_seconds() -> None:
    tools = build_tools(Settings(tool_timeout_seconds=0.05))

    @tools.register
    async def slow() -> str:
        """Takes its time."""
        await asyncio.sleep(1)
        return "late"

    with pytest.raises(ToolFailure, match=r"longer than 0\.05 s"):
        await tools.run("slow", "{}")
    assert await tools.run("weather", '{"city": "Oslo"}') == "Sunny, 21 degrees celsius in Oslo"
