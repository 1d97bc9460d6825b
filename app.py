"""Start streamchat: load `.env`, read the settings, serve until SIGTERM or Ctrl-C, then drain."""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
from dataclasses import fields
from pathlib import Path

from aiohttp import web
from dotenv import find_dotenv, load_dotenv

from streamchat.appkeys import TRACING
from streamchat.auth import describe_auth
from streamchat.backends import choose_backend, describe_backend
from streamchat.logs import configure_logging
from streamchat.settings import Settings, SettingsError
from streamchat.stores import StoreError
from streamchat.toolsets.functions import ToolModuleError
from streamchat.toolsets.mcp import McpConfigError
from streamchat.tracing import describe_tracing
from streamchat.web import STORE, create_app, describe_tools, drain

SECRETS = {"openrouter_api_key", "api_keys", "jwt_secret", "metrics_token"}


def settings_help() -> str:
    """Every setting with its default, for `--help`."""
    defaults = Settings()
    lines = ["settings (environment variables, also read from .env):"]
    for field in fields(Settings):
        value = "" if field.name in SECRETS else str(getattr(defaults, field.name))
        if "\n" in value:
            value = value.split("\n", 1)[0][:40] + " ..."
        lines.append(f"  {field.name.upper():34} default: {value or '(empty)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    dotenv = find_dotenv(usecwd=True)
    where = dotenv or str(Path.cwd() / ".env") + " (not present)"
    parser = argparse.ArgumentParser(
        description="streamchat: a streaming chat API server",
        epilog=f"{settings_help()}\n\n.env is read from: {where}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (default: $HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 5282)")
    args = parser.parse_args(argv)

    # The .env of the folder the server is started from (or the nearest one above it).
    load_dotenv(dotenv)
    try:
        settings = Settings.from_env().with_overrides(host=args.host, port=args.port)
        backend = choose_backend(settings)
    except SettingsError as exc:
        print(f"streamchat: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        app = create_app(settings, backend=backend)
    except (StoreError, SettingsError, ToolModuleError, McpConfigError) as exc:
        print(f"streamchat: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(app, settings, describe_backend(settings, backend)))
    except KeyboardInterrupt:
        return 0


async def serve(app: web.Application, settings: Settings, about: list[str]) -> int:
    """Listen, say where, wait for SIGTERM or SIGINT, drain the running turns, stop: exit 0."""
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves stops reading its turn at once
        shutdown_timeout=5.0,
        access_log=None,  # logs.request_log writes one line per request, with its id
    )
    try:
        await runner.setup()
    except StoreError as exc:
        print(f"streamchat: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 2
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        print(
            f"streamchat: cannot listen on {settings.host}:{settings.port}: {reason} "
            "(set PORT, or --port, to another port)",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 1
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"streamchat listening on http://{host}:{settings.port}", flush=True)
    lines = [*about, f"store: {app[STORE].description}", *describe_auth(settings)]
    lines += [*describe_metrics(settings), *describe_tracing(settings, app[TRACING])]
    for line in [*lines, *describe_tools(app)]:
        print(f"  {line}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("streamchat: shutting down; running turns may finish first", flush=True)
    # Drain while still listening: new turns get 503 and /health says so meanwhile.
    await drain(app)
    await runner.cleanup()
    return 0


def describe_metrics(settings: Settings) -> list[str]:
    if not settings.metrics:
        return ["metrics: off (METRICS=0)"]
    guard = (
        "METRICS_TOKEN needed"
        if settings.metrics_token
        else "open to any caller that can reach the port"
    )
    return [f"metrics: GET /metrics ({guard})"]


if __name__ == "__main__":
    sys.exit(main())
