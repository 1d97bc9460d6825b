"""Prometheus metrics: what `GET /metrics` shows, recorded at the edges of turns and requests.

Each app has its own `CollectorRegistry` (two apps in one process, as in the tests, never share
a counter). Nothing is recorded per token: a turn costs a few counter increments and histogram
observations when it starts and ends (see `TurnRunner`), a tool call two, a store operation one,
an upstream request one (an aiohttp `TraceConfig` on the app's client session). The gauges (open
streams, readers, turns in flight) and the upstream retries are read only when Prometheus scrapes.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, Metric

from streamchat.eventbus import EventBus
from streamchat.events import Usage
from streamchat.providers.base import Message
from streamchat.stores.base import (
    BegunTurn,
    ConversationInfo,
    Outcome,
    Store,
    StoredConversation,
)

# The `_created` series (when each counter was made) double the exposition and tell an operator
# nothing that Prometheus's own resets detection does not.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds. A first token usually comes within a second or two; whole turns with tools, minutes.
T = TypeVar("T")
FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
TURN_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A request names its model, so the models labelled are capped: past this many, the rest count
# as "other" (an upstream that answers whatever model is named would otherwise let any client
# add series to every scrape, one per name it makes up).
MAX_MODEL_LABELS = 100


class Metrics:
    """The app's metrics; `TurnRunner`, the handlers and the wrappers below record into it."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._models: set[str] = set()  # the models with labels of their own
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        self.turns_started = Counter(
            "streamchat_turns_started",
            "Turns started (queued for their conversation).",
            registry=registry,
        )
        self.turns_finished = Counter(
            "streamchat_turns_finished",
            "Turns ended, by outcome: completed, cancelled or error:<code>.",
            ["outcome"],
            registry=registry,
        )
        self.first_token = Histogram(
            "streamchat_time_to_first_token_seconds",
            "From a turn's start (once it has its conversation) to its first event.",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.turn_duration = Histogram(
            "streamchat_turn_duration_seconds",
            "From a turn's start request to its terminal event, queueing included.",
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "streamchat_tokens",
            "Tokens the upstream reported, by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "streamchat_cost_dollars",
            "Cost in US dollars, as the upstream reported it, by model.",
            ["model"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "streamchat_tool_calls",
            "Tool calls by tool and outcome: completed, error (the tool refused: bad arguments, "
            "time-out, unknown tool), exception (the tool raised: a bug) or cancelled.",
            ["tool", "outcome"],
            registry=registry,
        )
        self.tool_duration = Histogram(
            "streamchat_tool_duration_seconds",
            "How long tool calls ran, by tool.",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=registry,
        )
        self.resumes = Counter(
            "streamchat_resumes",
            "Readers that came back to a turn after losing their stream.",
            registry=registry,
        )
        self.joins = Counter(
            "streamchat_joins",
            "Readers that joined a running turn from its start.",
            registry=registry,
        )
        self.stops = Counter("streamchat_stops", "Stop requests.", registry=registry)
        self.store_seconds = Histogram(
            "streamchat_store_operation_seconds",
            "How long conversation store operations took, by operation.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self._open_streams = Gauge(
            "streamchat_open_streams", "Event streams being written now.", registry=registry
        )
        self._readers = Gauge(
            "streamchat_stream_readers",
            "Readers attached to the turns this process runs.",
            registry=registry,
        )
        self._turns = Gauge(
            "streamchat_turns_in_flight",
            "Turns this process runs or has queued.",
            registry=registry,
        )

    def watch(
        self,
        *,
        open_streams: Callable[[], int],
        readers: Callable[[], int],
        turns: Callable[[], int],
        retries: Callable[[], int],
        answers: Callable[[], Mapping[str, int]],
    ) -> None:
        """What is read only at scrape time: the gauges, and the upstream's answers and retries
        as the provider counts them (counting them here would cost every request an aiohttp
        trace: ~2% of the CPU of short turns)."""
        self._open_streams.set_function(open_streams)
        self._readers.set_function(readers)
        self._turns.set_function(turns)
        self.registry.register(_Upstream(retries, answers))

    def turn_ended(
        self,
        outcome: str,
        seconds: float,
        first_event_seconds: float | None,
        model: str,
        usage: Usage | None,
    ) -> None:
        self.turns_finished.labels(outcome).inc()
        self.turn_duration.observe(seconds)
        if first_event_seconds is not None:
            self.first_token.observe(first_event_seconds)
        if usage is not None:
            model = self._model_label(model)
            self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(model, "completion").inc(usage.completion_tokens)
            if usage.cost is not None and usage.cost > 0:
                self.cost.labels(model).inc(usage.cost)

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODEL_LABELS:
            return "other"
        self._models.add(model)
        return model

    def tool_called(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(tool, outcome).inc()
        self.tool_duration.labels(tool).observe(seconds)

    def handler(self, token: str) -> Callable[[web.Request], Any]:
        """`GET /metrics`; with a token, only for `Authorization: Bearer <token>`."""
        serve = make_aiohttp_handler(self.registry)
        expected = f"Bearer {token}".encode()

        async def metrics(request: web.Request) -> web.StreamResponse:
            if token:
                sent = request.headers.get("Authorization", "").strip().encode()
                if not hmac.compare_digest(sent, expected):
                    return web.json_response(
                        {"error": {"message": "This needs METRICS_TOKEN.", "code": "unauthorized"}},
                        status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                    )
            return await serve(request)

        return metrics


class _Upstream:
    """`streamchat_upstream_requests_total` by status and `streamchat_upstream_retries_total`,
    read from the provider when scraped."""

    def __init__(self, retries: Callable[[], int], answers: Callable[[], Mapping[str, int]]):
        self._retries = retries
        self._answers = answers

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "streamchat_upstream_requests",
            "Requests to the upstream by HTTP status; 'error' when no answer came (refused "
            "connection, time-out, stopped while waiting).",
            labels=["status"],
        )
        for status, count in sorted(self._answers().items()):
            requests.add_metric([status], count)
        yield requests
        yield CounterMetricFamily(
            "streamchat_upstream_retries",
            "Upstream requests sent again after a 429 or 5xx answer.",
            value=self._retries(),
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class TimedStore:
    """A store whose operations are timed into `streamchat_store_operation_seconds`."""

    def __init__(self, store: Store, histogram: Histogram) -> None:
        self._store = store
        self.timed = store  # the store it times, for whoever needs that store's own methods
        self.description = store.description
        # Bound once: labels() takes a lock and a dict look-up that need not happen per call.
        self._times = {
            name: histogram.labels(name)
            for name in (
                "ping",
                "load",
                "begin_turn",
                "append",
                "end_turn",
                "recent",
                "delete",
                "stored_bytes",
            )
        }

    async def _timed(self, name: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self._times[name].observe(time.perf_counter() - started)

    async def open(self) -> None:
        await self._store.open()

    async def close(self) -> None:
        await self._store.close()

    async def ping(self) -> None:
        await self._timed("ping", self._store.ping())

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        return self._store.lock(owner, conversation_id)

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        return await self._timed("load", self._store.load(owner, conversation_id))

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        return await self._timed(
            "begin_turn",
            self._store.begin_turn(
                owner, conversation_id, system_prompt, user_message, regenerate=regenerate
            ),
        )

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None:
        await self._timed("append", self._store.append(owner, conversation_id, turn, messages))

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        await self._timed(
            "end_turn",
            self._store.end_turn(owner, conversation_id, turn, messages, artifacts, outcome),
        )

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        return await self._timed("recent", self._store.recent(owner, limit, before))

    async def delete(self, owner: str, conversation_id: str) -> bool:
        return await self._timed("delete", self._store.delete(owner, conversation_id))

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        return await self._timed("stored_bytes", self._store.stored_bytes(owner, conversation_id))

    def event_bus(self) -> EventBus | None:
        return self._store.event_bus()
