"""Start streamchat: load `.env`, read the settings, run the server. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web
from dotenv import find_dotenv, load_dotenv

from streamchat.backends import choose_backend, describe_backend
from streamchat.settings import Settings, SettingsError
from streamchat.web import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="streamchat: a streaming chat API server")
    parser.add_argument("--host", help="address to listen on (default: $HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 5282)")
    args = parser.parse_args(argv)

    # The .env of the folder the server is started from (or the nearest one above it).
    load_dotenv(find_dotenv(usecwd=True))
    try:
        settings = Settings.from_env().with_overrides(host=args.host, port=args.port)
        backend = choose_backend(settings)
    except SettingsError as exc:
        print(f"streamchat: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"streamchat listening on http://{host}:{settings.port}", flush=True)
    for line in describe_backend(settings, backend):
        print(f"  {line}", flush=True)
    web.run_app(
        create_app(settings, backend=backend),
        host=settings.host,
        port=settings.port,
        print=None,
        handler_cancellation=True,  # a client that leaves cancels its turn at once
        shutdown_timeout=5.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
