"""Where a request comes from: which host name it was sent to, and which browser page sent it.

Three walls, checked before any caller is authenticated:

- The `Host` allow-list (`ALLOWED_HOSTS`; the loopback names by default when the server listens
  on loopback) refuses a request sent to any other name. That closes DNS rebinding: a page whose
  name an attacker points at 127.0.0.1 reaches the port, but says its own name in `Host`.
- A browser request from another page's origin is refused unless `CORS_ORIGINS` names that origin,
  so no web page can make a visitor's browser drive the API (a `text/plain` form post or a
  no-cors fetch needs no preflight, so CORS alone would not stop it). Browsers say where a request
  comes from in `Origin` and `Sec-Fetch-Site`; clients that are not browsers send neither.
- CORS proper: the origins of `CORS_ORIGINS` get their preflight answered and every response,
  streamed or not, carries the headers that let them read it (added as it is prepared).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from streamchat.errors import ApiError
from streamchat.settings import Settings, SettingsError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-Id"
EXPOSE_HEADERS = "X-Conversation-Id, X-Request-Id"
PREFLIGHT_MAX_AGE = "600"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """`"Example.com:8080"` -> `("example.com", 8080)`; `"[::1]"` -> `("::1", None)`."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    return name.rstrip("."), int(port) if port.isdigit() else None


def normal_origin(origin: str) -> str | None:
    """`"https://App.example.com:443/"` -> `"https://app.example.com"`; None if not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host += f":{port}"
    return f"{parts.scheme}://{host}"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(entry: str) -> str:
    entry = entry.strip().lower()
    if entry.count(":") > 1 and not entry.startswith("["):
        return entry  # a bare IPv6 address such as ::1
    return split_host(entry)[0]


def _allowed_hosts(settings: Settings) -> tuple[str, ...] | None:
    """None is any name: the default unless the server listens on loopback only."""
    names = tuple(_host_name(entry) for entry in settings.allowed_hosts.split(",") if entry.strip())
    if "*" in names:
        return None
    if names:
        return names
    return LOOPBACK_NAMES if is_loopback(settings.host) else None


def _cors_origins(settings: Settings) -> frozenset[str]:
    origins = set()
    for raw in settings.cors_origins.split(","):
        if not raw.strip():
            continue
        origin = normal_origin(raw)
        if origin is None:
            raise SettingsError(
                "CORS_ORIGINS lists exact origins like https://app.example.com, "
                f"not {raw.strip()!r}"
            )
        origins.add(origin)
    return frozenset(origins)


def forbidden_origin() -> ApiError:
    return ApiError(
        403,
        "forbidden_origin",
        "Browser pages from this origin may not call this API (CORS_ORIGINS lists those that may).",
    )


@functools.lru_cache(maxsize=256)  # a few host names, every request: remember the answer
def _host_allowed(hosts: tuple[str, ...], host: str) -> bool:
    name = split_host(host)[0]
    return any(
        name == allowed
        or (allowed.startswith(".") and (name.endswith(allowed) or name == allowed[1:]))
        for allowed in hosts
    )


@dataclass(frozen=True, slots=True)
class Gate:
    hosts: tuple[str, ...] | None
    cors_origins: frozenset[str]

    def host_allowed(self, host: str) -> bool:
        return self.hosts is None or _host_allowed(self.hosts, host)

    def check_host(self, request: web.Request) -> None:
        if request.path == "/health":
            return  # load balancers probe by address; it tells nothing about conversations
        host = request.headers.get("Host", "")
        if not self.host_allowed(host):
            log.info("refused a request for host %r (not in ALLOWED_HOSTS)", host)
            raise ApiError(
                421,
                "host_not_allowed",
                "This server does not answer to this host name "
                "(ALLOWED_HOSTS lists those it does).",
            )

    def origin_allowed(self, request: web.Request, origin: str) -> bool:
        """An origin in CORS_ORIGINS, or the page's own (from a browser that does not say
        cross-site)."""
        normal = normal_origin(origin)
        if normal is None:
            return False  # "null" (a sandboxed frame, a file) and anything unparseable
        if normal in self.cors_origins:
            return True
        if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
            return False
        return same_origin(normal, request.headers.get("Host", ""))

    def check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
                raise forbidden_origin()
        elif not self.origin_allowed(request, origin):
            raise forbidden_origin()

    def is_preflight(self, request: web.Request) -> bool:
        headers = request.headers
        return (
            request.method == "OPTIONS"
            and "Origin" in headers
            and "Access-Control-Request-Method" in headers
        )

    def preflight(self, request: web.Request) -> web.Response:
        if not self.origin_allowed(request, request.headers["Origin"]):
            raise forbidden_origin()
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            },
        )

    async def add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Let an allowed origin read every response, streamed or not (run on prepare)."""
        if not self.cors_origins:
            return
        vary = response.headers.get("Vary", "")
        if "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        origin = normal_origin(request.headers.get("Origin", ""))
        if origin in self.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS

    def describe(self) -> list[str]:
        browsers = "the page's own origin"
        if self.cors_origins:
            browsers += " and " + ", ".join(sorted(self.cors_origins)) + " (CORS_ORIGINS)"
        hosts = "any" if self.hosts is None else ", ".join(self.hosts)
        return [f"browser origins: {browsers}", f"host names: {hosts} (ALLOWED_HOSTS)"]


def same_origin(origin: str, host: str) -> bool:
    """Whether a (normal) origin names the host a request was sent to. A `Host` without a port
    matches any port: a proxy in front may drop it (nginx's `$host` does)."""
    parts = urlsplit(origin)
    name, port = split_host(host)
    if not name or parts.hostname != name:
        return False
    return port is None or port == (parts.port or _DEFAULT_PORTS[parts.scheme])


def make_gate(settings: Settings) -> Gate:
    return Gate(_allowed_hosts(settings), _cors_origins(settings))
