"""Serving a turn's event log to one reader, in whichever dialect the reader speaks.

Each dialect is an `Encoder`: a small stateful object that turns batches of streamchat's events
into that protocol's bytes, opening and closing its parts as it goes (a text part closed before
a tool call, a step finished after its tool results, the stream ended after the terminal event).
`serve()` is the one loop that every protocol shares: it attaches the reader to the turn (so a
turn with a reader is never abandoned), follows the log, writes each batch in one write with a
`: ping` on silence, and detaches when the reader leaves.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from streamchat.appkeys import PINGER, RUNNER
from streamchat.eventbus import Followable
from streamchat.eventlog import Push, TurnLog
from streamchat.events import Event
from streamchat.logs import TURN_LOG
from streamchat.sse_writer import SSEWriter
from streamchat.turns import RunningTurn

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class Encoder(Protocol):
    headers: dict[str, str]

    def encode(self, turn: int, first: int, events: list[Event], elapsed: list[float]) -> bytes:
        """The bytes of consecutive events of turn `turn`, numbered from `first`."""
        ...


async def serve(
    request: web.Request,
    turn_log: Followable,
    after: int,
    turn: RunningTurn | None,
    encoder: Encoder,
) -> web.StreamResponse:
    """Write the turn's events after index `after`, live until its terminal event."""
    app = request.app
    runner = app[RUNNER]
    request[TURN_LOG] = turn_log  # the access line tells how the turn ended
    if turn is not None:
        runner.attach(turn)
    try:
        response = web.StreamResponse(
            headers={**encoder.headers, "X-Conversation-Id": turn_log.conversation_id}
        )
        try:
            await response.prepare(request)
        except ConnectionResetError:
            return response
        async with SSEWriter(response, app[PINGER], request.transport) as writer:
            try:
                if isinstance(turn_log, TurnLog):
                    batches = turn_log.follow(after, _pusher(writer, encoder, turn_log))
                else:
                    batches = turn_log.follow(after)
                async for first, events, elapsed in batches:
                    if writer.failed is not None:
                        raise writer.failed
                    data = encoder.encode(turn_log.turn, first, events, elapsed)
                    if data:
                        await writer.write(data)
            except ConnectionResetError:
                log.info("a reader of conversation %s left mid-stream", turn_log.conversation_id)
            except Exception:
                # A bug in an encoder: end this reader's stream rather than leave it hanging
                # (the turn itself, and its other readers, go on).
                log.exception("could not encode conversation %s's events", turn_log.conversation_id)
        return response
    finally:
        if turn is not None:
            runner.detach(turn)


def _pusher(writer: SSEWriter, encoder: Encoder, turn_log: TurnLog) -> Push:
    """Writes a live turn's new events from the turn's own task, while the connection takes
    them without waiting; a write that would wait is left to the reader's task."""

    def push(first: int, events: list[Event], elapsed: list[float]) -> bool:
        if not writer.can_write_now():
            return False
        try:
            data = encoder.encode(turn_log.turn, first, events, elapsed)
            if data:
                writer.write_now(data)
        except Exception as exc:  # raised in the reader's task, which ends this reader
            writer.failed = exc
            return False
        return True

    return push
