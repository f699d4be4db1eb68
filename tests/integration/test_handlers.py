"""The command handlers' scenarios of tests/unit/test_handlers.py (there on the in-memory
store), here over every SQL store: conftest's `store_url` is not overridden in this module."""

from __future__ import annotations

from tests.unit import test_handlers as scenarios

handlers = scenarios.handlers
globals().update({name: test for name, test in vars(scenarios).items()
                  if name.startswith("test_")})
