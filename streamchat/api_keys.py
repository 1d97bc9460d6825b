"""`AUTH=keys`: API keys, kept as SHA-256 hashes, and the keys file `python -m streamchat keys`
writes (`<owner> sha256:<hex>` a line).

A presented key is hashed and compared with every stored hash in constant time; keys from
`API_KEYS` are hashed at start-up, so no key is kept in memory in the clear. The file is read
again when it changes, so adding and revoking keys needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streamchat.auth import Unauthenticated, bearer_token
from streamchat.settings import SettingsError

log = logging.getLogger(__name__)

# The owner names `keys add` and `API_KEYS` accept: one word, so a keys file line stays two words.
OWNER_NAME = re.compile(r"^[A-Za-z0-9._@+|-]{1,128}$")
KEY_PREFIX = "sc-"
MIN_KEY_CHARS = 16
DEFAULT_KEYS_FILE = "streamchat.keys"


def hash_key(key: str) -> str:
    """What a keys file stores of a key: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    """A new random key, recognisable by its prefix (as secret scanners look for)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    owner: str
    digest: bytes  # the SHA-256 of the key


def parse_api_keys(raw: str) -> list[KeyEntry]:
    """`API_KEYS="alice:<key>,bob:<key>"`; a bad entry names its position, never its key."""
    entries = []
    for number, item in enumerate(raw.split(","), start=1):
        owner, colon, key = item.strip().partition(":")
        if not item.strip():
            continue
        if not colon or not OWNER_NAME.fullmatch(owner):
            raise SettingsError(
                f"API_KEYS entry {number} must be <owner>:<key>, the owner one word of "
                "A-Z a-z 0-9 . _ @ + | -"
            )
        if len(key) < MIN_KEY_CHARS:
            raise SettingsError(
                f"API_KEYS: the key of {owner!r} is shorter than {MIN_KEY_CHARS} characters "
                "(python -m streamchat keys add makes good ones)"
            )
        entries.append(KeyEntry(owner, hashlib.sha256(key.encode()).digest()))
    return entries


def parse_keys_file(text: str, where: str) -> list[KeyEntry]:
    """`<owner> sha256:<hex>` a line; blank lines and `#` comments are skipped."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        digest = words[1].removeprefix("sha256:") if len(words) == 2 else ""
        if (
            len(words) != 2
            or not OWNER_NAME.fullmatch(words[0])
            or not words[1].startswith("sha256:")
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
        ):
            raise SettingsError(f"{where} line {number} is not '<owner> sha256:<64 hex digits>'")
        entries.append(KeyEntry(words[0], bytes.fromhex(digest)))
    return entries


def read_keys_file(path: str) -> list[KeyEntry]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"API_KEYS_FILE {path} cannot be read: {exc.strerror}") from None
    return parse_keys_file(text, f"API_KEYS_FILE {path}")


class ApiKeys:
    """`AUTH=keys`: the SHA-256 of the presented key, compared in constant time with every
    stored one. The keys file is read again when it changes (checked at most once a second),
    so `keys add` and `keys remove` take effect without a restart."""

    RECHECK_SECONDS = 1.0

    def __init__(self, fixed: list[KeyEntry], path: str = "") -> None:
        self._fixed, self._path = fixed, path
        self._entries = list(fixed)
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        if path:
            self._reload()
        if not self._entries:
            raise SettingsError(
                "AUTH=keys, but no key is configured: set API_KEYS or API_KEYS_FILE "
                "(python -m streamchat keys add <owner> makes one)"
            )

    @property
    def owners(self) -> list[str]:
        return sorted({entry.owner for entry in self._entries})

    def _reload(self) -> None:
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            raise SettingsError(
                f"API_KEYS_FILE {self._path} cannot be read: {exc.strerror}"
            ) from None
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self._entries = self._fixed + read_keys_file(self._path)

    def _refresh(self) -> None:
        now = time.monotonic()
        if not self._path or now - self._checked < self.RECHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = os.stat(self._path)
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._reload()
                log.info("read %s again: %d owners", self._path, len(self.owners))
        except (OSError, SettingsError) as exc:
            # Keep serving with the keys last read rather than lock every caller out.
            log.warning("API_KEYS_FILE %s could not be read again: %s", self._path, exc)

    async def authenticate(self, request: web.Request) -> str:
        token = bearer_token(request)
        self._refresh()
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = ""
        for entry in self._entries:
            # Every entry is compared, so the time taken says nothing about which matched.
            if hmac.compare_digest(presented, entry.digest) and not found:
                found = entry.owner
        if not found:
            raise Unauthenticated(True, "no such API key")
        return found
