"""The async-generator stages of one turn, composed by `compose_turn()`.

    provider.stream() -> run_tools() -> extract_artifacts() [-> convert_fences()]
      model deltas       events          events                 events

Each stage takes the previous one as its first argument and wraps it in `aclosing()`, so closing
the last stage (a stop) closes every stage and the upstream response at once, in the turn's own
task. `run_tools` also records the turn's messages on the `Turn` as it goes, so the stored
history keeps the artifact markup the model wrote. The turn runner (`turns.py`) appends what
comes out to the turn's event log, and each protocol encodes that for its readers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import aclosing
from typing import Protocol

from streamchat.artifact_ids import ArtifactIds
from streamchat.artifacts import ArtifactParser, ParsedEvent
from streamchat.conversations import Turn
from streamchat.events import (
    Completion,
    ErrorEvent,
    Event,
    Finish,
    ModelDelta,
    Terminal,
    TextChunk,
    ToolApprovalRequired,
    ToolCall,
    ToolCompleted,
    ToolError,
    ToolExecuting,
    Usage,
    clean,
)
from streamchat.fences import FenceParser
from streamchat.providers.base import ModelRequest, Provider, Stream, UpstreamError
from streamchat.tools.registry import ToolFailure
from streamchat.toolsets.base import ToolContext, Tools

log = logging.getLogger(__name__)


class TextParser(Protocol):
    def feed(self, text: str) -> list[ParsedEvent]: ...

    def passes(self, text: str) -> bool:
        """True when `text` is prose as it is: then it need not be fed (its event goes on)."""
        ...

    def flush(self) -> list[ParsedEvent]: ...


async def run_tools(
    provider: Provider,
    turn: Turn,
    tools: Tools,
    model: str,
    max_rounds: int,
    max_reply_bytes: int = sys.maxsize,
) -> Stream[list[Event]]:
    """Model rounds until one asks for no tool: text streams through, tools run in between.

    The reply's text and tool arguments, over all rounds, stay within `max_reply_bytes`: past
    it the turn ends with `reply_too_large`, keeping the text up to the bound.
    """
    usage: Usage | None = None
    rounds = 0
    room = max_reply_bytes
    add_text = turn.add_text
    while True:
        calls: list[ToolCall] = []
        finish = Finish(None)
        request = ModelRequest(model, turn.history(), tools.schemas())
        try:
            async with aclosing(provider.stream(request)) as batches:
                async for batch in batches:
                    texts: list[Event] = []
                    for delta in batch:
                        # Type checks rather than `match`: this runs for every token.
                        if type(delta) is TextChunk:
                            text = delta.text
                            room -= len(text) if text.isascii() else len(text.encode())
                            if room < 0:
                                break
                            add_text(text)
                            texts.append(delta)
                        elif type(delta) is ToolCall:
                            calls.append(delta)
                        elif type(delta) is Finish:
                            finish = delta
                    if room < 0:
                        yield [*texts, *_cut_to_fit(turn, delta, room)]
                        yield [_too_large(turn, max_reply_bytes)]
                        return
                    if texts:
                        yield texts
        except UpstreamError as exc:
            # The one place an upstream failure is logged: the client only gets `exc.message`.
            log.warning(
                "upstream failed in conversation %s: %s (%s)",
                turn.conversation_id,
                exc.code,
                exc.detail,
            )
            yield [ErrorEvent(exc.message, exc.code)]
            return
        if finish.usage is not None:
            usage = finish.usage if usage is None else usage + finish.usage
            turn.usage = usage
        if not calls:
            model_used = finish.model or model
            completion = Completion(
                finish.reason, model_used, finish.id, turn.conversation_id, usage, turn.number
            )
            yield [completion]
            return
        room -= sum(len(c.name.encode()) + len(c.arguments.encode()) for c in calls)
        if room < 0:  # no tool runs and the round is not stored: the history stays valid
            yield [_too_large(turn, max_reply_bytes)]
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


def _cut_to_fit(turn: Turn, delta: ModelDelta, room: int) -> list[Event]:
    """The part of the text chunk that crossed the bound which still fits (`room` < 0)."""
    assert isinstance(delta, TextChunk)
    data = delta.text.encode()
    kept = data[: len(data) + room].decode(errors="ignore")  # never half a character
    if not kept:
        return []
    turn.add_text(kept)
    return [TextChunk(kept)]


def _too_large(turn: Turn, max_reply_bytes: int) -> ErrorEvent:
    log.warning(
        "reply in conversation %s passed MAX_REPLY_BYTES (%d): cut short",
        turn.conversation_id,
        max_reply_bytes,
    )
    return ErrorEvent(
        "The answer grew longer than this server allows, so it was cut short. "
        "The text so far was kept.",
        "reply_too_large",
    )


DENIED = "Denied by the user."


async def _tool_round(tools: Tools, turn: Turn, calls: list[ToolCall]) -> Stream[list[Event]]:
    """Run a round's calls concurrently; report them in the order the model listed them.

    A call that needs approval waits for it first (the turn emits `tool_approval_required`);
    a denied call, or one unanswered past the approval timeout, becomes a `tool_error` that the
    model reads like any other, so it can go on without it.
    """
    waiting = [call for call in calls if tools.requires_approval(call.name)]
    denied: set[str] = set()
    if waiting:
        yield [ToolApprovalRequired(call.name, call.id, call.arguments) for call in waiting]
        decisions = await asyncio.gather(*(turn.approval(call) for call in waiting))
        denied = {
            call.id for call, approved in zip(waiting, decisions, strict=True) if not approved
        }
    context = ToolContext(turn.owner, turn.conversation_id, turn.number)
    yield [
        ToolExecuting(call.name, call.id, call.arguments) for call in calls if call.id not in denied
    ]
    if len(calls) == 1 and not denied:  # the common round: nothing to run beside it
        outcome = await _run_tool(tools, calls[0], context)
        yield [outcome]
        await turn.add_tool_round(calls, [_result_text(outcome)])
        return
    tasks = [
        asyncio.ensure_future(
            _denied(call) if call.id in denied else _run_tool(tools, call, context)
        )
        for call in calls
    ]
    results: list[str] = []
    try:
        for task in tasks:
            outcome = await task
            results.append(_result_text(outcome))
            yield [outcome]
    finally:
        for task in tasks:
            task.cancel()
    # Only a complete round enters the history: never tool_calls without all their results.
    await turn.add_tool_round(calls, results)


def _result_text(outcome: ToolCompleted | ToolError) -> str:
    """What the model reads of a call's outcome."""
    return outcome.result if isinstance(outcome, ToolCompleted) else f"Error: {outcome.error}"


