"""The pipeline stages on their own: batches in, batches out, one write per batch."""

from __future__ import annotations

import json
import time

import pytest

from streamchat.artifact_ids import ArtifactIds
from streamchat.events import (
    ArtifactContent,
    Completion,
    ErrorEvent,
    Event,
    TextChunk,
    event_type,
    to_wire,
)
from streamchat.pipeline import _frame, encode_events, extract_artifacts
from streamchat.providers.base import Stream
from streamchat.sse import encode_frame
from tests.conftest import parse_events


async def source(*batches: list[Event]) -> Stream[list[Event]]:
    for batch in batches:
        yield batch


@pytest.mark.parametrize(
    "text",
    ["Hello", 'quote " and \\ backslash', "line\nbreak\r\ttab", "é 🚀 日本 \u2028 \x00 \x1f", ""],
)
def test_fast_frames_are_byte_for_byte_the_general_encoding(text: str) -> None:
    started = time.perf_counter()
    for event in (TextChunk(text), ArtifactContent(f"id-{text}", text)):
        fast = _frame(event, 7, started)

        data = json.loads(fast.split(b"data: ", 1)[1])
        general = encode_frame(7, event_type(event), to_wire(event, 7, data["elapsedMs"]))
        assert fast == general


async def test_a_batch_becomes_one_write_and_numbering_runs_across_batches() -> None:
    batches = source(
        [TextChunk("a"), TextChunk("b"), TextChunk("c")],
        [TextChunk("d")],
        [Completion("stop", "m", "g", "conv")],
    )

    writes = [data async for data in encode_events(batches, time.perf_counter())]

    assert len(writes) == 3
    assert writes[0].count(b"\n\n") == 3
    events = parse_events(b"".join(writes))
    assert [e["chunkIndex"] for e in events] == [0, 1, 2, 3, 4]
    assert [e["type"] for e in events] == ["text"] * 4 + ["completion"]


async def test_nothing_follows_the_terminal_event_and_a_missing_one_is_supplied() -> None:
    after = source([ErrorEvent("boom", "upstream_error"), TextChunk("late")], [TextChunk("x")])
    missing = source([TextChunk("a")])

    cut = parse_events(b"".join([d async for d in encode_events(after, time.perf_counter())]))
    supplied = parse_events(b"".join([d async for d in encode_events(missing, 0.0)]))

    assert [e["type"] for e in cut] == ["error"]
    assert [e["type"] for e in supplied] == ["text", "error"]
    assert supplied[-1]["code"] == "internal"


async def test_artifact_split_across_batches_streams_and_flushes_before_the_terminal() -> None:
    batches = source(
        [TextChunk("Hi <arti"), TextChunk("fact title='a.txt'>\nbo")],
        [TextChunk("dy")],
        [Completion("stop", "m", "g", "conv")],
    )

    out = [e async for batch in extract_artifacts(batches, ArtifactIds()) for e in batch]

    kinds = [event_type(e) for e in out]
    assert kinds == [
        "text",
        "artifact_started",
        "artifact_content",
        "artifact_content",
        "artifact_completed",
        "completion",
    ]
