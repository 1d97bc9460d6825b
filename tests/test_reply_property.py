"""Whatever a model streams, through the whole server: random replies made of the pieces that
are hard to cut (artifact tags, code fences, multi-byte characters, surrogate pairs split across
chunks, lone surrogates), after an optional tool round, sent in bytes cut at random points. Each
goes through the real app (provider, tool loop, artifact and fence parsers, event log, SQLite
store, native encoder) and must give:

- strict UTF-8 frames, numbered `1:0`, `1:1`, ... with one terminal event, last;
- the model's text stored whole (lone surrogates as U+FFFD), and every tool call with its result;
- each artifact's content equal to its deltas joined, and stored as completed;
- from any event id, a resume that replays exactly the events after it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import event as tally
from hypothesis import given
from hypothesis import strategies as st

from streamchat.events import clean
from streamchat.web import create_app
from tests.conftest import generated_cases, make_settings, parse_events
from tests.fake_upstream import (
    DONE,
    USAGE,
    FakeUpstream,
    Send,
    chunk,
    raw_delta,
    tool_reply,
)

PIECES = [
    "Here is ",
    "some text",
    " ",
    "\n",
    "é",
    "日本",
    "🚀",
    "\ud83d",  # the halves of 🚀, which may arrive in chunks of their own
    "\ude80",
    "\ud800",  # a lone surrogate, as an upstream's `\ud800` escape
    '<artifact id="a" title="a.py" language="python">',
    '<artifact id="b" type="document" title="notes.md">',
    "<artifact",
    ' id="c"',
    ' title="c"',
    ">",
    "</artifact>",
    "</art",
    "ifact>",
    "print('hi')",
    "```",
    "```python\n",
    "\n```\n",
    "`",
    "<",
    "&lt;",
]

replies = st.fixed_dictionaries(
    {
        "pieces": st.lists(st.sampled_from(PIECES), min_size=1, max_size=14),
        "escaped": st.booleans(),  # non-ASCII as `\u` escapes or as UTF-8
        "tool_round": st.booleans(),
        "fences": st.sampled_from(["on", "off"]),
        "cuts": st.lists(st.integers(min_value=1, max_value=10_000), max_size=6),
        "resume_at": st.integers(min_value=0, max_value=10_000),
    }
)

# REPLY_EXAMPLES=1000 runs a deeper search.
EXAMPLES = int(os.environ.get("REPLY_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="reply-property-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _answer_bytes(pieces: list[str], escaped: bool) -> bytes:
    """The answer round as the upstream sends it: a chunk per piece, then the end."""
    frames = [chunk({"role": "assistant", "content": ""})]
    for piece in pieces:
        # A lone surrogate can only travel as an escape.
        ascii_only = escaped or any("\ud800" <= c <= "\udfff" for c in piece)
        frames.append(raw_delta(json.dumps({"content": piece}, ensure_ascii=ascii_only)))
    frames += [chunk({}, "stop"), chunk(usage=USAGE), DONE]
    return b"".join(frames)


def _cut(data: bytes, cuts: list[int]) -> list[Send]:
    points = sorted({c % len(data) for c in cuts} - {0})
    edges = [0, *points, len(data)]
    return [Send(data[a:b]) for a, b in itertools.pairwise(edges)]


@generated_cases(EXAMPLES)
@given(reply=replies)
def test_any_reply_streams_stores_and_resumes_whole(reply: dict[str, Any], folder: str) -> None:
    asyncio.run(_check(reply, folder))


async def _check(reply: dict[str, Any], folder: str) -> None:
    upstream = FakeUpstream()
    await upstream.start()
    settings_ = make_settings(
        openrouter_base_url=upstream.base_url,
        store_url=f"sqlite:///{folder}/{os.urandom(6).hex()}.db",
        artifact_fences=reply["fences"],
        resume_grace_seconds=5.0,
    )
    client = TestClient(TestServer(create_app(settings_)))
    await client.start_server()
    try:
        pieces: list[str] = reply["pieces"]
        if reply["tool_round"]:
            upstream.add(tool_reply(("t1", "add", {"a": 2, "b": 3})))
        upstream.add(_cut(_answer_bytes(pieces, reply["escaped"]), reply["cuts"]))

        response = await client.post("/api/stream", json={"message": "go", "conversationId": "p"})
        raw = await response.read()
        assert response.status == 200
        raw.decode("utf-8")  # strict: no lone surrogate reached a frame
        events = parse_events(raw)
        assert [e["chunkIndex"] for e in events] == list(range(len(events)))
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "completion", events[-1]
        assert "completion" not in kinds[:-1] and "error" not in kinds

        stored = await (await client.get("/api/conversation/p")).json()
        messages = stored["messages"]
        if reply["tool_round"]:
            assert [m["role"] for m in messages[-3:-1]] == ["assistant", "tool"]
            assert messages[-3]["tool_calls"][0]["id"] == messages[-2]["tool_call_id"] == "t1"
            assert messages[-2]["content"] == "5"
        text = clean("".join(pieces))
        if text:
            assert messages[-1] == {"role": "assistant", "content": text}
        else:
            assert messages[-1]["role"] != "assistant" or messages[-1].get("tool_calls")

        deltas: dict[str, str] = {}
        for event in events:
            if event["type"] == "artifact_content":
                deltas[event["artifactId"]] = (
                    deltas.get(event["artifactId"], "") + event["contentDelta"]
                )
        completed = [e for e in events if e["type"] == "artifact_completed"]
        tally(f"artifacts completed: {min(len(completed), 2)}")
        tally(f"resumed from the last event: {reply['resume_at'] % len(events) == len(events) - 1}")
        for event in completed:
            assert event["content"] == deltas.get(event["artifactId"], ""), event
        assert [a["artifactId"] for a in stored["artifacts"]] == [
            e["artifactId"] for e in completed
        ]
        assert [a["content"] for a in stored["artifacts"]] == [e["content"] for e in completed]

        after = reply["resume_at"] % len(events)
        resumed = await client.get(
            "/api/conversation/p/stream", headers={"Last-Event-ID": f"1:{after}"}
        )
        if after == len(events) - 1:
            assert resumed.status == 204
        else:
            assert resumed.status == 200
            assert parse_events(await resumed.read()) == events[after + 1 :]
    finally:
        await client.close()
        await upstream.close()
