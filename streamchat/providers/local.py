"""The embedded model: a GGUF file run in-process by llama.cpp, behind the same `Provider` protocol.

Generation runs on one worker thread (the model is loaded once and is not thread-safe), so the
event loop never waits for it: requests queue on that thread's executor in arrival order, and a
turn whose client left sets its stop flag, which the worker checks at every token. Tool calls
use grammar-constrained decoding: a first constrained step chooses between `TOOL:` and `ANSWER:`,
then a tool call is generated under a JSON-schema grammar of the registered tools, so it is
always valid JSON naming a real tool with arguments that fit its schema. Answers stream sampled,
except after a tool result (greedy, and under `answer_grammar` when the result is a number); an
answer that only echoes the question goes on in the model's words, and one that ends inside a
code fence gets its closing fence, since only a cut at the token cap is a truncation.
The llama.cpp calls live in `LlamaEngine`; `LocalProvider` only speaks the `Engine` protocol, so
its queueing, cancellation and parsing are tested with scripted output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from streamchat.events import Finish, ModelDelta, TextChunk, ToolCall, Usage
from streamchat.fences import FenceParser
from streamchat.providers.base import Message, ModelRequest, Stream, UpstreamError
from streamchat.providers.local_prompt import (
    ANSWER,
    TOOL,
    answer_grammar,
    answer_messages,
    decision_messages,
    is_echo,
    tools_schema,
)

log = logging.getLogger(__name__)

_END = object()
Render = Callable[[list[Message]], list[dict[str, str]]]


class Engine(Protocol):
    """What the provider needs from a model runtime. All methods block; call them on a thread."""

    model_name: str

    def prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat template applied, ending where the assistant's reply begins."""

    def count_tokens(self, text: str) -> int: ...

    def choose(self, prompt: str, options: list[str]) -> str:
        """Which option the model continues `prompt` with (grammar-constrained)."""

    def complete_json(self, prompt: str, schema: dict[str, Any]) -> str:
        """JSON that fits `schema` (grammar-constrained), continuing `prompt`."""

    def stream(
        self,
        prompt: str,
        stop: threading.Event,
        *,
        greedy: bool = False,
        go_on: bool = False,
        grammar: str | None = None,
    ) -> Generator[str, None, str]:
        """Text pieces continuing `prompt`, until the end, the token cap or `stop`.

        Returns why it ended: `stop` (the model ended, or `stop` was set) or `length` (the cap).
        `greedy` decodes at temperature 0 whatever the configured temperature; `go_on` forbids
        ending before a word has been said; `grammar` (GBNF) constrains the text.
        """


