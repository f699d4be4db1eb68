"""The GraphQL schema: queries, mutations, caches and error masking."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.types import ExecutionContext

from app.event_store.base import StoreUnavailable
from app.observability import correlation_id
from app.schema.mutations import Mutation
from app.schema.queries import Query
from app.schema.subscriptions import Subscription

log = logging.getLogger(__name__)


# A backing server that cannot be reached is an outage to report plainly, not a bug to hide.
OUTAGES: tuple[tuple[type[BaseException], str, str], ...] = (
    (RedisConnectionError, "READ_MODEL_UNAVAILABLE", "The read model is unavailable; try again."),
    (RedisTimeoutError, "READ_MODEL_UNAVAILABLE", "The read model is unavailable; try again."),
    (StoreUnavailable, "STORE_UNAVAILABLE", "The event store is unavailable; try again."),
)


def is_unexpected(error: GraphQLError) -> bool:
    """Errors not raised for the client: replaced before they reach it, and logged."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    if any(isinstance(original, kind) for kind, _, _ in OUTAGES):
        log.warning("%s at %s: %s", type(original).__name__, error.path, original)
    else:
        log.error("unexpected error in %s", error.path, exc_info=original)
    return True


class MaskUnexpectedErrors(MaskErrors):
    """Outages get a plain code; anything else a message carrying the correlation id logged."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = correlation_id.get() or "unknown"
        message = f"Internal server error (correlation id {request_id})."
        code = "INTERNAL_SERVER_ERROR"
        for kind, outage_code, outage_message in OUTAGES:
            if isinstance(error.original_error, kind):
                code, message = outage_code, outage_message
        return GraphQLError(
            message=message,
            nodes=error.nodes, source=error.source, positions=error.positions, path=error.path,
            extensions={"code": code, "correlationId": request_id},
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
