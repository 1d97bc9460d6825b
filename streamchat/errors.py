"""Every error a client can see: `{"error": {"message", "code", "param"}}`, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamchat.stores.base import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the server will not serve: answered as `{"error": {...}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"message": message, "code": code}
    if param is not None:
        error["param"] = param
    return web.json_response({"error": error}, status=status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
_KEPT_HEADERS = ("Allow", "Retry-After")
STORE_UNAVAILABLE = "The conversation store could not be reached. Try again in a moment."


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error a client can see is JSON, and none carries a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.param, exc.headers)
    except StoreUnavailable as exc:
        log.warning("store unavailable in %s %s: %s", request.method, request.path, exc)
        return error_response(
            503, "store_unavailable", STORE_UNAVAILABLE, None, {"Retry-After": "5"}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        # A 405 names the methods that would work (RFC 9110 requires it).
        kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        return error_response(exc.status, code, exc.reason, None, kept or None)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "The server failed to handle this request.")
