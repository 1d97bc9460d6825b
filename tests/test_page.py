"""The chat page in a real browser: Debian's Chromium driven by Playwright.

Each test starts streamchat on a free loopback port, pointed at the fake upstream, opens the page
and talks to it the way a person would: type, press Enter, click Stop. A screenshot of each state
goes to `tests/screenshots/`. Without Chromium every test here is skipped, and says why.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    async_playwright,
    expect,
)

from streamchat.settings import DEFAULT_SYSTEM_PROMPT
from streamchat.web import create_app
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, HttpError, Sleep, paced, text_reply, tool_reply


def find_chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = find_chromium()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
DEFAULT_MODEL = make_settings().default_model

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (no /usr/bin/chromium, no chromium on PATH): "
    "the page tests need it; install it with `apt-get install -y chromium`",
)


class ChatPage:
    """The page as a person sees it, plus what went wrong in its console."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    @property
    def textbox(self) -> Locator:
        return self.page.get_by_role("textbox", name="Message")

    @property
    def replies(self) -> Locator:
        return self.page.locator("#messages .msg-assistant")

    @property
    def last_reply(self) -> Locator:
        return self.replies.last

    @property
    def artifacts(self) -> Locator:
        return self.page.get_by_role("complementary", name="Artifacts")

    async def send(self, message: str) -> None:
        await self.textbox.fill(message)
        await self.textbox.press("Enter")

    async def wait_for_reply(self) -> None:
        await expect(self.last_reply).to_have_attribute("aria-busy", "false")

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=SCREENSHOTS / f"{name}.png")


OpenChat = Callable[..., Awaitable[ChatPage]]


@pytest.fixture
async def server(upstream: FakeUpstream) -> AsyncIterator[str]:
    """streamchat on a free loopback port, its upstream the fake one."""
    app = create_app(make_settings(openrouter_base_url=upstream.base_url))
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def open_chat(browser: Browser, server: str) -> AsyncIterator[OpenChat]:
    """Opens the page in a fresh browser context; at the end, its console must be clean."""
    contexts: list[BrowserContext] = []
    pages: list[ChatPage] = []

    async def open_page(**context_options: Any) -> ChatPage:
        context_options.setdefault("viewport", {"width": 1280, "height": 800})
        context = await browser.new_context(base_url=server, **context_options)
        contexts.append(context)
        chat = ChatPage(await context.new_page())
        pages.append(chat)
        await chat.page.goto("/")
        await expect(chat.page.locator("body")).to_have_attribute("data-ready", "true")
        return chat

    yield open_page
    for context in contexts:
        await context.close()
    assert [problem for chat in pages for problem in chat.problems] == []


@pytest.fixture
async def chat(open_chat: OpenChat) -> ChatPage:
    return await open_chat()


async def test_page_loads_with_the_servers_default_model_and_its_own_conversation_id(
    chat: ChatPage, server: str
) -> None:
    await expect(chat.page).to_have_title("streamchat")
    await expect(chat.page.get_by_label("Model")).to_have_value(DEFAULT_MODEL)
    conversation_id = await chat.page.locator("#conversation-id").text_content()
    assert conversation_id is not None
    assert len(conversation_id) == 36  # crypto.randomUUID()
    await expect(chat.textbox).to_be_focused()
    async with ClientSession() as session, session.get(server + "/") as response:
        assert response.status == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    await chat.screenshot("welcome")


