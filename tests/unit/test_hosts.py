"""ALLOWED_HOSTS (app/web/hosts.py): which `Host` headers a request may carry."""

from __future__ import annotations

import pytest

from app.web.hosts import AllowedHosts, default_allowed_hosts, host_name


@pytest.mark.parametrize(("value", "name"), [
    ("localhost:8000", "localhost"),
    ("Example.COM.", "example.com"),
    ("api.example.com:443", "api.example.com"),
    ("127.0.0.1:8000", "127.0.0.1"),
    ("[::1]:8000", "::1"),
    ("[::1]", "::1"),
    ("::1", "::1"),
    (" localhost ", "localhost"),
])
def test_a_host_name_is_compared_without_port_case_trailing_dot_or_brackets(
    value: str, name: str,
) -> None:
    assert host_name(value) == name


def test_the_default_is_the_bound_host_and_the_loopback_names() -> None:
    assert default_allowed_hosts("127.0.0.1") == "127.0.0.1,localhost,[::1]"
    assert default_allowed_hosts("10.1.2.3") == "10.1.2.3,localhost,127.0.0.1,[::1]"
    assert default_allowed_hosts("0.0.0.0") == "localhost,127.0.0.1,[::1]"
    assert default_allowed_hosts("::") == "localhost,127.0.0.1,[::1]"


def test_listed_names_are_allowed_on_any_port_and_others_are_not() -> None:
    hosts = AllowedHosts(default_allowed_hosts("127.0.0.1"))
    for allowed in (b"127.0.0.1:8000", b"localhost", b"LOCALHOST:1", b"[::1]:8000"):
        assert hosts.allows(allowed), allowed
    for refused in (b"evil.example:8000", b"127.0.0.1.evil.example", b"localhost.evil.example",
                    b"evil@127.0.0.1", b"", None):
        assert not hosts.allows(refused), refused


def test_a_star_prefix_allows_subdomains_only_and_a_lone_star_allows_everything() -> None:
    hosts = AllowedHosts("*.example.com, api.example.org")
    assert hosts.allows(b"a.example.com")
    assert hosts.allows(b"b.a.example.com:8443")
    assert hosts.allows(b"api.example.org")
    assert not hosts.allows(b"example.com")
    assert not hosts.allows(b"evilexample.com")
    assert not hosts.allows(b"localhost")  # a list that is set is the whole list

    anything = AllowedHosts("*")
    assert anything.allows(b"evil.example")
    assert anything.allows(None)
