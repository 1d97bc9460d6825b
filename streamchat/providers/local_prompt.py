"""How a conversation is shown to a small local model, in two prompts.

Small chat templates know nothing of `tool_calls` or the `tool` role. The *decision* prompt
(`decision_messages`) writes a tool call as an assistant turn `TOOL: {"name": ..., "arguments":
...}`, its result as a user turn `RESULT: ...` and an answer as `ANSWER: ...`, after worked
examples of exactly that exchange: measured with SmolLM2-135M, they are what makes it choose
well between a tool and an answer. The *answer* prompt (`answer_messages`) is the plain
conversation, each tool result folded into the user's turn as a note: with the examples in
view, the same model copied them ("Hello!" was answered "84 / 2 = 42.").
"""

from __future__ import annotations

import json
import re
from typing import Any

from streamchat.providers.base import Message
from streamchat.providers.schema_refs import inline_refs

TOOL = "TOOL: "
ANSWER = "ANSWER: "
# How the pipeline writes a failed tool's result into the history.
TOOL_ERROR = "Error: "

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
    (
        # Without this one, "a function that adds" looked like a call to add.
        "Write a JavaScript function that adds two numbers.",
        None,
        "```javascript\nfunction add(a, b) {\n  return a + b;\n}\n```",
    ),
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
                    # Inlined: a `$ref` into the tool's own `$defs` would not resolve in here.
                    "arguments": inline_refs(tool["function"]["parameters"]),
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


def decision_messages(history: list[Message], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Instructions, worked examples and the current turn: for choosing TOOL or ANSWER.

    Only the turn being answered (its user message, and the tool calls and results so far) is
    shown after the examples. With earlier turns in view, SmolLM2-135M chose `add` for
    "Calculate 10 * 5, and what is my name?" after a greeting, and `multiply` without it; the
    answer step still sees the whole conversation.
    """
    system = [m.get("content") or "" for m in history if m["role"] == "system"]
    if tools:
        system.append(_instructions(tools))
    out = [{"role": "system", "content": "\n\n".join(s for s in system if s)}]
    if tools:
        out += _examples(tools)
    for message in history[_current_turn(history) :]:
        out.extend(_render(message, bool(tools)))
    return out


def _current_turn(history: list[Message]) -> int:
    """Where the turn being answered starts: its user message."""
    users = [i for i, message in enumerate(history) if message["role"] == "user"]
    return users[-1] if users else 0


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def answer_grammar(history: list[Message]) -> str | None:
    """After a numeric tool result: a grammar (GBNF) for an answer that states it.

    The answer is the model's own words, but every number in it is one the turn already holds
    (in the question, a call's arguments or a result), and a result appears at least once. Even
    greedy, SmolLM2-135M sometimes answered without the result, or with another number, when
    the conversation before it was odd. None when no result of this turn is a number.
    """
    turn = history[_current_turn(history) :]
    results = [
        number
        for m in turn
        if m["role"] == "tool"
        for number in _NUMBER.findall(m.get("content") or "")
        if not (m.get("content") or "").startswith(TOOL_ERROR)
    ]
    if not results:
        return None
    known = set(results)
    for message in turn:
        known.update(_NUMBER.findall(message.get("content") or ""))
        for call in message.get("tool_calls", []):
            known.update(_NUMBER.findall(call["function"]["arguments"]))
    return "\n".join(
        [
            "root ::= text result text",
            "text ::= ([^0-9] | known)*",
            f"known ::= {_alternatives(known)}",
            f"result ::= {_alternatives(set(results))}",
        ]
    )


def _alternatives(numbers: set[str]) -> str:
    # Longest first, so that 42 is not read as 4 then a digit nothing allows.
    return " | ".join(json.dumps(n) for n in sorted(numbers, key=lambda n: (-len(n), n)))


def is_echo(answer: str, history: list[Message]) -> bool:
    """Whether an answer only repeats the user's last message ("Hello!" answered "Hello!")."""
    users = [m.get("content") or "" for m in history if m["role"] == "user"]
    words = set(re.findall(r"\w+", answer.lower()))
    return bool(users) and words <= set(re.findall(r"\w+", users[-1].lower()))


def answer_messages(history: list[Message]) -> list[dict[str, str]]:
    """The plain conversation, each tool result a note on the user's turn before it."""
    out: list[dict[str, str]] = []
    calls: dict[str, str] = {}
    for message in history:
        role, content = message["role"], message.get("content") or ""
        if role == "tool":
            shown = calls.get(message.get("tool_call_id", ""), "a tool")
            if content.startswith(TOOL_ERROR):
                # Shown as "= Error: ...", it read as a value: "10 / 0 = 1" (20 runs of 20).
                note = f"Tool result: {shown} is an error: {content.removeprefix(TOOL_ERROR)}"
            else:
                note = f"Tool result: {shown} = {content}"
            if out and out[-1]["role"] == "user":
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n\n{note}"}
            else:
                out.append({"role": "user", "content": note})
        elif role == "assistant" and message.get("tool_calls"):
            for call in message.get("tool_calls", []):
                calls[call["id"]] = _call_text(
                    call["function"]["name"], call["function"]["arguments"]
                )
        elif content and role in ("system", "user", "assistant"):
            out.append({"role": role, "content": content})
    return out


def _call_text(name: str, arguments: str) -> str:
    """`multiply(a=12, b=9)`: how a small model reads a call best."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return f"{name}({arguments})"
    if not isinstance(parsed, dict):
        return f"{name}({arguments})"
    return f"{name}(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in parsed.items()) + ")"


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
