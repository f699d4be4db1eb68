"""ALLOWED_HOSTS: the host names this service answers for, against DNS rebinding.

A page on an attacker's site can make a visitor's browser resolve the attacker's name to
127.0.0.1 (or to an address inside the visitor's network) and then talk to this service as if it
were the attacker's own, same-origin, so CORS never applies. The browser still names the
attacker's host in the `Host` header: refusing unknown hosts closes that door.

Entries are host names or IP addresses, comma-separated; a port is ignored (on either side),
`*.example.com` allows every subdomain of example.com, and `*` allows every host.
"""

from __future__ import annotations

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
UNCHECKED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapers address a pod by its IP, which no list can know in advance; these answer
no query, accept no write and hold no personal data. Keep them off public networks
(docs/security.md#allowed-hosts)."""


def host_name(value: str) -> str:
    """The name in a `Host` header value or an ALLOWED_HOSTS entry: lower case, without port,
    trailing dot or IPv6 brackets (`[::1]:8000` → `::1`, `Example.COM.:80` → `example.com`)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def default_allowed_hosts(bind_host: str) -> str:
    """ALLOWED_HOSTS when it is not set: the host `serve` binds to and the loopback names.
    Bound to every interface there is no one name to add: only loopback names are answered
    until ALLOWED_HOSTS names the ones clients use."""
    names = [] if bind_host in WILDCARD_BINDS else [bind_host]
    return ",".join(dict.fromkeys([*names, *LOOPBACK_NAMES]))


class AllowedHosts:
    """Whether a request's `Host` header names a host of ALLOWED_HOSTS."""

    def __init__(self, setting: str) -> None:
        entries = [host_name(entry) for entry in setting.split(",") if entry.strip()]
        self.any = "*" in entries
        self.names = frozenset(entry for entry in entries if not entry.startswith("*"))
        self.suffixes = tuple(entry[1:] for entry in entries if entry.startswith("*."))

    def allows(self, host_header: bytes | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        name = host_name(host_header.decode("latin-1"))
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))
