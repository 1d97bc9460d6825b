"""The README's code runs as printed: each JavaScript example of its "Clients" section, taken
from README.md verbatim, runs under node against a live server with the fake upstream."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fake_upstream import FakeUpstream, HttpError, text_reply, tool_reply

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PRINTED_ADDRESS = ROOT / "tests" / "js" / "printed_address.mjs"


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading`, up to the next `## ` heading."""
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def fenced_blocks(markdown: str, language: str) -> list[str]:
    pattern = re.compile(rf"^```{language}\n(.*?)^```$", re.DOTALL | re.MULTILINE)
    return pattern.findall(markdown)


JS_EXAMPLES = fenced_blocks(section(README.read_text(), "Clients"), "javascript")


def test_the_clients_section_has_its_three_examples() -> None:
    # A block renamed to ```js or lost in an edit would otherwise go untested.
    assert len(JS_EXAMPLES) == 3
    assert all("http://127.0.0.1:5282" in example for example in JS_EXAMPLES)


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the README's JavaScript examples need it")
    return found


async def run_example(node: str, example: str, folder: Path, server: str) -> tuple[str, str]:
    """Set up a folder as the README says, run `node client.js`; its stdout and stderr."""
    (folder / "package.json").write_text(json.dumps({"type": "module"}))
    (folder / "client.js").write_text(example)
    process = await asyncio.create_subprocess_exec(
        node,
        "--import",
        PRINTED_ADDRESS.as_uri(),
        "client.js",
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "STREAMCHAT_TEST_URL": server},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def download_client_module(server: str, folder: Path) -> None:
    """`curl -O http://127.0.0.1:5282/static/streamchat.js`, as the README says."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server}/static/streamchat.js") as response,
    ):
        assert response.status == 200
        (folder / "streamchat.js").write_bytes(await response.read())


@pytest.mark.parametrize("number", range(len(JS_EXAMPLES)), ids=lambda n: f"example-{n + 1}")
async def test_readme_javascript_example_runs_as_printed(
    number: int, node: str, live_server: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(tool_reply(("call_1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))
    await download_client_module(live_server, tmp_path)

    out, err = await run_example(node, JS_EXAMPLES[number], tmp_path, live_server)

    assert err == ""
    assert "42" in out.replace("25 + 17 = 42", "")  # the tool's result
    assert "25 + 17 = 42" in out  # the model's answer
    assert upstream.requests[0]["messages"][-1]["content"] == "What is 25 + 17?"


@pytest.mark.parametrize("number", range(len(JS_EXAMPLES)), ids=lambda n: f"example-{n + 1}")
async def test_readme_javascript_example_shows_an_error_event(
    number: int, node: str, live_server: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found"}}))
    await download_client_module(live_server, tmp_path)

    _, err = await run_example(node, JS_EXAMPLES[number], tmp_path, live_server)

    assert "upstream_auth" in err
    assert "The model provider rejected the API key." in err


@pytest.mark.parametrize("number", range(len(JS_EXAMPLES)), ids=lambda n: f"example-{n + 1}")
async def test_readme_javascript_example_shows_a_server_it_cannot_reach(
    number: int, node: str, tmp_path: Path, live_server: str
) -> None:
    await download_client_module(live_server, tmp_path)
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        with_nobody_listening = f"http://127.0.0.1:{sock.getsockname()[1]}"

    _, err = await run_example(node, JS_EXAMPLES[number], tmp_path, with_nobody_listening)

    assert "ECONNREFUSED" in err
    assert "    at " not in err  # a message, not an unhandled rejection's stack trace


def subsection(markdown: str, heading: str) -> str:
    """The text under a `### heading`, up to the next heading of any level above four."""
    start = markdown.index(f"\n### {heading}\n")
    end = re.compile(r"\n#{2,3} ").search(markdown, start + 1)
    return markdown[start : end.start() if end else None]


async def test_the_openai_example_runs_as_printed(
    live_server: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    (example,) = fenced_blocks(subsection(README.read_text(), "OpenAI clients"), "python")
    assert "http://127.0.0.1:5282/v1" in example
    upstream.add(
        tool_reply(("t1", "add", {"a": 25, "b": 17})),
        text_reply("25 + 17 = 42"),
        text_reply("1, 2, ", "3, 4, 5"),
    )
    script = tmp_path / "example.py"
    script.write_text(example.replace("http://127.0.0.1:5282", live_server))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "25 + 17 = 42",
        "['tool_executing', 'tool_completed']",
        "1, 2, 3, 4, 5",
    ]
