"""In-process tests against real SQLite, PostgreSQL, Valkey and Redis."""
