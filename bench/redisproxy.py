"""A TCP relay between streamchat and Redis that counts round trips and commands.

Redis answers every request it is sent, so on one connection a round trip is a burst of client
bytes that follows a reply (or opens the connection): a pipeline of forty commands written at
once is one round trip, however many reads it arrives in. The relay also reads the client's
RESP arrays to count the commands sent, by name (a script called with `EVALSHA` is one command
here, however many it runs inside Redis). Counts are since the relay started; `Counts.minus`
gives the difference between two readings. It runs in the harness's event loop (the load core),
and only for the round-trip scenario: the relay's hop is not in any timed figure.
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
        # Whose bytes came last on this connection: a client burst after a reply is a new trip.
        state = {"replied": True}
        commands = _Commands()

        async def upward() -> None:
            while data := await client_r.read(65536):
                if state["replied"]:
                    self.counts.round_trips += 1
                    state["replied"] = False
                self.counts.commands.update(commands.feed(data))
                redis_w.write(data)
                await redis_w.drain()

        async def downward() -> None:
            while data := await redis_r.read(65536):
                state["replied"] = True
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
