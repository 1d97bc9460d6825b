"""`python -m streamchat chat` against a live server, driven as a person or a script drives it.

Most tests pipe lines into its stdin; the last ones run it in a pseudo-terminal, where it
prompts with `you> ` and Ctrl-C is the terminal's own (the line discipline sends SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamchat.chat_cli import artifact_filename
from streamchat.client import StreamChatClient
from tests.conftest import ROOT, free_port
from tests.fake_upstream import FakeUpstream, HttpError, paced, text_reply, tool_reply

ARTIFACT = '<artifact id="hi" title="hi.py" language="python">\nprint("hi")\n</artifact>'
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
ENV.pop("STREAMCHAT_URL", None)
ENV.pop("STREAMCHAT_API_KEY", None)


@pytest.fixture
def base(live_server: str) -> str:
    return live_server


def chat_command(base: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "streamchat", "chat", "--url", base, *args]


async def chat(base: str, stdin: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run the chat with `stdin` piped in; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *chat_command(base, *args),
        cwd=cwd,
        env=ENV,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_piped_chat_prints_answers_tool_calls_and_saves_artifacts(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(
        tool_reply(("t1", "add", {"a": 25, "b": 17})),
        text_reply("25 + 17 = 42"),
        text_reply("Here: ", ARTIFACT, " done."),
    )

    status, out, err = await chat(
        base, "What is 25 + 17?\nwrite hi.py\n/save\n/quit\nnever sent\n", tmp_path
    )

    assert status == 0, err
    assert out.splitlines() == [
        "[add(a=25, b=17) -> 42]",
        "25 + 17 = 42",
        "Here: ",
        "[artifact hi.py (python), 1 line; /save writes it to a file]",
        " done.",
        f"[saved {tmp_path / 'hi.py'}]",
    ]
    assert (tmp_path / "hi.py").read_text() == 'print("hi")\n'
    assert len(upstream.requests) == 3  # /quit ended the chat before the last line
    # One conversation: the second question was sent with the first one's history.
    assert [m["role"] for m in upstream.requests[2]["messages"]][-2:] == ["assistant", "user"]


async def test_save_artifacts_writes_each_artifact_as_it_completes_without_overwriting(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(text_reply(ARTIFACT), text_reply(ARTIFACT))
    folder = tmp_path / "out"

    status, out, err = await chat(base, "one\ntwo\n", tmp_path, "--save-artifacts", str(folder))

    assert status == 0, err
    assert f"[artifact hi.py (python), 1 line, saved to {folder / 'hi.py'}]" in out
    assert f"saved to {folder / 'hi-2.py'}]" in out
    assert sorted(p.name for p in folder.iterdir()) == ["hi-2.py", "hi.py"]


async def test_new_starts_a_new_conversation_and_conversation_continues_one(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(text_reply("A"), text_reply("B"), text_reply("C"))

    status, out, _ = await chat(base, "one\n/new\ntwo\n", tmp_path)
    again, _, _ = await chat(base, "three\n", tmp_path, "--conversation", "kept")

    assert status == again == 0
    assert "[new conversation " in out
    assert [m["role"] for m in upstream.requests[1]["messages"]] == ["system", "user"]
    assert [m["role"] for m in upstream.requests[2]["messages"]] == ["system", "user"]


async def test_an_error_event_is_shown_and_the_exit_status_is_1(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found"}}))
    upstream.add(text_reply("Fine now."))

    status, out, _ = await chat(base, "Hello?\nAgain?\n", tmp_path)

    assert status == 1
    assert out.splitlines() == ["[error: The model provider rejected the API key.]", "Fine now."]


async def test_an_unreachable_server_is_reported_and_the_chat_goes_on(tmp_path: Path) -> None:
    status, out, _ = await chat(f"http://127.0.0.1:{free_port()}", "Hello?\n/help\n", tmp_path)

    assert status == 1
    assert "could not be reached" in out and "(unreachable)" in out
    assert "/save" in out  # /help still answered


async def test_an_answer_is_printed_while_it_streams(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(30)]), 0.1))
    process = await asyncio.create_subprocess_exec(
        *chat_command(base),
        cwd=tmp_path,
        env=ENV,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"count\n")
    await process.stdin.drain()

    first = await asyncio.wait_for(process.stdout.readuntil(b"w1 "), 20)
    still_streaming = upstream.active == 1
    process.stdin.close()
    rest = await asyncio.wait_for(process.stdout.read(), 30)

    assert first == b"w0 w1 "
    assert still_streaming
    assert (first + rest).decode().strip() == "".join(f"w{i} " for i in range(30)).strip()
    assert await process.wait() == 0


async def test_sigint_during_an_answer_stops_it_on_the_server_and_the_chat_goes_on(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(300)]), 0.02), text_reply("Next."))
    process = await asyncio.create_subprocess_exec(
        *chat_command(base, "--conversation", "sig"),
        cwd=tmp_path,
        env=ENV,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"go on\n")
    await process.stdin.drain()
    await asyncio.wait_for(process.stdout.readuntil(b"w2 "), 20)

    process.send_signal(signal.SIGINT)
    stopped = await asyncio.wait_for(process.stdout.readuntil(b"[stopped]\n"), 20)
    process.stdin.write(b"and now?\n/quit\n")
    process.stdin.close()
    rest = await asyncio.wait_for(process.stdout.read(), 20)

    assert await process.wait() == 0
    assert rest.decode() == "Next.\n"
    assert stopped.endswith(b"\n[stopped]\n")
    assert len(upstream.requests) == 2


async def test_stop_at_the_prompt_says_when_nothing_runs(base: str, tmp_path: Path) -> None:
    status, out, _ = await chat(base, "/stop\n/nope\n", tmp_path, "--conversation", "idle")

    assert status == 0
    assert "[nothing is running]" in out
    assert "[unknown command /nope; /help lists them]" in out


def test_artifact_file_names_stay_in_their_folder() -> None:
    assert artifact_filename("hi.py", "a1", "python") == "hi.py"
    assert artifact_filename("../../etc/passwd", "a1", None) == "passwd.txt"
    assert artifact_filename("C:\\Windows\\evil.bat", "a1", None) == "evil.bat"
    assert artifact_filename(".bashrc", "a1", "bash") == "bashrc.sh"
    assert artifact_filename("Fibonacci in Rust", "fib", "rust") == "Fibonacci in Rust.rs"
    assert artifact_filename("", "fib", "rust") == "fib.rs"
    assert artifact_filename("\x1b[2J", "", None) == "_2J.txt"


# --- in a pseudo-terminal -------------------------------------------------------------------------


class Terminal:
    """The chat in a pseudo-terminal of its own, as its controlling terminal when `setsid` can
    make it so (then Ctrl-C typed into it is a real SIGINT)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        master, slave = pty.openpty()
        setsid = shutil.which("setsid")
        self.controlling = setsid is not None
        prefix = [setsid, "--ctty", "--wait"] if setsid is not None else []
        self.process = subprocess.Popen(
            [*prefix, *argv], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=ENV
        )
        os.close(slave)
        self.master = master
        self.output = b""
        self._seen = 0
        self._more = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other end is closed
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
        self.output += data
        self._more.set()

    async def expect(self, text: bytes) -> bytes:
        """Everything up to and including the next `text` the terminal shows (within 20 s)."""
        deadline = time.monotonic() + 20
        while (found := self.output.find(text, self._seen)) < 0:
            self._more.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} never came; the terminal shows {self.output!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), remaining)
        start, self._seen = self._seen, found + len(text)
        return self.output[start : self._seen]

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def wait(self) -> int:
        return await asyncio.to_thread(self.process.wait, 20)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
