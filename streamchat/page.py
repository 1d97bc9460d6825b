"""The chat page at `GET /` and its static files under `/static/`.

The page is plain HTML, CSS and ES modules shipped inside the package: no build step and nothing
fetched from elsewhere, so it works offline (its libraries are vendored under `static/vendor/`,
refreshed by `make vendor`). Its Content-Security-Policy allows only this origin's own scripts and
styles: model text becomes markup only through marked and DOMPurify, with raw HTML kept as text,
and the policy is a second wall should that ever slip.

Static files are served from a table of the files the package ships, made at start-up: a name
from a request is only ever a key in that table, never a path handed to the filesystem, so a
name of 5,000 characters, a `..` or a NUL byte is simply a `404` with a JSON body like every
other error. Range and precondition headers are not honoured for these small files (a server may
ignore them): a range past the end or a failed precondition would otherwise be an error response
with an empty body. Revalidation (`If-None-Match`, `If-Modified-Since`) works as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from streamchat.errors import ApiError

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is tiny and changes with the package: always revalidate.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return WholeFile(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Static files revalidate too, so a new release never runs with an old script."""
    if request.path.startswith("/static/"):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-cache")


# Headers that could turn a static file into an error response with an empty body.
_IGNORED = (hdrs.RANGE, hdrs.IF_RANGE, hdrs.IF_MATCH, hdrs.IF_UNMODIFIED_SINCE)


def static_files(root: Path = STATIC_DIR) -> dict[str, Path]:
    """Every file under `root`, by its path relative to it (`vendor/marked/marked.esm.js`)."""
    return {path.relative_to(root).as_posix(): path for path in root.rglob("*") if path.is_file()}


def static_handler(files: dict[str, Path]) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def static_file(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise ApiError(404, "not_found", "No such file")
        return WholeFile(path)

    return static_file


class WholeFile(web.FileResponse):
    """A file sent whole (or `304` when the client's copy is current), never a range of it."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        plain = CIMultiDict(request.headers)
        for name in _IGNORED:
            plain.popall(name, None)
        return await super().prepare(request.clone(headers=plain))


def add_page_routes(app: web.Application) -> None:
    """`GET /` serves the chat page; `/static/...` serves the files next to it."""
    app.router.add_get("/", index, name="index")
    app.router.add_get("/static/{name:.+}", static_handler(static_files()), name="static")
    app.on_response_prepare.append(static_headers)
