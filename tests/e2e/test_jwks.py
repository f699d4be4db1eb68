"""JWTs verified with the keys of an OpenID Connect provider's JWKS document (JWT_JWKS_URL),
against the real service and a JWKS server this test runs on localhost.

The provider's keys are RSA keys made here; its document changes during the test as a
provider's does when it rotates keys, and then the provider goes down and comes back.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.e2e.test_auth import CREATE_LOCATION, EVENTS, error_code, graphql, location_input
from tests.harness.server import app_env, free_port, running_server
from tests.harness.ws_support import raw_connect

MIN_REFETCH_SECONDS = 2.0
STATUS = "{ projectionStatus { headPosition } }"
ERRORS_IN_LOG = ('"level": "ERROR"', "Exception in ASGI application", "Traceback")
OCT_SECRET = b"a-symmetric-key-that-must-never-be-trusted-from-a-jwks"


class Provider:
    """A JWKS endpoint on localhost: serves `keys` as a JWKS document and counts the fetches."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.extra: list[dict[str, Any]] = []
        self.fetches = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def document(self) -> bytes:
        keys = [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
                 "kid": kid, "use": "sig", "alg": "RS256"} for kid, key in self.keys.items()]
        return json.dumps({"keys": [*keys, *self.extra]}).encode()

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = provider.document()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no line per fetch on the test's stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: nothing listens on its port any more (connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def provider_running() -> Iterator[Provider]:
    provider = Provider(free_port())
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def signed(key: rsa.RSAPrivateKey, kid: str, sub: str, **claims: Any) -> str:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    return jwt.encode({"sub": sub, "exp": exp, **claims}, key, algorithm="RS256",
                      headers={"kid": kid})


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def answered(body: dict[str, Any]) -> bool:
    """Whether the status query was answered (not refused)."""
    return "errors" not in body and isinstance(body["data"]["projectionStatus"]["headPosition"],
                                                int)


@asynccontextmanager
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        yield http


async def test_keys_rotate_unknown_ids_are_refused_and_an_outage_keeps_the_known_keys(
    tmp_path: Path,
) -> None:
    key_a, key_b, key_c, stranger = new_key(), new_key(), new_key(), new_key()
    with provider_running() as provider:
        provider.keys = {"key-a": key_a}
        # A symmetric key in a public document would let anyone sign: it is never used.
        provider.extra = [{"kty": "oct", "kid": "shared", "use": "sig", "alg": "HS256",
                           "k": base64.urlsafe_b64encode(OCT_SECRET).decode().rstrip("=")}]
        env = {
            "AUTH_MODE": "token", "JWT_JWKS_URL": provider.url,
            "JWT_JWKS_REFRESH_SECONDS": "3600",  # only start-up and unknown key ids fetch here
            "JWT_JWKS_MIN_REFETCH_SECONDS": str(MIN_REFETCH_SECONDS),
            "READ_MODEL_WAIT_SECONDS": "5",
        }
        with running_server(tmp_path, extra_env=env) as server:
            async with client(server.base_url) as http:
                # The published key verifies; its roles hold.
                token_a = signed(key_a, "key-a", "alice", roles=["reader"])
                assert answered(await graphql(http, STATUS, token_a))
                assert error_code(await graphql(
                    http, CREATE_LOCATION, token_a, input=location_input(1)
                )) == "FORBIDDEN"
                forged = jwt.encode(
                    {"sub": "mallory", "roles": ["writer"],
                     "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)},
                    OCT_SECRET, algorithm="HS256", headers={"kid": "shared"},
                )
                assert error_code(await graphql(http, STATUS, forged)) == "UNAUTHENTICATED"
                # The right key id with another key's signature.
                impostor = signed(stranger, "key-a", "mallory", roles=["writer"])
                assert error_code(await graphql(http, STATUS, impostor)) == "UNAUTHENTICATED"

                # Unknown key ids are refused, and a burst of them costs the provider at most
                # one fetch.
                before = provider.fetches
                unknown = await asyncio.gather(*(
                    graphql(http, STATUS, signed(stranger, f"made-up-{uuid.uuid4()}", "m"))
                    for _ in range(20)
                ))
                assert {error_code(body) for body in unknown} == {"UNAUTHENTICATED"}
                assert provider.fetches - before <= 1

                # Rotation: key-b appears, key-a is withdrawn. The first token naming key-b
                # makes the service fetch the document again (once the refetch interval since
                # the last fetch has passed), and then writes as its subject.
                provider.keys = {"key-b": key_b}
                await asyncio.sleep(MIN_REFETCH_SECONDS)
                before = provider.fetches
                token_b = signed(key_b, "key-b", "bob", roles=["writer"])
                created = await graphql(http, CREATE_LOCATION, token_b, input=location_input(2))
                assert created["data"]["createLocation"]["location"] == {"id": 2}
                assert provider.fetches == before + 1
                (event,) = (await graphql(http, EVENTS, token_b))["data"]["events"]
                assert event["actor"] == "bob"
                assert error_code(await graphql(http, STATUS, token_a)) == "UNAUTHENTICATED"
                socket = await raw_connect(server.ws_url, payload={"token": token_b})
                await socket.close()

                # The provider goes down: the key held still verifies; a new key id cannot be
                # fetched and is refused, not answered with an error of the server's own.
                provider.stop()
                await asyncio.sleep(MIN_REFETCH_SECONDS)
                token_c = signed(key_c, "key-c", "carol", roles=["reader"])
                assert error_code(await graphql(http, STATUS, token_c)) == "UNAUTHENTICATED"
                assert answered(await graphql(http, STATUS, token_b))

                # It comes back with key-c: key-c verifies.
                provider.keys = {"key-b": key_b, "key-c": key_c}
                provider.start()
                await asyncio.sleep(MIN_REFETCH_SECONDS)
                assert answered(await graphql(http, STATUS, token_c))
    log = server.log_path.read_text()
    assert "the keys could not be fetched" in log
    assert not [marker for marker in ERRORS_IN_LOG if marker in log], log[-3000:]


def test_a_jwks_url_other_than_http_is_refused_at_start(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())], cwd=tmp_path,
        env=app_env(tmp_path, extra={"AUTH_MODE": "token", "JWT_JWKS_URL": "file:///etc/passwd"}),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("python -m app serve: JWT_JWKS_URL: "), refused.stderr
