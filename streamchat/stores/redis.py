"""`redis://host:port/db`: conversations in Redis, shared by any number of streamchat processes.

A conversation is a hash (its metadata), a list of messages and a list of artifacts, each entry
tagged with its turn so a regenerate can drop that turn's artifacts; each owner has a sorted set
of conversation ids scored by `updated_at` for the most-recent-first list. Every key carries its
owner as a hash tag, so the keys one script touches lie in one Redis Cluster slot. A turn holds
the conversation's lease (a random token with an expiry, taken by the script that begins the
turn, or by polling `SET NX PX` when another turn holds it; renewed while the turn runs; released
by the script that stores the turn's end, or with compare-and-delete when that write did not
happen), so a process that dies blocks its conversation for at most the lease.
Each write of a turn is one Lua script that first checks that the lease still holds this
process's token: a holder that lost its lease (a long pause, a partition) never writes over the
turn that replaced it, and gets `LeaseLost`. A running turn whose lease is gone died with its
process: `load` reports it interrupted, and the next `begin_turn` records it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamchat.providers.base import Message
from streamchat.stores.base import (
    BegunTurn,
    ConversationInfo,
    LeaseLost,
    LocalLocks,
    Outcome,
    StoredConversation,
    StoreError,
    StoreUnavailable,
    cursor_of,
    make_title,
    parse_cursor,
)
from streamchat.stores.redis_bus import RedisEventBus
from streamchat.stores.redis_wire import pack_in_one_string

log = logging.getLogger(__name__)

# Errors that mean "Redis cannot be reached right now" rather than "Redis refused this".
# A replica promoted mid-failover answers READONLY for a moment: unreachable, too.
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    OSError,
)
POLL_SECONDS = (0.005, 0.01, 0.02, 0.05)  # the lease wait: quick at first, then every 50 ms

# Entries of the message and artifact lists are `<turn>\n<tag>\n<json>`: the tag is the
# message's role or the artifact's id as JSON, so a script finds what it needs without
# decoding bodies. JSON never contains a raw newline. The hash's `bytes` counts the JSON of the
# entries of both lists, as every store counts a conversation (their heads left out), so a
# conversation past MAX_CONVERSATION_BYTES is refused without being read.
BODY_SIZE = """
local function body_size(entry) return #entry - #string.match(entry, '^%d+\\n[^\\n]*\\n') end
"""

BEGIN = (
    BODY_SIZE
    + """
-- KEYS: meta, messages, artifacts, recent, lease
-- ARGV: token, now, title, system entry ('' for none), user message JSON, regenerate, id,
--       the lease's milliseconds when this script takes it ('' when the turn holds it already)
local holder = redis.call('GET', KEYS[5])
if holder ~= ARGV[1] then
  if ARGV[8] == '' then return {0} end  -- the lease was lost
  if holder then return {-1} end  -- another turn holds the conversation: wait for it
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[8])
end
local turns = tonumber(redis.call('HGET', KEYS[1], 'turns'))
local artifacts = redis.call('LRANGE', KEYS[3], 0, -1)
if turns == nil then
  turns = 0
  local system = 0
  if ARGV[4] ~= '' then
    redis.call('RPUSH', KEYS[2], ARGV[4])
    system = body_size(ARGV[4])
  end
  redis.call('HSET', KEYS[1], 'title', ARGV[3], 'created', ARGV[2], 'bytes', system)
