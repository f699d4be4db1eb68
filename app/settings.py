"""Settings from the environment and a `.env` file; every name is documented in the README."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/events.db"
    redis_url: str | None = None
    """Unset: an embedded Valkey server is started with its data under `var_dir`/valkey."""
    redis_prefix: str = "cqrs"
    var_dir: Path = Path("var")
    read_model_wait_seconds: float = 5.0
    command_max_retries: int = 10
    projector_batch_size: int = 500
    projector_poll_seconds: float = 1.0
    snapshot_every: int = 100
    run_projector: bool = True
    log_level: str = "INFO"
    log_json: bool = True
    max_page_size: int = 500
    subscription_queue_size: int = 1000
    spa_dir: Path = Path(__file__).resolve().parent.parent / "frontend-example" / "dist"
    """The built frontend-example SPA, served at `/` by `serve` when this folder exists."""

    def sqlite_path(self) -> Path | None:
        """The SQLite file of `database_url`, if it names one."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            return Path(self.database_url.removeprefix(prefix).split("?")[0])
        return None
