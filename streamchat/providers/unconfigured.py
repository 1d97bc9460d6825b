"""The provider used when no backend is configured: every turn explains how to configure one.

Inside a container a `.env` file is the wrong advice (the image has none, and rebuilding it to
add one would bake the key into a layer), so there the message says `docker run -e` instead.
"""

from __future__ import annotations

from pathlib import Path

from streamchat.events import ModelDelta
from streamchat.providers.base import ModelRequest, Stream, UpstreamError

NO_KEY_MESSAGE = (
    "No OpenRouter API key is set. Get one at https://openrouter.ai/keys, then set "
    "OPENROUTER_API_KEY in the environment or in a .env file in the folder you start the "
    "server from (see .env.example), and restart the server."
)
NO_KEY_MESSAGE_CONTAINER = (
    "No OpenRouter API key is set. Get one at https://openrouter.ai/keys, then start the "
    "container again with -e OPENROUTER_API_KEY=sk-or-... (for example: docker run -p "
    "5282:5282 -e OPENROUTER_API_KEY=sk-or-... streamchat). The default image, built "
    "without SLIM=1, also answers with no key, from its embedded model."
)

# Docker creates /.dockerenv in every container, Podman /run/.containerenv.
_CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def running_in_container() -> bool:
    return any(marker.exists() for marker in _CONTAINER_MARKERS)


def no_key_message(in_container: bool | None = None) -> str:
    """What to do without a key: `docker run -e ...` in a container, else `.env`."""
    if in_container is None:
        in_container = running_in_container()
    return NO_KEY_MESSAGE_CONTAINER if in_container else NO_KEY_MESSAGE


class UnconfiguredProvider:
    name = "none"

    def __init__(self, in_container: bool | None = None) -> None:
        self._message = no_key_message(in_container)

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        raise UpstreamError("no_api_key", self._message, detail="no backend is configured")
        yield  # pragma: no cover - makes this an async generator