async def test_tool_call_shows_a_card_with_arguments_and_result_then_the_answer(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "add", {"a": 25, "b": 17})),
        [Sleep(0.6), *text_reply("25 + 17 ", "= **42**")],
    )

    await chat.send("What is 25 + 17?")

    card = chat.last_reply.locator(".tool-card")
    # The card is there while the model is still working on its answer.
    await expect(card.locator(".tool-result")).to_have_text("42")
    await expect(chat.last_reply).to_have_attribute("aria-busy", "true")
    await expect(card.locator(".tool-name")).to_have_text("add")
    arguments = await card.locator(".tool-args").text_content()
    assert arguments is not None
    assert json.loads(arguments) == {"a": 25, "b": 17}
    assert '"a": 25' in arguments  # pretty-printed
    await expect(card.locator(".tool-state")).to_contain_text("Done")
    await expect(card.locator(".tool-state")).to_contain_text("ms")
    await chat.wait_for_reply()
    answer = chat.last_reply.locator(".md")
    await expect(answer).to_have_text("25 + 17 = 42")
    await expect(answer.locator("strong")).to_have_text("42")
    order = await chat.last_reply.locator(".msg-body > *").evaluate_all(
        "nodes => nodes.map(node => node.className)"
    )
    assert order == ["tool-card is-done", "md"]
    await expect(chat.last_reply.locator(".msg-meta")).to_contain_text("fake/model-1")
    await chat.screenshot("tool-call")


async def test_a_failing_tool_shows_its_error_on_the_card(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "divide", {"a": 1, "b": 0})),
        text_reply("You cannot divide by zero."),
    )

    await chat.send("What is 1 / 0?")
    await chat.wait_for_reply()

    card = chat.last_reply.locator(".tool-card")
    await expect(card.locator(".tool-name")).to_have_text("divide")
    await expect(card.locator(".tool-error")).to_have_text("Cannot divide by zero")
    await expect(card.locator(".tool-state")).to_contain_text("Failed")
    await expect(card.locator(".tool-state")).to_contain_text("ms")
    await expect(chat.last_reply.locator(".md")).to_have_text("You cannot divide by zero.")
    await chat.screenshot("tool-error")


ARTIFACT_REPLY = (
    "Here is a small greeting function.\n\n"
    '<artifact id="hello-py" type="code" title="hello.py" language="python">\n'
    "def hello():\n"
    "    print('Hello, World!')\n"
    "</artifact>\n\n"
    "Call `hello()` to print the greeting."
)
HELLO_CODE = "def hello():\n    print('Hello, World!')"


def pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


async def record_code_lengths(chat: ChatPage) -> None:
    """Notes the length of the artifact's code view at every change, to prove it streamed."""
    await chat.page.evaluate(
        """() => {
            window.codeLengths = [];
            new MutationObserver(() => {
                const code = document.querySelector('.artifact-code code');
                if (code) window.codeLengths.push(code.textContent.length);
            }).observe(document.getElementById('artifact-list'),
                       {childList: true, subtree: true, characterData: true});
        }"""
    )


