"""The environment app processes are started with (tests/harness/environment.py) passes on
nothing the service would read as a setting."""

from __future__ import annotations

from app.settings import Settings
from tests.harness.environment import ESSENTIALS, LOCALE_PREFIX


def test_nothing_a_process_needs_to_run_is_named_like_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    assert Settings.model_config.get("env_prefix", "") == ""
    assert not settings & ESSENTIALS
    assert not [name for name in settings if name.startswith(LOCALE_PREFIX)]
