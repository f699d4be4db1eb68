"""Which Redis nodes this process talks to: the primary (the projector, its lease, generations,
the append notices) and the node its queries read (`REDIS_READ_URL`, or a replica found through
Redis Sentinel, or the primary itself).

Every read of one process goes to ONE node: its queries, its change feed and its
read-your-writes waits. A replica applies the projector's batch (documents, checkpoint and the
PUBLISH of its change notice: one script, replicated as one MULTI/EXEC) atomically, so a process
woken by that replica's notice reads that replica at least as new as the notice says. Mixing
nodes (the feed of one, reads from another) would answer early from whichever lags.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.utils import HIREDIS_AVAILABLE

from app.read_model.client import MAX_CONNECTIONS, POOL_WAIT_SECONDS, HiredisPackingConnection
from app.read_model.client import connect as connect_url
from app.settings import Settings

log = logging.getLogger(__name__)


class SentinelHiredisConnection(HiredisPackingConnection, SentinelManagedConnection):
    """A connection to whichever node Sentinel names, packing commands with hiredis."""


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool that waits for a free connection, like `client.connect`'s."""


class PinnedReplicaPool(BlockingSentinelPool):
    """Every connection goes to the same replica (chosen by pid among those Sentinel lists); only
    when it cannot be reached is another chosen, and then every connection to the old one is
    dropped, so the process never reads two nodes at once."""

    pinned: tuple[str, int] | None = None

    async def rotate_slaves(self) -> AsyncIterator[Any]:
        if self.pinned is not None:
            yield self.pinned
        replicas = sorted(await self.sentinel_manager.discover_slaves(self.service_name))
        if replicas:
            start = os.getpid() % len(replicas)
            for replica in replicas[start:] + replicas[:start]:
                await self._pin(replica)
                yield replica
        master = await self.sentinel_manager.discover_master(self.service_name)
        await self._pin(master)  # no replica up: the primary answers reads meanwhile
        yield master

    async def _pin(self, address: Any) -> None:
        address = (str(address[0]), int(address[1]))
        if address != self.pinned:
            if self.pinned is not None:
                log.warning("reads move from redis %s:%d to %s:%d", *self.pinned, *address)
                await self.disconnect(inuse_connections=True)
            self.pinned = address


@dataclass
class Nodes:
    primary: Redis
    reader: Redis
    separate: bool
    """The reader is another node than the primary: waits follow only the reader's feed."""
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        if self.reader is not self.primary:
            await self.reader.aclose()
        await self.primary.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def choose(urls: str, pid: int | None = None) -> str:
    """One of the comma-separated `urls`, the same for the same process id."""
    candidates = [u.strip() for u in urls.split(",") if u.strip()]
    if not candidates:
        raise ValueError("REDIS_READ_URL names no URL")
    key = str(os.getpid() if pid is None else pid).encode()
    return candidates[zlib.crc32(key) % len(candidates)]


def sentinel_addresses(spec: str) -> list[tuple[str, int]]:
    """`host:port,…` as address pairs; a clear error for anything else."""
    addresses = []
    for item in (part.strip() for part in spec.split(",")):
        host, _, port = item.rpartition(":")
        if not item or not host or not port.isdigit():
            raise ValueError(f"REDIS_SENTINELS: {item!r} is not host:port")
        addresses.append((host, int(port)))
    return addresses


def open_nodes(settings: Settings, url: str | None, **options: Any) -> Nodes:
    """The clients of `settings` (`url`: the primary's; with Sentinels, only its credentials,
    database and TLS count, for the nodes Sentinel names)."""
    if settings.redis_sentinels:
        return _through_sentinel(settings, url, **options)
    assert url is not None
    primary = connect_url(url, **options)
    if not settings.redis_read_url:
        return Nodes(primary, primary, separate=False)
    read_url = choose(settings.redis_read_url)
    return Nodes(primary, connect_url(read_url, **options), separate=read_url != url)


def _through_sentinel(settings: Settings, url: str | None, **options: Any) -> Nodes:
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings.redis_sentinels),
        sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
    )
    from_url = parse_url(url) if url else {}
    from_url.pop("host", None)
    from_url.pop("port", None)
    tls = from_url.pop("connection_class", None) is not None  # rediss://
    pooled: dict[str, Any] = {
        "decode_responses": True, "max_connections": MAX_CONNECTIONS,
        "timeout": POOL_WAIT_SECONDS, **from_url, **options,
    }
    if tls:
        pooled["connection_class"] = SentinelManagedSSLConnection
    elif HIREDIS_AVAILABLE:
        pooled["connection_class"] = SentinelHiredisConnection
    else:
        pooled["connection_class"] = SentinelManagedConnection
    service = settings.redis_sentinel_service
    primary = sentinel.master_for(service, connection_pool_class=BlockingSentinelPool, **pooled)
    if settings.redis_sentinel_reads == "primary":
        return Nodes(primary, primary, separate=False, sentinel=sentinel)
    reader = sentinel.slave_for(service, connection_pool_class=PinnedReplicaPool, **pooled)
    return Nodes(primary, reader, separate=True, sentinel=sentinel)
