"""API_KEYS and the actor names of keys (app/auth.py): a name never lets anyone test a key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.auth import Authenticator, parse_api_keys
from app.settings import Settings

NAME_SECRET = "actor-name-secret-0123456789"


def test_a_key_without_a_name_is_named_by_an_hmac_under_actor_name_secret() -> None:
    keys = parse_api_keys("k-one:writer,k-two:reader:ops", NAME_SECRET)
    expected = hmac.new(NAME_SECRET.encode(), b"k-one", hashlib.sha256).hexdigest()[:16]
    assert keys["k-one"].name == f"key-{expected}"
    assert keys["k-two"].name == "ops"
    # the same in every process and after every restart; another secret, another name
    assert parse_api_keys("k-one:writer", NAME_SECRET)["k-one"].name == f"key-{expected}"
    assert parse_api_keys("k-one:writer", NAME_SECRET + "x")["k-one"].name != f"key-{expected}"
    assert hashlib.sha256(b"k-one").hexdigest()[:8] not in keys["k-one"].name


def test_the_json_form_names_keys_the_same_way() -> None:
    keys = parse_api_keys('{"k-one": "writer", "k-two": {"role": "reader", "name": "ops"}}',
                          NAME_SECRET)
    assert keys["k-one"].name == parse_api_keys("k-one:writer", NAME_SECRET)["k-one"].name
    assert keys["k-two"].name == "ops"


def test_without_actor_name_secret_every_key_needs_a_name() -> None:
    assert parse_api_keys("k-one:writer:ci")["k-one"].name == "ci"
    with pytest.raises(ValueError, match="entry 2 has no name") as refused:
        parse_api_keys("k-one:writer:ci,k-secret-two:reader")
    assert "k-secret-two" not in str(refused.value)  # an error message never shows a key


def test_a_bad_role_is_reported_by_entry_number_not_by_key() -> None:
    with pytest.raises(ValueError, match="role of entry 1") as refused:
        parse_api_keys("k-secret:root:ops")
    assert "k-secret" not in str(refused.value)


def test_the_authenticator_refuses_a_short_secret_and_ignores_keys_when_auth_is_off() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Authenticator(Settings(auth_mode="token", api_keys="k:writer:ci",
                               actor_name_secret="short"))
    assert Authenticator(Settings(auth_mode="none", api_keys="k:writer")).keys == {}
    with pytest.raises(ValueError, match="no name"):
        Authenticator(Settings(auth_mode="token", api_keys="k:writer", actor_name_secret=None))
