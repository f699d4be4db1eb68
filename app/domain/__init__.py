"""The pure, synchronous write-side model: events, commands, aggregates and their rules."""
