"""Commands packed for Redis in one string: redis-py's own packing, ~4x faster, same bytes.

redis-py packs a command argument by argument, joining a growing bytes buffer each time; the
flush of 200 running turns' events (~1,200 arguments) took it ~0.9 ms of the event loop, every
50 ms. Here the usual arguments (str, int, ASCII bytes) become one str, encoded once; anything
else (floats, other bytes, memoryviews) takes redis-py's own path. A str's length in bytes is
its length when it is ASCII, so only other text is encoded twice.
"""

from __future__ import annotations

import codecs
from functools import cache
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool


class _OneStringPacking:
    """Mixed into a connection class (plain, TLS or Unix socket alike)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder  # type: ignore[attr-defined]
        first = args[0]
        if not _is_utf8(encoder.encoding):
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        # As redis-py: a command name of several words ("CONFIG GET") is several arguments.
        if type(first) is str:
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        errors = encoder.encoding_errors
        out = [f"*{len(args)}\r\n"]
        for arg in args:
            kind = type(arg)
            if kind is str:
                size = len(arg) if arg.isascii() else len(arg.encode("utf-8", errors))
                out.append(f"${size}\r\n{arg}\r\n")
            elif kind is int:
                text = repr(arg)
                out.append(f"${len(text)}\r\n{text}\r\n")
            elif kind is bytes and arg.isascii():
                out.append(f"${len(arg)}\r\n{arg.decode('ascii')}\r\n")
            else:
                return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        return ["".join(out).encode("utf-8", errors)]


@cache
def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


_classes: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def pack_in_one_string(pool: ConnectionPool) -> ConnectionPool:
    """Make the pool's connections (of whatever class its URL chose) pack commands faster."""
    base = pool.connection_class
    if not issubclass(base, _OneStringPacking):
        if base not in _classes:
            _classes[base] = type(base.__name__, (_OneStringPacking, base), {})
        pool.connection_class = _classes[base]
    return pool
