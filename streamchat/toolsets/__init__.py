"""Where tools come from: Python functions, MCP servers, and a combined set the turn uses."""
