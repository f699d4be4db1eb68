"""GraphiQL in a real browser, with no host but the service: `python -m app serve` with
authentication on, Debian's Chromium (tests/harness/browser.py), and every request to any other
host refused (and recorded: there must be none).

A user opens GET /graphql, pastes a reader's token into the headers editor, reads the
documentation of `Query.location`, opens the explorer, runs the default tab's time-travel query
and its subscription; a mutation sent by the test over HTTP arrives in GraphiQL as an event, which
proves the subscription's websocket carried the token in its connection_init. Without GraphiQL
(GRAPHIQL=false) the service answers a browser as a server without an IDE does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.web.graphiql import BUILD
from tests.harness.browser import chromium
from tests.harness.server import RunningServer, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route, WebSocket

READER_KEY = "graphiql-reader-key"
WRITER_KEY = "graphiql-writer-key"
AUTH_ENV = {
    "AUTH_MODE": "token",
    "API_KEYS": f"{READER_KEY}:reader:graphiql-reader,{WRITER_KEY}:writer:graphiql-writer",
}
WAIT_SECONDS = 15.0
OPEN_LOCATION = """
mutation Open($city: String!) {
  createLocation(input: { streetAddress: "1 Main St", city: $city, state: "IL",
                          postalCode: "62701" }) {
    ... on LocationPayload { position }
  }
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, extra_env=AUTH_ENV) as running:
        yield running


def open_location(server: RunningServer, city: str) -> int:
    """Open a location over HTTP as the writer; its position."""
    response = httpx.post(
        server.graphql_url, json={"query": OPEN_LOCATION, "variables": {"city": city}},
        headers={"Authorization": f"Bearer {WRITER_KEY}"}, timeout=10,
    )
    response.raise_for_status()
    position: int = response.json()["data"]["createLocation"]["position"]
    return position


def wait_for_subscribers(server: RunningServer, count: int) -> None:
    """Until the server's hub feeds `count` subscriptions (the `cqrs_subscribers` gauge)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        value = next(float(line.split()[1]) for line in metrics.splitlines()
                     if line.startswith("cqrs_subscribers "))
        if value == count:
            return
        assert time.monotonic() < deadline, f"cqrs_subscribers stayed at {value}"
        time.sleep(0.05)  # polling interval, not an assertion


def run_operation(page: Page, name: str) -> None:
    """Press ▶ and pick one of the tab's operations."""
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    page.get_by_role("menuitem", name=name, exact=True).click()


@pytest.mark.timeout(180)
def test_graphiql_works_with_no_other_host(browser: Browser, server: RunningServer) -> None:
    from playwright.sync_api import expect

    service = urlsplit(server.base_url).netloc
    elsewhere: list[str] = []
    errors: list[str] = []
    init_payloads: list[Any] = []
    sockets: list[str] = []

    def only_the_service(route: Route) -> None:
        if urlsplit(route.request.url).netloc == service:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def watch(socket: WebSocket) -> None:
        sockets.append(socket.url)

        def sent(frame: str | bytes) -> None:
            message = json.loads(frame)
            if message.get("type") == "connection_init":
                init_payloads.append(message.get("payload"))

        socket.on("framesent", sent)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.route("**/*", only_the_service)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("websocket", watch)

    # GraphiQL renders, from the service's own files, with the example operations.
    page.goto(server.graphql_url)
    expect(page).to_have_title("GraphiQL · restaurant network")
    expect(page.locator(".graphiql-container")).to_be_visible()
    expect(page.locator(".graphiql-query-editor")).to_contain_text("query Locations")

    # A reader's token pasted into the headers editor; the schema is fetched with it.
    page.get_by_role("button", name="Headers").click()
    page.locator(".graphiql-editor-tool .graphiql-editor").last.click()
    page.keyboard.insert_text(json.dumps({"Authorization": f"Bearer {READER_KEY}"}))
    page.get_by_role("button", name="Re-fetch GraphQL schema (Shift-Ctrl-R)").click()

    # The documentation of Query.location, with the descriptions of the schema.
    page.get_by_role("button", name="Show Documentation Explorer").click()
    docs = page.locator(".graphiql-doc-explorer")
    docs.get_by_text("Query", exact=True).click()
    docs.get_by_text("location", exact=True).click()
    expect(docs).to_contain_text("One location, or null when there is none with this id")
    expect(docs).to_contain_text("asOf")
    expect(docs).to_contain_text("Time travel to a position.")
    expect(docs).to_contain_text("Read your writes")

    # The explorer plugin lists the query fields.
    page.get_by_role("button", name="Show GraphiQL Explorer").click()
    expect(page.locator(".graphiql-plugin")).to_contain_text("projectionStatus")

    # A time-travel query: at position 1 only the first location existed.
    assert open_location(server, "Springfield") == 1
    assert open_location(server, "Shelbyville") == 2
    response = page.locator(".graphiql-response")
    run_operation(page, "LocationsAtPosition")
    expect(response).to_contain_text("Springfield")
    expect(response).not_to_contain_text("Shelbyville")
    run_operation(page, "Locations")
    expect(response).to_contain_text("Shelbyville")

    # A subscription, over a websocket authenticated by the pasted header: a mutation sent
    # over HTTP arrives as its event.
    run_operation(page, "LocationChanges")
    wait_for_subscribers(server, 1)
    position = open_location(server, "Ogdenville")
    expect(response).to_contain_text("Ogdenville")
    expect(response).to_contain_text("CREATED")
    expect(response).to_contain_text(f'"position": {position}')
    assert sockets == [server.ws_url], sockets
    assert init_payloads == [{"Authorization": f"Bearer {READER_KEY}"}], init_payloads

    context.close()
    assert elsewhere == [], f"GraphiQL tried other hosts: {elsewhere}"
    assert errors == [], errors
    log = server.log_path.read_text(errors="replace")
    assert '"level": "ERROR"' not in log, log[-3000:]
    assert "Exception in ASGI application" not in log, log[-3000:]


def test_without_graphiql_a_browser_gets_no_ide(tmp_path: Path) -> None:
    with running_server(tmp_path, extra_env={"GRAPHIQL": "false"}) as server:
        page = httpx.get(server.graphql_url, headers={"Accept": "text/html"}, timeout=10)
        assert page.status_code == 404
        assert page.text == "Not Found"
        script = re.search(r'src="(/graphiql/assets/[^"]+)"', (BUILD / "index.html").read_text())
        assert script is not None
        assert httpx.get(server.base_url + script[1], timeout=10).status_code == 404
        # GraphQL itself is untouched, by GET and by POST.
        query = {"query": "{ projectionStatus { position } }"}
        by_get = httpx.get(server.graphql_url, params=query, timeout=10)
        by_post = httpx.post(server.graphql_url, json=query, timeout=10)
        for answer in (by_get, by_post):
            assert answer.status_code == 200
            assert answer.json() == {"data": {"projectionStatus": {"position": 0}}}
