"""Who is calling: a backend turns a request into its owner, and the API sees only the owner.

`AUTH` picks the backend (SPEC section 10): `none` (every caller is one anonymous owner), `keys`
(a bearer API key, from `API_KEYS` or the hashed lines of `API_KEYS_FILE`), `jwt` (a bearer JWT,
checked with a shared secret, a public key or the keys of a JWKS URL; the owner is `sub`), or
`header` (an authenticating proxy in front names the caller in `AUTH_HEADER`); the key and JWT
backends live in `api_keys.py` and `jwt_auth.py`. The shape is starlette's
`AuthenticationMiddleware`: the middleware asks the backend, stores the owner on the request,
and `requests.owner_of()` hands it to the handlers; a caller the backend does not know gets `401`
before any handler runs. What a refusal says is only what a client needs: whether a token was
sent and not accepted, never which check it failed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
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
# The paths anyone may fetch: the page, its files, the health check, the API's description, and
# the metrics (which METRICS_TOKEN guards on its own).
PUBLIC_PATHS = frozenset({"/", "/health", "/metrics", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
# An owner is a name a store keys by: short, printable, one line.
_PRINTABLE_OWNER = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")

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
    if not _PRINTABLE_OWNER.fullmatch(owner):
        raise Unauthenticated(True, "the caller's name is empty, too long or not printable")
    return owner


# --- choosing and describing ---------------------------------------------------------------


def make_backend(settings: Settings) -> AuthBackend:
    """The backend `AUTH` names; a setting it cannot use is a `SettingsError` naming it."""
    match settings.auth:
        case "keys":
            from streamchat.api_keys import ApiKeys, parse_api_keys

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
            from streamchat.api_keys import ApiKeys

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
    "OWNER",
    "Anyone",
    "AuthBackend",
    "ProxyHeader",
    "Unauthenticated",
    "add_callers",
    "describe_auth",
    "make_backend",
]
