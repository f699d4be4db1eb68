"""GraphiQL's committed build (app/web/graphiql/) is the build of its committed sources (graphiql/).

The build is committed so that the service needs no npm; `npm run build` writes the digest of
the sources it was made from beside it (graphiql/vite.config.ts). Recomputing that digest here
costs milliseconds and catches a source change that was never rebuilt.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "graphiql"
BUILD = REPO / "app" / "web" / "graphiql"
INPUTS = ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts",
          "src")
REBUILD = "rebuild it: cd graphiql && npm ci && npm run build (then commit app/web/graphiql/)"


def source_digest() -> str:
    """The digest graphiql/vite.config.ts writes: each file's relative path, NUL, bytes, NUL."""
    files = sorted(
        path.relative_to(SOURCES).as_posix()
        for name in INPUTS
        for path in ([SOURCES / name] if (SOURCES / name).is_file()
                     else (SOURCES / name).rglob("*"))
        if path.is_file()
    )
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (SOURCES / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_the_committed_build_is_made_from_the_committed_sources() -> None:
    built_from = (BUILD / "source.sha256").read_text().strip()
    assert built_from == source_digest(), f"app/web/graphiql/ is older than graphiql/: {REBUILD}"


def test_the_page_loads_only_files_of_the_build() -> None:
    page = (BUILD / "index.html").read_text(encoding="utf-8")
    targets = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(targets) >= 2, page  # the script and the stylesheet at least
    for target in targets:
        if target.startswith("data:"):
            continue
        assert target.startswith("/graphiql/assets/"), f"{target} is not one of the service's"
        assert (BUILD / target.removeprefix("/graphiql/")).is_file(), f"{target}: {REBUILD}"
