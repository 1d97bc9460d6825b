"""A React page on the AI SDK's `useChat`, in Debian's Chromium, against streamchat.

`tests/js/usechat/page.jsx` is what a front end written against the SDK looks like:
`DefaultChatTransport({api: '/api/chat'})`, `resume: true`, and the message parts rendered as
they are. The test setup installs the pinned packages (`npm ci`, the first time) and bundles the
page with esbuild into a temporary folder; the test serves it from the streamchat app itself, so
`/api/chat` is on the page's own origin and nothing is fetched from anywhere else. Without node,
npm or Chromium the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, Request, Route, expect

from streamchat.web import create_app
from tests.conftest import CHROMIUM, ROOT, make_settings, serving
from tests.fake_upstream import FakeUpstream, paced, text_reply, tool_reply
from tests.test_page import SCREENSHOTS

USECHAT = ROOT / "tests" / "js" / "usechat"
ARTIFACT = '<artifact id="sum" title="sum.py" language="python">\nprint(25 + 17)\n</artifact>'

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (no /usr/bin/chromium, no chromium on PATH): "
    "the useChat page test needs it; install it with `apt-get install -y chromium`",
)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page bundled by esbuild, beside its `index.html`, in a temporary folder."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node and npm are needed to build the useChat page (Debian: nodejs, npm)")
    if not (USECHAT / "node_modules" / "@ai-sdk" / "react").is_dir():
        done = subprocess.run(
            [npm, "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=USECHAT,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci in {USECHAT} failed: {done.stderr.decode()[-500:]}")
    out = tmp_path_factory.mktemp("usechat")
    built = subprocess.run(
        [
            str(USECHAT / "node_modules" / ".bin" / "esbuild"),
            "page.jsx",
            "--bundle",
            "--format=esm",
            "--jsx=automatic",
            "--minify",
            '--define:process.env.NODE_ENV="production"',
            f"--outfile={out / 'app.js'}",
            "--log-level=warning",
        ],
        cwd=USECHAT,
        capture_output=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr.decode()
    shutil.copy(USECHAT / "index.html", out / "index.html")
    return out


@pytest.fixture
async def server(upstream: FakeUpstream, bundle: Path) -> AsyncIterator[str]:
    """streamchat with the page mounted at `/usechat/`: one origin for the page and the API."""
    settings = make_settings(openrouter_base_url=upstream.base_url, resume_grace_seconds=10.0)
    app = create_app(settings)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(bundle / "index.html")

    async def script(request: web.Request) -> web.FileResponse:
        return web.FileResponse(bundle / "app.js")

    app.router.add_get("/usechat/", index)
    app.router.add_get("/usechat/app.js", script)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def page(browser: Browser, server: str) -> AsyncIterator[Page]:
    """A fresh page that may talk to the server's origin only; its console must stay clean."""
    context = await browser.new_context(base_url=server, viewport={"width": 900, "height": 700})
    problems: list[str] = []
    outside: list[str] = []

    async def only_our_origin(route: Route, request: Request) -> None:
        if request.url.startswith(server):
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    await context.route("**/*", only_our_origin)
    opened = await context.new_page()
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    try:
        yield opened
        assert problems == []
        assert outside == []
    finally:
        await context.close()


async def send(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_use_chat_renders_the_tool_output_the_text_and_the_artifact(
    page: Page, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("t1", "add", {"a": 25, "b": 17})),
        text_reply("25 + 17 = 42. ", "As code:\n", ARTIFACT),
    )
    await page.goto("/usechat/?chat=uc-1")

    await send(page, "What is 25 + 17?")

    assistant = page.locator(".message.assistant")
    tool = assistant.locator(".tool")
    await expect(tool).to_have_attribute("data-state", "output-available")
    await expect(tool.locator("output")).to_have_text("42")
    await expect(tool.locator("code")).to_have_text('add({"a":25,"b":17})')
    await expect(assistant.locator(".text").first).to_have_text("25 + 17 = 42. As code:\n")
    artifact = assistant.locator(".artifact")
    await expect(artifact).to_have_attribute("data-status", "done")
    await expect(artifact).to_have_count(1)  # the started part was replaced in place
    await expect(artifact.locator("figcaption")).to_have_text("sum.py (python)")
    await expect(artifact.locator("pre")).to_have_text("print(25 + 17)")
    await expect(page.locator("#status")).to_have_attribute("data-status", "ready")
    await expect(page.locator(".message.user")).to_have_text("What is 25 + 17?")
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "usechat-tool-and-artifact.png")
    # streamchat kept the conversation under the chat's id, with the tool round in it.
    history = await (await page.request.get("/api/conversation/uc-1")).json()
    assert [m["role"] for m in history["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_a_reload_mid_answer_resumes_it_whole(page: Page, upstream: FakeUpstream) -> None:
    words = [f"w{i} " for i in range(60)]
    upstream.add(paced(text_reply(*words), 0.05))
    await page.goto("/usechat/?chat=uc-2")
    await send(page, "count to sixty")
    await expect(page.locator(".message.assistant .text")).to_contain_text("w3 ")
    assert upstream.active == 1  # the answer is still coming

    await page.reload()

    text = page.locator(".message.assistant .text")
    await expect(text).to_have_text("".join(words), timeout=20_000)
    await expect(page.locator("#status")).to_have_attribute("data-status", "ready")
    assert len(upstream.requests) == 1  # the same answer, not a second generation
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "usechat-resumed.png")


def test_the_page_packages_are_pinned() -> None:
    package = json.loads((USECHAT / "package.json").read_text())
    lock = json.loads((USECHAT / "package-lock.json").read_text())
    assert all(version.count(".") == 2 for version in package["dependencies"].values())
    assert (
        lock["packages"]["node_modules/@ai-sdk/react"]["dependencies"]["ai"]
        == (package["dependencies"]["ai"])
    )
    assert not any("resolved" in entry for entry in lock["packages"].values())
