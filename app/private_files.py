"""Directories and files that only the service's user may read: the embedded Valkey's password,
the read model's and the event store's data (employees' names and dates of birth)."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path, narrow: bool = False) -> None:
    """Make `path` if it is missing, and every missing directory above it, mode 0700.
    Directories that exist keep their mode (the operator's choice) unless `narrow`, for one
    about to hold a secret."""
    missing = [directory for directory in (path, *path.parents) if not directory.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if narrow:
        path.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` in a file that is mode 0600 from its creation (never briefly
    readable by others), and that readers see whole or not at all."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(partial, path)