async def terminal(base: str, tmp_path: Path) -> AsyncIterator[Terminal]:
    term = Terminal(chat_command(base), tmp_path)
    try:
        yield term
    finally:
        term.close()


async def test_in_a_terminal_it_prompts_streams_and_ends_on_ctrl_d(
    terminal: Terminal, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("t1", "add", {"a": 25, "b": 17})), text_reply("25 + 17 = 42"))

    banner = await terminal.expect(b"you> ")
    terminal.type(b"What is 25 + 17?\r")
    answer = await terminal.expect(b"you> ")
    terminal.type(b"\x04")  # Ctrl-D: end of input

    assert b"streamchat at http://127.0.0.1:" in banner
    assert b"[add(a=25, b=17) -> 42]\r\n25 + 17 = 42\r\n" in answer
    assert await terminal.wait() == 0


async def test_in_a_terminal_ctrl_c_stops_the_answer_and_the_prompt_comes_back(
    terminal: Terminal, upstream: FakeUpstream
) -> None:
    if not terminal.controlling:
        pytest.skip("setsid (util-linux) is needed to give the chat a controlling terminal")
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(300)]), 0.02), text_reply("Next."))

    await terminal.expect(b"you> ")
    terminal.type(b"go on\r")
    await terminal.expect(b"w2 ")
    terminal.type(b"\x03")  # Ctrl-C, as the terminal sends it
    await terminal.expect(b"[stopped]")
    await terminal.expect(b"you> ")
    terminal.type(b"and now?\r")
    after = await terminal.expect(b"you> ")
    terminal.type(b"/quit\r")

    assert b"Next." in after
    assert await terminal.wait() == 0


async def test_continuing_a_conversation_follows_its_running_answer_to_the_end(
    base: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    words = [f"w{i} " for i in range(30)]
    upstream.add(paced(text_reply(*words), 0.03))
    async with StreamChatClient(base) as client:
        running = client.stream("count", conversation_id="busy")
        await anext(running)

        status, out, _ = await chat(base, "", tmp_path, "--conversation", "busy")
        await running.aclose()

    assert status == 0
    assert out.splitlines() == ["[an answer is in progress; following it]", "".join(words)]
