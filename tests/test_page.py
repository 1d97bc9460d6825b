"""The chat page in a real browser: Debian's Chromium driven by Playwright.

Each test starts streamchat on a free loopback port, pointed at the fake upstream, opens the page
and talks to it the way a person would: type, press Enter, click Stop. A screenshot of each state
goes to `tests/screenshots/`. Without Chromium every test here is skipped, and says why.
"""

from __future__ import annotations

import asyncio
import json
import re
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
    ViewportSize,
    expect,
)

from streamchat.backends import Backend
from streamchat.limits import PICKER_MODELS
from streamchat.settings import DEFAULT_SYSTEM_PROMPT
from streamchat.web import create_app
from tests.conftest import CHROMIUM, make_settings
from tests.fake_upstream import FakeUpstream, HttpError, Sleep, paced, text_reply, tool_reply

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
        # Generous: a paced reply on a machine busy with the rest of the suite.
        await expect(self.last_reply).to_have_attribute("aria-busy", "false", timeout=20_000)

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        # Finished animations (the phone's sheet sliding up), not a frame halfway through.
        await self.page.screenshot(path=SCREENSHOTS / f"{name}.png", animations="disabled")

    @property
    def sidebar(self) -> Locator:
        return self.page.get_by_role("navigation", name="Conversations")

    @property
    def sidebar_links(self) -> Locator:
        return self.sidebar.get_by_role("link")

    async def conversation_id(self) -> str:
        text = await self.page.locator("#conversation-id").text_content()
        assert text
        return text


OpenChat = Callable[..., Awaitable[ChatPage]]


# Turns that outlive the page: a reload or another conversation leaves the turn running.
WITH_GRACE = {"resume_grace_seconds": 30.0}


