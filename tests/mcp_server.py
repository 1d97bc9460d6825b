"""The MCP server of the tests: the example server's tools, plus an `add` that clashes with the
calculator's. Run as `python -m tests.mcp_server [--http PORT]` from the repository root."""

from __future__ import annotations

from examples.mcp_tools_server import main, server


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers (the MCP server's own add)."""
    return a + b


if __name__ == "__main__":
    main()
