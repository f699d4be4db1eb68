"""A test server's settings are its test's alone: none come from the shell pytest runs in, nor
from a `.env` file (the harness: tests/harness/environment.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.harness.server import running_server, start_server


def test_settings_exported_by_our_shell_do_not_reach_a_test_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a shell that switched authentication on (settings are read in any case)
    monkeypatch.setenv("AUTH_MODE", "token")
    monkeypatch.setenv("api_keys", "shell-secret:writer")

    # when a test starts a server without naming them
    with running_server(tmp_path) as server:
        response = httpx.post(server.graphql_url, json={"query": "{ locations { id } }"},
                              timeout=10)

    # then it answers an unauthenticated query
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"locations": []}}


def test_no_test_server_starts_where_a_dotenv_file_would_be_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AUTH_MODE=token\n")
    with pytest.raises(RuntimeError, match=r"\.env would add settings"):
        start_server(tmp_path)