@pytest.fixture
async def server(upstream: FakeUpstream, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """streamchat on a free loopback port, its upstream the fake one.

    Parametrized indirectly with a `Backend`, the server says that backend runs (`/health`);
    with a dict, those are settings (`WITH_GRACE`).
    """
    param: Backend | dict[str, Any] | None = getattr(request, "param", None)
    backend = param if isinstance(param, Backend) else None
    overrides = param if isinstance(param, dict) else {}
    settings = make_settings(openrouter_base_url=upstream.base_url, **overrides)
    app = create_app(settings, backend=backend)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def open_chat(browser: Browser, server: str) -> AsyncIterator[OpenChat]:
    """Opens the page in a fresh browser context; at the end, its console must be clean."""
    contexts: list[BrowserContext] = []
    pages: list[ChatPage] = []

    async def open_page(
        path: str | None = "/", ready: bool = True, **context_options: Any
    ) -> ChatPage:
        """`ready`: wait until the page has loaded what it shows first (false: it may ask first).
        With no `path` the tab opens empty (the test goes to the page itself)."""
        context_options.setdefault("viewport", {"width": 1280, "height": 800})
        context = await browser.new_context(base_url=server, **context_options)
        contexts.append(context)
        chat = ChatPage(await context.new_page())
        pages.append(chat)
        if path is None:
            return chat
        await chat.page.goto(path)
        if ready:
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
    await expect(artifact.locator(".artifact-code .hljs-keyword")).to_have_text(["def"])
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


PHONE: ViewportSize = {"width": 390, "height": 844}
LONG_REPLY = "\n\n".join(f"Paragraph {n}: " + "words to fill the screen " * 6 for n in range(12))


async def test_on_a_phone_the_reply_stays_in_view_and_artifacts_open_as_a_sheet(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    chat = await open_chat(viewport=PHONE, is_mobile=True, has_touch=True)
    upstream.add(
        text_reply(*pieces(LONG_REPLY, 40)), paced(text_reply(*pieces(ARTIFACT_REPLY, 6)), 0.01)
    )
    # The header fits on one row, nothing scrolls sideways, the composer is at the bottom.
    header = await chat.page.locator(".topbar").bounding_box()
    assert header is not None
    assert header["height"] <= 56
    composer = await chat.page.locator(".composer").bounding_box()
    assert composer is not None
    assert composer["y"] + composer["height"] == PHONE["height"]
    await chat.screenshot("phone-welcome")

    await chat.send("Tell me a lot")
    await chat.wait_for_reply()
    await chat.send("Create a Python hello world function")
    await chat.wait_for_reply()

    chip = chat.last_reply.get_by_role("button", name="Open hello.py")
    await expect(chat.artifacts).to_be_hidden()  # the sheet waits for the chip
    await expect(chat.last_reply.locator(".md").last).to_be_in_viewport()
    await expect(chat.last_reply.locator(".msg-meta")).to_be_in_viewport()
    assert await chat.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await chat.screenshot("phone")

    await chip.click()
    await expect(chat.artifacts).to_be_in_viewport()
    await expect(chat.artifacts.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    await expect(chat.artifacts.locator(".artifact")).to_be_focused()
    await chat.screenshot("phone-sheet")
    await chat.page.keyboard.press("Escape")
    await expect(chat.artifacts).to_be_hidden()
    await expect(chip).to_be_focused()

    await chip.click()
    await expect(chat.artifacts).to_be_visible()
    await chat.artifacts.get_by_role("button", name="Close artifacts").click()
    await expect(chat.artifacts).to_be_hidden()
    await expect(chat.page.get_by_role("textbox", name="Message")).to_be_in_viewport()


@pytest.mark.parametrize("server", [WITH_GRACE], indirect=True, ids=["grace"])
async def test_stop_calls_the_stop_route_and_the_reply_ends_quietly_as_stopped(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    # With a grace period, closing the connection alone would leave the model running: only
    # the stop route ends it at once.
    upstream.add(paced(text_reply(*(f"word{i} " for i in range(60))), 0.2))
    stops: list[str] = []
    chat.page.on(
        "request",
        lambda request: (
            stops.append(f"{request.method} {request.url}")
            if request.url.endswith("/stop")
            else None
        ),
    )

    await chat.send("Tell me a long story")
    await expect(chat.last_reply).to_contain_text("word1")
    await chat.screenshot("streaming")
    await chat.page.get_by_role("button", name="Stop").click()

    await expect(chat.last_reply.locator(".stopped-note")).to_have_text("Stopped")
    await chat.wait_for_reply()
    await expect(chat.page.get_by_role("button", name="Send")).to_be_visible()
    await expect(chat.page.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(chat.page.get_by_role("status")).to_have_text("Stopped.")
    conversation_id = await chat.conversation_id()
    assert stops == [f"POST {server}/api/conversation/{conversation_id}/stop"]
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    # The server's cancelled completion ended the reply: its footer names the model.
    await expect(chat.last_reply.locator(".msg-meta")).to_contain_text(DEFAULT_MODEL)
    shown = await chat.last_reply.locator(".md").inner_text()
    await chat.page.wait_for_timeout(500)
    assert await chat.last_reply.locator(".md").inner_text() == shown
    stored = await stored_messages(server, conversation_id)
    assert stored[0] == ("user", "Tell me a long story")
    assert [role for role, _ in stored] == ["user", "assistant"]
    partial = stored[1][1]
    assert partial.startswith("word0 word1 ")
    assert "word59" not in partial
    assert shown.split() == partial.split()  # the page shows what the server kept
    await chat.screenshot("stopped")


async def test_new_conversation_starts_afresh_and_keeps_the_old_one_in_the_sidebar(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    upstream.add(text_reply("Nice to meet you, Ada."), text_reply("I do not know your name."))
    await chat.send("Hi, I am Ada")
    await chat.wait_for_reply()
    old_id = await chat.conversation_id()
    assert upstream.requests[0]["messages"][-1] == {"role": "user", "content": "Hi, I am Ada"}

    await chat.page.get_by_role("button", name="New conversation").click()

    await expect(chat.page.locator("#messages > *")).to_have_count(0)
    await expect(chat.page.get_by_role("heading", name="What can I help you with?")).to_be_visible()
    await expect(chat.page.locator("#conversation-id")).not_to_have_text(old_id)
    await expect(chat.page.get_by_role("status")).to_have_text("Started a new conversation.")
    await expect(chat.textbox).to_be_focused()
    assert chat.page.url.endswith("#" + await chat.conversation_id())
    # The old conversation is kept, and listed.
    assert await stored_messages(server, old_id) == [
        ("user", "Hi, I am Ada"),
        ("assistant", "Nice to meet you, Ada."),
    ]
    await expect(chat.sidebar_links).to_have_text([re.compile("^Hi, I am Ada")])
    await expect(chat.sidebar_links).not_to_have_attribute("aria-current", "page")
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


HOSTILE_REPLY = (
    "Careful: <img src=x onerror=alert(1)> and <b>bold</b> are just text.\n\n"
    "[a link](javascript:alert(2)) and [another](JaVaScRiPt:window.pwned=1) "
    'and ![a picture](javascript:alert(3)) and <a href="javascript:alert(4)">raw</a>\n\n'
    "<script>window.pwned = 2</script>\n\n"
    '<svg onload="window.pwned = 3"><circle r=5></circle></svg>\n\n'
    "- a `code` item\n- second item\n\n1. one\n2. two"
)


async def test_hostile_markdown_is_inert_and_markup_in_text_is_shown_as_text(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    chat.page.on("dialog", dismiss)
    upstream.add(text_reply(*pieces(HOSTILE_REPLY, 5)))

    await chat.send("Show me <img src=x onerror=alert(5)>")
    await chat.wait_for_reply()
    await chat.page.wait_for_timeout(200)  # time for an image error or a script to fire

    messages = chat.page.locator("#messages")
    for selector in ("img", "b", "script", "svg:not(.icon)", "iframe", "[href^='javascript' i]"):
        await expect(messages.locator(selector)).to_have_count(0)
    handlers = await messages.evaluate(
        """root => [...root.querySelectorAll('*')].flatMap(node =>
            [...node.attributes].map(a => a.name).filter(name => name.startsWith('on')))"""
    )
    assert handlers == []
    assert await chat.page.evaluate("window.pwned") is None
    assert dialogs == []
    await expect(chat.last_reply.locator("p").first).to_have_text(
        "Careful: <img src=x onerror=alert(1)> and <b>bold</b> are just text."
    )
    await expect(chat.last_reply).to_contain_text("<script>window.pwned = 2</script>")
    await expect(chat.last_reply.locator("a", has_text="a link")).not_to_have_attribute(
        "href", re.compile(".*")
    )
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(
        "Show me <img src=x onerror=alert(5)>"
    )
    await expect(chat.last_reply.locator("ul > li")).to_have_text(["a code item", "second item"])
    await expect(chat.last_reply.locator("ul code")).to_have_text("code")
    await expect(chat.last_reply.locator("ol > li")).to_have_text(["one", "two"])
    await chat.screenshot("hostile-markdown")


MARKDOWN_REPLY = """\
Here is **what you asked for**, with *emphasis*, ~~a mistake~~ and [the docs](https://example.com/docs).

> A quote, for the record.

- [x] tables
- [ ] world peace

| Tool | Result |
|------|-------:|
| add | 42 |
| divide | 0.5 |

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

That is all."""
GREET_CODE = 'def greet(name: str) -> str:\n    return f"Hello, {name}!"'


async def test_markdown_renders_links_tables_quotes_task_lists_and_highlighted_code(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    chat = await open_chat(permissions=["clipboard-read", "clipboard-write"])
    upstream.add(paced(text_reply(*pieces(MARKDOWN_REPLY, 7)), 0.005))
    # Remember the reply's first block once the code block has begun: if each token re-rendered
    # the whole message, that node would be gone by the end.
    await chat.page.evaluate(
        """() => new MutationObserver((_, observer) => {
            const md = document.querySelector('#messages .msg-assistant .md');
            if (md && md.querySelector('.md-code')) {
                window.firstBlock = md.firstElementChild;
                observer.disconnect();
            }
        }).observe(document.getElementById('messages'), {childList: true, subtree: true})"""
    )

    await chat.send("Show me some Markdown")
    await chat.wait_for_reply()

    md = chat.last_reply.locator(".md")
    assert await md.evaluate("md => md.firstElementChild === window.firstBlock")
    link = md.get_by_role("link", name="the docs")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(md.locator("strong")).to_have_text("what you asked for")
    await expect(md.locator("em")).to_have_text("emphasis")
    await expect(md.locator("del")).to_have_text("a mistake")
    await expect(md.locator("blockquote")).to_have_text("A quote, for the record.")
    boxes = md.get_by_role("checkbox")
    await expect(boxes).to_have_count(2)
    await expect(boxes.first).to_be_checked()
    await expect(boxes.last).not_to_be_checked()
    await expect(boxes.first).to_be_disabled()
    await expect(md.locator("th")).to_have_text(["Tool", "Result"])
    await expect(md.locator("td")).to_have_text(["add", "42", "divide", "0.5"])
    await expect(md.locator("td").nth(1)).to_have_attribute("align", "right")
    code = md.locator(".md-code")
    await expect(code.locator(".md-code-lang")).to_have_text("python")
    await expect(code.locator("code")).to_have_text(GREET_CODE)
    await expect(code.locator(".hljs-keyword").first).to_have_text("def")
    await expect(code.locator(".hljs-string")).to_have_count(1)
    await expect(md.locator("p").last).to_have_text("That is all.")
    await chat.screenshot("markdown")

    await code.get_by_role("button", name="Copy code").click()
    await expect(code.get_by_role("button", name="Copy code")).to_contain_text("Copied")
    assert await chat.page.evaluate("navigator.clipboard.readText()") == GREET_CODE
    await chat.last_reply.get_by_role("button", name="Copy message").click()
    assert await chat.page.evaluate("navigator.clipboard.readText()") == MARKDOWN_REPLY
    await chat.page.locator(".msg-user").get_by_role("button", name="Copy message").click()
    assert await chat.page.evaluate("navigator.clipboard.readText()") == "Show me some Markdown"


async def stored_messages(server: str, conversation_id: str) -> list[tuple[str, str]]:
    """The conversation's history on the server, as (role, content) pairs after the system one."""
    async with (
        ClientSession() as session,
        session.get(f"{server}/api/conversation/{conversation_id}") as response,
    ):
        assert response.status == 200
        body = await response.json()
    return [(m["role"], m["content"]) for m in body["messages"][1:]]


async def test_retry_after_an_upstream_error_replaces_the_failed_turn(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    upstream.add(
        HttpError(401, {"error": {"message": "No auth credentials found", "code": 401}}),
        text_reply("Hello! What would you like to know?"),
    )

    await chat.send("Hello?")
    await chat.wait_for_reply()
    await expect(chat.last_reply.get_by_role("alert")).to_contain_text("rejected the API key")
    await expect(chat.last_reply.get_by_role("button", name="Regenerate")).to_be_hidden()
    await chat.last_reply.get_by_role("button", name="Retry").click()
    await chat.wait_for_reply()

    await expect(chat.replies).to_have_count(1)
    await expect(chat.page.locator(".msg-user")).to_have_count(1)
    await expect(chat.last_reply.locator(".md")).to_have_text("Hello! What would you like to know?")
    await expect(chat.last_reply.get_by_role("alert")).to_have_count(0)
    assert [m["role"] for m in upstream.requests[1]["messages"]] == ["system", "user"]
    assert await stored_messages(server, await chat.conversation_id()) == [
        ("user", "Hello?"),
        ("assistant", "Hello! What would you like to know?"),
    ]
    await chat.screenshot("retry")


async def test_regenerate_replaces_the_last_answer_only(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    upstream.add(text_reply("Hi!"), text_reply("2 + 2 = 5"), text_reply("2 + 2 = 4"))
    await chat.send("Hello")
    await chat.wait_for_reply()
    await chat.send("What is 2 + 2?")
    await chat.wait_for_reply()
    # Only the last answer can be regenerated.
    await expect(chat.replies.first.get_by_role("button", name="Regenerate")).to_be_hidden()

    await chat.last_reply.get_by_role("button", name="Regenerate").click()
    await chat.wait_for_reply()

    await expect(chat.replies.locator(".md")).to_have_text(["Hi!", "2 + 2 = 4"])
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["Hello", "What is 2 + 2?"])
    assert [m["content"] for m in upstream.requests[2]["messages"][1:]] == [
        "Hello",
        "Hi!",
        "What is 2 + 2?",
    ]
    assert await stored_messages(server, await chat.conversation_id()) == [
        ("user", "Hello"),
        ("assistant", "Hi!"),
        ("user", "What is 2 + 2?"),
        ("assistant", "2 + 2 = 4"),
    ]
    await chat.screenshot("regenerate")


async def test_edit_the_last_message_and_resend_it(
    chat: ChatPage, upstream: FakeUpstream, server: str
) -> None:
    upstream.add(text_reply("2 + 2 = 4"), text_reply("2 + 3 = 5"))
    await chat.send("What is 2 + 2?")
    await chat.wait_for_reply()
    user = chat.page.locator(".msg-user")

    await user.get_by_role("button", name="Edit message").click()
    editor = user.get_by_role("textbox", name="Edit your message")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("What is 2 + 2?")
    await chat.page.keyboard.press("Escape")  # cancel: the message is as it was
    await expect(editor).to_have_count(0)
    await expect(user.locator(".bubble")).to_have_text("What is 2 + 2?")
    await user.get_by_role("button", name="Edit message").click()
    await editor.fill("What is 2 + 3?")
    await chat.screenshot("edit")
    await user.get_by_role("button", name="Send").click()
    await chat.wait_for_reply()

    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["What is 2 + 3?"])
    await expect(chat.replies.locator(".md")).to_have_text(["2 + 3 = 5"])
    assert await stored_messages(server, await chat.conversation_id()) == [
        ("user", "What is 2 + 3?"),
        ("assistant", "2 + 3 = 5"),
    ]
    await chat.screenshot("edited")


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

    # Shift+Tab from the message box reaches the last reply's Regenerate, with a visible focus
    # ring; the header's buttons work from the keyboard too.
    await chat.page.keyboard.press("Shift+Tab")
    regenerate = chat.last_reply.get_by_role("button", name="Regenerate")
    await expect(regenerate).to_be_focused()
    outline = await regenerate.evaluate(
        "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
    )
    assert outline[0] != "none"
    assert float(outline[1].removesuffix("px")) >= 2
    await chat.page.get_by_role("button", name="New conversation").focus()
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


async def test_model_picker_offers_the_default_and_keeps_a_choice_only_once_it_worked(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        text_reply("From the mini model.", model="openai/gpt-4o-mini"),
        HttpError(
            400, {"error": {"message": "anthropic/claude-3.5-haiku is not a valid model ID"}}
        ),
    )
    picker = chat.page.get_by_label("Model")
    options = picker.locator("option")
    await expect(options).to_have_text(
        [DEFAULT_MODEL, *(m for m in PICKER_MODELS if m != DEFAULT_MODEL)]
    )
    groups = await picker.locator("optgroup").evaluate_all("groups => groups.map(g => g.label)")
    assert groups == ["Default", "More models"]
    await expect(picker).to_have_value(DEFAULT_MODEL)

    await picker.select_option("openai/gpt-4o-mini")
    assert await chat.page.evaluate("localStorage.getItem('streamchat.model')") is None
    await chat.send("Hello")
    await chat.wait_for_reply()
    assert upstream.requests[0]["model"] == "openai/gpt-4o-mini"
    stored = await chat.page.evaluate("localStorage.getItem('streamchat.model')")
    assert stored == "openai/gpt-4o-mini"
    await chat.page.reload()
    await expect(picker).to_have_value("openai/gpt-4o-mini")
    await chat.screenshot("model-picker")

    # A model the upstream refuses is not kept: the picker goes back to the default.
    await picker.select_option("anthropic/claude-3.5-haiku")
    await chat.send("Hello again")
    await chat.wait_for_reply()
    await expect(chat.last_reply.locator(".error-code")).to_have_text("invalid_model")
    await expect(picker).to_have_value(DEFAULT_MODEL)
    assert await chat.page.evaluate("localStorage.getItem('streamchat.model')") is None
    await expect(chat.page.get_by_role("status")).to_contain_text("refused the model")


OFFLINE = Backend("local", "smollm2-135m-instruct")


@pytest.mark.parametrize("server", [OFFLINE], indirect=True, ids=["local"])
async def test_the_page_says_quietly_when_the_small_offline_model_answers(chat: ChatPage) -> None:
    picker = chat.page.get_by_label("Model")
    await expect(picker.locator("option")).to_have_text(["Offline model"])
    await expect(picker).to_have_value("smollm2-135m-instruct")
    note = chat.page.locator("#offline-note")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("Offline: smollm2-135m-instruct, a small model")
    await expect(chat.page.locator("#backend-notice")).to_be_hidden()
    await chat.screenshot("offline")
    await chat.page.set_viewport_size(PHONE)
    await expect(note).to_be_in_viewport()
    await chat.screenshot("phone-offline")


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
  const record = async (url, init) => {
    requests.push({ url, method: init.method, body: init.body });
    return new Response(frames);
  };
  for await (const _ of streamChat({ message: 'again', regenerate: true, fetch: record })) {
    /* drain */
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
  return {
    results, requests: [requests[0], requests.at(-1)], refused, notJson, cut, deleted, answer,
  };
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
        },
        {"url": "/api/stream", "method": "POST", "body": '{"message":"again","regenerate":true}'},
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


RECONNECT_CHECK = """
async ([frames, cuts]) => {
  const { streamChat, resume, join } = await import('/static/streamchat.js');
  const whole = frames.join('');
  const calls = [];
  // The POST's body breaks off after `cut` characters: cleanly, or with a network error.
  const fakeFetch = (cut, broken, resumed = 'frames') => async (url, init) => {
    const lastEventId = init.headers?.['Last-Event-ID'] ?? null;
    calls.push({ url, method: init.method ?? 'GET', lastEventId, test: init.headers?.['X-Test'] });
    const headers = { 'Content-Type': 'text/event-stream', 'X-Conversation-Id': 'c-9' };
    if (init.method === 'POST') {
      const bytes = new TextEncoder().encode(whole.slice(0, cut));
      let sent = false;
      const body = new ReadableStream({
        pull(controller) {
          if (!sent) controller.enqueue(bytes);
          else if (broken) controller.error(new TypeError('network error'));
          else controller.close();
          sent = true;
        },
      });
      return new Response(body, { headers });
    }
    if (resumed === 'gone') return new Response(null, { status: 204 });
    if (resumed === 'refused') throw new TypeError('Failed to fetch');
    const after = lastEventId === null ? -1 : Number(lastEventId.split(':')[1]);
    return new Response(frames.slice(after + 1).join(''), { headers });
  };
  const collect = async (events) => {
    const seen = [];
    try {
      for await (const event of events) seen.push([event.eventId, event.type, event.content ?? '']);
      return { seen };
    } catch (error) {
      return { seen, error: { name: error.name, code: error.code, status: error.status } };
    }
  };
  const results = [];
  for (const [cut, broken] of cuts) {
    calls.length = 0;
    const fetch = fakeFetch(cut, broken);
    const out = await collect(streamChat({ message: 'hi', fetch, headers: { 'X-Test': 'yes' } }));
    results.push({ cut, broken, ...out, calls: [...calls] });
  }
  calls.length = 0;
  const gone = await collect(
    streamChat({ message: 'hi', fetch: fakeFetch(frames[0].length + 5, true, 'gone') }),
  );
  const goneCalls = [...calls];
  const refused = fakeFetch(frames[0].length, true, 'refused');
  const unreachable = await collect(streamChat({ message: 'hi', reconnect: 2, fetch: refused }));
  calls.length = 0;
  const resumed = await collect(
    resume({ conversationId: 'c 9', lastEventId: '1:2', fetch: fakeFetch() }),
  );
  const resumedCalls = [...calls];
  const joined = await collect(join({ conversationId: 'c-9', fetch: fakeFetch() }));
  const controller = new AbortController();
  const aborted = await collect((async function* () {
    for await (const event of streamChat({
      message: 'hi', signal: controller.signal, fetch: fakeFetch(whole.length - 5, false),
    })) {
      yield event;
      if (event.chunkIndex === 1) controller.abort();
    }
  })());
  return { results, gone, goneCalls, unreachable, resumed, resumedCalls, joined, aborted };
}
"""


def turn_frames(words: list[str]) -> list[str]:
    """The SSE frames of a turn of text events, then its completion, as the server writes them."""
    events: list[dict[str, Any]] = [
        {"type": "text", "chunkIndex": i, "content": word} for i, word in enumerate(words)
    ]
    events.append({"type": "completion", "chunkIndex": len(words), "finishReason": "stop"})
    return [
        f"id: 1:{e['chunkIndex']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events
    ]


async def test_streamchat_js_reconnects_after_a_drop_with_no_gap_and_no_duplicate(
    chat: ChatPage,
) -> None:
    words = ["Once ", "upon ", "a ", "time ", "😀 "]
    frames = turn_frames(words)
    boundary = len("".join(frames[:2]))
    inside_data = boundary + len(frames[2]) - 10  # in the middle of an event's JSON
    before_blank = boundary + len(frames[2]) - 1  # the event is whole but for its blank line
    cuts = [
        [0, False],  # headers, then nothing
        [boundary, False],
        [inside_data, False],
        [before_blank, False],
        [inside_data, True],  # a network error rather than an early end
    ]
    expected = [[f"1:{i}", "text", word] for i, word in enumerate(words)]
    expected.append([f"1:{len(words)}", "completion", ""])

    out = await chat.page.evaluate(RECONNECT_CHECK, [frames, cuts])

    for result in out["results"]:
        assert result["seen"] == expected, result
        assert "error" not in result
        post, again = result["calls"]
        assert post["method"] == "POST"
        assert again["url"] == "/api/conversation/c-9/stream"
        assert again["test"] == "yes"  # the caller's headers go with every request
    last_ids = [result["calls"][1]["lastEventId"] for result in out["results"]]
    assert last_ids == [None, "1:1", "1:1", "1:2", "1:1"]
    # 204 on reconnect: the turn is over and gone; the sequence ends quietly.
    assert out["gone"] == {"seen": expected[:1]}
    assert [call["lastEventId"] for call in out["goneCalls"]] == [None, "1:0"]
    # Nobody answers: a bounded number of attempts, then the stream is reported incomplete.
    assert out["unreachable"]["error"] == {
        "name": "StreamChatError",
        "code": "incomplete_stream",
        "status": 200,
    }
    assert out["resumed"] == {"seen": expected[3:]}
    assert out["resumedCalls"][0]["url"] == "/api/conversation/c%209/stream"
    assert out["resumedCalls"][0]["lastEventId"] == "1:2"
    assert out["joined"] == {"seen": expected}
    assert out["aborted"]["seen"] == expected[:2]
    assert out["aborted"]["error"]["name"] == "AbortError"


def phone_options() -> dict[str, Any]:
    return {"viewport": PHONE, "is_mobile": True, "has_touch": True}


COUNTING = [f"w{i} " for i in range(40)]


@pytest.mark.parametrize("server", [WITH_GRACE], indirect=True, ids=["grace"])
async def test_a_reload_during_an_answer_shows_it_so_far_and_streams_it_to_the_end(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "add", {"a": 25, "b": 17})),
        text_reply(*pieces(ARTIFACT_REPLY, 9)),
        paced(text_reply(*COUNTING), 0.15),
    )
    await chat.send("Add 25 and 17, then write hello.py")
    await chat.wait_for_reply()
    await chat.send("Count to forty")
    await expect(chat.last_reply).to_contain_text("w5")
    conversation_id = await chat.conversation_id()

    await chat.page.reload()
    await expect(chat.page.locator("body")).to_have_attribute("data-ready", "true")

    # The finished turn, drawn from the history as it was drawn live.
    bubbles = chat.page.locator(".msg-user .bubble")
    await expect(bubbles).to_have_text(["Add 25 and 17, then write hello.py", "Count to forty"])
    first = chat.replies.first
    await expect(first.locator(".tool-card .tool-name")).to_have_text("add")
    await expect(first.locator(".tool-card .tool-result")).to_have_text("42")
    await expect(first.locator(".md").first).to_have_text("Here is a small greeting function.")
    await expect(first.get_by_role("button", name="Open hello.py")).to_contain_text("Open")
    await expect(chat.artifacts.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    # The running answer: what it said so far at once, then the rest as it comes.
    await expect(chat.last_reply).to_have_attribute("aria-busy", "true")
    await expect(chat.last_reply.locator(".md")).to_contain_text("w0 w1 w2 w3 w4 w5")
    await expect(chat.page.get_by_role("button", name="Stop")).to_be_visible()
    await expect(chat.sidebar_links.first).to_have_attribute("aria-current", "page")
    await chat.screenshot("reloaded")
    await chat.wait_for_reply()

    final = await chat.last_reply.locator(".md").inner_text()
    assert final.split() == [word.strip() for word in COUNTING]  # whole, nothing twice
    await expect(chat.replies).to_have_count(2)
    await expect(chat.last_reply.locator(".msg-meta")).to_contain_text("fake/model-1")
    assert len(upstream.requests) == 3  # the reload started no second generation
    assert chat.page.url.endswith(f"#{conversation_id}")
    await expect(chat.textbox).to_be_enabled()


async def test_the_sidebar_lists_conversations_newest_first_and_reopens_one_with_its_history(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "multiply", {"a": 6, "b": 7})),
        text_reply(*pieces("6 * 7 = 42. " + ARTIFACT_REPLY, 8)),
        text_reply("Hello there!"),
    )
    await chat.send("What is 6 * 7? Then write hello.py")
    await chat.wait_for_reply()
    first_id = await chat.conversation_id()
    await chat.page.get_by_role("button", name="New conversation").click()
    await chat.send("Say hello")
    await chat.wait_for_reply()

    titles = chat.sidebar.locator(".conversation-title")
    await expect(titles).to_have_text(["Say hello", "What is 6 * 7? Then write hello.py"])
    await expect(chat.sidebar_links.first).to_have_attribute("aria-current", "page")
    await expect(chat.sidebar.locator("time")).to_have_text(["just now", "just now"])
    await chat.screenshot("sidebar")

    await chat.sidebar_links.nth(1).click()

    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(
        ["What is 6 * 7? Then write hello.py"]
    )
    reply = chat.last_reply
    await expect(reply.locator(".tool-name")).to_have_text("multiply")
    await expect(reply.locator(".tool-result")).to_have_text("42")
    await expect(reply.locator(".md").first).to_have_text(
        "6 * 7 = 42. Here is a small greeting function."
    )
    await expect(reply.locator(".md").last).to_have_text("Call hello() to print the greeting.")
    await expect(reply.locator(".artifact-chip")).to_contain_text("hello.py")
    order = await reply.locator(".msg-body > *").evaluate_all(
        "nodes => nodes.map(node => node.className)"
    )
    assert order == ["tool-card is-done", "md", "artifact-chip", "md"]
    assert "<artifact" not in await reply.inner_text()
    await expect(chat.artifacts.locator(".artifact-code code")).to_have_text(HELLO_CODE)
    await expect(chat.sidebar_links.nth(1)).to_have_attribute("aria-current", "page")
    await expect(chat.sidebar_links.first).not_to_have_attribute("aria-current", "page")
    await expect(chat.page.get_by_role("status")).to_have_text(
        "Opened “What is 6 * 7? Then write hello.py”."
    )
    assert chat.page.url.endswith(f"#{first_id}")
    await chat.screenshot("sidebar-reopened")

    # The reopened conversation goes on from its history; the back button returns.
    upstream.add(text_reply("Still here."))
    await chat.send("Are you there?")
    await chat.wait_for_reply()
    roles = [m["role"] for m in upstream.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    await expect(chat.sidebar.locator(".conversation-title").first).to_have_text(
        "What is 6 * 7? Then write hello.py"
    )
    await chat.page.go_back()
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["Say hello"])
    await expect(chat.last_reply.locator(".md")).to_have_text("Hello there!")


async def test_the_sidebar_loads_older_conversations_a_page_at_a_time(
    open_chat: OpenChat, upstream: FakeUpstream, server: str
) -> None:
    async with ClientSession() as session:
        for n in range(23):
            upstream.add(text_reply(f"Answer {n}"))
            body = {"message": f"Question {n}", "conversationId": f"c-{n:02}"}
            async with session.post(f"{server}/api/stream", json=body) as response:
                await response.read()
    chat = await open_chat()

    links = chat.sidebar_links
    await expect(links).to_have_count(20)
    await expect(links.first).to_contain_text("Question 22")
    more = chat.sidebar.get_by_role("button", name="Load more")
    await more.click()

    await expect(links).to_have_count(23)
    await expect(links.last).to_contain_text("Question 0")
    await expect(more).to_be_hidden()
    await expect(links.nth(20)).to_be_focused()
    await chat.page.keyboard.press("Enter")
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["Question 2"])
    await expect(links.nth(20)).to_have_attribute("aria-current", "page")


async def test_on_a_phone_the_sidebar_is_a_drawer_that_opens_and_closes(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("First answer."), text_reply("Second answer."))
    chat = await open_chat(**phone_options())
    await chat.send("First question")
    await chat.wait_for_reply()
    await chat.page.get_by_role("button", name="New conversation").click()
    await chat.send("Second question")
    await chat.wait_for_reply()
    toggle = chat.page.get_by_role("button", name="Conversations", exact=True)
    header = await chat.page.locator(".topbar").bounding_box()
    assert header is not None
    assert header["height"] <= 56
    await expect(chat.sidebar).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")

    await toggle.click()
    await expect(chat.sidebar).to_be_in_viewport()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(chat.sidebar_links.first).to_be_focused()  # the conversation on view
    await expect(chat.sidebar_links).to_have_count(2)
    await chat.screenshot("phone-drawer")
    await chat.page.keyboard.press("Tab")  # the page under the drawer is out of reach
    assert await chat.page.evaluate(
        "document.getElementById('sidebar').contains(document.activeElement)"
    )
    await chat.page.keyboard.press("Escape")
    await expect(chat.sidebar).to_be_hidden()
    await expect(toggle).to_be_focused()

    await toggle.click()
    await chat.page.locator("#drawer-backdrop").click(position={"x": 370, "y": 420})
    await expect(chat.sidebar).to_be_hidden()
    await toggle.click()
    await chat.sidebar.get_by_role("button", name="Close conversations").click()
    await expect(chat.sidebar).to_be_hidden()
    await expect(toggle).to_be_focused()

    await toggle.click()
    await chat.sidebar_links.nth(1).click()
    await expect(chat.sidebar).to_be_hidden()
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["First question"])
    await expect(chat.last_reply.locator(".md")).to_have_text("First answer.")
    assert await chat.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await chat.screenshot("phone-reopened")


# --- a server that needs an API key ---------------------------------------------------------

KEY = "alice-key-0123456789abcdef"
WITH_KEYS = {"auth": "keys", "api_keys": f"alice:{KEY}"}


def without_refusals(chat: ChatPage) -> None:
    """Chromium logs each refused request (401) on the console: those are expected here."""
    chat.problems[:] = [p for p in chat.problems if "status of 401" not in p]


def api_authorizations(page: Page) -> list[str | None]:
    """The Authorization header of every API request the page makes from now on."""
    seen: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request.headers.get("authorization")) if "/api/" in request.url else None
        ),
    )
    return seen


