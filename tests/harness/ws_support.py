"""Clients for the subscription tests: GraphQL over HTTP, and subscriptions over real websockets.

`subscribe()` opens one subscription on its own websocket with gql's `WebsocketsTransport`
(either `graphql-transport-ws` or the legacy `graphql-ws` protocol) and collects what it
receives in the background, so a test can write, then wait (with a deadline) for what it expects.
`raw_connect()` speaks either protocol by hand, for clients that misbehave on purpose (never
reading, vanishing without a close frame, sending malformed frames, outliving their token).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"  # the legacy (Apollo subscriptions-transport-ws) protocol
PROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)
START = {GRAPHQL_TRANSPORT_WS: "subscribe", GRAPHQL_WS: "start"}  # a message starting an operation
RESULT = {GRAPHQL_TRANSPORT_WS: "next", GRAPHQL_WS: "data"}  # one carrying a result
WAIT_SECONDS = 15.0

EMPLOYEE_FIELDS = "id firstName lastName dateOfBirth jobTitle locationId version"
EVENT_FIELDS = "position streamId version type data correlationId"

CREATE_LOCATION = """
mutation CreateLocation($input: CreateLocationInput!) {
  createLocation(input: $input) {
    __typename ... on Error { message code }
    ... on LocationPayload { position location { id city employeeCount version } }
  }
}"""
CREATE_EMPLOYEE = f"""
mutation CreateEmployee($input: CreateEmployeeInput!) {{
  createEmployee(input: $input) {{
    __typename ... on Error {{ message code }}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
ASSIGN = f"""
mutation Assign($input: AssignEmployeeToLocationInput!) {{
  assignEmployeeToLocation(input: $input) {{
    __typename ... on Error {{ message code }}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
CHANGE_TITLE = f"""
mutation ChangeTitle($input: ChangeEmployeeJobTitleInput!) {{
  changeEmployeeJobTitle(input: $input) {{
    __typename ... on Error {{ message code }}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
TERMINATE = """
mutation Terminate($input: TerminateEmployeeInput!) {
  terminateEmployee(input: $input) {
    __typename ... on Error { message code }
    ... on TerminatePayload { employeeId position }
  }
}"""
EMPLOYEE = f"query Employee($id: Int!) {{ employee(id: $id) {{ {EMPLOYEE_FIELDS} }} }}"
LOCATION = """
query Location($id: Int!, $minPosition: Int) {
  location(id: $id, minPosition: $minPosition) { id city employeeCount version }
}"""
EVENTS = f"""
query Events($after: Int, $first: Int) {{
  events(after: $after, first: $first) {{ {EVENT_FIELDS} }}
}}"""
STATUS = "query Status { projectionStatus { position headPosition lag } }"

LOCATION_CHANGED = """
subscription LocationChanged($id: Int) {
  locationChanged(id: $id) { position kind locationId location { id city employeeCount } }
}"""
EMPLOYEE_CHANGED = """
subscription EmployeeChanged($id: Int, $locationId: Int) {
  employeeChanged(id: $id, locationId: $locationId) {
    position kind employeeId employee { id jobTitle locationId version }
  }
}"""
EVENTS_FEED = f"""
subscription Events($after: Int, $streamId: String, $types: [String!]) {{
  events(after: $after, streamId: $streamId, types: $types) {{ {EVENT_FIELDS} }}
}}"""


class GraphQLErrors(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(json.dumps(errors))
        self.errors = errors


class Api:
    """GraphQL over HTTP plus /metrics, against one API process."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, query: str, **variables: Any) -> dict[str, Any]:
        """The response's data; GraphQL errors raise GraphQLErrors."""
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        if body.get("errors"):
            raise GraphQLErrors(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def _payload(self, query: str, field: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = (await self.run(query, input=fields))[field]
        assert "position" in result, f"{field} failed: {result}"
        return result

    async def create_location(self, location_id: int, city: str = "Springfield") -> dict[str, Any]:
        return await self._payload(
            CREATE_LOCATION, "createLocation", id=location_id,
            streetAddress=f"{location_id} Main Street", city=city, state="IL", postalCode="62701",
        )

    async def create_employee(
        self, employee_id: int, location_id: int, job_title: str = "Line Cook"
    ) -> dict[str, Any]:
        return await self._payload(
            CREATE_EMPLOYEE, "createEmployee", id=employee_id, firstName="Ana",
            lastName="Smith", dateOfBirth="1990-05-17", jobTitle=job_title, locationId=location_id,
        )

    async def change_title(self, employee_id: int, job_title: str) -> dict[str, Any]:
        return await self._payload(
            CHANGE_TITLE, "changeEmployeeJobTitle", employeeId=employee_id, jobTitle=job_title
        )

    async def assign(self, employee_id: int, location_id: int) -> dict[str, Any]:
        return await self._payload(
            ASSIGN, "assignEmployeeToLocation", employeeId=employee_id, locationId=location_id
        )

    async def terminate(self, employee_id: int) -> dict[str, Any]:
        return await self._payload(TERMINATE, "terminateEmployee", employeeId=employee_id)

    async def employee(self, employee_id: int) -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await self.run(EMPLOYEE, id=employee_id))["employee"]
        return found

    async def status(self) -> dict[str, int]:
        status: dict[str, int] = (await self.run(STATUS))["projectionStatus"]
        return status

    async def head(self) -> int:
        return (await self.status())["headPosition"]

    async def events_after(self, after: int) -> list[dict[str, Any]]:
        """Every stored event after `after`, through the `events` query, page by page."""
        out: list[dict[str, Any]] = []
        while True:
            page: list[dict[str, Any]] = (await self.run(EVENTS, after=after, first=500))["events"]
            out += page
            if len(page) < 500:
                return out
            after = page[-1]["position"]

    async def metric(self, name: str) -> float:
        """A sample (without labels) of this process's /metrics."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        for line in response.text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"/metrics has no {name}")

    async def wait_metric(
        self, name: str, wanted: Callable[[float], bool], seconds: float = WAIT_SECONDS
    ) -> float:
        """Poll /metrics until `wanted(value)`; fail with the last value after `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            value = await self.metric(name)
            if wanted(value):
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{name} stayed at {value} for {seconds}s")
            await asyncio.sleep(0.02)  # polling interval, not an assertion

    async def wait_subscribers(self, count: int, seconds: float = WAIT_SECONDS) -> None:
        """Until exactly `count` subscriptions are registered in this process's hub."""
        await self.wait_metric("cqrs_subscribers", lambda value: value == count, seconds)


@asynccontextmanager
async def open_api(base_url: str) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        yield Api(http)


class Feed:
    """What one subscription received so far: `items` (the field's values), then maybe `error`."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.items: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.ended = False
        self._changed = asyncio.Event()

    @property
    def error_codes(self) -> list[str | None]:
        if not isinstance(self.error, TransportQueryError):
            return []
        return [(e.get("extensions") or {}).get("code") for e in self.error.errors or []]

    async def run(self, session: AsyncClientSession, request: GraphQLRequest) -> None:
        try:
            async for result in session.subscribe(request):
                self.items.append(result[self.field])
                self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the subscription ended with an error: keep it for the test
            self.error = error
        finally:
            self.ended = True
            self._changed.set()

    async def wait_until(
        self, done: Callable[[Feed], bool], what: str, seconds: float = WAIT_SECONDS
    ) -> None:
        """Until `done(self)`; fails (showing what arrived) after `seconds` or if the feed ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not done(self):
            remaining = deadline - loop.time()
            if self.ended or remaining <= 0:
                raise AssertionError(
                    f"{self.field}: {what} did not happen ({'ended' if self.ended else 'timeout'});"
                    f" received {len(self.items)} items, last {self.items[-3:]}, "
                    f"error {self.error!r}"
                )
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_count(self, count: int, seconds: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        await self.wait_until(lambda feed: len(feed.items) >= count, f"{count} items", seconds)
        return self.items

    async def wait_position(self, position: int, seconds: float = WAIT_SECONDS) -> None:
        await self.wait_until(
            lambda feed: bool(feed.items) and feed.items[-1]["position"] >= position,
            f"position {position}", seconds,
        )

    async def wait_error(self, seconds: float = WAIT_SECONDS) -> list[str | None]:
        """Until the subscription ended with an error; its GraphQL error codes."""
        await self.wait_until(lambda feed: feed.error is not None, "an error", seconds)
        return self.error_codes


@asynccontextmanager
async def subscribe(
    url: str, query: str, field: str, protocol: str = GRAPHQL_TRANSPORT_WS, **variables: Any
) -> AsyncIterator[Feed]:
    """One subscription on its own websocket, read in the background; closed on exit.

    The subscription is sent, not necessarily registered by the server yet: tests wait for
    that through `Api.wait_subscribers`.
    """
    transport = WebsocketsTransport(url=url, subprotocols=[protocol], connect_timeout=10)
    client = Client(transport=transport, fetch_schema_from_transport=False)
    async with client as session:
        assert transport.subprotocol == protocol
        feed = Feed(field)
        request = GraphQLRequest(query, variable_values=variables or None)
        task = asyncio.create_task(feed.run(session, request))
        try:
            yield feed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def raw_connect(
    url: str, protocol: str = GRAPHQL_TRANSPORT_WS, payload: dict[str, Any] | None = None,
    **options: Any,
) -> ClientConnection:
    """A websocket that has completed the handshake of `protocol` (connection_init carrying
    `payload`, if any, answered by connection_ack)."""
    ws = await connect(url, subprotocols=[protocol], **options)  # type: ignore[list-item]
    try:
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            init["payload"] = payload
        await ws.send(json.dumps(init))
        ack = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        assert ack["type"] == "connection_ack", ack
    except BaseException:
        await ws.close()
        raise
    return ws


async def raw_subscribe(ws: ClientConnection, op_id: str, query: str, **variables: Any) -> None:
    """Start an operation (any kind) on a socket of either protocol."""
    message = {"id": op_id, "type": START[str(ws.subprotocol)],
               "payload": {"query": query, "variables": variables}}
    await ws.send(json.dumps(message))


async def until_closed(ws: ClientConnection, seconds: float = WAIT_SECONDS) -> list[Any]:
    """Every message the server sends until it closes the socket (within `seconds`)."""
    received: list[Any] = []
    async with asyncio.timeout(seconds):
        with suppress(ConnectionClosed):
            while True:
                received.append(json.loads(await ws.recv()))
    return received
