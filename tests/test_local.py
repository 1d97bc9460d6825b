"""The local provider with a scripted engine: queueing, cancellation, tool calls, prompts."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from streamchat.backends import Backend, choose_backend, fences_enabled
from streamchat.providers.base import Message, ModelRequest
from streamchat.providers.llama_engine import available_cpus, cgroup_cpu_quota
from streamchat.providers.local import LocalProvider
from streamchat.providers.local_prompt import (
    ANSWER,
    TOOL,
    answer_grammar,
    answer_messages,
    decision_messages,
    tools_schema,
)
from streamchat.settings import LOCAL_SYSTEM_PROMPT, SettingsError
from streamchat.tools import ToolRegistry
from streamchat.tools.calculator import register_calculator
from streamchat.web import create_app
from tests.conftest import make_settings, stream

Client = TestClient[Any, Any]


class ScriptedEngine:
    """Plays scripted model output on the worker thread, recording how it was driven."""

    model_name = "scripted-local"

    def __init__(
        self,
        *,
        choices: list[str] | None = None,
        calls: list[str] | None = None,
        answers: list[list[str]] | None = None,
        token_seconds: float = 0.0,
        cut: bool = False,
    ) -> None:
        self.choices = choices or []
        self.calls = calls or []
        self.answers = answers or []
        self.token_seconds = token_seconds
        self.cut = cut  # every answer ends at the token cap
        self.prompts: list[str] = []
        self.greedy: list[bool] = []
        self.went_on: list[bool] = []
        self.grammars: list[str | None] = []
        self.active = 0
        self.max_active = 0
        self.stopped = threading.Event()
        self.yielded_after_stop = 0

    def prompt(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def choose(self, prompt: str, options: list[str]) -> str:
        return self.choices.pop(0) if self.choices else options[-1]

    def complete_json(self, prompt: str, schema: dict[str, Any]) -> str:
        return self.calls.pop(0)

    def stream(
        self,
        prompt: str,
        stop: threading.Event,
        *,
        greedy: bool = False,
        go_on: bool = False,
        grammar: str | None = None,
    ) -> Generator[str, None, str]:
        self.prompts.append(prompt)
        self.greedy.append(greedy)
        self.went_on.append(go_on)
        self.grammars.append(grammar)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for piece in self.answers.pop(0) if self.answers else ["ok"]:
                if stop.is_set():
                    self.stopped.set()
                    return "stop"
                time.sleep(self.token_seconds)
                yield piece
        finally:
            self.active -= 1
        return "length" if self.cut else "stop"


@pytest.fixture
async def local_client(aiohttp_client: AiohttpClient) -> Any:
    providers: list[LocalProvider] = []

    async def make(engine: ScriptedEngine) -> Client:
        provider = LocalProvider(engine)
        providers.append(provider)
        return await aiohttp_client(create_app(make_settings(), provider=provider))

    yield make
    for provider in providers:
        provider.close()


async def test_answer_streams_as_text_events_and_completion(local_client: Any) -> None:
    client = await local_client(ScriptedEngine(answers=[["Hel", "lo", " 🚀"]]))

    reply = await stream(client, "Greet me")

    assert reply.types == ["text", "text", "text", "completion"]
    assert reply.text == "Hello 🚀"
    completion = reply.events[-1]
    assert completion["model"] == "scripted-local"
    assert completion["finishReason"] == "stop"
    assert completion["usage"]["completionTokens"] == 2


async def test_tool_call_events_and_history_match_the_openrouter_path(local_client: Any) -> None:
    engine = ScriptedEngine(
        choices=[TOOL, ANSWER],
        calls=['{"name": "add", "arguments": {"a": 25, "b": 17}}'],
        answers=[["25 + 17 = 42."]],
    )
    client = await local_client(engine)

    reply = await stream(client, "What is 25 + 17?", conversationId="loc")

    assert reply.types == ["tool_executing", "tool_completed", "text", "completion"]
    assert json.loads(reply.events[0]["arguments"]) == {"a": 25, "b": 17}
    assert reply.events[1]["result"] == "42"
    history = (await (await client.get("/api/conversation/loc")).json())["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant"]
    call_id = history[2]["tool_calls"][0]["id"]
    assert history[3] == {"role": "tool", "tool_call_id": call_id, "content": "42"}
    assert history[0]["content"] == LOCAL_SYSTEM_PROMPT
    # the answer was asked with the result as a note on the question, and no worked examples
    assert engine.prompts == [
        f"<system>{LOCAL_SYSTEM_PROMPT}\n"
        "<user>What is 25 + 17?\n\nTool result: add(a=25, b=17) = 42\n<assistant>"
    ]
    # and decoded greedily: after a tool result there is one right answer, not a range of them
    assert engine.greedy == [True]
    assert engine.grammars[0] is not None
    assert engine.grammars[0].endswith('result ::= "42"')


async def test_an_answer_without_a_tool_is_sampled(local_client: Any) -> None:
    engine = ScriptedEngine(choices=[ANSWER], answers=[["Hi!"]])
    client = await local_client(engine)

    await stream(client, "Hello!")

    assert engine.greedy == [False]
    assert engine.grammars == [None]


async def test_an_echo_of_the_question_goes_on_in_the_models_words(local_client: Any) -> None:
    engine = ScriptedEngine(choices=[ANSWER], answers=[["Hello", "!"], [" How can I help?"]])
    client = await local_client(engine)

    reply = await stream(client, "Hello!")

    assert reply.text == "Hello! How can I help?"
    assert engine.went_on == [False, True]
    assert engine.prompts[1] == engine.prompts[0] + "Hello!"


async def test_an_answer_is_not_an_echo_when_it_says_something_new(local_client: Any) -> None:
    engine = ScriptedEngine(choices=[ANSWER], answers=[["Hello! How can I help?"]])
    client = await local_client(engine)

    reply = await stream(client, "Hello!")

    assert reply.text == "Hello! How can I help?"
    assert engine.went_on == [False]


def _tool_turn(question: str, arguments: str, result: str) -> list[Message]:
    return [
        {"role": "user", "content": "Earlier: 7 and 8."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]


def test_the_answer_after_a_numeric_result_must_state_it_and_no_other_number() -> None:
    grammar = answer_grammar(_tool_turn("What is 25 + 17?", '{"a": 25, "b": 17}', "42"))

    assert grammar == (
        "root ::= text result text\n"
        "text ::= ([^0-9] | known)*\n"
        'known ::= "17" | "25" | "42"\n'
        'result ::= "42"'
    )


def test_decimal_results_and_numbers_of_the_question_are_allowed() -> None:
    grammar = answer_grammar(_tool_turn("Add 3.5 and 2.25 for 2 people", '{"a": 3.5}', "5.75"))

    assert grammar is not None
    assert 'known ::= "2.25" | "5.75" | "3.5" | "2"' in grammar
    assert 'result ::= "5.75"' in grammar
    assert '"7"' not in grammar  # earlier turns do not count


def test_a_tool_error_is_shown_to_the_answer_as_an_error_not_a_value() -> None:
    failed = _tool_turn("What is 10 divided by 0?", '{"a": 10, "b": 0}', "Error: Cannot divide")

    assert answer_messages(failed)[-1] == {
        "role": "user",
        "content": "What is 10 divided by 0?\n\n"
        "Tool result: f(a=10, b=0) is an error: Cannot divide",
    }


def test_no_answer_grammar_without_a_numeric_result() -> None:
    failed = _tool_turn("What is 10 divided by 0?", '{"a": 10, "b": 0}', "Error: Cannot divide")
    words = _tool_turn("Spell 42", '{"n": 42}', "forty-two")

    assert answer_grammar(failed) is None
    assert answer_grammar(words) is None
    assert answer_grammar([{"role": "user", "content": "What is 2 + 2?"}]) is None


def test_the_decision_prompt_shows_only_the_turn_being_answered() -> None:
    tools = ToolRegistry()
    register_calculator(tools)
    history: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello! My name is Ada."},
        {"role": "assistant", "content": "Hello Ada!"},
        {"role": "user", "content": "Calculate 10 * 5, and what is my name?"},
    ]

    turns = decision_messages(history, tools.schemas())

    assert turns[0]["content"].startswith("Be brief.\n\nYou can use these tools:")
    assert turns[-1] == {"role": "user", "content": "Calculate 10 * 5, and what is my name?"}
    assert not any("Ada!" in t["content"] for t in turns)
    # the answer still sees the whole conversation
    assert [t["content"] for t in answer_messages(history)][1:3] == [
        "Hello! My name is Ada.",
        "Hello Ada!",
    ]


async def test_code_fence_from_the_local_model_becomes_an_artifact(local_client: Any) -> None:
    answer = "Here:\n```python\ndef hello():\n    print('Hello, World!')\n```\nDone."
    client = await local_client(ScriptedEngine(answers=[list(answer)]))

    reply = await stream(client, "Create a Python hello world function")

    done = reply.of("artifact_completed")[0]
    assert (done["title"], done["language"]) == ("snippet.py", "python")
    assert done["content"] == "def hello():\n    print('Hello, World!')"
    assert reply.text == "Here:\nDone."


async def test_code_the_model_ended_without_a_closing_fence_is_complete(local_client: Any) -> None:
    answer = "```python\ndef hello():\n    print('Hello, World!')\nhello()  # prints it"
    client = await local_client(ScriptedEngine(answers=[list(answer)]))

    reply = await stream(client, "Create a Python hello world function", conversationId="c")

    done = reply.of("artifact_completed")[0]
    assert "truncated" not in done
    assert done["content"] == "def hello():\n    print('Hello, World!')\nhello()  # prints it"
    assert reply.events[-1]["finishReason"] == "stop"
    # the stored answer is well-formed Markdown, so the model reads a closed block next turn
    history = (await (await client.get("/api/conversation/c")).json())["messages"]
    assert history[-1]["content"] == answer + "\n```"


async def test_code_cut_at_the_token_cap_is_truncated(local_client: Any) -> None:
    answer = "```python\ndef hello():\n    print('Hello,"
    client = await local_client(ScriptedEngine(answers=[list(answer)], cut=True))

    reply = await stream(client, "Create a Python hello world function")

    assert reply.of("artifact_completed")[0]["truncated"] is True
    assert reply.events[-1]["finishReason"] == "length"


async def test_an_incomplete_tool_call_is_an_error_event(local_client: Any) -> None:
    client = await local_client(ScriptedEngine(choices=[TOOL], calls=['{"name": "add", "argu']))

    reply = await stream(client, "1 + 1")

    assert reply.types == ["error"]
    assert reply.events[0]["code"] == "local_model_error"


async def test_requests_queue_in_order_and_never_overlap(local_client: Any) -> None:
    engine = ScriptedEngine(answers=[["a"] * 5, ["b"] * 5, ["c"] * 5], token_seconds=0.01)
    client = await local_client(engine)

    async def ask(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return (await stream(client, name, conversationId=name)).text

    texts = await asyncio.gather(ask("alpha", 0), ask("bravo", 0.005), ask("charlie", 0.01))

    assert list(texts) == ["aaaaa", "bbbbb", "ccccc"]
    assert engine.max_active == 1
    asked = [
        name
        for p in engine.prompts
        for name in ("alpha", "bravo", "charlie")
        if f"<user>{name}\n" in p
    ]
    assert asked == ["alpha", "bravo", "charlie"]


async def test_client_that_leaves_stops_generation_within_a_token(local_client: Any) -> None:
    engine = ScriptedEngine(answers=[["tok "] * 1000, ["next"]], token_seconds=0.02)
    client = await local_client(engine)

    response = await client.post("/api/stream", json={"message": "go on forever"})
    await response.content.readuntil(b"\n\n")
    response.close()

    assert await asyncio.to_thread(engine.stopped.wait, 1.0)
    # and the model is free for the next request at once
    reply = await asyncio.wait_for(stream(client, "and then?"), 2.0)
    assert reply.text == "next"


async def test_health_answers_while_the_model_generates(local_client: Any) -> None:
    engine = ScriptedEngine(answers=[["x"] * 40], token_seconds=0.05)
    client = await local_client(engine)
    turn = asyncio.create_task(stream(client, "long"))
    await asyncio.sleep(0.3)

    started = time.perf_counter()
    health = await client.get("/health")
    took = time.perf_counter() - started

    assert health.status == 200
    assert took < 0.1
    assert not turn.done()
    await turn


def test_decision_prompt_has_worked_examples_and_tool_turns() -> None:
    tools = ToolRegistry()
    register_calculator(tools)
    history: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "6*7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "multiply", "arguments": '{"a":6,"b":7}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "42."},
    ]

    turns = decision_messages(history, tools.schemas())

    assert turns[0]["role"] == "system"
    assert turns[0]["content"].startswith("Be brief.\n\nYou can use these tools:")
    assert turns[-4:] == [
        {"role": "user", "content": "6*7?"},
        {
            "role": "assistant",
            "content": 'TOOL: {"name": "multiply", "arguments": {"a": 6, "b": 7}}',
        },
        {"role": "user", "content": "RESULT: 42"},
        {"role": "assistant", "content": "ANSWER: 42."},
    ]
    examples = turns[1:-4]
    assert sum(t["content"].startswith(TOOL) for t in examples) == 4
    assert all(t["role"] in ("user", "assistant") for t in turns[1:])
    assert answer_messages(history) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "6*7?\n\nTool result: multiply(a=6, b=7) = 42"},
        {"role": "assistant", "content": "42."},
    ]


def test_examples_only_use_offered_tools() -> None:
    tools = ToolRegistry()

    @tools.register
    def add(a: float, b: float) -> float:
        """Add."""
        return a + b

    history: list[Message] = [{"role": "user", "content": "hi"}]
    with_add = decision_messages(history, tools.schemas())

    assert not any('"multiply"' in t["content"] for t in with_add)
    assert any('"add"' in t["content"] for t in with_add)
    assert answer_messages(history) == [{"role": "user", "content": "hi"}]


def test_tool_schema_puts_the_name_before_the_arguments() -> None:
    tools = ToolRegistry()
    register_calculator(tools)

    schema = tools_schema(tools.schemas())

    names = [option["properties"]["name"]["const"] for option in schema["anyOf"]]
    assert names == ["add", "subtract", "multiply", "divide"]
    assert list(schema["anyOf"][0]["properties"]) == ["name", "arguments"]


async def test_long_history_drops_the_oldest_turns_but_keeps_system_and_question() -> None:
    engine = ScriptedEngine(answers=[["ok"]])
    provider = LocalProvider(engine, context_tokens=40)
    history: list[Message] = [{"role": "system", "content": "sys"}]
    for i in range(20):
        history += [
            {"role": "user", "content": f"question {i} " + "word " * 5},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    history.append({"role": "user", "content": "the last question"})
    try:
        deltas = [d async for batch in provider.stream(ModelRequest("m", history)) for d in batch]
    finally:
        provider.close()

    assert deltas
    prompt = engine.prompts[0]
    assert prompt.startswith("<system>sys")
    assert "the last question" in prompt
    assert "question 0 " not in prompt
    assert engine.count_tokens(prompt) <= 30


def test_backend_choice(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")

    keyed = choose_backend(make_settings(openrouter_api_key="k"))
    local = choose_backend(make_settings(openrouter_api_key="", local_model_path=str(model)))
    forced = choose_backend(make_settings(backend="local", local_model_path=str(model)))

    assert keyed.kind == "openrouter"
    assert (local.kind, local.model, local.model_path) == ("local", "tiny", model)
    assert forced.kind == "local"
    with pytest.raises(SettingsError, match="not a file"):
        choose_backend(make_settings(backend="local", local_model_path=str(tmp_path / "no")))
    assert fences_enabled(make_settings(), local)
    assert not fences_enabled(make_settings(), keyed)
    assert fences_enabled(make_settings(artifact_fences="on"), keyed)
    assert not fences_enabled(make_settings(artifact_fences="off"), Backend("local", "m"))


def _cgroup(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 tree under `tmp_path` with `cpu.max` files, and a /proc/self/cgroup for it."""
    root = tmp_path / "cgroup"
    for folder, limit in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(limit + "\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(f"1:cpu:/\n0::/{own}\n")
    return root, self_cgroup


def test_cpu_quota_is_read_from_cpu_max(tmp_path: Path) -> None:
    # `docker run --cpus 2`: the container's own cgroup is the root it sees.
    root, self_cgroup = _cgroup(tmp_path, "", {"": "200000 100000"})

    assert cgroup_cpu_quota(root, self_cgroup) == 2.0
    assert available_cpus(root, self_cgroup) == min(2, len(os.sched_getaffinity(0)))


def test_the_tightest_quota_on_the_way_to_the_root_wins(tmp_path: Path) -> None:
    limits = {"": "max 100000", "kube": "150000 100000", "kube/pod": "max 100000"}
    root, self_cgroup = _cgroup(tmp_path, "kube/pod", limits)

    assert cgroup_cpu_quota(root, self_cgroup) == 1.5
    assert available_cpus(root, self_cgroup) == 1  # never more threads than whole CPUs


def test_no_limit_or_no_cgroup_means_the_cpus_the_process_may_use(tmp_path: Path) -> None:
    unlimited = _cgroup(tmp_path, "", {"": "max 100000"})
    missing = (tmp_path / "nothing", tmp_path / "no-self-cgroup")

    assert cgroup_cpu_quota(*unlimited) is None
    assert cgroup_cpu_quota(*missing) is None
    assert available_cpus(*missing) == len(os.sched_getaffinity(0))
