"""Where conversations live: `STORE_URL` names the store (see `base.Store` for the protocol)."""

from __future__ import annotations

from streamchat.stores.base import (
    ANONYMOUS,
    BegunTurn,
    ConversationInfo,
    LeaseLost,
    Outcome,
    Store,
    StoredConversation,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "ANONYMOUS",
    "BegunTurn",
    "ConversationInfo",
    "LeaseLost",
    "Outcome",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredConversation",
    "make_store",
]


def make_store(
    url: str,
    *,
    ttl_seconds: float,
    max_conversations: int,
    memory_max_bytes: int = 256 * 1024 * 1024,
    lease_seconds: float = 20.0,
    retention_seconds: float = 300.0,
) -> Store:
    """The store a `STORE_URL` names: `sqlite:///<path>`, `redis://host:port/db`, `memory://`."""
    if url.startswith("sqlite://"):
        # sqlite:///streamchat.db is relative to the working directory; sqlite:////abs/path.db
        # is absolute, as in SQLAlchemy's URLs.
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise StoreError("STORE_URL sqlite:/// needs a file path, e.g. sqlite:///streamchat.db")
        from streamchat.stores.sqlite import SqliteStore

        return SqliteStore(path)
    if url.startswith(("redis://", "rediss://")):
        # redis-py is an optional extra: only a Redis store needs it.
        try:
            from streamchat.stores.redis import RedisStore
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "redis":
                raise
            raise StoreError(
                "STORE_URL redis:// needs the redis package: pip install 'streamchat[redis]'"
            ) from None
        return RedisStore(url, lease_seconds=lease_seconds, retention_seconds=retention_seconds)
    if url in ("memory://", "memory:"):
        from streamchat.stores.memory import MemoryStore

        return MemoryStore(ttl_seconds, max_conversations, memory_max_bytes)
    scheme = url.partition(":")[0] or url
    raise StoreError(
        f"STORE_URL must start with sqlite:///, redis://, rediss:// or memory://, not {scheme!r}"
    )
