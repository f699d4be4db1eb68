"""What the Gatekeeper lets through of errors raised while executing: a client error as it is,
with its code; anything else (graphql-core's complaints about what a resolver returned
included) as INTERNAL_SERVER_ERROR with a correlation id, its details logged."""

from __future__ import annotations

import logging

import pytest
import strawberry
from graphql import specified_rules

from app.schema import Gatekeeper, PreparedDocuments, Schema
from app.schema.cost import CostModel
from app.schema.errors import ClientError


@strawberry.type
class Query:
    @strawberry.field
    def numbers(self) -> list[int]:
        return 5  # type: ignore[return-value]  # not a list: graphql-core's GraphQLError

    @strawberry.field
    def refused(self) -> int:
        raise ClientError("Not for you.", "FORBIDDEN")


def schema() -> Schema:
    built = Schema(query=Query, extensions=[Gatekeeper])
    built.documents = PreparedDocuments(built, tuple(specified_rules), max_tokens=2000)
    built.cost_model = CostModel(built._schema, 500)
    built.max_query_cost = 0
    return built


async def test_a_fault_found_by_graphql_core_is_masked_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.schema"):
        result = await schema().execute("{ numbers }")
    [error] = result.errors or []
    assert error.extensions is not None and error.extensions["code"] == "INTERNAL_SERVER_ERROR"
    assert error.message.startswith("Internal server error (correlation id ")
    assert "Expected Iterable" in caplog.text


async def test_a_client_error_keeps_its_message_and_code() -> None:
    result = await schema().execute("{ refused }")
    [error] = result.errors or []
    assert (error.message, error.extensions) == ("Not for you.", {"code": "FORBIDDEN"})
