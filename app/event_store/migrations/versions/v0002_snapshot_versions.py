"""Snapshots carry the version of their aggregate's shape; idempotency keys are pruned by age.

Snapshots stored before this revision hold the shape of version 1 (the server default), so they
stay usable. The index on `idempotency_keys.recorded_at` serves the pruning of old keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("snapshots", sa.Column(
        "schema_version", sa.Integer, nullable=False, server_default=sa.text("1")))
    op.create_index("ix_idempotency_keys_recorded_at", "idempotency_keys", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_recorded_at", "idempotency_keys")
    op.drop_column("snapshots", "schema_version")
