"""The turn runner: each turn runs in a task of its own, owned by the app, not by a request.

A turn's task waits for its conversation (turns run one at a time), begins the turn in the store,
runs the pipeline, and appends every batch of events to the turn's `TurnLog`. Responses are only
readers of that log: the `POST` that started the turn, any number of joins, and resumes after a
dropped connection. When the last reader leaves, the turn goes on for `RESUME_GRACE_SECONDS`
waiting for one to come back, then is stopped. A stop (the stop route, a delete, the grace, or a
shutdown) cancels the task where it waits; the pipeline closes the upstream response, the text
streamed so far is stored, and the log ends with one terminal event that every reader sees.
A turn that runs past `MAX_TURN_SECONDS` ends the same way, with `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from streamchat.conversations import Turn
from streamchat.eventbus import EventBus
from streamchat.eventlog import RetainedLogs, TurnLog
from streamchat.events import (
    ArtifactCompleted,
    Completion,
    ErrorEvent,
    Event,
    Terminal,
    TextChunk,
    ToolCall,
    ToolExecuting,
    Usage,
)
from streamchat.ids import counted_hex
from streamchat.providers.base import Message, Stream
from streamchat.stores.base import LeaseLost, Outcome, Store, StoreUnavailable
from streamchat.stores.ephemeral import EphemeralStore
from streamchat.toolsets.approval import Approvals

if TYPE_CHECKING:
    from streamchat.metrics import Metrics
    from streamchat.tracing import Tracing, TurnSpan

log = logging.getLogger(__name__)

StopReason = Literal["cancelled", "abandoned", "shutting_down", "deleted"]
Compose = Callable[[Turn, str], Stream[list[Event]]]
# Told when a turn ends, whatever its outcome (a turn stopped before it began included), with the
# usage the upstream reported over its rounds, if any; before the terminal event is seen.
OnEnd = Callable[["TurnRequest", Terminal, Usage | None], Awaitable[None]]
# How long the end of a turn waits for `on_end` at most.
ON_END_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class TurnRequest:
    owner: str
    conversation_id: str
    message: str
    model: str
    regenerate: bool = False
    # The whole history, when the conversation is not kept (OpenAI requests without an id).
    history: list[Message] | None = None
    turn_id: str = field(default_factory=counted_hex)


class RunningTurn:
    """A turn in flight: queued for its conversation, beginning, running or ending."""

    def __init__(self, request: TurnRequest) -> None:
        self.request = request
        self.log = TurnLog(request.owner, request.conversation_id)
        self.phase: Literal["queued", "beginning", "running", "ending"] = "queued"
        self.created = time.monotonic()
        self.readers = 0
        self.paused = 0  # tool calls waiting for approval: the grace does not end such a turn
        self.stop_reason: StopReason | None = None
        self.task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def number(self) -> int:
        return self.log.turn


class TurnRunner:
    def __init__(
        self,
        store: Store,
        compose: Compose,
        system_prompt: str,
        *,
        grace_seconds: float,
        retention_seconds: float,
        retention_bytes: int,
        bus: EventBus | None = None,
        approval_timeout: float = 300.0,
        on_end: OnEnd | None = None,
        max_turn_seconds: float = 0.0,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        log_content: bool = False,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.tracing = tracing
        self.log_content = log_content
        self.bus = bus
        self.on_end = on_end
        self.approvals = Approvals()
        self.approval_timeout = approval_timeout
        self.compose = compose
        self.system_prompt = system_prompt
        self.grace_seconds = grace_seconds
        self.max_turn_seconds = max_turn_seconds  # 0: no deadline
        self.retained = RetainedLogs(retention_seconds, retention_bytes)
        self.draining = False
        self._running: dict[tuple[str, str], RunningTurn] = {}
        self._inflight: set[RunningTurn] = set()
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Turns in flight, queued ones included."""
        return len(self._inflight)

    def readers(self) -> int:
        """Readers attached to the turns in flight here."""
        return sum(turn.readers for turn in self._inflight)

    def start(self, request: TurnRequest) -> RunningTurn:
        """Queue a turn; the caller attaches as its first reader before yielding to the loop."""
        turn = RunningTurn(request)
        self._inflight.add(turn)
        # The task copies this context: the request's id and trace span go with the turn.
        turn.task = asyncio.create_task(self._run(turn), name="turn")
        if self.metrics is not None:
            self.metrics.turns_started.inc()
        return turn

    def running(self, owner: str, conversation_id: str) -> RunningTurn | None:
        return self._running.get((owner, conversation_id))

    def find_log(self, owner: str, conversation_id: str, number: int) -> TurnLog | None:
        """The log of that turn, while it runs or while it is retained."""
        turn = self._running.get((owner, conversation_id))
        if turn is not None and turn.number == number:
            return turn.log
        return self.retained.get(owner, conversation_id, number)

    def attach(self, turn: RunningTurn) -> None:
        turn.readers += 1
        if turn._grace is not None:
            turn._grace.cancel()
            turn._grace = None

    def detach(self, turn: RunningTurn) -> None:
        turn.readers -= 1
        if turn.readers > 0 or turn.log.finished or turn.stop_reason is not None:
            return
        if self.grace_seconds <= 0:
            self._stop(turn, "abandoned")
        else:
            self._arm_grace(turn)

    async def stop(
        self, owner: str, conversation_id: str, reason: StopReason = "cancelled"
    ) -> int | None:
        """Stop the conversation's running turn (or, when none runs yet, the first one waiting
        to); its number once it has ended (0 for one that never began), or None."""
        turn = self._running.get((owner, conversation_id))
        if turn is None:
            waiting = [
                t
                for t in self._inflight
                if t.request.owner == owner
                and t.request.conversation_id == conversation_id
                and t.stop_reason is None
            ]
            if not waiting:
                return None
            turn = min(waiting, key=lambda t: t.created)
        self._stop(turn, reason)
        await self._wait(turn)
        return turn.number

    async def stop_all(self, owner: str, conversation_id: str, reason: StopReason) -> None:
        """Stop every turn of a conversation, queued ones too (a delete)."""
        mine = [
            t
            for t in self._inflight
            if t.request.owner == owner and t.request.conversation_id == conversation_id
        ]
        for turn in mine:
            self._stop(turn, reason)
        for turn in mine:
            await self._wait(turn)
        self.retained.forget(owner, conversation_id)

    def stop_requested(self, owner: str, conversation_id: str) -> None:
        """Another process asked to stop this conversation's turn."""
        turn = self._running.get((owner, conversation_id))
        if turn is not None:
            self._stop(turn, "cancelled")

    def bus_message(self, message: dict[str, Any]) -> None:
        """A stop or an approval that another process took for a turn this one may run, or a
        conversation another process deleted."""
        owner, conversation_id = message.get("owner"), message.get("conversationId")
        if not isinstance(owner, str) or not isinstance(conversation_id, str):
            return
        if message.get("op") == "stop":
            self.stop_requested(owner, conversation_id)
        elif message.get("op") == "deleted":
            self.retained.forget(owner, conversation_id)
        elif message.get("op") == "approve" and isinstance(message.get("toolId"), str):
            approved = message.get("approved") is True
            self.approvals.decide(owner, conversation_id, message["toolId"], approved)

    async def _approval(self, turn: RunningTurn, call: ToolCall) -> bool:
        turn.paused += 1
        try:
            request = turn.request
            return await self.approvals.wait(
                request.owner, request.conversation_id, call.id, self.approval_timeout
            )
        finally:
            turn.paused -= 1
            if not turn.paused and turn._grace is not None:
                # No reader while a person decided: the grace counts from the decision, so a
                # client that approved from elsewhere has all of it to come back.
                self._arm_grace(turn)

    async def drain(self, grace_seconds: float) -> None:
        """Refuse new turns; give running ones `grace_seconds`, then stop them."""
        self.draining = True
        tasks = [t.task for t in self._inflight if t.task is not None]
        if tasks:
            log.info("waiting up to %.0f s for %d turn(s) to finish", grace_seconds, len(tasks))
            await asyncio.wait(tasks, timeout=grace_seconds)
        for turn in list(self._inflight):
            self._stop(turn, "shutting_down")
        for turn in list(self._inflight):
            await self._wait(turn)
        if self._background:  # the terminal events on their way to the other processes
            await asyncio.wait(list(self._background), timeout=2.0)

    # --- inside the turn's task -------------------------------------------------------------

    async def _run(self, turn: RunningTurn) -> None:
        request = turn.request
        key = (request.owner, request.conversation_id)
        terminal: Terminal | None = None
        store = self.store if request.history is None else EphemeralStore(request.history)
        state: Turn | None = None
        span = None
        if self.tracing is not None:
            span = self.tracing.start_turn(request.conversation_id, request.model)
        try:
            async with store.lock(*key):
                if turn.stop_reason is not None:
                    terminal = _terminal_for(turn, None)
                    return
                turn.phase = "beginning"
                begun = await store.begin_turn(
                    *key, self.system_prompt, request.message, regenerate=request.regenerate
                )
                state = Turn(store, request.owner, request.conversation_id, begun)
                state.approval = partial(self._approval, turn)
                turn.log.turn = begun.number
                turn.log.start_clock()
                self._running[key] = turn
                if self.bus is not None and request.history is None:
                    self._keep(self.bus.mirror(turn.log))
                try:
                    terminal = await self._pump(turn, state)
                finally:
                    turn.phase = "ending"
                    # The answer (or what streamed of it) is stored before any reader sees
                    # the terminal event, and even when the task is being cancelled.
                    await asyncio.shield(self._end(state, _outcome(terminal, turn)))
        except LeaseLost:
            log.warning("turn of conversation %s lost its lease: another process took over", key[1])
            terminal = ErrorEvent(
                "This answer was interrupted: the server lost hold of the conversation. "
                "Send the message again.",
                "interrupted",
            )
        except StoreUnavailable:
            log.warning("store unavailable during a turn of conversation %s", key[1])
            terminal = ErrorEvent(
                "The conversation store could not be reached. Try again in a moment.",
                "store_unavailable",
            )
        except asyncio.CancelledError:
            if turn.stop_reason is None:
                raise
            _uncancel()
            terminal = _terminal_for(turn, None)
        except Exception:
            log.exception("turn of conversation %s failed", key[1])
            terminal = ErrorEvent("The server failed to finish this reply.", "internal")
        finally:
            if terminal is None:  # only when cancelled from outside the runner
                terminal = ErrorEvent("The server is shutting down.", "shutting_down")
            try:
                if self.on_end is not None:
                    await self._tell_end(turn, terminal, state.usage if state else None)
            finally:
                # From here to the end nothing awaits: the log goes from running to retained at
                # once, so a reader resuming right now always finds it.
                turn.log.append([terminal])
                turn.log.close()
                self._inflight.discard(turn)
                if turn._grace is not None:
                    turn._grace.cancel()
                if turn.log.turn:
                    self.retained.add(turn.log)
                if self._running.get(key) is turn:
                    del self._running[key]
                self._observe_end(turn, terminal, state.usage if state else None, span)

    async def _pump(self, turn: RunningTurn, state: Turn) -> Terminal:
        """Run the pipeline into the log until its terminal event; a stop ends it early."""
        turn.phase = "running"
        if turn.stop_reason is not None:  # stopped while it was beginning
            return _terminal_for(turn, state)
        append = turn.log.append
        # The whole turn's deadline: a reply dripping a byte at a time never trips the
        # upstream's read timeout, which only measures silence.
        deadline = asyncio.timeout(self.max_turn_seconds or None)
        try:
            async with deadline, aclosing(self.compose(state, turn.request.model)) as batches:
                async for batch in batches:
                    for index, event in enumerate(batch):
                        if type(event) is TextChunk:  # most events: nothing to do here
                            continue
                        if isinstance(event, ArtifactCompleted):
                            state.artifacts.append(_artifact_record(event, state.number))
                        elif isinstance(event, Terminal):
                            # The terminal event waits until the turn is stored (_run).
                            if index:
                                append(batch[:index])
                            return event
                    # A round's `tool_executing` waits for the loop's next turn: the result of a
                    # call that never waits goes out in the same write.
                    append(batch, bool(batch) and type(batch[0]) is ToolExecuting)
        except asyncio.CancelledError:
            if turn.stop_reason is None:
                raise
            _uncancel()
            return _terminal_for(turn, state)
        except (StoreUnavailable, LeaseLost):
            raise
        except TimeoutError:
            if not deadline.expired():
                log.exception(
                    "turn %d of conversation %s failed", state.number, state.conversation_id
                )
                return ErrorEvent("The server failed to finish this reply.", "internal")
            log.warning(
                "turn %d of conversation %s passed MAX_TURN_SECONDS (%g s): cut short",
                state.number,
                state.conversation_id,
                self.max_turn_seconds,
            )
            return ErrorEvent(
                f"The answer took longer than {self.max_turn_seconds:g} s, so it was cut short. "
                "The text so far was kept.",
                "timeout",
            )
        except Exception:
            log.exception("turn %d of conversation %s failed", state.number, state.conversation_id)
            return ErrorEvent("The server failed to finish this reply.", "internal")
        return ErrorEvent("The reply ended unexpectedly.", "internal")

    def _observe_end(
        self, turn: RunningTurn, terminal: Terminal, usage: Usage | None, span: TurnSpan | None
    ) -> None:
        """The turn's metrics, the end of its span, and its one log line."""
        outcome = outcome_label(terminal)
        seconds = time.monotonic() - turn.created
        events = turn.log.events
        # The first event is what the reader saw first (text, a tool call, an artifact); a log
        # of the terminal event alone had none.
        first = turn.log.elapsed_ms[0] / 1000 if len(events) > 1 else None
        if self.metrics is not None:
            self.metrics.turn_ended(outcome, seconds, first, turn.request.model, usage)
        if span is not None:
            span.end(turn.number, outcome, usage)
        if log.isEnabledFor(logging.INFO):
            _log_end(turn, outcome, seconds, first, usage, self.log_content)

    async def _tell_end(self, turn: RunningTurn, terminal: Terminal, usage: Usage | None) -> None:
        """Call `on_end`; its failure is logged and never reaches the turn's readers."""
        assert self.on_end is not None
        try:
            async with asyncio.timeout(ON_END_SECONDS):
                await self.on_end(turn.request, terminal, usage)
        except Exception:
            log.exception(
                "the end of a turn of conversation %s could not be reported",
                turn.request.conversation_id,
            )

    async def _end(self, state: Turn, outcome: Outcome) -> None:
        try:
            await state.end(outcome)
        except StoreUnavailable:
            log.warning(
                "could not store the end of turn %d of conversation %s: store unavailable",
                state.number,
                state.conversation_id,
            )

    # --- stopping ---------------------------------------------------------------------------

    def _arm_grace(self, turn: RunningTurn) -> None:
        """Stop the turn `grace_seconds` from now unless a reader comes (the timer it had, if
        any, is replaced)."""
        if turn._grace is not None:
            turn._grace.cancel()
        loop = asyncio.get_running_loop()
        turn._grace = loop.call_later(self.grace_seconds, self._abandon, turn)

    def _abandon(self, turn: RunningTurn) -> None:
        turn._grace = None
        if turn.readers == 0 and turn.paused:  # waiting for a person: the approval timeout rules
            self._arm_grace(turn)
        elif turn.readers == 0 and self.bus is not None:
            self._keep(self._abandon_unless_read_elsewhere(turn))
        elif turn.readers == 0:
            log.info(
                "no reader came back to turn %d of conversation %s: stopped",
                turn.number,
                turn.request.conversation_id,
            )
            self._stop(turn, "abandoned")

    async def _abandon_unless_read_elsewhere(self, turn: RunningTurn) -> None:
        assert self.bus is not None
        request = turn.request
        try:
            elsewhere = await self.bus.has_readers(
                request.owner, request.conversation_id, turn.number
            )
        except StoreUnavailable:
            elsewhere = False
        if turn.readers > 0 or turn.log.finished:
            return
        if elsewhere:  # a reader on another process: look again after another grace
            self._arm_grace(turn)
        else:
            self._stop(turn, "abandoned")

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a background task of the runner's, keeping a reference until it is done."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stop(self, turn: RunningTurn, reason: StopReason) -> None:
        if turn.stop_reason is not None or turn.log.finished:
            return
        turn.stop_reason = reason
        # Cancel only where the task waits on something safe to abandon: the conversation's
        # lock or the pipeline. A store write in flight finishes, and the stop is seen after it.
        if turn.phase in ("queued", "running") and turn.task is not None:
            turn.task.cancel()

    async def _wait(self, turn: RunningTurn) -> None:
        if turn.task is not None and not turn.task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(turn.task)


