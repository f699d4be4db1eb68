"""The SQL schema of the event store, shared by SQLite and PostgreSQL: the tables as the newest
migration (app/event_store/migrations/) leaves them, which the adapters' queries are built on."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

# SQLite only aliases the rowid for a column declared exactly INTEGER PRIMARY KEY.
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", BigInt, primary_key=True, autoincrement=False),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("commit_position", BigInt, nullable=False),
    sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
)

streams = sa.Table(
    "streams",
    metadata,
    sa.Column("stream_id", sa.String(200), primary_key=True),
    sa.Column("category", sa.String(100), nullable=False),
    sa.Column("number", BigInt, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_streams_category_number", "category", "number"),
)

commands = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("command", sa.String(100), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("result", Json, nullable=False),
    sa.Column("commit_position", BigInt, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_idempotency_keys_recorded_at", "recorded_at"),  # pruning by age
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("stream_id", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", Json, nullable=False),
    # The shape of `state` (app/service/repository.py); rows stored before it existed hold 1.
    sa.Column("schema_version", sa.Integer, nullable=False, server_default=sa.text("1")),
)

personal_data_keys = sa.Table(
    "personal_data_keys",
    metadata,
    sa.Column("stream_id", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(64), nullable=False),
)
"""One AES-256 key (hex) per stream holding personal data (app/event_store/keys.py): deleting
its row is the erasure of that stream's personal data."""
