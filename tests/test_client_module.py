"""The client module the page uses, `streamchat.js`, under node against a live server.

Between node and the server sits a small TCP proxy that cuts the first connection in the middle
of a paced turn, the way a phone switching networks does: the module reconnects with
`Last-Event-ID` and the caller sees the turn whole, with no gap and no duplicate. Its `stop`,
`join`, `resume`, `getConversation` and `listConversations` run against the same server. Against a
server that needs a key and asks before `divide`, every function takes `apiKey`, and `approve`
answers the waiting call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamchat.web import create_app
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, paced, text_reply, tool_reply

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "js" / "client_module.mjs"
REQUEST_HEAD = re.compile(rb"(GET|POST|DELETE) (\S+) HTTP/1\.1\r\n(.*?)\r\n\r\n", re.DOTALL)


class CuttingProxy:
    """Forwards TCP connections to `port`; the first one is cut (reset) once the server has sent
    `marker` and `extra` bytes more, so an event is left half-way."""

    def __init__(self, port: int, marker: bytes, extra: int) -> None:
        self.port = port
        self.marker = marker
        self.extra = extra
        self.connections = 0
        self.cut = asyncio.Event()
        self.sent: list[bytearray] = []  # what the client sent, one buffer per connection
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, headers) of every request, in order."""
        found = []
        for sent in self.sent:
            for method, path, head in REQUEST_HEAD.findall(bytes(sent)):
                lines = head.decode().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines if ": " in line)
                found.append(
                    (method.decode(), path.decode(), {k.lower(): v for k, v in headers.items()})
                )
        return found

    async def _handle(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        self.connections += 1
        cutting = self.connections == 1
        sent = bytearray()
        self.sent.append(sent)
        server, to_server = await asyncio.open_connection("127.0.0.1", self.port)

        async def upstream() -> None:
            while data := await client.read(65536):
                sent.extend(data)
                to_server.write(data)
                await to_server.drain()
            to_server.close()

        async def downstream() -> None:
            seen = bytearray()
            while data := await server.read(65536):
                if cutting:
                    seen.extend(data)
                    at = seen.find(self.marker)
                    if at != -1:
                        keep = len(data) - (len(seen) - (at + len(self.marker) + self.extra))
                        to_client.write(data[: max(keep, 0)])
                        await to_client.drain()
                        to_client.transport.abort()
                        to_server.transport.abort()
                        self.cut.set()
                        return
                to_client.write(data)
                await to_client.drain()
            to_client.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())
        to_client.close()
        to_server.close()


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        reason = "node is not installed: the client module's test runs streamchat.js under node"
        print(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
async def live_server(upstream: FakeUpstream) -> AsyncIterator[int]:
    # A grace period, so the turn outlives the connection the proxy cuts.
    settings = make_settings(openrouter_base_url=upstream.base_url, resume_grace_seconds=30.0)
    runner = web.AppRunner(create_app(settings), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def run_driver(
    node: str, folder: Path, server: str, proxied: str, *part: str
) -> dict[str, Any]:
    """`streamchat.js` as the server serves it, beside a package.json, driven by DRIVER."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server}/static/streamchat.js") as response,
    ):
        assert response.status == 200
        (folder / "streamchat.js").write_bytes(await response.read())
    (folder / "package.json").write_text(json.dumps({"type": "module"}))
    process = await asyncio.create_subprocess_exec(
        node,
        str(DRIVER),
        (folder / "streamchat.js").as_uri(),
        proxied,
        *part,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


COUNT = [f"n{i} " for i in range(30)]
STORY = [f"word{i} " for i in range(60)]


async def test_streamchat_js_reconnects_after_a_cut_connection_and_stops_lists_and_reads(
    node: str, live_server: int, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(paced(text_reply(*COUNT), 0.05), paced(text_reply(*STORY), 0.1))
    proxy = CuttingProxy(live_server, marker=b"id: 1:5\n", extra=20)
    proxied = await proxy.start()
    try:
        seen = await run_driver(node, tmp_path, f"http://127.0.0.1:{live_server}", proxied)
    finally:
        await proxy.close()

    # The cut turn, whole: every event once, in order, then its completion.
    assert proxy.cut.is_set()
    events = seen["reconnected"]
    assert [e["chunkIndex"] for e in events] == list(range(len(events)))
    assert [e["id"] for e in events] == [f"1:{i}" for i in range(len(events))]
    assert "".join(e["content"] for e in events if e["type"] == "text") == "".join(COUNT)
    assert events[-1]["type"] == "completion"
    assert events[-1]["finishReason"] == "stop"
    requests = proxy.requests()
    assert [(method, path) for method, path, _ in requests[:2]] == [
        ("POST", "/api/stream"),
        ("GET", "/api/conversation/node-reconnect/stream"),
    ]
    assert requests[1][2]["last-event-id"] == "1:4"  # event 5 was cut half-way
    assert all(headers.get("x-client-test") == "yes" for _, _, headers in requests)
    assert upstream.requests[0]["messages"][-1]["content"] == "Count slowly"
    assert upstream.requests[1]["messages"][-1]["content"] == "Tell me a long story"
    assert len(upstream.requests) == 2  # reconnecting started no second generation

    assert [e["id"] for e in seen["resumed"]] == [e["id"] for e in events[3:]]
    assert seen["joined"] == []

    # Stop: both readers end with the server's cancelled completion; the upstream is aborted.
    assert seen["stopAnswer"] == {"stopped": True, "turn": 1}
    assert seen["stopAgain"] == {"stopped": False}
    for reader in (seen["stopped"], seen["watched"]):
        assert reader[-1]["type"] == "completion"
        assert reader[-1]["finishReason"] == "cancelled"
    assert seen["watched"] == seen["stopped"]
    assert upstream.disconnected.is_set()
    partial = "".join(e["content"] for e in seen["stopped"] if e["type"] == "text")
    assert partial.startswith("word0 word1 word2 ")
    conversation = seen["conversation"]
    assert conversation["runningTurn"] is None
    assert [(m["role"], m["content"]) for m in conversation["messages"][1:]] == [
        ("user", "Tell me a long story"),
        ("assistant", partial),
    ]

    first, second = seen["pages"]
    assert [c["conversationId"] for c in first["conversations"]] == ["node-stop"]
    assert first["next"]
    assert [c["conversationId"] for c in second["conversations"]] == ["node-reconnect"]
    assert second["conversations"][0]["title"] == "Count slowly"
    assert seen["unknown"] == {"name": "StreamChatError", "code": "not_found", "status": 404}
    assert seen["afterClear"] == {"conversations": [], "next": None}


KEY = "alice-key-0123456789abcdef"


@pytest.fixture
async def keyed_server(upstream: FakeUpstream) -> AsyncIterator[int]:
    settings = make_settings(
        openrouter_base_url=upstream.base_url,
        auth="keys",
        api_keys=f"alice:{KEY}",
        approval_required="divide",
    )
    runner = web.AppRunner(create_app(settings), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_streamchat_js_sends_its_api_key_and_approves_or_denies_a_waiting_call(
    node: str, keyed_server: int, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(
        tool_reply(("call_1", "divide", {"a": 84, "b": 2})),
        text_reply("84 / 2 = 42"),
        tool_reply(("call_2", "divide", {"a": 1, "b": 0})),
        text_reply("I was not allowed to divide."),
    )
    # A proxy that never cuts: it shows what each request carried.
    proxy = CuttingProxy(keyed_server, marker=b"\0never", extra=0)
    proxied = await proxy.start()
    try:
        seen = await run_driver(
            node, tmp_path, f"http://127.0.0.1:{keyed_server}", proxied, "keys", KEY
        )
    finally:
        await proxy.close()

    refused = {"name": "StreamChatError", "code": "unauthorized", "status": 401}
    assert seen["noKey"] == refused
    assert seen["wrongKey"] == refused
    assert seen["headersWin"] == refused
    assert seen["approveNoKey"] == refused
    assert seen["notWaiting"] == {"name": "StreamChatError", "code": "not_found", "status": 404}

    approved = seen["approved"]
    assert approved["answer"] == {"toolId": "call_1", "approved": True}
    assert [e["type"] for e in approved["events"]] == [
        "tool_approval_required",
        "tool_executing",
        "tool_completed",
        "text",
        "completion",
    ]
    assert approved["events"][0]["toolId"] == "call_1"
    assert approved["events"][2]["result"] == "42"
    assert approved["watched"] == [
        {k: e[k] for k in ("id", "type", "chunkIndex", "content", "finishReason")}
        for e in approved["events"]
    ]

    denied = seen["denied"]
    assert denied["answer"] == {"toolId": "call_2", "approved": False}
    assert [e["type"] for e in denied["events"]] == [
        "tool_approval_required",
        "tool_error",
        "text",
        "completion",
    ]
    assert denied["events"][1]["error"] == "Denied by the user."
    assert upstream.requests[-1]["messages"][-1]["content"] == "Error: Denied by the user."
    assert sorted(seen["listed"]) == ["node-approve", "node-deny"]

    # Every request carried the key as a bearer token, but the four refused ones.
    requests = proxy.requests()  # by connection, not in order
    wrong = "Bearer not-the-key-0123456789"
    auths = [headers.get("authorization") for _, _, headers in requests]
    assert Counter(auths) == {None: 2, wrong: 2, f"Bearer {KEY}": len(requests) - 4}
    streams = [headers for _, path, headers in requests if path.endswith("stream")]
    assert len(streams) == 4  # two turns, two joins
    assert all(headers["authorization"] == f"Bearer {KEY}" for headers in streams)
    approvals = [headers for _, path, headers in requests if path.endswith("/approve")]
    assert [headers.get("content-type") for headers in approvals] == ["application/json"] * 4
