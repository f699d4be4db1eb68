"""The tables as the service made them before it had migrations; adopts such a database.

A database made by that code has the tables but no `alembic_version`: each table that exists
already is checked to have the columns that code gave it and left as it is, the others are
created. The DDL here is frozen: later changes are later revisions, never edits of this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import SchemaItem

from app.event_store.migrations import SchemaError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _events() -> list[SchemaItem]:
    return [
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
    ]


def _streams() -> list[SchemaItem]:
    return [
        sa.Column("stream_id", sa.String(200), primary_key=True),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("number", BigInt, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    ]


def _idempotency_keys() -> list[SchemaItem]:
    return [
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("command", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("result", Json, nullable=False),
        sa.Column("commit_position", BigInt, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _snapshots() -> list[SchemaItem]:
    return [
        sa.Column("stream_id", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", Json, nullable=False),
    ]


def _personal_data_keys() -> list[SchemaItem]:
    return [
        sa.Column("stream_id", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
    ]


TABLES = {
    "events": _events,
    "streams": _streams,
    "idempotency_keys": _idempotency_keys,
    "snapshots": _snapshots,
    "personal_data_keys": _personal_data_keys,
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, items in TABLES.items():
        if name not in existing:
            op.create_table(name, *items())
            continue
        expected = {item.name for item in items() if isinstance(item, sa.Column)}
        found = {column["name"] for column in inspector.get_columns(name)}
        if found != expected:
            raise SchemaError(
                f"table {name!r} exists with columns {sorted(found)}, not {sorted(expected)}: "
                "this database was not made by this service"
            )
    if "ix_streams_category_number" not in {
        index["name"] for index in sa.inspect(op.get_bind()).get_indexes("streams")
    }:
        op.create_index("ix_streams_category_number", "streams", ["category", "number"])


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