@pytest.mark.parametrize("server", [WITH_KEYS], indirect=True, ids=["keys"])
async def test_the_page_asks_for_the_api_key_asks_again_for_a_wrong_one_and_keeps_it_in_the_tab(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "add", {"a": 25, "b": 17})),
        text_reply("25 + 17 = **42**"),
        text_reply("Still here."),
    )
    chat = await open_chat(None)
    page = chat.page
    sent = api_authorizations(page)
    await page.goto("/")

    # The sidebar's first call is refused: the page asks, the field focused.
    dialog = page.get_by_role("dialog", name="This server needs an API key")
    await expect(dialog).to_be_visible()
    field = dialog.get_by_label("API key")
    await expect(field).to_be_focused()
    await expect(field).to_have_attribute("type", "password")
    await expect(dialog).to_contain_text("this browser tab's session storage")
    await expect(dialog.get_by_role("button", name="Forget key")).to_be_hidden()
    await chat.screenshot("key-dialog")

    await field.fill("not-the-key-0123456789")
    await field.press("Enter")
    await expect(dialog.get_by_role("alert")).to_have_text(
        "That key was not accepted. Check it and enter it again."
    )
    await expect(field).to_have_value("")
    await expect(field).to_be_focused()
    assert sent == [None, "Bearer not-the-key-0123456789"]
    await chat.screenshot("key-wrong")

    await field.fill(KEY)
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(chat.sidebar.get_by_text("No conversations yet.")).to_be_visible()
    await expect(chat.textbox).to_be_focused()
    assert await page.evaluate("sessionStorage.getItem('streamchat.apiKey')") == KEY

    await chat.send("What is 25 + 17?")
    await chat.wait_for_reply()
    await expect(chat.last_reply.locator(".tool-result")).to_have_text("42")
    await expect(chat.last_reply.locator(".md")).to_have_text("25 + 17 = 42")
    await expect(chat.sidebar.locator(".conversation-title")).to_have_text(["What is 25 + 17?"])

    # A reload in the same tab keeps the key: no question, the conversation and the list load.
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(dialog).to_be_hidden()
    await expect(chat.last_reply.locator(".tool-result")).to_have_text("42")
    await expect(chat.sidebar_links).to_have_count(1)
    await chat.send("Are you there?")
    await chat.wait_for_reply()
    await expect(chat.last_reply.locator(".md")).to_have_text("Still here.")
    assert len(sent) > 6
    assert sent[2:] == [f"Bearer {KEY}"] * (len(sent) - 2)
    await expect(page.get_by_role("button", name="API key")).to_be_visible()
    await chat.screenshot("key-saved")
    without_refusals(chat)


