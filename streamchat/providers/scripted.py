"""A provider that plays back scripted rounds: for tests, demos and benchmarks.

Each call to `stream()` plays the next round; each round is a list of deltas, or a callable that
receives the request and returns them, so a script can answer what it was asked. `requests`
keeps every request it was given, for assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from streamchat.events import Finish, ModelDelta, TextChunk, ToolCall
from streamchat.providers.base import ModelRequest, Stream, UpstreamError

Round = Sequence[ModelDelta | UpstreamError] | Callable[[ModelRequest], Sequence[ModelDelta]]


def text_round(*pieces: str, model: str = "scripted") -> list[ModelDelta]:
    return [*(TextChunk(p) for p in pieces), Finish("stop", model, "gen-scripted")]


def tool_round(*calls: tuple[str, str, str], model: str = "scripted") -> list[ModelDelta]:
    """A round that asks for tools: `(id, name, arguments)` each."""
    return [*(ToolCall(*c) for c in calls), Finish("tool_calls", model, "gen-scripted")]


class ScriptedProvider:
    name = "scripted"

    def __init__(self, rounds: Sequence[Round], delay_seconds: float = 0.0) -> None:
        self._rounds = list(rounds)
        self._delay = delay_seconds
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> Stream[list[ModelDelta]]:
        self.requests.append(request)
        if not self._rounds:
            raise UpstreamError("upstream_error", "The scripted provider has no round left")
        script = self._rounds.pop(0)
        for item in script(request) if callable(script) else script:
            if self._delay:
                await asyncio.sleep(self._delay)
            if isinstance(item, UpstreamError):
                raise item
            yield [item]
