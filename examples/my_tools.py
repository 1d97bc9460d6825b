"""streamchat with a tool of your own: the calculator plus `weather`.

Run it instead of `app.py`: `python examples/my_tools.py`. It reads `.env` and the environment
like `app.py` (TOOL_TIMEOUT_SECONDS bounds every tool call) and serves the same routes and page.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from dotenv import find_dotenv, load_dotenv

from streamchat.settings import Settings, SettingsError
from streamchat.tools import ToolFailure, ToolRegistry
from streamchat.tools.calculator import register_calculator
from streamchat.web import create_app


def build_tools(settings: Settings) -> ToolRegistry:
    tools = ToolRegistry(settings.tool_timeout_seconds)  # a slower call becomes a tool_error
    register_calculator(tools)  # add, subtract, multiply, divide

    @tools.register
    async def weather(city: str, unit: str = "celsius") -> str:
        """The current weather in a city."""
        if not city.strip():
            raise ToolFailure("Which city?")  # shown to the model and the user as a tool_error
        return f"Sunny, 21 degrees {unit} in {city}"

    return tools


def main() -> int:
    load_dotenv(find_dotenv(usecwd=True))  # the .env of the working folder; the environment wins
    try:
        settings = Settings.from_env()
        app = create_app(settings, tools=build_tools(settings))
    except SettingsError as exc:  # a bad setting: one line that names it
        print(f"streamchat: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper())
    # Prints "Running on http://..." once the port is bound. handler_cancellation: a client
    # that leaves cancels its turn, and with it the upstream call, at once.
    web.run_app(app, host=settings.host, port=settings.port, handler_cancellation=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
