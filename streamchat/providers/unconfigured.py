"""The provider used when no backend is configured: every turn explains how to configure one."""

from __future__ import annotations

from streamchat.events import ModelDelta
from streamchat.providers.base import ModelRequest, Stream, UpstreamError

NO_KEY_MESSAGE = (
    "No OpenRouter API key is set. Get one at https://openrouter.ai/keys, then set "
    "OPENROUTER_API_KEY in the environment or in a .env file in the folder you start the "
    "server from (see .env.example), and restart the server."
)


class UnconfiguredProvider:
    name = "none"

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        raise UpstreamError("no_api_key", NO_KEY_MESSAGE)
        yield  # pragma: no cover - makes this an async generator
