"""Tools from MCP servers, configured as Claude Desktop and Cursor do (`mcpServers` in JSON).

    {"mcpServers": {
        "files": {"command": "python", "args": ["server.py"], "env": {"ROOT": "/srv"}},
        "search": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer x"},
                   "requireApproval": true}}}

Each server is one `McpToolset`, whose session is opened and closed by one long-lived task
that owns it: the MCP SDK's transports are anyio task groups, and a session closed from another
task fails ("exit cancel scope in a different task"). Calls are made from the turns' tasks on
the open session. A server that is down at start, or dies later, is reported; its tools stay
listed and answer `tool_error` ("... is unavailable") while the owner task reconnects in the
background with a growing back-off. Start-up never fails for a server. A stdio server is a
program streamchat runs: configure only programs you trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamchat.tools.registry import ToolFailure
from streamchat.toolsets.base import ToolContext, ToolSpec

log = logging.getLogger(__name__)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
PING_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0


class McpConfigError(ValueError):
    """The `MCP_CONFIG` file cannot be used: start-up stops with this one line."""


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    # True: every tool of the server waits for approval; a list: those tools.
    require_approval: bool | tuple[str, ...] = False


def load_mcp_config(path: str) -> list[McpServerConfig]:
    try:
        raw = json.loads(Path(path).expanduser().read_text())
    except OSError as exc:
        raise McpConfigError(f"MCP_CONFIG: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise McpConfigError(f"MCP_CONFIG: {path} is not valid JSON: {exc}") from None
    servers = raw.get("mcpServers") if isinstance(raw, dict) else None
    if not isinstance(servers, dict):
        raise McpConfigError(f"MCP_CONFIG: {path} needs an object 'mcpServers'")
    return [_server(name, entry) for name, entry in servers.items()]


def _server(name: str, entry: Any) -> McpServerConfig:
    where = f"MCP_CONFIG: server {name!r}"
    if not isinstance(entry, dict):
        raise McpConfigError(f"{where} must be an object")
    command, url = entry.get("command"), entry.get("url")
    if (command is None) == (url is None):
        raise McpConfigError(f"{where} needs either 'command' (stdio) or 'url' (HTTP)")
    args, env, headers = entry.get("args", []), entry.get("env", {}), entry.get("headers", {})
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise McpConfigError(f"{where}: 'args' must be a list of strings")
    for label, mapping in (("env", env), ("headers", headers)):
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise McpConfigError(f"{where}: '{label}' must map strings to strings")
    approval = entry.get("requireApproval", False)
    if isinstance(approval, list) and all(isinstance(a, str) for a in approval):
        approval = tuple(approval)
    elif not isinstance(approval, bool):
        raise McpConfigError(f"{where}: 'requireApproval' must be true, false or a list of tools")
    if command is not None and not isinstance(command, str):
        raise McpConfigError(f"{where}: 'command' must be a string")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise McpConfigError(f"{where}: 'url' must be an http:// or https:// URL")
    return McpServerConfig(name, command, tuple(args), env, url, headers, approval)


class McpToolset:
    def __init__(
        self,
        config: McpServerConfig,
        *,
        call_timeout: float = 30.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.call_timeout = call_timeout
        self.status = "not started"
        self.on_change = on_change
        self._specs: list[ToolSpec] = []
        self._names: dict[str, str] = {}  # offered name -> the server's name
        self._client: Any = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None

    def tools(self) -> Sequence[ToolSpec]:
        return self._specs

    async def start(self, wait_seconds: float) -> None:
        """Start the owner task; wait (a little) for the first connection."""
        self._owner = asyncio.create_task(self._own(), name=f"mcp-{self.name}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await self._ready.wait()

    async def close(self) -> None:
        self._closing.set()
        self.status = "closed"
        if self._owner is not None:
            try:
                async with asyncio.timeout(5.0):
                    await self._owner
            except (TimeoutError, asyncio.CancelledError):
                self._owner.cancel()
                with contextlib.suppress(BaseException):
                    await self._owner

    async def call(self, name: str, arguments: str, context: ToolContext | None) -> str:
        client = self._client
        if client is None:
            raise ToolFailure(f"The tool server {self.name!r} is unavailable right now.")
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise ToolFailure(f"Arguments for {name} are not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ToolFailure(f"Arguments for {name} must be a JSON object")
        try:
            async with asyncio.timeout(self.call_timeout):
                result = await client.call_tool(self._names.get(name, name), parsed)
        except TimeoutError:
            raise ToolFailure(f"Tool {name} took longer than {self.call_timeout:g} s") from None
        except Exception as exc:
            log.warning("MCP server %s failed a call of %s: %r", self.name, name, exc)
            raise ToolFailure(f"The tool server {self.name!r} is unavailable right now.") from None
        text = result_text(result)
        if getattr(result, "is_error", False):
            raise ToolFailure(text or f"Tool {name} failed")
        return text

    # --- the owner task -------------------------------------------------------------------------

    async def _own(self) -> None:
        backoff = 1.0
        while not self._closing.is_set():
            try:
                await self._session()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # anyio wraps failures in exception groups
                reason = _reason(exc)
                if self._client is not None or self.status.startswith("connected"):
                    log.warning("MCP server %s went away: %s; reconnecting", self.name, reason)
                else:
                    log.warning("MCP server %s is unavailable: %s", self.name, reason)
                self.status = f"unavailable: {reason}"
            finally:
                self._client = None
            if self._closing.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._closing.wait()
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _session(self) -> None:
        from mcp import Client

        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(Client(self._target(stack), cache=None))
            listed = await client.list_tools()
            self._set_tools(listed.tools)
            self._client = client
            self.status = f"connected ({len(self._specs)} tools)"
            self._ready.set()
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await self._closing.wait()
                if not self._closing.is_set():
                    async with asyncio.timeout(PING_SECONDS):
                        await client.send_ping()
            self._client = None

    def _target(self, stack: contextlib.AsyncExitStack) -> Any:
        config = self.config
        if config.command is not None:
            from mcp import StdioServerParameters

            return StdioServerParameters(
                command=config.command, args=list(config.args), env=config.env or None
            )
        assert config.url is not None
        if not config.headers:
            return config.url
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = create_mcp_http_client(headers=config.headers)
        stack.push_async_callback(http.aclose)
        return streamable_http_client(config.url, http_client=http)

    def _set_tools(self, tools: Sequence[Any]) -> None:
        approval = self.config.require_approval
        specs, names = [], {}
        for tool in tools:
            offered = _NOT_NAME.sub("_", tool.name)[:64]
            names[offered] = tool.name
            needs = approval is True or (isinstance(approval, tuple) and tool.name in approval)
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
            description = tool.description or tool.title or tool.name
            specs.append(ToolSpec(offered, description, schema or {"type": "object"}, needs))
        changed = [s.name for s in specs] != [s.name for s in self._specs]
        self._specs, self._names = specs, names
        if changed and self.on_change is not None:
            self.on_change()


def result_text(result: Any) -> str:
    """The text of an MCP tool result; other content (images, audio, resources) summarised."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', 'unknown type')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {getattr(block, 'uri', '')}]")
        else:
            parts.append(f"[{kind or 'content'}]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
