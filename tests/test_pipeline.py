"""The pipeline stages on their own: batches in, batches out, one write per batch."""

from __future__ import annotations

import pytest

from streamchat.artifact_ids import ArtifactIds
from streamchat.events import (
    ArtifactContent,
    Completion,
    Event,
    TextChunk,
    event_type,
    to_wire,
)
from streamchat.pipeline import extract_artifacts
from streamchat.protocols import native
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
    for event in (TextChunk(text), ArtifactContent(f"id-{text}", text)):
        fast = native.frame(3, 7, event, 250.4)

        general = encode_frame("3:7", event_type(event), to_wire(event, 7, 250.4))
        assert fast == general


def test_a_batch_of_frames_is_byte_for_byte_the_general_encoding() -> None:
    texts = ["Hello", 'quote " and \\ backslash', "line\nbreak\r\ttab", "é 🚀 日本 \u2028 \x00", ""]
    batch: list[Event] = [TextChunk(t) for t in texts]
    batch.insert(2, ArtifactContent("a-1", "body"))
    shared = 250.4
    # One append's events share one elapsed float; a read across appends has several.
    elapsed = [shared, shared, shared, 0.1 + 0.2, 1e16, 7.0]

    write = native.encode(3, 7, batch, elapsed)

    general = b"".join(
        encode_frame(f"3:{7 + n}", event_type(event), to_wire(event, 7 + n, elapsed[n]))
        for n, event in enumerate(batch)
    )
    assert write == general


def test_a_batch_becomes_one_write_numbered_from_its_first_index() -> None:
    batch: list[Event] = [TextChunk("a"), TextChunk("b"), Completion("stop", "m", "g", "c", turn=2)]

    write = native.encode(2, 5, batch, [1.0, 1.0, 2.5])

    assert write.count(b"\n\n") == 3
    events = parse_events(write)
    assert [e["chunkIndex"] for e in events] == [5, 6, 7]
    assert [e["elapsedMs"] for e in events] == [1.0, 1.0, 2.5]
    assert events[-1]["turn"] == 2
    assert write.startswith(b"id: 2:5\n")


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("2:15", (2, 15)), (" 1:0 ", (1, 0)), ("15", None), ("a:b", None), ("1:2:3", None)],
)
def test_event_ids_parse_only_in_the_turn_colon_index_form(
    raw: str, parsed: tuple[int, int] | None
) -> None:
    assert native.parse_event_id(raw) == parsed


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
