"""A small MCP server, for trying streamchat's MCP support offline (see the README's MCP part).

    python examples/mcp_tools_server.py                 # stdio, as MCP_CONFIG's "command" runs it
    python examples/mcp_tools_server.py --http 9000     # streamable HTTP at http://127.0.0.1:9000/mcp

Its tools: `word_count`, `reverse`, `wait` (sleeps), `fail` (always fails), and `plan_trip`,
whose argument is a nested object.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server = MCPServer("streamchat-examples")


@server.tool()
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@server.tool()
def reverse(text: str) -> str:
    """Reverse a text, character by character."""
    return text[::-1]


@server.tool()
async def wait(seconds: float) -> str:
    """Wait for a number of seconds, then say so."""
    await asyncio.sleep(seconds)
    return f"waited {seconds:g} s"


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(reason)


class Stop(BaseModel):
    city: str
    nights: int


class Trip(BaseModel):
    traveller: str
    stops: list[Stop]
    transport: Literal["train", "car", "plane"] = "train"


@server.tool()
def plan_trip(trip: Trip) -> str:
    """Summarise a trip: who travels, where, for how many nights, and how."""
    nights = sum(stop.nights for stop in trip.stops)
    cities = ", ".join(stop.city for stop in trip.stops)
    return f"{trip.traveller}: {cities} by {trip.transport}, {nights} nights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
