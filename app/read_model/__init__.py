"""The Redis read model: key layout, queries, and waiting for the projector to catch up."""
