"""The Vercel AI SDK's own client code (`ai`, pinned in tests/js/aisdk) against a live server.

The test setup installs the pinned package from the npm registry into `tests/js/aisdk/` the
first time (`npm ci`); without node or npm the tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.fake_upstream import FakeUpstream, HttpError, paced, text_reply, tool_reply

AISDK = ROOT / "tests" / "js" / "aisdk"
ARTIFACT = '<artifact id="hi" title="hi.py" language="python">\nprint("hi")\n</artifact>'


@pytest.fixture(scope="session")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the AI SDK's client (Debian: nodejs, npm)")
    if not (AISDK / "node_modules" / "ai").is_dir():
        done = subprocess.run(
            [npm, "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=AISDK,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci in {AISDK} failed: {done.stderr.decode()[-500:]}")
    return node


@pytest.fixture
def base(live_server: str) -> str:
    return live_server


async def sdk(node: str, *args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(AISDK / "client.mjs"),
        *args,
        cwd=AISDK,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def parts(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p for p in result["message"]["parts"] if p["type"] == kind]


async def test_a_text_turn_becomes_one_text_part(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hello ", "there!"))

    result = await sdk(node, base, "send", "c1", "Hello!")

    assert result["errors"] == []
    assert [p["text"] for p in parts(result, "text")] == ["Hello there!"]
    assert result["chunks"][:2] == ["start", "start-step"]
    assert result["chunks"][-2:] == ["finish-step", "finish"]
    assert result["message"]["id"] == "c1-1"


async def test_a_tool_turn_shows_the_tool_part_with_its_output_and_two_steps(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    result = await sdk(node, base, "send", "c2", "What is 25 + 17?")

    tools = parts(result, "tool-add")
    assert len(tools) == 1
    assert tools[0]["state"] == "output-available"
    assert tools[0]["input"] == {"a": 25, "b": 17}
    assert tools[0]["output"] == "42"
    assert [p["text"] for p in parts(result, "text")] == ["25 + 17 = 42"]
    assert parts(result, "step-start") and len(parts(result, "step-start")) == 2
    assert result["chunks"].count("finish-step") == 2


async def test_a_failed_tool_is_an_output_error(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("t1", "divide", {"a": 1, "b": 0})), text_reply("Cannot."))

    result = await sdk(node, base, "send", "c3", "1 / 0?")

    tool = parts(result, "tool-divide")[0]
    assert tool["state"] == "output-error"
    assert "zero" in tool["errorText"]


async def test_an_artifact_is_a_data_part_updated_in_place(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Here: ", ARTIFACT))

    result = await sdk(node, base, "send", "c4", "write hi.py")

    artifacts = parts(result, "data-artifact")
    assert len(artifacts) == 1  # the started part was replaced by the completed one
    assert artifacts[0]["id"] == "hi"
    assert artifacts[0]["data"]["content"] == 'print("hi")'
    assert artifacts[0]["data"]["status"] == "done"
    deltas = [p for p in result["dataParts"] if p["type"] == "data-artifact-delta"]
    assert "".join(d["data"]["delta"] for d in deltas) == 'print("hi")'


async def test_an_upstream_error_reaches_on_error(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found"}}))

    result = await sdk(node, base, "send", "c5", "Hello?")

    assert result["errors"] == ["The model provider rejected the API key."]
    assert "error" in result["chunks"]


async def test_a_stop_ends_the_message_as_aborted(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(300)]), 0.02))

    running = asyncio.create_task(sdk(node, base, "send", "c6", "go on"))
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # until the turn has streamed a little (node may start slowly)
            async with session.get(f"{base}/api/conversation/c6") as got:
                if got.status == 200 and (await got.json())["runningTurn"] == 1:
                    break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        async with session.post(f"{base}/api/conversation/c6/stop") as stop:
            assert (await stop.json())["stopped"] is True
    result = await running

    assert result["chunks"][-1] == "abort"
    assert parts(result, "text")[0]["text"].startswith("w0 w1 ")


async def test_resume_replays_the_running_turn_and_204_when_none_runs(
    node: str, base: str, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(40)]), 0.03))

    first = asyncio.create_task(sdk(node, base, "send", "c7", "count"))
    await asyncio.sleep(0.5)
    resumed = await sdk(node, base, "resume", "c7")
    await first
    idle = await sdk(node, base, "resume", "c7")

    assert [p["text"] for p in parts(resumed, "text")] == ["".join(f"w{i} " for i in range(40))]
    assert resumed["chunks"][0] == "start"
    assert idle["message"] is None


def test_the_sdk_client_is_pinned() -> None:
    package = json.loads(Path(AISDK / "package.json").read_text())
    assert package["dependencies"]["ai"].count(".") == 2  # an exact version, not a range
