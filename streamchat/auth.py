"""Who is calling: a backend turns a request into its owner, and the API sees only the owner.

`AUTH` picks the backend (SPEC section 10): `none` (every caller is one anonymous owner), `keys`
(a bearer API key, from `API_KEYS` or the hashed lines of `API_KEYS_FILE`), `jwt` (a bearer JWT,
checked with a shared secret, a public key or the keys of a JWKS URL; the owner is `sub`), or
`header` (an authenticating proxy in front names the caller in `AUTH_HEADER`). The shape is
starlette's `AuthenticationMiddleware`: the middleware asks the backend, stores the owner on the
request, and `requests.owner_of()` hands it to the handlers; a caller the backend does not know
gets `401` before any handler runs. What a refusal says is only what a client needs: whether a
token was sent and not accepted, never which check it failed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from streamchat.errors import ApiError
from streamchat.origins import is_loopback, make_gate
from streamchat.settings import Settings, SettingsError
from streamchat.stores import ANONYMOUS

log = logging.getLogger(__name__)

# Where the middleware leaves the caller for `requests.owner_of()` (a typed key from aiohttp
# 3.14 on, which warns about plain string keys; a string before it).
OWNER: Any = web.RequestKey("owner", str) if hasattr(web, "RequestKey") else "streamchat.owner"
# The paths anyone may fetch: the page, its files, the health check, the API's description.
PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
# An owner is a name a store keys by: short, printable, one line.
OWNER_MAX_CHARS = 256
_PRINTABLE_OWNER = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
# The owner names `keys add` and `API_KEYS` accept: one word, so a keys file line stays two words.
OWNER_NAME = re.compile(r"^[A-Za-z0-9._@+|-]{1,128}$")
KEY_PREFIX = "sc-"
MIN_KEY_CHARS = 16
DEFAULT_KEYS_FILE = "streamchat.keys"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthenticated(Exception):
    """The caller is not known; `invalid_token` when a token was sent but not accepted."""

    def __init__(self, invalid_token: bool, why: str = "") -> None:
        super().__init__(why)
        self.invalid_token = invalid_token


class AuthBackend(Protocol):
    async def authenticate(self, request: web.Request) -> str:
        """The caller's owner name, or `Unauthenticated`."""
        ...


class Anyone:
    """`AUTH=none`: every caller is the one anonymous owner."""

    async def authenticate(self, request: web.Request) -> str:
        return ANONYMOUS


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if not header:
        raise Unauthenticated(False)
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(True, "the Authorization header is not 'Bearer <token>'")
    return token.strip()


# --- API keys -----------------------------------------------------------------------------


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
        if not colon or not OWNER_NAME.match(owner):
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
            or not OWNER_NAME.match(words[0])
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


# --- the proxy's header ------------------------------------------------------------------


class ProxyHeader:
    """`AUTH=header`: an authenticating proxy in front names the caller."""

    def __init__(self, header: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", header):
            raise SettingsError(
                "AUTH=header needs AUTH_HEADER, a header name like X-Forwarded-User"
            )
        self.header = header

    async def authenticate(self, request: web.Request) -> str:
        owner = request.headers.get(self.header, "").strip()
        if not owner:
            raise Unauthenticated(False, f"no {self.header} header")
        return checked_owner(owner)


def checked_owner(owner: str) -> str:
    if not _PRINTABLE_OWNER.match(owner):
        raise Unauthenticated(True, "the caller's name is empty, too long or not printable")
    return owner


# --- choosing and describing ---------------------------------------------------------------


def make_backend(settings: Settings) -> AuthBackend:
    """The backend `AUTH` names; a setting it cannot use is a `SettingsError` naming it."""
    match settings.auth:
        case "keys":
            return ApiKeys(parse_api_keys(settings.api_keys), settings.api_keys_file)
        case "jwt":
            from streamchat.jwt_auth import make_jwt_backend

            return make_jwt_backend(settings)
        case "header":
            return ProxyHeader(settings.auth_header.strip())
        case _:
            return Anyone()


def describe_auth(settings: Settings) -> list[str]:
    """The start-up banner's lines on callers, browsers and host names (and the warnings)."""
    lines = []
    exposed = not is_loopback(settings.host)
    match settings.auth:
        case "keys":
            backend = make_backend(settings)
            assert isinstance(backend, ApiKeys)
            count = len(backend.owners)
            lines.append(f"callers: API keys ({count} owner{'s' * (count != 1)})")
        case "jwt":
            from streamchat.jwt_auth import describe_jwt

            lines.append(f"callers: JWTs ({describe_jwt(settings)})")
        case "header":
            lines.append(f"callers: named by the {settings.auth_header} header of a proxy in front")
            if exposed:
                lines.append(
                    f"WARNING: AUTH=header on {settings.host}: anyone who can reach port "
                    f"{settings.port} directly can send {settings.auth_header} and be anyone; "
                    "only the proxy must be able to reach it"
                )
        case _:
            lines.append("callers: anyone (AUTH=none)")
            if exposed:
                lines.append(
                    f"WARNING: AUTH=none on {settings.host}: anyone who can reach port "
                    f"{settings.port} can use the upstream key and read every conversation; "
                    "set AUTH (README: Putting it on the internet)"
                )
    lines += make_gate(settings).describe()
    return lines


# --- the middleware ------------------------------------------------------------------------


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def unauthorized(exc: Unauthenticated, settings: Settings) -> ApiError:
    challenge = 'Bearer realm="streamchat"'
    if exc.invalid_token:
        challenge += ', error="invalid_token"'
        message = "The credentials sent were not accepted."
    elif settings.auth == "header":
        message = "This server needs its proxy to name the caller; sign in through it."
    else:
        message = "This server needs a key: send Authorization: Bearer <key>."
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def add_callers(app: web.Application, settings: Settings) -> None:
    """Check the host, the browser origin and the caller of every request (in that order)."""
    backend, gate = make_backend(settings), make_gate(settings)

    @web.middleware
    async def callers(request: web.Request, handler: Handler) -> web.StreamResponse:
        gate.check_host(request)
        if is_public(request.path):
            return await handler(request)
        if gate.is_preflight(request):
            return gate.preflight(request)
        gate.check_origin(request)
        try:
            owner = await backend.authenticate(request)
        except Unauthenticated as exc:
            if exc.invalid_token:
                log.info("refused the credentials of %s %s: %s", request.method, request.path, exc)
            raise unauthorized(exc, settings) from None
        request[OWNER] = owner
        return await handler(request)

    app.middlewares.append(callers)
    app.on_response_prepare.append(gate.add_cors_headers)


__all__ = [
    "DEFAULT_KEYS_FILE",
    "OWNER",
    "Anyone",
    "ApiKeys",
    "AuthBackend",
    "ProxyHeader",
    "Unauthenticated",
    "add_callers",
    "describe_auth",
    "hash_key",
    "make_backend",
    "new_key",
]
