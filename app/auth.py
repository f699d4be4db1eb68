"""Authentication (static API keys and JWTs) and the roles every operation needs.

With AUTH_MODE=none everybody is an anonymous writer. With AUTH_MODE=token a request carries
`Authorization: Bearer <token>` (a websocket: its connection_init payload `{"Authorization":
"Bearer <token>"}` or `{"token": "<token>"}`); the token is one of API_KEYS or a JWT signed with
JWT_SECRET (HS256), JWT_PUBLIC_KEY (RS256) or the key of JWT_JWKS_URL its `kid` names
(app/jwks.py), whose `roles` (list or string) or `scope` (space separated) claim lists
`reader` / `writer` / `admin`. `writer` implies `reader`; `admin` implies both and alone may
erase personal data (`forgetEmployee`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.jwks import JwksKeys
from app.settings import Settings

READER, WRITER, ADMIN = "reader", "writer", "admin"
ROLES = (READER, WRITER, ADMIN)
IMPLIED = {READER: (READER, WRITER, ADMIN), WRITER: (WRITER, ADMIN), ADMIN: (ADMIN,)}
"""Per role, the roles that grant it."""
EXPIRED = "The token has expired."


class AuthError(Exception):
    """A request that is not authenticated (code UNAUTHENTICATED) or not allowed (FORBIDDEN)."""

    def __init__(self, message: str, code: str = "UNAUTHENTICATED") -> None:
        super().__init__(message)
        self.message, self.code = message, code


class UnknownKeyId(AuthError):
    """A JWT whose `kid` names none of JWT_JWKS_URL's keys as held now: invalid, unless the key
    set fetched again holds it (`Authenticator.fetching_keys`)."""

    def __init__(self, kid: str) -> None:
        super().__init__("Invalid token.")
        self.kid = kid


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: `name` is recorded as the actor of every event they cause.

    `expires_at` is its JWT's `exp` (seconds since the epoch): an open websocket outlives the
    token it was opened with, so every operation and the socket itself check it again. API keys
    (and the anonymous principal) never expire.
    """

    name: str | None
    roles: frozenset[str]
    expires_at: float | None = None

    def allows(self, role: str) -> bool:
        return any(granting in self.roles for granting in IMPLIED[role])

    def expired(self, now: float) -> bool:
        """Whether its token has expired at `now` (as PyJWT decides: from `exp` on)."""
        return self.expires_at is not None and now >= self.expires_at


ANONYMOUS = Principal(None, frozenset(ROLES))


def _role(value: Any, entry: int) -> str:
    if value not in ROLES:
        raise ValueError(f"API_KEYS: the role of entry {entry} must be reader, writer or admin, "
                         f"not {value!r}")
    return str(value)


MIN_NAME_SECRET_CHARS = 16


def key_name(secret: str, name_secret: str) -> str:
    """The actor name of a key given without one: recorded in events, it must not let anyone
    test guessed keys against it, so it is an HMAC under ACTOR_NAME_SECRET, not a plain hash."""
    digest = hmac.new(name_secret.encode(), secret.encode(), hashlib.sha256).hexdigest()
    return "key-" + digest[:16]


def parse_api_keys(text: str, name_secret: str | None = None) -> dict[str, Principal]:
    """`secret:role[:name],...` or a JSON object `{secret: role | {"role", "name"}}`.

    A key without a name is named by `key_name` under `name_secret`; without one such keys are
    refused: a name made up per process or per host would not stay the same actor."""
    text = text.strip()
    entries: list[tuple[str, Any, Any]] = []
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("API_KEYS must be a JSON object")
        for secret, spec in loaded.items():
            entry = spec if isinstance(spec, Mapping) else {"role": spec}
            entries.append((secret, entry.get("role"), entry.get("name")))
    elif text:
        for item in text.split(","):
            secret, _, rest = item.strip().partition(":")
            role, _, name = rest.partition(":")
            entries.append((secret, role, name))
    keys: dict[str, Principal] = {}
    for number, (secret, role, name) in enumerate(entries, start=1):
        if not secret:
            raise ValueError(f"API_KEYS: entry {number} has an empty key")
        if name:
            actor = str(name)
        elif name_secret is not None:
            actor = key_name(secret, name_secret)
        else:
            raise ValueError(
                f"API_KEYS: entry {number} has no name; name it (`key:role:name`) or set "
                "ACTOR_NAME_SECRET, under which unnamed keys get a name that does not reveal them"
            )
        keys[secret] = Principal(actor, frozenset([_role(role, number)]))
    return keys


