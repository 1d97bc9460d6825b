"""streamchat's own SSE dialect: one frame per event, `id: <turn>:<chunkIndex>`.

    id: 2:3
    event: text
    data: {"type":"text","chunkIndex":3,"elapsedMs":250.4,"content":"Hello","textDelta":"Hello"}

The `id:` names one event of one turn, so a client that lost its connection can send it back as
`Last-Event-ID` and get exactly the events after it.
"""

from __future__ import annotations

import re

from aiohttp import web

from streamchat.eventbus import Followable
from streamchat.events import (
    ArtifactContent,
    ErrorEvent,
    Event,
    TextChunk,
    event_type,
    json_string,
    text_json,
    to_wire,
)
from streamchat.protocols.stream import SSE_HEADERS
from streamchat.protocols.stream import serve as serve_in
from streamchat.sse import frame_text
from streamchat.turns import RunningTurn

EVENT_ID = re.compile(r"^(\d{1,9}):(\d{1,9})$")


def encode(turn: int, first: int, events: list[Event], elapsed_ms: list[float]) -> bytes:
    """The frames of consecutive events, numbered from `first`, joined for one write."""
    if len(events) == 1:
        return frame(turn, first, events[0], elapsed_ms[0])
    frames = []
    elapsed, shown = None, ""
    for n, event in enumerate(events):
        index = first + n
        if type(event) is TextChunk:
            # The hot path, once per token: the same bytes as frame(). The events of one append
            # share one elapsed float, so its repr is made once.
            if elapsed_ms[n] is not elapsed:
                elapsed = elapsed_ms[n]
                shown = repr(elapsed)
            text = json_string(event.text)
            frames.append(
                f'id: {turn}:{index}\nevent: text\ndata: {{"type":"text","chunkIndex":{index},'
                f'"elapsedMs":{shown},"content":{text},"textDelta":{text}}}\n\n'
            )
        else:
            frames.append(_frame(turn, index, event, elapsed_ms[n]))
    return "".join(frames).encode()


def frame(turn: int, index: int, event: Event, elapsed: float) -> bytes:
    return _frame(turn, index, event, elapsed).encode()


def _frame(turn: int, index: int, event: Event, elapsed: float) -> str:
    # The hot paths, one per token: the same text as frame_text(), a third of the work.
    if type(event) is TextChunk:
        data = text_json(index, event.text, elapsed)
        return f"id: {turn}:{index}\nevent: text\ndata: {data}\n\n"
    if type(event) is ArtifactContent:
        artifact_id, delta = json_string(event.artifact_id), json_string(event.content_delta)
        return (
            f"id: {turn}:{index}\nevent: artifact_content\ndata: "
            f'{{"type":"artifact_content","chunkIndex":{index},"elapsedMs":{elapsed!r},'
            f'"artifactId":{artifact_id},"contentDelta":{delta}}}\n\n'
        )
    return frame_text(f"{turn}:{index}", event_type(event), to_wire(event, index, elapsed))


def parse_event_id(value: str) -> tuple[int, int] | None:
    """`"2:3"` -> `(2, 3)`; None when it is not an id this dialect sent."""
    match = EVENT_ID.match(value.strip())
    return (int(match[1]), int(match[2])) if match else None


class NativeEncoder:
    """streamchat's own dialect: every event as it is, numbered `<turn>:<chunkIndex>`."""

    headers = SSE_HEADERS

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        return encode(turn, first, events, elapsed)


async def serve(
    request: web.Request, turn_log: Followable, after: int, turn: RunningTurn | None
) -> web.StreamResponse:
    """Write the turn's events after index `after` in the native dialect."""
    return await serve_in(request, turn_log, after, turn, NativeEncoder())


async def tell_interrupted(
    request: web.Request, conversation_id: str, number: int, index: int
) -> web.StreamResponse:
    """The turn died with its process: its readers learn so instead of waiting forever."""
    response = web.StreamResponse(headers={**SSE_HEADERS, "X-Conversation-Id": conversation_id})
    await response.prepare(request)
    error = ErrorEvent("The server stopped during this answer.", "interrupted")
    await response.write(frame(number, index, error, 0.0))
    return response
