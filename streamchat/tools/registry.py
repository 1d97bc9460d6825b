"""The tool registry: plain Python functions in, OpenAI tool schemas and safe execution out.

A tool's JSON schema comes from its type hints (through a pydantic model built once, at
registration), its description from its docstring. `run()` never raises for a tool's own
failure: unknown names, arguments that are not JSON or do not fit the schema, exceptions and
time-outs all come back as `ToolFailure`, a message the model can read and act on.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

ToolFunction = Callable[..., Any]


class ToolFailure(Exception):
    """Raise inside a tool to report a failure in words meant for the model and the user."""


class _StrictArgs(BaseModel):
    # Strict: "25" is not a number. Extra keys are a mistake worth telling the model about.
    model_config = ConfigDict(strict=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    function: ToolFunction
    arguments: type[BaseModel]
    inline: bool = False  # a plain function called on the event loop, not in a thread

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools[]` entry."""
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }


class ToolRegistry:
    def __init__(self, timeout_seconds: float = 30.0) -> None:
        self._tools: dict[str, Tool] = {}
        self._timeout = timeout_seconds
        self._schemas: list[dict[str, Any]] = []

    def register(
        self, function: ToolFunction, *, name: str | None = None, inline: bool = False
    ) -> ToolFunction:
        """Register a function as a tool; usable as a decorator. A plain function runs in a
        worker thread, unless `inline`: one that never blocks and takes microseconds (plain
        arithmetic) is called on the event loop, without the thread hop that would cost more
        than the call."""
        tool_name = name or function.__name__
        if tool_name in self._tools:
            # Never a silent replacement: which one the model would call is a bug to fix.
            raise ValueError(f"two tools are named {tool_name!r}: rename one of them")
        hints = get_type_hints(function)
        params: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            if param.name not in hints:
                raise TypeError(f"tool {tool_name}: parameter {param.name!r} needs a type hint")
            default = ... if param.default is inspect.Parameter.empty else param.default
            params[param.name] = (hints[param.name], default)
        model = create_model(f"{tool_name}_arguments", __base__=_StrictArgs, **params)
        doc = inspect.getdoc(function) or tool_name
        self._tools[tool_name] = Tool(tool_name, doc, function, model, inline)
        self._schemas = [tool.schema() for tool in self._tools.values()]
        return function

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def requires_approval(self, name: str) -> bool:
        return False

    async def run(self, name: str, arguments: str, context: object = None) -> str:
        """Run a tool; its result as a string, or `ToolFailure` with a readable message."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            raise ToolFailure(f"Unknown tool {name!r}. Available tools: {known}")
        kwargs = _parse_arguments(tool, arguments)
        try:
            if tool.inline and not inspect.iscoroutinefunction(tool.function):
                # Runs to its end on the loop: no timeout could cut it short.
                result = tool.function(**kwargs)
            else:
                async with asyncio.timeout(self._timeout):
                    result = await _call(tool.function, kwargs)
        except ToolFailure:
            raise
        except TimeoutError:
            raise ToolFailure(f"Tool {name} took longer than {self._timeout:g} s") from None
        except Exception as exc:  # a tool's bug must not end the turn
            raise ToolFailure(f"Tool {name} failed: {exc}") from exc
        return format_result(result)


def _parse_arguments(tool: Tool, arguments: str) -> dict[str, Any]:
    try:
        raw = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolFailure(f"Arguments for {tool.name} are not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
        raise ToolFailure(
            f"Arguments for {tool.name} hold a number too long or nesting too deep to read"
        ) from None
    if not isinstance(raw, dict):
        raise ToolFailure(f"Arguments for {tool.name} must be a JSON object")
    try:
        parsed = tool.arguments.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ToolFailure(f"Invalid arguments for {tool.name}: {problems}") from None
    return {key: getattr(parsed, key) for key in type(parsed).model_fields}


async def _call(function: ToolFunction, kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(function):
        coroutine: Awaitable[Any] = function(**kwargs)
        return await coroutine
    # A plain function may block (file or network I/O): keep it off the event loop.
    return await asyncio.to_thread(function, **kwargs)


def format_result(value: Any) -> str:
    """A tool's return value as the string the model and the client see: 42, not 42.0."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolFailure("The result is not a finite number")
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)
