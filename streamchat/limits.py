"""What each owner may spend, and which models a request may name: checked before any stream.

Four limits per owner, each off unless set: turns a minute, turns running at once, tokens a day
and cost a day (US dollars, as the upstream reports it). The windows are fixed: the clock's
minute and the UTC day. A turn is checked against every limit and counted in as one step when it
is admitted, and counted out when it ends, whatever its outcome, adding the tokens and cost it
reported. So the turn that crosses a day's limit runs to its end, and the next one is refused.
`MemoryCounters` counts for one process; `stores.redis_limits.RedisCounters` for every process
on one Redis. A refusal is a `429` with `Retry-After` and `quota_exceeded` or `budget_exceeded`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

from streamchat.errors import ApiError
from streamchat.events import Terminal, Usage
from streamchat.settings import Settings
from streamchat.stores.base import StoreUnavailable
from streamchat.turns import TurnRequest

log = logging.getLogger(__name__)

MINUTE = 60
DAY = 86_400
# A running turn has no known end: a client over the concurrent limit is told to try soon.
CONCURRENT_RETRY_SECONDS = 5
# The memory counters keep at most this many owners; idle ones are dropped first.
MAX_OWNERS = 100_000
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Quotas:
    """The limits of one owner; 0 is off."""

    turns_per_minute: int = 0
    concurrent_turns: int = 0
    tokens_per_day: int = 0
    cost_per_day: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(
            settings.limit_turns_per_minute,
            settings.limit_concurrent_turns,
            settings.limit_tokens_per_day,
            settings.limit_cost_per_day,
        )

    @property
    def any(self) -> bool:
        return bool(
            self.turns_per_minute
            or self.concurrent_turns
            or self.tokens_per_day
            or self.cost_per_day
        )


@dataclass(frozen=True, slots=True)
class Spent:
    """What an owner has used: turns started this minute, turns running, tokens and cost today."""

    turns: int = 0
    running: int = 0
    tokens: int = 0
    cost: float = 0.0


def refusal(quotas: Quotas, spent: Spent, now: float) -> ApiError | None:
    """The `429` for a limit the owner has reached (the one with the longest wait), or None."""
    found: list[tuple[int, str, str]] = []  # (seconds to wait, code, message)
    midnight = _ceil(DAY - now % DAY)
    if quotas.cost_per_day and spent.cost >= quotas.cost_per_day:
        message = (
            f"You have spent ${spent.cost:.4f} today; the budget is ${quotas.cost_per_day:.2f} "
            "a day. It starts again at midnight UTC."
        )
        found.append((midnight, "budget_exceeded", message))
    if quotas.tokens_per_day and spent.tokens >= quotas.tokens_per_day:
        message = (
            f"You have used {spent.tokens} tokens today; the limit is {quotas.tokens_per_day} a "
            "day. It starts again at midnight UTC."
        )
        found.append((midnight, "quota_exceeded", message))
    if quotas.turns_per_minute and spent.turns >= quotas.turns_per_minute:
        wait = _ceil(MINUTE - now % MINUTE)
        message = (
            f"You have started {_turns(spent.turns)} this minute; the limit is "
            f"{quotas.turns_per_minute} a minute. Try again in {wait} s."
        )
        found.append((wait, "quota_exceeded", message))
    if quotas.concurrent_turns and spent.running >= quotas.concurrent_turns:
        message = (
            f"You have {_turns(spent.running)} running; the limit is {quotas.concurrent_turns} at "
            "once. Try again when one has finished."
        )
        found.append((CONCURRENT_RETRY_SECONDS, "quota_exceeded", message))
    if not found:
        return None
    wait, code, message = max(found, key=lambda item: item[0])
    return ApiError(429, code, message, headers={"Retry-After": str(wait)})


class Counters(Protocol):
    """Where the counts live: one process's memory, or Redis for every process."""

    async def admit(self, owner: str, turn_id: str, quotas: Quotas, now: float) -> Spent | None:
        """Count the turn in when no limit is reached (None); else what the owner has spent."""
        ...

    async def release(self, owner: str, turn_id: str, tokens: int, cost: float, now: float) -> None:
        """Count the turn out, adding the tokens and cost it used to the owner's day."""
        ...

    async def spent(self, owner: str, now: float) -> Spent: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Owner:
    minute: int = -1
    turns: int = 0
    day: int = -1
    tokens: int = 0
    cost: float = 0.0
    running: set[str] = field(default_factory=set)

    def roll(self, now: float) -> None:
        """Start a new window when the minute or the day has changed."""
        minute, day = int(now // MINUTE), int(now // DAY)
        if minute != self.minute:
            self.minute, self.turns = minute, 0
        if day != self.day:
            self.day, self.tokens, self.cost = day, 0, 0.0

    @property
    def idle(self) -> bool:
        return not (self.running or self.turns or self.tokens or self.cost)

    def spent(self) -> Spent:
        return Spent(self.turns, len(self.running), self.tokens, self.cost)


class MemoryCounters:
    """The counts of one process, in least-recently-seen order so idle owners are dropped."""

    def __init__(self, max_owners: int = MAX_OWNERS) -> None:
        self._owners: OrderedDict[str, _Owner] = OrderedDict()
        self._max_owners = max_owners

    def __len__(self) -> int:
        return len(self._owners)

    async def admit(self, owner: str, turn_id: str, quotas: Quotas, now: float) -> Spent | None:
        state = self._owner(owner, now)
        spent = state.spent()
        if refusal(quotas, spent, now) is not None:
            return spent
        # Only what is limited is counted, as in Redis.
        if quotas.turns_per_minute:
            state.turns += 1
        if quotas.concurrent_turns:
            state.running.add(turn_id)
        return None

    async def release(self, owner: str, turn_id: str, tokens: int, cost: float, now: float) -> None:
        state = self._owner(owner, now)
        state.running.discard(turn_id)
        state.tokens += tokens
        state.cost += cost

    async def spent(self, owner: str, now: float) -> Spent:
        return self._owner(owner, now).spent()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _owner(self, owner: str, now: float) -> _Owner:
        state = self._owners.get(owner)
        if state is None:
            self._drop_idle(now)
            state = self._owners[owner] = _Owner()
        else:
            self._owners.move_to_end(owner)
        state.roll(now)
        return state

    def _drop_idle(self, now: float) -> None:
        """Before a new owner: drop the least recently seen owners whose windows have emptied
        (a couple at a time, so the work stays small), then, over the bound, the least recently
        seen one with no turn running (its counts are forgotten: the price of the bound)."""
        for _ in range(2):
            if not self._owners:
                return
            name, oldest = next(iter(self._owners.items()))
            oldest.roll(now)
            if not oldest.idle:
                break
            del self._owners[name]
        if len(self._owners) >= self._max_owners:
            for name, state in self._owners.items():
                if not state.running:
                    del self._owners[name]
                    return


class Limiter:
    """The limits of the settings: `admit` before a turn starts, `turn_ended` once it ends."""

    def __init__(
        self,
        quotas: Quotas,
        counters: Counters,
        allowed_models: tuple[str, ...] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.quotas = quotas
        self.counters = counters
        self.allowed_models = allowed_models
        self.clock = clock

    @property
    def counting(self) -> bool:
        """Whether turns are counted at all (some limit is set)."""
        return self.quotas.any

    def check_model(self, model: str, default: str) -> None:
        """Refuse a model `ALLOWED_MODELS` does not allow; the default model is always allowed."""
        if model == default or model_allowed(model, self.allowed_models):
            return
        raise ApiError(
            400,
            "model_not_allowed",
            f"The model {model!r} is not available on this server. Allowed: "
            f"{', '.join(self.allowed_models)}.",
            "model",
        )

    async def admit(self, request: TurnRequest) -> None:
        """Count the turn in, or refuse it with a `429` when the owner has reached a limit."""
        if not self.quotas.any:
            return
        now = self.clock()
        spent = await self.counters.admit(request.owner, request.turn_id, self.quotas, now)
        if spent is None:
            return
        error = refusal(self.quotas, spent, now)
        if error is None:  # the counts moved between the check and now: still a refusal
            error = ApiError(
                429,
                "quota_exceeded",
                "You have reached a limit of this server. Try again in a moment.",
                headers={"Retry-After": str(CONCURRENT_RETRY_SECONDS)},
            )
        raise error

    async def turn_ended(
        self, request: TurnRequest, terminal: Terminal, usage: Usage | None
    ) -> None:
        """Count the turn out with what it used (what it reported, when it failed or stopped)."""
        tokens, cost = used(usage)
        try:
            await self.counters.release(request.owner, request.turn_id, tokens, cost, self.clock())
        except StoreUnavailable:
            log.warning(
                "could not count the end of a turn of conversation %s: the store is unavailable",
                request.conversation_id,
            )

    async def open(self) -> None:
        await self.counters.open()

    async def close(self) -> None:
        await self.counters.close()


def make_limiter(settings: Settings, *, clock: Callable[[], float] = time.time) -> Limiter:
    """The limiter the settings ask for: counted in Redis when the store is Redis."""
    quotas = Quotas.from_settings(settings)
    counters: Counters = MemoryCounters()
    if quotas.any and settings.store_url.startswith(("redis://", "rediss://")):
        from streamchat.stores.redis_limits import RedisCounters

        counters = RedisCounters(settings.store_url, clock=clock)
    return Limiter(quotas, counters, settings.allowed_model_patterns, clock=clock)


def used(usage: Usage | None) -> tuple[int, float]:
    """The tokens and US dollars a turn's usage counts for; a cost that is not a finite,
    positive number counts for nothing."""
    if usage is None:
        return 0, 0.0
    tokens = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    cost = usage.cost if usage.cost is not None and math.isfinite(usage.cost) else 0.0
    return max(tokens, 0), max(cost, 0.0)


def model_allowed(model: str, patterns: tuple[str, ...]) -> bool:
    """No patterns allow any model."""
    return not patterns or any(fnmatchcase(model, pattern) for pattern in patterns)


def listable_models(patterns: tuple[str, ...], curated: Iterable[str]) -> list[str]:
    """The models a picker can offer: each name in `patterns` as written, and for each
    wildcard pattern the curated models it matches."""
    curated = tuple(curated)
    models: list[str] = []
    for pattern in patterns:
        if _WILDCARDS.isdisjoint(pattern):
            models.append(pattern)
        else:
            models += [model for model in curated if fnmatchcase(model, pattern)]
    return list(dict.fromkeys(models))


def _turns(count: int) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# The page's model picker offers these after the default when the backend is OpenRouter.
PICKER_MODELS = (
    "google/gemini-2.5-flash",
    "openai/gpt-4o-mini",
    "anthropic/claude-3.5-haiku",
    "meta-llama/llama-3.3-70b-instruct",
)


def picker_models(backend: str, default: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """The models a client may pick (the page's picker, `/v1/models`): the default first,
    then only models `allowed` allows (its names as written; for a pattern like `google/*`,
    the curated models it matches). The embedded backend has its one model."""
    models = [default]
    if backend == "openrouter":
        more = listable_models(allowed, PICKER_MODELS) if allowed else PICKER_MODELS
        models += [model for model in more if model != default]
    return models
