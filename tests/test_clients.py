"""Real clients against a live server: the original sample's JavaScript client under node,
and `python app.py` started the way a user starts it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.fake_upstream import FakeUpstream, text_reply, tool_reply


async def run_node_client(base: str, message: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript client test needs it")
    process = await asyncio.create_subprocess_exec(
        node,
        str(ROOT / "tests" / "js" / "sample_client.mjs"),
        base,
        message,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_original_javascript_client_sees_tool_text_and_completion(
    live_server: str, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    seen = await run_node_client(live_server, "What is 25 + 17?")

    assert seen["toolResults"] == ["42"]
    assert seen["text"] == "25 + 17 = 42"
    assert seen["types"] == ["tool_executing", "tool_completed", "text", "completion"]


async def test_original_javascript_client_sees_artifacts(
    live_server: str, upstream: FakeUpstream
) -> None:
    body = "def hello():\n    print('Hello, World! 🚀')"
    reply = f'Sure:\n<artifact type="code" title="hello.py" language="python">\n{body}\n</artifact>'
    upstream.add(text_reply(*[reply[i : i + 4] for i in range(0, len(reply), 4)]))

    seen = await run_node_client(live_server, "Create a Python hello world function")

    assert seen["artifacts"] == [{"title": "hello.py", "content": body}]
    assert seen["text"] == "Sure:\n"


async def test_app_py_starts_prints_where_and_serves(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": "sk-secret-value",
        "OPENROUTER_BASE_URL": upstream.base_url,
        "DEFAULT_MODEL": "test/model",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        "--port",
        str(port),
        cwd=tmp_path,  # no .env there
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"model" not in banner:
            banner += await asyncio.wait_for(process.stdout.readline(), 20)
        text = banner.decode()
        assert f"http://127.0.0.1:{port}" in text
        assert upstream.base_url in text
        assert "test/model" in text
        upstream.add(text_reply("hi"))
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as health:
                        assert health.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            url = f"http://127.0.0.1:{port}/api/stream"
            async with session.post(url, data='{"message": "Hello!"}') as response:
                assert b"event: completion" in await response.read()
    finally:
        process.terminate()
        rest, _ = await asyncio.wait_for(process.communicate(), 10)
    assert b"sk-secret-value" not in banner + rest


async def test_app_py_help_lists_the_flags() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "app.py"), "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()

    assert process.returncode == 0
    assert b"--host" in out
    assert b"--port" in out
    text = out.decode()
    for setting in ("OPENROUTER_API_KEY", "STORE_URL", "RESUME_GRACE_SECONDS", "LOCAL_THREADS"):
        assert setting in text
    assert ".env is read from:" in text


async def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "app.py"),
            "--port",
            str(port),
            cwd=tmp_path,
            env={**os.environ, "OPENROUTER_API_KEY": "k", "STORE_URL": "memory://"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    assert b"Traceback" not in err
    assert err.decode().strip().splitlines() == [
        f"streamchat: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(set PORT, or --port, to another port)"
    ]
    assert b"listening on" not in out
