"""`AUTH=jwt`: a bearer JWT, checked with PyJWT (the optional `jwt` extra); the owner is `sub`.

The key is one of three: `JWT_SECRET` (HS256), `JWT_PUBLIC_KEY` (a PEM public key, RSA, EC or
Ed25519, its algorithms decided by the key's type), or `JWT_JWKS_URL` (an identity provider's
key set, fetched in a worker thread since PyJWKClient blocks, and kept: fetched again when it is
older than `JWKS_MAX_AGE_SECONDS`, or when a token names a key it lacks, at most once every
`JWKS_REFETCH_SECONDS`, so tokens with made-up key ids cannot make the server fetch it on every
request). The algorithms are always listed, never `none`, and a public key never verifies an
HMAC (the "algorithm confusion" attack). Expiry and `sub` are required; audience and issuer are
checked when set (the audience must be set with a JWKS URL: an identity provider signs tokens
for many applications), with `JWT_LEEWAY_SECONDS` of clock skew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from streamchat.auth import Unauthenticated, bearer_token, checked_owner
from streamchat.errors import ApiError
from streamchat.settings import Settings, SettingsError

try:
    import jwt
    from jwt import PyJWK, PyJWKClient
except ImportError:  # pragma: no cover - the jwt extra is not installed
    jwt = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

JWKS_MAX_AGE_SECONDS = 300.0
JWKS_REFETCH_SECONDS = 30.0
JWKS_TIMEOUT_SECONDS = 10.0
MIN_SECRET_CHARS = 32
INSTALL = "AUTH=jwt needs PyJWT: pip install 'streamchat[jwt]'"


class JwtBackend:
    def __init__(self, settings: Settings, key: Any, algorithms: list[str]) -> None:
        self.key, self.algorithms = key, algorithms
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self.leeway = settings.jwt_leeway_seconds

    async def signing_key(self, token: str) -> tuple[Any, list[str]]:
        return self.key, self.algorithms

    async def authenticate(self, request: web.Request) -> str:
        token = bearer_token(request)
        key, algorithms = await self.signing_key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(True, f"the JWT was refused: {exc}") from None
        return checked_owner(claims["sub"])


class JwksBackend(JwtBackend):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, None, [])
        self.url = settings.jwt_jwks_url
        self.client = PyJWKClient(
            self.url, cache_keys=False, cache_jwk_set=False, timeout=JWKS_TIMEOUT_SECONDS
        )
        self.keys: dict[str, PyJWK] = {}
        self.fetched = -1e9
        self.unreachable = False  # the last fetch failed and there are no keys to fall back on
        self.lock = asyncio.Lock()

    async def signing_key(self, token: str) -> tuple[Any, list[str]]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(True, f"the JWT was refused: {exc}") from None
        age = time.monotonic() - self.fetched
        if age > JWKS_MAX_AGE_SECONDS or (self._find(kid) is None and age > JWKS_REFETCH_SECONDS):
            await self._fetch()
        found = self._find(kid)
        if found is None and self.unreachable:
            raise ApiError(
                503,
                "auth_unavailable",
                "The server cannot check credentials just now. Try again in a moment.",
                headers={"Retry-After": str(int(JWKS_REFETCH_SECONDS))},
            )
        if found is None:
            raise Unauthenticated(True, "the JWT names no key of the JWKS")
        return found, [found.algorithm_name]

    def _find(self, kid: object) -> PyJWK | None:
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid) if isinstance(kid, str) else None

    async def _fetch(self) -> None:
        async with self.lock:
            if time.monotonic() - self.fetched <= JWKS_REFETCH_SECONDS:
                return  # another request fetched it meanwhile
            try:
                keys = await asyncio.to_thread(self.client.get_signing_keys, True)
            except jwt.PyJWTError as exc:
                self.fetched = time.monotonic()
                log.warning("the JWKS at %s could not be read: %s", self.url, exc)
                # Keep the keys we have, if any, rather than refuse everyone.
                self.unreachable = not self.keys
                return
            self.fetched, self.unreachable = time.monotonic(), False
            # Only asymmetric keys: a published HMAC secret would let anyone sign.
            usable = [key for key in keys if not key.algorithm_name.startswith("HS")]
            self.keys = {key.key_id: key for key in usable if key.key_id is not None}


def _public_key(settings: Settings) -> tuple[Any, list[str]]:
    raw = settings.jwt_public_key.strip()
    if not raw.startswith("-----BEGIN"):
        try:
            raw = Path(raw).expanduser().read_text()
        except OSError as exc:
            raise SettingsError(
                f"JWT_PUBLIC_KEY is neither a PEM key nor a readable file: {exc.strerror}"
            ) from None
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise SettingsError(f"{INSTALL} (JWT_PUBLIC_KEY needs cryptography)") from None
    try:
        key = load_pem_public_key(raw.replace("\\n", "\n").encode())
    except ValueError:
        raise SettingsError("JWT_PUBLIC_KEY is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in curves:
            return key, [curves[key.curve.name]]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, ["EdDSA"]
    raise SettingsError("JWT_PUBLIC_KEY must be an RSA, P-256/384/521 or Ed25519 public key")


def make_jwt_backend(settings: Settings) -> JwtBackend:
    if jwt is None:
        raise SettingsError(INSTALL)
    sources = [settings.jwt_secret, settings.jwt_public_key, settings.jwt_jwks_url]
    if sum(bool(source) for source in sources) != 1:
        raise SettingsError(
            "AUTH=jwt needs exactly one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL"
        )
    if settings.jwt_secret:
        if len(settings.jwt_secret) < MIN_SECRET_CHARS:
            raise SettingsError(f"JWT_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return JwtBackend(settings, settings.jwt_secret, ["HS256"])
    if settings.jwt_public_key:
        return JwtBackend(settings, *_public_key(settings))
    if not settings.jwt_jwks_url.startswith(("https://", "http://")):
        raise SettingsError("JWT_JWKS_URL must start with https:// (or http://)")
    if not settings.jwt_audience:
        raise SettingsError(
            "JWT_JWKS_URL needs JWT_AUDIENCE: an identity provider signs tokens for other "
            "applications too"
        )
    return JwksBackend(settings)


def describe_jwt(settings: Settings) -> str:
    if settings.jwt_secret:
        how = "HS256 with JWT_SECRET"
    elif settings.jwt_public_key:
        how = "signed by JWT_PUBLIC_KEY"
    else:
        how = f"signed by a key of {settings.jwt_jwks_url}"
    for name, value in (("audience", settings.jwt_audience), ("issuer", settings.jwt_issuer)):
        if value:
            how += f", {name} {value}"
    return how
