"""The signing keys an OpenID Connect provider publishes (JWT_JWKS_URL), held in memory by key id.

Tokens are checked against the keys held, without I/O. The set is fetched with PyJWT's
`PyJWKClient` (which parses it and keeps the signing keys), on a thread, since its urllib
request blocks: when the service starts, every JWT_JWKS_REFRESH_SECONDS, and when a token names
a key id that is not held (a key rotated in). Those last fetches happen one at a time and at
most once per JWT_JWKS_MIN_REFETCH_SECONDS, so tokens with made-up key ids cannot make the
service hammer the provider or fill its threads.

The copy is ours rather than the client's own cache because of what an outage must do: a failed
fetch keeps the keys already held, so while the provider is down, tokens signed with known keys
still verify. A fetched set replaces the held one whole: a key the provider stopped publishing
is refused from then on. Symmetric (`oct`) keys are never taken from it: an OIDC provider signs
with private keys, and a public document's secret would let anyone sign.
"""

from __future__ import annotations

import asyncio
import logging
import math

import jwt
from jwt import PyJWK, PyJWKClient

log = logging.getLogger("app.auth")

FETCH_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_FAILURE_SECONDS = 1.0  # at least: also never sooner than the refetch interval
ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


class JwksKeys:
    """JWT_JWKS_URL's signing keys by key id (see the module's docstring)."""

    def __init__(self, url: str, refresh_seconds: float, min_refetch_seconds: float) -> None:
        try:
            self.client = PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT_SECONDS)
        except jwt.PyJWKClientError as error:  # not an http(s) URL
            raise ValueError(f"JWT_JWKS_URL: {error}") from None
        if refresh_seconds <= 0 or min_refetch_seconds < 0:
            raise ValueError("JWT_JWKS_REFRESH_SECONDS must be positive and "
                             "JWT_JWKS_MIN_REFETCH_SECONDS not negative")
        self.refresh_seconds, self.min_refetch_seconds = refresh_seconds, min_refetch_seconds
        self.keys: dict[str, PyJWK] = {}
        self._fetching: asyncio.Task[bool] | None = None
        self._last_fetch = -math.inf  # the event loop's clock when the last fetch began

    def get(self, kid: str) -> PyJWK | None:
        """The key `kid` names, as held now (no I/O)."""
        return self.keys.get(kid)

    async def fetch_unknown(self, kid: str) -> bool:
        """Whether `kid` is held after fetching the set again for it, when a fetch is allowed
        now (one is under way, or the last began at least the refetch interval ago)."""
        if kid in self.keys:
            return True
        since = asyncio.get_running_loop().time() - self._last_fetch
        if self._fetching is None and since < self.min_refetch_seconds:
            return False
        await self._fetch()
        return kid in self.keys

    async def keep_fresh(self) -> None:
        """The background task: fetch at once, then every refresh interval (sooner again after
        a failure)."""
        while True:
            fetched = await self._fetch()
            await asyncio.sleep(self.refresh_seconds if fetched else max(
                self.min_refetch_seconds, RETRY_AFTER_FAILURE_SECONDS
            ))

    async def _fetch(self) -> bool:
        """Fetch the set, or wait for the fetch under way; whether it succeeded. A waiter that
        is cancelled (its request's deadline) leaves the fetch running for the others."""
        if self._fetching is None:
            self._last_fetch = asyncio.get_running_loop().time()
            self._fetching = asyncio.create_task(self._fetch_once(), name="jwks-fetch")
            self._fetching.add_done_callback(self._fetched)
        return await asyncio.shield(self._fetching)

    def _fetched(self, task: asyncio.Task[bool]) -> None:
        if self._fetching is task:
            self._fetching = None

    async def _fetch_once(self) -> bool:
        try:
            published = await asyncio.to_thread(self.client.get_signing_keys, True)
        except (jwt.PyJWTError, OSError, ValueError) as error:  # unreachable, not a key set
            log.warning("JWT_JWKS_URL: the keys could not be fetched (%s); keeping the %d held",
                        error, len(self.keys))
            return False
        keys = {key.key_id: key for key in published
                if isinstance(key.key_id, str) and key.key_type in ASYMMETRIC_KEY_TYPES}
        if keys.keys() != self.keys.keys():
            log.info("JWT_JWKS_URL: signing keys %s", ", ".join(sorted(keys)) or "none")
        self.keys = keys
        return True