def outcome_label(terminal: Event | None) -> str:
    """A turn's outcome as metrics and logs name it: completed, cancelled or error:<code>."""
    if isinstance(terminal, Completion):
        return "cancelled" if terminal.finish_reason == "cancelled" else "completed"
    if isinstance(terminal, ErrorEvent):
        return f"error:{terminal.code}"
    return "unfinished"


def _log_end(
    turn: RunningTurn,
    outcome: str,
    seconds: float,
    first: float | None,
    usage: Usage | None,
    content: bool,
) -> None:
    request = turn.request
    fields: dict[str, Any] = {
        "conversation_id": request.conversation_id,
        "turn": turn.number or None,
        "outcome": outcome,
        "duration_ms": round(seconds * 1000, 1),
        "first_event_ms": round(first * 1000, 1) if first is not None else None,
        "model": request.model,
    }
    head = f"turn {turn.number} of conversation {request.conversation_id}: {outcome}"
    head += f" in {seconds:.2f} s"
    if first is not None:
        head += f" (first event after {first:.2f} s)"
    words = [head]
    if usage is not None:
        fields |= {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost": usage.cost,
        }
        spent = f", ${usage.cost:.6f}" if usage.cost is not None else ""
        words.append(
            f"{request.model}: {usage.prompt_tokens}+{usage.completion_tokens} tokens{spent}"
        )
    if content:  # LOG_CONTENT=1 only: what the user asked and what streamed back
        answer = "".join(e.text for e in turn.log.events if type(e) is TextChunk)
        fields |= {"prompt": request.message, "answer": answer}
        words.append(f"prompt {request.message!r} answer {answer!r}")
    log.info("; ".join(words), extra={"fields": fields})


def _terminal_for(turn: RunningTurn, state: Turn | None) -> Terminal:
    if turn.stop_reason == "shutting_down":
        return ErrorEvent(
            "The server is restarting; the answer so far was kept. Send the message again "
            "in a moment.",
            "shutting_down",
        )
    request = turn.request
    return Completion(
        "cancelled",
        request.model,
        None,
        request.conversation_id,
        None,
        turn=state.number if state is not None else None,
    )


def _outcome(terminal: Terminal | None, turn: RunningTurn) -> Outcome:
    if isinstance(terminal, Completion):
        return "cancelled" if terminal.finish_reason == "cancelled" else "completed"
    if terminal is None and turn.stop_reason is None:
        return "interrupted"
    return "error" if terminal is not None else "cancelled"


def _artifact_record(event: ArtifactCompleted, turn: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "artifactId": event.artifact_id,
        "artifactType": event.artifact_type,
        "title": event.title,
        "content": event.content,
        "turn": turn,
    }
    if event.language is not None:
        record["language"] = event.language
    if event.truncated:
        record["truncated"] = True
    return record


def _uncancel() -> None:
    """The runner asked for this cancellation itself and has handled it."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
