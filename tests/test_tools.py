"""The tool registry and the calculator: schemas from type hints, safe execution."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamchat.tools.calculator import register_calculator
from streamchat.tools.registry import ToolFailure, ToolRegistry, format_result


@pytest.fixture
def tools() -> ToolRegistry:
    registry = ToolRegistry(timeout_seconds=0.5)
    register_calculator(registry)
    return registry


def test_calculator_schemas_come_from_type_hints(tools: ToolRegistry) -> None:
    add = tools.schemas()[0]

    assert add == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers: a + b.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }


@pytest.mark.parametrize(
    ("name", "arguments", "result"),
    [
        ("add", '{"a": 25, "b": 17}', "42"),
        ("add", '{"a": 0.1, "b": 0.2}', "0.30000000000000004"),
        ("subtract", '{"a": 10, "b": 4.5}', "5.5"),
        ("multiply", '{"a": -3, "b": 7}', "-21"),
        ("divide", '{"a": 48, "b": 5}', "9.6"),
        ("divide", '{"a": 1, "b": 3}', "0.3333333333333333"),
        ("divide", '{"b": 4, "a": 2}', "0.5"),
    ],
)
async def test_calculator_results_are_written_plainly(
    tools: ToolRegistry, name: str, arguments: str, result: str
) -> None:
    assert await tools.run(name, arguments) == result


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("divide", '{"a": 1, "b": 0}', "Cannot divide by zero"),
        ("power", '{"a": 1, "b": 0}', "Unknown tool 'power'"),
        ("add", '{"a": 1, "b": }', "not valid JSON"),
        ("add", "[1, 2]", "must be a JSON object"),
        ("add", '{"a": 1}', "b: Field required"),
        ("add", '{"a": "1", "b": 2}', "a: Input should be a valid number"),
        ("add", '{"a": true, "b": 2}', "a: Input should be a valid number"),
        ("add", '{"a": 1, "b": 2, "c": 3}', "c: Extra inputs are not permitted"),
        ("multiply", '{"a": 1e308, "b": 10}', "not a finite number"),
    ],
)
async def test_bad_calls_fail_with_a_readable_message(
    tools: ToolRegistry, name: str, arguments: str, message: str
) -> None:
    with pytest.raises(ToolFailure) as failure:
        await tools.run(name, arguments)

    assert message in str(failure.value)


async def test_a_tool_is_a_few_lines_and_may_be_async() -> None:
    registry = ToolRegistry()

    @registry.register
    async def shout(text: str, times: int = 1) -> str:
        """Repeat text in capitals."""
        return " ".join([text.upper()] * times)

    assert await registry.run("shout", '{"text": "hi", "times": 2}') == "HI HI"
    assert await registry.run("shout", '{"text": "hi"}') == "HI"
    assert registry.schemas()[0]["function"]["parameters"]["required"] == ["text"]


async def test_a_crashing_or_slow_tool_is_a_failure_not_a_crash() -> None:
    registry = ToolRegistry(timeout_seconds=0.1)

    @registry.register
    def crash() -> str:
        raise KeyError("boom")

    @registry.register
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    with pytest.raises(ToolFailure, match="Tool crash failed"):
        await registry.run("crash", "{}")
    with pytest.raises(ToolFailure, match=r"took longer than 0\.1 s"):
        await registry.run("slow", "")


async def test_a_plain_tool_runs_in_a_thread_unless_registered_inline() -> None:
    registry = ToolRegistry()

    def where() -> str:
        return threading.current_thread().name

    registry.register(where, name="threaded")
    registry.register(where, name="inline", inline=True)

    def crash() -> str:
        raise KeyError("boom")

    registry.register(crash, inline=True)

    assert await registry.run("threaded", "{}") != threading.current_thread().name
    assert await registry.run("inline", "{}") == threading.current_thread().name
    with pytest.raises(ToolFailure, match="Tool crash failed"):  # inline, still caught
        await registry.run("crash", "{}")


async def test_the_calculator_runs_inline(tools: ToolRegistry) -> None:
    assert [tool.inline for tool in tools.tools()] == [True] * 4


def test_a_parameter_without_a_type_hint_is_refused_at_registration() -> None:
    registry = ToolRegistry()

    def untyped(a, b: int) -> int:  # type: ignore[no-untyped-def]
        return int(a) + b

    with pytest.raises(TypeError, match="needs a type hint"):
        registry.register(untyped)


def test_results_are_formatted_for_people() -> None:
    assert format_result(42.0) == "42"
    assert format_result(-0.0) == "0"
    assert format_result(2.5) == "2.5"
    assert format_result(7) == "7"
    assert format_result(True) == "true"
    assert format_result({"x": [1, "é"]}) == '{"x": [1, "é"]}'
