"""The chat page at `GET /` and its static files under `/static/`."""

from __future__ import annotations

from aiohttp import web


def add_page_routes(app: web.Application) -> None:
    """Routes for the browser chat page (filled in by the page's own work)."""
