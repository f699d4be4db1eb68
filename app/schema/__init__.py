"""The GraphQL schema: queries, mutations, caches and error masking."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.types import ExecutionContext

from app.observability import correlation_id
from app.schema.mutations import Mutation
from app.schema.queries import Query
from app.schema.subscriptions import Subscription

log = logging.getLogger(__name__)


def is_unexpected(error: GraphQLError) -> bool:
    """Errors from our own code that were not raised for the client: mask them, log them."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    log.error("unexpected error in %s", error.path, exc_info=original)
    return True


class MaskUnexpectedErrors(MaskErrors):
    """Replaces an unexpected error by a message carrying the correlation id operators log."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = correlation_id.get() or "unknown"
        return GraphQLError(
            message=f"Internal server error (correlation id {request_id}).",
            nodes=error.nodes, source=error.source, positions=error.positions, path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR", "correlationId": request_id},
        )


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client errors are the client's business: no tracebacks in the operator's log.

        Unexpected errors were already logged, with their traceback, when they were masked.
        """
        for error in errors:
            log.info("client error: %s (%s)", error.message, (error.extensions or {}).get("code"))


def build_schema() -> Schema:
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            lambda: MaskUnexpectedErrors(should_mask_error=is_unexpected),
        ],
    )
