"""Tool calls waiting for a person: approved, denied, or denied when nobody answers in time."""

from __future__ import annotations

import asyncio
import contextlib


class Approvals:
    """The calls of this process's turns that wait for a decision, by owner, conversation and id."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str], asyncio.Future[bool]] = {}

    def waiting(self, owner: str, conversation_id: str) -> list[str]:
        return [tool for (o, c, tool) in self._pending if o == owner and c == conversation_id]

    async def wait(
        self, owner: str, conversation_id: str, tool_id: str, within_seconds: float
    ) -> bool:
        """The decision on one call: False when denied or when the time passes first."""
        key = (owner, conversation_id, tool_id)
        decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = decision
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_seconds):
                    return await decision
            return False
        finally:
            if self._pending.get(key) is decision:
                del self._pending[key]

    def decide(self, owner: str, conversation_id: str, tool_id: str, approved: bool) -> bool:
        """Settle a waiting call; False when no call of that id waits here."""
        decision = self._pending.get((owner, conversation_id, tool_id))
        if decision is None or decision.done():
            return False
        decision.set_result(approved)
        return True
