"""Server-side tools: a registry built from plain Python functions, and the built-in calculator."""

from streamchat.tools.registry import Tool, ToolFailure, ToolRegistry

__all__ = ["Tool", "ToolFailure", "ToolRegistry"]
