"""The async-generator stages of one turn.

    provider.stream() -> run_tools() -> extract_artifacts() [-> convert_fences()] -> encode_events()
      model deltas       events          events                 events                frames

Each stage takes the previous one as its first argument and wraps it in `aclosing()`, so closing
the last stage (the client left) closes every stage and the upstream response at once, in the
request's own task. `run_tools` also records the turn's messages on the `Turn` as it goes, so the
stored history keeps the artifact markup the model wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing
from typing import Protocol

from streamchat.artifact_ids import ArtifactIds
from streamchat.artifacts import ArtifactParser, ParsedEvent
from streamchat.conversations import Turn
from streamchat.events import (
    ArtifactContent,
    Completion,
    ErrorEvent,
    Event,
    Finish,
    Terminal,
    TextChunk,
    ToolCall,
    ToolCompleted,
    ToolError,
    ToolExecuting,
    Usage,
    event_type,
    to_wire,
)
from streamchat.fences import FenceParser
from streamchat.providers.base import ModelRequest, Provider, Stream, UpstreamError
from streamchat.sse import encode_frame
from streamchat.tools.registry import ToolFailure, ToolRegistry

log = logging.getLogger(__name__)


class TextParser(Protocol):
    def feed(self, text: str) -> list[ParsedEvent]: ...

    def flush(self) -> list[ParsedEvent]: ...


_json_string = json.JSONEncoder(ensure_ascii=False).encode


async def run_tools(
    provider: Provider,
    turn: Turn,
    tools: ToolRegistry,
    model: str,
    max_rounds: int,
) -> Stream[list[Event]]:
    """Model rounds until one asks for no tool: text streams through, tools run in between."""
    usage: Usage | None = None
    rounds = 0
    while True:
        calls: list[ToolCall] = []
        finish = Finish(None)
        request = ModelRequest(model, turn.history(), tools.schemas())
        try:
            async with aclosing(provider.stream(request)) as batches:
                async for batch in batches:
                    texts: list[Event] = []
                    for delta in batch:
                        match delta:
                            case TextChunk(text=text):
                                turn.add_text(text)
                                texts.append(delta)
                            case ToolCall():
                                calls.append(delta)
                            case Finish():
                                finish = delta
                    if texts:
                        yield texts
        except UpstreamError as exc:
            # The one place an upstream failure is logged: the client only gets `exc.message`.
            log.warning(
                "upstream failed in conversation %s: %s (%s)",
                turn.conversation.id,
                exc.code,
                exc.detail,
            )
            yield [ErrorEvent(exc.message, exc.code)]
            return
        if finish.usage is not None:
            usage = finish.usage if usage is None else usage + finish.usage
        if not calls:
            conversation_id = turn.conversation.id
            model_used = finish.model or model
            yield [Completion(finish.reason, model_used, finish.id, conversation_id, usage)]
            return
        if rounds >= max_rounds:
            yield [
                ErrorEvent(
                    f"The model was still asking for tools after {max_rounds} rounds of tool "
                    "calls; the turn was stopped there.",
                    "tool_loop_limit",
                )
            ]
            return
        rounds += 1
        async for events in _tool_round(tools, turn, calls):
            yield events


async def _tool_round(
    tools: ToolRegistry, turn: Turn, calls: list[ToolCall]
) -> Stream[list[Event]]:
    """Run a round's calls concurrently; report them in the order the model listed them."""
    yield [ToolExecuting(call.name, call.id, call.arguments) for call in calls]
    tasks = [asyncio.ensure_future(_run_tool(tools, call)) for call in calls]
    results: list[str] = []
    try:
        for task in tasks:
            outcome = await task
            results.append(
                outcome.result if isinstance(outcome, ToolCompleted) else f"Error: {outcome.error}"
            )
            yield [outcome]
    finally:
        for task in tasks:
            task.cancel()
    # Only a complete round enters the history: never tool_calls without all their results.
    turn.add_tool_round(calls, results)


async def _run_tool(tools: ToolRegistry, call: ToolCall) -> ToolCompleted | ToolError:
    started = time.perf_counter()
    try:
        result = await tools.run(call.name, call.arguments)
    except ToolFailure as exc:
        return ToolError(call.name, call.id, call.arguments, str(exc), _ms_since(started))
    return ToolCompleted(call.name, call.id, call.arguments, result, _ms_since(started))


# The two text stages return the parsing generator itself rather than wrapping it in one more:
# every generator level is resumed once per token when the upstream sends one token per read.


def extract_artifacts(batches: Stream[list[Event]], ids: ArtifactIds) -> Stream[list[Event]]:
    """`<artifact>` tags in the text become artifact events; the prose around them stays text."""
    return _parse_text(batches, ArtifactParser(ids))


def convert_fences(batches: Stream[list[Event]], ids: ArtifactIds) -> Stream[list[Event]]:
    """Markdown code fences in the prose become artifact events (after `extract_artifacts`,
    so a fence inside an `<artifact>` body stays content)."""
    return _parse_text(batches, FenceParser(ids))


async def _parse_text(batches: Stream[list[Event]], parser: TextParser) -> Stream[list[Event]]:
    """Feed text events to a sans-IO parser; held-back text is released before the end."""
    async with aclosing(batches) as stream:
        async for batch in stream:
            out: list[Event] = []
            for event in batch:
                if isinstance(event, TextChunk):
                    out += parser.feed(event.text)
                    continue
                if isinstance(event, Terminal):
                    out += parser.flush()
                out.append(event)
            if out:
                yield out
    rest: list[Event] = [*parser.flush()]
    if rest:
        yield rest


async def encode_events(batches: Stream[list[Event]], started: float) -> Stream[bytes]:
    """Events in, SSE frames out: numbered, timed, and always closed by one terminal event.
    The frames of one batch are joined, so they go out in one write."""
    index = 0
    async with aclosing(batches) as stream:
        try:
            async for batch in stream:
                frames = []
                for event in batch:
                    frames.append(_frame(event, index, started))
                    index += 1
                    if isinstance(event, Terminal):
                        yield b"".join(frames)
                        return
                yield b"".join(frames)
        except Exception:
            # Headers are out: a failure can only be told as the terminal event.
            log.exception("turn failed")
            error = ErrorEvent("The server failed to finish this reply.", "internal")
            yield _frame(error, index, started)
            return
    yield _frame(ErrorEvent("The reply ended unexpectedly.", "internal"), index, started)


def _frame(event: Event, index: int, started: float) -> bytes:
    elapsed = _ms_since(started, digits=1)
    # The hot paths, one per token: the same bytes as encode_frame(), a third of the work.
    if type(event) is TextChunk:
        text = _json_string(event.text)
        return (
            f'id: {index}\nevent: text\ndata: {{"type":"text","chunkIndex":{index},'
            f'"elapsedMs":{elapsed!r},"content":{text},"textDelta":{text}}}\n\n'
        ).encode()
    if type(event) is ArtifactContent:
        artifact_id, delta = _json_string(event.artifact_id), _json_string(event.content_delta)
        return (
            f"id: {index}\nevent: artifact_content\ndata: "
            f'{{"type":"artifact_content","chunkIndex":{index},"elapsedMs":{elapsed!r},'
            f'"artifactId":{artifact_id},"contentDelta":{delta}}}\n\n'
        ).encode()
    return encode_frame(index, event_type(event), to_wire(event, index, elapsed))


def _ms_since(started: float, digits: int = 3) -> float:
    return round((time.perf_counter() - started) * 1000, digits)
