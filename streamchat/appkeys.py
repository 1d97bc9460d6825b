"""The typed keys of what the app holds: one place, so every module can reach them."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from streamchat.backends import Backend
from streamchat.limits import Limiter
from streamchat.metrics import Metrics
from streamchat.providers.base import Provider
from streamchat.settings import Settings
from streamchat.sse_writer import Pinger
from streamchat.stores import Store
from streamchat.toolsets.base import Tools
from streamchat.toolsets.mcp import McpToolset
from streamchat.tracing import Tracing
from streamchat.turns import TurnRunner

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
RUNNER = web.AppKey("runner", TurnRunner)
TOOLS = web.AppKey("tools", Tools)
MCP_SERVERS = web.AppKey("mcp_servers", list[McpToolset])
PROVIDER = web.AppKey("provider", Provider)
SESSION = web.AppKey("session", aiohttp.ClientSession)
BACKEND = web.AppKey("backend", Backend)
PINGER = web.AppKey("pinger", Pinger)
LIMITER = web.AppKey("limiter", Limiter)
# None when off: METRICS=0, or no OTEL_EXPORTER_OTLP_ENDPOINT (or the otel extra missing).
METRICS: web.AppKey[Metrics | None] = web.AppKey("metrics")
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
