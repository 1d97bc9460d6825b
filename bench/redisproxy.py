"""A TCP relay between streamchat and Redis that counts round trips and commands.

Redis answers every command it is sent, in order, so on one connection a round trip starts when
the client sends a command while every command before it has had its reply: a pipeline of 500
commands written at once is one round trip, however many reads it arrives in and even if Redis
starts answering its first commands before the last ones arrive. The relay reads the client's
RESP arrays to count the commands sent, by name (a script called with `EVALSHA` is one command
here, however many it runs inside Redis), and the top-level replies (RESP2 or RESP3; a pub/sub
message, which answers no command, only ever lowers the count of commands waiting to zero).
Counts are since the relay started; `Counts.minus` gives the difference between two readings. It
runs in the harness's event loop (the load core), and only for the round-trip scenario: the
relay's hop is not in any timed figure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Counts:
    round_trips: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    def copy(self) -> Counts:
        return Counts(self.round_trips, Counter(self.commands), self.connections)

    def minus(self, before: Counts) -> Counts:
        commands = Counter(self.commands)
        commands.subtract(before.commands)
        return Counts(
            self.round_trips - before.round_trips,
            +commands,
            self.connections - before.connections,
        )


class _Commands:
    """An incremental reader of the RESP arrays a client sends: yields each command's name."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        names: list[str] = []
        while True:
            parsed = self._one()
            if parsed is None:
                return names
            name, end = parsed
            del self._buf[:end]
            names.append(name)

    def _one(self) -> tuple[str, int] | None:
        buf = self._buf
        if not buf:
            return None
        if buf[:1] != b"*":  # an inline command (`PING\r\n`): one line
            end = buf.find(b"\r\n")
            return (
                None if end < 0 else (bytes(buf[:end]).split(b" ", 1)[0].decode().upper(), end + 2)
            )
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        count, pos, name = int(buf[1:end]), end + 2, ""
        for i in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            size = int(buf[pos + 1 : end])
            start, pos = end + 2, end + 2 + size + 2
            if pos > len(buf):
                return None
            if i == 0:
                name = bytes(buf[start : start + size]).decode(errors="replace").upper()
        return name, pos


class _Replies:
    """An incremental counter of the top-level RESP2/RESP3 replies a server sends."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> int:
        self._buf += data
        count, pos = 0, 0
        while True:
            end = self._skip(pos)
            if end is None:
                break
            count, pos = count + 1, end
        del self._buf[:pos]
        return count

    def _skip(self, pos: int) -> int | None:
        """Where the value starting at `pos` ends, or None when it is not all here yet."""
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        kind, head, pos = bytes(buf[pos : pos + 1]), bytes(buf[pos + 1 : end]), end + 2
        if kind in (b"$", b"=", b"!"):  # bulk string, verbatim string, bulk error
            size = int(head)
            if size < 0:
                return pos
            return pos + size + 2 if pos + size + 2 <= len(buf) else None
        if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attribute
            items = int(head) * (2 if kind in (b"%", b"|") else 1)
            for _ in range(max(items, 0)):
                after = self._skip(pos)
                if after is None:
                    return None
                pos = after
            if kind == b"|":  # an attribute comes before the reply it describes
                return self._skip(pos)
            return pos
        return pos  # a simple string, error, integer, null, double, boolean or big number


class CountingProxy:
    """Listens on a free loopback port and relays every connection to Redis at `target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.counts = Counts()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.close()
            return
        self.counts.connections += 1
        self._writers.update((client_w, redis_w))
        # Commands sent on this connection that have had no reply yet.
        waiting = [0]
        commands, replies = _Commands(), _Replies()

        async def upward() -> None:
            while data := await client_r.read(65536):
                names = commands.feed(data)
                if names and waiting[0] == 0:
                    self.counts.round_trips += 1
                waiting[0] += len(names)
                self.counts.commands.update(names)
                redis_w.write(data)
                await redis_w.drain()

        async def downward() -> None:
            while data := await redis_r.read(65536):
                waiting[0] = max(0, waiting[0] - replies.feed(data))
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
            for writer in (client_w, redis_w):
                self._writers.discard(writer)
                writer.close()