elseif ARGV[6] == '1' then
  local entries = redis.call('LRANGE', KEYS[2], 0, -1)
  local last, users = nil, 0
  for i = #entries, 1, -1 do
    local turn, role = string.match(entries[i], '^(%d+)\\n([^\\n]*)\\n')
    if role == 'user' then
      users = users + 1
      if last == nil then
        last = tonumber(turn)
        if i == 1 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, i - 2) end
        local dropped = 0
        for j = i, #entries do dropped = dropped + body_size(entries[j]) end
        redis.call('HINCRBY', KEYS[1], 'bytes', 0 - dropped)
      end
    end
  end
  if last ~= nil then
    local kept, dropped = {}, 0
    for _, entry in ipairs(artifacts) do
      if tonumber(string.match(entry, '^(%d+)\\n')) < last then
        table.insert(kept, entry)
      else
        dropped = dropped + body_size(entry)
      end
    end
    redis.call('HINCRBY', KEYS[1], 'bytes', 0 - dropped)
    if #kept < #artifacts then
      redis.call('DEL', KEYS[3])
      for _, entry in ipairs(kept) do redis.call('RPUSH', KEYS[3], entry) end
      artifacts = kept
    end
  end
  if users <= 1 then redis.call('HSET', KEYS[1], 'title', ARGV[3]) end
end
-- A turn still marked running began under a lease that is gone: its process died.
local dead = redis.call('HGET', KEYS[1], 'running')
turns = turns + 1
redis.call('HSET', KEYS[1], 'turns', turns, 'running', turns, 'token', ARGV[1], 'updated', ARGV[2])
if dead then
  redis.call('HSET', KEYS[1], 'interrupted', dead)
else
  redis.call('HDEL', KEYS[1], 'interrupted')
end
local user = turns .. '\\nuser\\n' .. ARGV[5]
redis.call('RPUSH', KEYS[2], user)
redis.call('HINCRBY', KEYS[1], 'bytes', #ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[7])
local ids = {}
for _, entry in ipairs(artifacts) do
  table.insert(ids, string.match(entry, '^%d+\\n([^\\n]*)\\n'))
end
return {turns, redis.call('LRANGE', KEYS[2], 0, -1), ids}
"""
)

WRITE = (
    BODY_SIZE
    + """
-- KEYS: meta, messages, artifacts, recent, lease
-- ARGV: token, turn, now ('' unless the turn ends), id, message count, messages..., artifacts...
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'running') ~= ARGV[2] then
  -- The conversation was deleted under the turn: its writes go nowhere, and its end still
  -- lets the conversation go (a new one of that id would wait out the lease otherwise).
  if ARGV[3] ~= '' then redis.call('DEL', KEYS[5]) end
  return 0