async def _denied(call: ToolCall) -> ToolError:
    return ToolError(call.name, call.id, call.arguments, DENIED, 0.0)


async def _run_tool(
    tools: Tools, call: ToolCall, context: ToolContext
) -> ToolCompleted | ToolError:
    started = time.perf_counter()
    # A tool's text comes from outside (a file's name read with `surrogateescape`, an MCP
    # server's `\ud800` escape): a lone surrogate in it could not be sent as UTF-8.
    try:
        result = await tools.run(call.name, call.arguments, context)
    except ToolFailure as exc:
        return ToolError(call.name, call.id, call.arguments, clean(str(exc)), _ms_since(started))
    return ToolCompleted(call.name, call.id, call.arguments, clean(result), _ms_since(started))


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
    passes = parser.passes
    async with aclosing(batches) as stream:
        async for batch in stream:
            out: list[Event] = []
            for event in batch:
                if type(event) is TextChunk:
                    if passes(event.text):
                        out.append(event)
                    else:
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


def _ms_since(started: float, digits: int = 3) -> float:
    return round((time.perf_counter() - started) * 1000, digits)


def compose_turn(
    provider: Provider,
    tools: Tools,
    turn: Turn,
    model: str,
    *,
    max_rounds: int,
    fences: bool,
    max_reply_bytes: int = sys.maxsize,
) -> Stream[list[Event]]:
    """The stages of one turn, model deltas to events: what every protocol then encodes."""
    ids = ArtifactIds(turn.artifact_ids)
    replies = run_tools(provider, turn, tools, model, max_rounds, max_reply_bytes)
    events = extract_artifacts(replies, ids)
    return convert_fences(events, ids) if fences else events