class LocalProvider:
    name = "local"

    def __init__(
        self, engine: Engine, context_tokens: int = 4096, *, owns_engine: bool = False
    ) -> None:
        self._engine = engine
        self._owns_engine = owns_engine
        self._context_tokens = context_tokens
        # One thread: generations run one at a time, in the order they were asked for.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="local-model")

    @property
    def model_name(self) -> str:
        return self._engine.model_name

    def close(self) -> None:
        """At shutdown: every turn has set its stop flag, so the worker ends within a token."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(self._engine, "close", None)
        if self._owns_engine and callable(close):
            close()

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (shutting down): nobody is listening
                stop.set()

        loop.run_in_executor(self._executor, self._run_round, request, emit, stop)
        try:
            ended = False
            while not ended:
                # What the worker made while the loop was busy goes out as one batch.
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                batch: list[ModelDelta] = []
                error: UpstreamError | None = None
                for item in items:
                    if isinstance(item, UpstreamError):
                        error = item
                    elif item is _END:
                        ended = True
                    else:
                        assert isinstance(item, TextChunk | ToolCall | Finish)
                        batch.append(item)
                if batch:
                    yield batch
                if error is not None:
                    raise error
        finally:
            stop.set()  # the worker notices at its next token

    def _run_round(
        self, request: ModelRequest, emit: Callable[[object], None], stop: threading.Event
    ) -> None:
        try:
            if not stop.is_set():
                self._generate(request, emit, stop)
        except Exception as exc:
            log.exception("local model failed")
            message = "The offline model failed to answer. Try again in a moment."
            emit(UpstreamError("local_model_error", message, detail=repr(exc)))
        finally:
            emit(_END)

    def _generate(
        self, request: ModelRequest, emit: Callable[[object], None], stop: threading.Event
    ) -> None:
        engine, tools = self._engine, request.tools
        generation_id = f"local-{uuid.uuid4().hex[:16]}"
        prompt_tokens = 0
        if tools:
            decide = self._fit(request.messages, lambda h: decision_messages(h, tools))
            prompt_tokens = engine.count_tokens(decide)
            if engine.choose(decide, [TOOL, ANSWER]) == TOOL:
                raw = engine.complete_json(decide + TOOL, tools_schema(tools))
                call = _tool_call(raw)
                emit(call)
                usage = _usage(prompt_tokens, engine.count_tokens(raw))
                emit(Finish("tool_calls", engine.model_name, generation_id, usage))
                return
        prompt = self._fit(request.messages, answer_messages)
        prompt_tokens += engine.count_tokens(prompt)
        # After a tool result there is one right answer, the result: sampling is what made the
        # 135M model write "25 + 17 = 32" under a card that says 42 (greedy, it copies it).
        after_tool = bool(request.messages) and request.messages[-1]["role"] == "tool"
        grammar = answer_grammar(request.messages) if after_tool else None
        pieces: list[str] = []
        answer = engine.stream(prompt, stop, greedy=after_tool, grammar=grammar)
        reason = self._answer(answer, pieces, emit)
        if reason == "stop" and not stop.is_set() and is_echo("".join(pieces), request.messages):
            # The 135M model answers "Hello!" with "Hello!" and stops. An echo is no answer:
            # let it go on from there, in its own words ("... I'm here to help. What can I
            # assist you with?"), only not end at once.
            go_on = engine.stream(
                prompt + "".join(pieces), stop, greedy=after_tool, go_on=True, grammar=grammar
            )
            reason = self._answer(go_on, pieces, emit)
        if stop.is_set():
            reason = "cancelled"
        elif reason == "stop" and (closing := _closing_fence(pieces)):
            pieces.append(closing)
            emit(TextChunk(closing))
        usage = _usage(prompt_tokens, engine.count_tokens("".join(pieces)))
        emit(Finish(reason, engine.model_name, generation_id, usage))

    @staticmethod
    def _answer(
        answer: Generator[str, None, str], pieces: list[str], emit: Callable[[object], None]
    ) -> str:
        """Emit an answer's pieces as they come; return why it ended."""
        while True:
            try:
                piece = next(answer)
            except StopIteration as end:
                reason: str = end.value
                return reason
            pieces.append(piece)
            emit(TextChunk(piece))

    def _fit(self, messages: list[Message], render: Render) -> str:
        """The prompt, dropping the oldest turns until it leaves room for an answer."""
        history = list(messages)
        budget = self._context_tokens * 3 // 4
        while True:
            prompt = self._engine.prompt(render(history))
            first_turn = 1 if history and history[0]["role"] == "system" else 0
            if len(history) <= first_turn + 1 or self._engine.count_tokens(prompt) <= budget:
                return prompt
            del history[first_turn]


def _closing_fence(pieces: list[str]) -> str:
    """The closing fence an answer that ended of its own accord inside a code block lacks.

    Small models often stop right after the code's last line (SmolLM2-135M did in about half
    of its runs for "Create a Python hello world function"): the code is complete, and only a
    reply cut at the token cap should have its block marked truncated.
    """
    fences = FenceParser()
    fences.feed("".join(pieces))
    return fences.closing()


def _tool_call(raw: str) -> ToolCall:
    """The grammar guarantees the shape; a cut-off reply (token cap) is still caught here."""
    try:
        call = json.loads(raw)
        name, arguments = call["name"], call["arguments"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UpstreamError(
            "local_model_error", "The local model produced an incomplete tool call"
        ) from None
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", str(name), json.dumps(arguments))


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens, 0.0)
