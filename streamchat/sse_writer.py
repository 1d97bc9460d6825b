"""Writes SSE frames to an `aiohttp.web.StreamResponse`, with a `: ping` comment on idle.

The ping keeps proxies and clients from closing a quiet stream (a slow model, a long tool, a
turn waiting for the conversation's lock), and a failed write is how a quiet stream learns that
its client left: the writer then cancels the request's task, which closes the pipeline and the
upstream response with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType

from aiohttp import web

from streamchat.sse import PING_FRAME

log = logging.getLogger(__name__)


class SSEWriter:
    def __init__(self, response: web.StreamResponse, ping_interval: float) -> None:
        self._response = response
        self._interval = ping_interval
        self._last_write = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SSEWriter:
        owner = asyncio.current_task()
        assert owner is not None
        self._pinger = asyncio.create_task(self._ping(owner))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pinger is not None:
            self._pinger.cancel()

    async def write(self, frame: bytes) -> None:
        self._last_write = time.monotonic()
        await self._response.write(frame)

    async def _ping(self, owner: asyncio.Task[object]) -> None:
        while True:
            idle = time.monotonic() - self._last_write
            if idle < self._interval:
                await asyncio.sleep(self._interval - idle)
                continue
            try:
                await self.write(PING_FRAME)
            except (ConnectionResetError, RuntimeError):
                log.info("client left during a quiet stream")
                owner.cancel()
                return
