"""Feeding a sans-IO text parser at every split, for the artifact and code-fence parser tests.

`feed_in_chunks` cuts a text into pieces of one size, feeds them, flushes, and merges adjacent
pieces, so the same reply split anywhere must come out equal; `merged` checks the invariants on
the way (no empty pieces, deltas that add up to the completed content).
"""

from __future__ import annotations

from streamchat.artifacts import ParsedEvent
from streamchat.events import ArtifactCompleted, ArtifactContent, TextChunk
from streamchat.pipeline import TextParser

CHUNK_SIZES = [1, 2, 3, 7, None]  # None: the whole text at once


def feed_in_chunks(parser: TextParser, text: str, size: int | None) -> list[ParsedEvent]:
    """Feed `text` in pieces of `size` (None: whole), flush, and merge adjacent pieces."""
    step = size or max(len(text), 1)
    return feed_split(parser, text, list(range(step, len(text), step)))


def feed_split(parser: TextParser, text: str, cuts: list[int]) -> list[ParsedEvent]:
    """Feed `text` cut at `cuts` (any integers, taken modulo its length + 1), flush, merge."""
    points = [*sorted({cut % (len(text) + 1) for cut in cuts}), len(text)]
    raw: list[ParsedEvent] = []
    start = 0
    for point in points:
        raw += parser.feed(text[start:point])
        start = point
    raw += parser.flush()
    return merged(raw)


def merged(raw: list[ParsedEvent]) -> list[ParsedEvent]:
    """Merge adjacent TextChunks and adjacent deltas, checking the invariants on the way."""
    events: list[ParsedEvent] = []
    deltas: dict[str, list[str]] = {}
    for event in raw:
        match event:
            case TextChunk(text=text):
                assert text, "no empty TextChunk"
                if events and isinstance(events[-1], TextChunk):
                    event = TextChunk(events[-1].text + text)
                    events.pop()
            case ArtifactContent(artifact_id=artifact_id, content_delta=delta):
                assert delta, "no empty delta"
                deltas.setdefault(artifact_id, []).append(delta)
                last = events[-1] if events else None
                if isinstance(last, ArtifactContent) and last.artifact_id == artifact_id:
                    event = ArtifactContent(artifact_id, last.content_delta + delta)
                    events.pop()
            case ArtifactCompleted(artifact_id=artifact_id, content=content):
                assert "".join(deltas.pop(artifact_id, [])) == content
        events.append(event)
    return events


def texts(events: list[ParsedEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextChunk)]


def completed(events: list[ParsedEvent]) -> list[ArtifactCompleted]:
    return [event for event in events if isinstance(event, ArtifactCompleted)]
