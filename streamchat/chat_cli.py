"""`python -m streamchat chat`: a chat with a streamchat server in the terminal.

Each line read from stdin (after a `you> ` prompt when stdin is a terminal) is sent as one turn
through `streamchat.client`, and the answer is printed as it streams: its text, each tool call
as `[add(a=25, b=17) -> 42]`, each artifact announced by its title. Ctrl-C during an answer
stops the turn on the server (a second Ctrl-C leaves it at once) and the chat goes on. Lines
starting with `/` are commands: `/new`, `/save`, `/stop`, `/help`, `/quit` (as is end of input).
A dropped connection is picked up again by the client, without a gap in the printed answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TextIO

from streamchat.client import DEFAULT_URL, StreamChatClient, StreamChatError, TurnStream
from streamchat.events import (
    ArtifactCompleted,
    ArtifactContent,
    ArtifactStarted,
    Completion,
    ErrorEvent,
    Event,
    TextChunk,
    ToolCompleted,
    ToolError,
)

PROMPT = "you> "
HELP = """\
Type a message and press Enter. Commands:
  /new    start a new conversation
  /save   write the last answer's artifacts to files in the current folder
  /stop   stop the conversation's running answer on the server
  /quit   leave (so does end of input, Ctrl-D)
Ctrl-C during an answer stops it. A line starting with // sends itself without the first /."""

