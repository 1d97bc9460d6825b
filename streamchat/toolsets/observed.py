"""The app's tools as the pipeline sees them: each call counted, timed, traced and logged.

`ObservedTools` wraps the combined toolset. A call that fails because the tool raised (a
`ToolFailure` made from an exception: a bug in the tool, not a refusal it meant) is logged here
with its exception; the model and the user only ever see the failure's message. A call's
arguments and result appear in a log line or a span only with `LOG_CONTENT=1`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from streamchat.tools.registry import ToolFailure
from streamchat.toolsets.base import ToolContext, Tools

if TYPE_CHECKING:
    from streamchat.metrics import Metrics
    from streamchat.tracing import Tracing

log = logging.getLogger("streamchat.tools")


class ObservedTools:
    def __init__(
        self,
        tools: Tools,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        log_content: bool = False,
    ) -> None:
        self._tools = tools
        self._metrics = metrics
        self._tracing = tracing
        self._log_content = log_content

    def schemas(self) -> list[dict[str, Any]]:
        return self._tools.schemas()

    def requires_approval(self, name: str) -> bool:
        return self._tools.requires_approval(name)

    async def run(self, name: str, arguments: str, context: ToolContext | None = None) -> str:
        started = time.perf_counter()
        span = self._tracing.start_tool(name, arguments) if self._tracing is not None else None
        outcome, error_type, result = "cancelled", None, None
        try:
            result = await self._tools.run(name, arguments, context)
            outcome = "completed"
            return result
        except ToolFailure as exc:
            cause = exc.__cause__
            if cause is None:
                outcome, error_type = "error", "tool_error"
            else:
                outcome, error_type = "exception", type(cause).__qualname__
                log.error(
                    "tool %s raised %s in conversation %s",
                    name,
                    error_type,
                    context.conversation_id if context is not None else "-",
                    exc_info=cause,
                    extra={"fields": {"tool": name, "error_type": error_type}},
                )
            raise
        finally:
            seconds = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.tool_called(self._label(name), outcome, seconds)
            if span is not None:
                span.end(outcome, error_type, result)
            if self._log_content:
                log.info(
                    "tool %s: %s in %.1f ms; arguments %s; result %s",
                    name,
                    outcome,
                    seconds * 1000,
                    arguments,
                    result,
                    extra={"fields": {"tool": name, "arguments": arguments, "result": result}},
                )

    def _label(self, name: str) -> str:
        """The tool's name, or `unknown` for a name the model made up (labels stay few)."""
        known = any(schema["function"]["name"] == name for schema in self._tools.schemas())
        return name if known else "unknown"