end
local count, size = tonumber(ARGV[5]), 0
for i = 6, 5 + count do redis.call('RPUSH', KEYS[2], ARGV[i]) end
for i = 6 + count, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
for i = 6, #ARGV do size = size + body_size(ARGV[i]) end
redis.call('HINCRBY', KEYS[1], 'bytes', size)
if ARGV[3] ~= '' then
  redis.call('HDEL', KEYS[1], 'running', 'token')
  redis.call('HSET', KEYS[1], 'updated', ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
  redis.call('DEL', KEYS[5])  -- the turn's end releases the conversation: no command of its own
end
return 1
"""
)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    meta: str
    messages: str
    artifacts: str
    recent: str
    lease: str

    @property
    def turn(self) -> list[str]:
        """The keys of the turn scripts, in their order."""
        return [self.meta, self.messages, self.artifacts, self.recent, self.lease]


@dataclass(slots=True, eq=False)
class _Lease:
    token: str
    held: bool = False  # taken in Redis by this turn's begin (or the wait for it)
    tried: bool = False  # a command that takes it was sent: it may be held even if unanswered
    lost: bool = False
    released: bool = False  # by the end of its turn, in the same script
    key: str = ""
    conversation_id: str = ""
    renewed_at: float = 0.0  # the loop's time when it was taken or last renewed


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 20.0,
        retention_seconds: float = 300.0,
        prefix: str = "streamchat:",
        timeout_seconds: float = 2.0,
        unavailable_after_seconds: float = 5.0,
        max_connections: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise StoreError("a Redis key prefix cannot hold braces: they mark the hash tag")
        self.where = describe(url)
        self.description = f"redis ({self.where})"
        self._prefix = prefix
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._unavailable_after = unavailable_after_seconds
        self._clock = clock
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout_seconds,  # waiting for a free connection
                socket_connect_timeout=timeout_seconds,
                socket_timeout=timeout_seconds,
                # A retried script could run twice; a dead connection is replaced by the pool.
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                # Lone surrogates (from `\ud800` escapes in upstream JSON) survive the round trip.
                encoding_errors="surrogatepass",
            )
        except ValueError as exc:
            raise StoreError(f"STORE_URL is not a Redis URL redis-py understands: {exc}") from None
        self._client = redis.asyncio.Redis.from_pool(pack_in_one_string(pool))
        # Readers on other processes block in XREAD for a second at a time, one connection
        # each: the bus has its own pool, unbounded, so they never starve the store's calls.
        bus = redis.asyncio.Redis.from_url(
            url,
            # redis-py caps a pool at 100 connections unless told otherwise; every reader
            # of a turn run elsewhere holds one while it blocks in XREAD.
            max_connections=100_000,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds + 5.0,
            retry=Retry(NoBackoff(), 0),
        )
        pack_in_one_string(bus.connection_pool)
        self._bus = RedisEventBus(bus, retention_seconds, prefix=f"{prefix}bus:")
        self._begin = self._client.register_script(BEGIN)
        self._write = self._client.register_script(WRITE)
        self._renew_script = self._client.register_script(RENEW)
        self._release_script = self._client.register_script(RELEASE)
        self._local = LocalLocks()
        self._answered = -1e9  # when Redis last answered a ping
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._kept: set[_Lease] = set()  # the leases held here, renewed by one task
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        # Turns that were running belong to processes that may still be alive: nothing to mark
        # here; `load` and `begin_turn` tell a dead turn by its lease.
        try:
            await self._client.ping()
        except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise StoreError(f"STORE_URL: Redis at {self.where} refused the login: {exc}") from None
        except UNREACHABLE as exc:
            # Redis may come up after streamchat: serve 503s until it answers.
            log.warning("Redis at %s cannot be reached yet: %s", self.where, exc)
        except redis.exceptions.RedisError as exc:  # e.g. a database number out of range
            raise StoreError(f"STORE_URL: Redis at {self.where} refused it: {exc}") from None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._client.aclose()
        await self._bus.close()

    def event_bus(self) -> RedisEventBus:
        return self._bus

    async def ping(self) -> None:
        # Asked before every turn: one answer a second is enough to say Redis is there (a turn
        # that then finds it gone ends with store_unavailable).
        if time.monotonic() - self._answered < 1.0:
            return
        with self._reachable():
            await self._client.ping()
        self._answered = time.monotonic()

    def lock(self, owner: str, conversation_id: str) -> AbstractAsyncContextManager[None]:
        return self._hold(owner, conversation_id)

    async def load(self, owner: str, conversation_id: str) -> StoredConversation | None:
        keys = self._keys(owner, conversation_id)
        with self._reachable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.meta)
                pipe.lrange(keys.messages, 0, -1)
                pipe.lrange(keys.artifacts, 0, -1)
                pipe.get(keys.lease)
                meta, messages, artifacts, holder = await pipe.execute()
        if not meta:
            return None
        running, interrupted = _liveness(meta, holder)
        return StoredConversation(
            conversation_id,
            meta["title"],
            float(meta["created"]),
            float(meta["updated"]),
            int(meta["turns"]),
            running,
            [_body(entry) for entry in messages],
            [_body(entry) for entry in artifacts],
            interrupted,
        )

    async def begin_turn(
        self,
        owner: str,
        conversation_id: str,
        system_prompt: str,
        user_message: str,
        *,
        regenerate: bool = False,
    ) -> BegunTurn:
        lease = self._lease(owner, conversation_id, held=False)
        keys = self._keys(owner, conversation_id)
        system = _message_entry(0, {"role": "system", "content": system_prompt})
        args = [
            lease.token,
            repr(self._clock()),
            make_title(user_message),
            system if system_prompt else "",
            _json({"role": "user", "content": user_message}),
            "1" if regenerate else "0",
            conversation_id,
            "" if lease.held else str(self._lease_ms),
        ]
        # The script takes the lease and begins the turn in one round trip; only when another
        # turn holds the conversation does this one wait for it first.
        lease.tried = True
        with self._reachable():
            result = await self._begin(keys=keys.turn, args=args)
        if result[0] == -1:
            await self._acquire(keys.lease, lease.token)
            args[-1] = ""
            with self._reachable():
                result = await self._begin(keys=keys.turn, args=args)
        if not result[0]:
            raise self._lost(owner, conversation_id)
        lease.held = True
        self._keep_alive(keys.lease, conversation_id, lease)
        number, history, ids = result
        return BegunTurn(
            int(number), [_body(entry) for entry in history], frozenset(json.loads(i) for i in ids)
        )

    async def append(
        self, owner: str, conversation_id: str, turn: int, messages: list[Message]
    ) -> None:
        await self._write_turn(owner, conversation_id, turn, messages, [], None)

    async def end_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        await self._write_turn(owner, conversation_id, turn, messages, artifacts, self._clock())

    async def recent(
        self, owner: str, limit: int, before: str | None = None
    ) -> tuple[list[ConversationInfo], str | None]:
        keys = self._keys(owner, "")
        mark = parse_cursor(before) if before is not None else None
        if mark is not None and math.isnan(mark[0]):
            return [], None
        with self._reachable():
            async with self._client.pipeline(transaction=False) as pipe:
                if mark is None:
                    pipe.zrevrangebyscore(keys.recent, "+inf", "-inf", 0, limit + 1)
                else:
                    # Ties on `updated_at` are ordered by id, as the cursor is.
                    pipe.zrevrangebyscore(keys.recent, mark[0], mark[0])
                    pipe.zrevrangebyscore(keys.recent, f"({mark[0]!r}", "-inf", 0, limit + 1)
                found = await pipe.execute()
            ids = found[0] if mark is None else [i for i in found[0] if i < mark[1]] + found[1]
            ids = ids[: limit + 1]
            async with self._client.pipeline(transaction=False) as pipe:
                for conversation_id in ids:
                    each = self._keys(owner, conversation_id)
                    pipe.hgetall(each.meta)
                    pipe.get(each.lease)
                rows = await pipe.execute() if ids else []
        infos = []
        for conversation_id, meta, holder in zip(ids, rows[::2], rows[1::2], strict=True):
            if not meta:
                continue  # deleted between the two round trips
            running, _ = _liveness(meta, holder)
            infos.append(
                ConversationInfo(
                    conversation_id,
                    meta["title"],
                    float(meta["created"]),
                    float(meta["updated"]),
                    int(meta["turns"]),
                    running,
                )
            )
        more = len(infos) > limit
        infos = infos[:limit]
        return infos, (cursor_of(infos[-1]) if more and infos else None)

    async def stored_bytes(self, owner: str, conversation_id: str) -> int:
        with self._reachable():
            size = await self._client.hget(self._keys(owner, conversation_id).meta, "bytes")
        return int(size or 0)

    async def delete(self, owner: str, conversation_id: str) -> bool:
        # The lease stays: a turn still running here or elsewhere ends on its own, and its
        # writes find no running turn and go nowhere.
        keys = self._keys(owner, conversation_id)
        with self._reachable():
            turns = int(await self._client.hget(keys.meta, "turns") or 0)
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(keys.meta)
                pipe.delete(keys.messages, keys.artifacts)
                pipe.zrem(keys.recent, conversation_id)
                deleted, _, _ = await pipe.execute()
            # Its turns' event streams go too: a new conversation of this id numbers its turns
            # from 1 again, and would find the old ones' events under its own turns' keys (its
            # own refused, as they come after them), for other processes to read.
            if turns:
                async with self._client.pipeline(transaction=False) as pipe:
                    for number in range(1, turns + 1):
                        base = self._bus.turn_key(owner, conversation_id, number)
                        for key in (base, f"{base}:alive", f"{base}:reading"):
                            pipe.unlink(key)
                    await pipe.execute()
        return bool(deleted)

    # --- keys -----------------------------------------------------------------------------------

    def _keys(self, owner: str, conversation_id: str) -> _Keys:
        # Percent-encoding escapes `%`, `:` and the braces, so (`a:b`, `c`) and (`a`, `b:c`)
        # never share a key and the owner is the whole hash tag.
        base = f"{self._prefix}{{{_escape(owner)}}}"
        tail = _escape(conversation_id)
        return _Keys(
            f"{base}:conv:{tail}",
            f"{base}:msgs:{tail}",
            f"{base}:arts:{tail}",
            f"{base}:recent",
            f"{base}:lease:{tail}",
        )

    # --- the lease ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _hold(self, owner: str, conversation_id: str) -> AsyncIterator[None]:
        # Turns of one process queue on a local lock, so only one of them polls Redis.
        # Across processes, the lease is taken by the turn's begin (`begin_turn`), in the same
        # script: one round trip fewer for every turn.
        async with self._local.hold(owner, conversation_id):
            lease = _Lease(secrets.token_hex(16))
            self._leases[(owner, conversation_id)] = lease
            try:
                yield
            finally:
                del self._leases[(owner, conversation_id)]
                self._kept.discard(lease)
                if lease.tried and not lease.lost and not lease.released:
                    # Released even when the turn is being cancelled; if Redis is away, the
                    # lease expires by itself.
                    key = self._keys(owner, conversation_id).lease
                    await asyncio.shield(self._release(key, lease.token))

    def _keep_alive(self, key: str, conversation_id: str, lease: _Lease) -> None:
        lease.key, lease.conversation_id = key, conversation_id
        lease.renewed_at = asyncio.get_running_loop().time()
        self._kept.add(lease)
        if self._renewer is None or self._renewer.done():
            self._renewer = self._spawn(self._renew())

    async def _acquire(self, key: str, token: str) -> None:
        """Wait until the conversation's lease is free, and take it."""
        unreachable_since: float | None = None
        attempt = 0
        while True:
            try:
                if await self._client.set(key, token, nx=True, px=self._lease_ms):
                    return
                unreachable_since = None
            except asyncio.CancelledError:
                # The SET may have reached Redis: give that lease back instead of leaving the
                # conversation blocked until it expires.
                self._spawn(self._release(key, token))
                raise
            except UNREACHABLE as exc:
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                elif now - unreachable_since >= self._unavailable_after:
                    raise StoreUnavailable(
                        f"Redis at {self.where} cannot be reached: {exc}"
                    ) from None
            except redis.exceptions.RedisError as exc:
                raise StoreError(f"Redis refused a lease: {exc}") from None
            await asyncio.sleep(POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)])
            attempt += 1

    async def _renew(self) -> None:
        """Renew every lease held here a third of the lease after its last renewal (or
        sooner), in one round trip; end when none is left."""
        loop = asyncio.get_running_loop()
        every = self._lease_ms / 1000 / 3
        while self._kept:
            await asyncio.sleep(every / 2)
            now = loop.time()
            due = [lease for lease in self._kept if now - lease.renewed_at >= every]
            if not due:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for lease in due:
                        await self._renew_script(
                            keys=[lease.key], args=[lease.token, self._lease_ms], client=pipe
                        )
                    renewed = await pipe.execute(raise_on_error=False)
            except (redis.exceptions.RedisError, OSError) as exc:
                # Tried again at the next tick; if a lease expires meanwhile, the next renewal
                # finds it gone, and its turn's writes were refused by then anyway.
                log.warning("could not renew the leases of %d turn(s): %s", len(due), exc)
                continue
            for lease, answer in zip(due, renewed, strict=True):
                if lease.released or lease not in self._kept:
                    continue
                if isinstance(answer, Exception):
                    log.warning(
                        "could not renew the lease of conversation %s: %s",
                        lease.conversation_id,
                        answer,
                    )
                elif answer:
                    lease.renewed_at = now
                else:
                    lease.lost = True
                    self._kept.discard(lease)
                    log.warning(
                        "the lease of conversation %s expired while its turn ran: its writes "
                        "are refused from now on",
                        lease.conversation_id,
                    )

    async def _release(self, key: str, token: str) -> None:
        try:
            await self._release_script(keys=[key], args=[token])
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not release a lease (it expires by itself): %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lease(self, owner: str, conversation_id: str, *, held: bool = True) -> _Lease:
        """This process's lease of the conversation, not lost (and, with `held`, taken in
        Redis), or `LeaseLost`."""
        lease = self._leases.get((owner, conversation_id))
        if lease is None or lease.lost or (held and not lease.held):
            raise self._lost(owner, conversation_id)
        return lease

    def _lost(self, owner: str, conversation_id: str) -> LeaseLost:
        lease = self._leases.get((owner, conversation_id))
        if lease is not None:
            lease.lost = True
        return LeaseLost(
            f"this process does not hold the lease of conversation {conversation_id}: "
            "another process may be running its turns"
        )

    # --- writes ---------------------------------------------------------------------------------

    async def _write_turn(
        self,
        owner: str,
        conversation_id: str,
        turn: int,
        messages: list[Message],
        artifacts: list[dict[str, Any]],
        ended_at: float | None,
    ) -> None:
        lease = self._lease(owner, conversation_id)
        keys = self._keys(owner, conversation_id)
        args = [
            lease.token,
            str(turn),
            "" if ended_at is None else repr(ended_at),
            conversation_id,
            str(len(messages)),
            *(_message_entry(turn, m) for m in messages),
            *(_artifact_entry(turn, a) for a in artifacts),
        ]
        with self._reachable():
            written = await self._write(keys=keys.turn, args=args)
        if written == -1:
            raise self._lost(owner, conversation_id)
        if ended_at is not None:
            lease.released = True

    def _reachable(self) -> contextlib.AbstractContextManager[None]:
        return reachable(self.where)


