"""PostgreSQL group commit in one round trip: one call of the server-side function `append_group`.

Why: the append lock serialises every writer process, and a group used to hold it across six
statements (lock, versions, head, insert events, update streams, commit), each a round trip. Here
the group is planned in Python (`plan`, app/event_store/group_commit.py) before any round trip, on
assumptions the function checks under the lock: each stream is at the version the group's first
request naming it expects, none of the group's idempotency keys is recorded, no stream of a sealed
event has a personal-data key. The events and idempotency records go as one JSON document each
(orjson encodes a group faster than asyncpg encodes an array per column), the rest as arrays.
When the assumptions hold (the common case) the function takes positions from the head, writes
the events, keys, stream versions and idempotency records, and returns the head it started from
(`Plan.placed` moves the plan there): one statement in its own transaction, so no BEGIN or
COMMIT round trip either; asyncpg prepares it once per connection. When they do not (a conflict,
a retried command, a key), it writes nothing and returns what is stored; the writer then takes
the lock in a transaction, plans again on that and calls again, so `plan` still decides every
request in order, from the stored state, exactly as on SQLite.
A PL/pgSQL function rather than one statement: each statement in it takes its snapshot after the
lock was granted, so it sees the previous group's commit.

Two groups may be written at once (`GroupCommitStore._pipeline`), each on its own connection:
the second waits for the lock in the database while the first is written, and the commands the
first answers run in Python meanwhile. The writers keep their connections between groups: the
pool's pre-ping costs three round trips. A connection idle longer than `IDLE_SECONDS` is returned
and a pinged one checked out, so a restarted server is noticed before a write.
`APPEND_FUNCTION` is the DDL, created by migration 0003 (app/event_store/migrations/versions/):
a change to it is a new revision.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain.schema import ERASURE, PERSONAL_FIELDS
from app.event_store.base import IdempotencyRecord, split_stream_id
from app.event_store.group_commit import (
    Plan,
    Request,
    expected_streams,
    idempotency_keys,
    plan,
)
from app.event_store.keys import Sealer, erased_streams, streams_needing_keys

APPEND_LOCK_KEY = 0x45_56_45_4E_54  # the PostgreSQL advisory lock that serialises appends
IDLE_SECONDS = 1.0  # a writer connection idle longer is pinged (checked out again) before use

APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION append_group(
    p_now timestamptz,
    p_streams text[], p_versions int[],
    p_commands text[], p_known text[],
    p_keyed text[], p_keys text[],
    p_events text, p_records text,
    k_stream text[], k_key text[],
    s_stream text[], s_category text[], s_number bigint[], s_version int[]
) RETURNS TABLE (o_head bigint, o_at timestamptz, o_versions text, o_known text, o_keys text)
LANGUAGE plpgsql AS $fn$
DECLARE
    head bigint;
    at timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    IF EXISTS (SELECT FROM unnest(p_streams, p_versions) AS x(stream_id, version)
               LEFT JOIN streams s ON s.stream_id = x.stream_id
               WHERE coalesce(s.version, 0) <> x.version)
       OR EXISTS (SELECT i.key FROM idempotency_keys i WHERE i.key = ANY(p_commands)
                  EXCEPT SELECT unnest(p_known))
       OR EXISTS (SELECT unnest(p_known)
                  EXCEPT SELECT i.key FROM idempotency_keys i WHERE i.key = ANY(p_known))
       OR EXISTS (SELECT FROM unnest(p_keyed, p_keys) AS x(stream_id, key)
                  LEFT JOIN personal_data_keys k ON k.stream_id = x.stream_id
                  WHERE k.key IS DISTINCT FROM x.key)
    THEN
        RETURN QUERY SELECT NULL::bigint, NULL::timestamptz,
            (SELECT coalesce(jsonb_object_agg(s.stream_id, s.version), '{{}}')::text
             FROM streams s WHERE s.stream_id = ANY(p_streams)),
            (SELECT coalesce(jsonb_agg(jsonb_build_array(i.key, i.command, i.fingerprint,
                                                         i.result, i.commit_position)), '[]')::text
             FROM idempotency_keys i WHERE i.key = ANY(p_commands)),
            (SELECT coalesce(jsonb_object_agg(k.stream_id, k.key), '{{}}')::text
             FROM personal_data_keys k WHERE k.stream_id = ANY(p_keyed));
        RETURN;
    END IF;
    SELECT e.position, e.recorded_at INTO head, at FROM events e ORDER BY e.position DESC LIMIT 1;
    head := coalesce(head, 0);
    at := greatest(p_now, at);
    INSERT INTO personal_data_keys (stream_id, key) SELECT * FROM unnest(k_stream, k_key);
    INSERT INTO events (position, stream_id, version, type, schema_version, data, metadata,
                        recorded_at, commit_position)
    SELECT head + x.position, x.stream_id, x.version, x.type, x.schema_version, x.data,
           x.metadata, at, head + x.commit_position
    FROM jsonb_to_recordset(p_events::jsonb)
         AS x(position bigint, stream_id text, version int, type text, schema_version int,
              data jsonb, metadata jsonb, commit_position bigint);
    INSERT INTO streams (stream_id, category, number, version)
    SELECT * FROM unnest(s_stream, s_category, s_number, s_version)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;
    INSERT INTO idempotency_keys (key, command, fingerprint, result, commit_position, recorded_at)
    SELECT x.key, x.command, x.fingerprint, x.result, head + x.commit_position, at
    FROM jsonb_to_recordset(p_records::jsonb)
         AS x(key text, command text, fingerprint text, result jsonb, commit_position bigint);
    RETURN QUERY SELECT head, at, NULL::text, NULL::text, NULL::text;
END
$fn$
"""
"""Check a group's assumptions under the append lock; if they hold, write it and return the
head it was placed after, else return the stored versions, idempotency records and keys."""

