"""Commands packed in one string: the same bytes redis-py sends, for every kind of argument."""

from __future__ import annotations

from typing import Any

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the redis package is not installed")

from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection  # noqa: E402
from redis.exceptions import DataError  # noqa: E402

from streamchat.stores.redis_wire import pack_in_one_string  # noqa: E402

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "key", "value", "NX", "PX", 20000),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", "", "0-12", '[{"type":"text","textDelta":"hi"}]'),
    ("RPUSH", "k", "caf\u00e9 \u4e2d\u6587 \U0001f600", "plain"),
    ("RPUSH", "k", "lone \ud800 surrogate", "\udfff"),  # kept by `surrogatepass`
    ("SET", "k", -12345678901234567890),
    ("SET", "k", 1.5, "EX", 0.25),  # floats: redis-py's own path
    ("SET", b"bytes key", b"ascii bytes", b"\xff\xfe not ascii"),
    ("SET", "k", memoryview(b"a view")),
    ("CONFIG GET", "maxmemory"),  # a command name of two words is two arguments
    (b"CONFIG SET", b"maxmemory", b"0"),
    ("SET", "big", "x" * 100_000, "after"),  # past redis-py's buffer cutoff
    ("SET", "big", b"y" * 100_000),
    ("PING",),
]


def made(pool: Any) -> Connection:
    connection: Connection = pool.connection_class(**pool.connection_kwargs)
    return connection


def both(decode: bool = True) -> tuple[Connection, Connection]:
    plain = Connection(decode_responses=decode, encoding_errors="surrogatepass")
    pool = redis_asyncio.ConnectionPool(
        connection_class=Connection, decode_responses=decode, encoding_errors="surrogatepass"
    )
    return plain, made(pack_in_one_string(pool))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0])[:12])
@pytest.mark.parametrize("decode", [True, False])
def test_a_command_is_packed_to_the_bytes_redis_py_sends(
    command: tuple[Any, ...], decode: bool
) -> None:
    plain, fast = both(decode)

    assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_what_redis_py_refuses_is_refused_the_same_way() -> None:
    plain, fast = both()
    bad: Any
    for bad in (True, None, object()):
        with pytest.raises(DataError):
            plain.pack_command("SET", "k", bad)
        with pytest.raises(DataError):
            fast.pack_command("SET", "k", bad)


def test_another_encoding_takes_redis_py_s_own_path() -> None:
    plain = Connection(encoding="latin-1")
    pool = redis_asyncio.ConnectionPool(connection_class=Connection, encoding="latin-1")
    fast = made(pack_in_one_string(pool))
    command = ("SET", "k", "caf\u00e9")

    assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert b"caf\xe9" in b"".join(fast.pack_command(*command))


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_the_connection_class_the_url_chose_is_kept(url: str, kind: type[Connection]) -> None:
    pool = pack_in_one_string(redis_asyncio.ConnectionPool.from_url(url))
    again = pack_in_one_string(pool)  # applying it twice changes nothing

    assert issubclass(pool.connection_class, kind)
    assert again.connection_class is pool.connection_class
    assert pool.connection_class.__mro__[2] is kind
