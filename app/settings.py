"""Settings from the environment and a `.env` file; every name is documented in
docs/operations.md."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/events.db"
    redis_url: str | None = None
    """Unset: an embedded Valkey server is started with its data under `var_dir`/valkey."""
    redis_read_url: str = ""
    """Replicas queries, the change feed, read-your-writes waits and subscriptions read from
    (comma-separated; each process keeps to one). Unset: they read `redis_url`."""
    redis_sentinels: str = ""
    """`host:port,…` of Redis Sentinels: the primary (and replicas) are found through them and
    followed across failovers; `redis_url`, if set, then gives only the nodes' credentials,
    database and TLS (`rediss://`), not their address."""
    redis_sentinel_service: str = "mymaster"
    """The name the Sentinels monitor the primary under."""
    redis_sentinel_reads: Literal["replica", "primary"] = "replica"
    """With Sentinels: whether queries read from a replica (one per process) or the primary."""
    ready_max_lag_events: int = 0
    """/readyz answers 503 while the read model this process reads is more than this many
    events behind the store's head (0: no bound)."""
    redis_prefix: str = "cqrs"
    var_dir: Path = Path("var")
    read_model_wait_seconds: float = 5.0
    command_max_retries: int = 10
    idempotency_ttl: float = 24 * 3600.0
    """Seconds an idempotency key is remembered; older ones are pruned by serving processes
    (0: kept forever)."""
    projector_batch_size: int = 500
    projector_poll_seconds: float = 1.0
    leader_lease_seconds: float = 3.0
    """A standby projector takes over at most this long after the active one died."""
    rebuild_grace_seconds: float = 10.0
    """A retired read-model generation is deleted this long after the switch."""
    damage_check_seconds: float = 5.0
    """How often the active projector audits the read model for lost keys."""
    snapshot_every: int = 100
    sqlite_direct: bool = True
    """SQLite files: appends and reads on sqlite3 threads; false: everything via aiosqlite."""
    aggregate_cache_size: int = 10_000
    """Aggregates each process remembers between commands (0: load every one from the store)."""
    document_cache_size: int = 100_000
    """Current documents each API process keeps, fed by the change feed (0: off)."""
    gc_threshold: int = 20_000
    """Allocations between the garbage collector's young-generation passes in `serve`,
    `project` and `rebuild` processes, which also freeze their start-up heap (Python's default:
    700); 0 keeps the interpreter's defaults."""
    run_projector: bool = True
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    """auto: readable lines on a terminal, one JSON object per line otherwise."""
    log_json: bool | None = None
    """The older switch: when set and LOG_FORMAT is auto, true means json, false console."""
    max_page_size: int = 500
    subscription_queue_size: int = 1000
    graphiql: bool = True
    """GraphiQL at GET /graphql for browsers, from the service's own files; false: not served."""
    spa_dir: Path = Path(__file__).resolve().parent.parent / "frontend-example" / "dist"
    """The built frontend-example SPA, served at `/` by `serve` when this folder exists."""
    # Abuse limits (see docs/security.md).
    max_query_depth: int = 12
    max_query_tokens: int = 2000
    max_aliases: int = 100
    """Not 30: existing clients (the subscription tests' big query) use 60 aliases."""
    max_query_cost: int = 50_000
    """The most an operation may cost by the estimate of app/schema/cost.py (0: no limit)."""
    max_body_bytes: int = 1024 * 1024
    max_ws_message_bytes: int = 1024 * 1024
    """A larger websocket message closes its socket with 1009 (uvicorn's `ws_max_size`)."""
    max_header_bytes: int = 16 * 1024
    """A larger request head is answered 431 (app/web/http_protocol.py)."""
    header_timeout_seconds: float = 10.0
    """A connection whose request head is not complete in this time is closed (0: no limit)."""
    request_timeout_seconds: float = 30.0
    ws_init_timeout_seconds: float = 10.0
    max_subscriptions_per_connection: int = 50
    introspection: bool = True
    allowed_hosts: str = ""
    """Host names requests may name (comma-separated, `*.example.com`, `*` for any). Unset: the
    host `serve --host` binds to and the loopback names (app/web/hosts.py)."""
    cors_origins: str = ""
    """Origins allowed cross-origin (HTTP CORS and browser websockets): comma-separated or JSON."""
    # Authentication (see docs/security.md).
    auth_mode: Literal["none", "token"] = "none"
    api_keys: str = ""
    """`secret:role[:name],...` or JSON `{"secret": "role"}` / `{"secret": {"role", "name"}}`."""
    actor_name_secret: str | None = None
    """The HMAC key that names API keys given without a name; unset, every key needs a name."""
    jwt_secret: str | None = None
    """HS256 shared secret."""
    jwt_public_key: str | None = None
    """RS256 public key (PEM)."""
    jwt_jwks_url: str | None = None
    """An OpenID Connect provider's JWKS document (http(s)): RS/ES/EdDSA keys chosen by `kid`."""
    jwt_jwks_refresh_seconds: float = 300.0
    """How often the JWKS is fetched again (keys rotated in or out)."""
    jwt_jwks_min_refetch_seconds: float = 10.0
    """The least time between two fetches of the JWKS caused by tokens naming unknown keys."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    def sqlite_path(self) -> Path | None:
        """The SQLite file of `database_url`, if it names one."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            return Path(self.database_url.removeprefix(prefix).split("?")[0])
        return None
