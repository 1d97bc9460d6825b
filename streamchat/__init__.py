"""streamchat: a streaming chat API server (conversations, server-side tools, artifacts, SSE)."""

__version__ = "0.1.0"
