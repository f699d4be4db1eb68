"""What the test tiers share: the service in subprocesses (`server`) started from a clean
environment (`environment`), a whole deployment with fault injection (`cluster`),
GraphQL-over-websocket clients (`ws_support`), read-side scenario helpers
(`projection_support`) and a headless Chromium (`browser`)."""
