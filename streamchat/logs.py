"""The logs: a request id on every line, one access line per request, text or JSON lines.

Every request gets an id: its `X-Request-Id` header when that is sane (1 to 128 printable
ASCII characters, no spaces), else a new one. It goes back in the response's `X-Request-Id`
(streams too: it is set as the response is prepared) and into a context variable that a
logging filter puts on every record. A turn's task is created inside the request that starts
it and so copies that context: the turn's lines carry the request's id too. The access line
(method, path, status, duration, owner, conversation, and a stream's turn outcome) replaces
aiohttp's own access log.

Prompts, answers and tool arguments and results never reach a log line unless `LOG_CONTENT=1`:
the lines here and in the turn runner add them only then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from streamchat.auth import OWNER
from streamchat.eventbus import Followable
from streamchat.ids import counted_hex
from streamchat.settings import Settings
from streamchat.turns import outcome_label

REQUEST_ID: ContextVar[str | None] = ContextVar("streamchat_request_id", default=None)
HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")

# What a request leaves for its access line (typed keys from aiohttp 3.14 on, as in auth.py).
_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "streamchat.rid"
_PREPARED: Any = web.RequestKey("prepared", int) if hasattr(web, "RequestKey") else "streamchat.st"
TURN_LOG: Any = (
    web.RequestKey("turn_log", Followable) if hasattr(web, "RequestKey") else "streamchat.turn"
)

access_log = logging.getLogger("streamchat.access")
# Probes and scrapes come every few seconds: their lines are DEBUG, every other request's INFO.
_QUIET_PATHS = frozenset({"/health", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_from(sent: str | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if sent is not None and _SANE_ID.fullmatch(sent):
        return sent
    return counted_hex()


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, and log its access line when the response is done."""
    request_id = request_id_from(request.headers.get(HEADER))
    request[_ID] = request_id
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if response.prepared:
            # A stream: end it before its line is written, so that the client is not kept
            # waiting for the last chunk by the log, and the duration covers the whole stream.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except BaseException:
        # The client left (the handler was cancelled) or a bug escaped every middleware.
        prepared = request.get(_PREPARED)
        status = prepared if prepared is not None else 499
        raise
    finally:
        _log_access(request, status, time.perf_counter() - started)
        REQUEST_ID.reset(token)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the id goes out with every response, before any byte of a stream."""
    request_id = request.get(_ID)
    if request_id is not None:
        response.headers[HEADER] = request_id
    request[_PREPARED] = response.status


def _log_access(request: web.Request, status: int, seconds: float) -> None:
    level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    owner = request.get(OWNER)
    conversation = request.match_info.get("conversation_id")
    outcome = None
    turn_log = request.get(TURN_LOG)
    if turn_log is not None:
        conversation = turn_log.conversation_id
        events = getattr(turn_log, "events", None)  # a turn on another process has none here
        if events and getattr(turn_log, "finished", False):
            outcome = outcome_label(events[-1])
        elif events is not None:
            outcome = "unfinished"  # the reader left first; the turn's own line tells the end
    words = [request.method, request.path, str(status), f"{seconds * 1000:.1f}ms"]
    if owner is not None:
        words.append(f"owner={owner}")
    if conversation is not None:
        words.append(f"conversation={conversation}")
    if outcome is not None:
        words.append(f"outcome={outcome}")
    fields = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "owner": owner,
        "conversation_id": conversation,
        "outcome": outcome,
    }
    access_log.log(level, " ".join(words), extra={"fields": fields})


# --- set-up --------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None) on every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """`2026-05-01 12:00:00,123 INFO streamchat.access [<request id>] POST /api/stream 200 ...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if v is not None and k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _iso(seconds: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    """A handler writing `LOG_FORMAT` lines (text or json) with the request id filter."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


def configure_logging(settings: Settings) -> None:
    """The process's logging, as `LOG_LEVEL` and `LOG_FORMAT` say (called once, by app.py)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(settings.log_format))
    root.setLevel(settings.log_level.upper())
    # Neither format shows where a line was logged from, or the thread, process or task: the
    # records need not find out (the logging HOWTO's "Optimization"), a fifth of each line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12 on
