"""The per-owner counts of `limits.py` in Redis, shared by every process on it.

Per owner (the owner is the hash tag, so one script's keys lie in one Redis Cluster slot): a
counter of the turns started in this minute (`INCR`, expiring with its minute); a sorted set of
the turns running, scored by when each stops counting; and the day's tokens and cost (`INCRBY`,
`INCRBYFLOAT`, expiring an hour after their UTC day). Admitting a turn is one Lua script that
checks every limit and counts the turn in only when none is reached, so two processes can never
both take the last place. The process running a turn renews its score while it runs; the turns
of a process that died stop counting within `RUNNING_EXPIRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamchat.limits import DAY, MINUTE, Quotas, Spent
from streamchat.stores.base import StoreError
from streamchat.stores.redis import describe, reachable
from streamchat.stores.redis_wire import pack_in_one_string

log = logging.getLogger(__name__)

# A running turn counts until this long after its process last renewed it, a third of it apart.
RUNNING_EXPIRY_SECONDS = 60.0
# The day's counts outlive their UTC day by this much, for clocks a little apart.
DAY_MARGIN_SECONDS = 3600

ADMIT = """
-- KEYS: turns this minute, turns running, tokens today, cost today
-- ARGV: now (ms), turn id, running expiry (ms), minute key expiry (ms),
--       turns a minute, turns at once, tokens a day, cost a day (0: no limit)
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local turns = tonumber(redis.call('GET', KEYS[1]) or '0')
local running = redis.call('ZCARD', KEYS[2])
local tokens = tonumber(redis.call('GET', KEYS[3]) or '0')
local cost = redis.call('GET', KEYS[4]) or '0'
local per_minute, at_once = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens_a_day, cost_a_day = tonumber(ARGV[7]), tonumber(ARGV[8])
if (per_minute > 0 and turns >= per_minute) or (at_once > 0 and running >= at_once)
    or (tokens_a_day > 0 and tokens >= tokens_a_day)
    or (cost_a_day > 0 and tonumber(cost) >= cost_a_day) then
  return {0, turns, running, tokens, cost}
end
if per_minute > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if at_once > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {1, turns, running, tokens, cost}
"""


class RedisCounters:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "streamchat:limits:",
        timeout_seconds: float = 2.0,
        running_expiry_seconds: float = RUNNING_EXPIRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.where = describe(url)
        self._prefix = prefix
        self._expiry_ms = max(1, round(running_expiry_seconds * 1000))
        self._clock = clock
        try:
            # A blocking pool, as the store's: at hundreds of turns at once, a call waits for a
            # connection (up to the timeout) instead of failing "Too many connections".
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=256,
                timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                socket_timeout=timeout_seconds,
                retry=Retry(NoBackoff(), 0),  # a retried INCR could count twice
                decode_responses=True,
            )
            self._client = redis.asyncio.Redis.from_pool(pack_in_one_string(pool))
        except ValueError as exc:
            raise StoreError(f"STORE_URL is not a Redis URL redis-py understands: {exc}") from None
        self._admit = self._client.register_script(ADMIT)
        # This process's running turns, by owner: their scores are renewed while they run.
        self._mine: dict[str, set[str]] = {}
        self._renewal: asyncio.Task[None] | None = None

    async def admit(self, owner: str, turn_id: str, quotas: Quotas, now: float) -> Spent | None:
        keys = self._keys(owner, now)
        args: list[str | int] = [
            round(now * 1000),
            turn_id,
            self._expiry_ms,
            round((MINUTE - now % MINUTE) * 1000) + 1000,
            quotas.turns_per_minute,
            quotas.concurrent_turns,
            quotas.tokens_per_day,
            repr(float(quotas.cost_per_day)),
        ]
        with self._reachable():
            admitted, turns, running, tokens, cost = await self._admit(keys=keys, args=args)
        if not admitted:
            return Spent(int(turns), int(running), int(tokens), float(cost))
        if quotas.concurrent_turns:
            self._mine.setdefault(owner, set()).add(turn_id)
        return None

    async def release(self, owner: str, turn_id: str, tokens: int, cost: float, now: float) -> None:
        mine = self._mine.get(owner)
        if mine is not None:
            mine.discard(turn_id)
            if not mine:
                del self._mine[owner]
        _, running, tokens_key, cost_key = self._keys(owner, now)
        day_expiry = round(DAY - now % DAY) + DAY_MARGIN_SECONDS
        with self._reachable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrem(running, turn_id)
                if tokens:
                    pipe.incrby(tokens_key, tokens)
                    pipe.expire(tokens_key, day_expiry)
                if cost:
                    pipe.incrbyfloat(cost_key, cost)
                    pipe.expire(cost_key, day_expiry)
                await pipe.execute()

    async def spent(self, owner: str, now: float) -> Spent:
        turns_key, running, tokens_key, cost_key = self._keys(owner, now)
        with self._reachable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(turns_key)
                pipe.zcount(running, f"({round(now * 1000)}", "+inf")
                pipe.get(tokens_key)
                pipe.get(cost_key)
                turns, live, tokens, cost = await pipe.execute()
        return Spent(int(turns or 0), int(live), int(tokens or 0), float(cost or 0))

    async def open(self) -> None:
        self._renewal = asyncio.create_task(self._renew(), name="limits-renewal")

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        await self._client.aclose()

    async def _renew(self) -> None:
        """Keep this process's running turns counted: a third of the expiry apart."""
        while True:
            await asyncio.sleep(self._expiry_ms / 3000)
            if not self._mine:
                continue
            until = round(self._clock() * 1000) + self._expiry_ms
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for owner, turns in self._mine.items():
                        running = self._keys(owner, 0)[1]
                        pipe.zadd(running, dict.fromkeys(turns, until), xx=True)
                        pipe.pexpire(running, self._expiry_ms)
                    await pipe.execute()
            except redis.exceptions.RedisError as exc:
                log.warning("could not renew the running turns in Redis at %s: %s", self.where, exc)

    def _keys(self, owner: str, now: float) -> list[str]:
        base = f"{self._prefix}{{{quote(owner.encode('utf-8', 'surrogatepass'), safe='')}}}"
        return [
            f"{base}:turns:{int(now // MINUTE)}",
            f"{base}:running",
            f"{base}:tokens:{int(now // DAY)}",
            f"{base}:cost:{int(now // DAY)}",
        ]

    def _reachable(self) -> contextlib.AbstractContextManager[None]:
        return reachable(self.where)
