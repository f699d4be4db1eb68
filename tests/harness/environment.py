"""The environment of every app process a test or a benchmark starts, built from nothing.

The service takes its settings (app/settings.py: each field's name, without prefix, in any case)
from its environment and from a `.env` file in its working directory. A child given a copy of
ours would inherit whatever the shell exported (AUTH_MODE, API_KEYS, REDIS_URL, …), so it gets
only what any process needs to run, this checkout first on PYTHONPATH, and exactly the settings
its caller names; and it must start in a directory without a `.env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What a process needs to run on Linux, macOS or Windows; none of them names a setting.
ESSENTIALS = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
    "SYSTEMROOT", "WINDIR", "COMSPEC", "PATHEXT", "TEMP", "TMP", "USERPROFILE",
})
LOCALE_PREFIX = "LC_"


def app_environment(cwd: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of an app process started in `cwd`: our essentials, this checkout
    on PYTHONPATH (ahead of ours), unbuffered output, and `settings`; nothing else of ours."""
    dotenv = cwd / ".env"
    if dotenv.exists():
        raise RuntimeError(f"{dotenv} would add settings to the app process started in {cwd}")
    env = {name: value for name, value in os.environ.items()
           if name in ESSENTIALS or name.startswith(LOCALE_PREFIX)}
    # The checkout under test, whatever `pip install -e` last pointed the `app` package at.
    env["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if path
    )
    env["PYTHONUNBUFFERED"] = "1"  # its log reaches the file as it is written
    env.update(settings)
    return env
