"""PostgreSQL: `append_group`, the function that writes a group commit in one round trip
(app/event_store/pg_append.py). Nothing on SQLite, whose appends run in-process.

The function's text is the one `pg_append.py` calls. A change to it is a new revision that runs
`APPEND_FUNCTION` again (`CREATE OR REPLACE`); a change of its parameters also drops the old
signature first, which would otherwise stay beside the new one.
"""

from __future__ import annotations

from alembic import op

from app.event_store.pg_append import APPEND_FUNCTION

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS append_group")
