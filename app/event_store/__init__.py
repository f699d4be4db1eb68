"""The write-side port: an append-only log of events in streams, and its SQL implementation."""
