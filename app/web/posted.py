"""The request nearly every client sends, read without the library's general parsing.

Strawberry's view reads any request the same general way: the content type parsed by the
standard library's e-mail parser, every stream transport asked whether the Accept header wants
it, a sub-response made for headers nobody sets, and a runtime protocol check on the result.
For a small operation that is about a tenth of the process's time (py-spy, bench/mutations.py).

The common case is a POST of a JSON object with `application/json`, answered with JSON. Here it
is recognised from the raw headers, its body decoded once, and its fields checked for the
types the library requires. Anything else (a GET, another content type, a stream asked for by
Accept, a batch, a field of the wrong type, a body that is not JSON) returns None, and the
library's view handles it, from the same cached body, with the same answers as before.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.requests import Request
from strawberry.http import GraphQLRequestData

ACCEPTS_KEPT = 64
"""Accept headers whose answer is remembered (clients send a few; others are worked out)."""


class PlainPosts:
    """Recognises a plain JSON POST; `streams(accept)` says whether an Accept header asks
    for one of the view's stream transports."""

    def __init__(self, streams: Callable[[str], bool]) -> None:
        self._streams = streams
        self._accepts: dict[bytes, bool] = {b"*/*": streams("*/*"),
                                            b"application/json": streams("application/json")}

    async def read(self, request: Request) -> GraphQLRequestData | None:
        """The operation of a plain JSON POST, or None: the library's view reads it."""
        if request.scope["method"] != "POST":
            return None
        content_type = accept = None
        for name, value in request.scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
        if content_type is None or not _is_json(content_type):
            return None
        if accept is not None and self._wants_stream(accept):
            return None
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict:
            return None
        query, variables = data.get("query"), data.get("variables")
        name, extensions = data.get("operationName"), data.get("extensions")
        if (type(query) is not str or (variables is not None and type(variables) is not dict)
                or (name is not None and type(name) is not str)
                or (extensions is not None and type(extensions) is not dict)):
            return None
        return GraphQLRequestData(query=query, variables=variables, operation_name=name,
                                  extensions=extensions, protocol="http")

    def _wants_stream(self, accept: bytes) -> bool:
        known = self._accepts.get(accept)
        if known is None:
            known = self._streams(accept.decode("latin-1"))
            if len(self._accepts) < ACCEPTS_KEPT:
                self._accepts[accept] = known
        return known


def _is_json(content_type: bytes) -> bool:
    """`application/json`, with parameters or not, in any case."""
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json"