# Model text goes to a terminal: control characters (escape sequences that could move the
# cursor, retitle the window or rewrite what was printed) are dropped; newlines and tabs stay.
_CONTROL = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
_EXTENSIONS = {
    "python": ".py",
    "javascript": ".js",
    "typescript": ".ts",
    "html": ".html",
    "css": ".css",
    "json": ".json",
    "bash": ".sh",
    "shell": ".sh",
    "sh": ".sh",
    "markdown": ".md",
    "rust": ".rs",
    "go": ".go",
    "java": ".java",
    "c": ".c",
    "cpp": ".cpp",
    "csharp": ".cs",
    "sql": ".sql",
    "yaml": ".yaml",
    "toml": ".toml",
    "xml": ".xml",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with a streamchat server in the terminal",
        description="Chat with a streamchat server: each line is one message, and the answer "
        "streams as it comes. Commands: /new, /save, /stop, /help, /quit.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("STREAMCHAT_URL", DEFAULT_URL),
        help=f"the server (default: $STREAMCHAT_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--conversation", metavar="ID", help="continue this conversation (default: a new one)"
    )
    parser.add_argument("--model", metavar="M", help="the model (default: the server's)")
    parser.add_argument(
        "--api-key",
        metavar="K",
        default=os.environ.get("STREAMCHAT_API_KEY"),
        help="sent as a bearer token (default: $STREAMCHAT_API_KEY)",
    )
    parser.add_argument(
        "--save-artifacts",
        metavar="DIR",
        type=Path,
        help="write every artifact to a file in DIR as soon as it is complete",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The chat loop: 0 when every answer came through, 1 when something failed."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    with asyncio.Runner() as runner:
        client = StreamChatClient(args.url, api_key=args.api_key)
        chat = TerminalChat(
            client,
            sys.stdout,
            conversation_id=args.conversation,
            model=args.model,
            save_dir=args.save_artifacts,
        )
        try:
            if interactive:
                chat.say(f"streamchat at {client.url}, conversation {chat.conversation_id}")
                chat.say("/help lists the commands; Ctrl-C stops an answer, Ctrl-D leaves.")
            if args.conversation:
                runner.run(chat.rejoin())
            while True:
                try:
                    line = input(PROMPT if interactive else "")
                except (EOFError, KeyboardInterrupt):
                    if interactive:
                        chat.out.write("\n")
                    break
                try:
                    if not runner.run(chat.handle(line)):
                        break
                except KeyboardInterrupt:
                    chat.say("[interrupted]")
                if interactive:
                    chat.out.write("\n")
        finally:
            runner.run(client.aclose())
    return 1 if chat.failed else 0


class TerminalChat:
    """One chat session: what each line does, and how an answer is printed."""

    def __init__(
        self,
        client: StreamChatClient,
        out: TextIO,
        *,
        conversation_id: str | None = None,
        model: str | None = None,
        save_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.out = out
        self.conversation_id = conversation_id or uuid.uuid4().hex
        self.model = model
        self.save_dir = save_dir
        self.failed = False
        self.last_artifacts: list[ArtifactCompleted] = []
        self._at_line_start = True
        self._artifact_open = False

    async def handle(self, line: str) -> bool:
        """Do what a line says; False when the chat should end."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("//"):
            await self.answer(line.lstrip()[1:])
            return True
        if not text.startswith("/"):
            await self.answer(line)
            return True
        command = text.split()[0].lower()
        if command in ("/quit", "/exit"):
            return False
        if command == "/new":
            self.conversation_id = uuid.uuid4().hex
            self.last_artifacts = []
            self.say(f"[new conversation {self.conversation_id}]")
        elif command == "/save":
            self.save_last(Path.cwd())
        elif command == "/stop":
            await self.stop()
        elif command == "/help":
            self.say(HELP)
        else:
            self.say(f"[unknown command {command}; /help lists them]")
        return True

    async def answer(self, message: str) -> None:
        stream = self.client.stream(message, conversation_id=self.conversation_id, model=self.model)
        await self.show(stream)

    async def rejoin(self) -> None:
        """With `--conversation`: an answer still running there is shown to its end."""
        try:
            conversation = await self.client.conversation(self.conversation_id)
        except StreamChatError as exc:
            if exc.status != 404:  # 404: a new conversation with the id asked for
                self._fail(str(exc))
            return
        if conversation.running_turn is not None:
            self.say("[an answer is in progress; following it]")
            await self.show(self.client.join(self.conversation_id))

    async def stop(self) -> None:
        try:
            turn = await self.client.stop(self.conversation_id)
        except StreamChatError as exc:
            if exc.status != 404:  # 404: nothing sent yet in this conversation
                self._fail(str(exc))
                return
            turn = None
        self.say(f"[stopped turn {turn}]" if turn is not None else "[nothing is running]")

    async def show(self, stream: TurnStream) -> None:
        """Print a turn as it streams; Ctrl-C stops it on the server, twice leaves it here."""
        self.last_artifacts = []
        reader = asyncio.create_task(self._print(stream))
        loop = asyncio.get_running_loop()
        interrupts = 0
        stopping: set[asyncio.Task[None]] = set()

        def interrupted() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                stopping.add(loop.create_task(self._stop_quietly()))
            else:
                reader.cancel()

        handled = _on_sigint(loop, interrupted)
        try:
            await reader
        except asyncio.CancelledError:
            if not reader.cancelled():
                raise
            self._finish_line()
            self.say("[left the answer; /stop stops it on the server]")
        except StreamChatError as exc:
            self._fail(str(exc))
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)

    async def _print(self, stream: TurnStream) -> None:
        async with stream:
            async for received in stream:
                self.show_event(received.event)
        self._finish_line()

    async def _stop_quietly(self) -> None:
        try:
            await self.client.stop(self.conversation_id)
        except StreamChatError as exc:
            self._fail(str(exc))

    def show_event(self, event: Event) -> None:
        if self._artifact_open and not isinstance(event, ArtifactContent | ArtifactCompleted):
            self._finish_line()  # an answer that broke off inside an artifact
        match event:
            case TextChunk(text=text):
                self._write(text)
            case ToolCompleted():
                self.say(f"[{_call(event.tool_name, event.arguments)} -> {event.result}]")
            case ToolError():
                self.say(f"[{_call(event.tool_name, event.arguments)} failed: {event.error}]")
            case ArtifactStarted():
                self._finish_line()
                language = f" ({event.language})" if event.language else ""
                self._write(f"[artifact {event.title or event.artifact_id}{language}")
                self._artifact_open = True
            case ArtifactCompleted():
                self._artifact_completed(event)
            case Completion(finish_reason="cancelled"):
                self.say("[stopped]")
            case Completion(finish_reason="length"):
                self.say("[cut off: the answer reached the model's length limit]")
            case ErrorEvent(message=message):
                self._fail(f"[error: {message}]")

    def _artifact_completed(self, event: ArtifactCompleted) -> None:
        self.last_artifacts.append(event)
        if not self._artifact_open:
            self._finish_line()
            self._write(f"[artifact {event.title or event.artifact_id}")
        lines = event.content.count("\n") + 1 if event.content else 0
        size = f"{lines} line{'' if lines == 1 else 's'}"
        if event.truncated:
            size += ", cut off"
        if self.save_dir is not None:
            path = self._save(event, self.save_dir)
            self._write(f", {size}, saved to {path}]\n" if path else f", {size}]\n")
        else:
            self._write(f", {size}; /save writes it to a file]\n")
        self._artifact_open = False

    def save_last(self, folder: Path) -> None:
        if not self.last_artifacts:
            self.say("[the last answer has no artifacts]")
            return
        for artifact in self.last_artifacts:
            path = self._save(artifact, folder)
            if path is not None:
                self.say(f"[saved {path}]")

    def _save(self, artifact: ArtifactCompleted, folder: Path) -> Path | None:
        try:
            return save_artifact(artifact, folder)
        except OSError as exc:
            self._fail(f"[could not save {artifact.title or artifact.artifact_id}: {exc}]")
            return None

    def say(self, line: str) -> None:
        """A line of its own, after whatever the answer printed so far."""
        self._finish_line()
        self._write(line + "\n")

    def _fail(self, line: str) -> None:
        self.failed = True
        self.say(line)

    def _write(self, text: str) -> None:
        if not text:
            return
        text = text.translate(_CONTROL)
        self.out.write(text)
        self.out.flush()
        self._at_line_start = text.endswith("\n")

    def _finish_line(self) -> None:
        if self._artifact_open:
            self._write("]\n")
            self._artifact_open = False
        if not self._at_line_start:
            self._write("\n")


def save_artifact(artifact: ArtifactCompleted, folder: Path) -> Path:
    """Write an artifact to a new file in `folder` (never over an existing one); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    name = artifact_filename(artifact.title, artifact.artifact_id, artifact.language)
    stem, suffix = Path(name).stem, Path(name).suffix
    path, n = folder / name, 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    content = artifact.content if artifact.content.endswith("\n") else artifact.content + "\n"
    with path.open("x", encoding="utf-8") as file:
        file.write(content)
    return path


def artifact_filename(title: str, artifact_id: str, language: str | None) -> str:
    """A safe file name from what the model called the artifact: no folders, no hidden files."""
    base = PureWindowsPath(PurePosixPath(title.strip()).name).name
    name = _UNSAFE_NAME.sub("_", base).strip(" .")
    if not name:
        name = _UNSAFE_NAME.sub("_", artifact_id).strip(" .") or "artifact"
    if not Path(name).suffix:
        name += _EXTENSIONS.get((language or "").lower(), ".txt")
    return name[:120]


def _call(name: str, arguments: str) -> str:
    """`add(a=25, b=17)`: the call as the model made it, its arguments as JSON values."""
    try:
        parsed: Any = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return f"{name}({arguments})"
    if not isinstance(parsed, dict):
        return f"{name}({arguments})"
    inside = ", ".join(
        f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in parsed.items()
    )
    return f"{name}({inside})"


def _on_sigint(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    """Route Ctrl-C to `callback` while an answer streams; False where that cannot be done."""
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        return False
    return True