@pytest.mark.parametrize("server", [WITH_KEYS], indirect=True, ids=["keys"])
async def test_the_key_can_be_forgotten_and_a_message_sent_without_one_asks_for_it(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("First answer."), text_reply("Second answer."))
    chat = await open_chat(ready=False, **phone_options())
    page = chat.page
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("API key").fill(KEY)
    await dialog.get_by_label("API key").press("Enter")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await chat.send("First question")
    await chat.wait_for_reply()

    await page.get_by_role("button", name="API key").click()
    await expect(dialog).to_have_accessible_name("API key")
    await chat.screenshot("phone-key-manage")
    await dialog.get_by_role("button", name="Forget key").click()
    await expect(dialog).to_contain_text("The key is forgotten in this tab.")
    await expect(dialog.get_by_label("API key")).to_be_focused()
    assert await page.evaluate("sessionStorage.getItem('streamchat.apiKey')") is None
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#messages .msg")).to_have_count(0)  # nothing it opened stays
    await page.get_by_role("button", name="Conversations", exact=True).click()
    await expect(chat.sidebar_links).to_have_count(0)
    await expect(chat.sidebar).to_contain_text("once the server has your key")
    await page.keyboard.press("Escape")

    # Sending without a key asks for one, then sends the message that was refused.
    await chat.send("Second question")
    await expect(dialog).to_have_accessible_name("This server needs an API key")
    await dialog.get_by_label("API key").fill(KEY)
    await dialog.get_by_role("button", name="Save").click()
    await chat.wait_for_reply()
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["Second question"])
    await expect(chat.last_reply.locator(".md")).to_have_text("Second answer.")
    assert upstream.requests[-1]["messages"][-1]["content"] == "Second question"
    without_refusals(chat)


