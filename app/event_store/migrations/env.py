"""Alembic's environment: runs the revisions on the connection `app.event_store.migrations`
hands over, inside the transaction (and lock) it has already taken."""

from __future__ import annotations

from alembic import context

from app.event_store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():  # the caller's transaction: nothing of its own
    context.run_migrations()
