"""A headless browser for the end-to-end tests: Debian's Chromium (/usr/bin/chromium, or
CHROMIUM_PATH) driven by Playwright for Python; `playwright install` is never used.

Without Chromium or Playwright a browser test is skipped locally; with CI=true it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() == "true"
EXPECT_TIMEOUT_MS = 10_000


def unavailable(reason: str) -> None:
    """Skip locally; under CI=true every browser test must run, so fail."""
    if IN_CI:
        pytest.fail(f"{reason}: under CI=true the browser tests must run")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards; `expect` waits up to EXPECT_TIMEOUT_MS."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
        raise AssertionError("unreachable") from None
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()
