"""How a conversation is shown to a small local model: plain chat turns and worked examples.

Small chat templates know nothing of `tool_calls` or the `tool` role, so a tool call is written
as an assistant turn `TOOL: {"name": ..., "arguments": ...}`, its result as a user turn
`RESULT: ...`, and an answer as `ANSWER: ...`. Worked examples of exactly that exchange come
first; measured with SmolLM2-135M, they are what makes it pick the right tool.
"""

from __future__ import annotations

import json
from typing import Any

from streamchat.providers.base import Message

TOOL = "TOOL: "
ANSWER = "ANSWER: "

# Worked examples, tool calls and plain answers interleaved: (question, call, answer), where a
# call is (tool, arguments, result). A tool example is used only if its tool is offered.
_Call = tuple[str, dict[str, float], str]
_EXAMPLES: list[tuple[str, _Call | None, str]] = [
    ("What is 25 + 17?", ("add", {"a": 25, "b": 17}, "42"), "25 + 17 = 42."),
    ("Hello!", None, "Hello! How can I help you today?"),
    ("Multiply 6 by 7.", ("multiply", {"a": 6, "b": 7}, "42"), "6 * 7 = 42."),
    (
        "Create a Python function that greets someone.",
        None,
        'Here it is:\n\n```python\ndef greet(name):\n    print(f"Hello, {name}!")\n```',
    ),
    ("What is 100 minus 58?", ("subtract", {"a": 100, "b": 58}, "42"), "100 - 58 = 42."),
    ("What is the capital of Italy?", None, "The capital of Italy is Rome."),
    ("What is 84 divided by 2?", ("divide", {"a": 84, "b": 2}, "42"), "84 / 2 = 42."),
]


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def tools_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON schema for "a call of any offered tool": the grammar for tool calls."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool["function"]["name"]},
                    "arguments": tool["function"]["parameters"],
                },
                "required": ["name", "arguments"],
            }
            for tool in tools
        ]
    }


def _instructions(tools: list[dict[str, Any]]) -> str:
    lines = [
        "You can use these tools:",
        *(f"- {t['function']['name']}: {t['function']['description']}" for t in tools),
        "To use a tool, reply with TOOL: and a JSON object with the tool's name and arguments; "
        "you will get its RESULT. Otherwise reply with ANSWER: and your answer.",
    ]
    return "\n".join(lines)


def _examples(tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    offered = set(tool_names(tools))
    turns: list[dict[str, str]] = []
    for question, call, answer in _EXAMPLES:
        if call is None:
            turns += [{"role": "user", "content": question}]
        elif call[0] in offered:
            name, arguments, result = call
            shown = json.dumps({"name": name, "arguments": arguments})
            turns += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": TOOL + shown},
                {"role": "user", "content": "RESULT: " + result},
            ]
        else:
            continue
        turns.append({"role": "assistant", "content": ANSWER + answer})
    return turns


def render_messages(history: list[Message], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation as plain system/user/assistant turns for a chat template."""
    system = [m.get("content") or "" for m in history if m["role"] == "system"]
    if tools:
        system.append(_instructions(tools))
    out = [{"role": "system", "content": "\n\n".join(s for s in system if s)}]
    if tools:
        out += _examples(tools)
    for message in history:
        out.extend(_render(message, bool(tools)))
    return out


def _render(message: Message, with_tools: bool) -> list[dict[str, str]]:
    role, content = message["role"], message.get("content") or ""
    if role == "user":
        return [{"role": "user", "content": content}]
    if role == "tool":
        return [{"role": "user", "content": "RESULT: " + content}]
    if role != "assistant":
        return []
    turns = []
    for call in message.get("tool_calls", []):
        function = call["function"]
        try:
            arguments = json.loads(function["arguments"] or "{}")
        except json.JSONDecodeError:
            arguments = function["arguments"]
        shown = json.dumps({"name": function["name"], "arguments": arguments})
        turns.append({"role": "assistant", "content": TOOL + shown})
    if content and not message.get("tool_calls"):
        turns.append({"role": "assistant", "content": (ANSWER if with_tools else "") + content})
    return turns
