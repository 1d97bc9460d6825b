"""New ids: random ones for what must not be guessed, counted ones for what must only differ.

A conversation id the server makes is all that guards that conversation when callers are not
authenticated, so it is 128 random bits from the operating system's generator. Asking the kernel
for 16 bytes at a time is a system call per id (several per turn, measurably slow on some virtual
machines), so the bytes are drawn 4 KiB at a time and handed out in slices: the same generator,
fewer calls. Ids that need only be distinct (a request's, a turn's within the limits) are this
process's random prefix and a count.
"""

from __future__ import annotations

import itertools
import os

_POOL_BYTES = 4096
_pool = b""
_offset = _POOL_BYTES

PREFIX = os.urandom(8).hex()
_count = itertools.count(1)


def _forked() -> None:
    """A child process must not hand out its parent's bytes or repeat its ids."""
    global _pool, _offset, PREFIX, _count
    _pool, _offset = b"", _POOL_BYTES
    PREFIX, _count = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_forked)


def random_hex() -> str:
    """32 hex digits of 128 fresh random bits (never handed out twice)."""
    global _pool, _offset
    if _offset >= len(_pool):
        _pool, _offset = os.urandom(_POOL_BYTES), 0
    start, _offset = _offset, _offset + 16
    return _pool[start:_offset].hex()


def counted_hex() -> str:
    """32 hex digits, distinct from every other this process makes (not secret)."""
    return f"{PREFIX}{next(_count):016x}"
