"""GraphiQL, served wholly by the service: the page at GET /graphql, its files in /graphiql/.

The files are built from `graphiql/` at the repository's top (`npm run build` there) into
`app/web/graphiql/`, which is committed and shipped inside the package: a plain
`pip install` serves a working explorer, with no npm and no request to any other host (the
page's Content-Security-Policy says so to the browser too). Setting `GRAPHIQL=false` serves
neither.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

BUILD = Path(__file__).resolve().parent / "graphiql"
ASSETS = BUILD / "assets"

# Everything from this origin only; websockets to it (ws:/wss: of 'self'); Monaco's inline styles,
# and its fonts and images inlined as data: URLs.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "connect-src 'self'",
    "script-src 'self'",
    "worker-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'self'",
])


@cache
def _index_html() -> str:
    return (BUILD / "index.html").read_text(encoding="utf-8")


def graphiql_page() -> Response:
    """The page itself (never cached: a new build renames the assets it points to)."""
    return HTMLResponse(_index_html(), headers={
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    })


class GraphiQLAssets(StaticFiles):
    """The built scripts, styles, workers and fonts, mounted at /graphiql/assets. Their names
    carry a hash of their content, so a browser may keep each one for good."""

    def __init__(self) -> None:
        super().__init__(directory=ASSETS)

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response