CALL = "SELECT * FROM append_group(" + ", ".join(f"${n}" for n in range(1, 16)) + ")"
LOCK = sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK_KEY))
Erase = Callable[[AsyncConnection, str], Awaitable[None]]


@dataclass
class Stored:
    """What a plan rests on: the group's streams' versions (absent: 0), its idempotency keys
    already recorded, and the personal-data keys of its streams with sealed events."""

    versions: dict[str, int] = field(default_factory=dict)
    known: dict[str, IdempotencyRecord] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def assumed(group: list[Request]) -> Stored:
    """The likely state: each stream at the version its first request expects, nothing else."""
    versions: dict[str, int] = {}
    for request in group:
        for stream_id, version in request.expected.items():
            versions.setdefault(stream_id, version)
    return Stored({s: v for s, v in versions.items() if v})


def sealed_streams(group: list[Request]) -> list[str]:
    return list({e.stream_id: None for r in group for e in r.events if e.type in PERSONAL_FIELDS})


def stored_state(row: Any) -> Stored:
    """The state a stale call returned."""
    return Stored(
        orjson.loads(row["o_versions"]),
        {r[0]: IdempotencyRecord(r[0], r[1], r[2], r[3], r[4])
         for r in orjson.loads(row["o_known"])},
        orjson.loads(row["o_keys"]),
    )


class PgAppender:
    """Writes groups through `append_group` on connections it keeps between groups."""

    def __init__(self, engine: AsyncEngine, sealer: Sealer, erase: Erase) -> None:
        self._engine = engine
        self._sealer = sealer
        self._erase = erase
        self._kept: list[tuple[AsyncConnection, float]] = []  # idle, with when each was last used

    async def write(self, group: list[Request]) -> Plan:
        """Plan and write `group`: one round trip unless an assumption failed or it erases.
        Two groups may be written at once (`GroupCommitStore._pipeline`), each on its own
        connection; the append lock orders them in the database."""
        conn = await self._connection()
        try:
            written = await self._write(conn, group)
        except BaseException:
            # The next group takes a fresh (pinged) connection: this one may be lost, and so may
            # the other kept one (a restarted server dropped both), which would fail a group too.
            dropped, self._kept = [conn, *(kept for kept, _ in self._kept)], []
            for lost in dropped:
                with contextlib.suppress(Exception):
                    await lost.invalidate()
                with contextlib.suppress(Exception):  # the pool gets its slot back
                    await lost.close()
            raise
        self._kept.append((conn, time.monotonic()))
        return written

    async def _write(self, conn: AsyncConnection, group: list[Request]) -> Plan:
        raw = (await conn.get_raw_connection()).driver_connection
        stored = assumed(group)
        if not any(e.type == ERASURE for r in group for e in r.events):
            reply = await self._call(raw, group, stored)
            if isinstance(reply, Plan):
                return reply
            stored = reply
        async with conn.begin():
            await conn.execute(LOCK)  # held to the commit: the state seen next stays true
            for _ in range(2):
                reply = await self._call(raw, group, stored)
                if isinstance(reply, Plan):
                    for stream_id in erased_streams(reply.rows):
                        await self._erase(conn, stream_id)
                    return reply
                stored = reply
        raise RuntimeError("append_group found the state changed under the append lock")

    async def close(self) -> None:
        while self._kept:
            await self._kept.pop()[0].close()

    async def _connection(self) -> AsyncConnection:
        """A kept connection used within `IDLE_SECONDS`, else a pinged one from the pool."""
        while self._kept:
            conn, used = self._kept.pop()
            if time.monotonic() - used <= IDLE_SECONDS:
                return conn
            await conn.close()
        return await self._engine.connect()

    async def _call(self, raw: Any, group: list[Request], stored: Stored) -> Plan | Stored:
        """One call of `append_group` for `group` planned on `stored`: the plan as written
        (positions after the head), or the stored state when `stored` was wrong."""
        decided = plan(group, dict(stored.known), stored.versions, None)
        needing = streams_needing_keys(decided.rows)  # as SQLite's path: only those look keys up
        sealed, new_keys = self._sealer.seal(
            decided.rows, {s: stored.keys[s] for s in needing if s in stored.keys})
        row = await raw.fetchrow(CALL, *arguments(group, stored, decided, sealed, new_keys))
        if row["o_head"] is None:
            return stored_state(row)
        return decided.placed(row["o_head"], row["o_at"])


def arguments(
    group: list[Request], stored: Stored, decided: Plan, sealed: list[dict[str, Any]],
    new_keys: list[tuple[str, str]],
) -> list[Any]:
    """`append_group`'s parameters: the assumptions, the events and idempotency records as JSON
    (one document each: cheaper to encode than an array per column), the keys and streams."""
    streams, keyed, changed = expected_streams(group), sealed_streams(group), decided.changed()
    return [
        dt.datetime.now(dt.UTC),
        streams, [stored.versions.get(s, 0) for s in streams],
        idempotency_keys(group), list(stored.known),
        keyed, [stored.keys.get(s) for s in keyed],
        orjson.dumps(sealed).decode(), orjson.dumps(decided.command_rows).decode(),
        [s for s, _ in new_keys], [k for _, k in new_keys],
        changed, [split_stream_id(s)[0] for s in changed], [split_stream_id(s)[1] for s in changed],
        [decided.after[s] for s in changed],
    ]