def parse_origins(text: str) -> list[str]:
    """CORS_ORIGINS: comma-separated or a JSON list."""
    text = text.strip()
    if text.startswith("["):
        return [str(origin) for origin in json.loads(text)]
    return [origin.strip() for origin in text.split(",") if origin.strip()]


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_mode == "token"
        name_secret = settings.actor_name_secret
        if name_secret is not None and len(name_secret) < MIN_NAME_SECRET_CHARS:
            raise ValueError(f"ACTOR_NAME_SECRET must be at least {MIN_NAME_SECRET_CHARS} "
                             "characters long")
        self.keys = parse_api_keys(settings.api_keys, name_secret) if self.enabled else {}
        self.audience, self.issuer = settings.jwt_audience, settings.jwt_issuer
        self.jwt_keys: list[tuple[str, str]] = []
        if settings.jwt_secret:
            self.jwt_keys.append(("HS256", settings.jwt_secret))
        if settings.jwt_public_key:
            self.jwt_keys.append(("RS256", settings.jwt_public_key.replace("\\n", "\n")))
        self.jwks = JwksKeys(
            settings.jwt_jwks_url, settings.jwt_jwks_refresh_seconds,
            settings.jwt_jwks_min_refetch_seconds,
        ) if self.enabled and settings.jwt_jwks_url else None
        if self.enabled and not self.keys and not self.jwt_keys and self.jwks is None:
            raise ValueError(
                "AUTH_MODE=token needs API_KEYS, JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL"
            )

    async def fetching_keys(self, authenticate: Callable[[], Principal]) -> Principal:
        """`authenticate()` (from_header, from_connection_params or from_token), once more
        after fetching JWT_JWKS_URL's keys when the token names a key id not held yet (a key
        rotated in). Those methods never do I/O, so that callers on the event loop can use
        them; the fetch is awaited here (app/jwks.py, on a thread)."""
        try:
            return authenticate()
        except UnknownKeyId as unknown:
            if self.jwks is None or not await self.jwks.fetch_unknown(unknown.kid):
                raise
        return authenticate()

    def from_header(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization` header value (anonymous when auth is off)."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise AuthError("Authentication required: send Authorization: Bearer <token>.")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("The Authorization header must be `Bearer <token>`.")
        return self.from_token(token.strip())

    def from_connection_params(self, params: Mapping[str, Any] | None) -> Principal:
        """The principal of a websocket connection_init payload."""
        if not self.enabled:
            return ANONYMOUS
        params = params or {}
        token = params.get("token")
        if isinstance(token, str) and token:
            return self.from_token(token)
        for name, value in params.items():
            if name.lower() == "authorization" and isinstance(value, str):
                return self.from_header(value)
        raise AuthError("Authentication required: connection_init needs a token.")

    def from_token(self, token: str) -> Principal:
        for secret, principal in self.keys.items():
            if hmac.compare_digest(secret.encode(), token.encode()):
                return principal
        if (self.jwt_keys or self.jwks is not None) and token.count(".") == 2:
            return self._from_jwt(token)
        raise AuthError("Invalid token.")

    def _keys_for(self, token: str) -> Iterator[tuple[str, Any]]:
        """The (algorithm, key) pairs that may have signed `token`, in order: JWT_SECRET,
        JWT_PUBLIC_KEY, then the JWKS key its `kid` names. Lazy: a `kid` that names no key held
        raises UnknownKeyId only when the static keys did not verify the token."""
        yield from self.jwt_keys
        if self.jwks is None:
            return
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            return
        if not isinstance(kid, str):  # a JWKS key is chosen by the id the token names
            return
        key = self.jwks.get(kid)
        if key is None:
            raise UnknownKeyId(kid)
        yield key.algorithm_name, key.key

    def _from_jwt(self, token: str) -> Principal:
        claims: dict[str, Any] | None = None
        for algorithm, key in self._keys_for(token):
            try:
                claims = jwt.decode(
                    token, key, algorithms=[algorithm], audience=self.audience,
                    issuer=self.issuer,
                    options={"require": ["exp"], "verify_aud": self.audience is not None},
                )
                break
            except jwt.ExpiredSignatureError:
                raise AuthError(EXPIRED) from None
            except jwt.InvalidTokenError:
                continue
        if claims is None:
            raise AuthError("Invalid token.")
        raw = claims.get("roles", claims.get("scope", ""))
        names = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = frozenset(str(r) for r in names if r in ROLES)
        subject = claims.get("sub")
        return Principal(
            str(subject) if subject is not None else None, roles,
            float(int(claims["exp"])),  # as PyJWT read it when it checked it
        )
