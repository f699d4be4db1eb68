"""The embedded Valkey (app/embedded_redis.py) is closed to everyone but the service's user.

A real `valkey-server` started the way the service starts it: it listens on 127.0.0.1 only,
refuses every client without the password drawn at its start, and keeps that password in a file
and a directory only the service's user can read.
"""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from app.embedded_redis import EmbeddedValkey

PING = b"*1\r\n$4\r\nPING\r\n"


def command(*words: str) -> bytes:
    """One command in RESP, the protocol any client speaks."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        parts.append(f"${len(word.encode())}\r\n{word}\r\n".encode())
    return b"".join(parts)


def raw_exchange(port: int, request: bytes) -> bytes:
    """What the server answers a client that connects and sends `request`, nothing else."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(200)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var" / "valkey"


@pytest.fixture
def embedded(data_dir: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(data_dir)
    yield server
    server.stop()


def test_a_client_without_the_password_is_refused_and_the_service_url_carries_it(
    embedded: EmbeddedValkey,
) -> None:
    url = embedded.start()
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port is not None
    assert parts.password and len(parts.password) >= 40  # secrets.token_urlsafe(32)

    assert raw_exchange(parts.port, PING).startswith(b"-NOAUTH")
    assert raw_exchange(parts.port, command("SET", "planted", "x")).startswith(b"-NOAUTH")
    assert raw_exchange(parts.port, command("AUTH", "guess")).startswith(b"-WRONGPASS")

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.set("written", "by the service")
        assert client.get("written") == "by the service"
        assert client.exists("planted") == 0
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
    finally:
        client.close()


def test_the_password_is_kept_in_a_0600_file_in_a_0700_directory(
    embedded: EmbeddedValkey, data_dir: Path,
) -> None:
    data_dir.mkdir(parents=True, mode=0o755)
    data_dir.chmod(0o755)  # as an earlier version left it: narrowed before the password lands
    url = embedded.start()

    info_file = data_dir / "server.json"
    assert mode(data_dir) == 0o700
    assert mode(info_file) == 0o600
    info = json.loads(info_file.read_text())
    assert (info["port"], info["password"]) == (urlsplit(url).port, urlsplit(url).password)
    assert [path.name for path in data_dir.iterdir() if path.name.endswith(".partial")] == []


def test_another_process_finds_the_running_server_and_a_restart_draws_a_new_password(
    embedded: EmbeddedValkey, data_dir: Path,
) -> None:
    url = embedded.start()
    beside = EmbeddedValkey(data_dir)  # what `project` or `status` beside `serve` does
    assert beside.start() == url
    beside.stop()  # it started nothing, so it stops nothing
    assert (data_dir / "server.json").exists()

    embedded.stop()
    assert not (data_dir / "server.json").exists()
    again = EmbeddedValkey(data_dir)
    try:
        restarted = again.start()
        assert urlsplit(restarted).password != urlsplit(url).password
    finally:
        again.stop()
