"""The chat page at `GET /` and its static files under `/static/`.

The page is plain HTML, CSS and ES modules shipped inside the package: no build step and nothing
fetched from elsewhere, so it works offline (its libraries are vendored under `static/vendor/`,
refreshed by `make vendor`). Its Content-Security-Policy allows only this origin's own scripts and
styles: model text becomes markup only through marked and DOMPurify, with raw HTML kept as text,
and the policy is a second wall should that ever slip.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

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
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Static files revalidate too, so a new release never runs with an old script."""
    if request.path.startswith("/static/"):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-cache")


def add_page_routes(app: web.Application) -> None:
    """`GET /` serves the chat page; `/static/...` serves the files next to it."""
    app.router.add_get("/", index, name="index")
    app.router.add_static("/static", STATIC_DIR, name="static")
    app.on_response_prepare.append(static_headers)
