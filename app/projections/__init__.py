"""Read-side projections: pure functions from events to read-model documents; the projector."""
