"""The GraphQL schema: queries, mutations, caches and error masking."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from app.auth import ANONYMOUS, READER, WRITER, AuthError, Principal
from app.event_store.base import StoreUnavailable
from app.observability import REJECTIONS, correlation_id
from app.schema.errors import ClientError
from app.schema.mutations import Mutation
from app.schema.queries import Query
from app.schema.subscriptions import Subscription
from app.settings import Settings

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


class PerEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Gives each subscription event its own subfield memo.

    graphql-core 3.3 builds each event's executor as a shallow copy that shares the memo of
    collected subfields, keyed by field lists that are new for every event and kept alive by
    it: a long-lived subscription grew by 1-2 KB per event pushed (found by `bench/soak.py`).
    """

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client errors are the client's business: no tracebacks in the operator's log.

        Unexpected errors were already logged, with their traceback, when they were masked.
        """
        for error in errors:
            log.info("client error: %s (%s)", error.message, (error.extensions or {}).get("code"))


class Authorize(SchemaExtension):
    """Queries and subscriptions need the reader role, mutations the writer role.

    The principal (or why there is none) was put in the context by the view: from the
    Authorization header over HTTP, from connection_init over websockets. Nothing executes,
    so nothing is written, when this refuses.
    """

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        error: AuthError | None = getattr(context, "auth_error", None)
        principal: Principal | None = getattr(context, "principal", ANONYMOUS)
        if error is None and principal is None:
            error = AuthError("Authentication required.")
        if error is not None:
            REJECTIONS.labels("unauthenticated").inc()
            raise ClientError(error.message, error.code)
        assert principal is not None
        mutation = self.execution_context.operation_type == OperationType.MUTATION
        needed = WRITER if mutation else READER
        if not principal.allows(needed):
            REJECTIONS.labels("forbidden").inc()
            raise ClientError(f"This operation needs the {needed} role.", "FORBIDDEN")
        yield


def build_schema(settings: Settings | None = None) -> Schema:
    settings = settings or Settings()
    # The limits' validation rules are made once: ValidationCache is keyed by the rule classes,
    # and a limiter built per request would make new ones each time (and never hit the cache).
    rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)  # what DisableIntrospection adds
    extensions: list[Any] = [
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        lambda: ParserCache(maxsize=256),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=256),
        Authorize,
        lambda: MaskUnexpectedErrors(should_mask_error=is_unexpected),
    ]
    return Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions,
        execution_context_class=PerEventExecutionContext,
    )