# --- tool calls that wait for a person --------------------------------------------------------

WITH_APPROVAL = {"approval_required": "divide", "resume_grace_seconds": 30.0}


def approval_group(reply: Locator) -> Locator:
    return reply.get_by_role("group", name="Run divide with these arguments?")


@pytest.mark.parametrize("server", [WITH_APPROVAL], indirect=True, ids=["approval"])
async def test_an_approval_card_asks_before_the_tool_runs_and_approve_from_the_keyboard_runs_it(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "divide", {"a": 84, "b": 2})), text_reply("84 / 2 = **42**"))

    await chat.send("What is 84 divided by 2?")

    card = chat.last_reply.locator(".tool-card")
    group = approval_group(chat.last_reply)
    await expect(group).to_be_visible()
    await expect(card.locator(".tool-state")).to_have_text("Needs approval")
    arguments = await card.locator(".tool-args").text_content()
    assert arguments is not None
    assert json.loads(arguments) == {"a": 84, "b": 2}
    assert '"a": 84' in arguments  # pretty-printed
    await expect(chat.page.get_by_role("status")).to_have_text("divide needs your approval.")
    await expect(chat.last_reply).to_have_attribute("aria-busy", "true")
    await chat.screenshot("approval")

    # From the message box, Shift+Tab reaches the answer.
    await chat.textbox.focus()
    await chat.page.keyboard.press("Shift+Tab")
    await expect(group.get_by_role("button", name="Approve")).to_be_focused()
    await chat.page.keyboard.press("Enter")

    await expect(card.locator(".approval-note")).to_have_text("Approved")
    await expect(card.locator(".approval-note")).to_be_focused()
    await expect(card.locator(".tool-result")).to_have_text("42")
    await expect(card.locator(".tool-state")).to_contain_text("Done")
    await chat.wait_for_reply()
    await expect(chat.last_reply.locator(".md")).to_have_text("84 / 2 = 42")
    order = await chat.last_reply.locator(".msg-body > *").evaluate_all(
        "nodes => nodes.map(node => node.className)"
    )
    assert order == ["tool-card is-done", "md"]
    assert upstream.requests[-1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "42",
    }
    await chat.screenshot("approval-approved")


