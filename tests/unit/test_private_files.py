"""Directories and files only the service's user may read (app/private_files.py)."""

from __future__ import annotations

import stat
from pathlib import Path

from app.private_files import private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_directories_are_made_0700_and_existing_ones_keep_their_mode(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)  # the operator's
    private_dir(shared / "var" / "valkey")
    assert mode(shared) == 0o755
    assert mode(shared / "var") == 0o700
    assert mode(shared / "var" / "valkey") == 0o700

    private_dir(shared)  # exists: left alone
    assert mode(shared) == 0o755
    private_dir(shared, narrow=True)  # about to hold a secret
    assert mode(shared) == 0o700


def test_a_private_file_is_0600_and_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "server.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, '{"password": "p"}')
    assert target.read_text() == '{"password": "p"}'
    assert mode(target) == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["server.json"]
