"""Which requests the plain-POST reading takes (app/web/posted.py), and which it leaves to the
library's view: everything that is not a JSON object POSTed as `application/json` with fields
of the types the library requires, and anything asking for a stream."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from app.web.posted import PlainPosts

STREAM_ACCEPTS = ("text/event-stream", 'multipart/mixed;subscriptionSpec="1.0"')


def streams(accept: str) -> bool:
    """As strawberry's transports answer (the view passes its own check in)."""
    return any(kind in accept for kind in ("text/event-stream", "multipart/mixed"))


def request(body: bytes, content_type: str | None = "application/json",
            method: str = "POST", accept: str | None = None) -> Request:
    headers = [(b"host", b"127.0.0.1")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if accept is not None:
        headers.append((b"accept", accept.encode()))
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": "/graphql", "headers": headers,
             "query_string": b""}
    return Request(scope, receive)


def operation(**fields: object) -> bytes:
    return json.dumps(fields).encode()


async def test_a_plain_json_post_is_read_with_its_fields() -> None:
    posts = PlainPosts(streams)
    read = await posts.read(request(operation(
        query="query Q($id: Int!) { employee(id: $id) { id } }", variables={"id": 3},
        operationName="Q", extensions={"cost": True},
    ), content_type="Application/JSON; charset=utf-8", accept="application/json"))
    assert read is not None
    assert (read.query, read.variables, read.operation_name, read.extensions, read.protocol) == (
        "query Q($id: Int!) { employee(id: $id) { id } }", {"id": 3}, "Q", {"cost": True},
        "http",
    )
    bare = await posts.read(request(operation(query="{ __typename }")))
    assert bare is not None
    assert (bare.variables, bare.operation_name, bare.extensions) == (None, None, None)


@pytest.mark.parametrize("body", [
    b'{"query": "{ __typename }"',  # not JSON
    b'"just a string"', b"[1, 2]", b"null",
    b'[{"query": "{ __typename }"}]',  # a batch
    b'{"variables": {}}',  # no query
    b'{"query": null}', b'{"query": 5}',
    b'{"query": "{ __typename }", "variables": [1]}',
    b'{"query": "{ __typename }", "operationName": 3}',
    b'{"query": "{ __typename }", "extensions": "cost"}',
])
async def test_bodies_the_library_must_judge_are_left_to_it(body: bytes) -> None:
    assert await PlainPosts(streams).read(request(body)) is None


@pytest.mark.parametrize(("content_type", "method", "accept"), [
    (None, "POST", None),
    ("text/plain", "POST", None),
    ("application/jsonx", "POST", None),
    ("multipart/form-data; boundary=x", "POST", None),
    ("application/json", "GET", None),
    ("application/json", "PUT", None),
    *[("application/json", "POST", accept) for accept in STREAM_ACCEPTS],
])
async def test_other_requests_and_streams_are_left_to_the_library(
    content_type: str | None, method: str, accept: str | None
) -> None:
    posts = PlainPosts(streams)
    for _ in range(2):  # the Accept header's answer, once remembered, is the same
        assert await posts.read(request(operation(query="{ __typename }"), content_type,
                                        method, accept)) is None


async def test_the_accept_headers_remembered_are_bounded() -> None:
    asked: list[str] = []

    def counting(accept: str) -> bool:
        asked.append(accept)
        return False

    posts = PlainPosts(counting)
    for n in range(200):
        accept = f"application/json;q=0.{n}"
        assert await posts.read(request(operation(query="{ __typename }"), accept=accept))
        assert await posts.read(request(operation(query="{ __typename }"), accept=accept))
    assert len(asked) == 2 + 62 + 2 * (200 - 62)  # the first 62 once, later ones each time