@pytest.mark.parametrize("server", [WITH_APPROVAL], indirect=True, ids=["approval"])
async def test_deny_on_the_approval_card_shows_the_denial_and_the_model_answers_around_it(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("call_1", "divide", {"a": 1, "b": 3})),
        text_reply("I was not allowed to divide."),
    )

    await chat.send("What is 1 / 3?")
    deny = approval_group(chat.last_reply).get_by_role("button", name="Deny")
    await chat.page.emulate_media(color_scheme="dark")
    await expect(deny).to_be_visible()
    await chat.screenshot("dark-approval")
    await chat.page.emulate_media(color_scheme="light")
    await deny.click()

    card = chat.last_reply.locator(".tool-card")
    await expect(card.locator(".approval-note")).to_have_text("Denied")
    await expect(card.locator(".tool-error")).to_have_text("Denied by the user.")
    await expect(card.locator(".tool-state")).to_have_text("Denied")
    await chat.wait_for_reply()
    await expect(chat.last_reply.locator(".md")).to_have_text("I was not allowed to divide.")
    await expect(card.get_by_role("button")).to_have_count(0)
    assert upstream.requests[-1]["messages"][-1]["content"] == "Error: Denied by the user."
    await chat.screenshot("approval-denied")


@pytest.mark.parametrize("server", [WITH_APPROVAL], indirect=True, ids=["approval"])
async def test_a_waiting_call_asks_again_after_a_reload_and_in_a_second_tab_which_sees_the_answer(
    open_chat: OpenChat, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "divide", {"a": 84, "b": 2})), text_reply("It is 42."))
    chat = await open_chat()
    await chat.send("What is 84 divided by 2?")
    await expect(approval_group(chat.last_reply)).to_be_visible()
    conversation_id = await chat.conversation_id()

    await chat.page.reload()
    await expect(chat.page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(chat.page.locator(".msg-user .bubble")).to_have_text(["What is 84 divided by 2?"])
    group = approval_group(chat.last_reply)
    await expect(group).to_be_visible()
    await expect(chat.replies).to_have_count(1)
    await expect(chat.last_reply.locator(".tool-card")).to_have_count(1)
    other = await open_chat(f"/#{conversation_id}", **phone_options())
    other_group = approval_group(other.last_reply)
    await expect(other_group.get_by_role("button", name="Approve")).to_be_visible()
    await other.screenshot("phone-approval")

    await group.get_by_role("button", name="Approve").click()

    for page, note in ((chat, "Approved"), (other, "Approved elsewhere")):
        card = page.last_reply.locator(".tool-card")
        await expect(card.locator(".approval-note")).to_have_text(note)
        await expect(card.locator(".tool-result")).to_have_text("42")
        await page.wait_for_reply()
        await expect(page.last_reply.locator(".md")).to_have_text("It is 42.")
    assert len(upstream.requests) == 2  # one turn, however many readers
    await other.screenshot("phone-approval-elsewhere")


@pytest.mark.parametrize("server", [WITH_APPROVAL], indirect=True, ids=["approval"])
async def test_stop_while_a_call_waits_ends_the_reply_and_the_card_says_it_was_not_answered(
    chat: ChatPage, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "divide", {"a": 84, "b": 2})))
    await chat.send("What is 84 divided by 2?")
    await expect(approval_group(chat.last_reply)).to_be_visible()

    await chat.page.get_by_role("button", name="Stop").click()

    await chat.wait_for_reply()
    card = chat.last_reply.locator(".tool-card")
    await expect(card.locator(".approval-note")).to_have_text(
        "Not answered: the reply ended first."
    )
    await expect(card.locator(".tool-state")).to_have_text("Interrupted")
    await expect(card.get_by_role("button")).to_have_count(0)
    await expect(chat.last_reply.locator(".stopped-note")).to_have_text("Stopped")