@contextlib.contextmanager
def reachable(where: str) -> Iterator[None]:
    """Redis's errors as the store's: unreachable is `StoreUnavailable`, never a raw error."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailable(f"Redis at {where} cannot be reached: {exc}") from None
    except redis.exceptions.RedisError as exc:
        raise StoreError(f"Redis refused a command: {exc}") from None


def describe(url: str) -> str:
    """`host:port/db` of a Redis URL, never its user name or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or 6379
    except ValueError:
        raise StoreError("STORE_URL has a Redis port that is not a number") from None
    db = parse_qs(parts.query).get("db", [parts.path.strip("/") or "0"])[0]
    return f"{host}:{port}/{db}" + (", TLS" if parts.scheme == "rediss" else "")


def _liveness(meta: dict[str, str], holder: str | None) -> tuple[int | None, int | None]:
    """The running and the interrupted turn: a running turn whose lease is gone died."""
    interrupted = int(meta["interrupted"]) if "interrupted" in meta else None
    if "running" not in meta:
        return None, interrupted
    if holder is not None and holder == meta.get("token"):
        return int(meta["running"]), interrupted
    return None, int(meta["running"])


def _escape(text: str) -> str:
    # surrogatepass: a lone surrogate gets bytes no real character has, so escapes never collide.
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _message_entry(turn: int, message: Message) -> str:
    return f"{turn}\n{message['role']}\n{_json(message)}"


def _artifact_entry(turn: int, artifact: dict[str, Any]) -> str:
    return f"{turn}\n{_json(artifact['artifactId'])}\n{_json(artifact)}"


def _body(entry: str) -> Any:
    return json.loads(entry.split("\n", 2)[2])
