"""How often the embedded model answers the documented examples right, with no key.

Run: `.venv/bin/python bench/local_accuracy.py [--runs N]` (or `make bench-accuracy`). Every
prompt of the README's "Try it" section, of `sample.http` and of the page's suggestion buttons
goes through the real app in-process (`create_app` with `BACKEND=local`: the real local
provider, tools, fence parser and conversation store, over HTTP on a loopback port), N times
each (20 by default), each run in a new conversation. Each run is checked the way a reader
would check it: the right tool with the right arguments, the tool's result stated exactly and no
other number made up, code that compiles and is not marked truncated, a greeting that is not an
echo. The table goes to stdout and into `bench/LOCAL_RESULTS.md`, under its own heading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamchat.settings import Settings  # noqa: E402
from streamchat.sse import SSEDecoder, SSEEvent  # noqa: E402
from streamchat.web import create_app  # noqa: E402

RESULTS = ROOT / "bench" / "LOCAL_RESULTS.md"
HEADING = "## Accuracy on the documented examples"
NUMBER = re.compile(r"\d+(?:\.\d+)?")

Events = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    events: Events

    def of(self, kind: str) -> Events:
        return [e for e in self.events if e["type"] == kind]

    @property
    def text(self) -> str:
        return "".join(e["content"] for e in self.of("text"))

    @property
    def ended(self) -> str:
        return str(self.events[-1].get("finishReason") or self.events[-1].get("code", "none"))


# A check gets every reply of the run (one per message) and says what is wrong, or "".
Check = Callable[[list[Reply]], str]


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    where: str  # which document shows it
    messages: list[str]
    check: Check
    readme: bool  # one of the README's own prompts: the target is every run right


@dataclass
class Tally:
    right: int = 0
    wrong: list[str] = field(default_factory=list)


def tool_answer(reply: Reply, name: str, arguments: dict[str, float], result: str) -> str:
    """The right call, its result, and an answer that states it and makes up no other number."""
    done = reply.of("tool_completed")
    if not done:
        failed = reply.of("tool_error") or reply.of("tool_executing")
        return f"no tool result ({[e['toolName'] for e in failed]})"
    call = done[0]
    if call["toolName"] != name or json.loads(call["arguments"]) != arguments:
        return f"called {call['toolName']}({call['arguments']})"
    if call["result"] != result:
        return f"result {call['result']}"
    return stated(reply.text, result, {_number(v) for v in arguments.values()})


def stated(text: str, result: str, operands: set[str]) -> str:
    numbers = NUMBER.findall(text)
    if result not in numbers:
        return f"result not stated: {text!r}"
    made_up = set(numbers) - operands - {result}
    return f"made-up number {sorted(made_up)}: {text!r}" if made_up else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def greeting(reply: Reply, message: str) -> str:
    text = reply.text.strip()
    if not text:
        return "no answer"
    if _words(text) == _words(message) or _words(message) >= _words(text):
        return f"echo: {text!r}"
    if "?" not in text and not any(word in text.lower() for word in ("help", "assist")):
        return f"invites no question: {text!r}"
    return ""


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def python_code(reply: Reply) -> str:
    done = reply.of("artifact_completed")
    if len(done) != 1:
        return f"{len(done)} artifacts: {reply.text!r}"
    artifact = done[0]
    if artifact.get("truncated"):
        return f"marked truncated ({reply.ended}): {artifact['content']!r}"
    try:
        compile(artifact["content"], artifact["title"], "exec")
    except SyntaxError as exc:
        return f"does not compile ({exc.msg}): {artifact['content']!r}"
    if "print" not in artifact["content"] or "hello" not in artifact["content"].lower():
        return f"not a hello world: {artifact['content']!r}"
    return ""


def divide_by_zero(reply: Reply) -> str:
    failed = reply.of("tool_error")
    if not failed or failed[0]["toolName"] != "divide":
        return f"no divide tool_error: {[e['type'] for e in reply.events]}"
    text = reply.text.lower()
    if not any(word in text for word in ("zero", "undefined", "cannot", "can't", "not possible")):
        return f"does not say why: {reply.text!r}"
    made_up = set(NUMBER.findall(reply.text)) - {"10", "0"}
    return f"made-up number {sorted(made_up)}: {reply.text!r}" if made_up else ""


def two_messages(replies: list[Reply]) -> str:
    first, answer = replies
    problem = greeting(first, "Hello! My name is Ada.")
    if problem:
        return "first message: " + problem
    return tool_answer(answer, "multiply", {"a": 10, "b": 5}, "50")


def takes_no_name(replies: list[Reply]) -> str:
    """A reply to "Hello! My name is Ada." that does not claim the name for itself."""
    text = replies[0].text
    claims = re.search(r"\b(my name is|i'm|i am) ada\b", text.lower())
    return f"takes the name: {text!r}" if claims else ""


def says_hello_in_french(replies: list[Reply]) -> str:
    text = replies[0].text
    return "" if "bonjour" in text.lower() else f"no bonjour: {text!r}"


def remembers_the_name(replies: list[Reply]) -> str:
    return "" if "ada" in replies[-1].text.lower() else f"no Ada: {replies[-1].text!r}"


CASES = [
    Case(
        "What is 25 + 17?",
        "README, sample.http, page",
        ["What is 25 + 17?"],
        lambda r: tool_answer(r[0], "add", {"a": 25, "b": 17}, "42"),
        readme=True,
    ),
    Case(
        "Create a Python hello world function",
        "README, sample.http, page",
        ["Create a Python hello world function"],
        lambda r: python_code(r[0]),
        readme=True,
    ),
    Case(
        "Hello!",
        "README (embedded model), page",
        ["Hello!"],
        lambda r: greeting(r[0], "Hello!"),
        readme=True,
    ),
    Case(
        "Hello! My name is Ada. / Calculate 10 * 5, and what is my name?",
        "README, sample.http",
        ["Hello! My name is Ada.", "Calculate 10 * 5, and what is my name?"],
        two_messages,
        readme=True,
    ),
    Case(
        "... and the first reply does not call itself Ada",
        "README (not counted in the target)",
        ["Hello! My name is Ada."],
        takes_no_name,
        readme=False,
    ),
    Case(
        "... and the answer names Ada",
        "README (not counted in the target)",
        ["Hello! My name is Ada.", "Calculate 10 * 5, and what is my name?"],
        remembers_the_name,
        readme=False,
    ),
    Case(
        "What is 10 divided by 0?",
        "sample.http",
        ["What is 10 divided by 0?"],
        lambda r: divide_by_zero(r[0]),
        readme=False,
    ),
    Case(
        "Say hello in French.",
        "sample.http",
        ["Say hello in French."],
        says_hello_in_french,
        readme=False,
    ),
]


def parse(raw: bytes) -> Events:
    decoder = SSEDecoder()
    return [
        json.loads(item.data)
        for item in decoder.feed(raw) + decoder.flush()
        if isinstance(item, SSEEvent)
    ]


async def ask(client: TestClient[Any, Any], message: str, conversation: str) -> Reply:
    response = await client.post(
        "/api/stream", json={"message": message, "conversationId": conversation}
    )
    return Reply(parse(await response.read()))


async def measure(runs: int, only: str | None) -> dict[str, Tally]:
    settings = Settings(backend="local", openrouter_api_key="")
    tallies: dict[str, Tally] = {}
    async with TestClient(TestServer(create_app(settings))) as client:
        for number, case in enumerate(CASES):
            if only and only.lower() not in case.name.lower():
                continue
            tally = tallies[case.name] = Tally()
            for run in range(runs):
                conversation = f"accuracy-{number}-{run}"
                replies = [await ask(client, m, conversation) for m in case.messages]
                problem = case.check(replies)
                if problem:
                    tally.wrong.append(problem)
                else:
                    tally.right += 1
            print(f"{tally.right:3}/{runs}  {case.name}", file=sys.stderr)
            for problem in tally.wrong[:3]:
                print(f"         {problem[:160]}", file=sys.stderr)
    return tallies


def report(tallies: dict[str, Tally], runs: int, seconds: float) -> str:
    settings = Settings()
    lines = [
        HEADING,
        "",
        f"{time.strftime('%Y-%m-%d')}. Machine: {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}. "
        f"Command: `.venv/bin/python bench/local_accuracy.py --runs {runs}` ({seconds / 60:.0f} "
        "min). SmolLM2-135M-Instruct Q4_1 through the real app (BACKEND=local), default "
        f"settings (LOCAL_TEMPERATURE={settings.local_temperature} for answers without a tool; "
        "the TOOL/ANSWER choice, the call and the answer after a tool result are greedy). "
        "Each run is a new conversation.",
        "",
        "| prompt | shown in | right |",
        "|---|---|---|",
    ]
    for case in CASES:
        tally = tallies.get(case.name)
        if tally is not None:
            star = " **(README)**" if case.readme else ""
            lines.append(f"| {case.name} | {case.where}{star} | {tally.right} of {runs} |")
    lines += [
        "",
        "Right means: the right tool with the right arguments, its result stated exactly and no "
        "other number made up; code in one artifact that compiles and is not marked truncated; "
        "a greeting that is not an echo and invites a question or offers help; three bullet points "
        "about SSE.",
    ]
    wrong = [(name, t.wrong[0]) for name, t in tallies.items() if t.wrong]
    if wrong:
        lines += ["", "A wrong answer of each prompt that had one:", ""]
        lines += [f"- {name}: {problem[:200]}" for name, problem in wrong]
    return "\n".join(lines) + "\n"


def save(section: str) -> None:
    """Replace this script's section of LOCAL_RESULTS.md, keeping the throughput figures."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    kept = old.split(HEADING)[0].rstrip()
    RESULTS.write_text((kept + "\n\n" if kept else "") + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", help="only the prompts whose name contains this")
    parser.add_argument("--no-save", action="store_true", help="print, do not write the file")
    args = parser.parse_args()
    started = time.perf_counter()
    tallies = asyncio.run(measure(args.runs, args.only))
    section = report(tallies, args.runs, time.perf_counter() - started)
    print(section)
    if not args.no_save and not args.only:
        save(section)


if __name__ == "__main__":
    main()
