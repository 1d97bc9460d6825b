"""Where conversations live: `STORE_URL` names the store (see `base.Store` for the protocol)."""

from __future__ import annotations

from streamchat.stores.base import (
    ANONYMOUS,
    BegunTurn,
    ConversationInfo,
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
    "Outcome",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredConversation",
    "make_store",
]


def make_store(url: str, *, ttl_seconds: float, max_conversations: int) -> Store:
    """The store a `STORE_URL` names: `sqlite:///<path>`, `memory://` (or, later, `redis://`)."""
    if url.startswith("sqlite://"):
        # sqlite:///streamchat.db is relative to the working directory; sqlite:////abs/path.db
        # is absolute, as in SQLAlchemy's URLs.
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise StoreError("STORE_URL sqlite:/// needs a file path, e.g. sqlite:///streamchat.db")
        from streamchat.stores.sqlite import SqliteStore

        return SqliteStore(path)
    if url in ("memory://", "memory:"):
        from streamchat.stores.memory import MemoryStore

        return MemoryStore(ttl_seconds, max_conversations)
    scheme = url.partition(":")[0] or url
    raise StoreError(f"STORE_URL must start with sqlite:/// or memory://, not {scheme!r}")