async def test_artifact_streams_into_the_panel_and_stays_out_of_the_chat(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    chat = await open_chat(permissions=["clipboard-read", "clipboard-write"])
    upstream.add(paced(text_reply(*pieces(ARTIFACT_REPLY, 6)), 0.01))
    await record_code_lengths(chat)

    await chat.send("Create a Python hello world function")
    await chat.wait_for_reply()

    artifact = chat.artifacts.locator(".artifact")
    await expect(chat.artifacts).to_be_visible()
    await expect(artifact).to_have_count(1)
    await expect(artifact.get_by_role("heading", name="hello.py")).to_be_visible()
    await expect(artifact.locator(".tag")).to_have_text(["code", "python"])
    await expect(artifact.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    lengths = await chat.page.evaluate("window.codeLengths")
    assert len(set(lengths)) > 3, lengths  # filled in piece by piece
    await expect(chat.last_reply.locator(".md").first).to_have_text(
        "Here is a small greeting function."
    )
    await expect(chat.last_reply.locator(".md").last).to_have_text(
        "Call hello() to print the greeting."
    )
    await expect(chat.last_reply.locator(".md code")).to_have_text("hello()")
    reply_text = await chat.last_reply.inner_text()
    assert "<artifact" not in reply_text
    assert "print(" not in reply_text
    await expect(chat.last_reply.locator(".artifact-chip")).to_contain_text("hello.py")
    await chat.screenshot("artifact")

    async with chat.page.expect_download() as download_info:
        await artifact.get_by_role("button", name="Download hello.py").click()
    download = await download_info.value
    assert download.suggested_filename == "hello.py"
    saved = Path(await download.path())
    assert await asyncio.to_thread(saved.read_text) == HELLO_CODE

    await artifact.get_by_role("button", name="Copy hello.py").click()
    await expect(artifact.get_by_role("button", name="Copy hello.py")).to_contain_text("Copied")
    assert await chat.page.evaluate("navigator.clipboard.readText()") == HELLO_CODE


async def test_a_new_version_of_an_artifact_replaces_the_old_one_which_stays_reachable(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    version_2 = ARTIFACT_REPLY.replace("Hello, World!", "Hello again!").replace("hello-py", "h2")
    upstream.add(text_reply(*pieces(ARTIFACT_REPLY, 9)), text_reply(*pieces(version_2, 9)))

    await chat.send("Create a Python hello world function")
    await chat.wait_for_reply()
    await chat.send("Make it say hello again")
    await chat.wait_for_reply()

    artifact = chat.artifacts.locator(".artifact")
    await expect(artifact).to_have_count(1)
    versions = artifact.get_by_label("Version of hello.py")
    await expect(versions).to_have_value("2")
    await expect(versions.locator("option")).to_have_text(["v1", "v2"])
    await expect(artifact.locator(".artifact-code code")).to_contain_text("Hello again!")
    await chat.screenshot("artifact-versions")

    await versions.select_option(label="v1")
    await expect(artifact.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    await chat.replies.last.locator(".artifact-chip").click()
    await expect(versions).to_have_value("2")
    await expect(artifact).to_be_focused()
    await expect(chat.replies.first.locator(".chip-state")).to_have_text("v1")

    await chat.page.set_viewport_size({"width": 390, "height": 844})
    await chat.screenshot("mobile")


async def test_stop_ends_the_reply_and_the_upstream_sees_the_disconnect(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*(f"word{i} " for i in range(60))), 0.2))

    await chat.send("Tell me a long story")
    await expect(chat.last_reply).to_contain_text("word1")
    await chat.screenshot("streaming")
    await chat.page.get_by_role("button", name="Stop").click()

    await expect(chat.last_reply.locator(".stopped-note")).to_have_text("Stopped")
    await chat.wait_for_reply()
    await expect(chat.page.get_by_role("button", name="Send")).to_be_visible()
    await expect(chat.page.get_by_role("button", name="Stop")).to_be_hidden()
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    shown = await chat.last_reply.inner_text()
    await chat.page.wait_for_timeout(500)
    assert await chat.last_reply.inner_text() == shown
    assert "word59" not in shown
    await chat.screenshot("stopped")


async def test_new_conversation_clears_the_view_and_the_history_upstream(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    upstream.add(text_reply("Nice to meet you, Ada."), text_reply("I do not know your name."))
    await chat.send("Hi, I am Ada")
    await chat.wait_for_reply()
    old_id = await chat.page.locator("#conversation-id").text_content()
    assert upstream.requests[0]["messages"][-1] == {"role": "user", "content": "Hi, I am Ada"}

    await chat.page.get_by_role("button", name="New conversation").click()

    await expect(chat.page.locator("#messages > *")).to_have_count(0)
    await expect(chat.page.get_by_role("heading", name="What can I help you with?")).to_be_visible()
    await expect(chat.page.locator("#conversation-id")).not_to_have_text(old_id or "")
    await expect(chat.page.get_by_role("status")).to_have_text("Started a new conversation.")
    async with (
        ClientSession() as session,
        session.get(f"{server}/api/conversation/{old_id}") as response,
    ):
        assert response.status == 404
    await chat.screenshot("new-conversation")

    await chat.send("What is my name?")
    await chat.wait_for_reply()
    messages = upstream.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", DEFAULT_SYSTEM_PROMPT),
        ("user", "What is my name?"),
    ]


async def test_an_upstream_error_is_shown_as_a_readable_message(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(HttpError(401, {"error": {"message": "No auth credentials found", "code": 401}}))

    await chat.send("Hello?")
    await chat.wait_for_reply()

    error = chat.last_reply.get_by_role("alert")
    await expect(error).to_contain_text("The model provider rejected the API key.")
    await expect(error.locator(".error-code")).to_have_text("upstream_auth")
    await expect(chat.page.get_by_role("button", name="Send")).to_be_visible()
    await chat.screenshot("upstream-error")


async def test_markup_in_model_text_is_shown_as_text_and_markdown_is_rendered(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    chat.page.on("dialog", dismiss)
    reply = (
        "Careful: <img src=x onerror=alert(1)> and <b>bold</b> are just text.\n\n"
        "- a `code` item\n- second item\n\n1. one\n2. two"
    )
    upstream.add(text_reply(*pieces(reply, 5)))

    await chat.send("Show me <img src=x onerror=alert(2)>")
    await chat.wait_for_reply()

    messages = chat.page.locator("#messages")
    await expect(messages.locator("img")).to_have_count(0)
    await expect(messages.locator("b")).to_have_count(0)
    await expect(chat.last_reply.locator("p").first).to_have_text(
        "Careful: <img src=x onerror=alert(1)> and <b>bold</b> are just text."
    )
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(
        "Show me <img src=x onerror=alert(2)>"
    )
    await expect(chat.last_reply.locator("ul > li")).to_have_text(["a code item", "second item"])
    await expect(chat.last_reply.locator("ul code")).to_have_text("code")
    await expect(chat.last_reply.locator("ol > li")).to_have_text(["one", "two"])
    assert dialogs == []
    await chat.screenshot("escaped-markup")


async def test_keyboard_enter_sends_shift_enter_breaks_the_line_and_escape_stops(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        text_reply("Two lines received."),
        paced(text_reply(*(f"w{i} " for i in range(40))), 0.2),
    )
    await chat.textbox.focus()

    await chat.page.keyboard.type("first line")
    await chat.page.keyboard.press("Shift+Enter")
    await chat.page.keyboard.type("second line")
    await expect(chat.textbox).to_have_value("first line\nsecond line")
    assert upstream.requests == []
    await chat.page.keyboard.press("Enter")

    await expect(chat.page.locator(".msg-user .bubble")).to_have_text("first line\nsecond line")
    await chat.wait_for_reply()
    assert upstream.requests[0]["messages"][-1]["content"] == "first line\nsecond line"
    await expect(chat.textbox).to_have_value("")
    await expect(chat.textbox).to_be_focused()
    await chat.screenshot("keyboard")

    await chat.page.keyboard.type("go on")
    await chat.page.keyboard.press("Enter")
    await expect(chat.last_reply).to_contain_text("w1")
    await chat.page.keyboard.press("Escape")
    await expect(chat.last_reply.locator(".stopped-note")).to_be_visible()

    # Shift+Tab from the message box reaches "New conversation", with a visible focus ring.
    await chat.page.keyboard.press("Shift+Tab")
    new_conversation = chat.page.get_by_role("button", name="New conversation")
    await expect(new_conversation).to_be_focused()
    outline = await new_conversation.evaluate(
        "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
    )
    assert outline[0] != "none"
    assert float(outline[1].removesuffix("px")) >= 2
    await chat.page.keyboard.press("Enter")
    await expect(chat.page.locator("#messages > *")).to_have_count(0)


async def test_dark_mode_renders_tools_and_artifacts(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    chat = await open_chat(color_scheme="dark")
    upstream.add(
        tool_reply(("call_1", "multiply", {"a": 6, "b": 7})),
        text_reply(*pieces("6 * 7 = 42. " + ARTIFACT_REPLY, 8)),
    )

    await chat.send("What is 6 * 7? Then write hello.py")
    await chat.wait_for_reply()

    await expect(chat.artifacts.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    background = await chat.page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[4:-1].split(","))
    assert red + green + blue < 120, background
    await chat.screenshot("dark-mode")


STREAM_CHECK = """
async ([frames, sizes]) => {
  const { streamChat, clearConversation } = await import('/static/streamchat.js');
  const bytes = new TextEncoder().encode(frames);
  const requests = [];
  const results = {};
  for (const size of sizes) {
    const fetch = async (url, init) => {
      requests.push({ url, method: init.method, body: init.body });
      const body = new ReadableStream({
        start(controller) {
          for (let i = 0; i < bytes.length; i += size) controller.enqueue(bytes.slice(i, i + size));
          controller.close();
        },
      });
      return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
    };
    const events = [];
    const options = { message: 'hi', model: 'm/1', conversationId: 'c-1', fetch };
    for await (const event of streamChat(options)) events.push(event);
    results[size] = events;
  }

  const failure = async (make) => {
    try {
      for await (const _ of streamChat({ message: 'hi', fetch: make })) { /* drain */ }
      return null;
    } catch (error) {
      return { name: error.name, message: error.message, code: error.code, status: error.status };
    }
  };
  const refused = await failure(async () => new Response(
    JSON.stringify({ error: { message: "'message' must not be empty", code: 'invalid_request' } }),
    { status: 400 }));
  const notJson = await failure(async () => new Response('Bad Gateway', { status: 502 }));
  const cut = await failure(async () => new Response('data: {"type":"text","content":"x"}\\n\\n'));

  const deleted = [];
  const answer = await clearConversation('c/1', {
    fetch: async (url, init) => {
      deleted.push([url, init.method]);
      return new Response('{"message": "Conversation cleared"}');
    },
  });
  return { results, requests: requests.slice(0, 1), refused, notJson, cut, deleted, answer };
}
"""


async def test_streamchat_js_reassembles_frames_split_anywhere(chat: ChatPage) -> None:
    """The client module's line buffering, fed one, two, three, seven bytes at a time."""
    events = [
        {"type": "text", "chunkIndex": 0, "content": "héllo 😀 — ü"},
        {"type": "text", "chunkIndex": 1, "content": "multi\nline"},
        {"type": "completion", "chunkIndex": 2, "finishReason": "stop"},
    ]
    frames = (
        ": ping\r\n\r\n"
        f"id: 0\r\nevent: text\r\ndata: {json.dumps(events[0], ensure_ascii=False)}\r\n\r\n"
        # One event's JSON over two data: lines, joined with a newline (valid JSON whitespace).
        'event: text\ndata: {"type": "text", "chunkIndex": 1,\ndata: "content": "multi\\nline"}\n\n'
        ": ping\n\n"
        f"event:completion\rdata:{json.dumps(events[2])}\r\r"
    )
    sizes = [1, 2, 3, 7, len(frames.encode())]

    out = await chat.page.evaluate(STREAM_CHECK, [frames, sizes])

    for size in sizes:
        assert out["results"][str(size)] == events, size
    assert out["requests"] == [
        {
            "url": "/api/stream",
            "method": "POST",
            "body": json.dumps({"message": "hi", "model": "m/1", "conversationId": "c-1"})
            .replace(", ", ",")
            .replace(": ", ":"),
        }
    ]
    assert out["refused"] == {
        "name": "StreamChatError",
        "message": "'message' must not be empty",
        "code": "invalid_request",
        "status": 400,
    }
    assert out["notJson"]["status"] == 502
    assert "Bad Gateway" in out["notJson"]["message"]
    assert out["cut"]["code"] == "incomplete_stream"
    assert out["deleted"] == [["/api/conversation/c%2F1", "DELETE"]]
    assert out["answer"] == {"message": "Conversation cleared"}
